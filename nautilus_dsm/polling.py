"""The live REST poller of the data client: one sequential task per subscribed bar type.

Each subscription is a :class:`BarPoller` (its state: the next bar to publish, bad klines to
skip, counters) run by :func:`poll_bars`: wait until the next bar is due on the exchange's clock
(its close plus ``poll_delay_ms``), fetch every closed bar up to now, publish each once and in
order, and backfill what an outage missed before any newer bar. Source errors are retried with
:func:`retry_delay_s` as long as they last; a bar due but not closed at the source yet is polled
again soon (:func:`not_closed_wait_s`); a bad kline (a payload failing validation, or one
nothing can parse) gets ``BAD_KLINE_TRIES`` tries, then it is logged and skipped, found one bar
at a time when the error does not name it. Only an exchangeInfo that no longer lists the symbol,
or a request refused as such, ends the subscription.

The loop reaches its client through :class:`PollHost` (``DSMDataClient`` is one): the manager,
the clocks, the logger, publishing, and ending the subscription.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import polars as pl
from nautilus_trader.common.enums import LogColor

from nautilus_dsm.bars import convert_frame
from nautilus_dsm.common import Interval, MarketType, ResolvedInstrument, from_ms, iso, iso_ms
from nautilus_dsm.constants import NS_PER_MS
from nautilus_dsm.dsm.synthetic import missing_open_times_ms
from nautilus_dsm.errors import DSMError, InvalidInput, InvalidResponse, UnknownSymbol
from nautilus_dsm.gaps import describe_invalid, fill_synthetic, format_runs, missing_runs
from nautilus_dsm.parsing import TRADING

if TYPE_CHECKING:
    from nautilus_trader.model.data import BarType
    from nautilus_trader.model.identifiers import InstrumentId
    from nautilus_trader.model.instruments import Instrument

    from nautilus_dsm.config import DSMDataClientConfig
    from nautilus_dsm.dsm.manager import DataSourceManager
    from nautilus_dsm.dsm.settings import SourceSettings

__all__ = [
    "BAD_KLINE_TRIES",
    "BarPoller",
    "PollHost",
    "frame_end_ms",
    "not_closed_wait_s",
    "not_trading",
    "poll_bars",
    "retry_delay_s",
]

# Retry schedule of source errors (seconds): short enough for 1s bars, bounded for long outages.
_RETRY_BASE_S = 0.1
_RETRY_MAX_S = 5.0
# How often to re-poll when a bar is due but Binance has not closed it yet.
_NOT_YET_CLOSED_S = 0.05
_NOT_YET_CLOSED_MAX_S = 2.0
# A bad kline (a payload that fails validation, or one nothing can parse) gets this many tries,
# then it is reported and skipped: it would fail the same way forever. Outages are retried as
# long as they last.
BAD_KLINE_TRIES = 3


# ---------------------------------------------------------------------------------------------
# Pure policy and state
# ---------------------------------------------------------------------------------------------


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
    """One live subscription's state, polled by one sequential task per bar type.

    One task, sequential, so that a slow response never publishes twice.
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

    def due_ms(self, delay_ms: int) -> int:
        """Return when the next bar can be fetched: its close plus ``delay_ms``."""
        return self.interval.next_open_ms(self.next_open_ms) + delay_ms

    def window_end_ms(self, now_ms: int) -> tuple[int, bool]:
        """Return the end (exclusive open time) of the next fetch and whether it was cut short.

        The end is up to now, but short of a bad kline; a cut-short end does not grow with time.
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


class PollHost(Protocol):
    """What the poll loop needs of its data client (``DSMDataClient`` is one)."""

    _logger: Any  # the client's log seam (tests swap in a recorder)
    _config: DSMDataClientConfig  # poll_delay_ms, synthetic_fallback
    _source: SourceSettings  # min_completeness

    @property
    def dsm(self) -> DataSourceManager:
        """The data-source manager the loop fetches bars with."""

    def _now_ns(self) -> int: ...

    def _now_ms(
        self, market_type: MarketType | None = None, local_ms: int | None = None
    ) -> int: ...

    def _handle_data(self, data: Any) -> None: ...

    async def _instrument(
        self, instrument_id: InstrumentId, *, history: bool = False
    ) -> Instrument: ...

    def _end_subscription(self, poller: BarPoller) -> None: ...


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


async def poll_bars(host: PollHost, poller: BarPoller) -> None:
    """Publish every closed bar once, in order; retry with backoff through outages.

    "Closed" is the exchange's clock's call. Source errors (5xx, timeouts, a transient
    -1121 while exchangeInfo still lists the symbol) are retried, since outages end. A bad
    kline (``InvalidResponse``, or a payload nothing can parse) fails the same way on every
    retry: after ``BAD_KLINE_TRIES`` it is logged as an error and skipped, found one bar at
    a time when the error does not name it. Only an exchangeInfo that no longer lists the
    symbol, or a request refused as such, ends the subscription.
    """
    if not await _resolve_instrument(host, poller):
        return
    await _anchor_to_exchange_time(host, poller)
    while await _poll_once(host, poller):
        pass


async def _poll_once(host: PollHost, poller: BarPoller) -> bool:
    """Wait until the next bar is due, fetch up to now, publish; False when the stream ends."""
    market = poller.resolved.market_type
    due_ms = poller.due_ms(host._config.poll_delay_ms)
    now_ms = await host.dsm.exchange_now_ms(market)  # measures only when due
    if due_ms > now_ms:
        await asyncio.sleep((due_ms - now_ms) / 1000)
    end_ms, cut = poller.window_end_ms(host._now_ms(market))
    if end_ms <= poller.next_open_ms:  # the next bar is a known bad kline
        _skip_bad_kline(host, poller, poller.skip_ms[poller.next_open_ms])
        return True
    try:
        result = await host.dsm.fetch(
            poller.resolved.instrument_id,
            poller.interval,
            from_ms(poller.next_open_ms),
            from_ms(end_ms),
            min_completeness=0.0,
            on_low_quality="warn",
        )
    except asyncio.CancelledError:
        raise
    except Exception as e:
        return await _on_fetch_error(host, poller, e, end_ms)
    poller.bad_tries = 0
    await _on_fetched(host, poller, result.frame, result.report, end_ms, cut)
    return True


async def _on_fetch_error(host: PollHost, poller: BarPoller, error: Exception, end_ms: int) -> bool:
    """Retry, skip or end after a failed fetch; False when the subscription ended."""
    bar_type = poller.bar_type
    if isinstance(error, UnknownSymbol):  # -1121: transient unless exchangeInfo agrees
        if not await _still_listed(host, poller):
            host._logger.error(
                f"{bar_type}: {poller.resolved.symbol} is no longer listed in the "
                f"{poller.resolved.market_type.name} exchangeInfo ({error}); subscription "
                f"ended after {poller.published} bars"
            )
            host._end_subscription(poller)
            return False
        what = (
            f"klines answered -1121 but exchangeInfo still lists {poller.resolved.symbol} "
            "(transient)"
        )
    elif isinstance(error, InvalidInput):  # the request itself is refused: it always will be
        host._logger.error(f"{bar_type}: cannot poll ({error}); subscription ended")
        host._end_subscription(poller)
        return False
    elif isinstance(error, InvalidResponse) or not isinstance(error, DSMError):
        await _on_bad_klines(host, poller, error, end_ms)
        return True
    else:
        what = f"fetch failed ({type(error).__name__}: {error})"
    poller.failures += 1
    retry_s = retry_delay_s(poller.failures)
    host._logger.warning(
        f"{bar_type}: {what}; attempt {poller.failures}, retrying in {retry_s:.2f}s; bars from "
        f"{iso_ms(poller.next_open_ms)} will be backfilled in order"
    )
    await asyncio.sleep(retry_s)
    return True


async def _on_bad_klines(host: PollHost, poller: BarPoller, error: Exception, end_ms: int) -> None:
    """Retry a bad payload ``BAD_KLINE_TRIES`` times, then isolate and skip the bad kline."""
    poller.bad_tries += 1
    if poller.bad_tries < BAD_KLINE_TRIES:
        retry_s = retry_delay_s(poller.bad_tries)
        host._logger.warning(
            f"{poller.bar_type}: bad klines from {iso_ms(poller.next_open_ms)} "
            f"({type(error).__name__}: {error}); try {poller.bad_tries} of {BAD_KLINE_TRIES}, "
            f"retrying in {retry_s:.2f}s"
        )
        await asyncio.sleep(retry_s)
        return
    _isolate_bad_kline(host, poller, error, end_ms, poller.bad_tries)
    poller.bad_tries = 0


async def _on_fetched(
    host: PollHost, poller: BarPoller, frame: pl.DataFrame, report: Any, end_ms: int, cut: bool
) -> None:
    """Publish what a fetch returned; after an empty one, skip a source gap or wait."""
    frame = frame.filter(pl.col("open_time").dt.epoch("ms") >= poller.next_open_ms).sort(
        "open_time"
    )
    if not frame.is_empty():
        _publish_or_skip(host, poller, frame, report)
    if poller.failures:
        host._logger.info(
            f"{poller.bar_type}: source back after {poller.failures} failed attempts; "
            f"backfilled up to {iso_ms(poller.next_open_ms)}",
            LogColor.GREEN,
        )
        poller.failures = 0
    if not frame.is_empty():
        poller.waits = 0
        return
    market = poller.resolved.market_type
    if (cut or poller.narrow_until_ms is not None) and end_ms <= host._now_ms(market):
        # A window that cannot grow, wholly closed, came back empty: a source gap, not a
        # forming bar (waiting would stall the stream before a bad kline).
        n = poller.interval.count(poller.next_open_ms, end_ms)
        host._logger.error(
            f"{poller.bar_type}: the source has no bars for {n} open times: "
            f"{format_runs([(poller.next_open_ms, end_ms, n)])}"
        )
        poller.next_open_ms = end_ms
        return
    # Due but not closed at the source yet: re-poll soon, never publish forming bars.
    poller.waits += 1
    await asyncio.sleep(not_closed_wait_s(poller.interval, poller.waits))


# ---------------------------------------------------------------------------------------------
# Starting: the instrument and the exchange's clock
# ---------------------------------------------------------------------------------------------


async def _resolve_instrument(host: PollHost, poller: BarPoller) -> bool:
    """Resolve the instrument, retrying source errors; False when it cannot exist."""
    bar_type = poller.bar_type
    failures = 0
    while poller.instrument is None:
        try:
            poller.instrument = await host._instrument(bar_type.instrument_id)
        except asyncio.CancelledError:
            raise
        except InvalidInput as e:  # unknown symbol, wrong market: asking again cannot help
            host._logger.error(f"Cannot subscribe to {bar_type}: {e}")
            host._end_subscription(poller)
            return False
        except Exception as e:
            failures += 1
            retry_s = retry_delay_s(failures)
            host._logger.warning(
                f"{bar_type}: instrument lookup failed ({type(e).__name__}: {e}); attempt "
                f"{failures}, retrying in {retry_s:.2f}s; bars from "
                f"{iso_ms(poller.next_open_ms)} will be backfilled in order"
            )
            await asyncio.sleep(retry_s)
    if failures:
        host._logger.info(
            f"{bar_type}: instrument resolved after {failures} failed attempts",
            LogColor.GREEN,
        )
    if (refusal := not_trading(poller.instrument)) is not None:
        host._logger.error(f"Cannot subscribe to {bar_type}: {refusal}")
        host._end_subscription(poller)
        return False
    return True


async def _anchor_to_exchange_time(host: PollHost, poller: BarPoller) -> None:
    """Measure the exchange clock; start from the exchange's forming bar at subscription.

    The subscription used the offset known then (0 before the first measurement): with the
    local clock minutes behind, it would otherwise start minutes in the exchange's past.
    """
    market = poller.resolved.market_type
    await host.dsm.exchange_now_ms(market)
    anchor, poller.anchor_local_ms = poller.anchor_local_ms, None
    if anchor is None or poller.published:
        return
    anchored = poller.interval.floor_ms(host._now_ms(market, anchor))
    if anchored != poller.next_open_ms:
        host._logger.info(
            f"{poller.bar_type}: exchange clock offset "
            f"{host.dsm.exchange_clock(market).offset_ms:+d} ms; the first bar is the one "
            f"forming on the exchange at subscription, {iso_ms(anchored)}",
            LogColor.BLUE,
        )
        poller.next_open_ms = anchored


async def _still_listed(host: PollHost, poller: BarPoller) -> bool:
    """Whether a fresh exchangeInfo still lists the symbol (True when it cannot tell)."""
    symbol = poller.resolved.symbol
    try:
        info = await host.dsm.rest_client(poller.resolved.market_type).exchange_info(symbol)
    except asyncio.CancelledError:
        raise
    except UnknownSymbol:
        return False
    except Exception as e:  # cannot tell: a transient -1121 is retried like an outage
        host._logger.warning(
            f"{poller.bar_type}: could not check exchangeInfo for {symbol} "
            f"({type(e).__name__}: {e})"
        )
        return True
    symbols = info.get("symbols")
    if not isinstance(symbols, list):
        return True
    return any(isinstance(s, dict) and s.get("symbol") == symbol for s in symbols)


# ---------------------------------------------------------------------------------------------
# Bad klines
# ---------------------------------------------------------------------------------------------


def _skip_bad_kline(host: PollHost, poller: BarPoller, why: str) -> None:
    """Report the bad kline at ``next_open_ms`` and go on from the bar after it."""
    skipped = poller.skip_next()
    host._logger.error(
        f"{poller.bar_type}: the kline opening at {iso_ms(skipped)} is skipped: {why}; the "
        f"stream goes on from {iso_ms(poller.next_open_ms)}"
    )


def _isolate_bad_kline(
    host: PollHost, poller: BarPoller, error: BaseException, end_ms: int, tries: int
) -> None:
    """After the last try: skip the klines the error names, or narrow down to find them."""
    why = (
        f"the source answered it with a bad payload {tries} times ({type(error).__name__}: {error})"
    )
    named = getattr(error, "open_times_ms", ())
    known = {t for t in named if poller.next_open_ms <= t < end_ms}
    if known:
        poller.skip_ms.update(dict.fromkeys(known, why))
        if poller.next_open_ms in known:
            _skip_bad_kline(host, poller, why)
        return
    if end_ms <= poller.interval.next_open_ms(poller.next_open_ms):
        _skip_bad_kline(host, poller, why)  # a window of one bar: it is this one
        return
    poller.narrow_until_ms = end_ms
    host._logger.warning(
        f"{poller.bar_type}: bad klines in [{iso_ms(poller.next_open_ms)}, {iso_ms(end_ms)}) "
        "not named by the source; fetching one bar at a time to skip only the bad one"
    )


# ---------------------------------------------------------------------------------------------
# Publishing
# ---------------------------------------------------------------------------------------------


def _publish_or_skip(host: PollHost, poller: BarPoller, frame: pl.DataFrame, report: Any) -> None:
    """Publish the frame's bars; if that fails, skip the frame (a retry would fail again)."""
    end_ms = frame_end_ms(frame, poller.interval)
    try:
        _publish(host, poller, frame, report, end_ms)
    except Exception as e:
        first, last = iso(frame["open_time"][0]), iso(frame["open_time"][-1])
        host._logger.error(
            f"{poller.bar_type}: {frame.height} klines from {first} to {last} could not be "
            f"published and are skipped ({type(e).__name__}: {e}); polling continues from "
            f"{iso_ms(end_ms)}"
        )
        poller.next_open_ms = max(poller.next_open_ms, end_ms)


def _publish(
    host: PollHost, poller: BarPoller, frame: pl.DataFrame, report: Any, end_ms: int
) -> None:
    bar_type = poller.bar_type
    assert poller.instrument is not None  # resolved before the first fetch
    frame = _report_missing(host, poller, frame, report, end_ms)
    conversion = convert_frame(frame, bar_type, poller.instrument)
    if conversion.invalid.height:
        host._logger.error(
            f"{bar_type}: {conversion.invalid.height} of {conversion.rows} klines cannot be "
            f"bars and are skipped: {describe_invalid(conversion.invalid)}"
        )
    valid = np.ones(frame.height, dtype=bool)
    valid[conversion.invalid["row"].to_numpy()] = False
    bars = conversion.bars
    # Close -> publish latency on the exchange's clock (bars are stamped by it).
    local_ns = host._now_ns()
    local_ms = local_ns // NS_PER_MS
    shift_ms = host._now_ms(poller.resolved.market_type, local_ms) - local_ms
    now_ns = local_ns + shift_ms * NS_PER_MS
    for bar in bars:
        host._handle_data(bar)
        # Advance per bar: whatever happens next, a published bar is never published again.
        poller.next_open_ms = bar.ts_event // NS_PER_MS  # the close is the next bar's open
        poller.published += 1
        poller.latencies_ms.append((now_ns - bar.ts_event) / NS_PER_MS)
    poller.next_open_ms = end_ms
    if valid.any():
        poller.last_close = frame["close"][int(np.flatnonzero(valid)[-1])]
    if len(bars) > 1:
        host._logger.info(f"{bar_type}: published {len(bars)} bars (backfill)", LogColor.BLUE)


def _report_missing(
    host: PollHost, poller: BarPoller, frame: pl.DataFrame, report: Any, end_ms: int
) -> pl.DataFrame:
    """Log the open times up to ``end_ms`` the source lacks; fill them if configured to."""
    interval = poller.interval
    missing = missing_open_times_ms(frame, interval, poller.next_open_ms, end_ms).tolist()
    if not missing:
        return frame
    synthetic = host._config.synthetic_fallback
    expected = interval.count(poller.next_open_ms, end_ms)
    completeness = (expected - len(missing)) / expected
    below = completeness < host._source.min_completeness
    host._logger.error(
        f"{poller.bar_type}: the source has no bars for {len(missing)} of {expected} open times "
        f"({completeness:.2%}{' < min_completeness' if below else ''}): "
        f"{format_runs(missing_runs(missing, interval))}"
        + ("; filling with SYNTHETIC bars" if synthetic else "")
    )
    if not synthetic:
        return frame
    frame, added = fill_synthetic(
        frame,
        poller.bar_type,
        interval,
        poller.next_open_ms,
        end_ms,
        previous_close=poller.last_close,
        first_open_ms=None,
        report=report,
        log=host._logger,
    )
    poller.synthetic += added
    return frame
