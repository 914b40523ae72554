"""Markets, intervals and the instrument id <-> Binance symbol mapping (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from nautilus_dsm.common import (
    ENDPOINTS,
    Interval,
    MarketType,
    check_range,
    from_ms,
    resolve_instrument,
    rest_base_url,
    to_ms,
)
from nautilus_dsm.errors import InvalidInput, MarketTypeMismatch


def ms(*args: int) -> int:
    return to_ms(datetime(*args, tzinfo=UTC))


@pytest.mark.parametrize(
    ("given", "instrument_id", "symbol", "market"),
    [
        ("BTCUSDT.BINANCE", "BTCUSDT.BINANCE", "BTCUSDT", MarketType.SPOT),
        ("BTCUSDT-PERP.BINANCE", "BTCUSDT-PERP.BINANCE", "BTCUSDT", MarketType.FUTURES_USDT),
        ("ETHUSDC-PERP.BINANCE", "ETHUSDC-PERP.BINANCE", "ETHUSDC", MarketType.FUTURES_USDT),
        ("BTCUSD-PERP.BINANCE", "BTCUSD-PERP.BINANCE", "BTCUSD_PERP", MarketType.FUTURES_COIN),
        ("BNBUSD-PERP.BINANCE", "BNBUSD-PERP.BINANCE", "BNBUSD_PERP", MarketType.FUTURES_COIN),
        (
            "BTCUSDT_220325.BINANCE",
            "BTCUSDT_220325.BINANCE",
            "BTCUSDT_220325",
            MarketType.FUTURES_USDT,
        ),
        (
            "BTCUSD_250328.BINANCE",
            "BTCUSD_250328.BINANCE",
            "BTCUSD_250328",
            MarketType.FUTURES_COIN,
        ),
        ("BTCUSD_PERP", "BTCUSD-PERP.BINANCE", "BTCUSD_PERP", MarketType.FUTURES_COIN),
        ("btcusdt-perp", "BTCUSDT-PERP.BINANCE", "BTCUSDT", MarketType.FUTURES_USDT),
    ],
)
def test_resolve_infers_market_from_id(
    given: str, instrument_id: str, symbol: str, market: MarketType
) -> None:
    resolved = resolve_instrument(given)
    assert (resolved.instrument_id, resolved.symbol, resolved.market_type) == (
        instrument_id,
        symbol,
        market,
    )


def test_raw_symbol_takes_explicit_market_type() -> None:
    resolved = resolve_instrument("BTCUSDT", "futures_usdt")
    assert resolved.instrument_id == "BTCUSDT-PERP.BINANCE"
    assert resolved.symbol == "BTCUSDT"
    assert resolve_instrument("BTCUSDT").market_type is MarketType.SPOT


def test_mapping_matches_nautilus_binance_adapter() -> None:
    from nautilus_trader.adapters.binance.common.enums import BinanceAccountType
    from nautilus_trader.adapters.binance.common.symbol import BinanceSymbol

    for nautilus_symbol in ["BTCUSDT-PERP", "BTCUSD-PERP", "BNBUSD-PERP", "ETHUSDC-PERP"]:
        resolved = resolve_instrument(f"{nautilus_symbol}.BINANCE")
        assert resolved.symbol == str(BinanceSymbol(nautilus_symbol))
        account = (
            BinanceAccountType.USDT_FUTURES
            if resolved.market_type is MarketType.FUTURES_USDT
            else BinanceAccountType.COIN_FUTURES
        )
        assert BinanceSymbol(resolved.symbol).parse_as_nautilus(account) == nautilus_symbol


def test_perp_id_with_spot_market_is_refused_with_fix() -> None:
    with pytest.raises(MarketTypeMismatch) as err:
        resolve_instrument("BTCUSDT-PERP.BINANCE", MarketType.SPOT)
    assert str(err.value) == (
        "BTCUSDT-PERP.BINANCE is a USDT-margined futures instrument, but market type SPOT was "
        "requested; use MarketType.FUTURES_USDT (--market-type futures_usdt) or leave it unset, or use the "
        "spot instrument id (e.g. BTCUSDT.BINANCE)"
    )


def test_spot_id_with_futures_market_is_refused() -> None:
    with pytest.raises(MarketTypeMismatch, match=r"BTCUSDT\.BINANCE is a SPOT instrument"):
        resolve_instrument("BTCUSDT.BINANCE", "futures_usdt")


def test_coin_symbol_with_usdt_market_is_refused() -> None:
    with pytest.raises(MarketTypeMismatch, match="BTCUSD_PERP is a coin-margined"):
        resolve_instrument("BTCUSD_PERP", MarketType.FUTURES_USDT)


@pytest.mark.parametrize(
    "bad", ["../../etc/passwd", "BTC/USDT", "BTC USDT", "", "BTCUSDT.BINANCE/x"]
)
def test_symbols_outside_binance_alphabet_are_refused(bad: str) -> None:
    with pytest.raises(InvalidInput):
        resolve_instrument(bad, MarketType.SPOT)


def test_other_venue_is_refused() -> None:
    with pytest.raises(InvalidInput, match="has venue 'BYBIT'"):
        resolve_instrument("BTCUSDT.BYBIT")


def test_unknown_market_type() -> None:
    with pytest.raises(InvalidInput, match="unknown market type 'margin'"):
        MarketType.parse("margin")


def test_endpoints_and_override() -> None:
    assert rest_base_url(MarketType.SPOT) == "https://api.binance.com/api/v3"
    assert rest_base_url(MarketType.FUTURES_COIN, "http://127.0.0.1:9/") == (
        "http://127.0.0.1:9/dapi/v1"
    )
    assert [ENDPOINTS[m].vision_prefix for m in MarketType] == [
        "data/spot",
        "data/futures/um",
        "data/futures/cm",
    ]
    assert [ENDPOINTS[m].kline_limit for m in MarketType] == [1000, 1500, 1500]


def test_interval_parse_and_market_check() -> None:
    assert Interval.parse("1M") is Interval.MONTH_1
    assert Interval.parse("1m") is Interval.MINUTE_1
    with pytest.raises(InvalidInput, match="unknown interval '2m'"):
        Interval.parse("2m")
    Interval.SECOND_1.check_market(MarketType.SPOT)
    with pytest.raises(InvalidInput, match="interval 1s is served on SPOT only"):
        Interval.SECOND_1.check_market(MarketType.FUTURES_USDT)


def test_interval_grid() -> None:
    week = Interval.MINUTE_1.count(ms(2024, 1, 1), ms(2024, 1, 8))
    assert week == 10080
    assert Interval.HOUR_1.count(ms(2024, 1, 1, 0, 30), ms(2024, 1, 1, 3)) == 2
    assert Interval.WEEK_1.floor_ms(ms(2024, 1, 3)) == ms(2024, 1, 1)  # Monday
    assert Interval.MONTH_1.open_times_ms(ms(2024, 1, 15), ms(2024, 5, 1)) == [
        ms(2024, 2, 1),
        ms(2024, 3, 1),
        ms(2024, 4, 1),
    ]
    assert Interval.MONTH_1.next_open_ms(ms(2024, 12, 1)) == ms(2025, 1, 1)
    assert Interval.DAY_3.count(ms(2024, 1, 1), ms(2024, 2, 1)) == len(
        Interval.DAY_3.open_times_ms(ms(2024, 1, 1), ms(2024, 2, 1))
    )


def test_times_are_exact_and_naive_refused() -> None:
    dt = datetime(2024, 1, 1, 0, 0, 0, 999_999, tzinfo=UTC)
    assert to_ms(dt) == 1704067200999
    assert from_ms(1704067200999) == datetime(2024, 1, 1, 0, 0, 0, 999_000, tzinfo=UTC)
    assert to_ms(datetime(2024, 1, 1, 1, tzinfo=timezone(timedelta(hours=1)))) == 1704067200000
    with pytest.raises(InvalidInput, match="naive datetime 2024-01-01T00:00:00 is ambiguous"):
        to_ms(datetime(2024, 1, 1))


def test_check_range() -> None:
    start = datetime(2024, 1, 2, tzinfo=UTC)
    assert check_range(start, start + timedelta(minutes=1)) == (1704153600000, 1704153660000)
    with pytest.raises(InvalidInput, match="is not before end"):
        check_range(start, start)
