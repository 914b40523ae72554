"""The time bounds of every request: defaults and the validation of the user's knobs.

``max_retries``, ``timeout_s`` and ``deadline_s`` are accepted by ``DataSourceManager.create``,
``DSMDataClientConfig`` and the CLI (``--max-retries``, ``--timeout``, ``--deadline``); all three
validate through this module, before any I/O, with one message naming the fix. The module is
pure (no httpx, no polars), so the client config can import it cheaply.
"""

from __future__ import annotations

import math

from nautilus_dsm.errors import InvalidInput

# REST: a klines page is ~150 KB, exchangeInfo a few MB.
REST_MAX_RETRIES = 5
REST_TIMEOUT_S = 10.0
REST_DEADLINE_S = 60.0
# Vision: inactivity 10 s (a host that says nothing for 10 s is hanging, not busy); a total
# deadline generous enough for the biggest monthly zips (1s klines: ~100 MB).
VISION_MAX_RETRIES = 3
VISION_TIMEOUT_S = 10.0
VISION_DEADLINE_S = 300.0

_FLAGS = {"max_retries": "--max-retries", "timeout_s": "--timeout", "deadline_s": "--deadline"}
_EXAMPLES = {"max_retries": "3", "timeout_s": "10", "deadline_s": "60"}


def _hint(name: str) -> str:
    knob = name.rsplit(".", 1)[-1]
    example = _EXAMPLES.get(knob, "10")
    flag = _FLAGS.get(knob)
    cli = f" (CLI {flag} {example})" if flag else ""
    return f"e.g. {knob}={example}{cli}"


def check_max_retries(value: object, name: str = "max_retries") -> int:
    """``value`` as tries per request (the first included); :class:`InvalidInput` unless >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(
            f"{name} must be a whole number of tries >= 1, was {value!r}; {_hint(name)}"
        )
    return value


def check_seconds(value: object, name: str) -> float:
    """``value`` as seconds; :class:`InvalidInput` unless a finite number > 0 (NaN refused)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise InvalidInput(
            f"{name} must be a finite number of seconds > 0, was {value!r}; {_hint(name)}"
        )
    return float(value)


def check_knobs(
    max_retries: object = None,
    timeout_s: object = None,
    deadline_s: object = None,
    *,
    owner: str = "",
) -> dict[str, int | float]:
    """
    Return the knobs that are set (not None), validated, as source-client keyword arguments.

    Parameters
    ----------
    max_retries, timeout_s, deadline_s : optional
        None keeps each source's default (``REST_*`` / ``VISION_*`` above).
    owner : str
        Prefix of the names in messages (``"DSMDataClientConfig."``).

    Raises
    ------
    InvalidInput
        For a knob that is not a number in its range.

    """
    knobs: dict[str, int | float] = {}
    if max_retries is not None:
        knobs["max_retries"] = check_max_retries(max_retries, f"{owner}max_retries")
    if timeout_s is not None:
        knobs["timeout_s"] = check_seconds(timeout_s, f"{owner}timeout_s")
    if deadline_s is not None:
        knobs["deadline_s"] = check_seconds(deadline_s, f"{owner}deadline_s")
    return knobs
