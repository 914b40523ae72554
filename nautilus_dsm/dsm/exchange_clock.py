"""Binance's clock as seen from this machine: which bars are closed is the exchange's call.

A kline is closed only when its close is before *exchange* time. The local clock is routinely
off by more than a poll delay (VM and laptop clocks drift; a local clock 400 ms ahead made every
live 1s bar a still-forming one), so each market's offset to Binance's clock is measured with
``GET /api/v3/time`` (``/fapi/v1/time``, ``/dapi/v1/time``): weight 1, a few samples, the one
with the smallest round trip kept, re-measured every minute and lazily on first use.

The estimation is pure (:class:`TimeSample`, :func:`best_sample`); I/O is the ``server_time``
callable handed to :class:`ExchangeClock`. The clock never fails a fetch: when the exchange's
time cannot be read, the last offset (0 before the first success) is used, with a warning.

:meth:`ExchangeClock.now_ms` is a *lower bound* of the exchange's time: the server read its
clock somewhere between sending and receiving, so at local time ``t`` the exchange's clock
reads at least ``server_ms + (t - received_ms)``. Deciding "closed" against a lower bound
means a bar can be taken as closed a few milliseconds late, never early.

The offset holds only while the local clock runs on: a *step* (NTP stepping it, a VM resumed
from suspend) makes it wrong at once, by the size of the step. Steps are detected by comparing
how far the local clock moved since the last measurement with how far ``time.monotonic()``
(which never steps) moved; beyond :data:`STEP_TOLERANCE_MS` either way, the next use measures
again before anything is decided as closed.

A *slewed* clock is not a step: NTP's gradual correction moves ``time.monotonic()`` too, so
the offset goes stale without a trace. Two defences: the offset is re-measured every
:data:`DEFAULT_RESYNC_S` (60 s, 3 requests of weight 1), and :meth:`ExchangeClock.now_ms`
subtracts ``elapsed since the measurement x`` :data:`MAX_SLEW_PPM` (the kernel/ntpd slew limit,
500 ppm = 0.5 ms/s), so a decision is never early by what such a clock can drift. chrony's
``maxslewrate`` can be far higher (83 333 ppm by default); what that could make permanent, a
just-closed period cached as final, is guarded by the manager forcing a fresh measurement
(:meth:`ExchangeClock.proves_closed`) before it decides such a period closed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nautilus_dsm.constants import NS_PER_MS, SECOND_MS
from nautilus_dsm.errors import SourceError

log = logging.getLogger(__name__)

DEFAULT_RESYNC_S = 60.0
DEFAULT_SAMPLES = 3
# Offsets beyond this are logged at warning (the threshold: more than a poll delay).
WARN_OFFSET_MS = 100
# After a failed sync, wait this long (or the resync interval, if shorter) before asking again.
RETRY_FAILED_SYNC_S = 60.0
# Local-clock movement beyond monotonic movement (either way) taken as a clock step.
STEP_TOLERANCE_MS = 1_000
# The most a slewed local clock drifts from the exchange's per second of elapsed time, in parts
# per million: the kernel/ntpd slew limit (500 ppm = 0.5 ms/s). now_ms() widens by it.
MAX_SLEW_PPM = 500


def wall_clock_ms() -> int:
    """Return the system clock in epoch milliseconds (the default local "now" of the engine)."""
    return time.time_ns() // NS_PER_MS


@dataclass(frozen=True, slots=True)
class TimeSample:
    """One ``GET /time``: local clock at send and at receipt, and the server's ``serverTime``."""

    sent_ms: int
    received_ms: int
    server_ms: int

    @property
    def rtt_ms(self) -> int:
        """Round trip, local milliseconds."""
        return self.received_ms - self.sent_ms

    @property
    def offset_ms(self) -> int:
        """Exchange minus local at the midpoint of the round trip (rounded toward -inf)."""
        return math.floor(self.server_ms - (self.sent_ms + self.received_ms) / 2)

    @property
    def uncertainty_ms(self) -> int:
        """How far the midpoint estimate can be off: half the round trip, rounded up."""
        return -(-self.rtt_ms // 2)


def best_sample(samples: list[TimeSample] | tuple[TimeSample, ...]) -> TimeSample | None:
    """Return the sample with the smallest round trip (the first on ties), or None.

    None when no sample is usable: a negative round trip (the local clock stepped back
    mid-request) measures nothing.
    """
    usable = [s for s in samples if s.rtt_ms >= 0]
    if not usable:
        return None
    return min(usable, key=lambda s: s.rtt_ms)


class ExchangeClock:
    """
    One market's exchange time: the local clock plus a measured, periodically refreshed offset.

    Parameters
    ----------
    name : str
        The market, for the log (``"SPOT"``).
    server_time : Callable[[], Awaitable[int]], optional
        Reads the exchange's clock (``serverTime``, epoch ms); may raise :class:`SourceError`.
        None disables measuring: the offset stays 0 (exchange time is the local clock).
    local : Callable[[], int]
        The local clock, epoch ms.
    resync_s : float, default 60
        Age of the last measurement after which the next use measures again.
    samples : int, default 3
        ``GET /time`` requests per measurement; the smallest round trip wins.
    warn_ms : int, default 100
        Offsets larger than this (in absolute value) are logged at warning.
    monotonic : Callable[[], float], default time.monotonic
        A clock that never steps (seconds), against which steps of ``local`` are detected.
    step_tolerance_ms : int, default 1000
        Disagreement between the two clocks since the last measurement taken as a step.
    max_slew_ppm : int, default 500
        Drift per elapsed time since the measurement that :meth:`now_ms` subtracts.

    """

    def __init__(
        self,
        name: str,
        server_time: Callable[[], Awaitable[int]] | None,
        *,
        local: Callable[[], int],
        resync_s: float = DEFAULT_RESYNC_S,
        samples: int = DEFAULT_SAMPLES,
        warn_ms: int = WARN_OFFSET_MS,
        monotonic: Callable[[], float] = time.monotonic,
        step_tolerance_ms: int = STEP_TOLERANCE_MS,
        max_slew_ppm: int = MAX_SLEW_PPM,
    ) -> None:
        if not resync_s > 0:  # also refuses NaN
            raise ValueError(f"resync_s must be > 0 seconds, was {resync_s!r}")
        if samples < 1:
            raise ValueError(f"samples must be >= 1, was {samples}")
        self.name = name
        self._server_time = server_time
        self._local = local
        self.resync_ms = resync_s * SECOND_MS
        self.samples = samples
        self.warn_ms = warn_ms
        self._monotonic = monotonic
        self.step_tolerance_ms = step_tolerance_ms
        self.max_slew_ppm = max_slew_ppm
        # (local ms, monotonic s) at the end of the last attempt: the base of step detection.
        self._base: tuple[int, float] | None = None
        self._sample: TimeSample | None = None  # the measurement in use
        self._attempted_ms: int | None = None  # local time of the last attempt
        self._failed = False
        self._inflight: asyncio.Task[None] | None = None
        self.syncs = 0  # successful measurements, for tests and stats

    # -- reading ----------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """Whether the offset is measured (False: exchange time is the local clock)."""
        return self._server_time is not None

    @property
    def offset_ms(self) -> int:
        """Exchange minus local clock, ms (RTT-compensated midpoint; 0 before a measurement)."""
        return 0 if self._sample is None else self._sample.offset_ms

    @property
    def rtt_ms(self) -> int | None:
        """Round trip of the measurement in use (None before one)."""
        return None if self._sample is None else self._sample.rtt_ms

    @property
    def synced(self) -> bool:
        """True once a measurement succeeded."""
        return self._sample is not None

    def now_ms(self, local_ms: int | None = None) -> int:
        """Exchange time now (or at local time ``local_ms``): a lower bound, never ahead of it.

        The server's reading plus the local time elapsed since, less what a slewed local clock
        can have drifted meanwhile (``elapsed x max_slew_ppm``; rounded down: under 1 ms, and
        the reading itself is already up to a round trip old).
        """
        local = self._local() if local_ms is None else local_ms
        sample = self._sample
        if sample is None:
            return local
        # The server read its clock no later than we received the answer.
        elapsed = local - sample.received_ms
        margin = max(0, elapsed) * self.max_slew_ppm // 1_000_000  # ppm
        return sample.server_ms + elapsed - margin

    def proves_closed(self, close_ms: int) -> bool:
        """Tell whether the exchange itself read a time at or after ``close_ms``.

        That is a measurement taken after it: closedness that no drift of the local clock can
        undo.
        """
        return self._sample is not None and self._sample.server_ms >= close_ms

    def can_force(self) -> bool:
        """Tell whether a measurement outside the schedule may be made now.

        True when measuring, and not inside the wait after a failed one: a down ``/time`` is
        not asked on every fetch.
        """
        if self._server_time is None:
            return False
        return not self._failed or self.due()

    def step_ms(self) -> int:
        """Return how far the local clock stepped since the last measurement (ms, + = ahead).

        0 when within the tolerance, not measuring, or never measured.
        """
        base = self._base
        if self._server_time is None or base is None:
            return 0
        local_moved = self._local() - base[0]
        real_moved = (self._monotonic() - base[1]) * SECOND_MS
        step = round(local_moved - real_moved)
        return step if abs(step) > self.step_tolerance_ms else 0

    def due(self) -> bool:
        """Tell whether the next use should measure (never measured, or the measurement is old)."""
        if self._server_time is None:
            return False
        if self._attempted_ms is None:
            return True
        wait_ms = self.resync_ms
        if self._failed:
            wait_ms = min(wait_ms, RETRY_FAILED_SYNC_S * SECOND_MS)
        return self._local() - self._attempted_ms >= wait_ms

    # -- measuring --------------------------------------------------------------------------

    async def ensure(self) -> int:
        """Measure if due or the local clock stepped; return :meth:`now_ms`.

        Concurrent callers share one measurement.
        """
        # A stepped local clock makes the offset wrong by the step: measure before deciding.
        step = self.step_ms()
        if step or self.due():
            await self._measure(step)
        return self.now_ms()

    async def refresh(self) -> int:
        """Measure now, whatever the age of the last measurement; return :meth:`now_ms`.

        A measurement already in flight is shared.
        """
        await self._measure(0)
        return self.now_ms()

    async def _measure(self, step: int) -> None:
        loop = asyncio.get_running_loop()
        task = self._inflight
        if task is None or task.done() or task.get_loop() is not loop:
            if step:
                log.warning(
                    "Binance %s: the local clock stepped %+d ms since the exchange time was "
                    "last measured (NTP step, VM resume?); measuring the offset again before "
                    "deciding closed bars",
                    self.name,
                    step,
                )
            task = self._inflight = loop.create_task(self.sync())
        # Shielded: a cancelled caller must not cancel the measurement others await.
        await asyncio.shield(task)

    async def sync(self) -> None:
        """Measure the offset now; on failure keep the last one (0 at first) and warn."""
        if self._server_time is None:
            return
        self._attempted_ms = self._local()
        taken: list[TimeSample] = []
        error: SourceError | None = None
        for _ in range(self.samples):
            sent = self._local()
            try:
                server = await self._server_time()
            except SourceError as exc:
                error = exc  # a failing host fails every sample: do not ask it again now
                break
            taken.append(TimeSample(sent, self._local(), int(server)))
        self._base = (self._local(), self._monotonic())
        best = best_sample(taken)
        if best is None:
            self._failed = True
            kept = (
                f"keeping the offset {self.offset_ms} ms measured before"
                if self._sample is not None
                else "using the local clock as exchange time (offset 0)"
            )
            why = f"{error}" if error is not None else "the local clock stepped back mid-request"
            log.warning(
                "Binance %s server time could not be read (%s); %s; closed bars are decided by "
                "it until the next try",
                self.name,
                why,
                kept,
            )
            return
        self._failed = False
        self._sample = best
        self.syncs += 1
        if abs(best.offset_ms) > self.warn_ms:
            log.warning(
                "Binance %s clock is %+d ms from the local clock (round trip %d ms); closed bars "
                "are decided by exchange time, so nothing forming is served, but check the "
                "machine's time sync (NTP)",
                self.name,
                best.offset_ms,
                best.rtt_ms,
            )
        else:
            log.debug(
                "Binance %s clock offset %+d ms (round trip %d ms)",
                self.name,
                best.offset_ms,
                best.rtt_ms,
            )
