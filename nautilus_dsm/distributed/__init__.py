"""Distributed ingestion on Dask: a universe's series-months into one (object-store) catalog.

Install the extra: ``pip install nautilus-dsm[distributed]`` (``[s3]`` for ``s3://``
catalogs). Modules: :mod:`.tasks` (the series-month unit, pure), :mod:`.plan` (what the
catalog still lacks), :mod:`.limiter` (the cluster-wide REST budget), :mod:`.worker` (what a
worker runs), :mod:`.progress` and :mod:`.report` (the client's view), :mod:`.runner`
(:func:`ingest_universe`). Dask is imported only when a job runs.
"""

from __future__ import annotations

from nautilus_dsm.distributed.limiter import ClusterWeightLimiter, requests_per_minute
from nautilus_dsm.distributed.plan import TaskPlan, plan_tasks
from nautilus_dsm.distributed.progress import JobStatus
from nautilus_dsm.distributed.report import SymbolReport, TaskResult, UniverseReport
from nautilus_dsm.distributed.runner import UniverseSelection, ingest_universe
from nautilus_dsm.distributed.tasks import DATASETS, KLINES, SeriesMonth, month_tasks
from nautilus_dsm.distributed.worker import WorkerJob, month_in_catalog, run_series_month

__all__ = [
    "DATASETS",
    "KLINES",
    "ClusterWeightLimiter",
    "JobStatus",
    "SeriesMonth",
    "SymbolReport",
    "TaskPlan",
    "TaskResult",
    "UniverseReport",
    "UniverseSelection",
    "WorkerJob",
    "ingest_universe",
    "month_in_catalog",
    "month_tasks",
    "plan_tasks",
    "requests_per_minute",
    "run_series_month",
]
