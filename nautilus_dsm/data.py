"""``DSMDataClient``: Binance klines for a live Nautilus node, served through the DSM engine.

Historical requests go through the data-source manager (cache -> Binance Vision -> REST) and are
answered exactly once, with an empty list and a logged error on any failure. Live bar
subscriptions poll REST once per bar close and publish each closed kline exactly once, in order,
backfilling what an outage missed before any newer bar. Source outages (and an instrument
lookup failing at subscribe time) are retried with backoff; a kline that cannot be a bar (e.g.
stamped off the interval grid) is logged as an error and skipped, never retried forever.

Clients built by the factory share one data-source manager per configuration; it is closed
when the last client holding it disconnects. In synchronous mode (the BacktestNode download
engine runs each coroutine under its own ``asyncio.run``) the manager's connections are closed
at the end of every coroutine, since they belong to that coroutine's event loop.

Bars are stamped at their close (``ts_event = ts_init = open + interval``), use the instrument's
price and size precision, and are plain ``Bar`` objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
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
from nautilus_trader.model.enums import AggregationSource
from nautilus_trader.model.identifiers import ClientId, InstrumentId, Venue
from nautilus_trader.model.instruments import Instrument

from nautilus_dsm.bars import convert_frame, interval_for
from nautilus_dsm.common import (
    VENUE,
    Interval,
    MarketType,
    ResolvedInstrument,
    from_ms,
    resolve_instrument,
    to_ms,
)
from nautilus_dsm.config import DSMDataClientConfig
from nautilus_dsm.dsm.synthetic import SYNTHETIC, fill_gaps, missing_open_times_ms
from nautilus_dsm.errors import (
    DSMError,
    InvalidInput,
    InvalidResponse,
    QualityBelowThreshold,
    SourceError,
    UnknownSymbol,
)
from nautilus_dsm.factories import acquire_dsm, release_dsm
from nautilus_dsm.parsing import TRADING

if TYPE_CHECKING:
    from datetime import datetime

    from nautilus_trader.cache.cache import Cache
    from nautilus_trader.common.component import MessageBus
    from nautilus_trader.common.providers import InstrumentProvider

    from nautilus_dsm.dsm.manager import DataSourceManager

BINANCE_VENUE = Venue(VENUE)
DEFAULT_CLIENT_ID = "DSM"
# A request with neither start nor limit gets Binance's own default page: the last 500 bars.
DEFAULT_REQUEST_LIMIT = 500
# Live polling retry schedule (seconds): short enough for 1s bars, bounded for long outages.
_DAY_NS = 86_400_000_000_000
_RETRY_BASE_S = 0.1
_RETRY_MAX_S = 5.0
# How often to re-poll when a bar is due but Binance has not closed it yet.
_NOT_YET_CLOSED_S = 0.05
_NOT_YET_CLOSED_MAX_S = 2.0
# A bad kline (a payload that fails validation, or one nothing can parse) gets this many tries,
# then it is reported and skipped: it would fail the same way forever. Outages are retried as
# long as they last.
_BAD_KLINE_TRIES = 3


# ---------------------------------------------------------------------------------------------
# Pure planning
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BarRequestPlan:
    """What a bar request resolves to: the open times to fetch and how many bars to keep.

    ``[start_ms, end_ms)`` are bar open times. Bars are events at their close (``ts_init``), so
    a request ``[start, end]`` is answered with the bars whose close lies in ``(start, end]``:
    the data engine's ``ts_init`` filter never drops one of ours silently, and adjacent requests
    ``[a, b]``, ``[b, c]`` (or the engine's continuation from ``b + 1ns``) neither repeat nor
    lose the bar closing at ``b``. ``notes`` are the changes made to the request, for the log.
    ``full_start_ms`` is the request's own first open time when a ``limit`` narrowed the fetch
    to the last ``limit`` intervals: source gaps there leave fewer than ``limit`` bars, and the
    missing ones are then the earlier bars from ``full_start_ms`` on (None when not narrowed).
    """

    start_ms: int
    end_ms: int
    limit: int
    notes: tuple[str, ...] = ()
    full_start_ms: int | None = None

    @property
    def is_empty(self) -> bool:
        return self.start_ms >= self.end_ms


def steps_back_ms(interval: Interval, open_ms: int, n: int) -> int:
    """Open time ``n`` bars before the bar opening at ``open_ms`` (calendar months for 1M)."""
    if not interval.is_month:
        return open_ms - n * interval.fixed_ms
    t = open_ms
    for _ in range(n):
        t = interval.floor_ms(t - 1)
    return t


def plan_bar_request(
    interval: Interval,
    start_ns: int | None,
    end_ns: int | None,
    limit: int,
    now_ns: int,
) -> BarRequestPlan:
    """Resolve a request's ``start``/``end``/``limit`` to the closed bars that answer it.

    The bars served are those closing in ``(start, end]`` (see :class:`BarRequestPlan`).
    ``end`` is clamped to now (only closed bars exist); a ``limit`` keeps the last ``limit``
    bars before ``end``, so with a ``start`` too the fetch starts no earlier than ``limit`` bars
    before ``end`` (nothing before is fetched only to be dropped), and with no ``start`` the
    start is derived as ``limit`` bars before ``end``; with neither, the last
    ``DEFAULT_REQUEST_LIMIT`` bars are served. A narrowed start keeps the request's own start
    in ``full_start_ms``. Raises ``InvalidInput`` for a negative limit.
    """
    if limit < 0:
        raise InvalidInput(f"limit {limit} is negative; pass 0 (no limit) or a positive count")
    notes: list[str] = []
    full_start_ms: int | None = None
    if end_ns is None:
        end_ns = now_ns
    elif end_ns > now_ns:
        notes.append(
            f"clamped end from {from_ms(end_ns // 1_000_000).isoformat()} to now "
            f"{from_ms(now_ns // 1_000_000).isoformat()} (only closed bars exist)"
        )
        end_ns = now_ns
    # The last bar to serve must close at or before end: opens strictly before floor(end).
    end_ms = interval.floor_ms(end_ns // 1_000_000)
    if start_ns is None:
        if limit == 0:
            limit = DEFAULT_REQUEST_LIMIT
            notes.append(f"no start and no limit: serving the last {limit} bars")
        start_ms = steps_back_ms(interval, end_ms, limit)
        notes.append(f"start derived from limit={limit}: {from_ms(start_ms).isoformat()}")
    else:
        # The first bar closing after start is the one containing start (close > start).
        start_ms = interval.floor_ms(start_ns // 1_000_000)
        if limit:
            last_start_ms = steps_back_ms(interval, end_ms, limit)
            if last_start_ms > start_ms:
                notes.append(
                    f"limit={limit} keeps the last {limit} bars: fetching from "
                    f"{from_ms(last_start_ms).isoformat()} instead of "
                    f"{from_ms(start_ms).isoformat()}"
                )
                full_start_ms = start_ms
                start_ms = last_start_ms
    return BarRequestPlan(
        start_ms=start_ms,
        end_ms=end_ms,
        limit=limit,
        notes=tuple(notes),
        full_start_ms=full_start_ms,
    )


def _timestamp_ns(value: datetime | None) -> int | None:
    if value is None:
        return None
    if hasattr(value, "value"):  # pandas.Timestamp: exact nanoseconds
        return int(value.value)
    if value.tzinfo is None:
        raise InvalidInput(f"naive datetime {value.isoformat()}; pass a UTC-aware datetime")
    delta = value - from_ms(0)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def _format_gaps(gaps: list[Any], limit: int = 5) -> str:
    text = ", ".join(str(gap) for gap in gaps[:limit])
    return text + (f" (+{len(gaps) - limit} more)" if len(gaps) > limit else "")


def _runs(open_times_ms: list[int], interval: Interval) -> list[tuple[int, int, int]]:
    """Group ascending missing open times into ``(first, end_exclusive, count)`` runs."""
    runs: list[tuple[int, int, int]] = []
    for t in open_times_ms:
        if runs and runs[-1][1] == t:
            first, _, n = runs[-1]
            runs[-1] = (first, interval.next_open_ms(t), n + 1)
        else:
            runs.append((t, interval.next_open_ms(t), 1))
    return runs


def _format_runs(runs: list[tuple[int, int, int]], limit: int = 5) -> str:
    text = ", ".join(
        f"[{from_ms(a).isoformat()}, {from_ms(b).isoformat()}) {n} missing"
        for a, b, n in runs[:limit]
    )
    return text + (f" (+{len(runs) - limit} more)" if len(runs) > limit else "")


# ---------------------------------------------------------------------------------------------
# Live polling state
# ---------------------------------------------------------------------------------------------


@dataclass
class _BarPoller:
    """One sequential polling task per bar type (so a slow response never publishes twice)."""

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


# ---------------------------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------------------------


class DSMDataClient(LiveMarketDataClient):
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
            venue=BINANCE_VENUE,
            msgbus=msgbus,
            cache=cache,
            clock=clock,
            instrument_provider=instrument_provider,
            config=config,
        )
        self._dsm = dsm
        self._holds_dsm = False
        self._config = config
        # Every message of this client goes through this seam (tests swap in a recorder).
        self._logger: Any = self._log
        # Configuration errors surface at construction, not at the first request.
        self._market_type: MarketType | None = (
            MarketType.parse(config.market_type) if config.market_type else None
        )
        if config.on_low_quality not in ("raise", "warn"):
            raise InvalidInput(f"on_low_quality={config.on_low_quality!r}; use 'raise' or 'warn'")
        if not 0.0 <= config.min_completeness <= 1.0:
            raise InvalidInput(
                f"min_completeness={config.min_completeness} is outside [0, 1]; pass e.g. 0.95"
            )
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
        self._pollers: dict[BarType, _BarPoller] = {}
        self._logger.info(
            f"config: market_type={config.market_type}, base_url_http={config.base_url_http}, "
            f"base_url_vision={config.base_url_vision}, "
            f"min_completeness={config.min_completeness}, "
            f"on_low_quality={config.on_low_quality}, poll_delay_ms={config.poll_delay_ms}, "
            f"synthetic_fallback={config.synthetic_fallback}",
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
        local = self._now_ns() // 1_000_000 if local_ms is None else local_ms
        if market_type is None:
            return local
        return self._dsm.exchange_clock(market_type).now_ms(local)

    async def _request_now_ns(self, market_type: MarketType, end_ns: int | None) -> int:
        """Exchange "now" for planning a request: what is closed and where a limit counts back
        from. Measured first (when due) if the request reaches within a day of now; a request
        wholly in the past needs no measurement (its plan cannot depend on the clock)."""
        local_ns = self._now_ns()
        if end_ns is None or end_ns > local_ns - _DAY_NS:
            with contextlib.suppress(DSMError):  # never fails a request: the offset stays
                await self._dsm.exchange_now_ms(market_type)
        local_ms = local_ns // 1_000_000
        return self._now_ms(market_type, local_ms) * 1_000_000 + (local_ns - local_ms * 1_000_000)

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
                delay = min(_retry_delay_s(failures), remaining)
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
        for bar_type in list(self._pollers):
            await self._stop_poller(bar_type)
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

    def _resolve(self, instrument_id: InstrumentId) -> ResolvedInstrument:
        return resolve_instrument(instrument_id.value, self._market_type)

    async def _instrument(
        self, instrument_id: InstrumentId, *, history: bool = False
    ) -> Instrument:
        """The instrument from the cache, the provider, or loaded on demand; else UnknownSymbol.

        ``history`` also accepts symbols Binance still lists but no longer trades (halted,
        settling): their past bars exist, their live stream does not.
        """
        resolved = self._resolve(instrument_id)
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

    def _check_bar_type(self, bar_type: BarType) -> tuple[Interval, ResolvedInstrument]:
        if bar_type.aggregation_source != AggregationSource.EXTERNAL:
            raise InvalidInput(
                f"{bar_type} is internally aggregated; DSM serves Binance klines, so use "
                f"{str(bar_type).rsplit('-', 1)[0]}-EXTERNAL (Nautilus aggregates INTERNAL bars "
                "from them itself)"
            )
        interval = interval_for(bar_type)
        resolved = self._resolve(bar_type.instrument_id)
        interval.check_market(resolved.market_type)
        return interval, resolved

    async def _bars_for_request(self, request: RequestBars) -> list[Bar]:
        bar_type = request.bar_type
        # Validate before any I/O.
        interval, resolved = self._check_bar_type(bar_type)
        plan = plan_bar_request(
            interval,
            _timestamp_ns(request.start),
            _timestamp_ns(request.end),
            request.limit,
            await self._request_now_ns(resolved.market_type, _timestamp_ns(request.end)),
        )
        for note in plan.notes:
            self._logger.info(f"{bar_type}: {note}", LogColor.BLUE)
        if plan.is_empty:
            self._logger.warning(
                f"{bar_type}: no closed bar lies in the requested range "
                f"(start={request.start}, end={request.end}); answering empty"
            )
            return []

        instrument = await self._instrument(bar_type.instrument_id, history=True)
        fetch_start_ms, result = await self._fetch_for_plan(bar_type, resolved, interval, plan)
        report = result.report
        if report.gaps:
            self._logger.warning(
                f"{bar_type}: {report.bars}/{report.expected_bars} bars "
                f"({report.completeness:.4%}), gaps: {_format_gaps(report.gaps)}"
            )
        frame = result.frame
        if self._config.synthetic_fallback:
            frame, _ = self._fill_synthetic(
                frame,
                bar_type,
                interval,
                fetch_start_ms,
                plan.end_ms,
                previous_close=None,
                first_open_ms=_ms_or_none(report.listing_time),
                report=report,
            )
        if plan.limit and frame.height > plan.limit:
            frame = frame.tail(plan.limit)
        bars = self._convert(frame, bar_type, instrument)
        self._logger.info(
            f"{bar_type}: serving {len(bars)} bars "
            f"[{from_ms(fetch_start_ms).isoformat()}, {from_ms(plan.end_ms).isoformat()}) "
            f"sources={report.sources}",
            LogColor.BLUE,
        )
        return bars

    async def _fetch_for_plan(
        self,
        bar_type: BarType,
        resolved: ResolvedInstrument,
        interval: Interval,
        plan: BarRequestPlan,
    ) -> tuple[int, Any]:
        """Fetch the plan's window; widen a narrowed one to the request's own start if needed.

        A ``limit`` narrows the fetch to the last ``limit`` intervals, which is enough only
        when the source has every bar there. After a source gap the last ``limit`` bars reach
        further back, so the request is fetched again from its own start instead of serving
        fewer bars, or none when the small window alone falls below ``min_completeness``. The
        quality policy then judges what is served: the share of the ``limit`` bars asked for
        (or of all the range can hold, if fewer) that exist, not gaps long before them.

        Returns the first open time fetched and the ``FetchResult``.
        """

        async def fetch(start_ms: int, min_completeness: float) -> Any:
            return await self._dsm.fetch(
                resolved.instrument_id,
                interval,
                from_ms(start_ms),
                from_ms(plan.end_ms),
                min_completeness=min_completeness,
                on_low_quality=self._config.on_low_quality,
            )

        min_completeness = self._config.min_completeness
        if plan.full_start_ms is None:
            return plan.start_ms, await fetch(plan.start_ms, min_completeness)
        try:
            result = await fetch(plan.start_ms, min_completeness)
        except QualityBelowThreshold as e:
            narrowed = e.result
            reason = "is below min_completeness"
            if narrowed is None or _listed_from(narrowed.report) >= plan.start_ms:
                raise  # nothing earlier exists (or nothing to judge by): the verdict stands
        else:
            short = result.frame.height < plan.limit and not self._config.synthetic_fallback
            if not short or _listed_from(result.report) >= plan.start_ms:
                return plan.start_ms, result
            narrowed = result
            reason = "has gaps"
        gaps = narrowed.report.gaps
        self._logger.info(
            f"{bar_type}: the last {plan.limit} intervals hold {narrowed.frame.height} bars "
            f"(window {reason}; gaps: {_format_gaps(gaps) if gaps else 'none'}); fetching again "
            f"from the requested start {from_ms(plan.full_start_ms).isoformat()} to serve the "
            f"last {plan.limit} bars",
            LogColor.BLUE,
        )
        # Judged below on the bars served, not on gaps long before them.
        result = await fetch(plan.full_start_ms, 0.0)
        report = result.report
        wanted = min(plan.limit, report.expected_bars)
        served = min(result.frame.height, plan.limit)
        completeness = served / wanted if wanted else 1.0
        if completeness < min_completeness:
            message = (
                f"only {served} of the last {plan.limit} bars requested exist in "
                f"[{from_ms(plan.full_start_ms).isoformat()}, {from_ms(plan.end_ms).isoformat()}) "
                f"({completeness:.2%} < min_completeness {min_completeness:.2%}); pass "
                f"min_completeness={math.floor(completeness * 100) / 100:.2f} or "
                "on_low_quality='warn' to accept them"
            )
            if self._config.on_low_quality == "raise":
                raise QualityBelowThreshold(message, result=result)
            self._logger.warning(f"{bar_type}: {message}")
        return plan.full_start_ms, result

    def _convert(self, frame: pl.DataFrame, bar_type: BarType, instrument: Instrument) -> list[Bar]:
        conversion = convert_frame(frame, bar_type, instrument)
        if conversion.invalid.height:
            self._logger.error(
                f"{bar_type}: {conversion.invalid.height} of {conversion.rows} klines could not "
                f"be converted and are not served: {_describe_invalid(conversion.invalid)}"
            )
        return conversion.bars

    def _fill_synthetic(
        self,
        frame: pl.DataFrame,
        bar_type: BarType,
        interval: Interval,
        start_ms: int,
        end_ms: int,
        *,
        previous_close: Decimal | None,
        first_open_ms: int | None,
        report: Any | None = None,
    ) -> tuple[pl.DataFrame, int]:
        fill = fill_gaps(
            frame,
            interval,
            start_ms,
            end_ms,
            previous_close=previous_close,
            first_open_ms=first_open_ms,
        )
        if fill.count:
            runs = _runs(fill.synthetic_open_ms, interval)
            self._logger.warning(
                f"{bar_type}: {fill.count} SYNTHETIC flat bars generated (no source has them): "
                f"{_format_runs(runs)}"
            )
            for open_ms in fill.synthetic_open_ms:
                self._logger.debug(f"{bar_type}: SYNTHETIC bar open={from_ms(open_ms).isoformat()}")
            if report is not None:
                report.sources[SYNTHETIC] = report.sources.get(SYNTHETIC, 0) + fill.count
        if fill.unfilled_open_ms:
            self._logger.warning(
                f"{bar_type}: {len(fill.unfilled_open_ms)} missing bars before the first real "
                "bar stay empty (no earlier close to repeat): "
                f"{_format_runs(_runs(fill.unfilled_open_ms, interval))}"
            )
        return fill.frame, fill.count

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
            interval, resolved = self._check_bar_type(bar_type)
        except DSMError as e:
            self._logger.error(f"Cannot subscribe to {bar_type}: {e}")
            self._remove_subscription_bars(bar_type)
            return
        # No await from here on: the poller is registered in the same step as the check above,
        # so an unsubscribe always finds it. The instrument is resolved by the poll loop, which
        # retries through a source outage instead of leaving a subscription that never delivers.
        instrument = self._cache.instrument(bar_type.instrument_id)
        if instrument is not None and (refusal := _not_trading(instrument)) is not None:
            # Loaded for a history request: its past bars exist, its live stream does not.
            self._logger.error(f"Cannot subscribe to {bar_type}: {refusal}")
            self._remove_subscription_bars(bar_type)
            return
        local_ms = self._now_ms()
        now_ms = self._now_ms(resolved.market_type, local_ms)
        poller = _BarPoller(
            bar_type=bar_type,
            interval=interval,
            resolved=resolved,
            instrument=instrument,
            next_open_ms=interval.floor_ms(now_ms),  # the forming bar is the first published
            anchor_local_ms=local_ms,
        )
        poller.task = asyncio.get_running_loop().create_task(
            self._poll_bars(poller), name=f"dsm-poll-{bar_type}"
        )
        self._pollers[bar_type] = poller
        self._logger.info(
            f"Polling {bar_type} from the bar opening {from_ms(poller.next_open_ms).isoformat()} "
            f"(poll_delay_ms={self._config.poll_delay_ms})",
            LogColor.BLUE,
        )

    async def _unsubscribe_bars(self, command: UnsubscribeBars) -> None:
        await self._stop_poller(command.bar_type)

    async def _stop_poller(self, bar_type: BarType) -> None:
        poller = self._pollers.pop(bar_type, None)
        if poller is None or poller.task is None:
            return
        poller.task.cancel()
        await asyncio.wait([poller.task])
        self._logger.info(
            f"Stopped polling {bar_type} after {poller.published} bars "
            f"({poller.synthetic} synthetic, {poller.skipped} bad klines skipped)"
        )

    def _end_subscription(self, poller: _BarPoller) -> None:
        """Drop a subscription whose poller cannot go on (called from the poller itself)."""
        if self._pollers.get(poller.bar_type) is poller:
            del self._pollers[poller.bar_type]
        self._remove_subscription_bars(poller.bar_type)

    async def _resolve_poller_instrument(self, poller: _BarPoller) -> bool:
        """Resolve the instrument, retrying source errors; False when it cannot exist."""
        bar_type = poller.bar_type
        failures = 0
        while poller.instrument is None:
            try:
                poller.instrument = await self._instrument(bar_type.instrument_id)
            except asyncio.CancelledError:
                raise
            except InvalidInput as e:  # unknown symbol, wrong market: asking again cannot help
                self._logger.error(f"Cannot subscribe to {bar_type}: {e}")
                self._end_subscription(poller)
                return False
            except Exception as e:
                failures += 1
                retry_s = _retry_delay_s(failures)
                self._logger.warning(
                    f"{bar_type}: instrument lookup failed ({type(e).__name__}: {e}); attempt "
                    f"{failures}, retrying in {retry_s:.2f}s; bars from "
                    f"{from_ms(poller.next_open_ms).isoformat()} will be backfilled in order"
                )
                await asyncio.sleep(retry_s)
        if failures:
            self._logger.info(
                f"{bar_type}: instrument resolved after {failures} failed attempts",
                LogColor.GREEN,
            )
        if (refusal := _not_trading(poller.instrument)) is not None:
            self._logger.error(f"Cannot subscribe to {bar_type}: {refusal}")
            self._end_subscription(poller)
            return False
        return True

    async def _anchor_to_exchange_time(self, poller: _BarPoller) -> None:
        """Measure the exchange clock; start from the exchange's forming bar at subscription.

        The subscription used the offset known then (0 before the first measurement): with the
        local clock minutes behind, it would otherwise start minutes in the exchange's past.
        """
        market = poller.resolved.market_type
        await self._dsm.exchange_now_ms(market)
        anchor, poller.anchor_local_ms = poller.anchor_local_ms, None
        if anchor is None or poller.published:
            return
        anchored = poller.interval.floor_ms(self._now_ms(market, anchor))
        if anchored != poller.next_open_ms:
            self._logger.info(
                f"{poller.bar_type}: exchange clock offset "
                f"{self._dsm.exchange_clock(market).offset_ms:+d} ms; the first bar is the one "
                f"forming on the exchange at subscription, {from_ms(anchored).isoformat()}",
                LogColor.BLUE,
            )
            poller.next_open_ms = anchored

    def _poll_window_end_ms(self, poller: _BarPoller, now_ms: int) -> tuple[int, bool]:
        """End (exclusive open time) of the next fetch, up to now but short of a bad kline;
        and whether it was cut short (then it does not grow with time)."""
        interval = poller.interval
        # On the grid: the bars this window can hold are exactly those it names.
        natural = max(interval.floor_ms(now_ms), interval.next_open_ms(poller.next_open_ms))
        end_ms = natural
        if poller.narrow_until_ms is not None:
            if poller.next_open_ms >= poller.narrow_until_ms:
                poller.narrow_until_ms = None
            else:
                end_ms = min(end_ms, interval.next_open_ms(poller.next_open_ms))
        poller.skip_ms = {t: w for t, w in poller.skip_ms.items() if t >= poller.next_open_ms}
        if poller.skip_ms:
            end_ms = min(end_ms, min(poller.skip_ms))
        return end_ms, end_ms < natural

    def _skip_bad_kline(self, poller: _BarPoller, why: str) -> None:
        """Report the bad kline at ``next_open_ms`` and go on from the bar after it."""
        skipped = poller.next_open_ms
        poller.skip_ms.pop(skipped, None)
        poller.next_open_ms = poller.interval.next_open_ms(skipped)
        poller.skipped += 1
        self._logger.error(
            f"{poller.bar_type}: the kline opening at {from_ms(skipped).isoformat()} is "
            f"skipped: {why}; the stream goes on from {from_ms(poller.next_open_ms).isoformat()}"
        )

    async def _still_listed(self, poller: _BarPoller) -> bool:
        """Whether a fresh exchangeInfo still lists the symbol (True when it cannot tell)."""
        symbol = poller.resolved.symbol
        try:
            info = await self._dsm.rest_client(poller.resolved.market_type).exchange_info(symbol)
        except asyncio.CancelledError:
            raise
        except UnknownSymbol:
            return False
        except Exception as e:  # cannot tell: a transient -1121 is retried like an outage
            self._logger.warning(
                f"{poller.bar_type}: could not check exchangeInfo for {symbol} "
                f"({type(e).__name__}: {e})"
            )
            return True
        symbols = info.get("symbols")
        if not isinstance(symbols, list):
            return True
        return any(isinstance(s, dict) and s.get("symbol") == symbol for s in symbols)

    async def _poll_bars(self, poller: _BarPoller) -> None:
        """Publish every closed bar once, in order; retry with backoff through outages.

        "Closed" is the exchange's clock's call. Source errors (5xx, timeouts, a transient
        -1121 while exchangeInfo still lists the symbol) are retried, since outages end. A bad
        kline (``InvalidResponse``, or a payload nothing can parse) fails the same way on every
        retry: after ``_BAD_KLINE_TRIES`` it is logged as an error and skipped, found one bar at
        a time when the error does not name it. Only an exchangeInfo that no longer lists the
        symbol, or a request refused as such, ends the subscription.
        """
        if not await self._resolve_poller_instrument(poller):
            return
        await self._anchor_to_exchange_time(poller)
        bar_type, interval = poller.bar_type, poller.interval
        market = poller.resolved.market_type
        delay_ms = self._config.poll_delay_ms
        failures = 0
        bad = 0
        waits = 0
        # Re-poll a due bar at least 4 times per interval (1s bars: every <= 250 ms).
        max_wait_s = (
            _NOT_YET_CLOSED_MAX_S
            if interval.is_month
            else min(_NOT_YET_CLOSED_MAX_S, interval.fixed_ms / 4_000)
        )
        while True:
            due_ms = interval.next_open_ms(poller.next_open_ms) + delay_ms
            now_ms = await self._dsm.exchange_now_ms(market)  # measures only when due
            if due_ms > now_ms:
                await asyncio.sleep((due_ms - now_ms) / 1000)
            end_ms, cut = self._poll_window_end_ms(poller, self._now_ms(market))
            if end_ms <= poller.next_open_ms:  # the next bar is a known bad kline
                self._skip_bad_kline(poller, poller.skip_ms[poller.next_open_ms])
                continue
            try:
                result = await self._dsm.fetch(
                    poller.resolved.instrument_id,
                    interval,
                    from_ms(poller.next_open_ms),
                    from_ms(end_ms),
                    min_completeness=0.0,
                    on_low_quality="warn",
                )
            except asyncio.CancelledError:
                raise
            except UnknownSymbol as e:  # -1121: transient unless exchangeInfo agrees
                if not await self._still_listed(poller):
                    self._logger.error(
                        f"{bar_type}: {poller.resolved.symbol} is no longer listed in the "
                        f"{market.name} exchangeInfo ({e}); subscription ended after "
                        f"{poller.published} bars"
                    )
                    self._end_subscription(poller)
                    return
                failures += 1
                retry_s = _retry_delay_s(failures)
                self._logger.warning(
                    f"{bar_type}: klines answered -1121 but exchangeInfo still lists "
                    f"{poller.resolved.symbol} (transient); attempt {failures}, retrying in "
                    f"{retry_s:.2f}s; bars from {from_ms(poller.next_open_ms).isoformat()} "
                    "will be backfilled in order"
                )
                await asyncio.sleep(retry_s)
                continue
            except InvalidInput as e:  # the request itself is refused: it always will be
                self._logger.error(f"{bar_type}: cannot poll ({e}); subscription ended")
                self._end_subscription(poller)
                return
            except Exception as e:
                if isinstance(e, InvalidResponse) or not isinstance(e, DSMError):
                    bad += 1
                    if bad < _BAD_KLINE_TRIES:
                        retry_s = _retry_delay_s(bad)
                        first = from_ms(poller.next_open_ms).isoformat()
                        self._logger.warning(
                            f"{bar_type}: bad klines from {first} ({type(e).__name__}: {e}); "
                            f"try {bad} of {_BAD_KLINE_TRIES}, retrying in {retry_s:.2f}s"
                        )
                        await asyncio.sleep(retry_s)
                        continue
                    self._isolate_bad_kline(poller, e, end_ms, bad)
                    bad = 0
                    continue
                failures += 1
                retry_s = _retry_delay_s(failures)
                self._logger.warning(
                    f"{bar_type}: fetch failed ({type(e).__name__}: {e}); attempt {failures}, "
                    f"retrying in {retry_s:.2f}s; bars from "
                    f"{from_ms(poller.next_open_ms).isoformat()} will be backfilled in order"
                )
                await asyncio.sleep(retry_s)
                continue
            bad = 0
            frame = result.frame.filter(
                pl.col("open_time").dt.epoch("ms") >= poller.next_open_ms
            ).sort("open_time")
            if not frame.is_empty():
                self._publish_or_skip(poller, frame, result.report)
            if failures:
                self._logger.info(
                    f"{bar_type}: source back after {failures} failed attempts; backfilled up to "
                    f"{from_ms(poller.next_open_ms).isoformat()}",
                    LogColor.GREEN,
                )
                failures = 0
            if frame.is_empty():
                if (cut or poller.narrow_until_ms is not None) and end_ms <= self._now_ms(market):
                    # A window that cannot grow, wholly closed, came back empty: a source gap,
                    # not a forming bar (waiting would stall the stream before a bad kline).
                    n = interval.count(poller.next_open_ms, end_ms)
                    self._logger.error(
                        f"{bar_type}: the source has no bars for {n} open times: "
                        f"{_format_runs([(poller.next_open_ms, end_ms, n)])}"
                    )
                    poller.next_open_ms = end_ms
                    continue
                # Due but not closed at the source yet: re-poll soon, never publish forming bars.
                waits += 1
                await asyncio.sleep(min(_NOT_YET_CLOSED_S * waits, max_wait_s))
                continue
            waits = 0

    def _isolate_bad_kline(
        self, poller: _BarPoller, error: BaseException, end_ms: int, tries: int
    ) -> None:
        """After the last try: skip the klines the error names, or narrow down to find them."""
        why = (
            f"the source answered it with a bad payload {tries} times "
            f"({type(error).__name__}: {error})"
        )
        named = getattr(error, "open_times_ms", ())
        known = {t for t in named if poller.next_open_ms <= t < end_ms}
        if known:
            poller.skip_ms.update(dict.fromkeys(known, why))
            if poller.next_open_ms in known:
                self._skip_bad_kline(poller, why)
            return
        if end_ms <= poller.interval.next_open_ms(poller.next_open_ms):
            self._skip_bad_kline(poller, why)  # a window of one bar: it is this one
            return
        poller.narrow_until_ms = end_ms
        self._logger.warning(
            f"{poller.bar_type}: bad klines in [{from_ms(poller.next_open_ms).isoformat()}, "
            f"{from_ms(end_ms).isoformat()}) not named by the source; fetching one bar at a "
            "time to skip only the bad one"
        )

    def _publish_or_skip(self, poller: _BarPoller, frame: pl.DataFrame, report: Any) -> None:
        """Publish the frame's bars; if that fails, skip the frame (a retry would fail again)."""
        end_ms = _frame_end_ms(frame, poller.interval)
        try:
            self._publish(poller, frame, report, end_ms)
        except Exception as e:
            first, last = frame["open_time"][0].isoformat(), frame["open_time"][-1].isoformat()
            self._logger.error(
                f"{poller.bar_type}: {frame.height} klines from {first} to {last} could not be "
                "published and are skipped "
                f"({type(e).__name__}: {e}); polling continues from "
                f"{from_ms(end_ms).isoformat()}"
            )
            poller.next_open_ms = max(poller.next_open_ms, end_ms)

    def _publish(self, poller: _BarPoller, frame: pl.DataFrame, report: Any, end_ms: int) -> None:
        bar_type, interval = poller.bar_type, poller.interval
        assert poller.instrument is not None  # resolved before the first fetch
        missing = missing_open_times_ms(frame, interval, poller.next_open_ms, end_ms).tolist()
        if missing:
            runs = _runs(missing, interval)
            expected = interval.count(poller.next_open_ms, end_ms)
            completeness = (expected - len(missing)) / expected
            below = completeness < self._config.min_completeness
            self._logger.error(
                f"{bar_type}: the source has no bars for {len(missing)} of {expected} open times "
                f"({completeness:.2%}{' < min_completeness' if below else ''}): "
                f"{_format_runs(runs)}"
                + ("; filling with SYNTHETIC bars" if self._config.synthetic_fallback else "")
            )
        if self._config.synthetic_fallback and missing:
            frame, added = self._fill_synthetic(
                frame,
                bar_type,
                interval,
                poller.next_open_ms,
                end_ms,
                previous_close=poller.last_close,
                first_open_ms=None,
                report=report,
            )
            poller.synthetic += added
        conversion = convert_frame(frame, bar_type, poller.instrument)
        if conversion.invalid.height:
            self._logger.error(
                f"{bar_type}: {conversion.invalid.height} of {conversion.rows} klines cannot be "
                f"bars and are skipped: {_describe_invalid(conversion.invalid)}"
            )
        valid = np.ones(frame.height, dtype=bool)
        valid[conversion.invalid["row"].to_numpy()] = False
        bars = conversion.bars
        # Close -> publish latency on the exchange's clock (bars are stamped by it).
        local_ns = self._now_ns()
        local_ms = local_ns // 1_000_000
        shift_ms = self._now_ms(poller.resolved.market_type, local_ms) - local_ms
        now_ns = local_ns + shift_ms * 1_000_000
        for bar in bars:
            self._handle_data(bar)
            # Advance per bar: whatever happens next, a published bar is never published again.
            poller.next_open_ms = bar.ts_event // 1_000_000  # the close is the next bar's open
            poller.published += 1
            poller.latencies_ms.append((now_ns - bar.ts_event) / 1_000_000)
        poller.next_open_ms = end_ms
        if valid.any():
            poller.last_close = frame["close"][int(np.flatnonzero(valid)[-1])]
        if len(bars) > 1:
            self._logger.info(f"{bar_type}: published {len(bars)} bars (backfill)", LogColor.BLUE)


def _describe_invalid(invalid: pl.DataFrame, limit: int = 5) -> str:
    """``open_time (reason)`` of the first rows convert_frame refused, for the log."""
    text = ", ".join(
        f"{row['open_time'].isoformat()} ({row['reason']})"
        for row in invalid.head(limit).iter_rows(named=True)
    )
    return text + (f" (+{invalid.height - limit} more)" if invalid.height > limit else "")


def _not_trading(instrument: Instrument) -> str | None:
    """Why ``instrument`` has no live klines (its exchangeInfo status), or None if it trades.

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


def _retry_delay_s(failures: int) -> float:
    """Backoff before retry number ``failures`` (1-based): doubling, capped."""
    return min(_RETRY_BASE_S * 2 ** (failures - 1), _RETRY_MAX_S)


def _frame_end_ms(frame: pl.DataFrame, interval: Interval) -> int:
    """Open time after the frame's last bar; a row off the grid counts as its grid bar."""
    last_open_ms = int(frame["open_time"].dt.epoch("ms")[-1])
    return interval.next_open_ms(interval.floor_ms(last_open_ms))


def _listed_from(report: Any) -> int:
    """The first open time the source can have (its listing), or -1 when unknown."""
    listing_ms = _ms_or_none(report.listing_time)
    return -1 if listing_ms is None else listing_ms


def _ms_or_none(value: Any) -> int | None:
    """A report timestamp (epoch ms or aware datetime) as exact epoch ms."""
    if value is None:
        return None
    if isinstance(value, int):
        return value
    return to_ms(value)
