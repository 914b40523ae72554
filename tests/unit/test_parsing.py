"""exchangeInfo -> Nautilus instruments, proven field by field against NautilusTrader's own
Binance instrument providers on recorded Binance payloads, plus COIN-M inverse specs."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nautilus_trader.adapters.binance.common.enums import BinanceAccountType
from nautilus_trader.adapters.binance.futures.providers import BinanceFuturesInstrumentProvider
from nautilus_trader.adapters.binance.futures.schemas.market import BinanceFuturesExchangeInfo
from nautilus_trader.adapters.binance.futures.schemas.wallet import BinanceFuturesCommissionRate
from nautilus_trader.adapters.binance.http.client import BinanceHttpClient
from nautilus_trader.adapters.binance.spot.providers import BinanceSpotInstrumentProvider
from nautilus_trader.adapters.binance.spot.schemas.market import BinanceSpotExchangeInfo
from nautilus_trader.common.component import LiveClock
from nautilus_trader.model.identifiers import InstrumentId
from nautilus_trader.model.instruments import (
    CryptoFuture,
    CryptoPerpetual,
    CurrencyPair,
    Instrument,
)
from nautilus_trader.model.objects import Money, Price, Quantity

from nautilus_dsm.common import MarketType
from nautilus_dsm.errors import InvalidInput, MarketTypeMismatch
from nautilus_dsm.parsing import (
    DEFAULT_FEES,
    SkippedSymbol,
    parse_exchange_info,
    parse_instrument,
    parse_instruments,
)

TS_INIT = 1_700_000_000_000_000_000


# --------------------------------------------------------------------------------------------
# NautilusTrader's own providers, driven offline
# --------------------------------------------------------------------------------------------


def _nt_client() -> BinanceHttpClient:
    # No keys: NT's providers then use their keyless fee defaults; nothing is ever sent.
    return BinanceHttpClient(LiveClock(), None, None, "http://127.0.0.1:9")


def nt_spot_instruments(exchange_info: dict[str, Any]) -> dict[InstrumentId, Instrument]:
    """Parse with ``BinanceSpotInstrumentProvider._parse_instrument`` (no fees without keys)."""
    payload = copy.deepcopy(exchange_info)
    for symbol in payload["symbols"]:
        # Field NT's schema requires and older captures lack; NT's parser does not read it.
        symbol.setdefault("allowTrailingStop", False)
    info = msgspec.convert(payload, BinanceSpotExchangeInfo)
    provider = BinanceSpotInstrumentProvider(_nt_client(), LiveClock())
    for symbol_info in info.symbols:
        provider._parse_instrument(symbol_info, None, info.serverTime * 1_000_000)
    return provider.get_all()


def nt_futures_instruments(
    exchange_info: dict[str, Any],
    account_type: BinanceAccountType = BinanceAccountType.USDT_FUTURES,
) -> dict[InstrumentId, Instrument]:
    """Parse with ``BinanceFuturesInstrumentProvider._parse_instrument`` and its keyless fees."""
    info = msgspec.convert(exchange_info, BinanceFuturesExchangeInfo)
    provider = BinanceFuturesInstrumentProvider(_nt_client(), LiveClock(), account_type)
    tier0 = provider._fee_rates[0]  # what NT uses when no API key is configured
    for symbol_info in info.symbols:
        fee = BinanceFuturesCommissionRate(
            symbol=symbol_info.symbol,
            makerCommissionRate=tier0.maker,
            takerCommissionRate=tier0.taker,
        )
        provider._parse_instrument(symbol_info, info.serverTime * 1_000_000, fee=fee)
    return provider.get_all()


def _money(value: Money | None) -> str | None:
    return None if value is None else str(value)


def _currency(instrument: Instrument, name: str) -> tuple[str, int, str] | None:
    currency = getattr(instrument, name, None)
    if currency is None:
        return None
    return (currency.code, currency.precision, currency.currency_type.name)


def specs(instrument: Instrument) -> dict[str, Any]:
    """Every field that matters, as exact strings (value and precision)."""
    return {
        "class": type(instrument).__name__,
        "id": instrument.id.value,
        "raw_symbol": instrument.raw_symbol.value,
        "base_currency": _currency(instrument, "base_currency"),
        "underlying": _currency(instrument, "underlying"),
        "quote_currency": _currency(instrument, "quote_currency"),
        "settlement_currency": instrument.get_settlement_currency().code,
        "is_inverse": instrument.is_inverse,
        "price_precision": instrument.price_precision,
        "size_precision": instrument.size_precision,
        "price_increment": str(instrument.price_increment),
        "size_increment": str(instrument.size_increment),
        "multiplier": str(instrument.multiplier),
        "lot_size": str(instrument.lot_size),
        "max_quantity": str(instrument.max_quantity),
        "min_quantity": str(instrument.min_quantity),
        "max_notional": _money(instrument.max_notional),
        "min_notional": _money(instrument.min_notional),
        "max_price": str(instrument.max_price),
        "min_price": str(instrument.min_price),
        "margin_init": str(instrument.margin_init),
        "margin_maint": str(instrument.margin_maint),
        "maker_fee": str(instrument.maker_fee),
        "taker_fee": str(instrument.taker_fee),
        "activation_ns": getattr(instrument, "activation_ns", None),
        "expiration_ns": getattr(instrument, "expiration_ns", None),
    }


def _load(realdata: Path, name: str) -> dict[str, Any]:
    return json.loads((realdata / name).read_text())


def _assert_same_as_nautilus(
    ours: list[Instrument], theirs: dict[InstrumentId, Instrument]
) -> None:
    assert [i.id for i in ours] == list(theirs)
    for instrument in ours:
        assert specs(instrument) == specs(theirs[instrument.id]), instrument.id


# --------------------------------------------------------------------------------------------
# Proof against NautilusTrader on recorded payloads
# --------------------------------------------------------------------------------------------


@pytest.mark.realdata
def test_spot_matches_nautilus_binance_provider(realdata: Path) -> None:
    payload = _load(realdata, "exchange_info_spot.json")

    ours = parse_instruments(MarketType.SPOT, payload, TS_INIT)

    _assert_same_as_nautilus(ours, nt_spot_instruments(payload))
    assert [specs(i)["id"] for i in ours] == ["BTCUSDT.BINANCE", "ETHUSDT.BINANCE"]


@pytest.mark.realdata
def test_spot_exact_values(realdata: Path) -> None:
    payload = _load(realdata, "exchange_info_spot.json")

    btc = parse_instruments(MarketType.SPOT, payload, TS_INIT)[0]

    assert isinstance(btc, CurrencyPair)
    got = specs(btc)
    assert got["base_currency"] == ("BTC", 8, "CRYPTO")
    assert got["quote_currency"] == ("USDT", 8, "CRYPTO")
    assert (got["price_precision"], got["price_increment"]) == (8, "0.01000000")
    assert (got["size_precision"], got["size_increment"]) == (8, "0.00001000")
    assert (got["lot_size"], got["min_quantity"], got["max_quantity"]) == (
        "0.00001000",
        "0.00001000",
        "9000.00000000",
    )
    assert (got["min_price"], got["max_price"]) == ("0.01000000", "1000000.00000000")
    assert got["min_notional"] == "10.00000000 USDT"
    assert got["max_notional"] is None
    assert (got["maker_fee"], got["taker_fee"]) == ("0", "0")
    assert (got["margin_init"], got["margin_maint"]) == ("0", "0")
    # Spot ts_event is the exchangeInfo serverTime, never after ts_init (as NT).
    assert btc.ts_event == payload["serverTime"] * 1_000_000
    assert btc.ts_init == TS_INIT
    assert btc.info["symbol"] == "BTCUSDT"


@pytest.mark.realdata
def test_spot_notional_filter_and_price_cap_match_nautilus(realdata: Path) -> None:
    # Newer spot payloads carry NOTIONAL (min and max) instead of MIN_NOTIONAL, and some
    # symbols a maxPrice above 2**32, which NT caps.
    payload = _load(realdata, "exchange_info_spot.json")
    for symbol in payload["symbols"]:
        symbol["filters"] = [f for f in symbol["filters"] if f["filterType"] != "MIN_NOTIONAL"]
        symbol["filters"].append(
            {
                "filterType": "NOTIONAL",
                "minNotional": "5.00000000",
                "applyMinToMarket": True,
                "maxNotional": "9000000.00000000",
                "applyMaxToMarket": False,
                "avgPriceMins": 5,
            }
        )
        symbol["filters"][0]["maxPrice"] = "99999999999.00000000"

    ours = parse_instruments(MarketType.SPOT, payload, TS_INIT)

    _assert_same_as_nautilus(ours, nt_spot_instruments(payload))
    assert specs(ours[0])["min_notional"] == "5.00000000 USDT"
    assert specs(ours[0])["max_notional"] == "9000000.00000000 USDT"
    assert specs(ours[0])["max_price"] == "4294967296.00000000"


@pytest.mark.realdata
def test_spot_small_symbol_without_filters_is_skipped_with_reason(realdata: Path) -> None:
    payload = _load(realdata, "exchange_info_spot_small.json")

    parsed = parse_exchange_info(MarketType.SPOT, payload, TS_INIT)

    assert parsed.instruments == []
    assert parsed.skipped == [
        SkippedSymbol(
            "ETHBTC",
            MarketType.SPOT,
            "SPOT symbol ETHBTC has no PRICE_FILTER filter; the exchangeInfo definition is "
            "malformed, so no instrument is built for it (refetch exchangeInfo from Binance)",
        )
    ]
    # NT's provider fails on the same payload (KeyError escapes its ValueError handler).
    with pytest.raises(KeyError):
        nt_spot_instruments(payload)


@pytest.mark.realdata
def test_spot_small_with_filters_matches_nautilus(realdata: Path) -> None:
    payload = _load(realdata, "exchange_info_spot_small.json")
    payload["symbols"][0]["filters"] = [
        {
            "filterType": "PRICE_FILTER",
            "minPrice": "0.00001000",
            "maxPrice": "922327.00000000",
            "tickSize": "0.00001000",
        },
        {
            "filterType": "LOT_SIZE",
            "minQty": "0.00010000",
            "maxQty": "100000.00000000",
            "stepSize": "0.00010000",
        },
    ]

    ours = parse_instruments(MarketType.SPOT, payload, TS_INIT)

    _assert_same_as_nautilus(ours, nt_spot_instruments(payload))
    got = specs(ours[0])
    assert (got["id"], got["quote_currency"]) == ("ETHBTC.BINANCE", ("BTC", 8, "CRYPTO"))
    assert (got["min_notional"], got["max_notional"]) == (None, None)


@pytest.mark.realdata
def test_usdt_futures_match_nautilus_binance_provider(realdata: Path) -> None:
    payload = _load(realdata, "exchange_info_futures_um.json")

    ours = parse_instruments(MarketType.FUTURES_USDT, payload, TS_INIT)

    _assert_same_as_nautilus(ours, nt_futures_instruments(payload))
    assert [i.id.value for i in ours] == [
        "BTCUSDT-PERP.BINANCE",
        "ETHUSDT-PERP.BINANCE",
        "BTCUSDT_220325.BINANCE",
    ]


@pytest.mark.realdata
def test_usdt_perpetual_exact_values(realdata: Path) -> None:
    payload = _load(realdata, "exchange_info_futures_um.json")

    btc = parse_instruments(MarketType.FUTURES_USDT, payload, TS_INIT)[0]

    assert isinstance(btc, CryptoPerpetual)
    assert specs(btc) | {"underlying": None} == {
        "class": "CryptoPerpetual",
        "id": "BTCUSDT-PERP.BINANCE",
        "raw_symbol": "BTCUSDT",
        "base_currency": ("BTC", 8, "CRYPTO"),
        "underlying": None,
        "quote_currency": ("USDT", 8, "CRYPTO"),
        "settlement_currency": "USDT",
        "is_inverse": False,
        "price_precision": 2,
        "size_precision": 3,
        "price_increment": "0.10",
        "size_increment": "0.001",
        "multiplier": "1",
        "lot_size": "1",
        "max_quantity": "1000.000",
        "min_quantity": "0.001",
        "max_notional": None,
        "min_notional": "10.00000000 USDT",
        "max_price": "1246396.60",
        "min_price": "402.00",
        "margin_init": "1",
        "margin_maint": "1",
        "maker_fee": "0.000200",
        "taker_fee": "0.000500",
        "activation_ns": None,
        "expiration_ns": None,
    }
    assert btc.ts_event == payload["serverTime"] * 1_000_000


@pytest.mark.realdata
def test_usdt_deliverable_is_crypto_future(realdata: Path) -> None:
    payload = _load(realdata, "exchange_info_futures_um.json")

    future = parse_instruments(MarketType.FUTURES_USDT, payload, TS_INIT)[2]

    assert isinstance(future, CryptoFuture)
    assert future.id.value == "BTCUSDT_220325.BINANCE"
    assert future.underlying.code == "BTC"
    assert future.activation_ns == 1_640_332_800_000 * 1_000_000
    assert future.expiration_ns == 1_648_195_200_000 * 1_000_000
    assert (future.price_precision, str(future.price_increment)) == (1, "0.1")


# --------------------------------------------------------------------------------------------
# COIN-M: inverse, multiplier = contractSize (Binance /dapi/v1/exchangeInfo format)
# --------------------------------------------------------------------------------------------


def _cm_symbol(
    symbol: str,
    contract_type: str,
    base: str,
    contract_size: int,
    tick: str,
    min_price: str,
    max_price: str,
    delivery_ms: int = 4_133_404_800_000,
    onboard_ms: int = 1_597_042_800_000,
    status: str = "TRADING",
) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "pair": f"{base}USD",
        "contractType": contract_type,
        "deliveryDate": delivery_ms,
        "onboardDate": onboard_ms,
        "contractStatus": status,
        "contractSize": contract_size,
        "marginAsset": base,
        "maintMarginPercent": "2.5000",
        "requiredMarginPercent": "5.0000",
        "baseAsset": base,
        "quoteAsset": "USD",
        "pricePrecision": len(tick.split(".")[1]) if "." in tick else 0,
        "quantityPrecision": 0,
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "equalQtyPrecision": 4,
        "maxMoveOrderLimit": 10000,
        "triggerProtect": "0.0500",
        "underlyingType": "COIN",
        "underlyingSubType": [],
        "liquidationFee": "0.015000",
        "marketTakeBound": "0.05",
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": min_price,
                "maxPrice": max_price,
                "tickSize": tick,
            },
            {"filterType": "LOT_SIZE", "stepSize": "1", "maxQty": "1000000", "minQty": "1"},
            {
                "filterType": "MARKET_LOT_SIZE",
                "stepSize": "1",
                "maxQty": "60000",
                "minQty": "1",
            },
            {"filterType": "MAX_NUM_ORDERS", "limit": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 20},
            {
                "filterType": "PERCENT_PRICE",
                "multiplierUp": "1.0500",
                "multiplierDown": "0.9500",
                "multiplierDecimal": 4,
            },
        ],
        "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT"],
        "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
    }


def coin_m_exchange_info() -> dict[str, Any]:
    """A ``GET /dapi/v1/exchangeInfo`` response in Binance's documented format."""
    return {
        "timezone": "UTC",
        "serverTime": 1_704_067_200_000,
        "rateLimits": [],
        "exchangeFilters": [],
        "symbols": [
            _cm_symbol("BTCUSD_PERP", "PERPETUAL", "BTC", 100, "0.1", "1000", "4520958"),
            _cm_symbol("ETHUSD_PERP", "PERPETUAL", "ETH", 10, "0.01", "50", "306177"),
            _cm_symbol(
                "BTCUSD_240329",
                "CURRENT_QUARTER",
                "BTC",
                100,
                "0.1",
                "1000",
                "4520958",
                delivery_ms=1_711_699_200_000,
                onboard_ms=1_695_974_400_000,
            ),
            _cm_symbol(
                "BTCUSD_231229",
                "CURRENT_QUARTER",
                "BTC",
                100,
                "0.1",
                "1000",
                "4520958",
                delivery_ms=1_703_836_800_000,
                status="SETTLING",
            ),
        ],
    }


def test_coin_m_perpetual_is_inverse_with_contract_size_multiplier() -> None:
    parsed = parse_exchange_info(MarketType.FUTURES_COIN, coin_m_exchange_info(), TS_INIT)

    btc = parsed.instruments[0]
    assert isinstance(btc, CryptoPerpetual)
    assert specs(btc) == {
        "class": "CryptoPerpetual",
        "id": "BTCUSD-PERP.BINANCE",
        "raw_symbol": "BTCUSD_PERP",
        "base_currency": ("BTC", 8, "CRYPTO"),
        "underlying": None,
        "quote_currency": ("USD", 8, "CRYPTO"),
        "settlement_currency": "BTC",
        "is_inverse": True,
        "price_precision": 1,
        "size_precision": 0,
        "price_increment": "0.1",
        "size_increment": "1",
        "multiplier": "100",
        "lot_size": "1",
        "max_quantity": "1000000",
        "min_quantity": "1",
        "max_notional": None,
        "min_notional": None,
        "max_price": "4520958.0",
        "min_price": "1000.0",
        "margin_init": "1",
        "margin_maint": "1",
        "maker_fee": "0.000200",
        "taker_fee": "0.000500",
        "activation_ns": None,
        "expiration_ns": None,
    }
    assert btc.settlement_currency.code == "BTC"
    assert btc.ts_event == 1_704_067_200_000 * 1_000_000


def test_coin_m_notional_is_contracts_times_size_over_price_in_base() -> None:
    btc, eth = parse_instruments(MarketType.FUTURES_COIN, coin_m_exchange_info(), TS_INIT)[:2]

    # 3 contracts of 100 USD at 40 000 USD/BTC = 0.0075 BTC.
    btc_notional = btc.notional_value(Quantity.from_int(3), Price.from_str("40000.0"))
    eth_notional = eth.notional_value(Quantity.from_int(5), Price.from_str("2000.00"))

    assert (btc_notional.as_decimal(), btc_notional.currency.code) == (Decimal("0.0075"), "BTC")
    assert (eth_notional.as_decimal(), eth_notional.currency.code) == (Decimal("0.025"), "ETH")
    assert (eth.id.value, str(eth.multiplier), eth.price_precision) == (
        "ETHUSD-PERP.BINANCE",
        "10",
        2,
    )


def test_coin_m_deliverable_is_inverse_crypto_future() -> None:
    parsed = parse_exchange_info(MarketType.FUTURES_COIN, coin_m_exchange_info(), TS_INIT)

    future = parsed.instruments[2]

    assert isinstance(future, CryptoFuture)
    assert (future.id.value, future.raw_symbol.value) == ("BTCUSD_240329.BINANCE", "BTCUSD_240329")
    assert (future.is_inverse, str(future.multiplier)) == (True, "100")
    assert (future.underlying.code, future.settlement_currency.code) == ("BTC", "BTC")
    assert future.activation_ns == 1_695_974_400_000 * 1_000_000
    assert future.expiration_ns == 1_711_699_200_000 * 1_000_000


def test_coin_m_contract_status_not_trading_is_skipped() -> None:
    parsed = parse_exchange_info(MarketType.FUTURES_COIN, coin_m_exchange_info(), TS_INIT)

    assert [i.id.value for i in parsed.instruments] == [
        "BTCUSD-PERP.BINANCE",
        "ETHUSD-PERP.BINANCE",
        "BTCUSD_240329.BINANCE",
    ]
    assert parsed.skipped == [
        SkippedSymbol("BTCUSD_231229", MarketType.FUTURES_COIN, "status 'SETTLING' is not TRADING")
    ]


def test_coin_m_nautilus_adapter_models_linear_times_one_we_differ() -> None:
    # Documents the deliberate difference: NT's provider builds COIN-M as linear x1.
    payload = coin_m_exchange_info()
    payload["symbols"] = payload["symbols"][:1]
    for f in payload["symbols"][0]["filters"]:
        if "multiplierDecimal" in f:
            f["multiplierDecimal"] = str(f["multiplierDecimal"])

    theirs = nt_futures_instruments(payload, BinanceAccountType.COIN_FUTURES)
    ours = parse_instruments(MarketType.FUTURES_COIN, payload, TS_INIT)

    nt_btc = theirs[InstrumentId.from_str("BTCUSD-PERP.BINANCE")]
    assert (nt_btc.is_inverse, str(nt_btc.multiplier)) == (False, "1")
    assert (ours[0].is_inverse, str(ours[0].multiplier)) == (True, "100")
    differing = {k for k, v in specs(ours[0]).items() if specs(nt_btc)[k] != v}
    assert differing == {"is_inverse", "multiplier"}


# --------------------------------------------------------------------------------------------
# Skips, errors, options
# --------------------------------------------------------------------------------------------


def _um_payload(realdata: Path) -> dict[str, Any]:
    return _load(realdata, "exchange_info_futures_um.json")


@pytest.mark.realdata
def test_non_trading_and_unsupported_contracts_are_reported(realdata: Path) -> None:
    payload = _um_payload(realdata)
    payload["symbols"][0]["status"] = "SETTLING"
    payload["symbols"][1]["contractType"] = ""
    payload["symbols"][2]["contractType"] = "EXOTIC_SWAP"

    parsed = parse_exchange_info(MarketType.FUTURES_USDT, payload, TS_INIT)

    assert parsed.instruments == []
    assert parsed.skipped == [
        SkippedSymbol("BTCUSDT", MarketType.FUTURES_USDT, "status 'SETTLING' is not TRADING"),
        SkippedSymbol(
            "ETHUSDT",
            MarketType.FUTURES_USDT,
            "contract type not yet defined (empty contractType)",
        ),
        SkippedSymbol(
            "BTCUSDT_220325", MarketType.FUTURES_USDT, "unsupported contract type 'EXOTIC_SWAP'"
        ),
    ]


@pytest.mark.realdata
def test_include_non_trading_builds_halted_symbols(realdata: Path) -> None:
    payload = _load(realdata, "exchange_info_spot.json")
    payload["symbols"][1]["status"] = "BREAK"

    default = parse_exchange_info(MarketType.SPOT, payload, TS_INIT)
    included = parse_exchange_info(MarketType.SPOT, payload, TS_INIT, include_non_trading=True)

    assert [i.id.value for i in default.instruments] == ["BTCUSDT.BINANCE"]
    assert default.skipped == [
        SkippedSymbol("ETHUSDT", MarketType.SPOT, "status 'BREAK' is not TRADING")
    ]
    assert [i.id.value for i in included.instruments] == ["BTCUSDT.BINANCE", "ETHUSDT.BINANCE"]
    assert included.skipped == []


@pytest.mark.realdata
def test_malformed_tick_size_is_skipped_naming_symbol_and_field(realdata: Path) -> None:
    payload = _um_payload(realdata)
    payload["symbols"][1]["filters"][0]["tickSize"] = "0"

    parsed = parse_exchange_info(MarketType.FUTURES_USDT, payload, TS_INIT)

    assert [i.id.value for i in parsed.instruments] == [
        "BTCUSDT-PERP.BINANCE",
        "BTCUSDT_220325.BINANCE",
    ]
    assert parsed.skipped == [
        SkippedSymbol(
            "ETHUSDT",
            MarketType.FUTURES_USDT,
            "FUTURES_USDT symbol ETHUSDT has tickSize 0 outside (0, 17014118346046.0]; the "
            "exchangeInfo definition is malformed, so no instrument is built for it "
            "(refetch exchangeInfo from Binance)",
        )
    ]


@pytest.mark.realdata
def test_spot_payload_parsed_as_futures_raises_mismatch(realdata: Path) -> None:
    payload = _load(realdata, "exchange_info_spot.json")

    with pytest.raises(MarketTypeMismatch) as err:
        parse_exchange_info(MarketType.FUTURES_USDT, payload, TS_INIT)

    assert str(err.value) == (
        "exchangeInfo symbol 'BTCUSDT' is from SPOT (/api/v3/exchangeInfo), but it was parsed "
        "as FUTURES_USDT; parse it with MarketType.SPOT or fetch /fapi/v1/exchangeInfo"
    )


def test_coin_m_payload_parsed_as_usdt_raises_mismatch() -> None:
    with pytest.raises(MarketTypeMismatch, match=r"'BTCUSD_PERP' is from FUTURES_COIN"):
        parse_exchange_info(MarketType.FUTURES_USDT, coin_m_exchange_info(), TS_INIT)


def test_payload_without_symbols_raises_invalid_input() -> None:
    with pytest.raises(InvalidInput) as err:
        parse_instruments(MarketType.SPOT, {"code": -1121, "msg": "Invalid symbol."}, TS_INIT)

    assert str(err.value) == (
        "SPOT exchangeInfo has no 'symbols' list; pass the decoded JSON of Binance's GET "
        "exchangeInfo response (/api/v3, /fapi/v1 or /dapi/v1)"
    )


def test_duplicate_symbol_is_built_once() -> None:
    payload = coin_m_exchange_info()
    payload["symbols"].append(copy.deepcopy(payload["symbols"][0]))

    parsed = parse_exchange_info(MarketType.FUTURES_COIN, payload, TS_INIT)

    assert [i.id.value for i in parsed.instruments].count("BTCUSD-PERP.BINANCE") == 1
    assert parsed.skipped[-1] == SkippedSymbol(
        "BTCUSD_PERP",
        MarketType.FUTURES_COIN,
        "listed twice in exchangeInfo; the first listing is used",
    )


def test_empty_symbols_gives_nothing() -> None:
    parsed = parse_exchange_info(MarketType.SPOT, {"serverTime": 1, "symbols": []}, TS_INIT)

    assert (parsed.instruments, parsed.skipped) == ([], [])


def test_parse_instrument_fee_override_and_default_fees() -> None:
    info = coin_m_exchange_info()["symbols"][0]

    default = parse_instrument(MarketType.FUTURES_COIN, info, TS_INIT)
    custom = parse_instrument(
        MarketType.FUTURES_COIN,
        info,
        TS_INIT,
        maker_fee=Decimal("0.0001"),
        taker_fee=Decimal("0.0004"),
    )

    assert (default.maker_fee, default.taker_fee) == DEFAULT_FEES[MarketType.FUTURES_COIN]
    assert (custom.maker_fee, custom.taker_fee) == (Decimal("0.0001"), Decimal("0.0004"))
    assert default.ts_event == TS_INIT


def test_parse_instrument_rejects_unsupported_contract_type() -> None:
    info = coin_m_exchange_info()["symbols"][0] | {"contractType": "EXOTIC_SWAP"}

    with pytest.raises(InvalidInput, match=r"BTCUSD_PERP has contract type 'EXOTIC_SWAP'"):
        parse_instrument(MarketType.FUTURES_COIN, info, TS_INIT)


def test_coin_m_without_contract_size_is_malformed() -> None:
    info = coin_m_exchange_info()["symbols"][0]
    del info["contractSize"]

    with pytest.raises(InvalidInput) as err:
        parse_instrument(MarketType.FUTURES_COIN, info, TS_INIT)

    assert str(err.value).startswith("FUTURES_COIN symbol BTCUSD_PERP has no 'contractSize' field;")


def test_find_returns_the_instrument_or_the_skipped_symbol_or_none() -> None:
    payload = coin_m_exchange_info()
    payload["symbols"].append(payload["symbols"][0])  # listed twice: built once, skipped once
    parsed = parse_exchange_info(MarketType.FUTURES_COIN, payload, TS_INIT)

    assert parsed.find("BTCUSD-PERP.BINANCE") is parsed.instruments[0]
    assert parsed.find(parsed.instruments[2].id) is parsed.instruments[2]
    assert parsed.find("BTCUSD_231229.BINANCE") == SkippedSymbol(
        "BTCUSD_231229", MarketType.FUTURES_COIN, "status 'SETTLING' is not TRADING"
    )
    assert parsed.find("XRPUSD-PERP.BINANCE") is None
    assert parsed.find("BTCUSD_PERP.BINANCE") is None  # the Binance symbol is not an id
