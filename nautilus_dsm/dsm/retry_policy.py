"""How long the HTTP sources wait before trying again (pure policy, no I/O).

Two waits: full-jitter exponential backoff after a 5xx or a transport failure
(:class:`RetryPolicy`, :func:`backoff_delay`), and the hold a 429/418 asks for with
``Retry-After`` (:func:`rate_limit_wait`), parsed defensively: never below a 1 s floor (retrying
at once is how a 429 becomes a 418 ban), never beyond a 3-day cap, never an overflow.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from nautilus_dsm.constants import DAY_MS, SECOND_MS

# The least a 429/418 makes us wait, whatever Retry-After says ("0", negative, NaN, garbage):
# retrying at once is how a 429 becomes a 418 ban.
RATE_LIMIT_FLOOR_S = 1.0
# The longest hold honoured (Binance's bans last 2 minutes to 3 days); a larger Retry-After
# ("inf", 1e12, year 9999) holds this long and is reported as absurd.
MAX_HONOURED_WAIT_S = 3 * DAY_MS / SECOND_MS


@dataclass(frozen=True)
class RetryPolicy:
    """
    How hard a source tries before it gives up.

    Parameters
    ----------
    max_retries : int
        Tries per request for 5xx / transport failures (the first try included).
    backoff_base_s : float
        Backoff ceiling of the first retry; doubles per retry.
    backoff_max_s : float
        Cap of the backoff ceiling.
    max_wait_s : float
        Total seconds one request may wait on rate-limit gates (429/418/weight) before it
        raises :class:`RateLimited`.

    """

    max_retries: int = 5
    backoff_base_s: float = 0.25
    backoff_max_s: float = 8.0
    max_wait_s: float = 120.0

    def __post_init__(self) -> None:
        if self.max_retries < 1:
            raise ValueError(f"max_retries must be >= 1, was {self.max_retries}")
        if self.backoff_base_s < 0 or self.backoff_max_s < 0 or self.max_wait_s < 0:
            raise ValueError("backoff_base_s, backoff_max_s and max_wait_s must be >= 0")


def backoff_delay(
    retry: int,
    base_s: float,
    max_s: float,
    rand: Callable[[], float] = random.random,
) -> float:
    """
    Full-jitter backoff before retry number ``retry`` (1 for the first retry).

    A uniform draw in ``[0, min(max_s, base_s * 2**(retry - 1))]`` spreads the retries of many
    clients instead of synchronising them on the recovering server.
    """
    ceiling = min(max_s, base_s * (2 ** max(retry - 1, 0)))
    return ceiling * rand()


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """
    Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date); None if unusable.

    Negative or past values wait zero seconds; NaN and garbage are unusable (None); ``inf`` or
    a date centuries ahead come back as they are (``inf``, huge), for the caller to cap.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return None if math.isnan(seconds) else max(0.0, seconds)
    try:
        when = parsedate_to_datetime(text)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


def rate_limit_wait(status: int, header: str | None) -> tuple[float | None, str]:
    """
    Return the hold a 429/418 asks for, and how to describe it: ``(seconds, description)``.

    ``seconds`` is at least :data:`RATE_LIMIT_FLOOR_S` and at most
    :data:`MAX_HONOURED_WAIT_S`; None for a 418 without a usable ``Retry-After`` (a ban of
    unknown length, which must not be probed). ``description`` names the raw header.
    """
    parsed = parse_retry_after(header)
    shown = f"Retry-After {header!r}" if header is not None else "no Retry-After"
    if parsed is None:
        if status == 418:
            return None, shown
        return RATE_LIMIT_FLOOR_S, f"{shown}, waited the {RATE_LIMIT_FLOOR_S:g} s floor"
    if parsed > MAX_HONOURED_WAIT_S:
        return MAX_HONOURED_WAIT_S, f"{shown}, absurd: held for the {MAX_HONOURED_WAIT_S:g} s cap"
    if parsed < RATE_LIMIT_FLOOR_S:
        return RATE_LIMIT_FLOOR_S, f"{shown}, waited the {RATE_LIMIT_FLOOR_S:g} s floor"
    return parsed, shown
