"""A bar type's files in the catalog: listing, atomic writes, quarantine and gap records.

Every file is written under a temporary name (``<name>.<id>.tmp``) and renamed, so an
interrupted run leaves complete files only; :func:`remove_stale_temporaries` clears a killed
run's leftovers. A file whose Parquet does not read is moved to ``<catalog>/quarantine/`` (kept
as evidence, never read again) and its bars are ingested again. A file whose chunk had gaps or
klines that cannot be bars carries a record (``<file>.gaps.json``, ignored by NautilusTrader,
which globs ``*.parquet`` only) that makes the next run ask the sources again. One writer per
series: :func:`series_lock_for` is the advisory lock beside a bar type's directory
(:mod:`nautilus_dsm.dsm.locks`); the functions that change files are called under it.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from nautilus_trader.persistence.catalog.parquet import (
    ParquetDataCatalog,
    _parse_filename_timestamps,
)

from nautilus_dsm.catalog.grid import clip, grid_cell, merge_half_open, open_range_for_closes
from nautilus_dsm.catalog.plan import ChunkPlan
from nautilus_dsm.common import Interval
from nautilus_dsm.constants import NS_PER_MS
from nautilus_dsm.dsm.locks import DEFAULT_TTL_S, SeriesLock, check_current_lock, series_lock
from nautilus_dsm.errors import SeriesLocked

_log = logging.getLogger(__name__)
TMP_SUFFIX = ".tmp"
SIDECAR_SUFFIX = ".gaps.json"  # beside "<start>_<end>.parquet"; the catalog globs *.parquet only
DEFAULT_LOCK_TIMEOUT_S = 60.0


def series_lock_for(
    cat: ParquetDataCatalog,
    path: str,
    what: str,
    timeout_s: float,
    ttl_s: float = DEFAULT_TTL_S,
) -> SeriesLock:
    """Return the advisory lock ``<path>.lock`` of one series (a bar type or an instrument)."""
    return series_lock(cat.fs, f"{path}.lock", timeout_s=timeout_s, ttl_s=ttl_s, what=what)


def parquet_files(cat: ParquetDataCatalog, directory: str) -> list[tuple[int, int, str]]:
    """Return the catalog files of ``directory`` as ``(ts_init lo, ts_init hi, path)``, sorted."""
    out: list[tuple[int, int, str]] = []
    if not cat.fs.exists(directory):
        return out
    for path in cat.fs.glob(f"{directory}/*.parquet"):
        interval = _parse_filename_timestamps(path)
        if interval is not None:
            out.append((interval[0], interval[1], path))
    out.sort()
    return out


def remove_stale_temporaries(catalog: ParquetDataCatalog, directory: str) -> None:
    """Delete the temporaries a killed run left in ``directory``. Call under the series lock."""
    # A run killed mid-write leaves "<name>.parquet.<id>.tmp": never a catalog file, just clutter.
    if catalog.fs.exists(directory):
        for path in catalog.fs.glob(f"{directory}/*{TMP_SUFFIX}"):
            catalog.fs.rm(path)


def write_file_atomic(catalog: ParquetDataCatalog, directory: str, name: str, table: Any) -> str:
    """Write ``table`` as ``directory/name`` through a temporary and a rename; return the path."""
    final = f"{directory}/{name}"
    tmp = f"{final}.{uuid.uuid4().hex}{TMP_SUFFIX}"
    catalog.fs.mkdirs(directory, exist_ok=True)
    # No dictionary encoding: int128 raws and timestamps hardly repeat, so dictionaries cost
    # time and space; without them the write is ~1.7x faster and the file ~15% smaller
    # (benchmarks/catalog_ingest.py). The data read back is identical.
    pq.write_table(
        table,
        where=tmp,
        filesystem=catalog.fs,
        row_group_size=catalog.max_rows_per_group,
        use_dictionary=False,
    )
    try:
        check_current_lock()  # the commit: only while this writer still holds the series
    except SeriesLocked:
        catalog.fs.rm(tmp)
        raise
    catalog.fs.mv(tmp, final)
    return final


def rows_between(table: Any, lo_ns: int, hi_ns: int) -> Any:
    """Return the rows of a bar table (sorted by ``ts_init``) with ``ts_init`` in [lo_ns, hi_ns]."""
    import numpy as np

    ts = table.column("ts_init").to_numpy()
    # np.uint64 bounds: a Python int against uint64 would compare as float64 and lose the ns.
    first = int(np.searchsorted(ts, np.uint64(lo_ns), side="left"))
    last = int(np.searchsorted(ts, np.uint64(hi_ns), side="right"))
    return table.slice(first, last - first)


# --------------------------------------------------------------------------------------------
# Quarantine
# --------------------------------------------------------------------------------------------


def quarantine_unreadable(cat: ParquetDataCatalog, key: str, directory: str) -> None:
    """Move aside every bar file whose Parquet footer cannot be read, with its gap record.

    Such a file is a killed copy or a disk fault: its range is then missing and ingested again,
    and neither this run nor NautilusTrader fails reading it. Call under the series lock.
    """
    for _, _, path in parquet_files(cat, directory):
        try:
            pq.read_metadata(path, filesystem=cat.fs)
        except (pa.ArrowException, OSError) as exc:
            quarantine_file(cat, key, path, exc)


def quarantine_unreadable_in_cells(
    cat: ParquetDataCatalog, key: str, interval: Interval, directory: str, plans: list[ChunkPlan]
) -> bool:
    """Quarantine the unreadable files of the grid cells this run writes into.

    Every file in such a cell is read whole (the merge after the write reads them anyway);
    those whose pages do not read are quarantined. Return True when any was: the series must
    be planned again, so their bars are ingested in this run, not lost until the next one.
    Call under the series lock.
    """
    cells = {grid_cell(interval, plan.open_start_ms) for plan in plans}
    found = False
    for lo, hi, path in parquet_files(cat, directory):
        if not any(lo <= b * NS_PER_MS and hi > a * NS_PER_MS for a, b in cells):
            continue
        try:
            pq.read_table(path, filesystem=cat.fs)
        except (pa.ArrowException, OSError) as exc:
            quarantine_file(cat, key, path, exc)
            found = True
    return found


def quarantine_file(cat: ParquetDataCatalog, key: str, path: str, exc: BaseException) -> None:
    """Move one unreadable file (and its gap record) to ``<catalog>/quarantine/``, logged."""
    # <catalog>/quarantine/ lies outside data/, so the catalog never reads the file again; the
    # file is kept (not deleted) as evidence of what went wrong.
    name = path.rsplit("/", 1)[-1]
    target = f"{str(cat.path).rstrip('/')}/quarantine/bar/{key}/{name}"
    if cat.fs.exists(target):  # an earlier casualty of the same name stays as well
        target = f"{target}.{uuid.uuid4().hex[:8]}"
    cat.fs.mkdirs(target.rsplit("/", 1)[0], exist_ok=True)
    cat.fs.mv(path, target)
    sidecar = f"{path}{SIDECAR_SUFFIX}"
    if cat.fs.exists(sidecar):
        cat.fs.mv(sidecar, f"{target}{SIDECAR_SUFFIX}")
    _log.warning(
        "%s: catalog file %s is unreadable (%s); quarantined to %s, its bars are ingested again",
        key,
        path,
        " ".join(str(exc).split())[:200],
        target,
    )


# --------------------------------------------------------------------------------------------
# Gap records (``<file>.gaps.json``)
# --------------------------------------------------------------------------------------------


def read_sidecar(cat: ParquetDataCatalog, parquet_path: str) -> dict[str, Any] | None:
    """Return the gap record of a file, None when it has none."""
    try:
        raw = cat.fs.cat_file(f"{parquet_path}{SIDECAR_SUFFIX}")
    except (FileNotFoundError, OSError):
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        record = None
    # An unreadable record still says "this file had gaps": re-check it rather than trust it.
    return record if isinstance(record, dict) else {"gaps": [], "invalid": [], "bars": -1}


def write_sidecar(
    cat: ParquetDataCatalog, parquet_path: str, record: dict[str, Any] | None
) -> None:
    """Write the gap record of a file; None removes it."""
    path = f"{parquet_path}{SIDECAR_SUFFIX}"
    if record is None:
        if cat.fs.exists(path):
            cat.fs.rm(path)
        return
    cat.fs.mkdirs(path.rsplit("/", 1)[0], exist_ok=True)
    cat.fs.pipe_file(path, json.dumps(record, sort_keys=True).encode())


def record_for(
    key: str,
    interval: Interval,
    file_lo_ns: int,
    file_hi_ns: int,
    gaps: Sequence[tuple[int, int]],
    invalid: Sequence[tuple[int, str]],
    bars: int,
) -> dict[str, Any] | None:
    """Return the gap record of one file, None when it holds every bar its sources had."""
    a, b = open_range_for_closes(interval, file_lo_ns, file_hi_ns)
    gaps = clip(merge_half_open(gaps), a, b)
    invalid = [(t, why) for t, why in invalid if a <= t < b]
    if not gaps and not invalid:
        return None
    return {
        "bar_type": key,
        "open_start_ms": a,
        "open_end_ms": b,
        "bars": bars,
        "gaps": [list(g) for g in gaps],
        "invalid": [[t, why] for t, why in invalid],
    }
