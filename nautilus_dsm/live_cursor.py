"""The "next bar due" cursor of one live series, and the pure policy around it.

Every live subscription is one :class:`BarPoller`: the open time of the next bar to publish
(``next_open_ms``), shared by every source that can deliver it: the websocket stream
(:mod:`nautilus_dsm.live_stream`) and REST (:mod:`nautilus_dsm.polling`, the poller when
``live_source="rest"``, the reconciler behind the stream otherwise). Whoever delivers the bar at
the cursor publishes it and moves the cursor on; anything older is a duplicate and dropped, so
each bar is published once and in order whatever the sources do. The cursor is keyed by series
(a bar type today), not by anything kline-specific.

Also here: the backoff of source errors (:func:`retry_delay_s`), the re-poll wait of a bar due
but not closed yet (:func:`not_closed_wait_s`), and which instruments have no live klines.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import polars as pl

from nautilus_dsm.common import Interval, ResolvedInstrument
from nautilus_dsm.parsing import TRADING

if TYPE_CHECKING:
    from nautilus_trader.model.data import BarType
    from nautilus_trader.model.instruments import Instrument

__all__ = [
    "BarPoller",
    "frame_end_ms",
    "not_closed_wait_s",
    "not_trading",
    "retry_delay_s",
]

# Retry schedule of source errors (seconds): short enough for 1s bars, bounded for long outages.
_RETRY_BASE_S = 0.1
_RETRY_MAX_S = 5.0
# How often to re-poll when a bar is due but Binance has not closed it yet.
_NOT_YET_CLOSED_S = 0.05
_NOT_YET_CLOSED_MAX_S = 2.0


def retry_delay_s(failures: int) -> float:
    """Return the backoff before retry number ``failures`` (1-based): doubling, capped."""
    return min(_RETRY_BASE_S * 2 ** (failures - 1), _RETRY_MAX_S)


def not_closed_wait_s(interval: Interval, waits: int) -> float:
    """Return the wait before re-polling a due bar not closed yet (``waits``: 1-based).

    Growing with each wait, capped so a due bar is re-polled at least 4 times per interval
    (1s bars: every <= 250 ms).
    """
    max_wait_s = (
        _NOT_YET_CLOSED_MAX_S
        if interval.is_month
        else min(_NOT_YET_CLOSED_MAX_S, interval.fixed_ms / 4_000)
    )
    return min(_NOT_YET_CLOSED_S * waits, max_wait_s)


def frame_end_ms(frame: pl.DataFrame, interval: Interval) -> int:
    """Return the open time after the frame's last bar; a row off the grid counts as its bar."""
    last_open_ms = int(frame["open_time"].dt.epoch("ms")[-1])
    return interval.next_open_ms(interval.floor_ms(last_open_ms))


def not_trading(instrument: Instrument) -> str | None:
    """Return why ``instrument`` has no live klines (its exchangeInfo status), or None.

    Instruments without the raw exchangeInfo dict (built elsewhere) are taken as trading.
    """
    info = instrument.info
    if not isinstance(info, dict):
        return None
    # Spot and USDT-M report `status`, COIN-M `contractStatus` (as parsing.skip_reason reads).
    status = info.get("status", info.get("contractStatus"))
    if status is None or status == TRADING:
        return None
    return (
        f"{instrument.id} has status {status!r} on Binance, not {TRADING}: it has no live "
        "klines, only its history is available (request_bars)"
    )


@dataclass
class BarPoller:
    """One live subscription's state: the cursor of one series and its counters.

    One sequential REST task per bar type (so a slow response never publishes twice); a stream
    feeding the same cursor publishes only the bar at the cursor.
    """

    bar_type: BarType
    interval: Interval
    resolved: ResolvedInstrument
    instrument: Instrument | None  # resolved by the poll loop (retried while the source is down)
    next_open_ms: int  # open time of the next bar to publish
    # Local clock at subscription: the first bar is re-anchored to the exchange's forming bar
    # at that moment once its clock is measured (None once anchored).
    anchor_local_ms: int | None = None
    skip_ms: dict[int, str] = field(default_factory=dict)  # bad klines to skip: open -> why
    narrow_until_ms: int | None = None  # fetch one bar at a time up to here (finding a bad one)
    skipped: int = 0
    last_close: Decimal | None = None
    task: asyncio.Task | None = None
    published: int = 0
    synthetic: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    # The loop's counters: source failures in a row, tries of a bad kline, not-closed waits.
    failures: int = 0
    bad_tries: int = 0
    waits: int = 0
    # -- behind a websocket stream (None / empty when REST is the only source) --
    # REST is due at close + delay_ms (None: the client's poll_delay_ms).
    delay_ms: int | None = None
    # Set when the cursor moves or the stream jumps ahead: the REST loop re-reads its due time.
    wake: asyncio.Event | None = None
    # Streamed closed klines ahead of the cursor, by open time (published once it reaches them).
    pending: dict[int, Any] = field(default_factory=dict)
    # Called after REST moved the cursor: publishes what ``pending`` now continues.
    drain: Callable[[], None] | None = None
    streamed: int = 0  # bars published from the stream
    reconciled: int = 0  # bars published by REST behind a stream (late or missed by it)
    gaps_backfilled: int = 0  # runs the stream skipped (a jump, a reconnect) REST filled
    duplicates: int = 0  # bars delivered again (stream after REST, or twice) and dropped
    gap_open: bool = False  # a run the stream skipped is being backfilled
    expected_from_ms: int | None = None  # first open time this subscription owes (completeness)

    def due_ms(self, delay_ms: int) -> int:
        """Return when the next bar can be fetched: its close plus ``delay_ms``."""
        return self.interval.next_open_ms(self.next_open_ms) + delay_ms

    def due_now(self) -> bool:
        """Whether REST must fetch at once: the stream delivered a bar beyond the cursor.

        Binance sends a stream's klines in order, so the bars between the cursor and the first
        pending one will not come from the stream any more.
        """
        return bool(self.pending) and min(self.pending) > self.next_open_ms

    def take(self, open_ms: int, item: Any) -> None:
        """Hold a streamed closed kline until the cursor reaches it; count a duplicate."""
        if open_ms < self.next_open_ms or open_ms in self.pending:
            self.duplicates += 1
            return
        self.pending[open_ms] = item

    def ready(self) -> list[Any]:
        """Pop the held klines that continue the cursor, in order (dropping older ones).

        The caller publishes them at once (publishing moves the cursor on); a run the stream
        skipped stays pending and marks ``gap_open``.
        """
        for stale in [t for t in self.pending if t < self.next_open_ms]:
            del self.pending[stale]
            self.duplicates += 1
        out = []
        cursor = self.next_open_ms
        while cursor in self.pending:
            out.append(self.pending.pop(cursor))
            cursor = self.interval.next_open_ms(cursor)
        if self.pending:
            self.gap_open = True
        return out

    def window_end_ms(self, now_ms: int) -> tuple[int, bool]:
        """Return the end (exclusive open time) of the next fetch, and whether it was cut.

        The end is up to now but short of a bad kline; a cut window does not grow with time.
        """
        interval = self.interval
        # On the grid: the bars this window can hold are exactly those it names.
        natural = max(interval.floor_ms(now_ms), interval.next_open_ms(self.next_open_ms))
        end_ms = natural
        if self.narrow_until_ms is not None:
            if self.next_open_ms >= self.narrow_until_ms:
                self.narrow_until_ms = None
            else:
                end_ms = min(end_ms, interval.next_open_ms(self.next_open_ms))
        self.skip_ms = {t: w for t, w in self.skip_ms.items() if t >= self.next_open_ms}
        if self.skip_ms:
            end_ms = min(end_ms, min(self.skip_ms))
        return end_ms, end_ms < natural

    def skip_next(self) -> int:
        """Go on from the bar after ``next_open_ms`` (a bad kline); return the skipped open."""
        skipped = self.next_open_ms
        self.skip_ms.pop(skipped, None)
        self.next_open_ms = self.interval.next_open_ms(skipped)
        self.skipped += 1
        return skipped
