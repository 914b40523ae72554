"""Binance klines -> NautilusTrader bars: BarType <-> Interval, exact precision, fast conversion.

Every price and size is rounded to the instrument's tick (``price_increment``) and step
(``size_increment``) and carries exactly the instrument's precision: a bar at another precision
aborts a backtest, and the catalog silently re-quantises it. Decimal input is converted with
exact integer arithmetic; float input is rounded to the tick multiple nearest to the float's
exact binary value (ties away from zero, like NautilusTrader's ``Price(float, precision)``),
never through string formatting. Bars are stamped at their close, ``open + interval`` (the next
calendar month's open for ``1M``), in exact integer nanoseconds.

Rows that cannot be a bar (an open time off the interval grid, a null, NaN or negative value,
broken OHLC) are never dropped silently: :func:`convert_frame` returns them with a reason and
counts them in ``success_rate``; :func:`frame_to_bars` and :func:`frame_to_catalog_table` refuse
the frame, naming them.

Speed: raws (``value * 10**16`` as little-endian int128, the high-precision build's fixed-point
representation) are computed vectorised with numpy, in int64 for ordinary values and with 32-bit
limbs for huge ones (PEPE/SHIB volumes), exactly either way. Bars are then materialised by
NautilusTrader's own ``capsule_to_list`` from a block of ``Data_t`` records (the C layout its
Rust catalog reader hands over). The layout is not hard-coded: it is probed once per process
from a genuine Rust ``CVec`` and a genuine pyo3 ``Bar``, then self-checked field by field against
``Bar.from_raw``; if anything differs the module falls back to a plain ``Bar.from_raw`` loop
(same results, slower).
"""

from __future__ import annotations

import ctypes
import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np
import polars as pl
import pyarrow as pa
from nautilus_trader.core import nautilus_pyo3
from nautilus_trader.model.data import Bar, BarSpecification, BarType, capsule_to_list
from nautilus_trader.model.enums import AggregationSource, BarAggregation, PriceType
from nautilus_trader.model.identifiers import InstrumentId
from nautilus_trader.model.instruments import Instrument
from nautilus_trader.model.objects import FIXED_PRECISION, PRICE_MAX, QUANTITY_MAX

from nautilus_dsm.common import Interval
from nautilus_dsm.errors import InvalidInput

__all__ = [
    "BarConversion",
    "CatalogConversion",
    "bar_close_ns",
    "bar_specification_for",
    "bar_type_for",
    "catalog_schema",
    "convert_frame",
    "convert_frame_to_catalog_table",
    "frame_to_bars",
    "frame_to_catalog_table",
    "interval_for",
]

_log = logging.getLogger(__name__)

_SCALE = 10**FIXED_PRECISION  # raw = value * 10**16 in the high-precision build
_PRICE_RAW_MAX = int(PRICE_MAX) * _SCALE
_QUANTITY_RAW_MAX = int(QUANTITY_MAX) * _SCALE
_NS_PER_MS = 1_000_000
_PRICE_COLUMNS = ("open", "high", "low", "close")
_VALUE_COLUMNS = (*_PRICE_COLUMNS, "volume")
_REQUIRED_COLUMNS = ("open_time", *_VALUE_COLUMNS)

# --------------------------------------------------------------------------------------------
# BarType <-> Interval
# --------------------------------------------------------------------------------------------

_UNIT_AGGREGATION: dict[str, BarAggregation] = {
    "s": BarAggregation.SECOND,
    "m": BarAggregation.MINUTE,
    "h": BarAggregation.HOUR,
    "d": BarAggregation.DAY,
    "w": BarAggregation.WEEK,
    "M": BarAggregation.MONTH,
}
_INTERVAL_BY_SPEC: dict[tuple[int, BarAggregation], Interval] = {
    (interval.step, _UNIT_AGGREGATION[interval.unit]): interval for interval in Interval
}


def bar_specification_for(interval: Interval | str) -> BarSpecification:
    """Return the ``BarSpecification`` of a Binance interval (``1h`` -> ``1-HOUR-LAST``)."""
    return bar_type_for("BINANCE.BINANCE", interval).spec


def bar_type_for(instrument_id: InstrumentId | str, interval: Interval | str) -> BarType:
    """Return the EXTERNAL bar type of a Binance kline stream.

    ``bar_type_for("BTCUSDT-PERP.BINANCE", "1m")`` is
    ``BTCUSDT-PERP.BINANCE-1-MINUTE-LAST-EXTERNAL``: Binance aggregates klines from trades
    (LAST) on its side (EXTERNAL).
    """
    iv = Interval.parse(interval)
    if not isinstance(instrument_id, InstrumentId):
        try:
            instrument_id = InstrumentId.from_str(str(instrument_id))
        except ValueError as exc:
            raise InvalidInput(
                f"invalid instrument id {instrument_id!r}: {exc}; "
                "use SYMBOL.VENUE, e.g. BTCUSDT-PERP.BINANCE"
            ) from exc
    # Parsed from the string: the Cython BarSpecification constructor refuses 3-DAY (it wants
    # DAY steps dividing 1), while the parser, the engine and the catalog accept it.
    spec = f"{iv.step}-{_UNIT_AGGREGATION[iv.unit].name}-LAST-EXTERNAL"
    return BarType.from_str(f"{instrument_id}-{spec}")


def interval_for(bar_type: BarType | str) -> Interval:
    """Return the Binance interval of a bar type; refuse bar types Binance has no kline for."""
    bar_type = _parse_bar_type(bar_type)
    spec = bar_type.spec
    if bar_type.is_composite():
        raise InvalidInput(
            f"bar type {bar_type} is composite; Binance serves plain klines, "
            f"use {_suggest(bar_type)} and aggregate internally if needed"
        )
    if bar_type.aggregation_source != AggregationSource.EXTERNAL:
        raise InvalidInput(
            f"bar type {bar_type} is INTERNAL (aggregated by Nautilus); Binance klines are "
            f"EXTERNAL bars, use {_suggest(bar_type)}"
        )
    if spec.price_type != PriceType.LAST:
        raise InvalidInput(
            f"bar type {bar_type} aggregates {spec.price_type.name} prices; Binance klines "
            f"aggregate trades, use the LAST price type: {_suggest(bar_type)}"
        )
    aggregation = BarAggregation(spec.aggregation)
    key = (spec.step, aggregation)
    if key in _INTERVAL_BY_SPEC:
        return _INTERVAL_BY_SPEC[key]
    same_unit = [f"{step}-{agg.name}" for (step, agg) in _INTERVAL_BY_SPEC if agg == aggregation]
    if same_unit:
        hint = "use one of " + ", ".join(same_unit)
    else:
        hint = (
            f"{aggregation.name} bars have no Binance kline; use a time bar "
            "(SECOND/MINUTE/HOUR/DAY/WEEK/MONTH) or aggregate them INTERNAL from trades"
        )
    raise InvalidInput(f"Binance has no kline for {bar_type.spec} ({bar_type}); {hint}")


def _parse_bar_type(bar_type: BarType | str) -> BarType:
    if isinstance(bar_type, BarType):
        return bar_type
    try:
        return BarType.from_str(str(bar_type))
    except ValueError as exc:
        raise InvalidInput(
            f"invalid bar type {bar_type!r}: {exc}; use e.g. "
            "BTCUSDT-PERP.BINANCE-1-MINUTE-LAST-EXTERNAL"
        ) from exc


def _suggest(bar_type: BarType) -> str:
    key = (bar_type.spec.step, BarAggregation(bar_type.spec.aggregation))
    interval = _INTERVAL_BY_SPEC.get(key, Interval.MINUTE_1)
    return str(bar_type_for(bar_type.instrument_id, interval))


# --------------------------------------------------------------------------------------------
# Close timestamps
# --------------------------------------------------------------------------------------------


def bar_close_ns(open_ms: np.ndarray | int, interval: Interval | str) -> np.ndarray | int:
    """Return bar close times (= ``ts_event`` = ``ts_init``) in exact integer nanoseconds.

    The close is the next bar's open: ``open + interval``, the next calendar month's open for
    ``1M``. An ``int`` gives an ``int``; an array gives a ``uint64`` array.
    """
    iv = Interval.parse(interval)
    if isinstance(open_ms, (int, np.integer)):
        value = int(open_ms)
        if value < 0:
            raise InvalidInput(f"open time {value} ms is before 1970; bars need epoch times >= 0")
        return iv.next_open_ms(value) * _NS_PER_MS
    arr = np.asarray(open_ms, dtype=np.int64)
    if arr.size and int(arr.min()) < 0:
        raise InvalidInput(
            f"open time {int(arr.min())} ms is before 1970; bars need epoch times >= 0"
        )
    if iv.is_month:
        months = arr.astype("datetime64[ms]").astype("datetime64[M]") + np.timedelta64(1, "M")
        close_ms = months.astype("datetime64[ms]").astype(np.int64)
    else:
        close_ms = arr + iv.fixed_ms
    return close_ms.astype(np.uint64) * np.uint64(_NS_PER_MS)


# --------------------------------------------------------------------------------------------
# Frame normalisation
# --------------------------------------------------------------------------------------------


def _to_polars(frame: Any) -> pl.DataFrame:
    if isinstance(frame, pl.DataFrame):
        df = frame
    else:
        try:
            import pandas as pd
        except ImportError:  # pragma: no cover - pandas ships with nautilus_trader
            pd = None
        if pd is None or not isinstance(frame, pd.DataFrame):
            raise InvalidInput(
                f"expected a polars or pandas DataFrame of klines, got {type(frame).__name__}; "
                "pass FetchResult.frame or a DataFrame with open_time, open, high, low, close, "
                "volume"
            )
        if "open_time" not in frame.columns and frame.index.name == "open_time":
            frame = frame.reset_index()
        duplicated = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
        if duplicated:
            # polars refuses them with a raw error; which "open" is the price would be a guess
            raise InvalidInput(
                f"kline frame has duplicate column name(s) {duplicated}; keep one column per "
                "name (e.g. frame.loc[:, ~frame.columns.duplicated()]) or rename the others"
            )
        df = pl.from_pandas(frame)
    missing = [c for c in _REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise InvalidInput(
            f"kline frame lacks column(s) {', '.join(missing)} (has: {', '.join(df.columns)}); "
            "bars need open_time, open, high, low, close, volume"
        )
    return df


def _open_ms(df: pl.DataFrame) -> np.ndarray:
    col = df.get_column("open_time")
    if not isinstance(col.dtype, pl.Datetime):
        raise InvalidInput(
            f"open_time has dtype {col.dtype}, expected a datetime (UTC or naive meaning UTC); "
            "convert it, e.g. pl.col('open_time').cast(pl.Datetime('ms', 'UTC'))"
        )
    if col.null_count():
        first = int(np.flatnonzero(col.is_null().to_numpy())[0])
        raise InvalidInput(
            f"open_time has {col.null_count()} null value(s) (first at row {first}); "
            "every kline needs its open time, drop those rows first"
        )
    raw = col.to_physical().to_numpy().astype(np.int64, copy=False)
    per_ms = {"ms": 1, "us": 1_000, "ns": 1_000_000}[col.dtype.time_unit]
    if per_ms == 1:
        return raw
    off = np.flatnonzero(raw % per_ms)
    if off.size:
        i = int(off[0])
        raise InvalidInput(
            f"open_time {col[i]} (row {i}) is not a whole millisecond; Binance open times are "
            "milliseconds, floor them first: pl.col('open_time').dt.truncate('1ms')"
        )
    return raw // per_ms


def _check_order(open_ms: np.ndarray, df: pl.DataFrame) -> None:
    if open_ms.size < 2:
        return
    steps = np.diff(open_ms)
    bad = np.flatnonzero(steps <= 0)
    if not bad.size:
        return
    i = int(bad[0])
    times = df.get_column("open_time")
    if steps[i] == 0:
        dups = int(np.count_nonzero(steps == 0))
        raise InvalidInput(
            f"kline frame has {dups} duplicate open_time(s), first {times[i + 1]} at rows "
            f"{i} and {i + 1}; drop them first, e.g. "
            "frame.unique('open_time', keep='last', maintain_order=True)"
        )
    raise InvalidInput(
        f"kline frame is not sorted by open_time: row {i + 1} ({times[i + 1]}) comes after "
        f"row {i} ({times[i]}); sort it first: frame.sort('open_time')"
    )


# --------------------------------------------------------------------------------------------
# Exact raws: value * 10**16 as (hi, lo) 64-bit limbs of a non-negative int128
# --------------------------------------------------------------------------------------------


class _Raws(NamedTuple):
    """One column as fixed-point raws plus why rows are unusable (all arrays have len n)."""

    hi: np.ndarray  # uint64, upper limb (0 for unusable rows)
    lo: np.ndarray  # uint64, lower limb
    null: np.ndarray  # bool
    nan: np.ndarray  # bool: NaN or +/-inf
    negative: np.ndarray  # bool: value < 0
    too_large: np.ndarray  # bool: raw above the Price/Quantity maximum


_MASK32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)


def _mul_u64(a: np.ndarray, b: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact 128-bit product of uint64 ``a`` (< 2**63) and ``0 < b < 2**63`` as (hi, lo)."""
    a = a.astype(np.uint64, copy=False)
    b0, b1 = np.uint64(b & 0xFFFFFFFF), np.uint64(b >> 32)
    a0 = a & _MASK32
    a1 = a >> _SHIFT32
    p00 = a0 * b0
    if b1 == 0:  # the usual case: b = 10**(16 - k) with k >= 7
        mid2 = a1 * b0 + (p00 >> _SHIFT32)  # < 2**63 + 2**32: no wrap
        return mid2 >> _SHIFT32, (p00 & _MASK32) | (mid2 << _SHIFT32)
    mid = a0 * b1 + (p00 >> _SHIFT32)  # < 2**63 + 2**32: no wrap
    mid2 = a1 * b0 + (mid & _MASK32)  # < 2**63 + 2**32: no wrap
    lo = (p00 & _MASK32) | (mid2 << _SHIFT32)
    hi = a1 * b1 + (mid >> _SHIFT32) + (mid2 >> _SHIFT32)
    return hi, lo


def _increment_units(increment_raw: int) -> tuple[int, int]:
    """Split a raw increment into (decimals d, T) with increment = T * 10**-d, T minimal."""
    d = FIXED_PRECISION
    t = increment_raw
    while d > 0 and t % 10 == 0:
        t //= 10
        d -= 1
    return d, t


def _round_half_up(num: int, den: int) -> int:
    """Nearest integer to num/den for num >= 0, den > 0, ties up (= away from zero)."""
    return (2 * num + den) // (2 * den)


def _limbs(value: int) -> tuple[int, int]:
    """(hi, lo) of a non-negative raw; anything beyond 128 bits saturates (flagged too large)."""
    if value >= 1 << 128:
        return 0xFFFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF
    return value >> 64, value & 0xFFFFFFFFFFFFFFFF


def _decimal_raws(
    x_lo: np.ndarray, x_hi: np.ndarray, scale: int, increment_raw: int
) -> tuple[np.ndarray, np.ndarray]:
    """Raws of non-negative int128 ``x * 10**-scale`` on the increment's grid.

    Rows whose scaled value fits comfortably in int64 (every Binance price, and volumes up to
    ~4.6e10 at 8 decimals) are done with int64 arithmetic; the rest (PEPE/SHIB volumes) with
    32-bit limbs in numpy (:func:`_wide_decimal_raws`), still vectorised and exact.
    """
    d, _ = _increment_units(increment_raw)
    k = max(scale, d)
    up = 10 ** (k - scale)
    unit_t = increment_raw // 10 ** (FIXED_PRECISION - k)  # increment in 10**-k units
    if unit_t >= 1 << 62:  # an increment beyond int64 units (>= 1000 at 16 decimals)
        fast = np.zeros(len(x_lo), dtype=bool)
        hi, lo = np.zeros(len(x_lo), dtype=np.uint64), np.zeros(len(x_lo), dtype=np.uint64)
        all_fast = False
    else:
        fast = (x_hi == 0) & (x_lo < np.uint64((1 << 62) // up))
        all_fast = bool(fast.all())
        xk = (x_lo if all_fast else np.where(fast, x_lo, np.uint64(0))).view(np.int64)
        if up != 1:
            xk = xk * up
        if unit_t > 1:
            r = xk % unit_t
            if r.any():  # off the grid: round half up
                xk = xk - r + np.where(2 * r >= unit_t, unit_t, 0)
        hi, lo = _mul_u64(xk.view(np.uint64), 10 ** (FIXED_PRECISION - k))
    if all_fast:
        return hi, lo
    slow = np.flatnonzero(~fast)
    wide = _wide_decimal_raws(x_lo[slow], x_hi[slow], scale, increment_raw)
    if wide is not None:
        hi[slow], lo[slow] = wide
        return hi, lo
    for i in slow:  # an increment too exotic for 32-bit factors: exact Python ints
        x = (int(x_hi[i]) << 64) | int(x_lo[i])
        raw = _round_half_up(x * 10**FIXED_PRECISION, increment_raw * 10**scale) * increment_raw
        hi[i], lo[i] = _limbs(raw)
    return hi, lo


_LIMB_MAX_FACTOR = 1 << 32
_POW10_CHUNK = 9  # 10**9 < 2**32: one limb-sized factor


def _small_factors(n: int) -> list[int] | None:
    """Split ``n = T * 10**m`` into factors below 2**32 (None when ``T`` itself is larger)."""
    m = 0
    while n % 10 == 0 and n > 1:
        n //= 10
        m += 1
    if n >= _LIMB_MAX_FACTOR:
        return None
    factors = [n] if n > 1 else []
    while m > 0:
        e = min(m, _POW10_CHUNK)
        factors.append(10**e)
        m -= e
    return factors


def _limbs32(x_lo: np.ndarray, x_hi: np.ndarray) -> list[np.ndarray]:
    """Four uint64 arrays holding the 32-bit limbs of (hi, lo), least significant first."""
    lo = x_lo.astype(np.uint64, copy=False)
    hi = x_hi.astype(np.uint64, copy=False)
    return [lo & _MASK32, lo >> _SHIFT32, hi & _MASK32, hi >> _SHIFT32]


def _limbs_mul_small(limbs: list[np.ndarray], factor: int, overflow: np.ndarray) -> np.ndarray:
    """In place: limbs *= factor (< 2**32); returns rows whose product left 128 bits."""
    f = np.uint64(factor)
    carry = np.zeros_like(limbs[0])
    for i in range(4):
        p = limbs[i] * f + carry  # <= (2**32 - 1)**2 + 2**32 - 1 < 2**64: no wrap
        limbs[i] = p & _MASK32
        carry = p >> _SHIFT32
    return overflow | (carry != 0)


def _limbs_divmod_small(limbs: list[np.ndarray], divisor: int) -> np.ndarray:
    """In place: limbs //= divisor (< 2**32); returns the remainders."""
    f = np.uint64(divisor)
    rem = np.zeros_like(limbs[0])
    for i in range(3, -1, -1):
        cur = (rem << _SHIFT32) | limbs[i]  # rem < divisor < 2**32: fits in 64 bits
        limbs[i] = cur // f
        rem = cur - limbs[i] * f
    return rem


def _wide_decimal_raws(
    x_lo: np.ndarray, x_hi: np.ndarray, scale: int, increment_raw: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """Exact raws of any non-negative int128 ``x * 10**-scale``, vectorised with 32-bit limbs.

    ``raw = round_half_up(x * 10**(k - scale) / unit) * increment_raw`` where ``unit`` is the
    increment in ``10**-k`` units: a product and a mixed-radix division by factors below
    2**32, so every intermediate fits in uint64. A raw beyond 128 bits saturates (and is then
    flagged too large). Returns None when the increment cannot be split into such factors.
    """
    d, _ = _increment_units(increment_raw)
    k = max(scale, d)
    unit = increment_raw // 10 ** (FIXED_PRECISION - k)
    up_factors = _small_factors(10 ** (k - scale))
    unit_factors = _small_factors(unit)
    raw_factors = _small_factors(increment_raw)
    if up_factors is None or unit_factors is None or raw_factors is None or unit >= 1 << 63:
        return None
    limbs = _limbs32(x_lo, x_hi)
    overflow = np.zeros(len(x_lo), dtype=bool)
    for f in up_factors:
        overflow = _limbs_mul_small(limbs, f, overflow)
    # x = f1 * q1 + r1, q1 = f2 * q2 + r2, ...: x mod (f1 f2 ...) = r1 + f1 r2 + f1 f2 r3 ...
    rem = np.zeros(len(x_lo), dtype=np.uint64)
    radix = 1
    for f in unit_factors:
        rem += _limbs_divmod_small(limbs, f) * np.uint64(radix)
        radix *= f
    carry = (rem >= np.uint64(unit) - rem).astype(np.uint64)  # 2 * rem >= unit: ties up
    for i in range(4):
        s = limbs[i] + carry
        limbs[i] = s & _MASK32
        carry = s >> _SHIFT32
    overflow |= carry != 0
    for f in raw_factors:
        overflow = _limbs_mul_small(limbs, f, overflow)
    hi = (limbs[3] << _SHIFT32) | limbs[2]
    lo = (limbs[1] << _SHIFT32) | limbs[0]
    if overflow.any():
        saturated = np.uint64(0xFFFFFFFFFFFFFFFF)
        hi = np.where(overflow, saturated, hi)
        lo = np.where(overflow, saturated, lo)
    return hi, lo


_SPLIT = 134217729.0  # 2**27 + 1, Dekker's splitter for float64


def _float_raws(v: np.ndarray, increment_raw: int) -> tuple[np.ndarray, np.ndarray]:
    """Raws of finite non-negative floats on the increment's grid, exact for the binary value.

    ``p + e == v * 10**d`` exactly (Dekker's TwoProduct); the nearest multiple of ``T`` is then
    decided from exact residuals, so ties and near-ties round correctly. Rows with
    ``v * 10**d >= 2**50`` are done with ``Fraction``.
    """
    d, t = _increment_units(increment_raw)
    b = float(10**d)  # exact: 10**d <= 10**16 < 2**53 * 2**16
    b_hi = _SPLIT * b - (_SPLIT * b - b)
    b_lo = b - b_hi
    with np.errstate(over="ignore", invalid="ignore"):
        p = v * b
        c = _SPLIT * v
        a_hi = c - (c - v)
        a_lo = v - a_hi
        e = ((a_hi * b_hi - p) + a_hi * b_lo + a_lo * b_hi) + a_lo * b_lo
        fast = p < 2.0**50
        p = np.where(fast, p, 0.0)
        e = np.where(fast, e, 0.0)
        tf = float(t)
        n0 = np.rint(p / tf)
        rem = p - n0 * tf  # exact (Sterbenz), |rem| <= T/2 + tiny
        half = tf / 2
        # residual R = rem + e exactly; compare R with +-T/2 without rounding R
        up = (rem - half) >= -e  # R > T/2, or a tie -> away from zero
        down = (rem + half) < -e  # R < -T/2
    units = (n0.astype(np.int64) + up - down) * t  # value in 10**-d units, < 2**51 * T
    hi, lo = _mul_u64(units.view(np.uint64), 10 ** (FIXED_PRECISION - d))
    for i in np.flatnonzero(~fast):
        exact = Fraction(float(v[i])) * _SCALE
        raw = _round_half_up(exact.numerator, exact.denominator * increment_raw) * increment_raw
        hi[i], lo[i] = _limbs(raw)
    return hi, lo


_BLOCK = 1 << 16  # rows per vectorised block: temporaries stay in cache


def _column_raws(series: pl.Series, increment_raw: int, raw_max: int) -> _Raws:
    n = len(series)
    name = series.name
    dtype = series.dtype
    null = series.is_null().to_numpy() if series.null_count() else np.zeros(n, dtype=bool)
    nan = np.zeros(n, dtype=bool)
    hi = np.empty(n, dtype=np.uint64)
    lo = np.empty(n, dtype=np.uint64)
    if isinstance(dtype, pl.Decimal):
        scale = dtype.scale or 0
        if scale > FIXED_PRECISION:
            raise InvalidInput(
                f"column {name} has {scale} decimals, more than Nautilus' {FIXED_PRECISION}; "
                f"cast it first: pl.col('{name}').cast(pl.Decimal(38, {FIXED_PRECISION}))"
            )
        arr = series.cast(pl.Decimal(38, scale)).rechunk().to_arrow()
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        limbs = np.frombuffer(arr.buffers()[1], dtype="<u8")
        limbs = limbs[2 * arr.offset : 2 * (arr.offset + n)].reshape(n, 2)
        x_lo, x_hi = limbs[:, 0], limbs[:, 1]
        negative = x_hi.view(np.int64) < 0
        if null.any():
            negative &= ~null
        unusable = null | negative
        if unusable.any():
            x_lo = np.where(unusable, np.uint64(0), x_lo)
            x_hi = np.where(unusable, np.uint64(0), x_hi)
        for a in range(0, n, _BLOCK):
            b = min(n, a + _BLOCK)
            hi[a:b], lo[a:b] = _decimal_raws(x_lo[a:b], x_hi[a:b], scale, increment_raw)
    elif dtype.is_integer():
        try:
            values = series.cast(pl.Int64, strict=True).to_numpy()
        except pl.exceptions.PolarsError as exc:
            raise InvalidInput(
                f"column {name} ({dtype}) does not fit in Int64: {exc}; "
                f"cast it to pl.Decimal(38, 8) first"
            ) from exc
        values = np.where(null, 0, values).astype(np.int64)
        negative = values < 0
        x_lo = np.where(negative, 0, values).astype(np.uint64)
        zeros = np.zeros(min(n, _BLOCK), dtype=np.uint64)
        for a in range(0, n, _BLOCK):
            b = min(n, a + _BLOCK)
            hi[a:b], lo[a:b] = _decimal_raws(x_lo[a:b], zeros[: b - a], 0, increment_raw)
    elif dtype.is_float():
        values = series.cast(pl.Float64).to_numpy().astype(np.float64, copy=False)
        nan = ~np.isfinite(values) & ~null
        negative = (values < 0) & ~nan & ~null
        clean = np.where(null | nan | negative, 0.0, values)
        for a in range(0, n, _BLOCK):
            b = min(n, a + _BLOCK)
            hi[a:b], lo[a:b] = _float_raws(clean[a:b], increment_raw)
    else:
        raise InvalidInput(
            f"column {name} has dtype {dtype}; prices and volumes must be Decimal, float or "
            f"integer: cast it first, e.g. pl.col('{name}').cast(pl.Decimal(38, 8))"
        )
    # unusable rows have raw 0, so they are never "too large"
    max_hi, max_lo = (np.uint64(x) for x in _limbs(raw_max))
    too_large = (hi > max_hi) | ((hi == max_hi) & (lo > max_lo))
    return _Raws(hi, lo, null, nan, negative, too_large)


def _lt(a: _Raws, b: _Raws) -> np.ndarray:
    return (a.hi < b.hi) | ((a.hi == b.hi) & (a.lo < b.lo))


def _is_zero(a: _Raws) -> np.ndarray:
    return (a.hi == 0) & (a.lo == 0)


# --------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BarConversion:
    """Result of :func:`convert_frame`: the bars and the rows that could not be bars.

    ``invalid`` holds those input rows (all input columns) plus ``row`` (position in the input)
    and ``reason``; ``success_rate = len(bars) / rows`` (1.0 for an empty frame).
    """

    bars: list[Bar]
    rows: int
    invalid: pl.DataFrame
    success_rate: float


class _Prepared(NamedTuple):
    df: pl.DataFrame
    valid: np.ndarray  # bool per input row
    reasons: np.ndarray | None  # str per input row ('' when valid), None when all valid
    raws: tuple[_Raws, ...]  # open, high, low, close, volume
    ts: np.ndarray  # uint64 close ns per input row


def _check_instrument(bar_type: BarType, instrument: Instrument) -> None:
    if bar_type.instrument_id != instrument.id:
        raise InvalidInput(
            f"bar type {bar_type} is for {bar_type.instrument_id}, but the instrument is "
            f"{instrument.id}; use bar_type_for({str(instrument.id)!r}, interval)"
        )
    for what, increment, precision in (
        ("price_increment", instrument.price_increment, instrument.price_precision),
        ("size_increment", instrument.size_increment, instrument.size_precision),
    ):
        raw = int(increment.raw)
        if raw <= 0 or raw % 10 ** (FIXED_PRECISION - precision):
            raise InvalidInput(
                f"instrument {instrument.id} has {what} {increment} that is not positive or "
                f"has more decimals than its precision {precision}; fix the instrument definition"
            )


def _prepare(frame: Any, bar_type: BarType | str, instrument: Instrument) -> _Prepared:
    bar_type = _parse_bar_type(bar_type)
    interval = interval_for(bar_type)
    _check_instrument(bar_type, instrument)
    df = _to_polars(frame)
    open_ms = _open_ms(df)
    _check_order(open_ms, df)
    # A row off the grid is a mis-stamped kline (or the frame has another interval): it cannot
    # be a bar of this type, but it must not cost the other rows their bars.
    off_grid = ~interval.on_grid_mask(open_ms)
    ts = bar_close_ns(open_ms, interval)
    price_raw = int(instrument.price_increment.raw)
    size_raw = int(instrument.size_increment.raw)
    raws = (
        *(_column_raws(df.get_column(c), price_raw, _PRICE_RAW_MAX) for c in _PRICE_COLUMNS),
        _column_raws(df.get_column("volume"), size_raw, _QUANTITY_RAW_MAX),
    )
    o, h, lo_, c, _ = raws

    conditions: list[np.ndarray] = [off_grid]
    reasons: list[str] = [f"off the {interval.value} grid"]
    for label, attr in (
        ("null", "null"),
        ("NaN/inf", "nan"),
        ("negative", "negative"),
        ("above the maximum", "too_large"),
    ):
        for name, r in zip(_VALUE_COLUMNS, raws, strict=True):
            conditions.append(getattr(r, attr))
            if attr == "negative" and name != "volume":
                reasons.append(f"non-positive {name}")
            else:
                reasons.append(f"{label} {name}")
    for name, r in zip(_PRICE_COLUMNS, raws[:4], strict=True):
        conditions.append(_is_zero(r))
        reasons.append(f"non-positive {name} after rounding to tick")
    conditions += [_lt(h, lo_), _lt(h, o) | _lt(h, c), _lt(o, lo_) | _lt(c, lo_)]
    reasons += ["high < low", "high < max(open, close)", "low > min(open, close)"]
    bad = np.logical_or.reduce(conditions) if len(df) else np.zeros(0, dtype=bool)
    why = np.select(conditions, reasons, default="") if bad.any() else None
    return _Prepared(df, ~bad, why, raws, ts)


def _invalid_frame(prep: _Prepared) -> pl.DataFrame:
    idx = np.flatnonzero(~prep.valid)
    out = prep.df[idx].with_columns(
        pl.Series("row", idx, dtype=pl.Int64),
        pl.Series("reason", [] if prep.reasons is None else prep.reasons[idx], dtype=pl.String),
    )
    return out


def _refuse(prep: _Prepared, bar_type: BarType | str) -> None:
    if prep.reasons is None:
        return
    idx = np.flatnonzero(~prep.valid)
    times = prep.df.get_column("open_time")
    first = ", ".join(f"{times[int(i)]} ({prep.reasons[i]})" for i in idx[:3])
    hint = ""
    if any(reason.startswith("off the ") for reason in prep.reasons[idx]):
        hint = (
            "; open times off the grid mean mis-stamped klines or klines of another interval "
            "(then use that interval's bar type)"
        )
    raise InvalidInput(
        f"{idx.size} of {len(prep.df)} kline rows cannot be bars of {bar_type}: {first}"
        f"{', ...' if idx.size > 3 else ''}{hint}; fix or drop those rows, or call "
        "convert_frame(frame, bar_type, instrument) to keep the valid bars and inspect .invalid"
    )


def _selected(prep: _Prepared) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    if prep.reasons is None:
        return [(r.hi, r.lo) for r in prep.raws], prep.ts
    keep = prep.valid
    return [(r.hi[keep], r.lo[keep]) for r in prep.raws], prep.ts[keep]


def convert_frame(frame: Any, bar_type: BarType | str, instrument: Instrument) -> BarConversion:
    """Convert a kline frame to bars, returning the rows that cannot be bars apart.

    Parameters
    ----------
    frame : polars.DataFrame | pandas.DataFrame
        The engine's frame (``FRAME_SCHEMA``) or a DSM-style frame (float prices, int or float
        volume, ``open_time`` UTC or naive-meaning-UTC), sorted by ``open_time``, unique.
        Only ``open_time, open, high, low, close, volume`` are used.
    bar_type : BarType | str
        A Binance kline bar type of ``instrument`` (see :func:`bar_type_for`).
    instrument : Instrument
        Gives the precisions, the tick and the step the values are rounded to.

    Returns
    -------
    BarConversion
        Valid bars in input order; ``invalid`` rows with their ``reason``.
    """
    prep = _prepare(frame, bar_type, instrument)
    bar_type = _parse_bar_type(bar_type)
    limbs, ts = _selected(prep)
    bars = _build_bars(bar_type, instrument.price_precision, instrument.size_precision, limbs, ts)
    rows = len(prep.df)
    return BarConversion(
        bars=bars,
        rows=rows,
        invalid=_invalid_frame(prep),
        success_rate=len(bars) / rows if rows else 1.0,
    )


def frame_to_bars(frame: Any, bar_type: BarType | str, instrument: Instrument) -> list[Bar]:
    """Convert a kline frame to plain ``Bar`` objects at the instrument's precision.

    ``ts_event = ts_init =`` the bar's close. Raises :class:`InvalidInput` when any row cannot
    be a bar (use :func:`convert_frame` to keep the valid ones), when the frame is not sorted
    and unique by ``open_time``, or when its open times are not on the bar type's interval grid.
    """
    prep = _prepare(frame, bar_type, instrument)
    _refuse(prep, bar_type)
    limbs, ts = _selected(prep)
    return _build_bars(
        _parse_bar_type(bar_type), instrument.price_precision, instrument.size_precision, limbs, ts
    )


def catalog_schema(bar_type: BarType | str, instrument: Instrument) -> pa.Schema:
    """The Arrow schema ``ParquetDataCatalog.write_data`` writes for these bars."""
    bar_type = _parse_bar_type(bar_type)
    fields = [pa.field(name, pa.binary(16), nullable=False) for name in _VALUE_COLUMNS]
    fields += [pa.field(name, pa.uint64(), nullable=False) for name in ("ts_event", "ts_init")]
    metadata = {
        "bar_type": str(bar_type),
        "instrument_id": str(bar_type.instrument_id),
        "price_precision": str(instrument.price_precision),
        "size_precision": str(instrument.size_precision),
    }
    return pa.schema(fields, metadata=metadata)


def frame_to_catalog_table(frame: Any, bar_type: BarType | str, instrument: Instrument) -> pa.Table:
    """Return exactly the table ``ParquetDataCatalog.write_data(bars)`` would write.

    Columns ``open high low close volume`` are ``fixed_size_binary(16)`` little-endian int128
    raws, ``ts_event ts_init`` ``uint64``, sorted by ``ts_init``, with the catalog's schema
    metadata. Same checks as :func:`frame_to_bars`.
    """
    prep = _prepare(frame, bar_type, instrument)
    _refuse(prep, bar_type)
    return _catalog_table(prep, bar_type, instrument)


@dataclass(frozen=True)
class CatalogConversion:
    """Result of :func:`convert_frame_to_catalog_table`: the table and the rows left out.

    ``invalid`` holds those input rows (all input columns) plus ``row`` and ``reason``, as in
    :class:`BarConversion`; ``table.num_rows + len(invalid) == rows``.
    """

    table: pa.Table
    rows: int
    invalid: pl.DataFrame


def convert_frame_to_catalog_table(
    frame: Any, bar_type: BarType | str, instrument: Instrument
) -> CatalogConversion:
    """Convert a kline frame to the catalog table, setting the rows that cannot be bars apart.

    Same table as :func:`frame_to_catalog_table` for the valid rows; rows that cannot be bars
    (OHLC-insane such as high < low, off the grid, null, NaN, negative, out of range) are
    returned in ``invalid`` with their reason instead of failing the whole frame, so a caller
    such as catalog ingestion can report them and go on. A frame that is not sorted and unique
    by ``open_time``, or a bar type that does not fit the instrument, still raises
    :class:`InvalidInput`.
    """
    prep = _prepare(frame, bar_type, instrument)
    return CatalogConversion(
        table=_catalog_table(prep, bar_type, instrument),
        rows=len(prep.df),
        invalid=_invalid_frame(prep),
    )


def _catalog_table(prep: _Prepared, bar_type: BarType | str, instrument: Instrument) -> pa.Table:
    limbs, ts = _selected(prep)
    n = len(ts)
    columns: list[pa.Array] = []
    for hi, lo in limbs:
        words = np.empty((n, 2), dtype="<u8")
        words[:, 0] = lo
        words[:, 1] = hi
        columns.append(
            pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), n, [None, pa.py_buffer(words)])
        )
    ts_arr = pa.array(ts, type=pa.uint64())
    columns += [ts_arr, ts_arr]
    return pa.Table.from_arrays(columns, schema=catalog_schema(bar_type, instrument))


# --------------------------------------------------------------------------------------------
# Bar materialisation
# --------------------------------------------------------------------------------------------

_CVEC_NAME = b"nautilus.DataFFI.CVec"
_CHUNK = 1 << 15
_SAFE_ENV = "NAUTILUS_DSM_SAFE_BARS"
# Marker values for the layout probe: distinct, aligned for any precision, OHLC-consistent.
_MARK_RAWS = (30 * _SCALE, 40 * _SCALE, 10 * _SCALE, 20 * _SCALE, 50 * _SCALE)
_MARK_TS_EVENT = 0x0102030405060708
_MARK_TS_INIT = 0x1112131415161718

_capsule_new = ctypes.pythonapi.PyCapsule_New
_capsule_new.restype = ctypes.py_object
_capsule_new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
_capsule_ptr = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_ptr.restype = ctypes.c_void_p
_capsule_ptr.argtypes = [ctypes.py_object, ctypes.c_char_p]


class _Layout(NamedTuple):
    """Where a ``Bar_t`` lives inside NautilusTrader's ``Data_t`` record (byte offsets)."""

    stride: int  # sizeof(Data_t)
    value_words: tuple[int, ...]  # 8-byte word index of open, high, low, close, volume raws
    ts_event_word: int
    ts_init_word: int


_layout_lock = threading.Lock()
_layout_state: dict[str, _Layout | None] = {}


def _fast_layout() -> _Layout | None:
    """The probed ``Data_t`` layout, or None when the fast path is unavailable or disabled."""
    if os.environ.get(_SAFE_ENV):
        return None
    with _layout_lock:
        if "layout" not in _layout_state:
            try:
                layout = _probe_layout()
            except Exception as exc:  # any surprise means: use the safe path
                _log.warning("fast bar path unavailable (%s); using Bar.from_raw", exc)
                layout = None
            _layout_state["layout"] = layout
        return _layout_state["layout"]


def _probe_stride() -> int:
    """sizeof(Data_t), read from a genuine CVec of bars produced by Nautilus' Rust reader."""
    import pyarrow.parquet as pq
    from nautilus_trader.serialization.arrow.serializer import ArrowSerializer

    bar_type = BarType.from_str("PROBE.SIM-1-MINUTE-LAST-EXTERNAL")
    n = 256
    base = 0x5A5A_0000_0000_0000
    bars = [
        Bar.from_raw(bar_type, *[_SCALE] * 4, 0, _SCALE, 0, base + i, base + i) for i in range(n)
    ]
    table = ArrowSerializer.serialize_batch(bars, Bar)
    with tempfile.TemporaryDirectory(prefix="nautilus_dsm_probe_") as tmp:
        path = os.path.join(tmp, "probe.parquet")
        pq.write_table(table, path)
        session = nautilus_pyo3.DataBackendSession(chunk_size=n)
        session.add_file(nautilus_pyo3.NautilusDataType.Bar, "probe", path)
        for chunk in session.to_query_result():
            cvec = _capsule_ptr(chunk, _CVEC_NAME)
            ptr, length, _cap = (ctypes.c_size_t * 3).from_address(cvec)
            if length != n:
                raise RuntimeError(f"probe chunk has {length} bars, expected {n}")
            # n records of >= 16 bytes each: the first n * 16 bytes are inside the block
            words = np.frombuffer(ctypes.string_at(ptr, n * 16), dtype="<u8")
            hits = [np.flatnonzero(words == base + i) for i in range(3)]
            if any(len(h) != 2 for h in hits):  # ts_event and ts_init
                raise RuntimeError("probe bars not found where expected")
            stride = int(hits[1][0] - hits[0][0]) * 8
            if stride <= 0 or int(hits[2][0] - hits[1][0]) * 8 != stride:
                raise RuntimeError("probe records are not evenly spaced")
            return stride
    raise RuntimeError("probe query returned no data")


@lru_cache(maxsize=128)
def _template(bar_type_str: str, price_precision: int, size_precision: int, stride: int) -> bytes:
    """A genuine ``Data_t`` holding a bar of this type and precisions (from a pyo3 Bar)."""
    o, h, lo, c, v = _MARK_RAWS
    price = nautilus_pyo3.Price.from_raw
    bar = nautilus_pyo3.Bar(
        nautilus_pyo3.BarType.from_str(bar_type_str),
        price(o, price_precision),
        price(h, price_precision),
        price(lo, price_precision),
        price(c, price_precision),
        nautilus_pyo3.Quantity.from_raw(v, size_precision),
        _MARK_TS_EVENT,
        _MARK_TS_INIT,
    )
    capsule = bar.as_pycapsule()
    return ctypes.string_at(_capsule_ptr(capsule, None), stride)


def _probe_layout() -> _Layout:
    stride = _probe_stride()
    template = _template("PROBE.SIM-1-MINUTE-LAST-EXTERNAL", 3, 5, stride)
    words = np.frombuffer(template, dtype="<u8")

    def find(value: int, width: int) -> int:
        pattern = value.to_bytes(width, "little")
        pos = template.find(pattern)
        if pos < 0 or pos % 8 or template.find(pattern, pos + 1) >= 0:
            raise RuntimeError(f"marker {value:#x} not found once, 8-aligned, in Data_t")
        return pos // 8

    value_words = tuple(find(raw, 16) for raw in _MARK_RAWS)
    for k, word in enumerate(value_words):
        if template[word * 8 + 16] != (3 if k < 4 else 5):
            raise RuntimeError("precision byte not after the raw value")
    layout = _Layout(stride, value_words, find(_MARK_TS_EVENT, 8), find(_MARK_TS_INIT, 8))
    if words.size * 8 != stride:
        raise RuntimeError("template size mismatch")
    _self_check(layout)
    return layout


def _self_check(layout: _Layout) -> None:
    """Build bars both ways and require every field to agree before trusting the layout."""
    bar_type = BarType.from_str("SELFCHECK.SIM-5-MINUTE-LAST-EXTERNAL")
    raws = [
        (12345 * 10**15, 12400 * 10**15, 12300 * 10**15, 12399 * 10**15, 3 * 10**29 + 10**13),
        (10**29, 10**29, 10**29, 10**29, 0),
        (10**13, 3 * 10**13, 10**13, 2 * 10**13, 5 * 10**13),
    ]
    ts = np.array([1, 2**63 + 5, 2**64 - 1], dtype=np.uint64)
    limbs = []
    for k in range(5):
        col = [_limbs(r[k]) for r in raws]
        limbs.append(
            (np.array([c[0] for c in col], np.uint64), np.array([c[1] for c in col], np.uint64))
        )
    fast = _bars_fast(layout, bar_type, 3, 3, limbs, ts)
    for bar, r, t in zip(fast, raws, ts.tolist(), strict=True):
        ref = Bar.from_raw(bar_type, r[0], r[1], r[2], r[3], 3, r[4], 3, t, t)
        got = (bar.bar_type, bar.open, bar.high, bar.low, bar.close, bar.volume)
        want = (ref.bar_type, ref.open, ref.high, ref.low, ref.close, ref.volume)
        same = (
            got == want
            and [x.raw for x in got[1:]] == [x.raw for x in want[1:]]
            and [x.precision for x in got[1:]] == [x.precision for x in want[1:]]
            and (bar.ts_event, bar.ts_init) == (t, t)
            and bar == ref
            and str(bar) == str(ref)
            and type(bar) is Bar
        )
        if not same:
            raise RuntimeError(f"self-check mismatch: {bar} != {ref}")


def _bars_fast(
    layout: _Layout,
    bar_type: BarType,
    price_precision: int,
    size_precision: int,
    limbs: list[tuple[np.ndarray, np.ndarray]],
    ts: np.ndarray,
) -> list[Bar]:
    template = np.frombuffer(
        _template(str(bar_type), price_precision, size_precision, layout.stride), dtype=np.uint8
    )
    n = len(ts)
    # One block of records, filled from the template once; each chunk overwrites only the
    # values and timestamps, and capsule_to_list copies every record into a new Bar.
    block = np.empty((min(n, _CHUNK), layout.stride), dtype=np.uint8)
    block[:] = template
    words = block.view("<u8")
    bars: list[Bar] = []
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        m = stop - start
        for word, (hi, lo) in zip(layout.value_words, limbs, strict=True):
            words[:m, word] = lo[start:stop]
            words[:m, word + 1] = hi[start:stop]
        words[:m, layout.ts_event_word] = ts[start:stop]
        words[:m, layout.ts_init_word] = ts[start:stop]
        cvec = (ctypes.c_size_t * 3)(block.ctypes.data, m, m)
        capsule = _capsule_new(ctypes.addressof(cvec), _CVEC_NAME, None)  # no destructor
        bars.extend(capsule_to_list(capsule))
        del capsule
    return bars


def _bars_safe(
    bar_type: BarType,
    price_precision: int,
    size_precision: int,
    limbs: list[tuple[np.ndarray, np.ndarray]],
    ts: np.ndarray,
) -> list[Bar]:
    ints = [((hi.astype(object) << 64) | lo.astype(object)).tolist() for hi, lo in limbs]
    pp, sp = price_precision, size_precision
    return [
        Bar.from_raw(bar_type, o, h, lo_, c, pp, v, sp, t, t)
        for o, h, lo_, c, v, t in zip(*ints, ts.tolist(), strict=True)
    ]


def _build_bars(
    bar_type: BarType,
    price_precision: int,
    size_precision: int,
    limbs: list[tuple[np.ndarray, np.ndarray]],
    ts: np.ndarray,
) -> list[Bar]:
    if len(ts) == 0:
        return []
    layout = _fast_layout()
    if layout is None:
        return _bars_safe(bar_type, price_precision, size_precision, limbs, ts)
    return _bars_fast(layout, bar_type, price_precision, size_precision, limbs, ts)
