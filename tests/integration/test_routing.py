"""Routing in a TradingNode: DSMDataClient beside NautilusTrader's own BinanceDataClient.

DSM registers with ``venue=None`` (as Tardis and Databento do): NautilusTrader's Binance client
owns the BINANCE venue routing whatever the registration order, so a command without
``client_id`` reaches Binance, and ``client_id=ClientId("DSM")`` reaches DSM. Alone in a node,
DSM is the default client and serves bars without ``client_id``. Both clients run against the
imitation (REST ``srv.url``, websockets ``srv.ws_url``); see ``docs/ROUTING.md``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from nautilus_trader.adapters.binance import (
    BinanceAccountType,
    BinanceDataClientConfig,
    BinanceLiveDataClientFactory,
)
from nautilus_trader.common.actor import Actor
from nautilus_trader.config import InstrumentProviderConfig, LoggingConfig, TradingNodeConfig
from nautilus_trader.core.datetime import millis_to_nanos
from nautilus_trader.live.node import TradingNode
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.model.identifiers import ClientId, InstrumentId, Venue

from nautilus_dsm.common import to_ms
from nautilus_dsm.config import DSMDataClientConfig, DSMInstrumentProviderConfig
from nautilus_dsm.data import DSMDataClient
from nautilus_dsm.factories import DSMLiveDataClientFactory
from nautilus_dsm.refusals import subscription_refusal
from nautilus_dsm.testing import BinanceImitation
from tests.conftest import dispose_node
from tests.integration.conftest import RecordingLogger

pytestmark = pytest.mark.timeout(90)

DSM = ClientId("DSM")
BINANCE = ClientId("BINANCE")
SPOT = InstrumentId.from_str("BTCUSDT.BINANCE")
SECOND = BarType.from_str("BTCUSDT.BINANCE-1-SECOND-LAST-EXTERNAL")
HOUR = BarType.from_str("BTCUSDT.BINANCE-1-HOUR-LAST-EXTERNAL")
DAY = datetime(2024, 1, 1, tzinfo=UTC)
NS = 1_000_000


@pytest.fixture
def srv() -> Iterator[Any]:
    with BinanceImitation(ws=True) as server:
        yield server


class Plan(Actor):
    """Runs ``plan(self)`` on start and keeps every bar, historical bar and callback."""

    def __init__(self, plan: Callable[[Plan], None]) -> None:
        super().__init__()
        self._plan = plan
        self.bars: list[Bar] = []
        self.history: list[Bar] = []
        self.answered: list[Any] = []

    def on_start(self) -> None:
        self._plan(self)

    def on_bar(self, bar: Bar) -> None:
        self.bars.append(bar)

    def on_historical_data(self, data: Any) -> None:
        if isinstance(data, Bar):
            self.history.append(data)

    def answer(self, request_id: Any) -> None:
        self.answered.append(request_id)


def _dsm_config(srv: Any, cache_dir: Path) -> DSMDataClientConfig:
    return DSMDataClientConfig(
        base_url_http=srv.url,
        base_url_vision=srv.url,
        base_url_ws=srv.ws_url + "/{market}/ws",  # websocket is the default live source
        cache_dir=str(cache_dir),
        poll_delay_ms=20,
        instrument_provider=DSMInstrumentProviderConfig(load_ids=frozenset({str(SPOT)})),
    )


def _binance_config(srv: Any) -> BinanceDataClientConfig:
    # No API key: the spot provider then loads instruments from exchangeInfo alone (zero fees).
    return BinanceDataClientConfig(
        account_type=BinanceAccountType.SPOT,
        base_url_http=srv.url,
        base_url_ws=f"{srv.ws_url}/spot",  # the client appends /stream?streams=...
        instrument_provider=InstrumentProviderConfig(load_ids=frozenset({SPOT})),
        update_instruments_interval_mins=None,
    )


def _node(
    clients: dict[str, Any], loop: asyncio.AbstractEventLoop, actor: Actor
) -> tuple[TradingNode, RecordingLogger]:
    node = TradingNode(
        config=TradingNodeConfig(
            trader_id="TESTER-001",
            logging=LoggingConfig(log_level="WARNING"),
            data_clients=clients,
            timeout_connection=20.0,
            timeout_disconnection=5.0,
            timeout_post_stop=0.1,
        ),
        loop=loop,
    )
    node.add_data_client_factory("DSM", DSMLiveDataClientFactory)
    if "BINANCE" in clients:
        node.add_data_client_factory("BINANCE", BinanceLiveDataClientFactory)
    node.build()
    node.trader.add_actor(actor)
    dsm = node.kernel.data_engine._clients[DSM]
    assert type(dsm) is DSMDataClient
    logs = RecordingLogger(dsm._logger)
    dsm._logger = logs
    return node, logs


def _run(node: TradingNode, loop: asyncio.AbstractEventLoop, done: Callable[[], bool]) -> None:
    """Run the node until ``done()`` holds (checked every 10 ms, at most 30 s), then stop it."""

    async def scenario() -> None:
        run = asyncio.ensure_future(node.run_async())
        try:
            async with asyncio.timeout(30):
                while not done():
                    await asyncio.sleep(0.01)
        finally:
            await node.stop_async()
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)

    try:
        loop.run_until_complete(scenario())
    finally:
        dispose_node(node)


def _by_source(bars: list[Bar]) -> tuple[dict[int, Bar], dict[int, Bar]]:
    """``(DSM bars, Binance bars)`` by open time (ms): DSM's are plain ``Bar``."""
    dsm = {b.ts_event // NS - 1_000: b for b in bars if type(b) is Bar}
    # Binance's stamp is close_time through a float: a few hundred ns either side of the ms.
    binance = {
        (b.ts_event + NS // 2) // NS - 999: b for b in bars if type(b).__name__ == "BinanceBar"
    }
    return dsm, binance


@pytest.mark.parametrize("order", ["binance_first", "dsm_first"])
def test_binance_owns_the_venue_and_dsm_answers_its_client_id(
    srv: Any, cache_dir: Path, loop: asyncio.AbstractEventLoop, order: str
) -> None:
    def plan(actor: Plan) -> None:
        actor.subscribe_quote_ticks(SPOT)  # no client_id: the BINANCE venue's client
        actor.subscribe_bars(SECOND)  # no client_id: Binance's kline stream
        actor.subscribe_bars(SECOND, client_id=DSM)  # the same bar type from DSM
        actor.request_bars(
            HOUR,
            start=pd.Timestamp(DAY),
            end=pd.Timestamp(datetime(2024, 1, 2, tzinfo=UTC)),
            client_id=DSM,
            callback=actor.answer,
        )

    actor = Plan(plan)
    clients = {"BINANCE": _binance_config(srv), "DSM": _dsm_config(srv, cache_dir)}
    if order == "dsm_first":
        clients = dict(reversed(list(clients.items())))
    node, logs = _node(clients, loop, actor)
    engine = node.kernel.data_engine
    binance, dsm = engine._clients[BINANCE], engine._clients[DSM]

    streams: set[str] = set()

    def both_delivered_one_bar() -> bool:
        streams.update(*srv.ws.subscriptions())  # the imitation's, while the node runs
        ours, theirs = _by_source(actor.bars)
        return bool(actor.answered) and bool(set(ours) & set(theirs))

    _run(node, loop, both_delivered_one_bar)

    # Registration: Binance routes the venue, DSM is the default (the only venue-less client).
    assert list(engine._clients) == list(map(ClientId, clients))
    assert engine.routing_map == {Venue("BINANCE"): binance}
    assert engine.default_client == DSM
    # Without client_id: Binance (the quote ticks and the bars, on its websocket streams).
    assert binance.subscribed_quote_ticks() == [SPOT]
    assert binance._ws_public_client.subscriptions == ["btcusdt@bookTicker"]
    assert binance._ws_client.subscriptions == ["btcusdt@kline_1s"]
    assert "btcusdt@kline_1s" in streams
    # With client_id=DSM: DSM (the same bar type, and the history request).
    assert dsm.subscribed_quote_ticks() == []
    assert binance.subscribed_bars() == dsm.subscribed_bars() == [SECOND]
    assert [b.ts_event for b in actor.history] == [
        (to_ms(DAY) + (h + 1) * 3_600_000) * NS for h in range(24)
    ]
    assert logs.at("error") == logs.at("warning") == []
    # Both load the instrument from the same exchangeInfo, to the same precision.
    theirs_i, ours_i = binance._instrument_provider.find(SPOT), dsm._instrument_provider.find(SPOT)
    assert (ours_i.price_increment, ours_i.size_increment) == (
        theirs_i.price_increment,
        theirs_i.size_increment,
    )

    # One bar from both: equal values, DSM stamped at the close, Binance at close_time (1 ms
    # earlier, through a float: millis_to_nanos).
    ours, theirs = _by_source(actor.bars)
    open_ms = min(set(ours) & set(theirs))
    dsm_bar, binance_bar = ours[open_ms], theirs[open_ms]
    assert [str(p) for p in (dsm_bar.open, dsm_bar.high, dsm_bar.low, dsm_bar.close)] == [
        str(p) for p in (binance_bar.open, binance_bar.high, binance_bar.low, binance_bar.close)
    ]
    assert dsm_bar.ts_event == (open_ms + 1_000) * NS
    assert binance_bar.ts_event == millis_to_nanos(open_ms + 999)


def test_alone_dsm_is_the_default_client_for_bars_and_refuses_the_rest(
    srv: Any, cache_dir: Path, loop: asyncio.AbstractEventLoop
) -> None:
    composite = BarType.from_str("BTCUSDT.BINANCE-2-SECOND-LAST-INTERNAL@1-SECOND-EXTERNAL")
    internal = BarType.from_str("BTCUSDT.BINANCE-1-MINUTE-LAST-INTERNAL")

    def plan(actor: Plan) -> None:  # no client_id anywhere
        actor.request_bars(
            HOUR,
            start=pd.Timestamp(DAY),
            end=pd.Timestamp(datetime(2024, 1, 2, tzinfo=UTC)),
            callback=actor.answer,
        )
        actor.subscribe_bars(SECOND)
        actor.subscribe_bars(composite)  # aggregated by NautilusTrader from DSM's 1s bars
        actor.subscribe_bars(internal)  # aggregated from trade ticks: refused by DSM
        actor.subscribe_quote_ticks(SPOT)
        actor.request_quote_ticks(SPOT, start=pd.Timestamp(DAY), callback=actor.answer)

    actor = Plan(plan)
    node, logs = _node({"DSM": _dsm_config(srv, cache_dir)}, loop, actor)
    engine = node.kernel.data_engine

    def done() -> bool:
        two_second = [b for b in actor.bars if b.bar_type == composite.standard()]
        return len(actor.answered) == 2 and bool(two_second)

    _run(node, loop, done)

    assert engine.routing_map == {}
    assert engine.default_client == DSM
    assert len(actor.history) == 24
    assert {b.bar_type for b in actor.bars} == {SECOND, composite.standard()}
    # One error each (their order depends on the data engine's queue).
    assert sorted(logs.at("error")) == [
        "Cannot serve the quote ticks request for BTCUSDT.BINANCE: DSMDataClient serves "
        "EXTERNAL Binance kline bars (LAST) and Binance instruments; Binance publishes no "
        "historical quotes; stream live ones with NautilusTrader's BinanceDataClient "
        '(client_id=ClientId("BINANCE")) (subscribe_quote_ticks); answering empty',
        subscription_refusal("quote_ticks", SPOT),
        subscription_refusal("trade_ticks", SPOT),
    ]
