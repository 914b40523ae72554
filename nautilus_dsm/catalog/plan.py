"""Chunk planning (pure): which bar open times an ingest fetches, around the files present.

File intervals are in ``ts_init`` space (bars are stamped at their close). A chunk of bar open
times ``[a, b)`` holds bars with ``ts_init`` in ``(a, b]``, so its file is named
``[a + 1 ns, b]``: adjacent chunks are disjoint and contiguous, the catalog's overlap check is
never tripped, and re-running over the same or an overlapping range fetches only what no file
covers yet. A chunk never straddles a cell of the fixed grid (:func:`~.grid.grid_cell`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from nautilus_dsm.catalog.grid import diff_closed, grid_cell, merge_closed, open_range_for_closes
from nautilus_dsm.common import Interval
from nautilus_dsm.constants import NS_PER_MS
from nautilus_dsm.errors import InvalidInput

DEFAULT_CHUNK = timedelta(days=7)


@dataclass(frozen=True)
class ChunkPlan:
    """One chunk to fetch and write: bar open times ``[open_start_ms, open_end_ms)``.

    ``file_start_ns``/``file_end_ns`` is the closed ``ts_init`` interval the file is named for.
    """

    open_start_ms: int
    open_end_ms: int
    file_start_ns: int
    file_end_ns: int


def chunk_ms(chunk: timedelta) -> int:
    """Return ``chunk`` in whole milliseconds; :class:`InvalidInput` unless positive."""
    ms = int(chunk / timedelta(milliseconds=1))
    if ms <= 0:
        raise InvalidInput(f"chunk {chunk} is not positive; pass e.g. timedelta(days=7)")
    return ms


def plan_chunks(
    interval: Interval | str,
    start_ms: int,
    end_ms: int,
    existing: Sequence[tuple[int, int]],
    chunk_ms: int,
    now_ms: int,
) -> tuple[list[ChunkPlan], list[tuple[int, int]]]:
    """Plan the chunks that fill ``[start_ms, end_ms)`` (bar open times) around existing files.

    Parameters
    ----------
    interval : Interval | str
        The bar interval.
    start_ms, end_ms : int
        Requested bar open times ``[start, end)``; ``end`` is capped at the open of the bar
        still forming at ``now_ms`` (only closed bars are written).
    existing : Sequence[tuple[int, int]]
        Closed ``ts_init`` intervals already in the catalog for the bar type (file names).
    chunk_ms : int
        Chunk length; every chunk holds at least one bar.
    now_ms : int
        The current time.

    Returns
    -------
    tuple[list[ChunkPlan], list[tuple[int, int]]]
        The chunks to write, and the open-time ranges ``[a, b)`` skipped as already present.

    """
    interval = Interval.parse(interval)
    if chunk_ms <= 0:
        raise InvalidInput(f"chunk {chunk_ms} ms is not positive; pass e.g. timedelta(days=7)")
    end_ms = min(end_ms, interval.floor_ms(now_ms))
    first_open = interval.ceil_ms(start_ms)
    if first_open >= end_ms:
        return [], []
    last_open = interval.floor_ms(end_ms - 1)
    lo = first_open * NS_PER_MS + 1
    hi = interval.next_open_ms(last_open) * NS_PER_MS

    chunks: list[ChunkPlan] = []
    for m_lo, m_hi in diff_closed(lo, hi, existing):
        a, b = open_range_for_closes(interval, m_lo, m_hi)
        t = a
        while t < b:
            u = min(b, max(interval.ceil_ms(t + chunk_ms), interval.next_open_ms(t)))
            u = min(u, grid_cell(interval, t)[1])  # a chunk never straddles a grid cell
            chunks.append(
                ChunkPlan(
                    open_start_ms=t,
                    open_end_ms=u,
                    file_start_ns=max(m_lo, t * NS_PER_MS + 1),
                    file_end_ns=min(m_hi, u * NS_PER_MS),
                )
            )
            t = u

    skipped: list[tuple[int, int]] = []
    clipped = [(max(lo, c_lo), min(hi, c_hi)) for c_lo, c_hi in merge_closed(existing)]
    for c_lo, c_hi in (c for c in clipped if c[0] <= c[1]):
        a, b = open_range_for_closes(interval, c_lo, c_hi)
        if a < b:
            skipped.append((a, b))
    return chunks, skipped
