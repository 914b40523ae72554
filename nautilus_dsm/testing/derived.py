"""Mark, index and premium-index klines of the imitation, derived from its klines.

Deterministic, so tests can assert exact Decimals: the mark price kline is the kline's prices
``MARK_OFFSET_TICKS`` ticks higher, the index price kline ``INDEX_OFFSET_TICKS`` lower (never
below one tick), both with zero volumes (Binance prints ``"0"`` there) and the kline's trade count
as the "number of basic data"; the premium-index kline is a small signed number per open time
(8 decimals, negative about half the time). REST rows and Vision CSVs of these datasets carry the
klines' 12 fields; the CSVs have the futures header.
"""

from __future__ import annotations

import io

import numpy as np
import polars as pl

from nautilus_dsm.common.datasets import Dataset
from nautilus_dsm.testing.klines import UNIT, KlineSpec, splitmix64

MARK_OFFSET_TICKS = 3
INDEX_OFFSET_TICKS = 2
_PRICES = ("open", "high", "low", "close")
_ZEROED = ("volume", "quote_volume", "taker_buy_base_volume", "taker_buy_quote_volume")


def _premium_units(times: np.ndarray) -> np.ndarray:
    """Return a signed premium in 1e-8 units at each time (|p| < 0.0002)."""
    h = splitmix64(times.astype(np.uint64) ^ np.uint64(0x5EED))
    return (h % np.uint64(40001)).astype(np.int64) - 20000


def derive(raw: pl.DataFrame, dataset: Dataset, ks: KlineSpec) -> pl.DataFrame:
    """Return the raw rows (1e-8 integer units) of ``dataset`` from the raw klines ``raw``."""
    if dataset is Dataset.KLINES or len(raw) == 0:
        return raw
    zeros = [pl.lit(0, pl.Int64).alias(name) for name in _ZEROED]
    if dataset is Dataset.PREMIUM_INDEX_KLINES:
        opens = raw["open_time"].to_numpy()
        o = _premium_units(opens)
        c = _premium_units(raw["close_time"].to_numpy() + 1)
        return raw.with_columns(
            pl.Series("open", o),
            pl.Series("close", c),
            pl.Series("high", np.maximum(o, c) + 7),
            pl.Series("low", np.minimum(o, c) - 5),
            *zeros,
        )
    tick = ks.tick_units
    if dataset is Dataset.MARK_PRICE_KLINES:
        shifted = [(pl.col(p) + MARK_OFFSET_TICKS * tick).alias(p) for p in _PRICES]
    else:
        shifted = [
            pl.max_horizontal(pl.col(p) - INDEX_OFFSET_TICKS * tick, pl.lit(tick)).alias(p)
            for p in _PRICES
        ]
    return raw.with_columns(*shifted, *zeros)


def signed_decimal(column: str, decimals: int) -> pl.Expr:
    """Signed int64 count of 1e-8 -> decimal string with ``decimals`` decimals (exact)."""
    col = pl.col(column)
    magnitude = col.abs()
    whole = (magnitude // UNIT).cast(pl.String)
    sign = pl.when(col < 0).then(pl.lit("-")).otherwise(pl.lit(""))
    if decimals == 0:
        return pl.concat_str(sign, whole).alias(column)
    frac = ((magnitude % UNIT) // 10 ** (8 - decimals)).cast(pl.String).str.zfill(decimals)
    return pl.concat_str(sign, whole, pl.lit("."), frac).alias(column)


def _price_decimals(dataset: Dataset, ks: KlineSpec) -> int:
    return 8 if dataset is Dataset.PREMIUM_INDEX_KLINES else ks.price_decimals


def _table(raw: pl.DataFrame, dataset: Dataset, ks: KlineSpec) -> pl.DataFrame:
    decimals = _price_decimals(dataset, ks)
    return raw.select(
        "open_time",
        *[signed_decimal(p, decimals) for p in _PRICES],
        pl.lit("0").alias("volume"),
        "close_time",
        pl.lit("0").alias("quote_volume"),
        pl.col("trades").alias("count"),
        pl.lit("0").alias("taker_buy_volume"),
        pl.lit("0").alias("taker_buy_quote_volume"),
        pl.lit("0").alias("ignore"),
    )


def derived_rest_rows(
    raw: pl.DataFrame, dataset: Dataset, ks: KlineSpec
) -> list[tuple[object, ...]]:
    """Return derived raw rows -> Binance's 12-field JSON arrays."""
    return list(_table(raw, dataset, ks).iter_rows())


def derived_vision_csv(raw: pl.DataFrame, dataset: Dataset, ks: KlineSpec) -> bytes:
    """Return derived raw rows -> a Vision CSV with the futures header."""
    buffer = io.BytesIO()
    _table(raw, dataset, ks).write_csv(buffer, include_header=True, quote_style="never")
    return buffer.getvalue()


def expected_frame(raw: pl.DataFrame, dataset: Dataset) -> pl.DataFrame:
    """Return derived raw rows -> FRAME_SCHEMA (what a perfect client returns)."""
    from nautilus_dsm.dsm.schema import COLUMNS, FRAME_SCHEMA

    values = [signed_decimal(p, 8).cast(FRAME_SCHEMA[p]) for p in _PRICES]
    zeros = [pl.lit(0).cast(FRAME_SCHEMA[z]).alias(z) for z in _ZEROED]
    del dataset  # every derived dataset has the same frame shape
    return raw.select(
        pl.col("open_time").cast(FRAME_SCHEMA["open_time"]),
        pl.col("close_time").cast(FRAME_SCHEMA["close_time"]),
        *values,
        *zeros,
        pl.col("trades"),
    ).select(COLUMNS)
