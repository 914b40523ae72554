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
representation) are computed vectorised with numpy by :mod:`nautilus_dsm._fixed_point`. Bars are
then materialised by NautilusTrader's own ``capsule_to_list`` from a block of ``Data_t`` records
(:mod:`nautilus_dsm._capsule`), whose layout is probed and self-checked against ``Bar.from_raw``
once per process by :func:`warm_up` (a fallback to a plain ``Bar.from_raw`` loop gives the same
results, slower; ``NAUTILUS_DSM_SAFE_BARS=1`` forces it). Call :func:`warm_up` at startup;
otherwise the first conversion to bars probes (logged at debug).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import polars as pl
import pyarrow as pa
from nautilus_trader.model.data import Bar, BarSpecification, BarType
from nautilus_trader.model.enums import AggregationSource, BarAggregation, PriceType
from nautilus_trader.model.identifiers import InstrumentId
from nautilus_trader.model.instruments import Instrument
from nautilus_trader.model.objects import FIXED_PRECISION

from nautilus_dsm._capsule import build_bars, warm_up
from nautilus_dsm._fixed_point import (
    PRICE_RAW_MAX,
    QUANTITY_RAW_MAX,
    Raws,
    column_raws,
    is_zero,
    less_than,
)
from nautilus_dsm.common import Interval
from nautilus_dsm.constants import NS_PER_MS
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
    "warm_up",
]

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


def interval_for(bar_type: BarType | str, *, allow_mark: bool = False) -> Interval:
    """Return the Binance interval of a bar type; refuse bar types Binance has no kline for.

    ``allow_mark`` also accepts ``MARK`` bar types (mark price klines, ``perp_data.py``).
    """
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
    if spec.price_type != PriceType.LAST and not (allow_mark and spec.price_type == PriceType.MARK):
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
        return iv.next_open_ms(value) * NS_PER_MS
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
    return close_ms.astype(np.uint64) * np.uint64(NS_PER_MS)


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
    raws: tuple[Raws, ...]  # open, high, low, close, volume
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
    interval = interval_for(bar_type, allow_mark=True)
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
        *(column_raws(df.get_column(c), price_raw, PRICE_RAW_MAX) for c in _PRICE_COLUMNS),
        column_raws(df.get_column("volume"), size_raw, QUANTITY_RAW_MAX),
    )
    conditions, reasons = _row_checks(interval, off_grid, raws)
    bad = np.logical_or.reduce(conditions) if len(df) else np.zeros(0, dtype=bool)
    why = np.select(conditions, reasons, default="") if bad.any() else None
    return _Prepared(df, ~bad, why, raws, ts)


def _row_checks(
    interval: Interval, off_grid: np.ndarray, raws: tuple[Raws, ...]
) -> tuple[list[np.ndarray], list[str]]:
    """Per-row masks of why a row cannot be a bar, with their reasons, first reason wins."""
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
        conditions.append(is_zero(r))
        reasons.append(f"non-positive {name} after rounding to tick")
    conditions += [
        less_than(h, lo_),
        less_than(h, o) | less_than(h, c),
        less_than(o, lo_) | less_than(c, lo_),
    ]
    reasons += ["high < low", "high < max(open, close)", "low > min(open, close)"]
    return conditions, reasons


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
    bars = build_bars(bar_type, instrument.price_precision, instrument.size_precision, limbs, ts)
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
    return build_bars(
        _parse_bar_type(bar_type), instrument.price_precision, instrument.size_precision, limbs, ts
    )


def catalog_schema(bar_type: BarType | str, instrument: Instrument) -> pa.Schema:
    """Return the Arrow schema ``ParquetDataCatalog.write_data`` writes for these bars."""
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
