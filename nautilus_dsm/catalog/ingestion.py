"""The ingest loop: plan every series, check and write instruments, then fetch and write chunks.

:func:`ingest_async` runs in steps: inputs are checked before any I/O; each series (one bar
type) is repaired and planned under its lock (:func:`_plan_series`); every instrument is checked
before any is written or any bar fetched (:func:`~.instruments.load_instruments`); then each
series re-checks its gap-recorded files and writes its chunks as fetched, consolidating each grid
cell (:func:`_write_series`). :func:`ingest` is the blocking twin.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

from nautilus_dsm.catalog.chunks import Recheck, fetch_piece, recheck, rechecks_for, write_piece
from nautilus_dsm.catalog.events import EVENT_DATASETS, EventSeries, ingest_event_series
from nautilus_dsm.catalog.files import (
    DEFAULT_LOCK_TIMEOUT_S,
    parquet_files,
    quarantine_unreadable,
    quarantine_unreadable_in_cells,
    remove_stale_temporaries,
    series_lock_for,
)
from nautilus_dsm.catalog.grid import grid_cell
from nautilus_dsm.catalog.instruments import load_instruments
from nautilus_dsm.catalog.plan import DEFAULT_CHUNK, ChunkPlan, chunk_ms, plan_chunks
from nautilus_dsm.catalog.repair import Written, consolidate_cell, normalize, point_chunks_at_files
from nautilus_dsm.catalog.report import IngestReport, SkippedRange
from nautilus_dsm.common import (
    DataProvider,
    Interval,
    ResolvedInstrument,
    check_range,
    from_ms,
    resolve_instrument,
)
from nautilus_dsm.common.datasets import Dataset
from nautilus_dsm.constants import NS_PER_MS
from nautilus_dsm.dsm.locks import DEFAULT_TTL_S
from nautilus_dsm.errors import InvalidInput, QualityBelowThreshold, SeriesLocked

if TYPE_CHECKING:
    from nautilus_trader.model.instruments import Instrument

    from nautilus_dsm.dsm.locks import SeriesLock
    from nautilus_dsm.dsm.manager import DataSourceManager

ProgressCallback = Callable[[int, int], None]


async def ingest_async(
    catalog: ParquetDataCatalog | str,
    instrument_ids: Sequence[str],
    intervals: Sequence[Interval | str],
    start: datetime,
    end: datetime,
    *,
    dsm: DataSourceManager | None = None,
    chunk: timedelta = DEFAULT_CHUNK,
    progress: ProgressCallback | None = None,
    min_completeness: float | None = None,
    on_low_quality: str | None = None,
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
    datasets: Sequence[Dataset | str] = (Dataset.KLINES,),
    lock_ttl_s: float = DEFAULT_TTL_S,
) -> IngestReport:
    """
    Ingest Binance bars into a Parquet data catalog, resumably and without duplicates.

    :func:`ingest` is the blocking form, for callers outside an event loop.

    Instruments are written first (``catalog.write_data``), then the bars as parquet files in
    the catalog's layout, one file per cell of a fixed grid (UTC months for 1m-30m, days for
    1s, years from 1h; see :func:`grid_cell`) or the part of it requested, fetched ``chunk`` at
    a time. Ranges the catalog already covers (by its file names) are skipped; an interrupted
    run resumes. Each bar type is one series with one writer at a time: an advisory lock
    beside its directory (``<bar_type>.lock``) is held while planning and while writing, so
    concurrent ingests never write a bar twice; files that overlap anyway (written by an older
    version, or by hand) are merged first. A file whose chunk had gaps or klines that cannot be
    bars keeps a record beside it (``<file>.gaps.json``, ignored by NautilusTrader); the next
    run asks the sources again for it and rewrites it when they now have more bars. Klines that
    cannot be bars (high < low...) are reported in :attr:`IngestReport.invalid` and skipped.

    Parameters
    ----------
    catalog : ParquetDataCatalog | str
        The catalog, or a path / URI (``memory:///cat``, ``s3://bucket/cat``...).
    instrument_ids : Sequence[str]
        Nautilus Binance instrument ids, e.g. ``["BTCUSDT-PERP.BINANCE"]``.
    intervals : Sequence[Interval | str]
        Binance intervals, e.g. ``["1m", "1h"]``.
    start, end : datetime
        UTC bar open times ``[start, end)``; end is capped at the last closed bar.
    dsm : DataSourceManager, optional
        The data-source manager (endpoints, cache); a default Binance one when None.
    chunk : timedelta, default 7 days
        Range fetched at a time (bounds memory); file boundaries do not depend on it.
    progress : callable, optional
        ``progress(done_chunks, total_chunks)``.
    min_completeness, on_low_quality : optional
        Per-fetch overrides of the manager's quality policy.
    lock_timeout_s : float, default 60
        How long to wait for another writer of the same bar type before :class:`SeriesLocked`.
    datasets : Sequence[Dataset | str], default ("klines",)
        What to ingest per instrument: ``klines`` (LAST bars), ``mark_price_klines`` (MARK
        bars, ``...-MARK-EXTERNAL``), ``index_price_klines`` (``IndexPriceUpdate`` at each
        close) for every interval, ``funding_rates`` (``FundingRateUpdate``, one series per
        instrument); futures only except klines. Premium-index klines have no Nautilus type
        and are refused. Events are written per month, resumable and exactly once like bars
        (:mod:`nautilus_dsm.catalog.events`).
    lock_ttl_s : float, default 30
        Object stores: a bar type's lock not renewed for this long (its writer died) is
        taken over.

    Returns
    -------
    IngestReport

    Raises
    ------
    InvalidInput
        Bad ids, intervals, range or chunk (before any I/O); an id Binance lists without a
        Nautilus instrument; an instrument the catalog holds at another price or size precision
        than Binance now lists (before any bar is fetched).
    UnknownSymbol
        An id Binance's exchangeInfo does not list (symbols not trading are accepted).
    QualityBelowThreshold
        A chunk is below ``min_completeness`` under the ``raise`` policy; chunks before it are
        written and kept, a re-run resumes from it.
    SeriesLocked
        Another process held a bar type's lock for longer than ``lock_timeout_s``.

    """
    started = time.perf_counter()
    resolved, parsed_intervals, start_ms, end_ms, chunk_length_ms = _checked_inputs(
        instrument_ids, intervals, start, end, chunk
    )
    bar_sets, event_sets = _checked_datasets(datasets, resolved)
    if Dataset.INDEX_PRICE_KLINES in event_sets and len(parsed_intervals) > 1:
        # IndexPriceUpdate has no interval in the catalog: one instrument's updates are one
        # series, so a second interval would read as already ingested (or mix two cadences).
        raise InvalidInput(
            f"index_price_klines are IndexPriceUpdate series without an interval in the "
            f"catalog: ingest them at one interval, not {[iv.value for iv in parsed_intervals]}"
            "; run the index dataset once with the interval you want"
        )
    cat = _as_catalog(catalog)
    owns_dsm = dsm is None
    if dsm is None:
        from nautilus_dsm.dsm.manager import DataSourceManager

        dsm = DataSourceManager.create(DataProvider.BINANCE)
    report = IngestReport(catalog_path=cat.path, start=start, end=end)
    run = _Run(
        cat=cat,
        dsm=dsm,
        report=report,
        start_ms=start_ms,
        end_ms=end_ms,
        chunk_ms=chunk_length_ms,
        now_ms=time.time_ns() // NS_PER_MS,
        lock_timeout_s=lock_timeout_s,
        lock_ttl_s=lock_ttl_s,
        min_completeness=min_completeness,
        on_low_quality=on_low_quality,
    )
    try:
        series = [
            await _plan_series(run, r.instrument_id, iv, ds)
            for r in resolved
            for ds in bar_sets
            for iv in parsed_intervals
        ]
        events = [
            EventSeries(r.instrument_id, ds, None if ds is Dataset.FUNDING_RATES else iv)
            for r in resolved
            for ds in event_sets
            for iv in ([None] if ds is Dataset.FUNDING_RATES else parsed_intervals)
        ]
        with_bars = {s.instrument_id for s in series if s.plans or s.rechecks}
        with_bars |= {e.instrument_id for e in events}
        instruments = await load_instruments(cat, dsm, resolved, with_bars, lock_timeout_s, report)
        steps = _Progress(progress, sum(len(s.plans) + len(s.rechecks) for s in series))
        for s in series:
            if s.plans or s.rechecks:
                await _write_series(run, s, instruments[s.instrument_id], steps)
        for e in events:
            await ingest_event_series(
                cat, dsm, e, instruments[e.instrument_id], start_ms, min(end_ms, run.now_ms),
                lock_timeout_s=lock_timeout_s, lock_ttl_s=lock_ttl_s,
                policy=(min_completeness, on_low_quality),
                report=report,
            )  # fmt: skip
    except QualityBelowThreshold as e:
        # The chunks written before it stay: the caller can report them (and what was skipped).
        e.ingest_report = report  # type: ignore[attr-defined]
        raise
    finally:
        report.seconds = time.perf_counter() - started
        if owns_dsm:
            await dsm.aclose()
    return report


@dataclass(frozen=True)
class _Run:
    """What every step of one ``ingest_async`` call shares."""

    cat: ParquetDataCatalog
    dsm: DataSourceManager
    report: IngestReport
    start_ms: int
    end_ms: int
    chunk_ms: int
    now_ms: int
    lock_timeout_s: float
    lock_ttl_s: float
    min_completeness: float | None
    on_low_quality: str | None


@dataclass(frozen=True)
class _Series:
    """One bar type to ingest: its lock, the chunks to write and the files to re-check."""

    instrument_id: str
    bar_type: BarType
    interval: Interval
    key: str
    directory: str
    lock: SeriesLock
    plans: list[ChunkPlan]
    rechecks: list[Recheck]


class _Progress:
    """``progress(done, total)``: called with 0 first, then after each chunk or re-check."""

    def __init__(self, callback: ProgressCallback | None, total: int) -> None:
        self._callback = callback
        self._total = total
        self._done = 0
        if callback is not None:
            callback(0, total)

    def step(self) -> None:
        self._done += 1
        if self._callback is not None:
            self._callback(self._done, self._total)


def _checked_inputs(
    instrument_ids: Sequence[str],
    intervals: Sequence[Interval | str],
    start: datetime,
    end: datetime,
    chunk: timedelta,
) -> tuple[list[ResolvedInstrument], list[Interval], int, int, int]:
    # Every input is checked before any I/O.
    if isinstance(instrument_ids, str) or isinstance(intervals, str | Interval):
        raise InvalidInput(
            "instrument_ids and intervals are sequences; "
            "pass e.g. ['BTCUSDT-PERP.BINANCE'] and ['1m']"
        )
    if not instrument_ids or not intervals:
        raise InvalidInput("pass at least one instrument id and one interval, e.g. ['1m']")
    start_ms, end_ms = check_range(start, end)
    length_ms = chunk_ms(chunk)
    resolved = [resolve_instrument(i) for i in instrument_ids]
    parsed_intervals = [Interval.parse(i) for i in intervals]
    for r in resolved:
        for iv in parsed_intervals:
            iv.check_market(r.market_type)
    return resolved, parsed_intervals, start_ms, end_ms, length_ms


def _checked_datasets(
    datasets: Sequence[Dataset | str], resolved: Sequence[ResolvedInstrument]
) -> tuple[list[Dataset], list[Dataset]]:
    """Return the bar datasets and the event datasets; refuse the rest before any I/O."""
    if isinstance(datasets, str | Dataset) or not datasets:
        raise InvalidInput("datasets is a non-empty sequence; pass e.g. ['klines', 'funding']")
    parsed = list(dict.fromkeys(Dataset.parse(d) for d in datasets))
    if Dataset.PREMIUM_INDEX_KLINES in parsed:
        raise InvalidInput(
            "premium_index_klines have no NautilusTrader type to ingest into a catalog; fetch "
            "them with DataSourceManager.fetch(..., dataset='premium_index_klines')"
        )
    for ds in parsed:
        for r in resolved:
            ds.check_market(r.market_type)
    bars = [d for d in parsed if d in (Dataset.KLINES, Dataset.MARK_PRICE_KLINES)]
    return bars, [d for d in parsed if d in EVENT_DATASETS]


def _as_catalog(catalog: ParquetDataCatalog | str) -> ParquetDataCatalog:
    if isinstance(catalog, ParquetDataCatalog):
        return catalog
    if not isinstance(catalog, str) or not catalog:
        raise InvalidInput(
            f"catalog {catalog!r} is neither a ParquetDataCatalog nor a path/URI; "
            "pass e.g. '/data/catalog' or 'memory:///catalog'"
        )
    from nautilus_dsm.catalog.storage import open_catalog

    # Not ParquetDataCatalog.from_uri: it breaks s3:// URIs (see catalog/storage.py).
    return open_catalog(catalog)


async def _plan_series(run: _Run, instrument_id: str, iv: Interval, ds: Dataset) -> _Series:
    # Repair what is there, then plan around it; skipped ranges go into the report.
    from nautilus_dsm.perp_data import bar_type_for_dataset

    cat, report = run.cat, run.report
    bar_type = bar_type_for_dataset(instrument_id, iv, ds)
    key = str(bar_type)
    directory = cat._make_path(Bar, key)
    lock = series_lock_for(cat, directory, key, run.lock_timeout_s, run.lock_ttl_s)
    first_open = iv.ceil_ms(run.start_ms)
    if cat.fs.exists(directory):
        async with lock:
            remove_stale_temporaries(cat, directory)
            quarantine_unreadable(cat, key, directory)
            report.repaired.extend(normalize(cat, key, iv, directory))
            existing = [(a, b) for a, b, _ in parquet_files(cat, directory)]
            rechecks = rechecks_for(
                cat, directory, first_open * NS_PER_MS + 1, run.end_ms * NS_PER_MS
            )
    else:
        # Nothing to repair or re-check, and no lock file before the first write
        # (a refused symbol leaves the catalog untouched): writes are locked and
        # checked against the files present then, so a concurrent run is safe.
        existing, rechecks = [], []
    plans, skipped = plan_chunks(iv, run.start_ms, run.end_ms, existing, run.chunk_ms, run.now_ms)
    if plans and existing:
        async with lock:
            if quarantine_unreadable_in_cells(cat, key, iv, directory, plans):
                existing = [(a, b) for a, b, _ in parquet_files(cat, directory)]
                plans, skipped = plan_chunks(
                    iv, run.start_ms, run.end_ms, existing, run.chunk_ms, run.now_ms
                )
    report.bars_written.setdefault(key, 0)
    report.skipped.extend(SkippedRange(key, from_ms(a), from_ms(b)) for a, b in skipped)
    return _Series(instrument_id, bar_type, iv, key, directory, lock, plans, rechecks)


async def _write_series(run: _Run, s: _Series, instrument: Instrument, steps: _Progress) -> None:
    # Re-check the gap-recorded files, write the chunks, then put the files on the grid.
    cat, report = run.cat, run.report
    for item in s.rechecks:
        await recheck(
            cat, run.dsm, s.instrument_id, s.bar_type, s.interval, item, instrument, s.lock, report
        )
        steps.step()
    try:
        await _write_chunks(run, s, instrument, steps)
    except SeriesLocked:
        raise  # the lock is not ours to take: leave consolidation to its holder
    except Exception:
        if s.plans:
            async with s.lock:
                normalize(cat, s.key, s.interval, s.directory)
                point_chunks_at_files(cat, report, s.key, s.directory)
        raise
    if s.plans:
        # This run's chunk files (and a killed run's before them) become the grid's
        # files: one per cell, whatever --chunk-days was.
        async with s.lock:
            report.repaired.extend(normalize(cat, s.key, s.interval, s.directory))
            point_chunks_at_files(cat, report, s.key, s.directory)


async def _write_chunks(run: _Run, s: _Series, instrument: Instrument, steps: _Progress) -> None:
    # Each grid cell's chunk files are merged from memory once the next cell begins.
    cat, iv = run.cat, s.interval
    cell: tuple[int, int] | None = None
    in_cell: list[Written] = []  # this cell's chunk files, at most a cell of rows
    for plan in s.plans:
        if grid_cell(iv, plan.open_start_ms) != cell:
            if len(in_cell) > 1:
                async with s.lock:
                    consolidate_cell(cat, s.key, iv, s.directory, in_cell)
            cell, in_cell = grid_cell(iv, plan.open_start_ms), []
        piece = await fetch_piece(
            run.dsm, s.instrument_id, s.bar_type, iv, plan, instrument,
            run.min_completeness, run.on_low_quality,
        )  # fmt: skip
        if piece is not None:
            # Each chunk is written as soon as it is fetched: an interrupted run
            # keeps every chunk before the interruption and the re-run resumes.
            async with s.lock:
                in_cell += write_piece(cat, s.key, iv, s.directory, piece, run.report)
        steps.step()
    if len(in_cell) > 1:
        async with s.lock:
            consolidate_cell(cat, s.key, iv, s.directory, in_cell)


def _blocking[**P](
    fn: Callable[P, Coroutine[Any, Any, IngestReport]], name: str, doc: str
) -> Callable[P, IngestReport]:
    """Return the blocking twin of ``fn``: same signature (one to maintain), own loop."""

    def blocking(*args: P.args, **kwargs: P.kwargs) -> IngestReport:
        async def run() -> IngestReport:
            try:
                return await fn(*args, **kwargs)
            finally:
                # Connections opened here belong to this short-lived loop (re-created on next
                # use); ``dsm`` is keyword-only.
                dsm = kwargs.get("dsm")
                if dsm is not None:
                    await dsm.aclose()

        return asyncio.run(run())

    functools.update_wrapper(blocking, fn)  # signature and annotations of ``fn``
    blocking.__name__ = blocking.__qualname__ = name
    blocking.__doc__ = doc
    return blocking


ingest = _blocking(
    ingest_async,
    "ingest",
    """
    Ingest Binance bars into a Parquet data catalog: :func:`ingest_async`, blocking.

    Same parameters, return value and errors as :func:`ingest_async`; runs its own event loop,
    so call it from scripts, not from inside a running loop. A ``dsm`` passed in has its
    connections closed at the end (they belong to that loop); the manager stays usable.
    """,
)
