"""The data-source manager: Binance klines through cache -> Vision -> REST, with a quality report.

``fetch`` validates everything before any I/O, splits the request into periods (UTC days, or
UTC years for ``1d`` and longer), serves closed periods from the cache, fetches the others from
Binance Vision (a whole uncached month from its monthly zip) and falls back to REST per period
when a file is missing or cannot be trusted; a period a source answered short goes on to the
next source for the missing bars only (see ``failover.py``). Closed periods are cached, final
only when complete or their gaps are lacked by Vision and REST, else provisional (re-checked by
every later fetch against every enabled source, once per fetch); the open period (the one
containing now) is fetched from REST for the requested part only and never cached. The merged
frame holds exactly the closed bars with open time in ``[start, end)``, sorted and unique; what
was missing, repeated, reordered or odd is in the report (with the sources that confirmed each
gap), never papered over. A cache that cannot be written costs a warning, never the downloaded
bars.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import polars as pl

from nautilus_dsm.common import (
    DEFAULT_MAX_ROWS,
    DEFAULT_VISION_URL,
    ENDPOINTS,
    DataProvider,
    Interval,
    MarketType,
    ResolvedInstrument,
    check_not_future,
    check_range,
    check_row_cap,
    parse_instant,
    resolve_instrument,
    rest_base_url,
)
from nautilus_dsm.dsm.cache import KlineCache, PeriodState, default_cache_dir
from nautilus_dsm.dsm.exchange_clock import DEFAULT_RESYNC_S, ExchangeClock
from nautilus_dsm.dsm.failover import (
    REST,
    SOURCE_COL,
    VISION,
    VISION_MONTHLY,
    Evidence,
    kinds,
    unconfirmed,
)
from nautilus_dsm.dsm.http import gather_or_cancel, wall_clock_ms
from nautilus_dsm.dsm.planner import (
    SETTLE_MS,
    MonthGroup,
    Period,
    closed_end_ms,
    decided_without_now,
    is_closed,
    is_yearly,
    period_close_ms,
    periods_for,
    plan_fetch,
)
from nautilus_dsm.dsm.quality import (
    QualityReport,
    assess,
    below_threshold_message,
    iso_ms,
    normalise,
)
from nautilus_dsm.dsm.rest import BinanceRestClient
from nautilus_dsm.dsm.schema import COLUMNS, empty_frame
from nautilus_dsm.dsm.settings import DEFAULT_EXCHANGE_INFO_TTL_S, SourceSettings
from nautilus_dsm.dsm.vision import VisionClient
from nautilus_dsm.errors import (
    CacheUnwritable,
    DataUnavailable,
    DSMError,
    InvalidData,
    InvalidInput,
    InvalidResponse,
    QualityBelowThreshold,
    RateLimited,
    SourceError,
)

log = logging.getLogger("nautilus_dsm.dsm")

Source = Literal["cache", "vision", "rest"]
ProgressCallback = Callable[[int, int], None]
_SOURCE_COL = SOURCE_COL
# A period that closed less than this before exchange-now is decided closed (and cached final)
# only on a measurement of the exchange's clock taken after its close (see _prove_recent).
RECENT_CLOSE_MS = 10 * 60_000


class FetchInsideEventLoop(DSMError, RuntimeError):
    """``fetch_sync`` was called from code already running an event loop."""


@dataclass(slots=True)
class FetchResult:
    """The bars of a fetch, their quality report, the resolved instrument and the interval."""

    frame: pl.DataFrame
    report: QualityReport
    instrument: ResolvedInstrument
    interval: Interval


@dataclass
class _Run:
    """Mutable state of one fetch: frames per period, counters, failures, timings."""

    instrument: ResolvedInstrument
    interval: Interval
    start_ms: int
    stop_ms: int
    now_ms: int
    total: int
    progress: ProgressCallback | None
    done: int = 0
    frames: list[pl.DataFrame] = field(default_factory=list)
    duplicates: int = 0
    out_of_order: int = 0
    warnings: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    rate_limited: bool = False  # a failure was a 429/418 wait beyond max_wait_s
    invalid: list[InvalidResponse] = field(default_factory=list)  # failures that were bad payloads
    cached_first_ms: int | None = None  # earliest open time read from the cache
    # The provisional source chain (see failover.py): what the cache held, which gaps the
    # sources lacked, which periods stay provisional, which could not be cached.
    cache_frame: pl.DataFrame | None = None
    provisional: dict[str, tuple[pl.DataFrame, PeriodState]] = field(default_factory=dict)
    first_bar_ms: int | None = None
    gap_evidence: list[tuple[int, int, tuple[str, ...]]] = field(default_factory=list)
    provisional_left: list[str] = field(default_factory=list)
    provisional_stuck: list[str] = field(default_factory=list)  # no second source can confirm
    uncached: list[str] = field(default_factory=list)
    uncached_why: str = ""
    timings: dict[str, float] = field(
        default_factory=lambda: {"cache": 0.0, "vision": 0.0, "rest": 0.0}
    )

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self.progress is not None and n:
            self.progress(self.done, self.total)


class DataSourceManager:
    """
    Fetch Binance klines exactly, through cache -> Binance Vision -> REST.

    Create with :meth:`create`. One REST and one Vision client per market, created on first use.
    Use ``async with`` or call :meth:`aclose` to release the connections.
    """

    def __init__(
        self,
        settings: SourceSettings | None = None,
        *,
        cache: KlineCache | None = None,
        clock: Callable[[], int] | None = None,
    ) -> None:
        settings = SourceSettings() if settings is None else settings
        self.settings = settings
        # The time bounds every client gets (None keeps each source's default).
        self._knobs = settings.knobs
        self.market_type = settings.market_type
        self.max_rows = settings.max_rows
        self.base_url_http = settings.base_url_http
        self.base_url_vision = settings.base_url_vision
        self.cache = (
            cache
            if cache is not None
            else KlineCache(
                settings.cache_dir
                if settings.cache_dir is not None
                else endpoint_cache_dir(settings.base_url_http, settings.base_url_vision)
            )
        )
        self.min_completeness = settings.min_completeness
        self.on_low_quality = settings.on_low_quality
        self.max_concurrency = settings.max_concurrency
        self.use_cache = settings.use_cache
        self.use_vision = settings.use_vision
        self.use_rest = settings.use_rest
        self.verify_tls = settings.verify_tls
        self.exchange_info_ttl_s = settings.exchange_info_ttl_s
        self._clock = clock or wall_clock_ms
        # Exchange time decides what is closed. An injected clock is the caller's "now" (tests,
        # replays): measured against it only when asked, since a real server would disagree.
        self.time_sync = (clock is None) if settings.time_sync is None else settings.time_sync
        self.time_sync_interval_s = settings.time_sync_interval_s
        self._exchange_clocks: dict[MarketType, ExchangeClock] = {}
        self._rest: dict[MarketType, BinanceRestClient] = {}
        self._vision: dict[MarketType, VisionClient] = {}
        # Decoded exchangeInfo per market and the clock time (ms) it was fetched at.
        self._exchange_info: dict[MarketType, tuple[dict, int]] = {}
        # First bar ever per (market, symbol, interval): it never changes once known, so live
        # polls of the open period do not repeat the probe. Keys in _first_bar_probed came from
        # this manager's own REST probe; the others from the cache's sidecar, which a range
        # wholly before it must confirm (see _find_listing).
        self._first_bar: dict[tuple[MarketType, str, Interval], int] = {}
        self._first_bar_probed: set[tuple[MarketType, str, Interval]] = set()

    @classmethod
    def create(
        cls,
        provider: DataProvider | str = DataProvider.BINANCE,
        market_type: MarketType | str | None = None,
        *,
        base_url_http: str | None = None,
        base_url_vision: str | None = None,
        cache_dir: Path | str | None = None,
        min_completeness: float = 0.95,
        on_low_quality: str = "raise",
        max_concurrency: int = 4,
        use_cache: bool = True,
        use_vision: bool = True,
        use_rest: bool = True,
        verify_tls: bool = True,
        clock: Callable[[], int] | None = None,
        exchange_info_ttl_s: float = DEFAULT_EXCHANGE_INFO_TTL_S,
        max_retries: int | None = None,
        timeout_s: float | None = None,
        deadline_s: float | None = None,
        time_sync: bool | None = None,
        time_sync_interval_s: float = DEFAULT_RESYNC_S,
        max_rows: int = DEFAULT_MAX_ROWS,
    ) -> DataSourceManager:
        """
        Create a manager.

        Parameters
        ----------
        provider : DataProvider
            The data provider (Binance).
        market_type : MarketType, optional
            Restrict the manager to one market; an instrument of another market is refused
            with :class:`MarketTypeMismatch`. None infers the market per instrument id.
        base_url_http, base_url_vision : str, optional
            Host overrides of the REST API and of Binance Vision (mirrors, the imitation).
        cache_dir : Path, optional
            Parquet cache root (the user cache dir when None).
        min_completeness : float, default 0.95
            Completeness (0..1) below which ``on_low_quality`` applies.
        on_low_quality : {"raise", "warn"}
            Raise :class:`QualityBelowThreshold` (result attached) or log a warning.
        max_concurrency : int, default 4
            Concurrent requests per source client.
        use_cache, use_vision, use_rest : bool
            Switch sources off (e.g. ``use_rest=False`` for bulk files only).
        verify_tls : bool, default True
            TLS certificate verification.
        clock : Callable[[], int], optional
            The local clock in epoch ms (the age of a cached ``exchangeInfo``; plus the
            measured offset to Binance's clock, it decides which bars and periods are closed);
            the system clock when None.
        exchange_info_ttl_s : float, default 3600
            Age after which :meth:`exchange_info` fetches a market's ``exchangeInfo`` again
            (tick sizes and filters change while a node runs).
        max_retries : int, optional
            Tries per request (the first included) of both sources for 5xx, timeouts and
            resets, and Vision's downloads of a file failing its checksum; None keeps each
            source's default (REST 5, Vision 3).
        timeout_s : float, optional
            Inactivity timeout in seconds: the longest wait for a connection or the next
            bytes; None keeps the default (10 s for both sources).
        deadline_s : float, optional
            Total deadline in seconds of one try (connect + headers + the whole body); None
            keeps the default (REST 60 s, Vision 300 s for big monthly zips).

        After 3 consecutive timeouts/resets a host's requests fail fast (its circuit is open)
        for a few seconds, then one probe goes; Vision periods then come from REST.
        time_sync : bool, optional
            Measure each market's offset to Binance's clock (``GET /time``, weight 1, a few
            samples every ``time_sync_interval_s``, only for fetches near now) so "closed" is
            decided by exchange time. None: on with the system clock, off with an injected
            ``clock`` (which is then taken as exchange time). Off with ``use_rest=False``.
        time_sync_interval_s : float, default 60
            Age after which the offset is measured again.
        max_rows : int, default 50_000_000
            Most bars one fetch may return (one frame in memory, ~100 bytes a bar); a larger
            request is refused before any I/O with the advice to use ``ingest`` (chunked).

        Raises
        ------
        InvalidInput
            For a bad provider, market type, knob, or a base URL that is not ``http(s)://host``.

        """
        if isinstance(provider, str):
            try:
                provider = DataProvider(provider.strip().lower())
            except ValueError:
                raise InvalidInput(
                    f"unknown provider {provider!r}; use one of: "
                    + ", ".join(p.value for p in DataProvider)
                ) from None
        if provider is not DataProvider.BINANCE:
            raise InvalidInput(f"unsupported provider {provider!r}; use DataProvider.BINANCE")
        settings = SourceSettings(
            market_type=MarketType.parse(market_type) if market_type is not None else None,
            base_url_http=base_url_http,
            base_url_vision=base_url_vision,
            cache_dir=None if cache_dir is None else str(cache_dir),
            min_completeness=min_completeness,
            on_low_quality=on_low_quality,  # type: ignore[arg-type]
            max_concurrency=max_concurrency,
            use_cache=use_cache,
            use_vision=use_vision,
            use_rest=use_rest,
            verify_tls=verify_tls,
            exchange_info_ttl_s=exchange_info_ttl_s,
            max_retries=max_retries,
            timeout_s=timeout_s,
            deadline_s=deadline_s,
            time_sync=time_sync,
            time_sync_interval_s=time_sync_interval_s,
            max_rows=max_rows,
        )
        return cls.from_config(settings, clock=clock)

    @classmethod
    def from_config(
        cls, settings: SourceSettings, *, clock: Callable[[], int] | None = None
    ) -> DataSourceManager:
        """
        Create a manager from one settings object.

        Parameters
        ----------
        settings : SourceSettings
            The engine's settings (``DSMSourceConfig`` on the Nautilus side is one).
        clock : Callable[[], int], optional
            The local clock in epoch ms; the system clock when None.

        Returns
        -------
        DataSourceManager

        """
        if not isinstance(settings, SourceSettings):
            raise InvalidInput(
                f"settings {settings!r} is not a SourceSettings; build one with "
                "SourceSettings(...) or nautilus_dsm.DSMSourceConfig(...)"
            )
        return cls(settings, clock=clock)

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> DataSourceManager:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every client's connections (clients are re-created if used again)."""
        clients: list[BinanceRestClient | VisionClient] = [
            *self._rest.values(),
            *self._vision.values(),
        ]
        self._rest.clear()
        self._vision.clear()
        for client in clients:
            await client.aclose()

    def rest_client(self, market_type: MarketType) -> BinanceRestClient:
        """The market's REST client, created on first use."""
        client = self._rest.get(market_type)
        if client is None:
            client = BinanceRestClient(
                market_type,
                self.base_url_http,
                concurrency=self.max_concurrency,
                verify_tls=self.verify_tls,
                clock=self._clock,
                **self._knobs,
            )
            self._rest[market_type] = client
        return client

    def vision_client(self, market_type: MarketType) -> VisionClient:
        """The market's Vision client, created on first use."""
        client = self._vision.get(market_type)
        if client is None:
            client = VisionClient(
                market_type,
                self.base_url_vision,
                concurrency=self.max_concurrency,
                verify_tls=self.verify_tls,
                **self._knobs,
            )
            self._vision[market_type] = client
        return client

    def exchange_clock(self, market_type: MarketType | str) -> ExchangeClock:
        """The market's exchange clock (``.now_ms()``, ``.offset_ms``), created on first use.

        It is measured lazily (see :meth:`exchange_now_ms`); until then, or with time sync
        off, its offset is 0 and exchange time is the local clock.
        """
        market = MarketType.parse(market_type)
        clock = self._exchange_clocks.get(market)
        if clock is None:
            server_time = None
            if self.time_sync and self.use_rest:

                async def server_time() -> int:
                    # Through the current REST client: aclose() may have replaced it.
                    return await self.rest_client(market).server_time()

            clock = ExchangeClock(
                market.name,
                server_time,
                local=self._clock,
                resync_s=self.time_sync_interval_s,
            )
            self._exchange_clocks[market] = clock
        return clock

    async def exchange_now_ms(self, market_type: MarketType | str) -> int:
        """Binance's time now on the market (measuring the offset first when due), epoch ms.

        A lower bound of the exchange's clock; never fails (the local clock when Binance's
        time cannot be read, with a warning).
        """
        return await self.exchange_clock(market_type).ensure()

    async def _now_for(self, market: MarketType, interval: Interval, end_ms: int) -> int:
        """Exchange "now" for a fetch; no ``GET /time`` when no decision depends on it."""
        clock = self.exchange_clock(market)
        # A local clock stepped ahead may make a range look long closed: decide without it.
        local = self._clock() - max(0, clock.step_ms())
        if decided_without_now(interval, end_ms, local):
            return clock.now_ms()
        return await clock.ensure()

    async def _prove_recent(
        self, market: MarketType, interval: Interval, start_ms: int, end_ms: int, now_ms: int
    ) -> int:
        """Exchange "now" re-measured when a period that closed in the last minutes would be
        decided closed (and cached as final, for good) on an offset measured before its close.

        A slewed local clock (NTP's gradual correction; ``time.monotonic()`` moves with it, so
        no step shows) can make the offset stale by more than the slew margin between two
        scheduled measurements. A fresh ``GET /time`` decides instead, once per period close:
        after it, the exchange's own reading proves the close and nothing is asked again.
        """
        clock = self.exchange_clock(market)
        if not clock.can_force():
            return now_ms
        stop_ms = max(start_ms, closed_end_ms(interval, end_ms, now_ms))
        for period in periods_for(interval, start_ms, stop_ms):
            close_ms = period_close_ms(interval, period)
            if (
                is_closed(interval, period, now_ms)
                and close_ms > now_ms - RECENT_CLOSE_MS
                and not clock.proves_closed(close_ms + SETTLE_MS)
            ):
                log.debug(
                    "%s %s: %s closed %d ms ago by an offset measured before; measuring again",
                    market.name,
                    interval.value,
                    period.key,
                    now_ms - close_ms,
                )
                return await clock.refresh()
        return now_ms

    async def exchange_info(self, market_type: MarketType | str) -> dict:
        """The market's decoded ``exchangeInfo``, fetched again once ``exchange_info_ttl_s`` old.

        When the refresh fails, the previous copy is served (with a warning) rather than
        failing a running node over metadata that is merely older than the TTL.
        """
        # Any market: instrument metadata is not bars, and providers may load several markets.
        market = MarketType.parse(market_type)
        cached = self._exchange_info.get(market)
        now_ms = self._clock()  # an age: the local clock measures it (an offset cancels out)
        if cached is not None and now_ms - cached[1] < self.exchange_info_ttl_s * 1000:
            return cached[0]
        try:
            info = await self.rest_client(market).exchange_info()
        except SourceError as exc:
            if cached is None:
                raise
            log.warning(
                "exchangeInfo of %s could not be refreshed (%s); serving the copy fetched "
                "%.0f s ago, the next call tries again",
                market.name,
                exc,
                (now_ms - cached[1]) / 1000,
            )
            return cached[0]
        self._exchange_info[market] = (info, now_ms)
        return info

    # -- fetch -------------------------------------------------------------------------------

    def fetch_sync(
        self,
        instrument_id_or_symbol: str,
        interval: Interval | str,
        start: datetime | str,
        end: datetime | str,
        *,
        progress: ProgressCallback | None = None,
        min_completeness: float | None = None,
        on_low_quality: str | None = None,
        max_rows: int | None = None,
    ) -> FetchResult:
        """Blocking :meth:`fetch` for scripts; refuses to run inside a running event loop."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise FetchInsideEventLoop(
                "fetch_sync() was called inside a running event loop (async code, Jupyter); "
                "use `await dsm.fetch(...)` there instead"
            )

        async def run() -> FetchResult:
            try:
                return await self.fetch(
                    instrument_id_or_symbol,
                    interval,
                    start,
                    end,
                    progress=progress,
                    min_completeness=min_completeness,
                    on_low_quality=on_low_quality,
                    max_rows=max_rows,
                )
            finally:
                # The connections belong to this short-lived loop.
                await self.aclose()

        return asyncio.run(run())

    async def fetch(
        self,
        instrument_id_or_symbol: str,
        interval: Interval | str,
        start: datetime | str,
        end: datetime | str,
        *,
        progress: ProgressCallback | None = None,
        min_completeness: float | None = None,
        on_low_quality: str | None = None,
        max_rows: int | None = None,
    ) -> FetchResult:
        """
        Fetch the closed bars with open time in ``[start, end)``.

        Parameters
        ----------
        instrument_id_or_symbol : str
            A Nautilus id (``BTCUSDT-PERP.BINANCE``) or a Binance symbol.
        interval : Interval or str
            Binance interval (``1s`` spot only, ``1m`` ... ``1M``).
        start, end : datetime or str
            Timezone-aware datetimes, or ISO-8601 strings with an offset
            (``"2024-01-01T00:00:00Z"``); naive ones are refused. ``end`` is exclusive and
            capped at now (closed bars only); a ``start`` after now is refused.
        progress : Callable[[int, int], None], optional
            Called with ``(done_periods, total_periods)`` as periods complete.
        min_completeness, on_low_quality : optional
            Override the manager's quality policy for this call.
        max_rows : int, optional
            Override the manager's row cap for this call.

        Raises
        ------
        InvalidInput, MarketTypeMismatch
            Before any I/O, for a bad interval, range, symbol or market, a start in the
            future, or a range of more than ``max_rows`` bars.
        UnknownSymbol
            When Binance does not list the symbol on the market.
        DataUnavailable
            When a period could not be fetched from any source.
        RateLimited
            When a period's REST request would wait on a 429/418 beyond ``max_wait_s``.
        QualityBelowThreshold
            Below ``min_completeness`` with policy "raise"; ``.result`` holds the result.

        """
        started = time.perf_counter()
        interval = Interval.parse(interval)
        instrument = resolve_instrument(instrument_id_or_symbol, self.market_type)
        interval.check_market(instrument.market_type)
        start_ms, end_ms = check_range(parse_instant(start, "start"), parse_instant(end, "end"))
        overrides = {
            name: value
            for name, value in (
                ("min_completeness", min_completeness),
                ("on_low_quality", on_low_quality),
                ("max_rows", max_rows),
            )
            if value is not None
        }
        # Per-call overrides validate exactly like the settings they override.
        call = self.settings.replace(**overrides) if overrides else self.settings
        threshold, policy, cap = call.min_completeness, call.on_low_quality, call.max_rows

        # Exchange time decides what is closed: the end cap, the cache and the REST filter.
        market = instrument.market_type
        now_ms = await self._now_for(market, interval, end_ms)
        now_ms = await self._prove_recent(market, interval, start_ms, end_ms, now_ms)
        check_not_future(start_ms, now_ms)
        stop_ms = max(start_ms, closed_end_ms(interval, end_ms, now_ms))
        check_row_cap(interval, start_ms, stop_ms, cap, instrument.instrument_id)
        periods = periods_for(interval, start_ms, stop_ms)
        run = _Run(instrument, interval, start_ms, stop_ms, now_ms, len(periods), progress)
        if stop_ms < end_ms:
            run.warnings.append(
                f"end {iso_ms(end_ms)} is after the last closed bar; capped at "
                f"{iso_ms(stop_ms)} (bars still forming are never returned)"
            )

        cached_keys = self._read_cache(run, periods)
        listing_ms, not_before_ms = await self._find_listing(run, periods)
        cached_keys = self._settle_cached(run, periods, cached_keys)
        plan = plan_fetch(
            interval,
            periods,
            now_ms,
            cached_keys,
            not_before_ms=not_before_ms,
            use_vision=self.use_vision,
            provisional_keys=set(run.provisional),
        )
        run.advance(len(plan.cached) + len(plan.skipped))

        jobs: list[Awaitable[None]] = [self._vision_month(run, m) for m in plan.vision_months]
        jobs += [self._vision_day(run, p) for p in plan.vision_days]
        jobs += [self._rest_period(run, p, cache=True) for p in plan.rest_closed]
        jobs += [self._recheck(run, p) for p in plan.recheck]
        jobs += [self._rest_period(run, p, cache=False) for p in plan.open]
        await gather_or_cancel(jobs)
        self._note_trust(run)
        if run.failures and len(run.invalid) == len(run.failures):
            # Every failure was a payload that failed validation: say which bars, so a live
            # stream can skip exactly those (retrying an outage is another matter).
            opens = sorted({t for exc in run.invalid for t in exc.open_times_ms})
            raise InvalidData(
                f"{instrument.instrument_id} {interval.value}: {len(run.failures)} period(s) "
                f"were answered with payloads that fail validation: {'; '.join(run.failures)}",
                open_times_ms=tuple(opens),
            )
        if run.failures:
            # A ban is not missing data: RateLimited (a SourceError, like DataUnavailable) lets
            # callers back off and retry after the time the message names.
            error = RateLimited if run.rate_limited else DataUnavailable
            raise error(
                f"{instrument.instrument_id} {interval.value}: {len(run.failures)} period(s) "
                f"could not be fetched from any source: {'; '.join(run.failures)}. Periods "
                "fetched so far are cached, so a retry only requests these; check the network "
                "and base_url_http / base_url_vision, or narrow the range"
            )

        frame, sources = self._merge(run)
        run.timings["total"] = time.perf_counter() - started
        report = assess(
            frame,
            interval,
            start_ms,
            stop_ms,
            instrument_id=instrument.instrument_id,
            symbol=instrument.symbol,
            market_type=instrument.market_type,
            listing_ms=listing_ms,
            duplicates_removed=run.duplicates,
            out_of_order_fixed=run.out_of_order,
            sources=sources,
            cache_hits=len(plan.cached),
            cache_misses=sum(len(m.days) for m in plan.vision_months)
            + len(plan.vision_days)
            + len(plan.rest_closed)
            + len(plan.recheck),
            endpoint_http=(
                rest_base_url(instrument.market_type, self.base_url_http) if self.use_rest else None
            ),
            endpoint_vision=self._vision_endpoint(instrument.market_type),
            timings=run.timings,
            warnings=run.warnings,
            gap_evidence=run.gap_evidence,
            provisional_periods=len(run.provisional_left),
        )
        result = FetchResult(frame, report, instrument, interval)
        log.debug("fetched %s", report.summary())
        if report.completeness < threshold:
            message = below_threshold_message(report, threshold)
            if policy == "raise":
                raise QualityBelowThreshold(message, result=result)
            report.warnings.append(message)
            log.warning(message)
        return result

    # -- steps -------------------------------------------------------------------------------

    def _read_cache(self, run: _Run, periods: list[Period]) -> set[str]:
        if not self.use_cache:
            return set()
        closed = [p.key for p in periods if is_closed(run.interval, p, run.now_ms)]
        if not closed:
            return set()
        t0 = time.perf_counter()
        inst = run.instrument
        frame, hits = self.cache.read_many(inst.market_type, inst.symbol, run.interval, closed)
        pending = [k for k in closed if k not in set(hits)]
        run.provisional = self.cache.read_provisional(
            inst.market_type, inst.symbol, run.interval, pending
        )
        run.timings["cache"] += time.perf_counter() - t0
        firsts = [
            int(f.get_column("open_time").dt.epoch("ms").min())
            for f in [frame, *(p[0] for p in run.provisional.values())]
            if f is not None and f.height
        ]
        run.cached_first_ms = min(firsts) if firsts else None
        run.cache_frame = frame
        return set(hits)

    def _settle_cached(self, run: _Run, periods: list[Period], hits: set[str]) -> set[str]:
        """Serve the final cached periods; send a short one whose gaps no recorded state
        explains (a file written before states existed) to the re-check, like a provisional.

        A final file's recorded gaps become evidence for the report (confirmed, by whom).
        """
        inst = run.instrument
        key = (inst.market_type, inst.symbol, run.interval)
        run.first_bar_ms = self._first_bar.get(key)
        frame = run.cache_frame
        if frame is None or not hits:
            return hits
        counts = _bars_per_period(frame, run.interval)
        demoted: list[Period] = []
        for period in periods:
            if period.key not in hits:
                continue
            expected = run.interval.count(self._expect_from(run, period), period.end_ms)
            have = counts.get(period.start_ms, 0)
            if have >= expected:
                continue
            state = self.cache.read_state(inst.market_type, inst.symbol, run.interval, period.key)
            recorded = (
                0
                if state is None
                else sum(run.interval.count(g.start_ms, g.end_ms) for g in state.gaps)
            )
            if state is not None and state.recorded and have + recorded >= expected:
                run.gap_evidence.extend(
                    (g.start_ms, g.end_ms, kinds(g.missing_in)) for g in state.gaps
                )
                continue
            demoted.append(period)
        if demoted:
            opens = pl.col("open_time").dt.epoch("ms")
            for period in demoted:
                inside = (opens >= period.start_ms) & (opens < period.end_ms)
                unrecorded = PeriodState(final=False, recorded=False)
                run.provisional[period.key] = (frame.filter(inside), unrecorded)
                frame = frame.filter(~inside)
                hits.discard(period.key)
            log.info(
                "%s %s: %d short cached period(s) without a recorded state (%s); re-checking",
                inst.symbol,
                run.interval.value,
                len(demoted),
                ", ".join(p.key for p in demoted),
            )
        if frame.height:
            self._add(run, frame, "cache")
        return hits

    def _expect_from(self, run: _Run, period: Period) -> int:
        """Where the grid's expected bars of a period begin: after the first bar, when known."""
        first = run.first_bar_ms
        return max(period.start_ms, first) if first is not None else period.start_ms

    async def _find_listing(
        self, run: _Run, periods: list[Period]
    ) -> tuple[int | None, int | None]:
        """The symbol's first bar ever: from memory, the cache's sidecar, or one REST call.

        Returns ``(listing_ms, not_before_ms)``: the listing when it is after the requested
        start (reported), and the time before which no period needs requesting. Asking from
        epoch 0 rather than from ``start`` keeps an outage at the start of the range a gap
        instead of mistaking it for a listing. The same call turns an unknown symbol into one
        :class:`UnknownSymbol` before any Vision request. The answer is kept in the cache, so a
        warm fetch counts the bars of a listing day exactly as the cold one did, offline too.
        A sidecar is only a shortcut, never evidence on its own: cached bars before it discard
        it, and a range it puts wholly before the listing (zero bars expected) is confirmed
        with the REST probe when REST is reachable.
        """
        if not periods:
            return None, None
        inst, interval = run.instrument, run.interval
        first, probed = self._known_first_bar(run)
        cached_first = run.cached_first_ms
        if first is not None and not probed and cached_first is not None and cached_first < first:
            self._forget_first_bar(
                run,
                f"contradicted by a cached bar at {iso_ms(cached_first)} before its first bar "
                f"{iso_ms(first)}",
            )
            first = None
        if first is None:
            if run.cached_first_ms is not None and run.cached_first_ms <= interval.ceil_ms(
                run.start_ms
            ):
                return None, None  # a bar at or before the start exists: no listing to find
            if not self.use_rest:
                return None, None
            try:
                first = await self._probe_first_bar(run)
            except SourceError as exc:
                run.warnings.append(f"could not look up the first bar ({exc}); listing not checked")
                return None, None
            if first is not None:
                self._remember_first_bar(run, first)
        elif not probed and first >= run.stop_ms:
            # Zero bars would be expected on the sidecar's word alone: confirm with one probe.
            first = await self._confirm_first_bar(run, first)
        if first is None or first >= run.stop_ms:
            # Nothing at all in the range: request nothing rather than search period by period.
            what = (
                "has no bars at or after"
                if first is None
                else f"has its first bar at {iso_ms(first)}, after"
            )
            run.warnings.append(
                f"{inst.instrument_id} {what} the requested range "
                f"{iso_ms(run.start_ms)}..{iso_ms(run.stop_ms)}; nothing was requested"
            )
            if first is None:
                return None, run.stop_ms
            return first, run.stop_ms
        if first <= interval.ceil_ms(run.start_ms):
            return None, None
        before = interval.count(run.start_ms, first)
        run.warnings.append(
            f"{inst.instrument_id} has no data before {iso_ms(first)} (first bar); {before} bars "
            "requested before it are not counted as missing"
        )
        return first, first

    async def _confirm_first_bar(self, run: _Run, cached: int) -> int | None:
        """The REST probe's first bar in place of the sidecar's; the sidecar's (with a warning)
        when REST is disabled or unreachable, so offline fetches still count as before."""
        unconfirmed = (
            f"{run.instrument.instrument_id} first bar {iso_ms(cached)} is taken from the cache "
            "unconfirmed: "
        )
        if not self.use_rest:
            run.warnings.append(unconfirmed + "REST is disabled")
            return cached
        try:
            first = await self._probe_first_bar(run)
        except SourceError as exc:
            run.warnings.append(unconfirmed + f"REST could not be asked ({exc})")
            return cached
        if first != cached:
            served = "no bars" if first is None else f"first bar {iso_ms(first)}"
            self._forget_first_bar(run, f"contradicted by REST ({served})")
            if first is not None:
                self._remember_first_bar(run, first)
        return first

    async def _probe_first_bar(self, run: _Run) -> int | None:
        """One REST request for the first bar ever (from epoch 0), marked as probed."""
        inst = run.instrument
        t0 = time.perf_counter()
        try:
            first = await self.rest_client(inst.market_type).first_open_time(
                inst.symbol, run.interval, 0
            )
        finally:
            run.timings["rest"] += time.perf_counter() - t0
        self._first_bar_probed.add((inst.market_type, inst.symbol, run.interval))
        return first

    def _known_first_bar(self, run: _Run) -> tuple[int | None, bool]:
        """``(first, probed)``: the remembered first bar and whether this manager probed it."""
        inst = run.instrument
        key = (inst.market_type, inst.symbol, run.interval)
        first = self._first_bar.get(key)
        if first is None and self.use_cache:
            t0 = time.perf_counter()
            first = self.cache.read_first_bar(
                inst.market_type, inst.symbol, run.interval, endpoint=self._rest_endpoint(run)
            )
            run.timings["cache"] += time.perf_counter() - t0
            if first is not None:
                self._first_bar[key] = first
        return first, first is not None and key in self._first_bar_probed

    def _remember_first_bar(self, run: _Run, first: int) -> None:
        inst = run.instrument
        self._first_bar[(inst.market_type, inst.symbol, run.interval)] = first
        if not self.use_cache:
            return
        try:
            self.cache.write_first_bar(
                inst.market_type,
                inst.symbol,
                run.interval,
                first,
                endpoint=self._rest_endpoint(run),
            )
        except (OSError, InvalidInput) as exc:  # a lost shortcut: the next fetch asks again
            log.warning("could not record the first bar of %s in the cache: %s", inst.symbol, exc)

    def _forget_first_bar(self, run: _Run, why: str) -> None:
        """Drop a first bar that evidence contradicts: from memory and (counted) the cache."""
        inst = run.instrument
        self._first_bar.pop((inst.market_type, inst.symbol, run.interval), None)
        if self.use_cache:
            self.cache.discard_first_bar(inst.market_type, inst.symbol, run.interval, why)

    def _rest_endpoint(self, run: _Run) -> str:
        # The listing is per server: a testnet or mirror may list a symbol later than mainnet.
        return rest_base_url(run.instrument.market_type, self.base_url_http)

    async def _vision_month(self, run: _Run, month: MonthGroup) -> None:
        inst = run.instrument
        t0 = time.perf_counter()
        try:
            frame = await self.vision_client(inst.market_type).monthly(
                inst.symbol, run.interval, month.year, month.month
            )
            reason = "404"
        except SourceError as exc:
            frame, reason = None, str(exc)
        finally:
            run.timings["vision"] += time.perf_counter() - t0
        if frame is None:
            # Monthly files appear days after the month ends; the daily files come first.
            log.info(
                "Vision monthly %s %s unavailable (%s); using daily files",
                inst.symbol,
                month.key,
                reason,
            )
            await gather_or_cancel([self._vision_day(run, day) for day in month.days])
            return
        opens = pl.col("open_time").dt.epoch("ms")
        inside = frame.filter((opens >= month.days[0].start_ms) & (opens < month.days[-1].end_ms))
        self._note_outside(run, frame.height - inside.height, f"Vision monthly {month.key}")
        jobs: list[Awaitable[None]] = []
        for day in month.days:
            part = inside.filter((opens >= day.start_ms) & (opens < day.end_ms))
            ev = self._evidence(run, day)
            clean = self._clean(run, day, part, "vision")
            ev.add(clean, VISION_MONTHLY, "vision", day.start_ms, day.end_ms)
            # A day the monthly zip lacks bars of goes on to its daily zip and REST.
            jobs.append(self._complete(run, day, ev))
        await gather_or_cancel(jobs)

    async def _daily_file(self, run: _Run, period: Period) -> tuple[pl.DataFrame | None, str]:
        """The Vision daily zip of a period (clean), or None and why not."""
        inst = run.instrument
        t0 = time.perf_counter()
        try:
            frame = await self.vision_client(inst.market_type).daily(
                inst.symbol, run.interval, period.day
            )
            reason = "not on Vision (404)"
        except SourceError as exc:
            frame, reason = None, f"Vision refused ({exc})"
        finally:
            run.timings["vision"] += time.perf_counter() - t0
        if frame is None:
            return None, reason
        return self._clean(run, period, frame, "vision"), reason

    async def _vision_day(self, run: _Run, period: Period) -> None:
        inst = run.instrument
        frame, reason = await self._daily_file(run, period)
        ev = self._evidence(run, period)
        ev.tried.add(VISION)
        if frame is not None:
            ev.add(frame, VISION, "vision", period.start_ms, period.end_ms)
            await self._complete(run, period, ev)
        elif self.use_rest:
            log.info("%s %s: %s; using REST", inst.symbol, period.key, reason)
            await self._rest_period(run, period, cache=True, ev=ev)
        elif reason.startswith("not on Vision"):
            run.warnings.append(f"{period.key}: {reason} and REST is disabled; counted as missing")
            run.advance()
        else:
            run.failures.append(f"{period.key} ({reason}; REST is disabled)")
            run.advance()

    async def _rest_period(
        self, run: _Run, period: Period, *, cache: bool, ev: Evidence | None = None
    ) -> None:
        inst = run.instrument
        if not self.use_rest:
            run.warnings.append(
                f"{period.key}: the open period needs REST, which is disabled; counted as missing"
            )
            run.advance()
            return
        if cache and not self._worth_whole(run, period):
            cache = False
        # A closed period is fetched whole (and cached); the open one only as far as requested.
        lo = period.start_ms if cache else max(period.start_ms, run.start_ms)
        hi = period.end_ms if cache else min(period.end_ms, run.stop_ms)
        t0 = time.perf_counter()
        try:
            frame = await self.rest_client(inst.market_type).klines(
                inst.symbol, run.interval, lo, hi, now_ms=run.now_ms
            )
        except SourceError as exc:
            run.failures.append(f"{period.key} (REST: {exc})")
            run.rate_limited |= isinstance(exc, RateLimited)
            if isinstance(exc, InvalidResponse):  # exchange-clock/live hunk (trust-h3)
                run.invalid.append(exc)
            run.advance()
            return
        finally:
            run.timings["rest"] += time.perf_counter() - t0
        if not cache:
            self._store(run, period, frame, "rest")
            return
        ev = ev if ev is not None else self._evidence(run, period)
        ev.tried.add(REST)
        ev.add(self._clean(run, period, frame, "rest"), REST, "rest", lo, hi)
        await self._complete(run, period, ev)

    async def _recheck(self, run: _Run, period: Period) -> None:
        """A provisional cached period: serve its bars, ask the sources that did not confirm
        its gaps for the missing bars only, and cache it final once complete or confirmed."""
        frame, state = run.provisional[period.key]
        ev = Evidence.from_cache(run.interval, period, self._expect_from(run, period), frame, state)
        await self._complete(run, period, ev)

    def _evidence(self, run: _Run, period: Period) -> Evidence:
        return Evidence(run.interval, period, self._expect_from(run, period))

    async def _complete(self, run: _Run, period: Period, ev: Evidence) -> None:
        """Ask the sources for what the period still lacks, then cache it once: final when
        complete or every gap is lacked by Vision and REST, else provisional.

        An unconfirmed gap is asked of every enabled source, each at most once per fetch: first
        the sources that have not lacked it (the daily zip, then REST for the missing open times
        only), then, for what is still missing, the ones that lacked it before. One source's
        lack is no evidence (a transiently short page), so a gap only one source lacked is
        re-asked by every later fetch; a gap two sources lacked is confirmed and never asked.
        """
        for again in (False, True):
            await self._ask_vision(run, period, ev, again=again)
            await self._ask_rest(run, period, ev, again=again)
        self._finish(run, period, ev, ev.state())

    async def _ask_vision(self, run: _Run, period: Period, ev: Evidence, *, again: bool) -> None:
        """The daily zip for the period's unconfirmed gaps, once per fetch; on the first pass
        only when one of them is a gap Vision has not lacked yet."""
        open_gaps = unconfirmed(ev.state())
        if (
            not open_gaps
            or not self.use_vision
            or period.yearly
            or VISION in ev.tried
            or not (again or any(VISION not in g.missing_in for g in open_gaps))
        ):
            return
        ev.tried.add(VISION)
        frame, reason = await self._daily_file(run, period)
        if frame is not None:
            ev.add(frame, VISION, "vision", period.start_ms, period.end_ms)
        else:
            log.info("%s %s: %s for its missing bars", run.instrument.symbol, period.key, reason)

    async def _ask_rest(self, run: _Run, period: Period, ev: Evidence, *, again: bool) -> None:
        """REST for the missing open times of the unconfirmed gaps not yet asked of it in this
        fetch; on the first pass only the gaps REST has not lacked yet."""
        if not self.use_rest:
            return
        ask = [
            g
            for g in unconfirmed(ev.state())
            if not ev.was_asked(REST, g) and (again or REST not in g.missing_in)
        ]
        if not ask:
            return
        for gap in ask:
            ev.mark_asked(REST, gap.start_ms, gap.end_ms)
        answers = await gather_or_cancel(
            [self._rest_range(run, period, g.start_ms, g.end_ms) for g in ask]
        )
        for gap, frame in zip(ask, answers, strict=True):
            if frame is not None:
                ev.add(frame, REST, "rest", gap.start_ms, gap.end_ms)

    async def _rest_range(self, run: _Run, period: Period, lo: int, hi: int) -> pl.DataFrame | None:
        """REST for the missing open times ``[lo, hi)`` of a closed period (clean), or None
        (with a warning) when REST fails: the period then stays provisional."""
        inst = run.instrument
        t0 = time.perf_counter()
        try:
            frame = await self.rest_client(inst.market_type).klines(
                inst.symbol, run.interval, lo, hi, now_ms=run.now_ms
            )
        except SourceError as exc:
            run.warnings.append(
                f"{period.key}: REST could not be asked for the missing bars "
                f"{iso_ms(lo)}..{iso_ms(hi)} ({exc}); served as they are, the next fetch asks "
                "again"
            )
            return None
        finally:
            run.timings["rest"] += time.perf_counter() - t0
        opens = pl.col("open_time").dt.epoch("ms")
        clean = self._clean(run, period, frame, "rest")
        return clean.filter((opens >= lo) & (opens < hi))

    def _finish(self, run: _Run, period: Period, ev: Evidence, state: PeriodState) -> None:
        bars = ev.bars()
        if self.use_cache and ev.needs_write(state):
            stored = bars.select(COLUMNS) if bars is not None else empty_frame()
            self._cache_write(run, period, stored, state)
        run.gap_evidence.extend((g.start_ms, g.end_ms, kinds(g.missing_in)) for g in state.gaps)
        if not state.final and self.use_cache:  # without a cache there is nothing to re-check
            run.provisional_left.append(period.key)
            if not self._can_confirm(period):
                run.provisional_stuck.append(period.key)
        if bars is not None and bars.height:
            run.frames.append(bars)
        run.advance()

    def _cache_write(
        self, run: _Run, period: Period, frame: pl.DataFrame, state: PeriodState
    ) -> None:
        """Cache one period; a cache that cannot take it costs the entry, never the bars."""
        inst = run.instrument
        t0 = time.perf_counter()
        try:
            self.cache.write(
                inst.market_type, inst.symbol, run.interval, period.key, frame, state=state
            )
        except (CacheUnwritable, InvalidInput) as exc:
            if not run.uncached:
                run.uncached_why = str(exc)
            run.uncached.append(period.key)
        finally:
            run.timings["cache"] += time.perf_counter() - t0

    def _can_confirm(self, period: Period) -> bool:
        """True when two independent sources (Vision and REST) are enabled for the period, so
        its gaps can be confirmed; otherwise they are only ever asked again."""
        return self.use_vision and self.use_rest and not period.yearly

    @staticmethod
    def _note_trust(run: _Run) -> None:
        """One warning each for periods left provisional and periods that were not cached."""
        if run.provisional_left:
            keys = sorted(run.provisional_left)
            stuck = set(run.provisional_stuck)
            text = (
                f"{len(keys)} period(s) cached as provisional ({_listed(keys)}): their missing "
                "bars are not confirmed missing by both Vision and REST; every later fetch asks "
                "the enabled sources again for them"
            )
            if stuck == set(keys):
                text += (
                    " (no second enabled source can confirm them: a REST-only period, or a "
                    "source is disabled)"
                )
            elif stuck:
                text += (
                    f" (no second enabled source can confirm {_listed(sorted(stuck))}: a "
                    "REST-only period, or a source is disabled)"
                )
            run.warnings.append(text)
        if run.uncached:
            keys = sorted(run.uncached)
            message = (
                f"{len(keys)} period(s) could not be cached ({_listed(keys)}): {run.uncached_why}"
            )
            run.warnings.append(message)
            log.warning(message)

    @staticmethod
    def _worth_whole(run: _Run, period: Period) -> bool:
        """Fetch a closed period whole from REST (to cache it) unless that costs many pages.

        A live poll just after midnight asks for a few 1s bars of yesterday, which Vision has
        not published yet; the whole day would be 87 pages. Then only the requested part is
        fetched, and not cached (a later request or Vision completes the day).
        """
        if run.start_ms <= period.start_ms and period.end_ms <= run.stop_ms:
            return True
        limit = ENDPOINTS[run.instrument.market_type].kline_limit
        return run.interval.count(period.start_ms, period.end_ms) <= 2 * limit

    def _clean(self, run: _Run, period: Period, frame: pl.DataFrame, where: str) -> pl.DataFrame:
        """A source's frame sorted, unique and inside the period (what it sent is counted)."""
        clean, duplicates, out_of_order = normalise(frame.select(COLUMNS))
        run.duplicates += duplicates
        run.out_of_order += out_of_order
        opens = pl.col("open_time").dt.epoch("ms")
        inside = clean.filter((opens >= period.start_ms) & (opens < period.end_ms))
        self._note_outside(run, clean.height - inside.height, f"{where} {period.key}")
        return inside

    def _store(self, run: _Run, period: Period, frame: pl.DataFrame, source: Source) -> None:
        """The open period (or a partial closed one): served, never cached."""
        self._add(run, self._clean(run, period, frame, source), source)
        run.advance()

    @staticmethod
    def _note_outside(run: _Run, n: int, where: str) -> None:
        if n:
            run.warnings.append(
                f"{where}: {n} row(s) with open times outside the file's period were ignored"
            )

    @staticmethod
    def _add(run: _Run, frame: pl.DataFrame, source: Source) -> None:
        run.frames.append(frame.with_columns(pl.lit(source).alias(_SOURCE_COL)))

    @staticmethod
    def _merge(run: _Run) -> tuple[pl.DataFrame, dict[str, int]]:
        if not run.frames:
            return empty_frame(), {}
        opens = pl.col("open_time").dt.epoch("ms")
        merged = (
            pl.concat(run.frames, how="vertical")
            .filter((opens >= run.start_ms) & (opens < run.stop_ms))
            .sort("open_time", maintain_order=True)
        )
        unique = merged.unique(subset="open_time", keep="first", maintain_order=True)
        run.duplicates += merged.height - unique.height
        counts = unique.get_column(_SOURCE_COL).value_counts()
        sources = {str(s): int(n) for s, n in counts.iter_rows()}
        return unique.select(COLUMNS), sources

    def _vision_endpoint(self, market_type: MarketType) -> str | None:
        if not self.use_vision:
            return None
        host = (self.base_url_vision or DEFAULT_VISION_URL).rstrip("/")
        return f"{host}/{ENDPOINTS[market_type].vision_prefix}"


def _listed(keys: list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def _bars_per_period(frame: pl.DataFrame, interval: Interval) -> dict[int, int]:
    """Bars per period start (epoch ms) of a cached frame."""
    if frame.height == 0:
        return {}
    opens = frame.get_column("open_time")
    if is_yearly(interval):
        starts = opens.dt.truncate("1y").dt.epoch("ms")
    else:
        starts = opens.dt.epoch("ms") // 86_400_000 * 86_400_000
    counts = starts.value_counts()
    return {int(k): int(n) for k, n in counts.iter_rows()}


def endpoint_cache_dir(base_url_http: str | None, base_url_vision: str | None) -> Path:
    """The default cache dir for these endpoints: Binance's own get the user cache dir itself.

    Overridden endpoints (a testnet, a mirror, the local imitation) get a sub-directory named
    after their hosts, so their bars never mix with Binance's in the user's default cache. An
    explicit ``cache_dir`` is used as given: one directory should hold one source's data.
    """
    root = default_cache_dir()
    if base_url_http is None and base_url_vision is None:
        return root
    key = f"{base_url_http or '-'}|{base_url_vision or '-'}".rstrip("/")
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    hosts = "_".join(
        re.sub(r"[^A-Za-z0-9.-]+", "-", urlsplit(url).netloc or "default")
        for url in (base_url_http, base_url_vision)
        if url is not None
    )
    return root / "endpoints" / f"{hosts[:60]}-{digest}"
