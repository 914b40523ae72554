"""Deterministic synthetic klines: a closed form of the open time, vectorised in numpy.

Every value is a pure function of (symbol seed, open time, interval), computed in integer
arithmetic (prices in ticks, volumes in steps), so any sub-range, any page size, REST and Vision
all agree to the last digit, on every machine. ``close[i] == open[i + 1]`` because both are the
price path at the same instant.

Internally a kline batch is a "raw" polars frame: ``open_time``/``close_time`` in epoch ms and
every price/volume as an ``Int64`` count of 1e-8 (Binance's finest decimal), formatted to
Binance's strings only at the edge.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import polars as pl

from nautilus_dsm.common import Interval, MarketType
from nautilus_dsm.dsm.schema import COLUMNS, FRAME_SCHEMA
from nautilus_dsm.errors import InvalidInput
from nautilus_dsm.testing.symbols import SymbolSpec

UNIT = 100_000_000  # 1e-8: every price/volume is an integer count of these
PRICE_COLUMNS = ("open", "high", "low", "close")
QTY_COLUMNS = ("volume", "taker_buy_base_volume")
QUOTE_COLUMNS = ("quote_volume", "taker_buy_quote_volume")
VALUE_COLUMNS = (*PRICE_COLUMNS, *QTY_COLUMNS, *QUOTE_COLUMNS)
RAW_SCHEMA: dict[str, pl.DataType] = {
    name: pl.Int64() for name in ("open_time", "close_time", *VALUE_COLUMNS, "trades")
}
VISION_HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
    "taker_buy_quote_volume,ignore"
)
_MONTH_MINUTES = 30 * 24 * 60
_PPM = 1_000_000


@dataclass(frozen=True)
class KlineSpec:
    """What the generator needs of a symbol on one market (all integers but two scales)."""

    seed: int
    base_ticks: int
    tick_units: int
    step_units: int
    price_decimals: int
    qty_decimals: int
    quote_decimals: int
    volume_per_minute: float  # base units (contracts on COIN-M)
    trades_per_minute: int
    contract_size: int | None  # COIN-M: quote volume is the base-asset volume

    @property
    def inverse(self) -> bool:
        """True for an inverse (COIN-M) contract, which has a contract size."""
        return self.contract_size is not None


def _units(text: str, what: str, symbol: str) -> int:
    value = Decimal(text) * UNIT
    if value != value.to_integral_value() or value <= 0:
        raise InvalidInput(
            f"{what} {text!r} of {symbol} is not a positive multiple of 1e-8; "
            "Binance sizes have at most 8 decimals, e.g. '0.01'"
        )
    return int(value)


def kline_spec(spec: SymbolSpec, market: MarketType) -> KlineSpec:
    """Derive the generator parameters of ``spec`` on ``market``.

    Spot prints 8 decimals everywhere; USDT-M prints the symbol's price/quantity precision and
    quote volumes with their sum (a sum of price x quantity products); COIN-M counts volume in
    whole contracts and its quote volume is the base-asset volume with 8 decimals.
    """
    tick_units = _units(spec.tick_size, "tick size", spec.symbol)
    step_units = _units(spec.step_size, "step size", spec.symbol)
    if market is MarketType.SPOT:
        decimals = (8, 8, 8)
    elif market is MarketType.FUTURES_USDT:
        decimals = (
            spec.price_precision,
            spec.quantity_precision,
            min(8, spec.price_precision + spec.quantity_precision),
        )
    else:
        decimals = (spec.price_precision, spec.quantity_precision, 8)
    return KlineSpec(
        seed=spec.seed(market),
        base_ticks=max(1, round(Decimal(str(spec.base_price)) * UNIT / tick_units)),
        tick_units=tick_units,
        step_units=step_units,
        price_decimals=decimals[0],
        qty_decimals=decimals[1],
        quote_decimals=decimals[2],
        volume_per_minute=spec.volume_per_minute,
        trades_per_minute=spec.trades_per_minute,
        contract_size=spec.contract_size if market is MarketType.FUTURES_COIN else None,
    )


# --------------------------------------------------------------------------------------------
# The closed form
# --------------------------------------------------------------------------------------------


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser over uint64 (wrapping arithmetic): a stateless hash."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _hash(seed: int, times: np.ndarray, salt: int) -> np.ndarray:
    """Hash of (seed, time, salt) as int64 in [0, 2^62)."""
    with np.errstate(over="ignore"):
        base = times.astype(np.uint64) * np.uint64(0x100000001B3) + np.uint64(seed << 8 | salt)
    return (splitmix64(splitmix64(base)) >> np.uint64(2)).astype(np.int64)


def _triangle(times: np.ndarray, period_ms: int, phase_ms: int) -> np.ndarray:
    """Triangle wave in [-1e6, 1e6] ppm, exact in integers."""
    x = ((times + phase_ms) % period_ms) * (4 * _PPM) // period_ms
    return np.where(x < _PPM, x, np.where(x < 3 * _PPM, 2 * _PPM - x, x - 4 * _PPM))


def mid_ticks(ks: KlineSpec, times: np.ndarray) -> np.ndarray:
    """Return the price path at epoch-ms ``times``, in ticks (>= 1)."""
    t = times.astype(np.int64)
    phase = ks.seed % 10_000_000
    ppm = (
        _PPM
        + _triangle(t, 97 * 86_400_000, phase * 1000) * 150_000 // _PPM
        + _triangle(t, 285_120_000, phase * 17) * 30_000 // _PPM
        + _triangle(t, 18_000_000, phase) * 4_000 // _PPM
        + (_hash(ks.seed, t, 0) % 2001 - 1000)
    )
    return np.maximum(1, ks.base_ticks * ppm // _PPM)


def next_opens(interval: Interval, opens: np.ndarray) -> np.ndarray:
    """Open time of the following bar (= this bar's close, exclusive)."""
    if interval.is_month:
        return np.array([interval.next_open_ms(int(t)) for t in opens], dtype=np.int64)
    return opens + interval.fixed_ms


def _minutes(interval: Interval) -> float:
    return _MONTH_MINUTES if interval.is_month else interval.fixed_ms / 60_000


def generate(
    ks: KlineSpec, interval: Interval, opens: np.ndarray, now_ms: int | None = None
) -> pl.DataFrame:
    """Generate the raw klines opening at ``opens`` (epoch ms, on the interval's grid).

    A bar still forming at ``now_ms`` (open <= now < close) gets partial values, as Binance
    sends it: the close is the price at ``now_ms`` and volume/trades cover the elapsed fraction.
    """
    opens = np.asarray(opens, dtype=np.int64)
    if len(opens) == 0:
        return pl.DataFrame(schema=RAW_SCHEMA)
    nexts = next_opens(interval, opens)
    if now_ms is None:
        close_at = nexts
        permille = np.full(len(opens), 1000, dtype=np.int64)
    else:
        forming = nexts > now_ms
        close_at = np.where(forming, now_ms, nexts)
        permille = np.where(forming, (now_ms - opens) * 1000 // (nexts - opens), 1000)

    o = mid_ticks(ks, opens)
    c = mid_ticks(ks, close_at)
    minutes = _minutes(interval)
    spread_ppm = min(300_000, round(1500 * math.sqrt(minutes)))
    h = [_hash(ks.seed, opens, salt) for salt in range(1, 7)]

    ext_high = o * spread_ppm // _PPM * (h[0] % 1001) // 1000 * permille // 1000
    ext_low = o * spread_ppm // _PPM * (h[1] % 1001) // 1000 * permille // 1000
    high = np.maximum(o, c) + ext_high
    low = np.maximum(1, np.minimum(o, c) - ext_low)

    scale = minutes**0.8
    vol_base = max(1, round(ks.volume_per_minute * scale * UNIT / ks.step_units))
    trades_base = max(1, round(ks.trades_per_minute * scale))
    volume = np.maximum(1, vol_base * (200_000 + h[2] % 1_600_001) // _PPM * permille // 1000)
    trades = np.maximum(
        1, np.minimum(volume, trades_base * (200 + h[3] % 1601) // 1000 * permille // 1000)
    )
    taker = volume * (300 + h[4] % 401) // 1000

    vwap4 = (o + high + low + c).astype(np.float64)  # 4 x VWAP, in ticks
    quote_step = 10 ** (8 - ks.quote_decimals)
    quote = _quote_units(ks, volume, vwap4, quote_step)
    taker_quote = _quote_units(ks, taker, vwap4, quote_step)

    tick, step = ks.tick_units, ks.step_units
    return pl.DataFrame(
        {
            "open_time": opens,
            "close_time": nexts - 1,
            "open": o * tick,
            "high": high * tick,
            "low": low * tick,
            "close": c * tick,
            "volume": volume * step,
            "taker_buy_base_volume": taker * step,
            "quote_volume": quote,
            "taker_buy_quote_volume": taker_quote,
            "trades": trades,
        },
        schema=RAW_SCHEMA,
    )


def _quote_units(
    ks: KlineSpec, steps: np.ndarray, vwap4: np.ndarray, quote_step: int
) -> np.ndarray:
    # Plain IEEE products and quotients (no transcendental functions): identical on every CPU.
    price = vwap4 * ks.tick_units / 4.0  # 1e-8 quote units per base unit
    if ks.contract_size is None:
        value = steps.astype(np.float64) * ks.step_units * price / UNIT
    else:  # COIN-M: base-asset volume = contracts x contract size / price
        contracts = steps.astype(np.float64) * ks.step_units / UNIT
        value = contracts * ks.contract_size * UNIT * UNIT / price
    # Scale back in integers: the float product of a large count and the step is inexact.
    return np.floor(value / quote_step).astype(np.int64) * quote_step


# --------------------------------------------------------------------------------------------
# Formats
# --------------------------------------------------------------------------------------------


def _decimals(ks: KlineSpec, column: str) -> int:
    if column in PRICE_COLUMNS:
        return ks.price_decimals
    if column in QTY_COLUMNS:
        return ks.qty_decimals
    return ks.quote_decimals


def format_units(column: str, decimals: int) -> pl.Expr:
    """Int64 count of 1e-8 -> Binance decimal string with ``decimals`` decimals."""
    col = pl.col(column)
    whole = (col // UNIT).cast(pl.String)
    if decimals == 0:
        return whole.alias(column)
    frac = ((col % UNIT) // 10 ** (8 - decimals)).cast(pl.String).str.zfill(decimals)
    return pl.concat_str(whole, pl.lit("."), frac).alias(column)


def _strings(raw: pl.DataFrame, ks: KlineSpec, decimals: int | None = None) -> list[pl.Expr]:
    return [
        format_units(name, _decimals(ks, name) if decimals is None else decimals)
        for name in VALUE_COLUMNS
    ]


def to_frame(raw: pl.DataFrame) -> pl.DataFrame:
    """Raw klines -> ``FRAME_SCHEMA`` (what a perfect client returns)."""
    return raw.select(
        pl.col("open_time").cast(FRAME_SCHEMA["open_time"]),
        pl.col("close_time").cast(FRAME_SCHEMA["close_time"]),
        *[format_units(name, 8).cast(FRAME_SCHEMA[name]) for name in VALUE_COLUMNS],
        pl.col("trades"),
    ).select(COLUMNS)


def from_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """``FRAME_SCHEMA`` frame -> raw klines (sorted by open time)."""
    missing = [name for name in COLUMNS if name not in frame.columns]
    if missing:
        raise InvalidInput(
            f"kline frame lacks columns {missing}; pass a frame in FRAME_SCHEMA "
            "(nautilus_dsm.dsm.schema)"
        )
    values = [
        pl.col(name)
        .cast(pl.Decimal(38, 8))
        .cast(pl.String)
        .str.replace(".", "", literal=True)
        .cast(pl.Int64)
        .alias(name)
        for name in VALUE_COLUMNS
    ]
    epoch = [
        pl.col(name).cast(pl.Datetime("ms", "UTC")).dt.epoch("ms").alias(name)
        for name in ("open_time", "close_time")
    ]
    return (
        frame.select(*epoch, *values, pl.col("trades").cast(pl.Int64))
        .select(list(RAW_SCHEMA))
        .sort("open_time")
    )


def check_representable(raw: pl.DataFrame, ks: KlineSpec, what: str) -> None:
    """Raise when a value has more decimals than the market prints for it (it would be cut)."""
    for name in VALUE_COLUMNS:
        decimals = _decimals(ks, name)
        bad = raw.filter(pl.col(name) % 10 ** (8 - decimals) != 0)
        if len(bad):
            raise InvalidInput(
                f"{what}: column {name} has values with more than {decimals} decimals "
                f"(first at open_time {bad['open_time'][0]}), which this market prints with "
                f"{decimals}; round the frame or add the symbol with a finer tick/step size"
            )


def rest_rows(raw: pl.DataFrame, ks: KlineSpec) -> list[tuple[object, ...]]:
    """Raw klines -> Binance's 12-field JSON arrays (numbers as strings)."""
    table = raw.select(*_strings(raw, ks), "open_time", "close_time", "trades")
    return [
        (ot, o, h, low, c, v, ct, qv, n, tb, tq, "0")
        for o, h, low, c, v, tb, qv, tq, ot, ct, n in table.iter_rows()
    ]


def vision_csv(
    raw: pl.DataFrame,
    ks: KlineSpec,
    *,
    header: bool,
    micros: bool,
    drop_ignore: bool = False,
) -> bytes:
    """Raw klines -> a Vision CSV (futures with header; µs timestamps when ``micros``)."""
    times = [pl.col("open_time"), pl.col("close_time")]
    if micros:
        times = [pl.col("open_time") * 1000, (pl.col("close_time") + 1) * 1000 - 1]
    table = raw.select(
        times[0].alias("open_time"),
        *_strings(raw, ks)[:4],
        format_units("volume", ks.qty_decimals),
        times[1].alias("close_time"),
        format_units("quote_volume", ks.quote_decimals),
        pl.col("trades").alias("count"),
        format_units("taker_buy_base_volume", ks.qty_decimals).alias("taker_buy_volume"),
        format_units("taker_buy_quote_volume", ks.quote_decimals),
        pl.lit("0").alias("ignore"),
    )
    if drop_ignore:
        table = table.drop("ignore")
    buffer = io.BytesIO()
    table.write_csv(buffer, include_header=header, quote_style="never")
    return buffer.getvalue()
