"""HTTP plumbing shared by the REST and Vision sources: retries, backoff, rate-limit gates.

Both sources talk to Binance through one :class:`HttpTransport` each, so the rules are applied
here once: exponential backoff with full jitter for 5xx and transport failures, ``Retry-After``
waits for 429/418 behind a single "blocked until" gate shared by every concurrent request of the
client (a 429 that is ignored becomes a 418 IP ban), a used-weight gate, and an
``httpx.AsyncClient`` that is created lazily and re-created when the running event loop changes
(NautilusTrader's ``download_data`` runs each coroutine under its own ``asyncio.run``).

Time is bounded everywhere: every try has a total deadline (connect + headers + body, not only
httpx's inactivity timeout), a per-host circuit breaker skips a host after a few consecutive
timeouts/resets (fail fast, logged once, half-open probe after a cooldown), ``Retry-After`` is
parsed defensively (never below a 1 s floor, never an overflow), and redirects are followed only
on the same host and only a few times.

The pure policies live apart: :mod:`.retry_policy` (backoff, ``Retry-After``),
:mod:`.weight_gate` (the used-weight budget) and :mod:`.circuit` (the per-host breaker).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from nautilus_dsm.common.times import iso_ms
from nautilus_dsm.constants import SECOND_MS
from nautilus_dsm.dsm.bounds import REST_DEADLINE_S
from nautilus_dsm.dsm.circuit import BREAKER_COOLDOWN_S, BREAKER_THRESHOLD, CircuitBreaker
from nautilus_dsm.dsm.exchange_clock import wall_clock_ms
from nautilus_dsm.dsm.retry_policy import RetryPolicy, backoff_delay, rate_limit_wait
from nautilus_dsm.dsm.weight_gate import (
    WEIGHT_FRACTION,
    WEIGHT_HEADER,
    RequestLimiter,
    WeightGate,
    parse_used_weight,
)
from nautilus_dsm.errors import CircuitOpen, RateLimited, SourceError

log = logging.getLogger(__name__)

USER_AGENT = "nautilus-dsm/0.1"
# Same-host redirects followed per try; more is a loop. Off-host redirects are never followed.
MAX_REDIRECTS = 3


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


# --------------------------------------------------------------------------------------------
# The transport (I/O edge)
# --------------------------------------------------------------------------------------------


@dataclass
class TransportCounters:
    """Counters a transport keeps; each source exposes them through its own stats."""

    requests: int = 0
    retries: int = 0
    waited_s: float = 0.0
    # 429/418 answers, and the holds they imposed (after the floor and the cap), in seconds.
    rate_limited: int = 0
    imposed_wait_s: float = 0.0
    # Requests refused without I/O because their host's circuit was open.
    skipped: int = 0


@dataclass(frozen=True)
class Reply[T]:
    """A fully read response and, for 2xx with a parser, the parsed body."""

    response: httpx.Response
    value: T | None

    @property
    def status(self) -> int:
        """The HTTP status code of the response."""
        return self.response.status_code


class RetryableResponse(Exception):
    """Raised by a response check to have the transport retry (e.g. a body that fails to parse)."""


class _Refused(Exception):
    """A redirect the transport does not follow (off-host, or a loop): not retried."""


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
    backoff, at most ``policy.max_retries`` tries, then raise :class:`SourceError`. Each try
    must complete (connect, headers and the whole body) within ``deadline_s``; ``timeout_s``
    bounds each wait for the network. 429 and 418 block every request of this transport until
    ``Retry-After`` has passed (at least :data:`~.retry_policy.RATE_LIMIT_FLOOR_S`; not counted
    as tries), up to ``policy.max_wait_s`` of waiting per request, then raise
    :class:`RateLimited`. After
    ``breaker_threshold`` consecutive transport failures on a host its requests raise
    :class:`CircuitOpen` without I/O until a cooldown has passed (see :class:`CircuitBreaker`).
    Redirects are followed only to the same host, at most :data:`MAX_REDIRECTS` per try.
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
        limiter: RequestLimiter | None = None,
        deadline_s: float = REST_DEADLINE_S,
        breaker_threshold: int = BREAKER_THRESHOLD,
        breaker_cooldown_s: float = BREAKER_COOLDOWN_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, was {concurrency}")
        if not deadline_s > 0 or not timeout_s > 0:  # also refuses NaN
            raise ValueError(
                f"timeout_s and deadline_s must be > 0, were {timeout_s!r} and {deadline_s!r}"
            )
        self.name = name
        self.policy = policy
        self.timeout_s = timeout_s
        self.deadline_s = deadline_s
        self.concurrency = concurrency
        self.verify_tls = verify_tls
        self.weight_gate = weight_gate
        # A budget shared with other processes (a cluster's REST weight), taken per try.
        self.limiter = limiter
        self.counters = TransportCounters()
        self._state: _LoopState | None = None
        # Monotonic deadline before which no request may be sent, and why (for errors).
        self._blocked_until = 0.0
        self._blocked_reason = ""
        self._logged_hold = ""  # the last hold logged (see _wait_gate)
        self._rand: Callable[[], float] = random.random
        self._breaker_threshold = breaker_threshold
        self._breaker_cooldown_s = breaker_cooldown_s
        self._monotonic = monotonic
        self._breakers: dict[str, CircuitBreaker] = {}

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
                # Followed by hand (_send): same host only, a few hops, loops are errors.
                follow_redirects=False,
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
                ends = _held_until(delay)
                raise RateLimited(
                    f"{self.name} {path}: {reason}; requests are held until {ends}, beyond "
                    f"max_wait_s={self.policy.max_wait_s:g}s (already waited {waited:.1f}s); "
                    "retry after that time, lower the concurrency, or raise max_wait_s"
                )
            if reason != self._logged_hold:
                # Once per hold (not per waiting request): a node's log shows why bars pause.
                self._logged_hold = reason
                log.warning("%s: requests are held for %.1f s: %s", self.name, delay, reason)
            slept_from = time.monotonic()
            await asyncio.sleep(delay)
            slept = time.monotonic() - slept_from
            waited += slept
            self.counters.waited_s += slept

    # -- circuit breaker -------------------------------------------------------------------
    def breaker(self, url: str | httpx.URL) -> CircuitBreaker:
        """Return the circuit of ``url``'s host (created closed on first use)."""
        host = _host(httpx.URL(url))
        breaker = self._breakers.get(host)
        if breaker is None:
            breaker = CircuitBreaker(
                self._breaker_threshold, self._breaker_cooldown_s, clock=self._monotonic
            )
            self._breakers[host] = breaker
        return breaker

    def _admit(self, breaker: CircuitBreaker, url: httpx.URL, path: str) -> str | None:
        """None when the try may go; else the reason (the caller raises or appends it)."""
        why = breaker.admit()
        if why is None:
            return None
        self.counters.skipped += 1
        return (
            f"circuit open for {_host(url)} after {breaker.failures} consecutive failures "
            f"(last: {breaker.last_error}); {why}"
        )

    def _record_failure(self, breaker: CircuitBreaker, url: httpx.URL, error: str) -> None:
        change = breaker.failure(error)
        if change == "opened":
            # Once per episode: the skipped requests that follow are not logged one by one.
            log.warning(
                "%s: circuit open for %s after %d consecutive failures (last: %s); its "
                "requests fail fast for %.1f s (then one probe), periods go to the next source",
                self.name,
                _host(url),
                breaker.failures,
                error,
                breaker.cooldown_s,
            )
        elif change == "reopened":
            log.info(
                "%s: probe of %s failed (%s); circuit open for %.1f s more",
                self.name,
                _host(url),
                error,
                breaker.cooldown_s,
            )

    def _record_success(self, breaker: CircuitBreaker, url: httpx.URL) -> None:
        if breaker.success():
            log.warning("%s: %s answers again; circuit closed", self.name, _host(url))

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
        target = httpx.URL(url)
        path = target.path
        breaker = self.breaker(target)
        tries = 0
        waited = 0.0
        last_error = ""
        while True:
            async with state.semaphore:
                waited = await self._wait_gate(path, waited)
                skipped = self._admit(breaker, target, path)
                if skipped is not None:
                    if tries == 0:
                        raise CircuitOpen(
                            f"{self.name} {path}: {skipped}; the period goes to the next "
                            "source; check the network and the base URL, or raise timeout_s / "
                            "deadline_s (CLI --timeout / --deadline) if the host is only slow"
                        )
                    raise CircuitOpen(self._exhausted(path, tries, f"{last_error}; {skipped}"))
                tries += 1
                if self.limiter is not None:
                    await self.limiter.acquire()
                response, value, error = await self._try(
                    state.client, breaker, target, params, parse
                )
            if response is not None:
                self._observe_weight(response)
                status = response.status_code
                if status in (429, 418):
                    self._block_on_rate_limit(response, path)
                    continue  # does not burn a try; the gate decides how long to wait
                if status < 500:
                    return Reply(response, value)
                error = f"HTTP {status} {_snippet(response)}"
            last_error = error
            self._raise_if_done(breaker, target, path, tries, last_error)
            self.counters.retries += 1
            delay = backoff_delay(
                tries, self.policy.backoff_base_s, self.policy.backoff_max_s, self._rand
            )
            await asyncio.sleep(delay)

    async def _try[T](
        self,
        client: httpx.AsyncClient,
        breaker: CircuitBreaker,
        target: httpx.URL,
        params: dict[str, str | int] | None,
        parse: Callable[[httpx.Response], T] | None,
    ) -> tuple[httpx.Response | None, T | None, str]:
        """One try under the deadline: ``(response, parsed value, "")``, or ``(None, None, why)``.

        Records the outcome on the host's circuit: a transport failure counts against it, any
        answer (even one refused by ``parse``) closes it; a cancelled try is neither.
        """
        value: T | None = None
        response: httpx.Response | None = None
        error = ""
        transport_failure = False
        try:
            async with asyncio.timeout(self.deadline_s):
                response = await self._send(client, target, params)
            if 200 <= response.status_code < 300 and parse is not None:
                value = parse(response)
        except _Refused as exc:
            self._record_success(breaker, target)  # the host answered
            raise SourceError(f"{self.name} {exc}") from None
        except TimeoutError:
            transport_failure = True
            error = (
                f"no complete answer within the total deadline "
                f"deadline_s={self.deadline_s:g}s (connect + headers + body)"
            )
        except httpx.TransportError as exc:
            transport_failure = True
            error = _describe(exc)
        except (httpx.DecodingError, RetryableResponse) as exc:
            error = _describe(exc)
            response = None
        except BaseException:
            if response is None:
                breaker.abandon()  # cancelled: neither a success nor a failure
            else:
                self._record_success(breaker, target)  # answered, refused by parse
            raise
        if transport_failure:
            self._record_failure(breaker, target, error.split(" (")[0])
            return None, None, error
        self._record_success(breaker, target)
        return response, value, error

    def _raise_if_done(
        self, breaker: CircuitBreaker, target: httpx.URL, path: str, tries: int, last_error: str
    ) -> None:
        """Raise when a failed try is the last: tries exhausted, or the host's circuit opened."""
        if tries >= self.policy.max_retries:
            message = self._exhausted(path, tries, last_error)
            if breaker.is_open:
                message += f"; circuit open for {_host(target)}"
            raise SourceError(message)
        refused = breaker.refusal()
        if refused is not None:
            # The host's circuit opened meanwhile: no backoff, no retry, next source now.
            self.counters.skipped += 1
            reason = (
                f"circuit open for {_host(target)} after {breaker.failures} consecutive "
                f"failures (last: {breaker.last_error}); {refused}"
            )
            raise CircuitOpen(self._exhausted(path, tries, f"{last_error}; {reason}"))

    def _exhausted(self, path: str, tries: int, last_error: str) -> str:
        message = (
            f"{self.name} {path} failed after {tries} tries; last error: {last_error}; "
            "the source is unreachable or failing, retry later or raise max_retries"
        )
        if "deadline_s=" in last_error:
            message += ", or raise deadline_s (CLI --deadline) if the host is only slow"
        return message

    async def _send(
        self,
        client: httpx.AsyncClient,
        url: httpx.URL,
        params: dict[str, str | int] | None,
    ) -> httpx.Response:
        """One try: the request and the same-host redirects it leads to, each counted."""
        origin = _host(url)
        current = requested = url
        for hop in range(MAX_REDIRECTS + 1):
            self.counters.requests += 1
            response = await client.get(current, params=params if hop == 0 else None)
            if hop == 0:
                requested = response.url  # with its query: what the loop message names
            if not response.is_redirect:
                return response
            location = response.url.join(response.headers["Location"])
            if _host(location) != origin or location.scheme != url.scheme:
                raise _Refused(
                    f"{url.path}: redirected off-host to {location}; not followed (a redirect "
                    f"may only stay on {origin}); set the base URL to that host if it is genuine"
                )
            current = location
        raise _Refused(
            f"{requested}: redirect loop: still redirected after {MAX_REDIRECTS} redirects "
            f"(to {location}); check the base URL or the proxy in between"
        )

    def _observe_weight(self, response: httpx.Response) -> None:
        if self.weight_gate is None:
            return
        used = parse_used_weight(response.headers.get(WEIGHT_HEADER))
        if used is not None:
            self.weight_gate.observe(used, wall_clock_ms())

    def _block_on_rate_limit(self, response: httpx.Response, path: str) -> None:
        status = response.status_code
        wait, shown = rate_limit_wait(status, response.headers.get("Retry-After"))
        self.counters.rate_limited += 1
        if wait is None:
            raise RateLimited(
                f"{self.name} {path}: Binance banned this IP (HTTP 418) without a usable "
                f"Retry-After ({shown}); wait before retrying and lower the request rate"
            )
        self.counters.imposed_wait_s += wait
        ends = _held_until(wait)
        what = (
            "Binance banned this IP (HTTP 418)"
            if status == 418
            else "Binance rate-limited the client (HTTP 429)"
        )
        # The hold applies to every request of the transport; beyond max_wait_s the gate
        # raises RateLimited naming the time, before anything more is sent.
        self.block_for(wait, f"{what} until {ends} ({shown})")


def _host(url: httpx.URL) -> str:
    """``host:port`` of a URL (the key of its circuit breaker)."""
    port = url.port or {"https": 443, "http": 80}.get(url.scheme, 0)
    return f"{url.host}:{port}"


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _snippet(response: httpx.Response, limit: int = 200) -> str:
    text = response.text.strip().replace("\n", " ")
    return text[:limit] + ("..." if len(text) > limit else "")


def _held_until(delay_s: float) -> str:
    """When a hold of ``delay_s`` from now ends, for messages (holds are finite: capped)."""
    return iso_ms(wall_clock_ms() + round(delay_s * SECOND_MS))
