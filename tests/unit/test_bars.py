"""Bar conversion (pure): BarType <-> Interval, close times, exact precision, invalid rows.

Every conversion is checked against a slow reference built independently here: exact
``Fraction`` rounding to the tick, ``Price.from_str``/``Quantity.from_str`` per field, ``Bar(...)``
per row, close times from ``datetime`` arithmetic.
"""

from __future__ import annotations

import json
import logging
import math
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from nautilus_trader.model.currencies import BTC, USD, USDT
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.model.identifiers import InstrumentId, Symbol
from nautilus_trader.model.instruments import CryptoPerpetual, CurrencyPair, Instrument
from nautilus_trader.model.objects import Price, Quantity
from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog
from nautilus_trader.test_kit.providers import TestInstrumentProvider

from nautilus_dsm import _capsule, _fixed_point
from nautilus_dsm import bars as bars_mod
from nautilus_dsm.bars import (
    BarConversion,
    bar_close_ns,
    bar_type_for,
    convert_frame,
    frame_to_bars,
    frame_to_catalog_table,
    interval_for,
)
from nautilus_dsm.common import Interval
from nautilus_dsm.dsm.schema import FRAME_SCHEMA, parse_rest_klines
from nautilus_dsm.errors import InvalidInput

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
T0 = 1704067200000  # 2024-01-01 00:00 UTC, a Monday
MINUTE = 60_000

# --------------------------------------------------------------------------------------------
# Instruments and the slow reference
# --------------------------------------------------------------------------------------------


def _precision(text: str) -> int:
    # NT's Binance adapter: precision from the tick string's exponent ("0.10" -> 2)
    return abs(int(Decimal(text).as_tuple().exponent))


def perpetual(
    symbol: str, tick: str, step: str, *, quote=USDT, multiplier: int = 1
) -> CryptoPerpetual:
    return CryptoPerpetual(
        instrument_id=InstrumentId.from_str(f"{symbol}.BINANCE"),
        raw_symbol=Symbol(symbol),
        base_currency=BTC,
        quote_currency=quote,
        settlement_currency=quote if quote is USDT else BTC,
        is_inverse=quote is not USDT,
        price_precision=_precision(tick),
        size_precision=_precision(step),
        price_increment=Price.from_str(tick),
        size_increment=Quantity.from_str(step),
        ts_event=0,
        ts_init=0,
        multiplier=Quantity.from_int(multiplier),
    )


def spot(symbol: str, tick: str, step: str) -> CurrencyPair:
    return CurrencyPair(
        instrument_id=InstrumentId.from_str(f"{symbol}.BINANCE"),
        raw_symbol=Symbol(symbol),
        base_currency=BTC,
        quote_currency=USDT,
        price_precision=_precision(tick),
        size_precision=_precision(step),
        price_increment=Price.from_str(tick),
        size_increment=Quantity.from_str(step),
        ts_event=0,
        ts_init=0,
    )


def from_exchange_info(path: Path, symbol: str, nautilus_symbol: str) -> Instrument:
    info = next(s for s in json.loads(path.read_text())["symbols"] if s["symbol"] == symbol)
    filters = {f["filterType"]: f for f in info["filters"]}
    tick, step = filters["PRICE_FILTER"]["tickSize"], filters["LOT_SIZE"]["stepSize"]
    if nautilus_symbol.endswith("-PERP"):
        return perpetual(nautilus_symbol, tick, step)
    return spot(nautilus_symbol, tick, step)


_DURATIONS = {
    "1s": timedelta(seconds=1),
    "1m": timedelta(minutes=1),
    "3m": timedelta(minutes=3),
    "5m": timedelta(minutes=5),
    "15m": timedelta(minutes=15),
    "30m": timedelta(minutes=30),
    "1h": timedelta(hours=1),
    "2h": timedelta(hours=2),
    "4h": timedelta(hours=4),
    "6h": timedelta(hours=6),
    "8h": timedelta(hours=8),
    "12h": timedelta(hours=12),
    "1d": timedelta(days=1),
    "3d": timedelta(days=3),
    "1w": timedelta(weeks=1),
}


def ref_close_ns(open_ms: int, interval: str) -> int:
    opened = EPOCH + timedelta(milliseconds=open_ms)
    if interval == "1M":
        year, month = (
            (opened.year + 1, 1) if opened.month == 12 else (opened.year, opened.month + 1)
        )
        closed = datetime(year, month, 1, tzinfo=UTC)
    else:
        closed = opened + _DURATIONS[interval]
    return (closed - EPOCH) // timedelta(microseconds=1) * 1000


def _on_grid(value: object, increment: Fraction) -> Fraction:
    exact = Fraction(Decimal(value)) if isinstance(value, str) else Fraction(value)
    return math.floor(exact / increment + Fraction(1, 2)) * increment  # half up (>= 0)


def _text(value: Fraction, precision: int) -> str:
    scaled = value * 10**precision
    assert scaled.denominator == 1
    units = int(scaled)
    if precision == 0:
        return str(units)
    return f"{units // 10**precision}.{units % 10**precision:0{precision}d}"


def reference_bars(
    rows: list[tuple[int, object, object, object, object, object]],
    bar_type: BarType,
    instrument: Instrument,
    interval: str,
) -> list[Bar]:
    """The classic per-row loop: round exactly, format, ``Price.from_str``, ``Bar(...)``."""
    tick = Fraction(instrument.price_increment.as_decimal())
    step = Fraction(instrument.size_increment.as_decimal())
    pp, sp = instrument.price_precision, instrument.size_precision
    out = []
    for open_ms, o, h, lo, c, v in rows:
        prices = [Price.from_str(_text(_on_grid(x, tick), pp)) for x in (o, h, lo, c)]
        volume = Quantity.from_str(_text(_on_grid(v, step), sp))
        ts = ref_close_ns(open_ms, interval)
        out.append(Bar(bar_type, *prices, volume, ts, ts))
    return out


def assert_same_bars(got: list[Bar], want: list[Bar]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert type(g) is Bar
        assert g.bar_type == w.bar_type
        for field in ("open", "high", "low", "close", "volume"):
            gv, wv = getattr(g, field), getattr(w, field)
            assert (gv.raw, gv.precision) == (wv.raw, wv.precision), (field, str(gv), str(wv))
        assert (g.ts_event, g.ts_init) == (w.ts_event, w.ts_init)
        assert g == w
        assert str(g) == str(w)


def kline_payload(rows: list[tuple[int, str, str, str, str, str]], interval_ms: int) -> list:
    return [
        [t, o, h, lo, c, v, t + interval_ms - 1, "0", 1, "0", "0", "0"]
        for t, o, h, lo, c, v in rows
    ]


def engine_frame(rows: list[tuple[int, str, str, str, str, str]], interval_ms: int = MINUTE):
    return parse_rest_klines(kline_payload(rows, interval_ms))


BTCUSDT_PERP = TestInstrumentProvider.btcusdt_perp_binance()  # tick 0.1, step 0.001
BT_1M = BarType.from_str("BTCUSDT-PERP.BINANCE-1-MINUTE-LAST-EXTERNAL")


# --------------------------------------------------------------------------------------------
# BarType <-> Interval
# --------------------------------------------------------------------------------------------

SPECS = {
    "1s": "1-SECOND",
    "1m": "1-MINUTE",
    "3m": "3-MINUTE",
    "5m": "5-MINUTE",
    "15m": "15-MINUTE",
    "30m": "30-MINUTE",
    "1h": "1-HOUR",
    "2h": "2-HOUR",
    "4h": "4-HOUR",
    "6h": "6-HOUR",
    "8h": "8-HOUR",
    "12h": "12-HOUR",
    "1d": "1-DAY",
    "3d": "3-DAY",
    "1w": "1-WEEK",
    "1M": "1-MONTH",
}


def test_every_binance_interval_has_a_spec() -> None:
    assert sorted(SPECS) == sorted(i.value for i in Interval)


@pytest.mark.parametrize(("interval", "spec"), SPECS.items())
def test_bar_type_for_and_back(interval: str, spec: str) -> None:
    bar_type = bar_type_for("BTCUSDT-PERP.BINANCE", interval)
    assert str(bar_type) == f"BTCUSDT-PERP.BINANCE-{spec}-LAST-EXTERNAL"
    assert interval_for(bar_type) is Interval.parse(interval)
    assert interval_for(str(bar_type)) is Interval.parse(interval)


def test_bar_type_for_accepts_instrument_id_and_interval_enum() -> None:
    bar_type = bar_type_for(InstrumentId.from_str("BTCUSD-PERP.BINANCE"), Interval.MINUTE_15)
    assert str(bar_type) == "BTCUSD-PERP.BINANCE-15-MINUTE-LAST-EXTERNAL"


def test_bar_type_for_rejects_unknown_interval() -> None:
    with pytest.raises(InvalidInput, match="unknown interval '2m'"):
        bar_type_for("BTCUSDT-PERP.BINANCE", "2m")


def test_interval_for_rejects_step_binance_lacks() -> None:
    with pytest.raises(InvalidInput) as err:
        interval_for("BTCUSDT-PERP.BINANCE-2-MINUTE-LAST-EXTERNAL")
    assert str(err.value) == (
        "Binance has no kline for 2-MINUTE-LAST (BTCUSDT-PERP.BINANCE-2-MINUTE-LAST-EXTERNAL); "
        "use one of 1-MINUTE, 3-MINUTE, 5-MINUTE, 15-MINUTE, 30-MINUTE"
    )


def test_interval_for_rejects_bid_prices() -> None:
    with pytest.raises(InvalidInput) as err:
        interval_for("BTCUSDT-PERP.BINANCE-1-MINUTE-BID-EXTERNAL")
    assert str(err.value) == (
        "bar type BTCUSDT-PERP.BINANCE-1-MINUTE-BID-EXTERNAL aggregates BID prices; Binance "
        "klines aggregate trades, use the LAST price type: "
        "BTCUSDT-PERP.BINANCE-1-MINUTE-LAST-EXTERNAL"
    )


def test_interval_for_rejects_internal_bars() -> None:
    with pytest.raises(InvalidInput) as err:
        interval_for("BTCUSDT-PERP.BINANCE-1-HOUR-LAST-INTERNAL")
    assert str(err.value) == (
        "bar type BTCUSDT-PERP.BINANCE-1-HOUR-LAST-INTERNAL is INTERNAL (aggregated by "
        "Nautilus); Binance klines are EXTERNAL bars, use "
        "BTCUSDT-PERP.BINANCE-1-HOUR-LAST-EXTERNAL"
    )


@pytest.mark.parametrize("spec", ["100-TICK", "1000-VOLUME", "1000000-VALUE", "500-MILLISECOND"])
def test_interval_for_rejects_non_kline_aggregations(spec: str) -> None:
    aggregation = spec.split("-")[1]
    with pytest.raises(InvalidInput) as err:
        interval_for(f"BTCUSDT-PERP.BINANCE-{spec}-LAST-EXTERNAL")
    assert str(err.value).endswith(
        f"{aggregation} bars have no Binance kline; use a time bar "
        "(SECOND/MINUTE/HOUR/DAY/WEEK/MONTH) or aggregate them INTERNAL from trades"
    )


def test_interval_for_rejects_garbage() -> None:
    with pytest.raises(InvalidInput, match="invalid bar type 'nonsense'"):
        interval_for("nonsense")


# --------------------------------------------------------------------------------------------
# Close timestamps
# --------------------------------------------------------------------------------------------


def test_bar_close_ns_scalar_is_exact_int() -> None:
    assert bar_close_ns(1634943780000, "1m") == 1634943840000000000
    assert isinstance(bar_close_ns(1634943780000, "1m"), int)


@pytest.mark.parametrize(
    ("open_dt", "close_dt"),
    [
        (datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC)),
        (datetime(2024, 2, 1, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC)),  # leap February
        (datetime(2023, 2, 1, tzinfo=UTC), datetime(2023, 3, 1, tzinfo=UTC)),
        (datetime(2023, 12, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC)),
    ],
)
def test_bar_close_ns_month_is_next_calendar_month(open_dt: datetime, close_dt: datetime) -> None:
    open_ms = int(open_dt.timestamp()) * 1000
    want = int(close_dt.timestamp()) * 1_000_000_000
    assert bar_close_ns(open_ms, "1M") == want
    assert bar_close_ns(np.array([open_ms]), "1M").tolist() == [want]


@pytest.mark.parametrize("interval", list(SPECS))
def test_bar_close_ns_array_matches_datetime_arithmetic(interval: str) -> None:
    iv = Interval.parse(interval)
    opens = [iv.ceil_ms(T0 - 400 * 86_400_000)]
    while len(opens) < 50:
        opens.append(iv.next_open_ms(opens[-1]))
    got = bar_close_ns(np.array(opens, dtype=np.int64), interval)
    assert got.dtype == np.uint64
    assert got.tolist() == [ref_close_ns(t, interval) for t in opens]


def test_bar_close_ns_refuses_pre_epoch() -> None:
    with pytest.raises(InvalidInput, match="before 1970"):
        bar_close_ns(np.array([-60_000]), "1m")


# --------------------------------------------------------------------------------------------
# Engine frames (Decimal) against the reference
# --------------------------------------------------------------------------------------------

EDGE_ROWS = [
    # exactly on tick
    (T0, "42314.00000000", "42603.20000000", "42289.60000000", "42503.50000000", "8459.47700000"),
    # off tick: rounds half up to 0.1 / 0.001 (42000.05 -> 42000.1, 0.0005 -> 0.001)
    (
        T0 + MINUTE,
        "42000.05000000",
        "42000.14999999",
        "41999.95000000",
        "42000.04999999",
        "0.00050000",
    ),
    # smallest values: 0.05 -> 0.1, zero volume is a valid bar
    (T0 + 2 * MINUTE, "0.05000000", "0.10000000", "0.05000000", "0.09999999", "0.00000000"),
    # large price, volume with a non-zero upper 64-bit limb at 8 decimals (1e12 * 1e8 > 2**64)
    (
        T0 + 3 * MINUTE,
        "999999.90000000",
        "1000000.00000000",
        "999999.80000000",
        "999999.95",
        "1000000000000.00049999",
    ),
]


def _rows_of(frame: pl.DataFrame) -> list[tuple]:
    out = []
    for r in frame.iter_rows(named=True):
        open_ms = (r["open_time"] - EPOCH) // timedelta(milliseconds=1)
        out.append((open_ms, *(r[c] for c in ("open", "high", "low", "close", "volume"))))
    return out


def test_engine_frame_edge_values_match_reference() -> None:
    frame = engine_frame(EDGE_ROWS)
    assert dict(frame.schema) == FRAME_SCHEMA
    got = frame_to_bars(frame, BT_1M, BTCUSDT_PERP)
    assert_same_bars(got, reference_bars(_rows_of(frame), BT_1M, BTCUSDT_PERP, "1m"))
    assert [str(b.open) for b in got] == ["42314.0", "42000.1", "0.1", "999999.9"]
    assert [str(b.close) for b in got] == ["42503.5", "42000.0", "0.1", "1000000.0"]
    assert [str(b.volume) for b in got] == ["8459.477", "0.001", "0.000", "1000000000000.000"]
    assert got[0].ts_event == got[0].ts_init == 1704067260000000000


def test_engine_frame_via_pandas_decimals_gives_the_same_bars() -> None:
    frame = engine_frame(EDGE_ROWS)
    assert frame.to_pandas()["open"].dtype == object  # decimal.Decimal objects
    assert_same_bars(
        frame_to_bars(frame.to_pandas(), BT_1M, BTCUSDT_PERP),
        frame_to_bars(frame, BT_1M, BTCUSDT_PERP),
    )


def test_bar_specification_for_three_days() -> None:
    # NautilusTrader's BarSpecification(3, DAY, LAST) constructor refuses it; the parser accepts
    assert str(bars_mod.bar_specification_for("3d")) == "3-DAY-LAST"


def test_instrument_precision_8_with_huge_volume_exact_raws() -> None:
    # SHIB/PEPE-like: 8-decimal prices, volumes ~1e12 at 8 decimals (raws beyond int64)
    instrument = spot("SHIBUSDT", "0.00000001", "0.00000001")
    bar_type = bar_type_for(instrument.id, "1d")
    rows = [
        (T0, "0.00001012", "0.00001099", "0.00000999", "0.00001050", "987654321098.76543210"),
        (
            T0 + 86_400_000,
            "999999.99999999",
            "999999.99999999",
            "999999.99999998",
            "999999.99999999",
            "34028236692092.99999999",
        ),
    ]
    frame = engine_frame(rows, 86_400_000)
    got = frame_to_bars(frame, bar_type, instrument)
    assert_same_bars(got, reference_bars(_rows_of(frame), bar_type, instrument, "1d"))
    assert got[0].volume.raw == 98765432109876543210 * 10**8
    assert got[1].high.raw == 99999999999999 * 10**8
    assert got[1].volume.raw == 3402823669209299999999 * 10**8


def _ref_raw_limbs(x: int, scale: int, increment_raw: int) -> tuple[int, int]:
    # round half up to the increment, exact in Python ints; beyond 128 bits saturates
    raw = (2 * x * 10**16 + increment_raw * 10**scale) // (2 * increment_raw * 10**scale)
    raw *= increment_raw
    if raw >= 1 << 128:
        return 2**64 - 1, 2**64 - 1
    return raw >> 64, raw & (2**64 - 1)


@pytest.mark.parametrize(
    "increment_raw",
    [1, 10**8, 10**16, 5 * 10**15, 25 * 10**12, 10**19, 3 * 10**10, 10**17],
)
@pytest.mark.parametrize("scale", [0, 3, 8, 16])
def test_wide_decimal_raws_are_exact(increment_raw: int, scale: int) -> None:
    rng = random.Random(increment_raw * 100 + scale)
    unit = increment_raw * 10**scale
    xs = [rng.randrange(0, 1 << rng.choice([40, 63, 64, 70, 100, 127])) for _ in range(500)]
    if unit % (2 * 10**16) == 0:  # exact ties: x * 10**16 = (n + 1/2) * unit
        xs += [(2 * n + 1) * unit // (2 * 10**16) for n in range(1, 50)]
    xs += [0, 1, 2**62, 2**64 - 1, 2**64, 2**127 - 1]
    lo = np.array([x & (2**64 - 1) for x in xs], dtype=np.uint64)
    hi = np.array([x >> 64 for x in xs], dtype=np.uint64)

    got_hi, got_lo = _fixed_point.decimal_raws(lo, hi, scale, increment_raw)

    want = [_ref_raw_limbs(x, scale, increment_raw) for x in xs]
    assert list(zip(got_hi.tolist(), got_lo.tolist(), strict=True)) == want


def test_huge_volumes_are_converted_without_a_python_row_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # PEPE/SHIB 1m volumes (>= 4.6e10 at 8 decimals) take the vectorised 128-bit path
    def per_row(*_args: object) -> int:
        raise AssertionError("per-row Python rounding used")

    monkeypatch.setattr(_fixed_point, "_round_half_up", per_row)
    instrument = spot("PEPEUSDT", "0.00000001", "1")
    rows = [
        (T0 + i * MINUTE, "0.00001234", "0.00001240", "0.00001230", "0.00001235", volume)
        for i, volume in enumerate(
            ["123456789012.00000000", "123456789012.50000000", "34028236692092.49999999", "7"]
        )
    ]

    got = frame_to_bars(engine_frame(rows), bar_type_for(instrument.id, "1m"), instrument)

    assert [str(b.volume) for b in got] == ["123456789012", "123456789013", "34028236692092", "7"]
    assert [b.volume.raw for b in got] == [
        123456789012 * 10**16,
        123456789013 * 10**16,
        34028236692092 * 10**16,
        7 * 10**16,
    ]


def test_real_spot_klines_with_exchange_info_ticks(realdata: Path) -> None:
    instrument = from_exchange_info(realdata / "exchange_info_spot.json", "BTCUSDT", "BTCUSDT")
    assert (instrument.price_precision, instrument.size_precision) == (8, 8)
    bar_type = bar_type_for(instrument.id, "1m")
    frame = parse_rest_klines(json.loads((realdata / "klines_spot.json").read_text()))
    got = frame_to_bars(frame, bar_type, instrument)
    assert_same_bars(got, reference_bars(_rows_of(frame), bar_type, instrument, "1m"))
    assert len(got) == 10
    assert str(got[0].open) == "60685.22000000"
    assert str(got[0].volume) == "21.63272000"
    assert got[0].ts_event == 1634943840000000000


def test_real_futures_tick_rounds_tiny_prices_to_zero_and_reports_them(realdata: Path) -> None:
    instrument = from_exchange_info(
        realdata / "exchange_info_futures_um.json", "BTCUSDT", "BTCUSDT-PERP"
    )
    assert (instrument.price_precision, instrument.size_precision) == (2, 3)  # "0.10", "0.001"
    bar_type = bar_type_for(instrument.id, "1w")
    frame = parse_rest_klines(json.loads((realdata / "klines_futures_um.json").read_text()))
    result = convert_frame(frame, bar_type, instrument)
    # 0.0163479 on a 0.10 tick is 0.00: not a price
    assert result.bars == []
    assert result.rows == 1
    assert result.success_rate == 0.0
    assert result.invalid["reason"].to_list() == ["non-positive open after rounding to tick"]
    assert result.invalid["row"].to_list() == [0]


# --------------------------------------------------------------------------------------------
# DSM-3.x style frames (float64 prices, UTC datetimes, extra columns) against the reference
# --------------------------------------------------------------------------------------------

GOLDEN = {
    "spot": ("dsm_golden_btcusdt_spot_1h_2024w01.parquet", "BTCUSDT", "0.01", "0.00001"),
    "um": ("dsm_golden_btcusdt_futures_usdt_1h_2024w01.parquet", "BTCUSDT-PERP", "0.1", "0.001"),
    "cm": ("dsm_golden_btcusd_perp_coin_1h_2024w01.parquet", "BTCUSD-PERP", "0.1", "1"),
}


def _golden_instrument(kind: str) -> Instrument:
    _, symbol, tick, step = GOLDEN[kind]
    if kind == "spot":
        return spot(symbol, tick, step)
    if kind == "cm":
        return perpetual(symbol, tick, step, quote=USD, multiplier=100)
    return perpetual(symbol, tick, step)


def _float_rows(frame: pl.DataFrame) -> list[tuple]:
    opens = frame["open_time"].dt.epoch("ms").to_list()
    cols = [frame[c].to_list() for c in ("open", "high", "low", "close", "volume")]
    return [(t, *vals) for t, *vals in zip(opens, *cols, strict=True)]


@pytest.mark.parametrize("kind", list(GOLDEN))
@pytest.mark.parametrize("as_pandas", [False, True])
def test_dsm_golden_week_matches_reference(realdata: Path, kind: str, as_pandas: bool) -> None:
    frame = pl.read_parquet(realdata / GOLDEN[kind][0])
    instrument = _golden_instrument(kind)
    bar_type = bar_type_for(instrument.id, "1h")
    source = frame.to_pandas() if as_pandas else frame
    got = frame_to_bars(source, bar_type, instrument)
    assert len(got) == 168
    assert_same_bars(got, reference_bars(_float_rows(frame), bar_type, instrument, "1h"))
    assert got[0].ts_init == 1704070800000000000  # 2024-01-01 01:00 UTC: the first close
    assert got[-1].ts_init == 1704672000000000000  # 2024-01-08 00:00 UTC


def test_dsm_golden_first_bars(realdata: Path) -> None:
    frame = pl.read_parquet(realdata / GOLDEN["spot"][0])
    got = frame_to_bars(frame, bar_type_for("BTCUSDT.BINANCE", "1h"), _golden_instrument("spot"))
    assert str(got[0]) == (
        "BTCUSDT.BINANCE-1-HOUR-LAST-EXTERNAL,42283.58,42554.57,42261.02,42475.23,"
        "1271.68108,1704070800000000000"
    )
    cm = pl.read_parquet(realdata / GOLDEN["cm"][0])
    assert cm["volume"].dtype == pl.Int64
    got = frame_to_bars(cm, bar_type_for("BTCUSD-PERP.BINANCE", "1h"), _golden_instrument("cm"))
    assert str(got[0]).startswith(
        "BTCUSD-PERP.BINANCE-1-HOUR-LAST-EXTERNAL,42305.5,42585.1,42282.7,"
    )
    assert got[0].volume.precision == 0


def test_naive_open_time_means_utc_and_index_is_accepted(realdata: Path) -> None:
    frame = pl.read_parquet(realdata / GOLDEN["um"][0])
    instrument = _golden_instrument("um")
    bar_type = bar_type_for(instrument.id, "1h")
    want = frame_to_bars(frame, bar_type, instrument)
    naive = frame.with_columns(pl.col("open_time").dt.replace_time_zone(None))
    assert_same_bars(frame_to_bars(naive, bar_type, instrument), want)
    indexed = frame.to_pandas().set_index("open_time")
    assert_same_bars(frame_to_bars(indexed, bar_type, instrument), want)


# --------------------------------------------------------------------------------------------
# Float rounding is exact for the binary value
# --------------------------------------------------------------------------------------------


def _float_frame(values: list[float], volume: list[float] | None = None) -> pl.DataFrame:
    n = len(values)
    return pl.DataFrame(
        {
            "open_time": pl.Series([T0 + i * MINUTE for i in range(n)]).cast(
                pl.Datetime("ms", "UTC")
            ),
            "open": values,
            "high": values,
            "low": values,
            "close": values,
            "volume": volume if volume is not None else values,
        }
    )


@pytest.mark.parametrize(
    ("value", "tick", "expected"),
    [
        (0.125, "0.01", "0.13"),  # exact binary tie: away from zero
        (0.375, "0.01", "0.38"),
        (0.145, "0.01", "0.14"),  # binary 0.14499999999999999 although 0.145 * 100 == 14.5
        (1.005, "0.01", "1.00"),  # binary 1.00499999999999989...
        (2.675, "0.01", "2.67"),
        (42305.55, "0.1", "42305.6"),  # binary 42305.55000000000291...
        (0.15, "0.1", "0.1"),  # binary 0.14999999999999999445...
        (0.3, "0.1", "0.3"),
        (1.25, "0.5", "1.5"),  # non-power-of-ten tick, exact tie
        (1.2499999999999998, "0.5", "1.0"),
    ],
)
def test_float_rounding_to_tick_is_exact(value: float, tick: str, expected: str) -> None:
    instrument = perpetual("BTCUSDT-PERP", tick, "0.001")
    got = frame_to_bars(_float_frame([value]), BT_1M, instrument)
    assert str(got[0].open) == expected
    assert_same_bars(
        got, reference_bars(_float_rows(_float_frame([value])), BT_1M, instrument, "1m")
    )


@pytest.mark.parametrize(("tick", "step"), [("0.1", "0.001"), ("0.00000001", "1"), ("0.05", "0.5")])
def test_random_floats_match_exact_reference(tick: str, step: str) -> None:
    rng = random.Random(7)
    values = []
    for _ in range(400):
        digits = rng.randint(0, 9)
        base = round(rng.uniform(0.0001, 900000.0), digits)
        values.append(base + rng.choice([0.0, 5e-9, -5e-9, 0.05, 0.005]))
    values = [abs(v) + 1.0 for v in values]
    volumes = [v * 1e7 for v in values]  # up to ~9e12: 9e15 units of 0.001 take the Fraction path
    frame = _float_frame(values, volumes)
    instrument = perpetual("BTCUSDT-PERP", tick, step)
    got = frame_to_bars(frame, BT_1M, instrument)
    assert_same_bars(got, reference_bars(_float_rows(frame), BT_1M, instrument, "1m"))


def test_integer_volume_columns_are_exact() -> None:
    frame = _float_frame([100.0, 101.0, 102.0]).with_columns(
        pl.Series("volume", [34028236692093, 7, 34028236692094], dtype=pl.Int64)
    )
    instrument = perpetual("BTCUSDT-PERP", "0.1", "0.001")
    result = convert_frame(frame, BT_1M, instrument)
    assert [b.volume.raw for b in result.bars] == [34028236692093 * 10**16, 7 * 10**16]
    assert [str(b.volume) for b in result.bars] == ["34028236692093.000", "7.000"]
    assert result.invalid["reason"].to_list() == ["above the maximum volume"]


# --------------------------------------------------------------------------------------------
# Rows that cannot be bars
# --------------------------------------------------------------------------------------------


def _bad_frame() -> pl.DataFrame:
    rows = [
        (T0, 100.0, 101.0, 99.0, 100.5, 1.0),  # valid
        (T0 + MINUTE, 100.0, 99.0, 101.0, 100.0, 1.0),  # high < low
        (T0 + 2 * MINUTE, 100.0, 100.04, 99.0, 100.06, 1.0),  # close rounds above high
        (T0 + 3 * MINUTE, 100.0, 101.0, 100.5, 100.2, 1.0),  # low > close
        (T0 + 4 * MINUTE, None, 101.0, 99.0, 100.0, 1.0),  # null open
        (T0 + 5 * MINUTE, 100.0, float("nan"), 99.0, 100.0, 1.0),  # NaN high
        (T0 + 6 * MINUTE, 100.0, 101.0, 99.0, 100.0, -1.0),  # negative volume
        (T0 + 7 * MINUTE, 0.0, 101.0, 0.0, 100.0, 1.0),  # zero open
        (T0 + 8 * MINUTE, 100.0, 101.0, 99.0, 100.0, 0.0),  # valid, zero volume
        (T0 + 9 * MINUTE, 1e14, 1e14, 1e14, 1e14, 1.0),  # above PRICE_MAX
    ]
    frame = pl.DataFrame(
        rows, schema=["open_time", "open", "high", "low", "close", "volume"], orient="row"
    )
    return frame.with_columns(
        pl.col("open_time").cast(pl.Datetime("ms", "UTC")),
        pl.lit("REST").alias("_data_source"),
    )


def test_convert_frame_keeps_valid_bars_and_reports_the_rest() -> None:
    result = convert_frame(_bad_frame(), BT_1M, BTCUSDT_PERP)
    assert isinstance(result, BarConversion)
    assert result.rows == 10
    assert [b.ts_event for b in result.bars] == [
        ref_close_ns(T0, "1m"),
        ref_close_ns(T0 + 8 * MINUTE, "1m"),
    ]
    assert result.success_rate == 0.2
    assert result.invalid["row"].to_list() == [1, 2, 3, 4, 5, 6, 7, 9]
    assert result.invalid["reason"].to_list() == [
        "high < low",
        "high < max(open, close)",
        "low > min(open, close)",
        "null open",
        "NaN/inf high",
        "negative volume",
        "non-positive open after rounding to tick",
        "above the maximum open",
    ]
    assert result.invalid.columns == [
        "open_time",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "_data_source",
        "row",
        "reason",
    ]


def test_frame_to_bars_refuses_invalid_rows_naming_them() -> None:
    with pytest.raises(InvalidInput) as err:
        frame_to_bars(_bad_frame(), BT_1M, BTCUSDT_PERP)
    assert str(err.value) == (
        "8 of 10 kline rows cannot be bars of BTCUSDT-PERP.BINANCE-1-MINUTE-LAST-EXTERNAL: "
        "2024-01-01 00:01:00+00:00 (high < low), 2024-01-01 00:02:00+00:00 "
        "(high < max(open, close)), 2024-01-01 00:03:00+00:00 (low > min(open, close)), ...; "
        "fix or drop those rows, or call convert_frame(frame, bar_type, instrument) to keep the "
        "valid bars and inspect .invalid"
    )
    with pytest.raises(InvalidInput, match="8 of 10 kline rows"):
        frame_to_catalog_table(_bad_frame(), BT_1M, BTCUSDT_PERP)


def test_negative_decimal_price_is_reported() -> None:
    frame = engine_frame([(T0, "-1.00000000", "2.00000000", "1.00000000", "1.5", "1")])
    result = convert_frame(frame, BT_1M, BTCUSDT_PERP)
    assert result.invalid["reason"].to_list() == ["non-positive open"]


def test_unsorted_frame_is_refused() -> None:
    frame = engine_frame([(T0 + MINUTE, "1", "1", "1", "1", "1"), (T0, "1", "1", "1", "1", "1")])
    with pytest.raises(InvalidInput) as err:
        frame_to_bars(frame, BT_1M, BTCUSDT_PERP)
    assert str(err.value) == (
        "kline frame is not sorted by open_time: row 1 (2024-01-01 00:00:00+00:00) comes after "
        "row 0 (2024-01-01 00:01:00+00:00); sort it first: frame.sort('open_time')"
    )


def test_duplicate_open_times_are_refused() -> None:
    frame = engine_frame([(T0, "1", "1", "1", "1", "1"), (T0, "1", "1", "1", "1", "2")])
    with pytest.raises(InvalidInput) as err:
        convert_frame(frame, BT_1M, BTCUSDT_PERP)
    assert str(err.value) == (
        "kline frame has 1 duplicate open_time(s), first 2024-01-01 00:00:00+00:00 at rows 0 "
        "and 1; drop them first, e.g. frame.unique('open_time', keep='last', "
        "maintain_order=True)"
    )


def test_open_times_off_the_interval_grid_are_refused() -> None:
    frame = engine_frame([(T0, "1", "1", "1", "1", "1"), (T0 + MINUTE, "1", "1", "1", "1", "1")])
    bar_type = bar_type_for(BTCUSDT_PERP.id, "1h")
    with pytest.raises(InvalidInput) as err:
        frame_to_bars(frame, bar_type, BTCUSDT_PERP)
    assert str(err.value) == (
        "1 of 2 kline rows cannot be bars of BTCUSDT-PERP.BINANCE-1-HOUR-LAST-EXTERNAL: "
        "2024-01-01 00:01:00+00:00 (off the 1h grid); open times off the grid mean mis-stamped "
        "klines or klines of another interval (then use that interval's bar type); fix or drop "
        "those rows, or call convert_frame(frame, bar_type, instrument) to keep the valid bars "
        "and inspect .invalid"
    )
    with pytest.raises(InvalidInput, match=r"^1 of 2 kline rows cannot be bars"):
        frame_to_catalog_table(frame, bar_type, BTCUSDT_PERP)


def test_convert_frame_reports_off_grid_rows_and_keeps_the_rest() -> None:
    # one kline stamped 30 s late among 1m klines: it alone is not a bar, the others are
    frame = engine_frame(
        [
            (T0, "1", "1", "1", "1", "1"),
            (T0 + MINUTE + 30_000, "2", "2", "2", "2", "2"),
            (T0 + 2 * MINUTE, "3", "3", "3", "3", "3"),
        ]
    )

    result = convert_frame(frame, BT_1M, BTCUSDT_PERP)

    assert [(b.ts_event, str(b.close)) for b in result.bars] == [
        (ref_close_ns(T0, "1m"), "1.0"),
        (ref_close_ns(T0 + 2 * MINUTE, "1m"), "3.0"),
    ]
    assert result.rows == 3
    assert result.success_rate == 2 / 3
    assert result.invalid["row"].to_list() == [1]
    assert result.invalid["reason"].to_list() == ["off the 1m grid"]
    assert result.invalid["open_time"].to_list() == [datetime(2024, 1, 1, 0, 1, 30, tzinfo=UTC)]


def test_off_grid_reason_comes_first_and_month_grid_is_calendar() -> None:
    # mid-month open on the 1M grid, with an OHLC violation too: the grid is the reason given
    feb_mid = 1706745600000 + 14 * 86_400_000
    frame = engine_frame(
        [(T0, "1", "1", "1", "1", "1"), (feb_mid, "2", "1", "3", "2", "1")], 86_400_000
    )

    result = convert_frame(frame, bar_type_for(BTCUSDT_PERP.id, "1M"), BTCUSDT_PERP)

    assert [b.ts_event for b in result.bars] == [1706745600000000000]
    assert result.invalid["reason"].to_list() == ["off the 1M grid"]


def test_weekly_grid_is_monday() -> None:
    frame = engine_frame([(T0, "1", "1", "1", "1", "1")], 7 * 86_400_000)  # a Monday
    got = frame_to_bars(frame, bar_type_for(BTCUSDT_PERP.id, "1w"), BTCUSDT_PERP)
    assert got[0].ts_init == ref_close_ns(T0, "1w")
    sunday = engine_frame([(T0 - 86_400_000, "1", "1", "1", "1", "1")], 7 * 86_400_000)
    with pytest.raises(InvalidInput, match=r"\(off the 1w grid\)"):
        frame_to_bars(sunday, bar_type_for(BTCUSDT_PERP.id, "1w"), BTCUSDT_PERP)


def test_monthly_bars_close_at_next_month() -> None:
    jan, feb = T0, 1706745600000  # 2024-01-01, 2024-02-01
    frame = engine_frame([(jan, "1", "1", "1", "1", "1"), (feb, "1", "1", "1", "1", "1")])
    got = frame_to_bars(frame, bar_type_for(BTCUSDT_PERP.id, "1M"), BTCUSDT_PERP)
    assert [b.ts_init for b in got] == [1706745600000000000, 1709251200000000000]


def test_bar_type_of_another_instrument_is_refused() -> None:
    frame = engine_frame([(T0, "1", "1", "1", "1", "1")])
    with pytest.raises(InvalidInput) as err:
        frame_to_bars(frame, bar_type_for("ETHUSDT-PERP.BINANCE", "1m"), BTCUSDT_PERP)
    assert str(err.value) == (
        "bar type ETHUSDT-PERP.BINANCE-1-MINUTE-LAST-EXTERNAL is for ETHUSDT-PERP.BINANCE, but "
        "the instrument is BTCUSDT-PERP.BINANCE; use "
        "bar_type_for('BTCUSDT-PERP.BINANCE', interval)"
    )


def test_missing_columns_are_named() -> None:
    frame = engine_frame([(T0, "1", "1", "1", "1", "1")]).drop("volume", "low")
    with pytest.raises(InvalidInput, match=r"lacks column\(s\) low, volume"):
        frame_to_bars(frame, BT_1M, BTCUSDT_PERP)


def test_string_prices_are_refused_with_the_cast() -> None:
    frame = engine_frame([(T0, "1", "1", "1", "1", "1")]).with_columns(
        pl.col("open").cast(pl.String)
    )
    with pytest.raises(InvalidInput, match=r"cast\(pl.Decimal\(38, 8\)\)"):
        frame_to_bars(frame, BT_1M, BTCUSDT_PERP)


def test_sub_millisecond_open_time_is_refused() -> None:
    frame = _float_frame([1.0]).with_columns(
        pl.col("open_time").cast(pl.Datetime("ns", "UTC")) + pl.duration(nanoseconds=5)
    )
    with pytest.raises(InvalidInput, match="not a whole millisecond"):
        frame_to_bars(frame, BT_1M, BTCUSDT_PERP)


def test_not_a_frame_is_refused() -> None:
    with pytest.raises(InvalidInput, match="expected a polars or pandas DataFrame"):
        frame_to_bars([1, 2, 3], BT_1M, BTCUSDT_PERP)


def test_empty_frame() -> None:
    frame = engine_frame([])
    assert frame_to_bars(frame, BT_1M, BTCUSDT_PERP) == []
    result = convert_frame(frame, BT_1M, BTCUSDT_PERP)
    assert (result.bars, result.rows, result.success_rate, result.invalid.height) == ([], 0, 1.0, 0)
    table = frame_to_catalog_table(frame, BT_1M, BTCUSDT_PERP)
    assert table.num_rows == 0
    assert table.schema.metadata[b"bar_type"] == str(BT_1M).encode()


# --------------------------------------------------------------------------------------------
# Catalog table == what ParquetDataCatalog.write_data writes
# --------------------------------------------------------------------------------------------


def _catalog_file(root: Path) -> Path:
    files = list((root / "data" / "bar").rglob("*.parquet"))
    assert len(files) == 1
    return files[0]


@pytest.mark.parametrize("kind", ["spot", "cm"])
def test_catalog_table_is_byte_identical_to_write_data(
    realdata: Path, tmp_path: Path, kind: str
) -> None:
    frame = pl.read_parquet(realdata / GOLDEN[kind][0])
    instrument = _golden_instrument(kind)
    bar_type = bar_type_for(instrument.id, "1h")
    catalog = ParquetDataCatalog(str(tmp_path / "catalog"))
    catalog.write_data(frame_to_bars(frame, bar_type, instrument))
    theirs_path = _catalog_file(tmp_path / "catalog")

    table = frame_to_catalog_table(frame, bar_type, instrument)
    ours_path = tmp_path / "ours.parquet"
    pq.write_table(table, ours_path, row_group_size=catalog.max_rows_per_group)

    theirs = pq.read_table(theirs_path)
    assert table.equals(theirs)
    assert table.schema.equals(theirs.schema, check_metadata=True)
    assert table.schema.metadata == theirs.schema.metadata
    assert ours_path.read_bytes() == theirs_path.read_bytes()
    assert table.schema.metadata == {
        b"bar_type": str(bar_type).encode(),
        b"instrument_id": str(instrument.id).encode(),
        b"price_precision": str(instrument.price_precision).encode(),
        b"size_precision": str(instrument.size_precision).encode(),
    }


def test_catalog_table_raws_are_little_endian_int128_at_16_decimals() -> None:
    frame = engine_frame(EDGE_ROWS)
    table = frame_to_catalog_table(frame, BT_1M, BTCUSDT_PERP)
    assert table.schema.field("open").type == pa.binary(16)
    assert table.schema.field("ts_init").type == pa.uint64()
    raws = [int.from_bytes(b, "little", signed=True) for b in table["volume"].to_pylist()]
    assert raws == [8459477 * 10**13, 10**13, 0, 10**12 * 10**16]
    assert table["ts_init"].to_pylist() == [ref_close_ns(r[0], "1m") for r in EDGE_ROWS]


def test_catalog_reads_back_our_parquet(tmp_path: Path) -> None:
    frame = engine_frame(EDGE_ROWS)
    catalog = ParquetDataCatalog(str(tmp_path))
    catalog.write_data(
        [Bar.from_dict(Bar.to_dict(b)) for b in frame_to_bars(frame, BT_1M, BTCUSDT_PERP)]
    )
    path = _catalog_file(tmp_path)
    path.unlink()
    pq.write_table(frame_to_catalog_table(frame, BT_1M, BTCUSDT_PERP), path)
    got = catalog.bars([str(BT_1M)])
    assert_same_bars(got, reference_bars(_rows_of(frame), BT_1M, BTCUSDT_PERP, "1m"))


# --------------------------------------------------------------------------------------------
# The fast path and the safe path agree
# --------------------------------------------------------------------------------------------


def test_fast_path_is_active() -> None:
    layout = _capsule.fast_layout()
    assert layout is not None
    assert layout.stride % 16 == 0


def test_safe_path_gives_identical_bars(monkeypatch: pytest.MonkeyPatch, realdata: Path) -> None:
    frame = pl.read_parquet(realdata / GOLDEN["um"][0])
    instrument = _golden_instrument("um")
    bar_type = bar_type_for(instrument.id, "1h")
    fast = frame_to_bars(frame, bar_type, instrument)
    monkeypatch.setenv("NAUTILUS_DSM_SAFE_BARS", "1")
    assert _capsule.fast_layout() is None
    assert_same_bars(frame_to_bars(frame, bar_type, instrument), fast)


def test_warm_up_probes_the_layout_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_capsule, "_layout_state", {})
    assert bars_mod.warm_up is _capsule.warm_up

    assert bars_mod.warm_up() is True

    layout = _capsule._layout_state["layout"]
    assert layout is not None

    def probe_again() -> None:
        raise AssertionError("probed twice")

    monkeypatch.setattr(_capsule, "_probe_layout", probe_again)
    assert bars_mod.warm_up() is True
    assert _capsule.fast_layout() is layout


def test_first_conversion_without_warm_up_probes_and_logs_at_debug(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_capsule, "_layout_state", {})
    frame = engine_frame(EDGE_ROWS)

    with caplog.at_level(logging.DEBUG, logger="nautilus_dsm._capsule"):
        got = frame_to_bars(frame, BT_1M, BTCUSDT_PERP)
        frame_to_bars(frame, BT_1M, BTCUSDT_PERP)

    lazy = [r for r in caplog.records if "not warmed up" in r.getMessage()]
    assert [(r.name, r.levelno) for r in lazy] == [("nautilus_dsm._capsule", logging.DEBUG)]
    assert _capsule._layout_state["layout"] is not None
    assert_same_bars(got, reference_bars(_rows_of(frame), BT_1M, BTCUSDT_PERP, "1m"))


def test_warm_up_after_safe_bars_is_set_probes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_capsule, "_layout_state", {})
    monkeypatch.setenv("NAUTILUS_DSM_SAFE_BARS", "1")

    def probe() -> None:
        raise AssertionError("probed although NAUTILUS_DSM_SAFE_BARS is set")

    monkeypatch.setattr(_capsule, "_probe_layout", probe)

    assert bars_mod.warm_up() is False
    assert _capsule._layout_state == {}


def test_many_rows_cross_chunk_boundaries() -> None:
    n = _capsule.CHUNK * 2 + 17
    rng = np.random.default_rng(3)
    closes = 40000 + np.cumsum(rng.integers(-50, 51, n)) / 10
    opens = np.r_[closes[0], closes[:-1]]
    highs = np.maximum(opens, closes) + rng.integers(0, 20, n) / 10
    lows = np.minimum(opens, closes) - rng.integers(0, 20, n) / 10
    frame = pl.DataFrame(
        {
            "open_time": (T0 + np.arange(n, dtype=np.int64) * MINUTE),
            "open": opens,
            "high": highs,
            "low": lows,
            "close": closes,
            "volume": rng.integers(0, 10**9, n) / 1000,
        }
    ).with_columns(pl.col("open_time").cast(pl.Datetime("ms", "UTC")))
    got = frame_to_bars(frame, BT_1M, BTCUSDT_PERP)
    assert len(got) == n
    sample = [0, 1, _capsule.CHUNK - 1, _capsule.CHUNK, 2 * _capsule.CHUNK, n - 1]
    rows = _float_rows(frame)
    want = reference_bars([rows[i] for i in sample], BT_1M, BTCUSDT_PERP, "1m")
    assert_same_bars([got[i] for i in sample], want)


def test_fast_bars_run_through_a_backtest(realdata: Path) -> None:
    from nautilus_trader.backtest.engine import BacktestEngine, BacktestEngineConfig
    from nautilus_trader.common.actor import Actor
    from nautilus_trader.config import ActorConfig, LoggingConfig
    from nautilus_trader.model.enums import AccountType, OmsType
    from nautilus_trader.model.identifiers import Venue
    from nautilus_trader.model.objects import Money

    instrument = _golden_instrument("um")
    bar_type = bar_type_for(instrument.id, "1h")
    bars = frame_to_bars(pl.read_parquet(realdata / GOLDEN["um"][0]), bar_type, instrument)
    seen: list[Bar] = []

    class Recorder(Actor):
        def on_start(self) -> None:
            self.subscribe_bars(bar_type)

        def on_bar(self, bar: Bar) -> None:
            seen.append(bar)

    engine = BacktestEngine(BacktestEngineConfig(logging=LoggingConfig(bypass_logging=True)))
    engine.add_venue(
        Venue("BINANCE"),
        oms_type=OmsType.NETTING,
        account_type=AccountType.MARGIN,
        base_currency=USDT,
        starting_balances=[Money(10_000, USDT)],
    )
    engine.add_instrument(instrument)
    engine.add_data(bars)  # refuses bars whose precision differs from the instrument's
    engine.add_actor(Recorder(ActorConfig()))
    engine.run()
    try:
        assert seen == bars
        assert engine.cache.bar_count(bar_type) == 168
    finally:
        engine.dispose()
