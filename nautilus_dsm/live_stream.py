"""Live bars from Binance's kline streams, with REST reconciliation behind them.

The websocket source of ``DSMDataClient`` (``live_source="websocket"``, the default). One
:class:`StreamFeed` per client owns one :class:`~nautilus_dsm.dsm.streams.KlineStreams` (shared
connections, at most 200 streams each, ``SUBSCRIBE`` / ``UNSUBSCRIBE`` under Binance's message
limits, pings, rotation before 24 h, jittered reconnects). Each subscription is one
:class:`~nautilus_dsm.live_cursor.BarPoller`: its cursor (the next bar due) is shared by both
sources.

- A closed kline (``x == true``) at the cursor is published at once (``ts_init`` = the node
  clock when it arrived); one beyond the cursor is held until the bars before it are
  published; one before it (a bar REST already published, a repeat) is dropped.
- The subscription's REST loop (:func:`nautilus_dsm.polling.poll_bars`, with the grace as its
  delay) fetches through the DSM engine whatever the stream has not delivered by the bar's
  close (exchange time) plus ``reconcile_grace_ms``, and at once when the stream jumped past
  the cursor (a dropped message) or a connection came back (the outage's range), so every bar
  is published once, in order, equal to the exchange's final kline.

Forming klines never reach this module (the stream layer delivers closed ones only).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

from nautilus_trader.model.data import Bar
from nautilus_trader.model.objects import Price, Quantity

from nautilus_dsm.common import Interval, MarketType
from nautilus_dsm.constants import NS_PER_MS
from nautilus_dsm.dsm.stream_wire import klines_to_frame, stream_name
from nautilus_dsm.dsm.streams import ClosedKline, KlineStreams, StreamResume, StreamStats
from nautilus_dsm.polling import PollHost, _publish

if TYPE_CHECKING:
    from nautilus_trader.model.data import BarType
    from nautilus_trader.model.instruments import Instrument

    from nautilus_dsm.dsm.settings import SourceSettings
    from nautilus_dsm.live_cursor import BarPoller

__all__ = ["DEFAULT_GRACE_MS", "StreamFeed", "grace_ms_for", "kline_bar"]

# How long after a close REST waits for the stream: Binance pushes futures klines every 250 ms,
# spot every 2 s (1 s for 1s klines), and the closed message can lag the close.
DEFAULT_GRACE_MS: dict[MarketType, int] = {
    MarketType.SPOT: 3_000,
    MarketType.FUTURES_USDT: 1_500,
    MarketType.FUTURES_COIN: 1_500,
}


def grace_ms_for(market: MarketType, configured: int | None) -> int:
    """Return the reconciliation grace of ``market``: the configured one, else its default."""
    return DEFAULT_GRACE_MS[market] if configured is None else configured


def _exact(text: str, precision: int) -> str:
    """``text`` with exactly ``precision`` decimals; ValueError unless that is exact."""
    value = Decimal(text)
    fixed = value.quantize(Decimal(1).scaleb(-precision))
    if fixed != value or not value.is_finite() or value < 0:
        raise ValueError(f"{text!r} is not a non-negative value at {precision} decimals")
    return format(fixed, "f")


def kline_bar(
    bar_type: BarType, interval: Interval, instrument: Instrument, kline: ClosedKline, ts_init: int
) -> Bar | None:
    """Return the bar of one streamed closed kline, or None when it needs the full conversion.

    The fast path (~50x the frame conversion for one kline) for the common case: values on the
    instrument's precision, open time on the interval grid, OHLC consistent. Anything else
    returns None and goes through :func:`nautilus_dsm.bars.convert_frame`, which rounds to the
    tick or reports why the kline cannot be a bar, exactly as for REST.
    """
    if interval.floor_ms(kline.open_ms) != kline.open_ms:
        return None
    pp, sp = instrument.price_precision, instrument.size_precision
    try:
        return Bar(
            bar_type,
            Price.from_str(_exact(kline.open, pp)),
            Price.from_str(_exact(kline.high, pp)),
            Price.from_str(_exact(kline.low, pp)),
            Price.from_str(_exact(kline.close, pp)),
            Quantity.from_str(_exact(kline.volume, sp)),
            interval.next_open_ms(kline.open_ms) * NS_PER_MS,
            ts_init,
        )
    except (ValueError, ArithmeticError, InvalidOperation):
        return None


class StreamFeed:
    """The kline streams of one client, feeding the cursors of its live subscriptions.

    Parameters
    ----------
    host : PollHost
        The data client (its clock, logger and ``_handle_data``).
    settings : SourceSettings
        Gives ``base_url_ws`` (None: Binance's endpoints).
    grace_ms : int, optional
        The reconciliation grace; None: :data:`DEFAULT_GRACE_MS` per market.
    streams_factory : callable, optional
        Builds the :class:`KlineStreams` from its keyword arguments (tests and benchmarks).

    """

    def __init__(
        self,
        host: PollHost,
        settings: SourceSettings,
        grace_ms: int | None = None,
        streams_factory: Callable[..., KlineStreams] = KlineStreams,
    ) -> None:
        self._host = host
        self._grace_ms = grace_ms
        self._streams = streams_factory(
            self._on_kline,
            on_reconnect=self._on_reconnect,
            base_url_ws=settings.ws_urls,
            backoff_initial_s=0.25,
            backoff_max_s=5.0,  # a 1s bar stream misses at most a few bars to REST
        )
        self._subs: dict[tuple[MarketType, str], BarPoller] = {}

    @property
    def stats(self) -> StreamStats:
        """The stream counters (connects, reconnects, messages, delivered, duplicates...)."""
        return self._streams.stats

    @property
    def streams(self) -> KlineStreams:
        """The underlying :class:`KlineStreams`."""
        return self._streams

    async def attach(self, poller: BarPoller) -> None:
        """Stream ``poller``'s klines into its cursor; REST becomes its reconciler.

        Does not wait for the server's acknowledgement (REST covers the bars meanwhile) and
        does not yield before the stream is registered.
        """
        market = poller.resolved.market_type
        poller.delay_ms = grace_ms_for(market, self._grace_ms)
        poller.wake = asyncio.Event()
        poller.drain = lambda: self._drain(poller)
        key = (market, stream_name(poller.resolved.symbol, poller.interval))
        self._subs[key] = poller
        await self._streams.subscribe(market, poller.resolved.symbol, poller.interval, wait=False)

    async def detach(self, poller: BarPoller) -> None:
        """Stop streaming ``poller``'s klines (nothing of it is published afterwards)."""
        market = poller.resolved.market_type
        key = (market, stream_name(poller.resolved.symbol, poller.interval))
        if self._subs.get(key) is poller:
            del self._subs[key]
        poller.drain = None
        if not self._streams.closed:
            await self._streams.unsubscribe(market, poller.resolved.symbol, poller.interval)

    async def close(self) -> None:
        """Close every connection."""
        self._subs.clear()
        await self._streams.close()

    # What the streams deliver ----------------------------------------------------------------

    def _on_kline(self, kline: ClosedKline) -> None:
        poller = self._subs.get((kline.market, kline.stream))
        if poller is None:
            return
        poller.take(kline.open_ms, (kline, self._host._now_ns()))
        self._drain(poller)

    def _on_reconnect(self, market: MarketType, resumes: list[StreamResume]) -> None:
        # What closed during the outage is missing: REST fetches it now, in order.
        for resume in resumes:
            poller = self._subs.get((market, resume.stream))
            if poller is not None and poller.wake is not None:
                poller.gap_open = True
                poller.wake.set()

    def _drain(self, poller: BarPoller) -> None:
        """Publish the held klines that continue the cursor; wake REST for what is missing."""
        if poller.instrument is None or poller.anchor_local_ms is not None:
            return  # still starting: poll_bars drains once the cursor is anchored
        for kline, received_ns in poller.ready():
            self._publish(poller, kline, received_ns)
        if poller.wake is not None:
            poller.wake.set()

    def _publish(self, poller: BarPoller, kline: ClosedKline, received_ns: int) -> None:
        end_ms = poller.interval.next_open_ms(kline.open_ms)
        assert poller.instrument is not None  # drained only once resolved
        bar = kline_bar(poller.bar_type, poller.interval, poller.instrument, kline, received_ns)
        if bar is not None:
            self._publish_bar(poller, bar, Decimal(kline.close))
            return
        try:
            _publish(self._host, poller, klines_to_frame([kline]), None, end_ms, received_ns)
        except Exception as e:  # a kline that cannot be a bar: skipped, never retried
            self._host._logger.error(
                f"{poller.bar_type}: the streamed kline opening at {kline.open_ms} could not be "
                f"published and is skipped ({type(e).__name__}: {e})"
            )
            poller.next_open_ms = max(poller.next_open_ms, end_ms)

    def _publish_bar(self, poller: BarPoller, bar: Bar, close: Decimal) -> None:
        host = self._host
        local_ns = host._now_ns()
        local_ms = local_ns // NS_PER_MS
        # Close -> publish latency on the exchange's clock (bars are stamped by it).
        shift_ms = host._now_ms(poller.resolved.market_type, local_ms) - local_ms
        host._handle_data(bar)
        poller.next_open_ms = bar.ts_event // NS_PER_MS
        poller.published += 1
        poller.streamed += 1
        poller.last_close = close
        poller.latencies_ms.append((local_ns + shift_ms * NS_PER_MS - bar.ts_event) / NS_PER_MS)
