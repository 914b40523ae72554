"""Exact fixed-point raws: Decimal, integer or float columns -> Nautilus ``value * 10**16``.

NautilusTrader's high-precision build stores a price or a quantity as a 128-bit integer raw,
``value * 10**FIXED_PRECISION`` (16 decimals) whatever the precision. Here a polars column of
klines becomes those raws, rounded to the instrument's increment (tick or step) and held as two
``uint64`` limbs (``hi``, ``lo``) of a non-negative int128, computed vectorised with numpy:

- Decimal (and integer) input with exact integer arithmetic: int64 for ordinary values, 32-bit
  limbs for huge ones (PEPE/SHIB volumes), Python ints only for an increment too exotic for
  32-bit factors; ties round half up (away from zero).
- float input to the increment multiple nearest to the float's exact binary value (Dekker's
  TwoProduct, ties away from zero, like ``Price(float, precision)``), never through strings.

Rows that cannot hold a value (null, NaN/inf, negative, above the Price/Quantity maximum) get
raw 0 and are flagged in :class:`Raws`; the caller decides what a flagged row means.
"""

from __future__ import annotations

from fractions import Fraction
from typing import NamedTuple

import numpy as np
import polars as pl
import pyarrow as pa
from nautilus_trader.model.objects import FIXED_PRECISION, PRICE_MAX, QUANTITY_MAX

from nautilus_dsm.errors import InvalidInput

__all__ = [
    "PRICE_RAW_MAX",
    "QUANTITY_RAW_MAX",
    "SCALE",
    "Raws",
    "column_raws",
    "decimal_raws",
    "float_raws",
    "is_zero",
    "less_than",
    "to_limbs",
]

SCALE = 10**FIXED_PRECISION  # raw = value * 10**16 in the high-precision build
PRICE_RAW_MAX = int(PRICE_MAX) * SCALE
QUANTITY_RAW_MAX = int(QUANTITY_MAX) * SCALE


class Raws(NamedTuple):
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


def to_limbs(value: int) -> tuple[int, int]:
    """Return (hi, lo) of a non-negative raw; beyond 128 bits saturates (flagged too large)."""
    if value >= 1 << 128:
        return 0xFFFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF
    return value >> 64, value & 0xFFFFFFFFFFFFFFFF


def decimal_raws(
    x_lo: np.ndarray, x_hi: np.ndarray, scale: int, increment_raw: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return the raws of non-negative int128 ``x * 10**-scale`` on the increment's grid.

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
        hi[i], lo[i] = to_limbs(raw)
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


def float_raws(v: np.ndarray, increment_raw: int) -> tuple[np.ndarray, np.ndarray]:
    """Return raws of non-negative finite floats on the increment's grid, exact for their value.

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
        exact = Fraction(float(v[i])) * SCALE
        raw = _round_half_up(exact.numerator, exact.denominator * increment_raw) * increment_raw
        hi[i], lo[i] = to_limbs(raw)
    return hi, lo


_BLOCK = 1 << 16  # rows per vectorised block: temporaries stay in cache


def column_raws(series: pl.Series, increment_raw: int, raw_max: int) -> Raws:
    """Return the raws of one price or volume column on the increment's grid, rows flagged.

    Parameters
    ----------
    series : polars.Series
        A Decimal (at most 16 decimals), integer or float column.
    increment_raw : int
        The instrument's ``price_increment.raw`` or ``size_increment.raw``.
    raw_max : int
        The largest raw allowed (:data:`PRICE_RAW_MAX` or :data:`QUANTITY_RAW_MAX`).

    Returns
    -------
    Raws
        ``hi``/``lo`` limbs per row (0 for unusable rows) and the masks saying why.

    Raises
    ------
    InvalidInput
        If the dtype is not Decimal, integer or float, a Decimal has more than 16 decimals, or
        an integer column does not fit in Int64.
    """
    n = len(series)
    dtype = series.dtype
    null = series.is_null().to_numpy() if series.null_count() else np.zeros(n, dtype=bool)
    nan = np.zeros(n, dtype=bool)
    hi = np.empty(n, dtype=np.uint64)
    lo = np.empty(n, dtype=np.uint64)
    if isinstance(dtype, pl.Decimal):
        negative = _decimal_column(series, null, increment_raw, hi, lo)
    elif dtype.is_integer():
        negative = _integer_column(series, null, increment_raw, hi, lo)
    elif dtype.is_float():
        nan, negative = _float_column(series, null, increment_raw, hi, lo)
    else:
        name = series.name
        raise InvalidInput(
            f"column {name} has dtype {dtype}; prices and volumes must be Decimal, float or "
            f"integer: cast it first, e.g. pl.col('{name}').cast(pl.Decimal(38, 8))"
        )
    # unusable rows have raw 0, so they are never "too large"
    max_hi, max_lo = (np.uint64(x) for x in to_limbs(raw_max))
    too_large = (hi > max_hi) | ((hi == max_hi) & (lo > max_lo))
    return Raws(hi, lo, null, nan, negative, too_large)


def _decimal_column(
    series: pl.Series, null: np.ndarray, increment_raw: int, hi: np.ndarray, lo: np.ndarray
) -> np.ndarray:
    """Fill ``hi``/``lo`` from a Decimal column's int128 buffer; return the negative mask."""
    n = len(series)
    name = series.name
    scale = series.dtype.scale or 0
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
        hi[a:b], lo[a:b] = decimal_raws(x_lo[a:b], x_hi[a:b], scale, increment_raw)
    return negative


def _integer_column(
    series: pl.Series, null: np.ndarray, increment_raw: int, hi: np.ndarray, lo: np.ndarray
) -> np.ndarray:
    """Fill ``hi``/``lo`` from an integer column; return the negative mask."""
    n = len(series)
    try:
        values = series.cast(pl.Int64, strict=True).to_numpy()
    except pl.exceptions.PolarsError as exc:
        raise InvalidInput(
            f"column {series.name} ({series.dtype}) does not fit in Int64: {exc}; "
            f"cast it to pl.Decimal(38, 8) first"
        ) from exc
    values = np.where(null, 0, values).astype(np.int64)
    negative = values < 0
    x_lo = np.where(negative, 0, values).astype(np.uint64)
    zeros = np.zeros(min(n, _BLOCK), dtype=np.uint64)
    for a in range(0, n, _BLOCK):
        b = min(n, a + _BLOCK)
        hi[a:b], lo[a:b] = decimal_raws(x_lo[a:b], zeros[: b - a], 0, increment_raw)
    return negative


def _float_column(
    series: pl.Series, null: np.ndarray, increment_raw: int, hi: np.ndarray, lo: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Fill ``hi``/``lo`` from a float column; return the NaN/inf and negative masks."""
    n = len(series)
    values = series.cast(pl.Float64).to_numpy().astype(np.float64, copy=False)
    nan = ~np.isfinite(values) & ~null
    negative = (values < 0) & ~nan & ~null
    clean = np.where(null | nan | negative, 0.0, values)
    for a in range(0, n, _BLOCK):
        b = min(n, a + _BLOCK)
        hi[a:b], lo[a:b] = float_raws(clean[a:b], increment_raw)
    return nan, negative


def less_than(a: Raws, b: Raws) -> np.ndarray:
    """Return ``a < b`` per row, comparing the int128 raws limb by limb."""
    return (a.hi < b.hi) | ((a.hi == b.hi) & (a.lo < b.lo))


def is_zero(a: Raws) -> np.ndarray:
    """Return ``a == 0`` per row."""
    return (a.hi == 0) & (a.lo == 0)
