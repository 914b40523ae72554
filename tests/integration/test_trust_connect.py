"""Trust, connecting (issue 9, point 7): a node started during an outage starts once it is over.

The imitation is down (``srv.pause()``) while the client connects. ``_connect`` retries the
instrument load with bounded, logged backoff until ``timeout_connection``; the imitation comes
back after a counted number of failed ``exchangeInfo`` requests (no sleeping as
synchronisation), and then the instruments load, the trader starts and a live subscription
delivers bars equal to the source's. An outage longer than ``timeout_connection`` ends the
connect with one error naming the timeout.

The REST client is made to fail fast (one try per request) so that each failed request is one
failed connect attempt and the tests stay short.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from nautilus_trader.common.actor import Actor
from nautilus_trader.common.config import ActorConfig
from nautilus_trader.config import LoggingConfig, TradingNodeConfig
from nautilus_trader.live.node import TradingNode
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.model.identifiers import ClientId, InstrumentId

from nautilus_dsm.common import Interval, MarketType
from nautilus_dsm.config import DSMDataClientConfig, DSMInstrumentProviderConfig
from nautilus_dsm.dsm.rest import BinanceRestClient
from nautilus_dsm.errors import InvalidInput, SourceError
from nautilus_dsm.factories import DSMLiveDataClientFactory, dsm_for_config
from tests.conftest import dispose_node

CLIENT_ID = ClientId("DSM")
SPOT_ID = "BTCUSDT.BINANCE"
LIVE = BarType.from_str("BTCUSDT.BINANCE-1-SECOND-LAST-EXTERNAL")
EXCHANGE_INFO = "/api/v3/exchangeInfo"
NS = 1_000_000
pytestmark = pytest.mark.timeout(60)


def failed_exchange_info(srv: Any) -> int:
    """exchangeInfo requests the imitation closed unanswered (status 0: it was down)."""
    return sum(1 for r in srv.requests if r.path == EXCHANGE_INFO and r.status == 0)


async def until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait for a condition on the imitation's request log (an event with no callback)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)


def fail_fast(dsm: Any, srv: Any) -> None:
    """One try per REST request: each failed exchangeInfo request is one connect attempt."""
    dsm._rest[MarketType.SPOT] = BinanceRestClient(MarketType.SPOT, srv.url, max_retries=1)


# ---------------------------------------------------------------------------------------------
# The client alone
# ---------------------------------------------------------------------------------------------


async def test_connect_during_an_outage_retries_then_loads_instruments(make_harness) -> None:
    h = make_harness(
        instrument_provider=DSMInstrumentProviderConfig(load_ids=frozenset({SPOT_ID})),
    )
    fail_fast(h.client.dsm, h.srv)
    h.srv.pause()

    connect = asyncio.ensure_future(h.client._connect())
    await until(lambda: failed_exchange_info(h.srv) >= 4)
    h.srv.resume()
    await asyncio.wait_for(connect, timeout=20)

    failed = failed_exchange_info(h.srv)
    assert failed >= 4
    assert [r.status for r in h.srv.requests if r.path == EXCHANGE_INFO] == [0] * failed + [200]
    assert h.cache.instrument(InstrumentId.from_str(SPOT_ID)) is not None
    retries = [m for m in h.logs.at("warning") if m.startswith("connect:")]
    # Every failed attempt is logged with its backoff; once the host's circuit is open (after 3
    # consecutive failures) an attempt fails fast without a request, so attempts >= requests.
    attempts = len(retries)
    assert attempts >= failed
    assert all("circuit open" in m for m in retries[3:])
    delays = [m.split("retrying in ")[1].split("s ")[0] for m in retries]
    assert delays == ["0.10", "0.20", "0.40", "0.80", "1.60", "3.20", "5.00", "5.00"][:attempts]
    assert retries[0].startswith(
        "connect: instruments could not be loaded (SourceError: Binance SPOT REST /api/v3/exchangeInfo failed after 1 tries"
    )
    assert retries[0].endswith("attempt 1, retrying in 0.10s (until timeout_connection=60s)")
    assert f"connect: instruments loaded after {attempts} failed attempts" in h.logs.at("info")
    assert h.logs.at("error") == []


async def test_an_outage_longer_than_timeout_connection_ends_connect_with_one_error(
    make_harness,
) -> None:
    h = make_harness(
        instrument_provider=DSMInstrumentProviderConfig(load_ids=frozenset({SPOT_ID})),
        timeout_connection=0.5,
    )
    fail_fast(h.client.dsm, h.srv)
    h.srv.pause()

    with pytest.raises(SourceError):
        await asyncio.wait_for(h.client._connect(), timeout=10)

    failed = failed_exchange_info(h.srv)
    assert failed >= 1  # how many fit in 0.5 s depends on the machine's load, not asserted
    retries = [m for m in h.logs.at("warning") if m.startswith("connect:")]
    # Every attempt but the last is retried and logged; attempts made while the host's circuit
    # is open (after 3 consecutive failures) send no request, so attempts >= requests.
    attempts = len(retries) + 1
    assert attempts >= failed
    [error] = h.logs.at("error")
    # The last attempt either failed itself or met the open circuit (a SourceError too).
    assert error.startswith(
        "connect: instruments could not be loaded within timeout_connection=0.5s "
        f"({attempts} attempts; last: "
    )
    assert "SourceError: Binance SPOT REST /api/v3/exchangeInfo failed " in error or (
        "CircuitOpen: Binance SPOT REST" in error
    )
    assert error.endswith(
        "check the network and base_url_http, or raise timeout_connection (and the node's) "
        "for longer outages"
    )
    assert h.cache.instrument(InstrumentId.from_str(SPOT_ID)) is None


async def test_a_disconnect_during_the_retries_ends_them(make_harness) -> None:
    h = make_harness(
        instrument_provider=DSMInstrumentProviderConfig(load_ids=frozenset({SPOT_ID})),
    )
    fail_fast(h.client.dsm, h.srv)
    h.srv.pause()

    connect = asyncio.ensure_future(h.client._connect())
    await until(lambda: failed_exchange_info(h.srv) >= 2)
    at_disconnect = failed_exchange_info(h.srv)
    await h.client._disconnect()  # the node stopping (its manager is released and closed)
    with pytest.raises(SourceError):
        await asyncio.wait_for(connect, timeout=10)

    # at most the attempt in flight ends, no new one starts
    assert failed_exchange_info(h.srv) <= at_disconnect + 1
    assert h.logs.at("error") == []


async def test_a_configuration_error_is_not_retried(make_harness) -> None:
    h = make_harness(
        instrument_provider=DSMInstrumentProviderConfig(
            load_all=True,
            filters={"quote_asset": "USDT"},  # a typo: quote_assets
        ),
    )

    with pytest.raises(InvalidInput, match="unknown instrument filter"):
        await asyncio.wait_for(h.client._connect(), timeout=10)

    assert h.srv.requests == []
    assert [m for m in h.logs.at("warning") if m.startswith("connect:")] == []


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf")])
async def test_timeout_connection_must_be_a_positive_number(make_harness, value: float) -> None:
    with pytest.raises(InvalidInput) as info:
        make_harness(timeout_connection=value)

    assert str(info.value) == (
        f"timeout_connection={value!r} is not a positive number of seconds; pass the node's "
        "TradingNodeConfig.timeout_connection, e.g. 60.0"
    )


# ---------------------------------------------------------------------------------------------
# A real TradingNode
# ---------------------------------------------------------------------------------------------


class LiveBarsConfig(ActorConfig, frozen=True):
    bar_type: str
    n_bars: int = 2


class LiveBars(Actor):
    """Subscribes on start (so only once the node has connected) and keeps ``n_bars`` bars."""

    def __init__(self, config: LiveBarsConfig) -> None:
        super().__init__(config)
        self.started = asyncio.Event()
        self.done = asyncio.Event()
        self.bars: list[Bar] = []

    def on_start(self) -> None:
        self.started.set()
        self.subscribe_bars(BarType.from_str(self.config.bar_type), client_id=CLIENT_ID)

    def on_bar(self, bar: Bar) -> None:
        self.bars.append(bar)
        if len(self.bars) == self.config.n_bars:
            self.unsubscribe_bars(bar.bar_type, client_id=CLIENT_ID)
            self.done.set()


def test_node_started_during_an_outage_starts_its_trader_once_binance_is_back(
    imitation: Any, cache_dir: Path, loop: asyncio.AbstractEventLoop
) -> None:
    config = DSMDataClientConfig(
        base_url_http=imitation.url,
        base_url_vision=imitation.url,
        cache_dir=str(cache_dir),
        poll_delay_ms=20,
        live_source="rest",
        timeout_connection=20.0,
        instrument_provider=DSMInstrumentProviderConfig(load_ids=frozenset({SPOT_ID})),
    )
    node = TradingNode(
        config=TradingNodeConfig(
            trader_id="TESTER-001",
            logging=LoggingConfig(log_level="ERROR"),
            data_clients={"DSM": config},
            timeout_connection=20.0,
            timeout_disconnection=5.0,
            timeout_post_stop=0.1,
        ),
        loop=loop,
    )
    node.add_data_client_factory("DSM", DSMLiveDataClientFactory)
    node.build()
    actor = LiveBars(LiveBarsConfig(bar_type=str(LIVE), n_bars=2))
    node.trader.add_actor(actor)
    fail_fast(dsm_for_config(config), imitation)
    imitation.pause()
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        run = asyncio.ensure_future(node.run_async())
        try:
            await until(lambda: failed_exchange_info(imitation) >= 3)
            seen["started_during_outage"] = actor.started.is_set()
            imitation.resume()
            await asyncio.wait_for(actor.started.wait(), timeout=20)
            await asyncio.wait_for(actor.done.wait(), timeout=20)
            seen["instruments"] = [str(i.id) for i in node.cache.instruments()]
        finally:
            await node.stop_async()
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)

    try:
        loop.run_until_complete(scenario())
    finally:
        dispose_node(node)

    assert seen["started_during_outage"] is False  # the trader waited for the connection
    assert seen["instruments"] == [SPOT_ID]
    assert failed_exchange_info(imitation) >= 3
    # The subscription delivered consecutive closed bars equal to the source's.
    opens_ms = [b.ts_event // NS - 1_000 for b in actor.bars]
    assert opens_ms == [opens_ms[0], opens_ms[0] + 1_000]
    truth = imitation.expected(
        MarketType.SPOT, "BTCUSDT", Interval.SECOND_1, opens_ms[0], opens_ms[-1] + 1_000
    )
    assert [str(b.close) for b in actor.bars] == [f"{c:.8f}" for c in truth["close"]]
