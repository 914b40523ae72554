"""A real TradingNode with the DSM data client against the Binance imitation.

Registration three ways (factory + config object, ``ImportableConfig``, JSON), then an end-to-end
run: an actor requests history and streams 1-second bars until it has N of them.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
from nautilus_trader.cache.cache import Cache
from nautilus_trader.common.actor import Actor
from nautilus_trader.common.component import LiveClock, MessageBus
from nautilus_trader.common.config import ActorConfig, ImportableFactoryConfig
from nautilus_trader.config import ImportableConfig, LoggingConfig, TradingNodeConfig
from nautilus_trader.live.node import TradingNode
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.model.identifiers import ClientId, InstrumentId, TraderId

from nautilus_dsm.common import Interval, MarketType, to_ms
from nautilus_dsm.config import DSMDataClientConfig, DSMInstrumentProviderConfig
from nautilus_dsm.data import DSMDataClient
from nautilus_dsm.factories import DSMLiveDataClientFactory, dsm_for_config, dsm_holders
from tests.conftest import dispose_node

CLIENT_ID = ClientId("DSM")
LOAD_IDS = frozenset({"BTCUSDT.BINANCE", "BTCUSD-PERP.BINANCE"})
HISTORY = BarType.from_str("BTCUSD-PERP.BINANCE-1-HOUR-LAST-EXTERNAL")
LIVE = BarType.from_str("BTCUSDT.BINANCE-1-SECOND-LAST-EXTERNAL")
NS = 1_000_000


def _settings(srv: Any, cache_dir: Path) -> dict[str, Any]:
    return {
        "base_url_http": srv.url,
        "base_url_vision": srv.url,
        "cache_dir": str(cache_dir),
        "poll_delay_ms": 20,
        "live_source": "rest",  # these nodes test the REST poller (streams: test_routing)
    }


def _node(data_clients: dict[str, Any], loop: asyncio.AbstractEventLoop) -> TradingNode:
    config = TradingNodeConfig(
        trader_id="TESTER-001",
        logging=LoggingConfig(log_level="WARNING"),
        data_clients=data_clients,
        timeout_connection=20.0,
        timeout_disconnection=5.0,
        timeout_post_stop=0.1,
    )
    return TradingNode(config=config, loop=loop)


def _dsm_client(node: TradingNode) -> DSMDataClient:
    client = node.kernel.data_engine._clients[CLIENT_ID]
    assert type(client) is DSMDataClient
    return client


# ---------------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------------


def test_register_with_factory_and_config_object(imitation, cache_dir, loop) -> None:
    config = DSMDataClientConfig(**_settings(imitation, cache_dir))
    node = _node({"DSM": config}, loop)
    node.add_data_client_factory("DSM", DSMLiveDataClientFactory)

    node.build()
    try:
        client = _dsm_client(node)
        assert client._config == config
        assert client.dsm is dsm_for_config(config)  # the shared, cached engine
        assert client.dsm.base_url_http == imitation.url
    finally:
        dispose_node(node)


def test_register_with_importable_config(imitation, cache_dir, loop) -> None:
    importable = ImportableConfig(
        path="nautilus_dsm.config:DSMDataClientConfig",
        factory=ImportableFactoryConfig(path="nautilus_dsm.factories:DSMLiveDataClientFactory"),
        config=_settings(imitation, cache_dir),
    )
    node = _node({"DSM": importable}, loop)

    node.build()
    try:
        client = _dsm_client(node)
        assert client._config.base_url_http == imitation.url
        assert client._config.poll_delay_ms == 20
    finally:
        dispose_node(node)


def test_register_from_json_node_config(imitation, cache_dir, loop) -> None:
    raw = json.dumps(
        {
            "trader_id": "TESTER-001",
            "logging": {"log_level": "WARNING"},
            "data_clients": {
                "DSM": {
                    "path": "nautilus_dsm.config:DSMDataClientConfig",
                    "factory": {"path": "nautilus_dsm.factories:DSMLiveDataClientFactory"},
                    "config": {
                        **_settings(imitation, cache_dir),
                        "market_type": "futures_coin",
                        "instrument_provider": {"load_ids": ["BTCUSD-PERP.BINANCE"]},
                    },
                }
            },
        }
    )
    config = TradingNodeConfig.parse(raw)
    node = TradingNode(config=config, loop=loop)

    node.build()
    try:
        client = _dsm_client(node)
        assert client._config.market_type == "futures_coin"
        assert client._config.instrument_provider.load_ids == frozenset(
            {InstrumentId.from_str("BTCUSD-PERP.BINANCE")}
        )
        assert client._market_type is MarketType.FUTURES_COIN
    finally:
        dispose_node(node)


def test_factory_shares_engine_and_provider_per_config(imitation, cache_dir, loop) -> None:
    clock = LiveClock()
    msgbus = MessageBus(TraderId("TESTER-001"), clock)
    config = DSMDataClientConfig(**_settings(imitation, cache_dir))
    filtered = DSMDataClientConfig(
        **_settings(imitation, cache_dir),
        instrument_provider=DSMInstrumentProviderConfig(filters={"market_types": ["spot"]}),
    )

    a = DSMLiveDataClientFactory.create(loop, "DSM", config, msgbus, Cache(), clock)
    b = DSMLiveDataClientFactory.create(loop, "DSM-2", config, msgbus, Cache(), clock)
    c = DSMLiveDataClientFactory.create(loop, "DSM-3", filtered, msgbus, Cache(), clock)

    assert (a.id, b.id, c.id) == (CLIENT_ID, ClientId("DSM-2"), ClientId("DSM-3"))
    assert a.dsm is b.dsm is c.dsm
    assert a._instrument_provider is b._instrument_provider
    assert c._instrument_provider is not a._instrument_provider  # unhashable filters: own one


def test_shared_engine_is_closed_by_its_last_client_only(imitation, cache_dir, loop) -> None:
    clock = LiveClock()
    msgbus = MessageBus(TraderId("TESTER-001"), clock)
    config = DSMDataClientConfig(**_settings(imitation, cache_dir), use_vision=False)
    a = DSMLiveDataClientFactory.create(loop, "DSM", config, msgbus, Cache(), clock)
    b = DSMLiveDataClientFactory.create(loop, "DSM-2", config, msgbus, Cache(), clock)
    dsm = a.dsm
    day = datetime(2024, 1, 2, tzinfo=UTC)

    async def scenario() -> tuple[int, bool, int, int, dict]:
        await dsm.fetch("BTCUSDT.BINANCE", "1m", day, day.replace(hour=1))
        rest = dsm.rest_client(MarketType.SPOT)
        holders_before = dsm_holders(dsm)
        await a._disconnect()  # A leaves: B still uses the engine and its connections
        kept_after_a = dsm._rest.get(MarketType.SPOT) is rest
        holders_after_a = dsm_holders(dsm)
        b_result = await dsm.fetch("BTCUSDT.BINANCE", "1m", day, day.replace(hour=2))
        await b._disconnect()  # the last holder closes it
        return holders_before, kept_after_a, holders_after_a, b_result.frame.height, dsm._rest

    holders_before, kept_after_a, holders_after_a, b_bars, rest_after_b = loop.run_until_complete(
        scenario()
    )

    assert (holders_before, kept_after_a, holders_after_a) == (2, True, 1)
    assert b_bars == 120
    assert (rest_after_b, dsm_holders(dsm)) == ({}, 0)  # closed


# ---------------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------------


class HistoryThenLiveConfig(ActorConfig, frozen=True):
    history_bar_type: str
    live_bar_type: str
    history_start: str
    history_end: str
    n_bars: int = 3


class HistoryThenLive(Actor):
    """Requests history, subscribes to live bars, and stops itself after ``n_bars`` live bars."""

    def __init__(self, config: HistoryThenLiveConfig) -> None:
        super().__init__(config)
        self.history: list[Bar] = []
        self.live: list[Bar] = []
        self.history_done = asyncio.Event()
        self.live_done = asyncio.Event()

    def on_start(self) -> None:
        self.request_bars(
            BarType.from_str(self.config.history_bar_type),
            start=pd.Timestamp(self.config.history_start),
            end=pd.Timestamp(self.config.history_end),
            client_id=CLIENT_ID,
            callback=lambda _request_id: self.history_done.set(),
        )
        self.subscribe_bars(BarType.from_str(self.config.live_bar_type), client_id=CLIENT_ID)

    def on_historical_data(self, data: Any) -> None:
        if isinstance(data, Bar):
            self.history.append(data)

    def on_bar(self, bar: Bar) -> None:
        self.live.append(bar)
        if len(self.live) == self.config.n_bars:
            self.unsubscribe_bars(bar.bar_type, client_id=CLIENT_ID)
            self.live_done.set()


def test_trading_node_history_and_live_bars(imitation, cache_dir, loop) -> None:
    config = DSMDataClientConfig(
        **_settings(imitation, cache_dir),
        instrument_provider=DSMInstrumentProviderConfig(load_ids=LOAD_IDS),
    )
    node = _node({"DSM": config}, loop)
    node.add_data_client_factory("DSM", DSMLiveDataClientFactory)
    node.build()
    actor = HistoryThenLive(
        HistoryThenLiveConfig(
            history_bar_type=str(HISTORY),
            live_bar_type=str(LIVE),
            history_start="2024-01-01T00:00:00+00:00",
            history_end="2024-01-02T00:00:00+00:00",
            n_bars=3,
        )
    )
    node.trader.add_actor(actor)

    instruments: list[Any] = []

    async def scenario() -> None:
        run = asyncio.ensure_future(node.run_async())
        try:
            await asyncio.wait_for(actor.history_done.wait(), timeout=30)
            await asyncio.wait_for(actor.live_done.wait(), timeout=30)
            instruments.extend(node.cache.instruments())
        finally:
            await node.stop_async()
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)

    try:
        loop.run_until_complete(scenario())
    finally:
        dispose_node(node)

    # Instruments loaded on connect: COIN-M is inverse with the contract size as multiplier.
    by_id = {str(i.id): i for i in instruments}
    assert set(by_id) == LOAD_IDS
    inverse = by_id["BTCUSD-PERP.BINANCE"]
    assert inverse.is_inverse is True
    assert inverse.multiplier.as_decimal() == Decimal(100)

    # History: the 24 hourly bars of 2024-01-01, stamped at their close, equal to the source.
    day_ms = to_ms(datetime(2024, 1, 1, tzinfo=UTC))
    truth = imitation.expected(
        MarketType.FUTURES_COIN, "BTCUSD_PERP", Interval.HOUR_1, day_ms, day_ms + 86_400_000
    )
    assert [b.ts_event for b in actor.history] == [
        (day_ms + (h + 1) * 3_600_000) * NS for h in range(24)
    ]
    assert [str(b.close) for b in actor.history] == [f"{c:.1f}" for c in truth["close"]]
    assert actor.history[0].close.precision == inverse.price_precision == 1

    # Live: 3 consecutive closed 1s bars, each once, equal to the source.
    assert len(actor.live) == 3
    opens_ms = [b.ts_event // NS - 1_000 for b in actor.live]
    assert opens_ms == [opens_ms[0] + 1_000 * i for i in range(3)]
    live_truth = imitation.expected(
        MarketType.SPOT, "BTCUSDT", Interval.SECOND_1, opens_ms[0], opens_ms[-1] + 1_000
    )
    assert [str(b.close) for b in actor.live] == [f"{c:.8f}" for c in live_truth["close"]]
