"""The fixed file grid of a bar type and the integer range arithmetic the catalog plans with (pure).

Two kinds of ranges meet here: closed ``ts_init`` intervals ``[lo, hi]`` in nanoseconds (how
catalog files are named; bars are stamped at their close) and half-open bar open-time ranges
``[a, b)`` in milliseconds (what the sources serve). :func:`open_range_for_closes` converts the
first into the second.

The grid: file boundaries never depend on the ingest's chunk size (a fetch-size knob), so any
two runs, whatever their ``--chunk-days``, cut a series at the same places: UTC calendar months
for intraday intervals from 1m (44,640 1m bars a file), UTC days for 1s (86,400 bars; a month of
1s would be a 2.7 M-row file), UTC years from 1h up (8,760 1h bars). Calendar boundaries are
snapped down to the interval's grid (a Monday for 1w, the 3-day grid for 3d), so a cell always
holds whole bars; in ts_init (close) space a cell of opens ``[a, b)`` is the file interval
``(a + 1 ns, b]``, named with NautilusTrader's own ``_timestamps_to_filename``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from nautilus_dsm.common import Interval, from_ms, to_ms
from nautilus_dsm.constants import NS_PER_MS

_DAY_CELL = ("1s",)
_MONTH_CELL = ("1m", "3m", "5m", "15m", "30m")


def diff_closed(lo: int, hi: int, covered: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Return the integer closed interval ``[lo, hi]`` minus the union of closed ``covered``."""
    out: list[tuple[int, int]] = []
    cursor = lo
    for c_lo, c_hi in sorted(covered):
        if c_hi < cursor:
            continue
        if c_lo > hi:
            break
        if c_lo > cursor:
            out.append((cursor, c_lo - 1))
        cursor = max(cursor, c_hi + 1)
        if cursor > hi:
            break
    if cursor <= hi:
        out.append((cursor, hi))
    return out


def merge_closed(intervals: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Return the union of integer closed intervals, adjacent ones (``hi + 1 == lo``) joined."""
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(intervals):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def merge_half_open(ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Return the union of half-open ranges ``[a, b)``: touching ones joined, empty dropped."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        elif a < b:
            out.append((a, b))
    return out


def clip(ranges: Sequence[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    """Return half-open ``ranges`` cut to ``[lo, hi)``, the empty ones dropped."""
    return [(max(a, lo), min(b, hi)) for a, b in ranges if min(b, hi) > max(a, lo)]


def open_range_for_closes(interval: Interval, lo_ns: int, hi_ns: int) -> tuple[int, int]:
    """Return the open times ``[a, b)`` of exactly the bars closing (ns) in ``[lo_ns, hi_ns]``."""
    first_close_ms = -(-lo_ns // NS_PER_MS)  # ceil
    a = interval.floor_ms(first_close_ms - 1)
    b = interval.floor_ms(hi_ns // NS_PER_MS)
    return a, b


def opens_of(interval: Interval, ts_init: Any) -> Any:
    """Return the open times (ms, int64 array) of bars stamped ``ts_init`` (their close, ns)."""
    # ts_init is the bar's close = the next bar's open; floor(close - 1 ms) is the bar's open.
    import numpy as np

    close_ms = np.asarray(ts_init, dtype=np.int64) // NS_PER_MS
    if interval.is_month:
        return np.array([interval.floor_ms(int(c) - 1) for c in close_ms], dtype=np.int64)
    return close_ms - interval.fixed_ms


def missing_runs(
    interval: Interval, gaps: Sequence[tuple[int, int]], present_opens: Any
) -> list[tuple[int, int]]:
    """Return the runs of open times inside ``gaps`` (``[a, b)``) that ``present_opens`` lacks."""
    present = set(int(x) for x in present_opens)
    runs: list[tuple[int, int]] = []
    for a, b in merge_half_open(gaps):
        t = interval.ceil_ms(a)
        run_start: int | None = None
        while t < b:
            if t in present:
                if run_start is not None:
                    runs.append((run_start, t))
                    run_start = None
            elif run_start is None:
                run_start = t
            t = interval.next_open_ms(t)
        if run_start is not None:
            runs.append((run_start, b))
    return runs


def _calendar_period(kind: str, t_ms: int) -> tuple[int, int]:
    dt = from_ms(t_ms)
    if kind == "day":
        lo = dt.replace(hour=0, minute=0, second=0, microsecond=0)
        return to_ms(lo), to_ms(lo + timedelta(days=1))
    if kind == "month":
        lo = dt.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        hi = (
            lo.replace(year=lo.year + 1, month=1)
            if lo.month == 12
            else lo.replace(month=lo.month + 1)
        )
        return to_ms(lo), to_ms(hi)
    lo = dt.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
    return to_ms(lo), to_ms(lo.replace(year=lo.year + 1))


def grid_cell(interval: Interval | str, open_ms: int) -> tuple[int, int]:
    """
    Return the fixed file-grid cell ``[a, b)`` (bar open times) holding the bar at ``open_ms``.

    UTC days for 1s, UTC months for 1m-30m, UTC years for 1h and longer, each boundary snapped
    down to the interval's grid. Independent of the ingest's chunk size.

    Parameters
    ----------
    interval : Interval | str
        The bar interval.
    open_ms : int
        The bar's open time (epoch milliseconds).

    Returns
    -------
    tuple[int, int]
        The cell's first bar open time and the open time just after its last bar.

    """
    interval = Interval.parse(interval)
    kind = (
        "day"
        if interval.value in _DAY_CELL
        else "month"
        if interval.value in _MONTH_CELL
        else "year"
    )
    lo, hi = _calendar_period(kind, open_ms)
    a, b = interval.floor_ms(lo), interval.floor_ms(hi)
    if open_ms >= b:  # snapped boundary fell before the bar: it belongs to the next cell
        _nxt_lo, nxt_hi = _calendar_period(kind, hi)
        a, b = b, interval.floor_ms(nxt_hi)
    elif open_ms < a:
        prv_lo, _ = _calendar_period(kind, lo - 1)
        a, b = interval.floor_ms(prv_lo), a
    return a, b


def cell_parts(interval: Interval, lo_ns: int, hi_ns: int) -> list[tuple[int, int]]:
    """Return ``[lo_ns, hi_ns]`` (ts_init) cut at the fixed grid's cell boundaries."""
    parts: list[tuple[int, int]] = []
    cursor = lo_ns
    while cursor <= hi_ns:
        a, _ = open_range_for_closes(interval, cursor, cursor)
        _, cell_end = grid_cell(interval, a)
        end = min(hi_ns, cell_end * NS_PER_MS)
        parts.append((cursor, end))
        cursor = end + 1
    return parts
