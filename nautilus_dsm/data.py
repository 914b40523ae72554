"""``DSMDataClient``: Binance klines for a live Nautilus node, served through the DSM engine.

Historical requests go through the data-source manager (cache -> Binance Vision -> REST) and are
answered exactly once, with an empty list and a logged error on any failure (planning and
answering: :mod:`nautilus_dsm.requests`). Live bar subscriptions come from Binance's kline
streams (``live_source="websocket"``, the default: closed klines only, REST reconciliation behind
them, :mod:`nautilus_dsm.live_stream`) or from REST polling once per bar close
(``live_source="rest"``, :mod:`nautilus_dsm.polling`); either way each closed kline is published
exactly once, in order, backfilling what an outage missed before any newer bar (one cursor per
series, :mod:`nautilus_dsm.live_cursor`). ``health()`` returns the live figures and the client
logs them every ``health_interval_s`` (:mod:`nautilus_dsm.health`). Source outages (and an
instrument lookup failing at subscribe time) are retried with backoff; a kline that cannot be a
bar (e.g. stamped off the interval grid) is logged as an error and skipped, never retried.

Clients built by the factory share one data-source manager per configuration; it is closed
when the last client holding it disconnects (:mod:`nautilus_dsm.dsm.holders`). In synchronous
mode (the BacktestNode download engine runs each coroutine under its own ``asyncio.run``) the
manager's connections are closed at the end of every coroutine, since they belong to that
coroutine's event loop.

Bars are stamped at their close (``ts_event = open + interval``); history keeps ``ts_init =
ts_event``, live bars carry ``ts_init`` = the node clock when the bar was received. They use the
instrument's price and size precision, and are plain ``Bar`` objects.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Coroutine
from enum import Enum
from typing import TYPE_CHECKING, Any

from nautilus_trader.common.component import LiveClock
from nautilus_trader.common.enums import LogColor
from nautilus_trader.data.messages import (
    RequestBars,
    RequestInstrument,
    RequestInstruments,
    SubscribeBars,
    SubscribeInstrument,
    SubscribeInstruments,
    UnsubscribeBars,
    UnsubscribeInstrument,
    UnsubscribeInstruments,
)
from nautilus_trader.live.data_client import LiveMarketDataClient
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.model.identifiers import ClientId, InstrumentId, Venue
from nautilus_trader.model.instruments import Instrument

from nautilus_dsm.bars import warm_up
from nautilus_dsm.common import VENUE, MarketType, iso_ms, resolve_instrument
from nautilus_dsm.config import DSMDataClientConfig
from nautilus_dsm.constants import NS_PER_MS
from nautilus_dsm.dsm.holders import acquire_dsm, release_dsm
from nautilus_dsm.errors import DSMError, InvalidInput, SourceError, UnknownSymbol
from nautilus_dsm.funding_requests import FundingRequestsMixin
from nautilus_dsm.health import FetchTally, HealthMixin, process_rss_bytes
from nautilus_dsm.live_stream import StreamFeed
from nautilus_dsm.logs import install_log_bridge
from nautilus_dsm.perp_live import PerpLiveMixin
from nautilus_dsm.polling import BarPoller, not_trading, poll_bars, retry_delay_s
from nautilus_dsm.refusals import RefusalsMixin
from nautilus_dsm.requests import (
    bars_to_serve,
    check_bar_type,
    fetch_for_plan,
    plan_bar_request,
    request_now_ns,
    timestamp_ns,
)

if TYPE_CHECKING:
    from nautilus_trader.cache.cache import Cache
    from nautilus_trader.common.component import MessageBus
    from nautilus_trader.common.providers import InstrumentProvider

    from nautilus_dsm.dsm.manager import DataSourceManager
    from nautilus_dsm.dsm.settings import SourceSettings

BINANCE_VENUE = Venue(VENUE)
DEFAULT_CLIENT_ID = "DSM"


class DSMDataClient(
    FundingRequestsMixin, PerpLiveMixin, HealthMixin, RefusalsMixin, LiveMarketDataClient
):
    """
    A NautilusTrader live market data client for Binance klines, backed by the DSM engine.

    Parameters
    ----------
    loop : asyncio.AbstractEventLoop
        The event loop for the client.
    dsm : DataSourceManager
        The data-source manager (cache -> Vision -> REST) that serves every bar.
    msgbus : MessageBus
        The message bus for the client.
    cache : Cache
        The cache for the client.
    clock : LiveClock
        The clock for the client.
    instrument_provider : InstrumentProvider
        The instrument provider (``DSMInstrumentProvider``).
    config : DSMDataClientConfig
        The client configuration.
    name : str, optional
        The client id (``"DSM"`` when None).

    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        dsm: DataSourceManager,
        msgbus: MessageBus,
        cache: Cache,
        clock: LiveClock,
        instrument_provider: InstrumentProvider,
        config: DSMDataClientConfig,
        name: str | None = None,
    ) -> None:
        super().__init__(
            loop=loop,
            client_id=ClientId(name or DEFAULT_CLIENT_ID),
            venue=None,  # routed by client_id, or as the default client (docs/ROUTING.md)
            msgbus=msgbus,
            cache=cache,
            clock=clock,
            instrument_provider=instrument_provider,
            config=config,
        )
        install_log_bridge()  # the engine's records (fallbacks, holds, quarantines) in this log
        self._dsm = dsm
        self._holds_dsm = False
        self._config = config
        # Every message of this client goes through this seam (tests swap in a recorder).
        self._logger: Any = self._log
        # The engine settings, validated once by their own rules (dsm.settings): when the config
        # carries a ``source``, its keywords are defaults and must not be read.
        self._source: SourceSettings = config.source_config()
        self._market_type: MarketType | None = self._source.market_type
        # Configuration errors surface at construction, not at the first request.
        if config.poll_delay_ms < 0:
            raise InvalidInput(f"poll_delay_ms={config.poll_delay_ms} is negative; pass e.g. 250")
        if not 0 < config.timeout_connection < math.inf:  # also refuses NaN
            raise InvalidInput(
                f"timeout_connection={config.timeout_connection!r} is not a positive number of "
                "seconds; pass the node's TradingNodeConfig.timeout_connection, e.g. 60.0"
            )
        # Only a client that was built holds the manager (released on disconnect; the last
        # holder closes it): a refused configuration must not keep a shared manager open.
        acquire_dsm(dsm)
        self._holds_dsm = True
        self._pollers: dict[BarType, BarPoller] = {}
        self._feed: StreamFeed | None = None  # the kline streams, opened at the first one
        self._tally = FetchTally()
        self._rss_start = process_rss_bytes()
        self._health_task: asyncio.Task | None = None
        self._logger.info(
            f"config: {_describe(self._source)}, live_source={config.live_source}, "
            f"reconcile_grace_ms={config.reconcile_grace_ms}, "
            f"poll_delay_ms={config.poll_delay_ms}, synthetic_fallback={config.synthetic_fallback}",
            LogColor.BLUE,
        )
        if config.synthetic_fallback:
            self._logger.warning(
                "synthetic_fallback=True: gaps no source has are filled with flat SYNTHETIC bars "
                "(each one logged and counted)"
            )

    @property
    def dsm(self) -> DataSourceManager:
        """The data-source manager serving this client."""
        return self._dsm

    def poller_stats(self, bar_type: BarType) -> dict[str, Any] | None:
        """Published/synthetic counts and close->publish latencies (ms) of a live subscription."""
        poller = self._pollers.get(bar_type)
        if poller is None:
            return None
        return {
            "published": poller.published,
            "synthetic": poller.synthetic,
            "next_open_ms": poller.next_open_ms,
            "latencies_ms": list(poller.latencies_ms),
            "streamed": poller.streamed,
            "reconciled": poller.reconciled,
            "gaps_backfilled": poller.gaps_backfilled,
            "duplicates": poller.duplicates,
        }

    def _now_ns(self) -> int:
        # "Now" decides which Binance bars are closed, so it must be real time. A live node's
        # clock is; the BacktestNode download engine hands its clients a TestClock (at 0).
        if isinstance(self._clock, LiveClock):
            return self._clock.timestamp_ns()
        return time.time_ns()

    def _now_ms(self, market_type: MarketType | None = None, local_ms: int | None = None) -> int:
        """Exchange time on ``market_type`` (the local clock when None): what is closed.

        The measured offset of the manager's exchange clock is applied without I/O; the poll
        loop measures it (``exchange_now_ms``) when due.
        """
        local = self._now_ns() // NS_PER_MS if local_ms is None else local_ms
        if market_type is None:
            return local
        return self._dsm.exchange_clock(market_type).now_ms(local)

    def create_task(
        self,
        coro: Coroutine,
        log_msg: str | None = None,
        actions: Any = None,
        success_msg: str | None = None,
        success_color: LogColor = LogColor.NORMAL,
    ) -> asyncio.Task | None:
        """Run ``coro`` as the base client does; in synchronous mode close connections after."""
        if self._is_sync:
            log_msg = log_msg or coro.__name__
            coro = self._closing_loop_connections(coro)
        return super().create_task(coro, log_msg, actions, success_msg, success_color)

    async def _closing_loop_connections(self, coro: Coroutine) -> Any:
        # Synchronous mode runs this under its own asyncio.run: the HTTP clients created here
        # belong to this loop, so close them before it ends (no sockets left behind).
        try:
            return await coro
        finally:
            await self._dsm.aclose()

    # -- CONNECTION -------------------------------------------------------------------------------

    async def _connect(self) -> None:
        if not self._holds_dsm:  # reconnecting after a disconnect released the manager
            acquire_dsm(self._dsm)
            self._holds_dsm = True
        await self._load_instruments_retrying()
        self._send_all_instruments_to_data_engine()
        # Probe the bar fast path now (a small parquet round trip), not inside the first answer.
        warm_up()
        every_s = self._config.health_interval_s
        if every_s > 0 and not self._is_sync and self._health_task is None:
            self._health_task = asyncio.get_running_loop().create_task(
                self._log_health(every_s), name="dsm-health"
            )

    async def _load_instruments_retrying(self) -> None:
        """Initialise the instrument provider, retrying a source failure until the deadline.

        A node started during an outage must start its trader once Binance is back: the node
        waits ``TradingNodeConfig.timeout_connection`` for this client, so failures (outage,
        5xx, timeouts, a rate limit beyond its wait) are retried with bounded backoff (0.1 s
        doubling to 5 s, logged) for ``config.timeout_connection`` seconds. Configuration
        errors (``InvalidInput``) are not retried. Past the deadline the last error is raised:
        the client stays disconnected and says why.
        """
        timeout_s = self._config.timeout_connection
        deadline = time.monotonic() + timeout_s
        failures = 0
        while True:
            try:
                await self._instrument_provider.initialize()
            except SourceError as e:
                failures += 1
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._logger.error(
                        f"connect: instruments could not be loaded within timeout_connection="
                        f"{timeout_s:g}s ({failures} attempts; last: {type(e).__name__}: {e}); "
                        "check the network and base_url_http, or raise timeout_connection (and "
                        "the node's) for longer outages"
                    )
                    raise
                delay = min(retry_delay_s(failures), remaining)
                self._logger.warning(
                    f"connect: instruments could not be loaded ({type(e).__name__}: {e}); "
                    f"attempt {failures}, retrying in {delay:.2f}s "
                    f"(until timeout_connection={timeout_s:g}s)"
                )
                await asyncio.sleep(delay)
                if not self._holds_dsm:  # disconnected meanwhile: its manager may be closed
                    raise
                continue
            if failures:
                self._logger.info(
                    f"connect: instruments loaded after {failures} failed attempts",
                    LogColor.GREEN,
                )
            return

    async def _disconnect(self) -> None:
        if self._feed is not None:
            # Closing the connections ends every stream at once (one UNSUBSCRIBE per stream
            # would take 25 s for 100 streams at Binance's message rate).
            feed, self._feed = self._feed, None
            await feed.close()
        for bar_type in list(self._pollers):
            await self._stop_poller(bar_type)
        await self._stop_perp_polls()
        if self._health_task is not None:
            self._health_task.cancel()
            await asyncio.wait([self._health_task])
            self._health_task = None
        if self._holds_dsm:
            self._holds_dsm = False
            # A manager shared with other clients stays open until its last holder leaves.
            if release_dsm(self._dsm):
                await self._dsm.aclose()

    def _send_all_instruments_to_data_engine(self) -> None:
        for instrument in self._instrument_provider.get_all().values():
            self._cache.add_instrument(instrument)
            self._handle_data(instrument)
        for currency in self._instrument_provider.currencies().values():
            self._cache.add_currency(currency)

    # -- INSTRUMENTS ------------------------------------------------------------------------------

    async def _instrument(
        self, instrument_id: InstrumentId, *, history: bool = False
    ) -> Instrument:
        """Return the instrument from the cache, the provider, or loaded on demand.

        Raises :class:`UnknownSymbol` when Binance does not list it.

        ``history`` also accepts symbols Binance still lists but no longer trades (halted,
        settling): their past bars exist, their live stream does not.
        """
        resolved = resolve_instrument(instrument_id.value, self._market_type)
        instrument = self._cache.instrument(instrument_id)
        if instrument is None:
            instrument = self._instrument_provider.find(instrument_id)
        if instrument is None:
            instrument_for = getattr(self._instrument_provider, "instrument_for", None)
            if instrument_for is not None:  # DSMInstrumentProvider: raises UnknownSymbol
                instrument = await instrument_for(instrument_id, include_non_trading=history)
            else:
                await self._instrument_provider.load_async(instrument_id)
                instrument = self._instrument_provider.find(instrument_id)
        if instrument is None:
            raise UnknownSymbol(
                f"{instrument_id} ({resolved.symbol}) is not listed on Binance "
                f"{resolved.market_type.name}; check the symbol in exchangeInfo"
            )
        if self._cache.instrument(instrument_id) is None:
            self._cache.add_instrument(instrument)
        return instrument

    async def _subscribe_instruments(self, command: SubscribeInstruments) -> None:
        if not self._instrument_provider.get_all():
            await self._instrument_provider.load_all_async()
        self._send_all_instruments_to_data_engine()

    async def _subscribe_instrument(self, command: SubscribeInstrument) -> None:
        try:
            instrument = await self._instrument(command.instrument_id)
        except DSMError as e:
            self._logger.error(f"Cannot subscribe to instrument {command.instrument_id}: {e}")
            return
        self._handle_data(instrument)

    async def _unsubscribe_instruments(self, command: UnsubscribeInstruments) -> None:
        pass  # instruments are static; nothing to stop

    async def _unsubscribe_instrument(self, command: UnsubscribeInstrument) -> None:
        pass  # instruments are static; nothing to stop

    async def _request_instrument(self, request: RequestInstrument) -> None:
        instrument: Instrument | None = None
        try:
            instrument = await self._instrument(request.instrument_id)
        except DSMError as e:
            self._logger.error(f"Cannot serve instrument request for {request.instrument_id}: {e}")
        except Exception as e:
            self._logger.exception(f"Instrument request for {request.instrument_id} failed", e)
        finally:
            if instrument is not None:
                self._handle_instrument(
                    instrument, request.id, request.start, request.end, request.params
                )
            else:  # answer empty so the requester is not left waiting
                self._handle_instruments(
                    BINANCE_VENUE, [], request.id, request.start, request.end, request.params
                )

    async def _request_instruments(self, request: RequestInstruments) -> None:
        instruments: list[Instrument] = []
        try:
            if not self._instrument_provider.get_all():
                await self._instrument_provider.load_all_async()
            instruments = list(self._instrument_provider.list_all())
            for instrument in instruments:
                self._cache.add_instrument(instrument)
        except Exception as e:
            self._logger.exception("Instruments request failed", e)
            instruments = []
        finally:
            self._handle_instruments(
                BINANCE_VENUE, instruments, request.id, request.start, request.end, request.params
            )

    # -- HISTORICAL BARS --------------------------------------------------------------------------

    async def _request_bars(self, request: RequestBars) -> None:
        bars: list[Bar] = []
        try:
            bars = await self._bars_for_request(request)
        except asyncio.CancelledError:
            self._logger.warning(f"Request for {request.bar_type} bars cancelled; answering empty")
            bars = []
            raise
        except DSMError as e:  # invalid input, unknown symbol, source down, low quality
            self._logger.error(f"Cannot serve {request.bar_type} bars: {e}")
            bars = []
        except Exception as e:
            self._logger.exception(f"Request for {request.bar_type} bars failed", e)
            bars = []
        finally:
            self._handle_bars(
                request.bar_type, bars, request.id, request.start, request.end, request.params
            )

    async def _bars_for_request(self, request: RequestBars) -> list[Bar]:
        bar_type = request.bar_type
        # Validate before any I/O.
        interval, resolved = check_bar_type(bar_type, self._market_type)
        start_ns, end_ns = timestamp_ns(request.start), timestamp_ns(request.end)
        now_ns = await request_now_ns(self._dsm, resolved.market_type, end_ns, self._now_ns())
        plan = plan_bar_request(interval, start_ns, end_ns, request.limit, now_ns)
        for note in plan.notes:
            self._logger.info(f"{bar_type}: {note}", LogColor.BLUE)
        if plan.is_empty:
            self._logger.warning(
                f"{bar_type}: no closed bar lies in the requested range "
                f"(start={request.start}, end={request.end}); answering empty"
            )
            return []

        instrument = await self._instrument(bar_type.instrument_id, history=True)
        synthetic = self._config.synthetic_fallback
        fetch_start_ms, result = await fetch_for_plan(
            self._dsm,
            bar_type,
            resolved,
            interval,
            plan,
            source=self._source,
            synthetic_fallback=synthetic,
            log=self._logger,
        )
        return bars_to_serve(
            result,
            plan,
            fetch_start_ms,
            bar_type,
            interval,
            instrument,
            synthetic_fallback=synthetic,
            log=self._logger,
        )

    # -- LIVE BARS --------------------------------------------------------------------------------

    async def _subscribe_bars(self, command: SubscribeBars) -> None:
        bar_type = command.bar_type
        if self._is_sync:
            self._logger.error(
                f"Cannot subscribe to {bar_type}: live subscriptions need a running event loop "
                "(a TradingNode); a BacktestNode download engine only serves requests"
            )
            self._remove_subscription_bars(bar_type)
            return
        if bar_type not in self.subscribed_bars():
            return  # unsubscribed before this command ran: nothing to start
        if bar_type in self._pollers:
            self._logger.warning(f"Already polling {bar_type}; not starting a second poller")
            return
        try:
            interval, resolved = check_bar_type(bar_type, self._market_type)
        except DSMError as e:
            self._logger.error(f"Cannot subscribe to {bar_type}: {e}")
            self._remove_subscription_bars(bar_type)
            return
        # No await from here on: the poller is registered in the same step as the check above,
        # so an unsubscribe always finds it. The instrument is resolved by the poll loop, which
        # retries through a source outage instead of leaving a subscription that never delivers.
        instrument = self._cache.instrument(bar_type.instrument_id)
        if instrument is not None and (refusal := not_trading(instrument)) is not None:
            # Loaded for a history request: its past bars exist, its live stream does not.
            self._logger.error(f"Cannot subscribe to {bar_type}: {refusal}")
            self._remove_subscription_bars(bar_type)
            return
        local_ms = self._now_ms()
        now_ms = self._now_ms(resolved.market_type, local_ms)
        poller = BarPoller(
            bar_type=bar_type,
            interval=interval,
            resolved=resolved,
            instrument=instrument,
            next_open_ms=interval.floor_ms(now_ms),  # the forming bar is the first published
            anchor_local_ms=local_ms,
        )
        self._pollers[bar_type] = poller
        poller.task = asyncio.get_running_loop().create_task(
            poll_bars(self, poller), name=f"dsm-poll-{bar_type}"
        )
        if self._config.live_source == "websocket":
            if self._feed is None:
                self._feed = StreamFeed(self, self._source, self._config.reconcile_grace_ms)
            await self._feed.attach(poller)  # registers the stream before any yield
            self._logger.info(
                f"Streaming {bar_type} from the bar opening {iso_ms(poller.next_open_ms)} "
                f"(REST reconciles what has not arrived {poller.delay_ms} ms after a close)",
                LogColor.BLUE,
            )
            return
        self._logger.info(
            f"Polling {bar_type} from the bar opening {iso_ms(poller.next_open_ms)} "
            f"(poll_delay_ms={self._config.poll_delay_ms})",
            LogColor.BLUE,
        )

    async def _unsubscribe_bars(self, command: UnsubscribeBars) -> None:
        await self._stop_poller(command.bar_type)

    async def _stop_poller(self, bar_type: BarType) -> None:
        poller = self._pollers.pop(bar_type, None)
        if poller is None or poller.task is None:
            return
        if self._feed is not None:
            await self._feed.detach(poller)  # nothing streamed is published after this
        poller.task.cancel()
        await asyncio.wait([poller.task])
        self._logger.info(
            f"Stopped {'streaming' if poller.wake is not None else 'polling'} {bar_type} after "
            f"{poller.published} bars "
            f"({poller.synthetic} synthetic, {poller.skipped} bad klines skipped)"
        )

    def _end_subscription(self, poller: BarPoller) -> None:
        """Drop a subscription whose poller cannot go on (called from the poller itself)."""
        if self._pollers.get(poller.bar_type) is poller:
            del self._pollers[poller.bar_type]
        if self._feed is not None:
            self.create_task(self._feed.detach(poller), log_msg=f"stop streaming {poller.bar_type}")
        self._remove_subscription_bars(poller.bar_type)


def _describe(settings: SourceSettings) -> str:
    """``name=value`` of every engine setting as resolved (the market type by its value)."""
    values = ((name, getattr(settings, name)) for name in settings.__struct_fields__)
    return ", ".join(
        f"{name}={value.value if isinstance(value, Enum) else value}" for name, value in values
    )
