"""A raw Binance symbol without a market type is refused with the ids it could mean (pure)."""

from __future__ import annotations

import pytest

from nautilus_dsm.cli.inputs import resolve
from nautilus_dsm.common import MarketType
from nautilus_dsm.common.symbols import candidate_ids, refuse_marketless_symbol
from nautilus_dsm.errors import InvalidInput


@pytest.mark.parametrize(
    ("symbol", "ids"),
    [
        ("BTCUSDT", ["BTCUSDT.BINANCE", "BTCUSDT-PERP.BINANCE", "BTCUSD-PERP.BINANCE"]),
        ("ethusdc", ["ETHUSDC.BINANCE", "ETHUSDC-PERP.BINANCE", "ETHUSD-PERP.BINANCE"]),
        ("BTCUSD", ["BTCUSD.BINANCE", "BTCUSD-PERP.BINANCE"]),
        # BNBUSD ends in BUSD, yet is COIN-M's BNB against USD (NautilusTrader's guard).
        ("BNBUSD", ["BNBUSD.BINANCE", "BNBUSD-PERP.BINANCE"]),
        ("ETHBTC", ["ETHBTC.BINANCE"]),
    ],
)
def test_candidate_ids(symbol: str, ids: list[str]) -> None:
    assert [i for i, _ in candidate_ids(symbol)] == ids


def test_the_refusal_names_the_three_ids_and_the_option() -> None:
    with pytest.raises(InvalidInput) as err:
        resolve("BTCUSDT", None, "1m")

    assert str(err.value) == (
        "'BTCUSDT' is a Binance symbol without a market; use the instrument id you mean: "
        "BTCUSDT.BINANCE (spot), BTCUSDT-PERP.BINANCE (USDT-M perpetual), BTCUSD-PERP.BINANCE "
        "(COIN-M perpetual), or pass --market-type (spot, futures_usdt, futures_coin)"
    )


@pytest.mark.parametrize(
    ("text", "market_type", "expected"),
    [
        ("BTCUSDT", "futures_usdt", "BTCUSDT-PERP.BINANCE"),
        ("BTCUSDT", MarketType.SPOT, "BTCUSDT.BINANCE"),
        ("BTCUSDT-PERP.BINANCE", None, "BTCUSDT-PERP.BINANCE"),
        ("BTCUSDT-PERP", None, "BTCUSDT-PERP.BINANCE"),
        ("BTCUSD_PERP", None, "BTCUSD-PERP.BINANCE"),
        ("BTCUSDT_240628", None, "BTCUSDT_240628.BINANCE"),
    ],
)
def test_ids_and_symbols_that_carry_their_market_pass(
    text: str, market_type: object, expected: str
) -> None:
    refuse_marketless_symbol(text, market_type)

    assert resolve(text, market_type, "1m")[0].instrument_id == expected  # type: ignore[arg-type]


def test_a_malformed_symbol_gets_the_symbol_rule_not_a_list_of_ids() -> None:
    with pytest.raises(InvalidInput) as err:
        refuse_marketless_symbol("BTC/USDT", None)

    assert str(err.value).startswith("invalid symbol 'BTC/USDT'")
