"""Funding history through cache -> Vision monthly ``fundingRate`` -> REST, with its report.

The request is split into UTC calendar months (Vision publishes funding monthly only). A closed
month is served from the cache when there, else from its Vision file (SHA-256 checked), else
(404, refused file) from REST paged by time; the month still open is asked of REST only. A
closed month whose own report shows no gap and no unknown interval is cached. The merged rows
are sorted, one per boundary (repeats counted), REST rows get their interval from the spacing
of their neighbours, and :func:`~nautilus_dsm.dsm.funding_quality.assess_funding` reports the
expected events, gaps, interval changes and off-boundary events. No row is invented.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import polars as pl

from nautilus_dsm.common import (
    Interval,
    MarketType,
    ResolvedInstrument,
    check_not_future,
    check_range,
    iso_ms,
    parse_instant,
    resolve_instrument,
)
from nautilus_dsm.common.datasets import Dataset
from nautilus_dsm.dsm.funding_cache import FundingCache
from nautilus_dsm.dsm.funding_quality import FundingQualityReport, assess_funding
from nautilus_dsm.dsm.funding_rest import FUNDING_WINDOW, FundingRest, RequestWindow
from nautilus_dsm.dsm.funding_schema import (
    FUNDING_COLUMNS,
    empty_funding,
    infer_intervals,
    normalise_funding,
)
from nautilus_dsm.dsm.http import gather_or_cancel
from nautilus_dsm.dsm.sources import MarketSources
from nautilus_dsm.errors import CacheUnwritable, DataUnavailable, SourceError

log = logging.getLogger(__name__)

SOURCE_COL = "_source"


@dataclass(slots=True)
class FundingResult:
    """The funding rows of a fetch (FUNDING_SCHEMA), their report and the instrument."""

    frame: pl.DataFrame
    report: FundingQualityReport
    instrument: ResolvedInstrument


@dataclass(frozen=True, slots=True)
class _Month:
    key: str  # YYYY-MM
    year: int
    month: int
    start_ms: int
    end_ms: int


def months_for(start_ms: int, end_ms: int) -> list[_Month]:
    """Return the calendar months overlapping ``[start_ms, end_ms)``. Pure."""
    month_iv = Interval.MONTH_1
    out: list[_Month] = []
    cursor = month_iv.floor_ms(start_ms)
    while cursor < end_ms:
        nxt = month_iv.next_open_ms(cursor)
        stamp = time.gmtime(cursor // 1000)
        out.append(
            _Month(
                f"{stamp.tm_year:04d}-{stamp.tm_mon:02d}", stamp.tm_year, stamp.tm_mon, cursor, nxt
            )
        )
        cursor = nxt
    return out


def with_intervals(frame: pl.DataFrame) -> pl.DataFrame:
    """Fill null intervals (REST rows) from the spacing of neighbouring boundaries."""
    hours = frame.get_column("funding_interval_hours").to_list()
    if None not in hours:
        return frame
    times = frame.get_column("funding_time").dt.epoch("ms").to_list()
    filled = infer_intervals(times, hours)
    return frame.with_columns(pl.Series("funding_interval_hours", filled, dtype=pl.Int64()))


class FundingFetcher:
    """
    Fetch funding rows for a manager's sources.

    Parameters
    ----------
    sources : MarketSources
        The manager: its cache root, switches and per-market clients (read on every use).

    """

    def __init__(self, sources: MarketSources) -> None:
        self._sources = sources
        # One fundingRate request window per market host (Binance counts it per IP).
        self._windows: dict[MarketType, RequestWindow] = {}

    def cache(self) -> FundingCache:
        """Return the funding cache under the manager's cache root."""
        return FundingCache(self._sources.cache.root)

    def rest(self, market: MarketType) -> FundingRest:
        """Return the market's funding REST pager (its window shared across fetches)."""
        window = self._windows.setdefault(market, RequestWindow(*FUNDING_WINDOW))
        return FundingRest(self._sources.rest_client(market), window)

    async def fetch(
        self, instrument: ResolvedInstrument, start_ms: int, end_ms: int, now_ms: int
    ) -> FundingResult:
        """Return the funding events with boundary in ``[start_ms, min(end_ms, now_ms))``."""
        Dataset.FUNDING_RATES.check_market(instrument.market_type)
        stop_ms = min(end_ms, now_ms)
        warnings: list[str] = []
        if stop_ms < end_ms:
            warnings.append(f"end {iso_ms(end_ms)} is after now; capped at {iso_ms(stop_ms)}")
        months = months_for(start_ms, stop_ms) if stop_ms > start_ms else []
        failures: list[str] = []
        frames = await gather_or_cancel(
            [self._month(instrument, m, now_ms, warnings, failures) for m in months]
        )
        if failures:
            raise DataUnavailable(
                f"{instrument.instrument_id} funding: {len(failures)} month(s) could not be "
                f"fetched from any source: {'; '.join(failures)}; check the network and "
                "base_url_http / base_url_vision, or narrow the range"
            )
        parts = [f for f in frames if f is not None and f.height]
        merged = (
            pl.concat(parts)
            if parts
            else empty_funding().with_columns(pl.lit(None, pl.String()).alias(SOURCE_COL))
        )
        merged, duplicates = normalise_funding(merged)
        merged = with_intervals(merged)
        times = pl.col("funding_time").dt.epoch("ms")
        merged = merged.filter((times >= start_ms) & (times < stop_ms))
        sources = {"cache": 0, "vision": 0, "rest": 0}
        for name, count in merged.get_column(SOURCE_COL).value_counts().iter_rows():
            if name is not None:
                sources[name] = int(count)
        frame = merged.select(FUNDING_COLUMNS)
        count_from = await self._listing(instrument, frame, start_ms, warnings)
        report = assess_funding(
            frame,
            start_ms,
            stop_ms,
            listing_ms=count_from if count_from > start_ms else None,
            instrument_id=instrument.instrument_id,
            symbol=instrument.symbol,
            market_type=instrument.market_type,
            sources=sources,
            duplicates_removed=duplicates,
            warnings=warnings,
        )
        return FundingResult(frame, report, instrument)

    async def _listing(
        self,
        instrument: ResolvedInstrument,
        frame: pl.DataFrame,
        start_ms: int,
        warnings: list[str],
    ) -> int:
        """Return where expected events begin: the start, or the first event ever after it.

        Asked of REST (one request) only when the first event served lies a whole interval or
        more after the start, so a listing inside the range is not reported as a gap; a probe
        that fails leaves the start (the leading stretch then counts as missing).
        """
        if frame.height == 0 or not self._sources.use_rest:
            return start_ms
        first = int(frame.get_column("funding_time").dt.epoch("ms")[0])
        hours = frame.get_column("funding_interval_hours")[0]
        if hours is None or first - start_ms < hours * 3_600_000:
            return start_ms
        try:
            listed = await self.rest(instrument.market_type).first_event_ms(instrument.symbol)
        except SourceError as exc:
            warnings.append(f"could not look up the first funding event ({exc}); not checked")
            return start_ms
        if listed != first:
            return start_ms
        warnings.append(
            f"{instrument.instrument_id} has no funding before {iso_ms(first)} (its first "
            "event); the time before it is not counted as missing"
        )
        return first

    async def _month(
        self,
        instrument: ResolvedInstrument,
        month: _Month,
        now_ms: int,
        warnings: list[str],
        failures: list[str],
    ) -> pl.DataFrame | None:
        """One month from the first source that has it, tagged with that source."""
        src = self._sources
        market, symbol = instrument.market_type, instrument.symbol
        closed = month.end_ms <= now_ms
        if closed and src.use_cache:
            cached = self.cache().read(market, symbol, month.key, month.start_ms, month.end_ms)
            if cached is not None:
                return _tag(cached, "cache")
        frame, source = None, "vision"
        if closed and src.use_vision:
            try:
                frame = await src.vision_client(market).funding_month(
                    symbol, month.year, month.month
                )
                why = "not on Vision (404)"
            except SourceError as exc:
                why = f"Vision refused ({exc})"
            if frame is None:
                log.info("%s funding %s: %s; using REST", symbol, month.key, why)
        if frame is None:
            if not src.use_rest:
                warnings.append(f"funding {month.key}: not served by Vision and REST is disabled")
                return None
            source = "rest"
            try:
                frame = await self.rest(market).funding(
                    symbol, month.start_ms, min(month.end_ms, now_ms)
                )
            except SourceError as exc:
                failures.append(f"{month.key} (REST: {exc})")
                return None
        frame, _ = normalise_funding(frame)
        frame = with_intervals(frame)
        if closed and src.use_cache:
            self._maybe_cache(instrument, month, frame, warnings)
        return _tag(frame, source)

    def _maybe_cache(
        self,
        instrument: ResolvedInstrument,
        month: _Month,
        frame: pl.DataFrame,
        warnings: list[str],
    ) -> None:
        """Cache a closed month when its own report shows nothing missing or unknown."""
        if frame.height == 0:
            return
        report = assess_funding(frame, month.start_ms, month.end_ms)
        if report.gaps or report.unknown_intervals:
            return
        try:
            self.cache().write(instrument.market_type, instrument.symbol, month.key, frame)
        except CacheUnwritable as exc:
            warnings.append(str(exc))


def _tag(frame: pl.DataFrame, source: str) -> pl.DataFrame:
    return frame.select(FUNDING_COLUMNS).with_columns(pl.lit(source).alias(SOURCE_COL))


class FundingRatesMixin:
    """``fetch_funding_rates`` (and its blocking twin) of :class:`DataSourceManager`."""

    market_type: MarketType | None
    _funding: FundingFetcher
    _clock: Callable[[], int]

    if TYPE_CHECKING:  # provided by DataSourceManager and MarketSources (never shadowed)

        def _run_sync[T](self, name: str, job: Coroutine[Any, Any, T]) -> T: ...

        async def exchange_now_ms(self, market_type: MarketType | str) -> int:
            """Return Binance's time now on the market (see ``MarketSources``)."""

    def fetch_funding_rates_sync(
        self, instrument_id_or_symbol: str, start: datetime | str, end: datetime | str
    ) -> FundingResult:
        """Blocking :meth:`fetch_funding_rates`; refuses to run inside a running event loop."""
        return self._run_sync(
            "fetch_funding_rates_sync",
            self.fetch_funding_rates(instrument_id_or_symbol, start, end),
        )

    async def fetch_funding_rates(
        self, instrument_id_or_symbol: str, start: datetime | str, end: datetime | str
    ) -> FundingResult:
        """
        Fetch the funding events with boundary in ``[start, end)``.

        Through cache -> Vision monthly ``fundingRate`` (SHA-256 checked) -> REST
        ``/fapi/v1/fundingRate`` or ``/dapi/v1/fundingRate`` (paged by time, 500 requests per
        5 minutes); see :mod:`nautilus_dsm.dsm.funding_fetch`. ``result.frame`` has
        ``FUNDING_SCHEMA`` (``funding_time`` floored to the boundary, exact ``calc_time``,
        ``funding_interval_hours``, ``funding_rate`` exact, ``mark_price`` where REST gives
        it); ``result.report`` is a :class:`FundingQualityReport`.

        Raises
        ------
        InvalidInput, MarketTypeMismatch
            Before any I/O: a spot instrument, a bad range or a start in the future.
        DataUnavailable
            When a month could not be fetched from any source.

        """
        instrument = resolve_instrument(instrument_id_or_symbol, self.market_type)
        Dataset.FUNDING_RATES.check_market(instrument.market_type)
        start_ms, end_ms = check_range(parse_instant(start, "start"), parse_instant(end, "end"))
        local = self._clock()
        # Only a range reaching near now needs Binance's clock (which month is still open).
        near_now = end_ms > local - 86_400_000
        now_ms = await self.exchange_now_ms(instrument.market_type) if near_now else local
        check_not_future(start_ms, now_ms)
        result = await self._funding.fetch(instrument, start_ms, end_ms, now_ms)
        log.debug("fetched %s", result.report.summary())
        return result
