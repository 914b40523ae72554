"""What a Dask worker runs for one series-month: the single-process ingest, then a read-back.

:func:`run_series_month` ingests ``[start, end)`` of one series with
:func:`nautilus_dsm.catalog.ingest` (the same planning, locking, atomic writes and repairs as
``nautilus-dsm ingest``), then reads the month's ``ts_init`` back from the catalog to report
its bars and gaps (what the catalog holds, whoever wrote it). Each worker thread keeps one
data-source manager and one catalog per job settings (connections, exchangeInfo and the listing
memory are reused across its tasks); the REST budget is the cluster's
(:class:`~nautilus_dsm.distributed.limiter.ClusterWeightLimiter`).
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from nautilus_dsm.catalog.storage import CatalogLocation, open_catalog
from nautilus_dsm.common import Interval, from_ms
from nautilus_dsm.constants import NS_PER_MS
from nautilus_dsm.distributed.limiter import BoundLimiter, ClusterWeightLimiter
from nautilus_dsm.distributed.plan import series_directory
from nautilus_dsm.distributed.report import TaskResult
from nautilus_dsm.distributed.tasks import KLINES, SeriesMonth, check_dataset
from nautilus_dsm.dsm.locks import DEFAULT_TTL_S
from nautilus_dsm.dsm.settings import SourceSettings
from nautilus_dsm.errors import DSMError, SeriesMonthFailed

if TYPE_CHECKING:
    from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

    from nautilus_dsm.dsm.manager import DataSourceManager


@dataclass(frozen=True)
class WorkerJob:
    """
    Everything a worker needs besides the task (picklable, sent once per task).

    Parameters
    ----------
    catalog : CatalogLocation
        The catalog (store, path, options).
    settings : SourceSettings
        The engine's settings (endpoints, cache, switches).
    limiter : ClusterWeightLimiter, optional
        The cluster's REST budget; None leaves each worker to its own weight gate.
    lock_timeout_s, lock_ttl_s : float
        Series lock wait and (object stores) staleness.
    min_completeness, on_low_quality : optional
        Quality policy overrides per fetch.
    chunk : timedelta, optional
        Range fetched at a time inside a month; None: the whole month (a day for ``1s``,
        whose catalog files are days), one fetch and one file write per task.
    job_id : str
        Identifies the job: a worker keeps one engine and one catalog per job id.

    """

    catalog: CatalogLocation
    settings: SourceSettings
    limiter: ClusterWeightLimiter | None = None
    lock_timeout_s: float = 600.0
    lock_ttl_s: float = DEFAULT_TTL_S
    min_completeness: float | None = None
    on_low_quality: str | None = "warn"
    chunk: timedelta | None = None
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex)


_JOBS_KEPT = 2  # engines kept per worker thread: a long-lived cluster runs many jobs


class _ThreadState(threading.local):
    def __init__(self) -> None:
        self.jobs: OrderedDict[str, tuple[DataSourceManager, ParquetDataCatalog, Any]] = (
            OrderedDict()
        )


_state = _ThreadState()


def _resources(job: WorkerJob) -> tuple[DataSourceManager, ParquetDataCatalog, Any]:
    found = _state.jobs.get(job.job_id)
    if found is None:
        from nautilus_dsm.dsm.manager import DataSourceManager

        dsm = DataSourceManager.from_config(job.settings)
        limiter = job.limiter.bind() if job.limiter is not None else None
        dsm.rest_limiter = limiter
        found = (dsm, open_catalog(job.catalog), limiter)
        _state.jobs[job.job_id] = found
        while len(_state.jobs) > _JOBS_KEPT:
            # The oldest job's engine: its connections closed with their loops, drop it.
            _state.jobs.popitem(last=False)
    else:
        _state.jobs.move_to_end(job.job_id)
    return found


@dataclass(frozen=True)
class MonthOutcome:
    """What one dataset's ingest of a series-month wrote and what the catalog then holds."""

    written: int
    present: int
    expected: int
    gaps: tuple[tuple[int, int], ...]


# dataset -> its ingest of one series-month. A new dataset (funding rates, mark klines) adds
# its function here and its name to tasks.DATASETS; planning, locks and reports stay as they are.
MonthIngest = Callable[
    [SeriesMonth, WorkerJob, "DataSourceManager", "ParquetDataCatalog"], MonthOutcome
]


def _ingest_klines(
    task: SeriesMonth, job: WorkerJob, dsm: DataSourceManager, cat: ParquetDataCatalog
) -> MonthOutcome:
    from nautilus_dsm.catalog import ingest

    report = ingest(
        cat,
        [task.instrument_id],
        [task.interval],
        from_ms(task.start_ms),
        from_ms(task.end_ms),
        dsm=dsm,
        chunk=job.chunk or _month_chunk(task.interval),
        min_completeness=job.min_completeness,
        on_low_quality=job.on_low_quality,
        lock_timeout_s=job.lock_timeout_s,
        lock_ttl_s=job.lock_ttl_s,
    )
    bars, expected, gaps = month_in_catalog(cat, task, time.time_ns() // NS_PER_MS)
    return MonthOutcome(report.total_bars, bars, expected, gaps)


INGESTERS: dict[str, MonthIngest] = {KLINES: _ingest_klines}


def run_series_month(task: SeriesMonth, job: WorkerJob) -> TaskResult:
    """
    Ingest one series-month into the catalog and report what the catalog then holds.

    Raises
    ------
    SeriesMonthFailed
        The ingest failed (its engine error named, as text: it travels to the client).

    """
    check_dataset(task.dataset)
    started = time.perf_counter()
    dsm, cat, limiter = _resources(job)
    leases_before = len(limiter.granted) if isinstance(limiter, BoundLimiter) else 0
    try:
        outcome = INGESTERS[task.dataset](task, job, dsm, cat)
    except DSMError as exc:
        raise SeriesMonthFailed(f"{task.key}: {type(exc).__name__}: {exc}") from None
    leases = tuple(limiter.granted[leases_before:]) if isinstance(limiter, BoundLimiter) else ()
    return TaskResult(
        task=task,
        bars_written=outcome.written,
        bars=outcome.present,
        expected=outcome.expected,
        gaps=outcome.gaps,
        rest_requests=len(leases),
        lease_times=leases,
        seconds=time.perf_counter() - started,
        worker=f"{socket.gethostname()}:{os.getpid()}",
    )


def _month_chunk(interval: str) -> timedelta:
    return timedelta(days=1) if interval == "1s" else timedelta(days=31)


def month_in_catalog(
    cat: ParquetDataCatalog, task: SeriesMonth, now_ms: int
) -> tuple[int, int, tuple[tuple[int, int], ...]]:
    """
    Return ``(bars, expected, gaps)`` of a month as the catalog holds it.

    ``bars`` counts rows (a bar twice counts twice), ``expected`` the closed bars opening in
    ``[start_ms, end_ms)``, ``gaps`` the missing open-time runs ``[a, b)``.
    """
    import pyarrow.parquet as pq

    from nautilus_dsm.catalog.files import parquet_files

    if task.dataset != KLINES:
        raise SeriesMonthFailed(f"{task.key}: no read-back for dataset {task.dataset!r}")
    iv = Interval.parse(task.interval)
    end = min(task.end_ms, iv.floor_ms(now_ms))
    opens = np.asarray(iv.open_times_ms(task.start_ms, end), dtype=np.int64)
    closes = (
        np.asarray([iv.next_open_ms(int(o)) for o in opens], dtype=np.int64)
        if iv.is_month
        else opens + iv.fixed_ms
    ) * NS_PER_MS
    if closes.size == 0:
        return 0, 0, ()
    lo, hi = int(closes[0]), int(closes[-1])
    stamps: list[np.ndarray] = []
    for f_lo, f_hi, path in parquet_files(cat, series_directory(cat, task)):
        if f_hi < lo or f_lo > hi:
            continue
        ts = pq.read_table(path, columns=["ts_init"], filesystem=cat.fs).column(0).to_numpy()
        ts = ts.astype(np.int64)
        stamps.append(ts[(ts >= lo) & (ts <= hi)])
    present = np.concatenate(stamps) if stamps else np.empty(0, dtype=np.int64)
    missing = opens[~np.isin(closes, present)]
    return int(present.size), int(opens.size), _runs(missing, iv)


def _runs(missing: np.ndarray, iv: Interval) -> tuple[tuple[int, int], ...]:
    # Consecutive missing opens -> one [a, b) run each.
    out: list[tuple[int, int]] = []
    for o in missing.tolist():
        if out and out[-1][1] == o:
            out[-1] = (out[-1][0], iv.next_open_ms(o))
        else:
            out.append((o, iv.next_open_ms(o)))
    return tuple(out)
