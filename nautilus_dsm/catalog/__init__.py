"""Ingest Binance klines into a NautilusTrader ``ParquetDataCatalog``, chunk by chunk.

Bars are written straight as parquet in the catalog's own layout
(``<catalog>/data/bar/<bar_type>/<start>_<end>.parquet``, names from NautilusTrader's helpers)
through the catalog's fsspec filesystem, so local paths, ``memory://`` and object stores all
work and the catalog reads the files back as if ``write_data`` had written them.

File intervals are in ``ts_init`` space (bars are stamped at their close). A chunk of bar open
times ``[a, b)`` holds bars with ``ts_init`` in ``(a, b]``, so its file is named
``[a + 1 ns, b]``: adjacent chunks are disjoint and contiguous, the catalog's overlap check is
never tripped, and re-running over the same or an overlapping range fetches only what no file
covers yet. Each file is written under a temporary name and renamed, so an interrupted run
leaves complete files only and the next run resumes where it stopped.

One writer per series: each bar type has an advisory lock beside its directory
(:mod:`nautilus_dsm.dsm.locks`), held while a run repairs and plans and for each write; a write
re-reads the files present and writes only what none covers. Files follow a fixed grid (UTC
months for 1m-30m, days for 1s, years from 1h; :func:`grid_cell`) whatever the chunk size:
chunks are written as fetched, then consolidated per cell, and files that overlap (an older
version, unlocked writers) are merged with every bar kept once. A file whose chunk had gaps or
klines that cannot be bars carries a record (``<file>.gaps.json``, ignored by NautilusTrader)
that makes the next run ask the sources again and rewrite it when they have more.

Modules: :mod:`.grid` (the file grid, range arithmetic) and :mod:`.plan` (chunk planning) are
pure; :mod:`.files` (listing, atomic writes, quarantine, gap records), :mod:`.repair`
(consolidation, overlap merge), :mod:`.chunks` (fetch and write one chunk, re-checks),
:mod:`.instruments` and :mod:`.ingestion` (the ingest loop) do the I/O; :mod:`.report` holds
:class:`IngestReport`. The names below are the public API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nautilus_dsm.catalog.files import DEFAULT_LOCK_TIMEOUT_S
from nautilus_dsm.catalog.grid import grid_cell
from nautilus_dsm.catalog.ingestion import ProgressCallback, ingest, ingest_async
from nautilus_dsm.catalog.plan import DEFAULT_CHUNK, ChunkPlan, plan_chunks
from nautilus_dsm.catalog.report import (
    IngestedChunk,
    IngestReport,
    InvalidBar,
    RecheckedFile,
    RepairedRange,
    SkippedRange,
)

if TYPE_CHECKING:
    from nautilus_dsm.backtest.data_config import backtest_data_config

__all__ = [
    "DEFAULT_CHUNK",
    "DEFAULT_LOCK_TIMEOUT_S",
    "ChunkPlan",
    "IngestReport",
    "IngestedChunk",
    "InvalidBar",
    "ProgressCallback",
    "RecheckedFile",
    "RepairedRange",
    "SkippedRange",
    "backtest_data_config",
    "grid_cell",
    "ingest",
    "ingest_async",
    "plan_chunks",
]


def __getattr__(name: str) -> Any:
    # backtest_data_config lives in nautilus_dsm.backtest, whose package imports NautilusTrader's
    # backtest modules (~20 MB RSS): loaded on first use, never by an ingest.
    if name == "backtest_data_config":
        from nautilus_dsm.backtest.data_config import backtest_data_config

        globals()[name] = backtest_data_config
        return backtest_data_config
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
