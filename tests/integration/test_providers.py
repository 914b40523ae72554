"""DSMInstrumentProvider: loading, filters and config, fed by recorded payloads and by a real
HTTP fetch of the Binance imitation's exchangeInfo."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from nautilus_trader.common.component import TestClock
from nautilus_trader.model.identifiers import InstrumentId
from nautilus_trader.model.instruments import CryptoPerpetual, CurrencyPair, Instrument

from nautilus_dsm.common import MarketType, rest_base_url
from nautilus_dsm.config import DSMInstrumentProviderConfig
from nautilus_dsm.errors import InvalidInput, SourceError, UnknownSymbol
from nautilus_dsm.parsing import SkippedSymbol
from nautilus_dsm.providers import DSMInstrumentProvider, instrument_for
from tests.unit.test_parsing import (
    coin_m_exchange_info,
    nt_futures_instruments,
    nt_spot_instruments,
    specs,
)

ALL_RECORDED = [
    "BTCUSDT.BINANCE",
    "ETHUSDT.BINANCE",
    "BTCUSDT-PERP.BINANCE",
    "ETHUSDT-PERP.BINANCE",
    "BTCUSDT_220325.BINANCE",
    "BTCUSD-PERP.BINANCE",
    "ETHUSD-PERP.BINANCE",
    "BTCUSD_240329.BINANCE",
]


class RecordedExchangeInfo:
    """``exchange_info(market)`` over recorded payloads, counting the markets asked for."""

    def __init__(self, payloads: Mapping[MarketType, dict[str, Any]]) -> None:
        self.payloads = payloads
        self.calls: list[MarketType] = []

    async def __call__(self, market_type: MarketType) -> dict[str, Any]:
        self.calls.append(market_type)
        return self.payloads[market_type]


@pytest.fixture
def recorded(realdata: Path) -> RecordedExchangeInfo:
    return RecordedExchangeInfo(
        {
            MarketType.SPOT: json.loads((realdata / "exchange_info_spot.json").read_text()),
            MarketType.FUTURES_USDT: json.loads(
                (realdata / "exchange_info_futures_um.json").read_text()
            ),
            MarketType.FUTURES_COIN: coin_m_exchange_info(),
        }
    )


def _provider(
    exchange_info: Callable[[MarketType], Awaitable[Mapping[str, Any]]],
    **config: Any,
) -> DSMInstrumentProvider:
    return DSMInstrumentProvider(
        exchange_info, DSMInstrumentProviderConfig(**config), clock=TestClock()
    )


def _ids(provider: DSMInstrumentProvider) -> list[str]:
    return [i.id.value for i in provider.list_all()]


def only_btc(instrument: Instrument) -> bool:
    """A ``filter_callable`` (resolved by path from the config)."""
    return instrument.raw_symbol.value.startswith("BTC")


# --------------------------------------------------------------------------------------------
# Recorded payloads
# --------------------------------------------------------------------------------------------


async def test_load_all_reads_every_market(recorded: RecordedExchangeInfo) -> None:
    provider = _provider(recorded)

    await provider.load_all_async()

    assert _ids(provider) == ALL_RECORDED
    assert sorted(recorded.calls, key=lambda m: m.value) == sorted(
        MarketType, key=lambda m: m.value
    )
    assert sorted(provider.currencies()) == ["BTC", "ETH", "USD", "USDT"]
    assert provider.skipped == [
        SkippedSymbol("BTCUSD_231229", MarketType.FUTURES_COIN, "status 'SETTLING' is not TRADING")
    ]


async def test_load_all_honours_config_market_types(recorded: RecordedExchangeInfo) -> None:
    provider = _provider(recorded, market_types=("futures_coin",))

    await provider.load_all_async()

    assert recorded.calls == [MarketType.FUTURES_COIN]
    assert _ids(provider) == ALL_RECORDED[5:]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"market_types": ["spot", "futures_coin"]}, [*ALL_RECORDED[:2], *ALL_RECORDED[5:]]),
        ({"quote_assets": "usd"}, ALL_RECORDED[5:]),
        ({"base_assets": ["ETH"]}, [ALL_RECORDED[1], ALL_RECORDED[3], ALL_RECORDED[6]]),
        (
            {"symbols": ["BTCUSD_PERP", "ETHUSDT-PERP", "BTCUSDT.BINANCE"]},
            ["BTCUSDT.BINANCE", "ETHUSDT-PERP.BINANCE", "BTCUSD-PERP.BINANCE"],
        ),
        ({"market_types": "futures_usdt", "base_assets": "BTC"}, ALL_RECORDED[2:5:2]),
    ],
)
async def test_load_all_filters(
    recorded: RecordedExchangeInfo, filters: dict[str, Any], expected: list[str]
) -> None:
    provider = _provider(recorded)

    await provider.load_all_async(filters)

    assert _ids(provider) == expected


async def test_unknown_filter_key_fails_loudly(recorded: RecordedExchangeInfo) -> None:
    provider = _provider(recorded)

    with pytest.raises(InvalidInput) as err:
        await provider.load_all_async({"quote_asset": "USDT"})

    assert str(err.value) == (
        "unknown instrument filter(s) quote_asset; supported filters: market_types, "
        "quote_assets, base_assets, symbols"
    )
    assert recorded.calls == []


def test_invalid_config_market_type_fails_at_construction(
    recorded: RecordedExchangeInfo,
) -> None:
    with pytest.raises(InvalidInput) as err:
        _provider(recorded, market_types=("options",))

    assert str(err.value) == (
        "config.market_types: unknown market type 'options'; use one of: spot, futures_usdt, "
        "futures_coin"
    )


async def test_load_ids_reads_only_the_markets_of_the_ids(
    recorded: RecordedExchangeInfo,
) -> None:
    provider = _provider(recorded)
    ids = [InstrumentId.from_str("BTCUSD-PERP.BINANCE"), InstrumentId.from_str("ETHUSDT.BINANCE")]

    await provider.load_ids_async(ids)

    assert sorted(m.value for m in recorded.calls) == ["futures_coin", "spot"]
    assert sorted(_ids(provider)) == ["BTCUSD-PERP.BINANCE", "ETHUSDT.BINANCE"]


async def test_load_ids_skips_unknown_and_non_trading_ids(
    recorded: RecordedExchangeInfo,
) -> None:
    provider = _provider(recorded)
    ids = [
        InstrumentId.from_str("XYZUSDT-PERP.BINANCE"),
        InstrumentId.from_str("BTCUSD_231229.BINANCE"),
        InstrumentId.from_str("BTCUSDT.OKX"),
        InstrumentId.from_str("BTCUSDT-PERP.BINANCE"),
    ]

    await provider.load_ids_async(ids)

    assert _ids(provider) == ["BTCUSDT-PERP.BINANCE"]


async def test_load_ids_applies_filters(recorded: RecordedExchangeInfo) -> None:
    provider = _provider(recorded)
    ids = [InstrumentId.from_str("BTCUSDT.BINANCE"), InstrumentId.from_str("ETHUSDT.BINANCE")]

    await provider.load_ids_async(ids, {"base_assets": ["ETH"]})

    assert _ids(provider) == ["ETHUSDT.BINANCE"]


async def test_load_async_loads_one(recorded: RecordedExchangeInfo) -> None:
    provider = _provider(recorded)

    await provider.load_async(InstrumentId.from_str("BTCUSDT_220325.BINANCE"))

    assert (_ids(provider), recorded.calls) == (
        ["BTCUSDT_220325.BINANCE"],
        [MarketType.FUTURES_USDT],
    )


async def test_initialize_with_load_ids_and_filter_callable(
    recorded: RecordedExchangeInfo,
) -> None:
    provider = _provider(
        recorded,
        load_ids=frozenset(
            [
                InstrumentId.from_str("BTCUSD-PERP.BINANCE"),
                InstrumentId.from_str("ETHUSD-PERP.BINANCE"),
            ]
        ),
        filter_callable="tests.integration.test_providers:only_btc",
    )

    await provider.initialize()

    assert _ids(provider) == ["BTCUSD-PERP.BINANCE"]
    assert recorded.calls == [MarketType.FUTURES_COIN]


async def test_initialize_with_load_all_and_config_filters(
    recorded: RecordedExchangeInfo,
) -> None:
    provider = _provider(recorded, load_all=True, filters={"quote_assets": ["USDT"]})

    await provider.initialize()
    await provider.initialize()  # already loaded: no second fetch

    assert _ids(provider) == ALL_RECORDED[:5]
    assert len(recorded.calls) == 3


async def test_instrument_for_loads_on_demand_once(recorded: RecordedExchangeInfo) -> None:
    provider = _provider(recorded)

    first = await provider.instrument_for("BTCUSD-PERP.BINANCE")
    again = await provider.instrument_for(InstrumentId.from_str("BTCUSD-PERP.BINANCE"))

    assert first is again
    assert (first.is_inverse, str(first.multiplier)) == (True, "100")
    assert recorded.calls == [MarketType.FUTURES_COIN]
    assert provider.find(InstrumentId.from_str("BTCUSD-PERP.BINANCE")) is first


@pytest.mark.parametrize(
    ("instrument_id", "message"),
    [
        (
            "XYZUSDT-PERP.BINANCE",
            "XYZUSDT-PERP.BINANCE is not listed in the FUTURES_USDT exchangeInfo (3 instruments); "
            "check the symbol, and that a FUTURES_USDT instrument id is meant (e.g. "
            "BTCUSDT.BINANCE spot, BTCUSDT-PERP.BINANCE USDT-M, BTCUSD-PERP.BINANCE COIN-M)",
        ),
        (
            "BTCUSD_231229.BINANCE",
            "BTCUSD_231229.BINANCE is listed in the FUTURES_COIN exchangeInfo but was not loaded: "
            "status 'SETTLING' is not TRADING; its history can still be requested: pass "
            "include_non_trading=True to instrument_for (nautilus_dsm.ingest and the CLI "
            "include non-trading symbols)",
        ),
    ],
)
async def test_instrument_for_a_missing_instrument_says_why(
    recorded: RecordedExchangeInfo, instrument_id: str, message: str
) -> None:
    provider = _provider(recorded)

    with pytest.raises(UnknownSymbol) as err:
        await provider.instrument_for(instrument_id)

    assert str(err.value) == message


async def test_instrument_for_a_settling_contract_with_include_non_trading(
    recorded: RecordedExchangeInfo,
) -> None:
    provider = _provider(recorded)

    future = await provider.instrument_for("BTCUSD_231229.BINANCE", include_non_trading=True)

    assert future.id.value == "BTCUSD_231229.BINANCE"
    assert (future.is_inverse, str(future.multiplier), future.price_precision) == (True, "100", 1)
    assert provider.find(InstrumentId.from_str("BTCUSD_231229.BINANCE")) is future
    assert recorded.calls == [MarketType.FUTURES_COIN]


async def test_module_instrument_for_needs_only_exchange_info(
    recorded: RecordedExchangeInfo,
) -> None:
    future = await instrument_for(recorded, "BTCUSD_231229.BINANCE", include_non_trading=True)

    assert future.id.value == "BTCUSD_231229.BINANCE"
    assert (future.is_inverse, str(future.multiplier), future.price_precision) == (True, "100", 1)
    assert recorded.calls == [MarketType.FUTURES_COIN]  # only the id's market is read
    with pytest.raises(UnknownSymbol, match=r"is listed in the FUTURES_COIN exchangeInfo but"):
        await instrument_for(recorded, "BTCUSD_231229.BINANCE")  # not trading


async def test_instrument_for_rejects_other_venues(recorded: RecordedExchangeInfo) -> None:
    provider = _provider(recorded)

    with pytest.raises(InvalidInput, match=r"has venue 'OKX'"):
        await provider.instrument_for("BTCUSDT.OKX")

    assert recorded.calls == []


async def test_source_error_propagates_and_loads_nothing() -> None:
    async def failing(market_type: MarketType) -> dict[str, Any]:
        raise SourceError(f"{market_type.name} exchangeInfo unreachable")

    provider = _provider(failing, market_types=("spot",))

    with pytest.raises(SourceError, match=r"^SPOT exchangeInfo unreachable$"):
        await provider.load_all_async()

    assert provider.count == 0


# --------------------------------------------------------------------------------------------
# Real HTTP against the Binance imitation
# --------------------------------------------------------------------------------------------


def http_exchange_info(
    base_url: str, client: httpx.AsyncClient
) -> Callable[[MarketType], Awaitable[dict[str, Any]]]:
    """A minimal stand-in for ``DataSourceManager.exchange_info``: one GET per call."""

    async def fetch(market_type: MarketType) -> dict[str, Any]:
        response = await client.get(rest_base_url(market_type, base_url) + "/exchangeInfo")
        response.raise_for_status()
        return response.json()

    return fetch


async def test_imitation_instruments_exact(imitation: Any) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        provider = _provider(http_exchange_info(imitation.url, client))

        await provider.load_all_async()

    assert _ids(provider) == [
        "BTCUSDT.BINANCE",
        "ETHUSDT.BINANCE",
        "BTCUSDT-PERP.BINANCE",
        "ETHUSDT-PERP.BINANCE",
        "BTCUSD-PERP.BINANCE",
        "ETHUSD-PERP.BINANCE",
    ]
    spot = provider.find(InstrumentId.from_str("BTCUSDT.BINANCE"))
    assert isinstance(spot, CurrencyPair)
    assert (spot.price_precision, str(spot.price_increment)) == (8, "0.01000000")
    assert (spot.size_precision, str(spot.size_increment)) == (8, "0.00001000")

    um = provider.find(InstrumentId.from_str("BTCUSDT-PERP.BINANCE"))
    assert isinstance(um, CryptoPerpetual)
    assert (um.is_inverse, str(um.multiplier)) == (False, "1")
    assert (um.price_precision, str(um.price_increment)) == (2, "0.10")
    assert (um.size_precision, str(um.size_increment)) == (3, "0.001")
    assert um.get_settlement_currency().code == "USDT"

    btc = provider.find(InstrumentId.from_str("BTCUSD-PERP.BINANCE"))
    assert isinstance(btc, CryptoPerpetual)
    assert (btc.is_inverse, str(btc.multiplier)) == (True, "100")
    assert (btc.raw_symbol.value, btc.base_currency.code, btc.quote_currency.code) == (
        "BTCUSD_PERP",
        "BTC",
        "USD",
    )
    assert btc.settlement_currency.code == "BTC"
    assert (btc.price_precision, str(btc.price_increment)) == (1, "0.1")
    assert (btc.size_precision, str(btc.size_increment)) == (0, "1")

    eth = provider.find(InstrumentId.from_str("ETHUSD-PERP.BINANCE"))
    assert (eth.is_inverse, str(eth.multiplier), str(eth.price_increment)) == (True, "10", "0.01")
    assert provider.skipped == []


async def test_imitation_load_ids_requests_only_needed_markets(imitation: Any) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        provider = _provider(http_exchange_info(imitation.url, client))

        await provider.load_ids_async([InstrumentId.from_str("ETHUSD-PERP.BINANCE")])

    paths = [r.path for r in imitation.requests]
    assert paths == ["/dapi/v1/exchangeInfo"]
    assert _ids(provider) == ["ETHUSD-PERP.BINANCE"]


async def test_imitation_spot_and_usdt_match_nautilus_providers(imitation: Any) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        fetch = http_exchange_info(imitation.url, client)
        spot_payload = await fetch(MarketType.SPOT)
        um_payload = await fetch(MarketType.FUTURES_USDT)
        provider = _provider(fetch, market_types=("spot", "futures_usdt"))
        await provider.load_all_async()

    theirs = nt_spot_instruments(spot_payload) | nt_futures_instruments(um_payload)
    assert [i.id for i in provider.list_all()] == list(theirs)
    for instrument in provider.list_all():
        assert specs(instrument) == specs(theirs[instrument.id]), instrument.id
