"""Labelled synthetic bars for gaps no source can fill (opt-in, off by default).

A gap in Binance's history (an exchange outage, a delisting pause) is a fact about the market, so
by default nautilus-dsm reports it and publishes real bars only. Some strategies prefer a regular
grid; for them ``DSMDataClientConfig(synthetic_fallback=True)`` fills each missing open time with a
*flat* bar: ``open = high = low = close =`` the last known real close, every volume and the trade
count ``0``. The scheme is deterministic and uses no information from the future (no look-ahead):
a gap before the first real bar is filled only when a previous close is supplied, otherwise it is
left empty and reported as unfilled. Prices are then rounded to the instrument's tick and sizes to
its step by the ordinary conversion (``nautilus_dsm.bars.convert_frame``), like every other bar.

Everything here is pure: frames in, frames out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np
import polars as pl

from nautilus_dsm.common import Interval
from nautilus_dsm.dsm.schema import COLUMNS, DECIMAL, FRAME_SCHEMA, TIME

SYNTHETIC = "synthetic"
_VOLUME_COLUMNS = ("volume", "quote_volume", "taker_buy_base_volume", "taker_buy_quote_volume")
_PRICE_COLUMNS = ("open", "high", "low", "close")


@dataclass(frozen=True)
class SyntheticFill:
    """The result of :func:`fill_gaps`.

    Attributes
    ----------
    frame : pl.DataFrame
        The real rows plus the synthetic ones, in ``FRAME_SCHEMA``, sorted by ``open_time``.
    synthetic_open_ms : list[int]
        Open times (epoch ms) of every synthetic row, ascending: what to log and count.
    unfilled_open_ms : list[int]
        Missing open times left empty because no earlier close was known.

    """

    frame: pl.DataFrame
    synthetic_open_ms: list[int] = field(default_factory=list)
    unfilled_open_ms: list[int] = field(default_factory=list)

    @property
    def count(self) -> int:
        """Number of synthetic bars added."""
        return len(self.synthetic_open_ms)


def grid_open_times_ms(interval: Interval, start_ms: int, end_ms: int) -> np.ndarray:
    """Every bar open time in ``[start_ms, end_ms)`` on the interval's grid, as int64."""
    if interval.is_month:
        return np.asarray(interval.open_times_ms(start_ms, end_ms), dtype=np.int64)
    first = interval.ceil_ms(start_ms)
    if first >= end_ms:
        return np.empty(0, dtype=np.int64)
    return np.arange(first, end_ms, interval.fixed_ms, dtype=np.int64)


def missing_open_times_ms(
    frame: pl.DataFrame,
    interval: Interval,
    start_ms: int,
    end_ms: int,
) -> np.ndarray:
    """Grid open times in ``[start_ms, end_ms)`` that ``frame`` has no row for, ascending."""
    grid = grid_open_times_ms(interval, start_ms, end_ms)
    if frame.is_empty() or grid.size == 0:
        return grid
    have = frame["open_time"].dt.epoch("ms").to_numpy()
    return grid[~np.isin(grid, have)]


def fill_gaps(
    frame: pl.DataFrame,
    interval: Interval,
    start_ms: int,
    end_ms: int,
    *,
    previous_close: Decimal | None = None,
    first_open_ms: int | None = None,
) -> SyntheticFill:
    """Fill every missing open time in ``[start_ms, end_ms)`` with a flat synthetic bar.

    Parameters
    ----------
    frame : pl.DataFrame
        Real klines in ``FRAME_SCHEMA`` (closed bars only; the caller caps ``end_ms`` at now).
    interval : Interval
        The bar interval (the grid: 1w opens Monday, 1M on calendar months).
    start_ms, end_ms : int
        The range ``[start_ms, end_ms)`` whose open times should all be present.
    previous_close : Decimal, optional
        The last real close before ``start_ms``; without it a leading gap stays unfilled.
    first_open_ms : int, optional
        The instrument's first bar (listing); nothing is generated before it.

    Returns
    -------
    SyntheticFill

    """
    lower = start_ms if first_open_ms is None else max(start_ms, first_open_ms)
    missing = missing_open_times_ms(frame, interval, lower, end_ms)
    real = frame.select(COLUMNS).cast(FRAME_SCHEMA)
    if missing.size == 0:
        return SyntheticFill(real.sort("open_time"))

    if interval.is_month:
        closes = np.asarray([interval.next_open_ms(int(t)) - 1 for t in missing], dtype=np.int64)
    else:
        closes = missing + (interval.fixed_ms - 1)
    skeleton = pl.DataFrame(
        {
            "open_time": pl.Series(missing, dtype=pl.Int64).cast(TIME),
            "close_time": pl.Series(closes, dtype=pl.Int64).cast(TIME),
        }
    )
    combined = (
        pl.concat(
            [
                real.with_columns(pl.lit(False).alias("_synthetic")),
                skeleton.with_columns(pl.lit(True).alias("_synthetic")),
            ],
            how="diagonal_relaxed",
        )
        .sort("open_time")
        .with_columns(pl.col("close").forward_fill().cast(DECIMAL).alias("_fill"))
    )
    if previous_close is not None:
        combined = combined.with_columns(
            pl.col("_fill").fill_null(pl.lit(previous_close, dtype=DECIMAL))
        )
    unfilled = combined.filter(pl.col("_synthetic") & pl.col("_fill").is_null())
    combined = combined.filter(~(pl.col("_synthetic") & pl.col("_fill").is_null()))
    synthetic = pl.col("_synthetic")
    zero = pl.lit(Decimal(0), dtype=DECIMAL)
    out = combined.with_columns(
        *[
            pl.when(synthetic).then(pl.col("_fill")).otherwise(pl.col(c)).alias(c)
            for c in _PRICE_COLUMNS
        ],
        *[pl.when(synthetic).then(zero).otherwise(pl.col(c)).alias(c) for c in _VOLUME_COLUMNS],
        pl.when(synthetic)
        .then(pl.lit(0, dtype=pl.Int64))
        .otherwise(pl.col("trades"))
        .alias("trades"),
    )
    synthetic_ms = out.filter(synthetic)["open_time"].dt.epoch("ms").to_list()
    return SyntheticFill(
        frame=out.select(COLUMNS).cast(FRAME_SCHEMA),
        synthetic_open_ms=synthetic_ms,
        unfilled_open_ms=unfilled["open_time"].dt.epoch("ms").to_list(),
    )
