"""Checks a cached frame passes before it is written or served (pure, vectorised).

A cache entry holds exactly the frame schema, no nulls, open times unique, ascending, on the
interval's grid and inside its period, and ``close_time`` the next bar's open time minus 1 ms.
A file failing them is quarantined by the cache and fetched again.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from nautilus_dsm.common import Interval
from nautilus_dsm.constants import DAY_MS
from nautilus_dsm.dsm.cache_paths import period_bounds
from nautilus_dsm.dsm.schema import FRAME_SCHEMA

__all__ = ["bulk_problem", "frame_problem", "period_bounds"]


def frame_problem(frame: pl.DataFrame, interval: Interval, key: str) -> str:
    """Why a frame cannot be the cache entry of period ``key``; "" when it can.

    Exactly the frame schema, no nulls, open times unique, ascending, on the interval's grid and
    inside the period, and ``close_time`` the open time of the next bar minus 1 ms.
    """
    if frame.schema != pl.Schema(FRAME_SCHEMA):
        return f"wrong schema {dict(frame.schema)}"
    if frame.height == 0:
        return ""
    nulls = int(frame.null_count().sum_horizontal().item())
    if nulls:
        return f"holding {nulls} null value(s)"
    opens = frame.get_column("open_time").dt.epoch("ms").to_numpy()
    closes = frame.get_column("close_time").dt.epoch("ms").to_numpy()
    lo, hi = period_bounds(key)
    if int(opens.min()) < lo or int(opens.max()) >= hi:
        return f"holding open times outside the period {key}"
    return _grid_problem(opens, closes, interval)


def bulk_problem(frame: pl.DataFrame, interval: Interval, keys: list[str]) -> str:
    """:func:`frame_problem` for the concatenation of the files of ``keys`` (in key order)."""
    if frame.schema != pl.Schema(FRAME_SCHEMA):
        return "wrong schema"
    if frame.height == 0:
        return ""
    if any(len(k) == 4 for k in keys):
        return "yearly periods are checked file by file"  # few files: take the exact path
    if int(frame.null_count().sum_horizontal().item()):
        return "nulls"
    opens = frame.get_column("open_time").dt.epoch("ms").to_numpy()
    closes = frame.get_column("close_time").dt.epoch("ms").to_numpy()
    problem = _grid_problem(opens, closes, interval)
    if problem:
        return problem
    # Every row inside one of the files' days; with ascending unique times this leaves only a
    # bar filed under the wrong present day, which is still a correct bar. The times ascend,
    # so the distinct days are where the day number changes (O(n), no sort).
    days = opens // DAY_MS
    distinct = {int(days[0]), *days[1:][np.diff(days) != 0].tolist()}
    if not distinct <= {period_bounds(k)[0] // DAY_MS for k in keys}:
        return "outside"
    return ""


def _grid_problem(opens: np.ndarray, closes: np.ndarray, interval: Interval) -> str:
    if len(opens) > 1 and not bool(np.all(np.diff(opens) > 0)):
        return "holding repeated or unsorted open times"
    if not bool(interval.on_grid_mask(opens).all()):
        return f"holding open times off the {interval.value} grid"
    if interval.is_month:
        nexts = np.array([interval.next_open_ms(int(t)) for t in opens], dtype=np.int64)
    else:
        nexts = opens + interval.fixed_ms
    if not bool(np.all(closes == nexts - 1)):
        return f"holding close times that are not open time + {interval.value} - 1 ms"
    return ""
