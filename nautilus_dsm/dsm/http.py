"""HTTP plumbing shared by the REST and Vision sources: retries, backoff, rate-limit gates.

Both sources talk to Binance through one :class:`HttpTransport` each, so the rules live here
once: exponential backoff with full jitter for 5xx and transport failures, ``Retry-After``
waits for 429/418 behind a single "blocked until" gate shared by every concurrent request of the
client (a 429 that is ignored becomes a 418 IP ban), a used-weight gate, and an
``httpx.AsyncClient`` that is created lazily and re-created when the running event loop changes
(NautilusTrader's ``download_data`` runs each coroutine under its own ``asyncio.run``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from nautilus_dsm.errors import RateLimited, SourceError

USER_AGENT = "nautilus-dsm/0.1"
WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
# Binance's REQUEST_WEIGHT limit per minute: spot 6000, USD-M and COIN-M futures 2400.
WEIGHT_FRACTION = 0.9
# Used when a 429 comes without Retry-After (Binance always sends one; proxies may not).
DEFAULT_RETRY_AFTER_S = 1.0
MIN_RATE_LIMIT_WAIT_S = 0.05
_MINUTE_MS = 60_000


# --------------------------------------------------------------------------------------------
# Pure policy
# --------------------------------------------------------------------------------------------


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

    Negative or past values wait zero seconds.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


class WeightGate:
    """
    Pause new requests once the used weight of the current minute passes ~90% of the limit.

    Binance counts ``X-MBX-USED-WEIGHT-1M`` per wall-clock minute; the gate holds requests
    until the next minute window instead of walking into a 429.
    """

    def __init__(self, limit: int, fraction: float = WEIGHT_FRACTION) -> None:
        self.limit = limit
        self.threshold = limit * fraction
        self.last_used: int | None = None
        self.peak_used = 0
        self._window_start_ms = 0

    def observe(self, used: int, now_ms: int) -> None:
        """Record the used weight Binance reported at ``now_ms``."""
        window = now_ms - now_ms % _MINUTE_MS
        self.last_used = used
        self.peak_used = max(self.peak_used, used)
        self._window_start_ms = window

    def pause_s(self, now_ms: int) -> float:
        """Seconds a new request must wait at ``now_ms`` (0 when the budget allows it)."""
        if self.last_used is None or self.last_used <= self.threshold:
            return 0.0
        window_end = self._window_start_ms + _MINUTE_MS
        return max(0.0, (window_end - now_ms) / 1000)


def parse_used_weight(value: str | None) -> int | None:
    """The integer of an ``X-MBX-USED-WEIGHT-1M`` header, None when absent or malformed."""
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def wall_clock_ms() -> int:
    """The system clock in epoch milliseconds (the default "now" of every source and manager)."""
    return time.time_ns() // 1_000_000


async def gather_or_cancel[T](jobs: list[Awaitable[T]]) -> list[T]:
    """Run the jobs concurrently; on the first error cancel the rest and re-raise it.

    ``asyncio.gather`` alone leaves the other jobs running after a failure; requests must not
    outlive the fetch that asked for them.
    """
    tasks = [asyncio.ensure_future(job) for job in jobs]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def iso_utc(epoch_s: float) -> str:
    """``2024-01-01T00:00:00Z`` for a wall-clock epoch in seconds (for error messages)."""
    return datetime.fromtimestamp(epoch_s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------------------------
# The transport (I/O edge)
# --------------------------------------------------------------------------------------------


@dataclass
class TransportCounters:
    """Counters a transport keeps; each source exposes them through its own stats."""

    requests: int = 0
    retries: int = 0
    waited_s: float = 0.0


@dataclass(frozen=True)
class Reply[T]:
    """A fully read response and, for 2xx with a parser, the parsed body."""

    response: httpx.Response
    value: T | None

    @property
    def status(self) -> int:
        return self.response.status_code


class RetryableResponse(Exception):
    """Raised by a response check to have the transport retry (e.g. a body that fails to parse)."""


@dataclass
class _LoopState:
    loop: asyncio.AbstractEventLoop
    client: httpx.AsyncClient
    semaphore: asyncio.Semaphore


class HttpTransport:
    """
    One source's HTTP client: bounded concurrency, retries, and the shared rate-limit gate.

    ``get`` answers with a fully read response whose status is below 500 and not 429/418; the
    caller maps 4xx to its own errors. 5xx and transport failures are retried with full-jitter
    backoff, at most ``policy.max_retries`` tries, then raise :class:`SourceError`. 429 and 418
    block every request of this transport until ``Retry-After`` has passed (not counted as
    tries), up to ``policy.max_wait_s`` of waiting per request, then raise
    :class:`RateLimited`.
    """

    def __init__(
        self,
        *,
        name: str,
        policy: RetryPolicy,
        timeout_s: float,
        concurrency: int,
        verify_tls: bool = True,
        weight_gate: WeightGate | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, was {concurrency}")
        self.name = name
        self.policy = policy
        self.timeout_s = timeout_s
        self.concurrency = concurrency
        self.verify_tls = verify_tls
        self.weight_gate = weight_gate
        self.counters = TransportCounters()
        self._state: _LoopState | None = None
        # Monotonic deadline before which no request may be sent, and why (for errors).
        self._blocked_until = 0.0
        self._blocked_reason = ""
        self._rand: Callable[[], float] = random.random

    # -- loop-bound state ----------------------------------------------------------------
    def _loop_state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._state
        if state is None or state.loop is not loop:
            # A client bound to a previous (closed) loop cannot be used or closed from here;
            # it is dropped and a fresh one is built on the running loop.
            client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout_s),
                verify=self.verify_tls,
                limits=httpx.Limits(
                    max_connections=self.concurrency,
                    max_keepalive_connections=self.concurrency,
                ),
                headers={"User-Agent": USER_AGENT},
                follow_redirects=True,
            )
            state = _LoopState(loop, client, asyncio.Semaphore(self.concurrency))
            self._state = state
        return state

    async def aclose(self) -> None:
        """Close the HTTP client (a client of another, finished loop is just dropped)."""
        state, self._state = self._state, None
        if state is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is state.loop:
            await state.client.aclose()

    # -- gates -----------------------------------------------------------------------------
    def _gate_delay(self) -> tuple[float, str]:
        delay = self._blocked_until - time.monotonic()
        reason = self._blocked_reason
        if self.weight_gate is not None:
            pause = self.weight_gate.pause_s(wall_clock_ms())
            if pause > delay:
                delay = pause
                reason = (
                    f"the used weight {self.weight_gate.last_used} passed "
                    f"{WEIGHT_FRACTION:.0%} of the {self.weight_gate.limit}/minute limit"
                )
        return max(0.0, delay), reason

    def block_for(self, seconds: float, reason: str) -> None:
        """Hold every request of this transport for ``seconds`` (extends, never shortens)."""
        until = time.monotonic() + seconds
        if until > self._blocked_until:
            self._blocked_until = until
            self._blocked_reason = reason

    async def _wait_gate(self, path: str, waited: float) -> float:
        while True:
            delay, reason = self._gate_delay()
            if delay <= 0:
                return waited
            if waited + delay > self.policy.max_wait_s:
                ends = iso_utc(time.time() + delay)
                raise RateLimited(
                    f"{self.name} {path}: {reason}; requests are held until {ends}, beyond "
                    f"max_wait_s={self.policy.max_wait_s:g}s (already waited {waited:.1f}s); "
                    "retry after that time, lower the concurrency, or raise max_wait_s"
                )
            slept_from = time.monotonic()
            await asyncio.sleep(delay)
            slept = time.monotonic() - slept_from
            waited += slept
            self.counters.waited_s += slept

    # -- requests --------------------------------------------------------------------------
    async def get[T](
        self,
        url: str,
        params: dict[str, str | int] | None = None,
        parse: Callable[[httpx.Response], T] | None = None,
    ) -> Reply[T]:
        """
        GET ``url`` under the retry policy and answer the fully read response.

        ``parse`` runs on a 2xx response (its result is ``Reply.value``) and may raise
        :class:`RetryableResponse` to have a malformed body retried like a transport failure.
        """
        state = self._loop_state()
        path = httpx.URL(url).path
        tries = 0
        waited = 0.0
        last_error = ""
        while True:
            value: T | None = None
            async with state.semaphore:
                waited = await self._wait_gate(path, waited)
                tries += 1
                self.counters.requests += 1
                try:
                    response = await state.client.get(url, params=params)
                    status = response.status_code
                    if 200 <= status < 300 and parse is not None:
                        value = parse(response)
                except (httpx.TransportError, httpx.DecodingError, RetryableResponse) as exc:
                    last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                    status = None
                    response = None
            if response is not None:
                self._observe_weight(response)
                if status in (429, 418):
                    self._block_on_rate_limit(response, path)
                    continue  # does not burn a try; the gate decides how long to wait
                if status < 500:
                    return Reply(response, value)
                last_error = f"HTTP {status} {_snippet(response)}"
            if tries >= self.policy.max_retries:
                raise SourceError(
                    f"{self.name} {path} failed after {tries} tries; last error: {last_error}; "
                    "the source is unreachable or failing, retry later or raise max_retries"
                )
            self.counters.retries += 1
            delay = backoff_delay(
                tries, self.policy.backoff_base_s, self.policy.backoff_max_s, self._rand
            )
            await asyncio.sleep(delay)

    def _observe_weight(self, response: httpx.Response) -> None:
        if self.weight_gate is None:
            return
        used = parse_used_weight(response.headers.get(WEIGHT_HEADER))
        if used is not None:
            self.weight_gate.observe(used, wall_clock_ms())

    def _block_on_rate_limit(self, response: httpx.Response, path: str) -> None:
        status = response.status_code
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if status == 418:
            if retry_after is None:
                raise RateLimited(
                    f"{self.name} {path}: Binance banned this IP (HTTP 418) without a "
                    "Retry-After; wait before retrying and lower the request rate"
                )
            ends = iso_utc(time.time() + retry_after)
            self.block_for(retry_after, f"Binance banned this IP (HTTP 418) until {ends}")
        else:
            wait = DEFAULT_RETRY_AFTER_S if retry_after is None else retry_after
            # A floor, so "Retry-After: 0" cannot spin; the waits still add up to max_wait_s.
            wait = max(wait, MIN_RATE_LIMIT_WAIT_S)
            ends = iso_utc(time.time() + wait)
            self.block_for(wait, f"Binance rate-limited the client (HTTP 429) until {ends}")


def _snippet(response: httpx.Response, limit: int = 200) -> str:
    text = response.text.strip().replace("\n", " ")
    return text[:limit] + ("..." if len(text) > limit else "")
