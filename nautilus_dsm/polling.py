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
import contextlib
import time
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import polars as pl
from nautilus_trader.common.enums import LogColor
from nautilus_trader.model.data import Bar

from nautilus_dsm.bars import convert_frame
from nautilus_dsm.common import MarketType, from_ms, iso, iso_ms
from nautilus_dsm.constants import NS_PER_MS
from nautilus_dsm.dsm.synthetic import missing_open_times_ms
from nautilus_dsm.errors import DSMError, InvalidInput, InvalidResponse, UnknownSymbol
from nautilus_dsm.gaps import describe_invalid, fill_synthetic, format_runs, missing_runs
from nautilus_dsm.live_cursor import (
    BarPoller,
    frame_end_ms,
    not_closed_wait_s,
    not_trading,
    retry_delay_s,
)

if TYPE_CHECKING:
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

# A bad kline (a payload that fails validation, or one nothing can parse) gets this many tries,
# then it is reported and skipped: it would fail the same way forever. Outages are retried as
# long as they last.
BAD_KLINE_TRIES = 3


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

    def _record_fetch(self, report: Any, seconds: float) -> None: ...


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
    poller.expected_from_ms = poller.next_open_ms
    if poller.drain is not None:  # streamed bars that arrived while starting
        poller.drain()
    while await _poll_once(host, poller):
        pass


async def _wait_until_due(host: PollHost, poller: BarPoller) -> None:
    """Wait until REST is due for the bar at the cursor (exchange time): close + delay.

    Behind a stream (``poller.wake`` set) the due time is re-read whenever the stream moves the
    cursor, and is "now" once the stream jumped past the cursor (:meth:`BarPoller.due_now`).
    """
    market = poller.resolved.market_type
    delay_ms = host._config.poll_delay_ms if poller.delay_ms is None else poller.delay_ms
    while True:
        if poller.wake is not None:
            poller.wake.clear()
        if poller.due_now():
            return
        due_ms = poller.due_ms(delay_ms)
        now_ms = await host.dsm.exchange_now_ms(market)  # measures only when due
        if due_ms <= now_ms:
            return
        wait_s = (due_ms - now_ms) / 1000
        if poller.wake is None:
            await asyncio.sleep(wait_s)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(poller.wake.wait(), wait_s)


async def _poll_once(host: PollHost, poller: BarPoller) -> bool:
    """Wait until the next bar is due, fetch up to now, publish; False when the stream ends."""
    market = poller.resolved.market_type
    await _wait_until_due(host, poller)
    end_ms, cut = poller.window_end_ms(host._now_ms(market))
    if end_ms <= poller.next_open_ms:  # the next bar is a known bad kline
        _skip_bad_kline(host, poller, poller.skip_ms[poller.next_open_ms])
        return True
    started = time.monotonic()
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
    host._record_fetch(result.report, time.monotonic() - started)
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
        if poller.drain is not None:  # the stream's bars that continue the cursor now
            poller.drain()
    if poller.failures:
        host._logger.info(
            f"{poller.bar_type}: source back after {poller.failures} failed attempts; "
            f"backfilled up to {iso_ms(poller.next_open_ms)}",
            LogColor.GREEN,
        )
        poller.failures = 0
    if not frame.is_empty() or end_ms <= poller.next_open_ms:
        # Published, or overtaken: the stream published the window's bars while this fetch
        # was awaited (the cursor is past it), so there is nothing to wait for or skip.
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
        poller.next_open_ms = max(poller.next_open_ms, end_ms)  # never back
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
    host: PollHost,
    poller: BarPoller,
    frame: pl.DataFrame,
    report: Any,
    end_ms: int,
    received_ns: int | None = None,
) -> None:
    """Publish a frame's bars from the cursor on; ``received_ns`` set: one streamed kline.

    Live bars carry ``ts_init`` = the node clock when they were received (the stream message,
    or the REST answer); ``ts_event`` is the close.
    """
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
    ts_init = local_ns if received_ns is None else received_ns
    behind_stream = poller.wake is not None and received_ns is None
    for converted in bars:
        bar = Bar(
            converted.bar_type,
            converted.open,
            converted.high,
            converted.low,
            converted.close,
            converted.volume,
            converted.ts_event,
            ts_init,
        )
        host._handle_data(bar)
        # Advance per bar: whatever happens next, a published bar is never published again.
        poller.next_open_ms = bar.ts_event // NS_PER_MS  # the close is the next bar's open
        poller.published += 1
        poller.latencies_ms.append((now_ns - bar.ts_event) / NS_PER_MS)
    if received_ns is not None:
        poller.streamed += len(bars)
    elif behind_stream:
        poller.reconciled += len(bars)
        if poller.gap_open and bars:
            poller.gaps_backfilled += 1
            poller.gap_open = False
    poller.next_open_ms = max(poller.next_open_ms, end_ms)
    if valid.any():
        poller.last_close = frame["close"][int(np.flatnonzero(valid)[-1])]
    if len(bars) > 1:
        host._logger.info(f"{bar_type}: published {len(bars)} bars (backfill)", LogColor.BLUE)
    elif behind_stream and bars:
        host._logger.debug(
            f"{bar_type}: the bar closing {iso_ms(bars[0].ts_event // NS_PER_MS)} was not "
            "streamed in time; published from REST"
        )


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
