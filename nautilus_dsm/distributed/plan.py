"""Which series-months a catalog still lacks: the catalog says what is done.

A month is done when the catalog's files of its series cover every bar of it that can exist
(closed bars, from the listing on): :func:`~nautilus_dsm.catalog.plan.plan_chunks`, the planner
single-process ingestion uses, plans nothing for it. Each series directory is listed once.
Files carrying a gap record are done too (their months were ingested as far as the sources had
bars; ``nautilus-dsm ingest`` over the range re-checks them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nautilus_dsm.catalog.files import parquet_files
from nautilus_dsm.catalog.plan import plan_chunks
from nautilus_dsm.common import Interval
from nautilus_dsm.distributed.tasks import SeriesMonth

if TYPE_CHECKING:
    from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

_WHOLE = 10**15  # one chunk per month: the planner's chunking does not matter here


@dataclass(frozen=True)
class TaskPlan:
    """The tasks to run and those the catalog already holds."""

    pending: list[SeriesMonth]
    done: list[SeriesMonth]


def series_directory(cat: ParquetDataCatalog, task: SeriesMonth) -> str:
    """Return the catalog directory of a task's series (``data/bar/<bar_type>``)."""
    from nautilus_trader.model.data import Bar

    from nautilus_dsm.bars import bar_type_for

    return cat._make_path(Bar, str(bar_type_for(task.instrument_id, Interval.parse(task.interval))))


def plan_tasks(cat: ParquetDataCatalog, tasks: Sequence[SeriesMonth], now_ms: int) -> TaskPlan:
    """
    Split ``tasks`` into pending and done by the files the catalog holds.

    Parameters
    ----------
    cat : ParquetDataCatalog
        The catalog (any fsspec store).
    tasks : Sequence[SeriesMonth]
        The job's tasks.
    now_ms : int
        The current time: bars not closed by then are not expected yet.

    Returns
    -------
    TaskPlan

    """
    existing: dict[tuple[str, str, str], list[tuple[int, int]]] = {}
    pending: list[SeriesMonth] = []
    done: list[SeriesMonth] = []
    for task in tasks:
        if task.series not in existing:
            files = parquet_files(cat, series_directory(cat, task))
            existing[task.series] = [(lo, hi) for lo, hi, _ in files]
        plans, _ = plan_chunks(
            task.interval, task.start_ms, task.end_ms, existing[task.series], _WHOLE, now_ms
        )
        (pending if plans else done).append(task)
    return TaskPlan(pending, done)
