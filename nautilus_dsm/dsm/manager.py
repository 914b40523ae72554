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

Apart: the cache and clients per market (``sources``, the manager's base), exchange "now"
(``fetch_time``), the state of one fetch (``fetch_run``), the first bar of a series
(``listing``), the per-period chain cache -> Vision -> REST (``chain``) and the default cache
root (``cache_paths``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

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
    iso_ms,
    parse_instant,
    resolve_instrument,
    rest_base_url,
)
from nautilus_dsm.dsm.cache import KlineCache
from nautilus_dsm.dsm.chain import PeriodChain
from nautilus_dsm.dsm.exchange_clock import DEFAULT_RESYNC_S
from nautilus_dsm.dsm.fetch_run import FetchRun, ProgressCallback
from nautilus_dsm.dsm.fetch_time import fetch_now_ms, prove_recent
from nautilus_dsm.dsm.http import gather_or_cancel
from nautilus_dsm.dsm.listing import ListingLookup
from nautilus_dsm.dsm.planner import FetchPlan, Period, closed_end_ms, periods_for, plan_fetch
from nautilus_dsm.dsm.quality import QualityReport, below_threshold_message
from nautilus_dsm.dsm.settings import DEFAULT_EXCHANGE_INFO_TTL_S, SourceSettings
from nautilus_dsm.dsm.sources import MarketSources
from nautilus_dsm.errors import DSMError, InvalidInput, QualityBelowThreshold

log = logging.getLogger(__name__)


class FetchInsideEventLoop(DSMError, RuntimeError):
    """``fetch_sync`` was called from code already running an event loop."""


@dataclass(slots=True)
class FetchResult:
    """The bars of a fetch, their quality report, the resolved instrument and the interval."""

    frame: pl.DataFrame
    report: QualityReport
    instrument: ResolvedInstrument
    interval: Interval


class DataSourceManager(MarketSources):
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
        super().__init__(settings, cache=cache, clock=clock)
        self.market_type = settings.market_type
        self.max_rows = settings.max_rows
        self.min_completeness = settings.min_completeness
        self.on_low_quality = settings.on_low_quality
        # The first bar of each series (memory + the cache's sidecar) and the per-period chain;
        # both read this manager's switches and clients on every use.
        self._listing = ListingLookup(self)
        self._chain = PeriodChain(self)

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
        threshold, policy = call.min_completeness, call.on_low_quality

        run, periods = await self._start_run(
            instrument, interval, start_ms, end_ms, call.max_rows, progress
        )
        plan, listing_ms = await self._plan(run, periods)
        await self._serve(run, plan)
        run.note_trust()
        run.raise_failures()

        frame, sources = run.merge()
        run.timings["total"] = time.perf_counter() - started
        market = instrument.market_type
        report = run.report(
            frame,
            sources,
            plan,
            listing_ms,
            endpoint_http=rest_base_url(market, self.base_url_http) if self.use_rest else None,
            endpoint_vision=self._vision_endpoint(market),
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

    async def _start_run(
        self,
        instrument: ResolvedInstrument,
        interval: Interval,
        start_ms: int,
        end_ms: int,
        max_rows: int,
        progress: ProgressCallback | None,
    ) -> tuple[FetchRun, list[Period]]:
        """Start a run and split it into periods; refuse a start in the future or too many rows.

        Exchange time decides what is closed (the end cap, the cache and the REST filter).
        """
        market = instrument.market_type
        clock = self.exchange_clock(market)
        now_ms = await fetch_now_ms(clock, self._clock(), interval, end_ms)
        now_ms = await prove_recent(clock, market, interval, start_ms, end_ms, now_ms)
        check_not_future(start_ms, now_ms)
        stop_ms = max(start_ms, closed_end_ms(interval, end_ms, now_ms))
        check_row_cap(interval, start_ms, stop_ms, max_rows, instrument.instrument_id)
        periods = periods_for(interval, start_ms, stop_ms)
        run = FetchRun(instrument, interval, start_ms, stop_ms, now_ms, len(periods), progress)
        if stop_ms < end_ms:
            run.warnings.append(
                f"end {iso_ms(end_ms)} is after the last closed bar; capped at "
                f"{iso_ms(stop_ms)} (bars still forming are never returned)"
            )
        return run, periods

    async def _plan(self, run: FetchRun, periods: list[Period]) -> tuple[FetchPlan, int | None]:
        """Read the cache, find the listing, and assign each period a source.

        The listing is returned too, for the report.
        """
        cached_keys = self._chain.read_cache(run, periods)
        listing_ms, not_before_ms = await self._listing.find(run, periods)
        run.first_bar_ms = self._listing.remembered(run)
        cached_keys = self._chain.settle_cached(run, periods, cached_keys)
        plan = plan_fetch(
            run.interval,
            periods,
            run.now_ms,
            cached_keys,
            not_before_ms=not_before_ms,
            use_vision=self.use_vision,
            provisional_keys=set(run.provisional),
        )
        run.advance(len(plan.cached) + len(plan.skipped))
        return plan, listing_ms

    async def _serve(self, run: FetchRun, plan: FetchPlan) -> None:
        """Fetch every planned period concurrently (each through its source chain)."""
        chain = self._chain
        jobs: list[Awaitable[None]] = [chain.vision_month(run, m) for m in plan.vision_months]
        jobs += [chain.vision_day(run, p) for p in plan.vision_days]
        jobs += [chain.rest_period(run, p, cache=True) for p in plan.rest_closed]
        jobs += [chain.recheck(run, p) for p in plan.recheck]
        jobs += [chain.rest_period(run, p, cache=False) for p in plan.open]
        await gather_or_cancel(jobs)

    def _vision_endpoint(self, market_type: MarketType) -> str | None:
        if not self.use_vision:
            return None
        host = (self.base_url_vision or DEFAULT_VISION_URL).rstrip("/")
        return f"{host}/{ENDPOINTS[market_type].vision_prefix}"
