"""Ingest funding rates and index prices: ``FundingRateUpdate`` and ``IndexPriceUpdate`` files.

Like bars, resumable and exactly-once: one file per UTC calendar month of the request (or the
part of it requested), named by its ``ts_init`` interval in NautilusTrader's layout
(``data/funding_rate_update/<id>/`` and ``data/index_price_update/<id>/``), written through a
temporary and a rename under the series' lock; a re-run fetches only what no file covers. A
file whose month had gaps carries a record (``<file>.gaps.json``); the next run fetches that
range again and rewrites the file when the sources now have more rows.

File intervals: funding events are stamped at their boundary, so a month ``[a, b)`` holds
``ts_init`` in ``[a, b - 1 ns]``; index prices at each kline's close, so the month of open
times ``[a, b)`` holds ``ts_init`` in ``(a, b]``, named ``[a + 1 ns, b]`` as bars are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq
from nautilus_trader.model.data import FundingRateUpdate, IndexPriceUpdate
from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog, _timestamps_to_filename
from nautilus_trader.serialization.arrow.serializer import ArrowSerializer

from nautilus_dsm.catalog.files import (
    parquet_files,
    read_sidecar,
    remove_stale_temporaries,
    series_lock_for,
    write_file_atomic,
    write_sidecar,
)
from nautilus_dsm.catalog.grid import diff_closed
from nautilus_dsm.common import Interval, from_ms, to_ms
from nautilus_dsm.common.datasets import Dataset
from nautilus_dsm.constants import NS_PER_MS
from nautilus_dsm.dsm.locks import DEFAULT_TTL_S

if TYPE_CHECKING:
    from nautilus_trader.model.instruments import Instrument

    from nautilus_dsm.catalog.report import IngestReport
    from nautilus_dsm.dsm.manager import DataSourceManager

EVENT_DATASETS = (Dataset.FUNDING_RATES, Dataset.INDEX_PRICE_KLINES)


@dataclass(frozen=True)
class EventSeries:
    """One event series to ingest: funding of an instrument, or its index prices at an interval."""

    instrument_id: str
    dataset: Dataset
    interval: Interval | None  # index price klines' interval; None for funding

    @property
    def data_cls(self) -> type:
        """Return the Nautilus class stored (``FundingRateUpdate`` or ``IndexPriceUpdate``)."""
        return FundingRateUpdate if self.dataset is Dataset.FUNDING_RATES else IndexPriceUpdate

    @property
    def key(self) -> str:
        """Return the report key: ``FundingRateUpdate BTCUSDT-PERP.BINANCE`` and the like."""
        suffix = f" {self.interval.value}" if self.interval is not None else ""
        return f"{self.data_cls.__name__} {self.instrument_id}{suffix}"


def month_cells(start_ms: int, end_ms: int) -> list[tuple[int, int]]:
    """Return the UTC calendar months ``[a, b)`` of ``[start_ms, end_ms)``, clipped to it. Pure."""
    month = Interval.MONTH_1
    cells: list[tuple[int, int]] = []
    cursor = start_ms
    while cursor < end_ms:
        nxt = min(month.next_open_ms(month.floor_ms(cursor)), end_ms)
        cells.append((cursor, nxt))
        cursor = nxt
    return cells


def file_interval_ns(series: EventSeries, a_ms: int, b_ms: int) -> tuple[int, int]:
    """Return the closed ``ts_init`` interval of the file holding the events of ``[a, b)``."""
    if series.dataset is Dataset.FUNDING_RATES:
        return a_ms * NS_PER_MS, b_ms * NS_PER_MS - 1
    return a_ms * NS_PER_MS + 1, b_ms * NS_PER_MS


def _open_ms_range(series: EventSeries, lo_ns: int, hi_ns: int) -> tuple[int, int]:
    """Return the fetch range ``[a, b)`` (boundaries or open times) of a file interval."""
    if series.dataset is Dataset.FUNDING_RATES:
        return lo_ns // NS_PER_MS, (hi_ns + 1) // NS_PER_MS
    return (lo_ns - 1) // NS_PER_MS, hi_ns // NS_PER_MS


async def _fetch(
    dsm: DataSourceManager,
    series: EventSeries,
    instrument: Instrument,
    a_ms: int,
    b_ms: int,
    policy: tuple[float | None, str | None],
) -> tuple[list[Any], list[dict[str, Any]], int]:
    """Return the events of ``[a, b)``, their gaps (records) and the end actually served."""
    from nautilus_dsm.perp_data import frame_to_funding_updates, frame_to_index_prices

    if series.dataset is Dataset.FUNDING_RATES:
        funding = await dsm.fetch_funding_rates(series.instrument_id, from_ms(a_ms), from_ms(b_ms))
        events = frame_to_funding_updates(funding.frame, instrument.id)
        gaps = [g.to_dict() for g in funding.report.gaps]
        return events, gaps, to_ms(funding.report.end)
    assert series.interval is not None
    result = await dsm.fetch(
        series.instrument_id,
        series.interval,
        from_ms(a_ms),
        from_ms(b_ms),
        dataset=series.dataset,
        min_completeness=policy[0],
        on_low_quality=policy[1],
    )
    events = frame_to_index_prices(result.frame, instrument, series.interval)
    return events, [g.to_dict() for g in result.report.gaps], to_ms(result.report.end)


async def ingest_event_series(
    cat: ParquetDataCatalog,
    dsm: DataSourceManager,
    series: EventSeries,
    instrument: Instrument,
    start_ms: int,
    end_ms: int,
    *,
    lock_timeout_s: float,
    lock_ttl_s: float = DEFAULT_TTL_S,
    policy: tuple[float | None, str | None],
    report: IngestReport,
) -> None:
    """Write the series' events of ``[start_ms, end_ms)`` that no file covers; re-check gaps."""
    directory = cat._make_path(series.data_cls, series.instrument_id)
    lock = series_lock_for(cat, directory, series.key, lock_timeout_s, lock_ttl_s)
    report.events_written.setdefault(series.key, 0)
    if series.interval is not None:
        start_ms, end_ms = series.interval.ceil_ms(start_ms), series.interval.ceil_ms(end_ms)
    for a_ms, b_ms in month_cells(start_ms, end_ms):
        lo, hi = file_interval_ns(series, a_ms, b_ms)
        async with lock:
            remove_stale_temporaries(cat, directory)
            present = parquet_files(cat, directory)
        for f_lo, f_hi, path in present:
            if f_lo <= hi and f_hi >= lo and read_sidecar(cat, path) is not None:
                await _recheck(
                    cat, dsm, series, instrument, (f_lo, f_hi, path), lock, policy, report
                )
        covered = [(f_lo, f_hi) for f_lo, f_hi, _ in present]
        for m_lo, m_hi in diff_closed(lo, hi, covered):
            fa, fb = _open_ms_range(series, m_lo, m_hi)
            events, gaps, served_ms = await _fetch(dsm, series, instrument, fa, fb, policy)
            m_hi = min(m_hi, file_interval_ns(series, fa, served_ms)[1])
            events = [e for e in events if m_lo <= e.ts_init <= m_hi]
            if not events:
                continue
            async with lock:
                # Re-read under the lock: another writer may have covered part of it meanwhile.
                now_covered = [(x, y) for x, y, _ in parquet_files(cat, directory)]
                for w_lo, w_hi in diff_closed(m_lo, m_hi, now_covered):
                    part = [e for e in events if w_lo <= e.ts_init <= w_hi]
                    if part:
                        _write(cat, directory, series, (w_lo, w_hi), part, gaps, report)


def _write(
    cat: ParquetDataCatalog,
    directory: str,
    series: EventSeries,
    interval_ns: tuple[int, int],
    events: list[Any],
    gaps: list[dict[str, Any]],
    report: IngestReport,
) -> None:
    """Write one file (gap record first, so a crash never leaves a gappy file unrecorded)."""
    name = _timestamps_to_filename(*interval_ns)
    final = f"{directory}/{name}"
    record = {"gaps": gaps, "events": len(events)} if gaps else None
    write_sidecar(cat, final, record)
    table = ArrowSerializer.serialize_batch(events, series.data_cls)
    write_file_atomic(cat, directory, name, table)
    report.events_written[series.key] += len(events)


async def _recheck(
    cat: ParquetDataCatalog,
    dsm: DataSourceManager,
    series: EventSeries,
    instrument: Instrument,
    file: tuple[int, int, str],
    lock: Any,
    policy: tuple[float | None, str | None],
    report: IngestReport,
) -> None:
    """Fetch a gap-recorded file's range again; rewrite it when the sources now have more."""
    f_lo, f_hi, path = file
    fa, fb = _open_ms_range(series, f_lo, f_hi)
    events, gaps, _ = await _fetch(dsm, series, instrument, fa, fb, (None, "warn"))
    events = [e for e in events if f_lo <= e.ts_init <= f_hi]
    async with lock:
        record = read_sidecar(cat, path)
        if record is None or not cat.fs.exists(path):
            return  # another writer re-checked it meanwhile
        before = pq.ParquetFile(path, filesystem=cat.fs).metadata.num_rows
        if len(events) > before:
            directory, name = path.rsplit("/", 1)
            write_file_atomic(
                cat, directory, name, ArrowSerializer.serialize_batch(events, series.data_cls)
            )
            report.events_written[series.key] += len(events) - before
        if len(events) >= before:
            write_sidecar(cat, path, {"gaps": gaps, "events": len(events)} if gaps else None)
