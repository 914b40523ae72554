"""Keep a bar type's files on the fixed grid: consolidate chunk files, merge overlapping ones.

Chunks are written as fetched, then consolidated per grid cell (:func:`consolidate_cell`, from
memory); :func:`normalize` brings whatever is on disk onto the grid, one file per cell, every bar
exactly once: files that overlap (two writers without a lock, an older version, copies by hand)
are merged and reported as repaired. Every function here is called under the series lock.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog, _timestamps_to_filename

from nautilus_dsm.catalog.files import (
    parquet_files,
    quarantine_file,
    read_sidecar,
    record_for,
    rows_between,
    write_file_atomic,
    write_sidecar,
)
from nautilus_dsm.catalog.grid import cell_parts, missing_runs, open_range_for_closes, opens_of
from nautilus_dsm.catalog.report import RepairedRange
from nautilus_dsm.common import Interval, from_ms, to_ms
from nautilus_dsm.constants import NS_PER_MS
from nautilus_dsm.errors import DSMError

if TYPE_CHECKING:
    from nautilus_dsm.catalog.report import IngestReport

_log = logging.getLogger(__name__)

_File = tuple[int, int, str]  # (ts_init lo, ts_init hi, path), as parquet_files lists them


@dataclass
class Written:
    """A file one chunk write produced: its ts_init interval, path, rows and gap record."""

    lo_ns: int
    hi_ns: int
    path: str
    table: Any
    record: dict[str, Any] | None


class _Quarantined(Exception):
    """A file of the component was set aside while merging: normalize the series again."""


def merge_tables(tables: Sequence[Any]) -> tuple[Any, int]:
    """Concatenate bar tables, sort by ``ts_init``, keep each ``ts_init`` once; (table, dups)."""
    import numpy as np

    merged = pa.concat_tables([t.cast(tables[0].schema) for t in tables])
    rows = merged.num_rows
    merged = merged.sort_by("ts_init")
    ts = merged.column("ts_init").to_numpy()
    keep = np.ones(len(ts), dtype=bool)
    keep[1:] = ts[1:] != ts[:-1]
    if not keep.all():
        merged = merged.filter(pa.array(keep))
    return merged, rows - merged.num_rows


def normalize(
    cat: ParquetDataCatalog, key: str, interval: Interval, directory: str
) -> list[RepairedRange]:
    """Bring a bar type's files onto the fixed grid: one file per cell, every bar exactly once.

    A cell may instead hold one file per contiguous run inside it. Call under the series lock.

    Files that overlap (two writers without a lock, an older version, copies by hand) hold some
    bars twice: they are merged, each ``ts_init`` kept once, and reported as repaired. Files
    that only touch (chunks of one run, boundaries of an older version or another
    ``--chunk-days``) are consolidated per cell, silently. Cells already holding exactly one
    file of the cell's extent are not touched, so a clean catalog costs a directory listing.
    New files are written before old ones are removed: an interruption leaves duplicates the
    next run repairs, never a loss. Gap records are carried over to the cells they cover.
    """
    components: list[list[_File]] = []
    for item in parquet_files(cat, directory):
        if components and item[0] <= max(f[1] for f in components[-1]) + 1:
            components[-1].append(item)
        else:
            components.append([item])
    repaired: list[RepairedRange] = []
    for comp in components:
        try:
            found = _normalize_component(cat, key, interval, directory, comp)
        except _Quarantined:
            # A footer that reads but pages that do not: the file is set aside; start over
            # (files written so far are merged again; nothing is lost).
            return repaired + normalize(cat, key, interval, directory)
        if found is not None:
            repaired.append(found)
    return repaired


def _normalize_component(
    cat: ParquetDataCatalog, key: str, interval: Interval, directory: str, comp: list[_File]
) -> RepairedRange | None:
    # One run of overlapping or touching files, rewritten cell by cell.
    lo, hi = comp[0][0], max(f[1] for f in comp)
    overlapping = any(b[0] <= a[1] for a, b in itertools.pairwise(comp))
    written: set[str] = set()
    to_delete: dict[str, None] = {}
    duplicates = 0
    tables: dict[str, Any] = {}
    for p_lo, p_hi in cell_parts(interval, lo, hi):
        touching = [f for f in comp if f[0] <= p_hi and f[1] >= p_lo]
        if not touching or (len(touching) == 1 and touching[0][:2] == (p_lo, p_hi)):
            continue
        _load_tables(cat, key, touching, tables)
        final, dups = _write_cell_part(cat, key, interval, directory, p_lo, p_hi, touching, tables)
        duplicates += dups
        written.add(cat.fs._strip_protocol(final))
        to_delete.update(dict.fromkeys(p for _, _, p in touching))
    for path in to_delete:
        if cat.fs._strip_protocol(path) not in written:
            write_sidecar(cat, path, None)
            cat.fs.rm(path)
    if not (overlapping and (written or duplicates)):
        return None
    a, b = open_range_for_closes(interval, lo, hi)
    _log.warning(
        "%s: %d overlapping catalog files merged into %d, %d duplicate bars removed",
        key,
        len(to_delete),
        len(written),
        duplicates,
    )
    return RepairedRange(key, from_ms(a), from_ms(b), len(to_delete), len(written), duplicates)


def _load_tables(
    cat: ParquetDataCatalog, key: str, touching: list[_File], tables: dict[str, Any]
) -> None:
    for stale in [p for p in tables if all(p != f[2] for f in touching)]:
        del tables[stale]  # only the files of the current cell stay in memory
    for _, _, path in touching:
        if path not in tables:
            try:
                tables[path] = pq.read_table(path, filesystem=cat.fs)
            except (pa.ArrowException, OSError) as exc:
                quarantine_file(cat, key, path, exc)
                raise _Quarantined(path) from exc


def _write_cell_part(
    cat: ParquetDataCatalog,
    key: str,
    interval: Interval,
    directory: str,
    p_lo: int,
    p_hi: int,
    touching: list[_File],
    tables: dict[str, Any],
) -> tuple[str, int]:
    # The bars of ``touching`` within [p_lo, p_hi] as one file with its gap record: (path, dups).
    precisions = {(tables[p].schema.metadata or {}).get(b"price_precision") for _, _, p in touching}
    if len(precisions) > 1:
        raise DSMError(
            f"{key}: files {', '.join(p for _, _, p in touching)} hold bars at different "
            "precisions; keep the files of one precision, delete the others, re-run"
        )
    parts = [rows_between(tables[p], p_lo, p_hi) for _, _, p in touching]
    part, dups = merge_tables(parts)
    records = [r for r in (read_sidecar(cat, p) for _, _, p in touching) if r]
    gaps = [(int(g[0]), int(g[1])) for r in records for g in r.get("gaps", [])]
    invalid = [(int(t), str(w)) for r in records for t, w in r.get("invalid", [])]
    present = opens_of(interval, part.column("ts_init").to_numpy())
    missing = missing_runs(interval, gaps, present)
    record = record_for(key, interval, p_lo, p_hi, missing, invalid, len(part))
    if record is None and any(r.get("bars", 0) < 0 for r in records):
        record = {"bar_type": key, "bars": -1, "gaps": [], "invalid": []}
    name = _timestamps_to_filename(p_lo, p_hi)
    final = f"{directory}/{name}"
    write_sidecar(cat, final, record)
    write_file_atomic(cat, directory, name, part)
    return final, dups


def consolidate_cell(
    cat: ParquetDataCatalog,
    key: str,
    interval: Interval,
    directory: str,
    written: Sequence[Written],
) -> None:
    """Merge the chunk files this run just wrote into one cell, from memory (no read-back).

    Only when they are contiguous and no other file touches their range (else the reading
    :func:`normalize` at the end of the series does it). Call under the series lock.
    """
    if len(written) < 2:
        return
    if any(a.hi_ns + 1 != b.lo_ns for a, b in itertools.pairwise(written)):
        return
    lo, hi = written[0].lo_ns, written[-1].hi_ns
    ours = {(w.lo_ns, w.hi_ns, cat.fs._strip_protocol(w.path)) for w in written}
    touching = {
        (a, b, cat.fs._strip_protocol(p))
        for a, b, p in parquet_files(cat, directory)
        if a <= hi and b >= lo
    }
    if touching != ours:
        return
    table = pa.concat_tables([w.table for w in written])
    gaps = [(int(g[0]), int(g[1])) for w in written if w.record for g in w.record["gaps"]]
    invalid = [(int(t), str(r)) for w in written if w.record for t, r in w.record["invalid"]]
    record = record_for(key, interval, lo, hi, gaps, invalid, table.num_rows)
    name = _timestamps_to_filename(lo, hi)
    final = f"{directory}/{name}"
    write_sidecar(cat, final, record)
    write_file_atomic(cat, directory, name, table)
    for w in written:
        write_sidecar(cat, w.path, None)
        cat.fs.rm(w.path)


def point_chunks_at_files(
    cat: ParquetDataCatalog, report: IngestReport, key: str, directory: str
) -> None:
    """Name, in each chunk of ``report``, the file its bars live in after consolidation."""
    files = parquet_files(cat, directory)
    for i, c in enumerate(report.chunks):
        if c.bar_type != key:
            continue
        first = to_ms(c.start) * NS_PER_MS + 1
        for lo, hi, path in files:
            if lo <= first <= hi:
                if path != c.file:
                    report.chunks[i] = replace(c, file=path)
                break
