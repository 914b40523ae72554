"""The imitation's kline generator: tick/step grid, OHLC sanity, determinism, formats."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from nautilus_dsm.common import Interval, MarketType
from nautilus_dsm.dsm.schema import FRAME_SCHEMA, parse_rest_klines, parse_vision_csv
from nautilus_dsm.errors import InvalidInput
from nautilus_dsm.testing import klines
from nautilus_dsm.testing.series import _select_opens
from nautilus_dsm.testing.symbols import SymbolSpec, default_symbols
from nautilus_dsm.testing.vision import _period

JAN_1_2024 = 1_704_067_200_000
MINUTE = 60_000
ALL_SPECS = [
    (market, spec) for market, specs in default_symbols().items() for spec in specs.values()
]
IDS = [f"{market.name}-{spec.symbol}" for market, spec in ALL_SPECS]


def _day_of_minutes(start: int = JAN_1_2024) -> np.ndarray:
    return np.arange(start, start + 1440 * MINUTE, MINUTE, dtype=np.int64)


@pytest.mark.parametrize(("market", "spec"), ALL_SPECS, ids=IDS)
def test_prices_and_volumes_lie_on_the_tick_and_step_grid(
    market: MarketType, spec: SymbolSpec
) -> None:
    ks = klines.kline_spec(spec, market)
    raw = klines.generate(ks, Interval.MINUTE_1, _day_of_minutes())

    for name in klines.PRICE_COLUMNS:
        assert (raw[name] % ks.tick_units == 0).all(), name
    for name in klines.QTY_COLUMNS:
        assert (raw[name] % ks.step_units == 0).all(), name
    for name in klines.QUOTE_COLUMNS:
        assert (raw[name] % 10 ** (8 - ks.quote_decimals) == 0).all(), name


@pytest.mark.parametrize(("market", "spec"), ALL_SPECS, ids=IDS)
def test_ohlc_and_volumes_are_consistent(market: MarketType, spec: SymbolSpec) -> None:
    ks = klines.kline_spec(spec, market)
    raw = klines.generate(ks, Interval.MINUTE_5, _day_of_minutes()[::5])

    assert len(raw) == 288
    assert (raw["low"] > 0).all()
    assert raw.select((pl.col("high") >= pl.max_horizontal("open", "close")).all()).item()
    assert raw.select((pl.col("low") <= pl.min_horizontal("open", "close")).all()).item()
    assert (raw["volume"] > 0).all()
    assert (raw["taker_buy_base_volume"] <= raw["volume"]).all()
    assert (raw["taker_buy_quote_volume"] <= raw["quote_volume"]).all()
    assert (raw["trades"] >= 1).all()
    assert (raw["close_time"] == raw["open_time"] + 5 * MINUTE - 1).all()
    # Each bar's close is the next bar's open (the same instant of the price path).
    assert raw["close"][:-1].to_list() == raw["open"][1:].to_list()


def test_quote_volume_is_volume_times_a_price_inside_the_bar() -> None:
    spec = default_symbols()[MarketType.SPOT]["BTCUSDT"]
    raw = klines.generate(klines.kline_spec(spec, MarketType.SPOT), Interval.HOUR_1, [JAN_1_2024])
    price = raw["quote_volume"][0] / raw["volume"][0]  # both in 1e-8 units

    assert raw["low"][0] / klines.UNIT <= price <= raw["high"][0] / klines.UNIT


def test_coin_m_quote_volume_is_the_base_asset_volume() -> None:
    spec = default_symbols()[MarketType.FUTURES_COIN]["BTCUSD_PERP"]
    raw = klines.generate(
        klines.kline_spec(spec, MarketType.FUTURES_COIN), Interval.HOUR_1, [JAN_1_2024]
    )
    contracts = raw["volume"][0] // klines.UNIT
    btc = raw["quote_volume"][0] / klines.UNIT
    low, high = raw["low"][0] / klines.UNIT, raw["high"][0] / klines.UNIT

    assert raw["volume"][0] % klines.UNIT == 0  # whole contracts
    assert contracts * 100 / high <= btc <= contracts * 100 / low


def test_sub_ranges_and_pages_are_identical_to_the_whole() -> None:
    spec = default_symbols()[MarketType.FUTURES_USDT]["ETHUSDT"]
    ks = klines.kline_spec(spec, MarketType.FUTURES_USDT)
    opens = _day_of_minutes()

    whole = klines.generate(ks, Interval.MINUTE_1, opens)
    pieces = pl.concat(
        [klines.generate(ks, Interval.MINUTE_1, opens[i : i + 37]) for i in range(0, 1440, 37)]
    )

    assert pieces.equals(whole)
    assert klines.generate(ks, Interval.MINUTE_1, opens[700:701]).equals(whole[700:701])


def test_intervals_share_the_price_path() -> None:
    spec = default_symbols()[MarketType.SPOT]["ETHUSDT"]
    ks = klines.kline_spec(spec, MarketType.SPOT)
    minutes = klines.generate(ks, Interval.MINUTE_1, _day_of_minutes())
    hours = klines.generate(ks, Interval.HOUR_1, _day_of_minutes()[::60])

    assert hours["open"].to_list() == minutes["open"][::60].to_list()
    assert hours["close"].to_list() == minutes["close"][59::60].to_list()


def test_generation_is_pinned_to_exact_values() -> None:
    # A regression anchor: integer arithmetic gives these digits on every machine.
    spec = default_symbols()[MarketType.SPOT]["BTCUSDT"]
    raw = klines.generate(klines.kline_spec(spec, MarketType.SPOT), Interval.MINUTE_1, [JAN_1_2024])

    row = klines.rest_rows(raw, klines.kline_spec(spec, MarketType.SPOT))[0]

    assert row[0] == JAN_1_2024
    assert row[1:5] == ("41400.32000000", "41468.72000000", "41365.86000000", "41431.15000000")
    assert row[6] == JAN_1_2024 + MINUTE - 1
    assert row[11] == "0"


@pytest.mark.parametrize(
    ("market", "symbol", "expected"),
    [
        (MarketType.SPOT, "BTCUSDT", (8, 8, 8, 8)),
        (MarketType.FUTURES_USDT, "BTCUSDT", (2, 3, 5, 3)),
        (MarketType.FUTURES_COIN, "BTCUSD_PERP", (1, 0, 8, 0)),
    ],
)
def test_rest_rows_print_binance_decimals(
    market: MarketType, symbol: str, expected: tuple[int, int, int, int]
) -> None:
    ks = klines.kline_spec(default_symbols()[market][symbol], market)
    row = klines.rest_rows(klines.generate(ks, Interval.MINUTE_1, [JAN_1_2024]), ks)[0]

    def decimals(text: object) -> int:
        assert isinstance(text, str)
        return len(text.split(".")[1]) if "." in text else 0

    assert (decimals(row[1]), decimals(row[5]), decimals(row[7]), decimals(row[9])) == expected
    assert isinstance(row[0], int) and isinstance(row[6], int) and isinstance(row[8], int)


def test_rest_rows_parse_back_to_the_frame() -> None:
    spec = default_symbols()[MarketType.FUTURES_USDT]["BTCUSDT"]
    ks = klines.kline_spec(spec, MarketType.FUTURES_USDT)
    raw = klines.generate(ks, Interval.MINUTE_15, _day_of_minutes()[::15])

    parsed = parse_rest_klines([list(row) for row in klines.rest_rows(raw, ks)])

    assert parsed.equals(klines.to_frame(raw))
    assert dict(parsed.schema) == FRAME_SCHEMA


def test_vision_csv_in_milliseconds_and_microseconds() -> None:
    spec = default_symbols()[MarketType.SPOT]["BTCUSDT"]
    ks = klines.kline_spec(spec, MarketType.SPOT)
    raw = klines.generate(ks, Interval.MINUTE_1, _day_of_minutes()[:3])

    ms_csv = klines.vision_csv(raw, ks, header=False, micros=False)
    us_csv = klines.vision_csv(raw, ks, header=False, micros=True)

    ms_first = ms_csv.split(b"\n")[0].split(b",")
    us_first = us_csv.split(b"\n")[0].split(b",")
    assert (ms_first[0], ms_first[6]) == (b"1704067200000", b"1704067259999")
    assert (us_first[0], us_first[6]) == (b"1704067200000000", b"1704067259999999")
    assert ms_first[1:6] == us_first[1:6]
    assert len(ms_csv.splitlines()) == 3
    assert parse_vision_csv(ms_csv).equals(klines.to_frame(raw))
    assert parse_vision_csv(us_csv).equals(klines.to_frame(raw))


def test_futures_vision_csv_has_the_header_and_wrong_columns_drops_one() -> None:
    spec = default_symbols()[MarketType.FUTURES_USDT]["BTCUSDT"]
    ks = klines.kline_spec(spec, MarketType.FUTURES_USDT)
    raw = klines.generate(ks, Interval.MINUTE_1, _day_of_minutes()[:2])

    lines = klines.vision_csv(raw, ks, header=True, micros=False).decode().splitlines()
    wrong = klines.vision_csv(raw, ks, header=True, micros=False, drop_ignore=True)

    assert lines[0] == klines.VISION_HEADER
    assert len(lines) == 3
    assert lines[1].count(",") == 11
    assert wrong.decode().splitlines()[1].count(",") == 10


def test_forming_bar_has_partial_values() -> None:
    spec = default_symbols()[MarketType.SPOT]["BTCUSDT"]
    ks = klines.kline_spec(spec, MarketType.SPOT)
    final = klines.generate(ks, Interval.HOUR_1, [JAN_1_2024])
    partial = klines.generate(ks, Interval.HOUR_1, [JAN_1_2024], now_ms=JAN_1_2024 + 20 * MINUTE)

    assert partial["open"][0] == final["open"][0]
    assert partial["close"][0] != final["close"][0]
    assert partial["volume"][0] < final["volume"][0]
    assert partial["close_time"][0] == final["close_time"][0]
    assert partial["high"][0] >= max(partial["open"][0], partial["close"][0])


def test_one_second_and_one_month_bars() -> None:
    spec = default_symbols()[MarketType.SPOT]["BTCUSDT"]
    ks = klines.kline_spec(spec, MarketType.SPOT)
    seconds = klines.generate(ks, Interval.SECOND_1, np.arange(JAN_1_2024, JAN_1_2024 + 5000, 1000))
    months = klines.generate(ks, Interval.MONTH_1, [JAN_1_2024, 1_706_745_600_000])

    assert (seconds["close_time"] - seconds["open_time"]).to_list() == [999] * 5
    # January has 31 days, February 2024 has 29.
    assert months["close_time"].to_list() == [1_706_745_599_999, 1_709_251_199_999]


def test_frame_round_trip_and_representability() -> None:
    spec = default_symbols()[MarketType.FUTURES_USDT]["BTCUSDT"]
    ks = klines.kline_spec(spec, MarketType.FUTURES_USDT)
    raw = klines.generate(ks, Interval.HOUR_4, [JAN_1_2024, JAN_1_2024 + 4 * 3_600_000])

    assert klines.from_frame(klines.to_frame(raw)).equals(raw)
    finer = raw.with_columns(pl.col("open") + 1)  # 1e-8 more than the 2 decimals UM prints
    with pytest.raises(InvalidInput, match="column open has values with more than 2 decimals"):
        klines.check_representable(finer, ks, "set_klines")


def test_invalid_tick_size_is_refused() -> None:
    spec = SymbolSpec("XUSDT", "X", "USDT", 1.0, "0.000000001", "1")

    with pytest.raises(InvalidInput) as exc:
        klines.kline_spec(spec, MarketType.FUTURES_USDT)

    assert str(exc.value) == (
        "tick size '0.000000001' of XUSDT is not a positive multiple of 1e-8; "
        "Binance sizes have at most 8 decimals, e.g. '0.01'"
    )


def test_select_opens_skips_gaps_and_honours_limit_from_either_end() -> None:
    interval = Interval.MINUTE_1
    lo, hi = JAN_1_2024, JAN_1_2024 + 9 * MINUTE
    gaps = [(JAN_1_2024 + 2 * MINUTE, JAN_1_2024 + 4 * MINUTE)]

    first = _select_opens(interval, lo, hi, gaps, 4, from_end=False)
    last = _select_opens(interval, lo, hi, gaps, 4, from_end=True)
    everything = _select_opens(interval, lo, hi, gaps, None, from_end=False)

    minute = [(t - JAN_1_2024) // MINUTE for t in everything]
    assert minute == [0, 1, 4, 5, 6, 7, 8, 9]
    assert [(t - JAN_1_2024) // MINUTE for t in first] == [0, 1, 4, 5]
    assert [(t - JAN_1_2024) // MINUTE for t in last] == [6, 7, 8, 9]


def test_select_opens_with_a_limit_over_years_of_seconds_is_bounded() -> None:
    opens = _select_opens(Interval.SECOND_1, 0, JAN_1_2024, [], 1000, from_end=True)

    assert len(opens) == 1000
    assert opens[-1] == JAN_1_2024


def test_vision_periods() -> None:
    assert _period("daily", "2024-01-31") == (1_706_659_200_000, 1_706_745_600_000)
    assert _period("monthly", "2024-02") == (1_706_745_600_000, 1_709_251_200_000)
    assert _period("daily", "2024-02-30") is None
