"""One chunk of a series: fetched, converted, checked and written; gap-recorded files re-checked.

A write re-reads the files present and writes only what none covers (another writer may have
added some since the chunk was planned), gap record first. A file with a gap record is fetched
again on the next run and rewritten when the sources now have more bars.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq
from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog, _timestamps_to_filename

from nautilus_dsm.catalog.files import (
    parquet_files,
    read_sidecar,
    record_for,
    rows_between,
    write_file_atomic,
    write_sidecar,
)
from nautilus_dsm.catalog.grid import diff_closed, open_range_for_closes
from nautilus_dsm.catalog.plan import ChunkPlan
from nautilus_dsm.catalog.repair import Written
from nautilus_dsm.catalog.report import IngestedChunk, IngestReport, InvalidBar, RecheckedFile
from nautilus_dsm.common import Interval, from_ms, iso_ms, to_ms
from nautilus_dsm.constants import NS_PER_MS
from nautilus_dsm.errors import DSMError

if TYPE_CHECKING:
    from nautilus_trader.model.data import BarType
    from nautilus_trader.model.instruments import Instrument

    from nautilus_dsm.bars import CatalogConversion
    from nautilus_dsm.dsm.locks import SeriesLock
    from nautilus_dsm.dsm.manager import DataSourceManager
    from nautilus_dsm.dsm.quality import QualityReport


@dataclass
class Piece:
    """One fetched chunk, converted: the rows for its file and what it reported."""

    plan: ChunkPlan
    table: Any
    report: QualityReport
    gaps: list[tuple[int, int]]
    invalid: list[tuple[int, str]]


@dataclass
class Recheck:
    """A file of the requested range with a gap record: fetched again by this run."""

    path: str
    file_start_ns: int
    file_end_ns: int
    record: dict[str, Any]


def _invalid_rows(conversion: CatalogConversion) -> list[tuple[int, str]]:
    invalid = conversion.invalid
    if invalid.height == 0:
        return []
    opens = invalid.get_column("open_time")
    if opens.dtype.is_temporal():
        opens = opens.dt.epoch("ms")
    return [(int(t), str(r)) for t, r in zip(opens, invalid.get_column("reason"), strict=True)]


def _check_table(table: Any, plan: ChunkPlan, bar_type: str) -> None:
    # A bar outside its file's interval would silently break the catalog's disjointness.
    if table.num_rows == 0:
        return
    ts = table.column("ts_init").to_numpy()
    if int(ts[0]) < plan.file_start_ns or int(ts[-1]) > plan.file_end_ns:
        raise DSMError(
            f"{bar_type}: bars with ts_init {ts[0]}..{ts[-1]} fall outside the chunk's file "
            f"interval {plan.file_start_ns}..{plan.file_end_ns}; this is a bug, please report it"
        )
    if not bool((ts[1:] > ts[:-1]).all()):
        raise DSMError(
            f"{bar_type}: ts_init is not strictly increasing in chunk starting "
            f"{iso_ms(plan.open_start_ms)}; this is a bug, please report it"
        )


async def fetch_piece(
    dsm: DataSourceManager,
    instrument_id: str,
    bar_type: BarType,
    iv: Interval,
    plan: ChunkPlan,
    instrument: Instrument,
    min_completeness: float | None,
    on_low_quality: str | None,
) -> Piece | None:
    """Fetch one chunk and convert it to catalog rows; None when the manager served none of it."""
    from nautilus_dsm.bars import convert_frame_to_catalog_table

    result = await dsm.fetch(
        instrument_id,
        iv.value,
        from_ms(plan.open_start_ms),
        from_ms(plan.open_end_ms),
        min_completeness=min_completeness,
        on_low_quality=on_low_quality,
    )
    # The manager caps at its own "now": never claim coverage beyond what it served.
    served_end_ns = to_ms(result.report.end) * NS_PER_MS
    if served_end_ns < plan.file_end_ns:
        plan = replace(plan, file_end_ns=served_end_ns)
        if plan.file_end_ns < plan.file_start_ns:
            return None
    conversion = convert_frame_to_catalog_table(result.frame, bar_type, instrument)
    table = conversion.table
    _check_table(table, plan, str(bar_type))
    gaps = [(to_ms(g.start), to_ms(g.end)) for g in result.report.gaps]
    return Piece(plan, table, result.report, gaps, _invalid_rows(conversion))


def write_piece(
    cat: ParquetDataCatalog,
    key: str,
    interval: Interval,
    directory: str,
    piece: Piece,
    report: IngestReport,
) -> list[Written]:
    """Write one fetched chunk, minus what another writer added since it was planned.

    The chunk's gap record is written with it. Call under the series lock.
    """
    lo, hi = piece.plan.file_start_ns, piece.plan.file_end_ns
    current = [(a, b) for a, b, _ in parquet_files(cat, directory)]
    rows = 0
    file = ""
    written: list[Written] = []
    for m_lo, m_hi in diff_closed(lo, hi, current):
        part = rows_between(piece.table, m_lo, m_hi)
        name = _timestamps_to_filename(m_lo, m_hi)
        final = f"{directory}/{name}"
        record = record_for(key, interval, m_lo, m_hi, piece.gaps, piece.invalid, part.num_rows)
        # The gap record goes first: a crash between the two leaves a record without a file
        # (ignored), never a gappy file without its record (never re-checked).
        write_sidecar(cat, final, record)
        write_file_atomic(cat, directory, name, part)
        written.append(Written(m_lo, m_hi, final, part, record))
        rows += part.num_rows
        file = file or final
    report.bars_written[key] += rows
    report.invalid.extend(InvalidBar(key, from_ms(t), why) for t, why in piece.invalid)
    report.chunks.append(
        IngestedChunk(
            bar_type=key,
            start=from_ms(piece.plan.open_start_ms),
            end=from_ms(piece.plan.open_end_ms),
            bars=rows,
            file=file,
            report=piece.report,
        )
    )
    return written


def rechecks_for(cat: ParquetDataCatalog, directory: str, lo_ns: int, hi_ns: int) -> list[Recheck]:
    """Return the files of ``directory`` touching ``[lo_ns, hi_ns]`` that have a gap record."""
    out: list[Recheck] = []
    for f_lo, f_hi, path in parquet_files(cat, directory):
        if f_hi < lo_ns or f_lo > hi_ns:
            continue
        record = read_sidecar(cat, path)
        if record is not None:
            out.append(Recheck(path, f_lo, f_hi, record))
    return out


async def recheck(
    cat: ParquetDataCatalog,
    dsm: DataSourceManager,
    instrument_id: str,
    bar_type: BarType,
    iv: Interval,
    item: Recheck,
    instrument: Instrument,
    lock: SeriesLock,
    report: IngestReport,
) -> None:
    """Fetch a gap-recorded file's range again; rewrite it when the sources now have more."""
    key = str(bar_type)
    a, b = open_range_for_closes(iv, item.file_start_ns, item.file_end_ns)
    plan = ChunkPlan(a, b, item.file_start_ns, item.file_end_ns)
    # Only rewritten when the sources now have more: a low quality is no reason to fail here.
    piece = await fetch_piece(dsm, instrument_id, bar_type, iv, plan, instrument, None, "warn")
    if piece is None or piece.plan.file_end_ns != item.file_end_ns:
        return
    before = int(item.record.get("bars", -1))
    async with lock:
        if not cat.fs.exists(item.path) or read_sidecar(cat, item.path) != item.record:
            return  # another writer re-checked or repaired it meanwhile
        if before < 0:
            before = pq.ParquetFile(item.path, filesystem=cat.fs).metadata.num_rows
        after = piece.table.num_rows
        record = record_for(
            key, iv, item.file_start_ns, item.file_end_ns, piece.gaps, piece.invalid, after
        )
        rewrite = after > before
        if rewrite:
            name = item.path.rsplit("/", 1)[-1]
            directory = item.path.rsplit("/", 1)[0]
            write_file_atomic(cat, directory, name, piece.table)  # atomic replace, same name
        if rewrite or record != item.record:
            write_sidecar(cat, item.path, record)
    if rewrite:
        report.bars_written[key] = report.bars_written.get(key, 0) + after - before
    report.invalid.extend(InvalidBar(key, from_ms(t), why) for t, why in piece.invalid)
    gaps_left = 0 if record is None else len(record["gaps"])
    report.rechecked.append(
        RecheckedFile(key, item.path, before, after if rewrite else before, rewrite, gaps_left)
    )
