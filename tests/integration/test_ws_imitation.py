"""The imitation's kline websocket streams over real sockets on 127.0.0.1 (raw client)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from nautilus_dsm.testing import BinanceImitation
from nautilus_dsm.testing.ws import WsConfig

pytestmark = pytest.mark.timeout(30)

T0 = 1_704_067_230_000  # 2024-01-01 00:00:30 UTC: mid-bar of 1m bars
MIN = 60_000


class ManualClock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def srv(clock: ManualClock) -> Iterator[BinanceImitation]:
    with BinanceImitation(clock=clock, ws=True) as server:
        yield server


async def _send(ws: ClientConnection, payload: object) -> dict[str, Any]:
    await ws.send(json.dumps(payload) if not isinstance(payload, str) else payload)
    while True:
        message = json.loads(await ws.recv())
        if "e" not in message and "stream" not in message:
            return message


async def _next(ws: ClientConnection, pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    while True:
        message = json.loads(await ws.recv())
        if pred(message):
            return message


async def _until(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    """Await a condition the server thread makes true (checked on every loop turn)."""
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.01)


def _rest_rows(srv: BinanceImitation, prefix: str, symbol: str, interval: str, **q: Any) -> list:
    params = {"symbol": symbol, "interval": interval, **q}
    return httpx.get(f"{srv.url}{prefix}/klines", params=params).json()


def _as_rest(k: dict[str, Any]) -> list[Any]:
    return [k["t"], k["o"], k["h"], k["l"], k["c"], k["v"], k["T"], k["q"], k["n"], k["V"], k["Q"]]


async def test_closed_and_forming_messages_equal_rest(
    srv: BinanceImitation, clock: ManualClock
) -> None:
    async with connect(srv.ws_base_url("futures_usdt")) as ws:
        answer = await _send(ws, {"method": "SUBSCRIBE", "params": ["btcusdt@kline_1m"], "id": 1})
        assert answer == {"result": None, "id": 1}
        forming = await _next(ws, lambda m: m.get("e") == "kline")
        assert forming["E"] == T0 and forming["s"] == "BTCUSDT" and forming["k"]["x"] is False
        # REST's forming kline at the same clock: the same partial values.
        rest = _rest_rows(srv, "/fapi/v1", "BTCUSDT", "1m", limit=1)
        assert _as_rest(forming["k"]) == rest[0][:11]
        clock.now = T0 + 2 * MIN  # two closes at once: both closed messages, in order
        first = await _next(ws, lambda m: m["k"]["x"])
        second = await _next(ws, lambda m: m["k"]["x"])
        rest = _rest_rows(srv, "/fapi/v1", "BTCUSDT", "1m", startTime=T0 - 30_000, limit=2)
        assert [_as_rest(first["k"]), _as_rest(second["k"])] == [row[:11] for row in rest]
        assert (first["k"]["t"], second["k"]["t"]) == (T0 - 30_000, T0 + 30_000)
        assert first["E"] == T0 + 2 * MIN and first["k"]["i"] == "1m"


async def test_spot_combined_stream_wraps_events(srv: BinanceImitation, clock: ManualClock) -> None:
    url = f"{srv.ws_url}/spot/stream?streams=btcusdt@kline_1s/ethusdt@kline_1s"
    async with connect(url) as ws:
        message = json.loads(await ws.recv())
        assert message["stream"] in ("btcusdt@kline_1s", "ethusdt@kline_1s")
        assert message["data"]["k"]["s"] == message["stream"].split("@")[0].upper()
        answer = await _send(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 4})
        assert answer == {"result": ["btcusdt@kline_1s", "ethusdt@kline_1s"], "id": 4}
        assert await _send(ws, {"method": "GET_PROPERTY", "params": ["combined"], "id": 5}) == {
            "result": True,
            "id": 5,
        }


async def test_methods_and_binance_error_answers(srv: BinanceImitation) -> None:
    async with connect(srv.ws_base_url("spot")) as ws:
        bad_json = await _send(ws, "{not json")
        assert bad_json["error"]["code"] == 3 and bad_json["error"]["msg"].startswith(
            "Invalid JSON"
        )
        assert bad_json["id"] is None
        assert await _send(ws, {"method": "SUBSCRIB", "params": [], "id": 2}) == {
            "error": {
                "code": 2,
                "msg": "Invalid request: unknown variant `SUBSCRIB`, expected one of `SUBSCRIBE`, "
                "`UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY`",
            },
            "id": 2,
        }
        assert await _send(
            ws, {"method": "SUBSCRIBE", "params": ["btcusdt@kline_7m"], "id": 3}
        ) == {
            "error": {"code": 2, "msg": "Invalid request: invalid stream"},
            "id": 3,
        }
    async with connect(srv.ws_base_url("spot")) as ws:
        assert await _send(ws, {"method": "SUBSCRIBE", "params": [], "id": "x"}) == {
            "error": {"code": 2, "msg": "Invalid request: request ID must be an unsigned integer"},
            "id": None,
        }
        assert await _send(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 1, "foo": 1}) == {
            "error": {"code": 0, "msg": "Unknown property"},
            "id": 1,
        }
        # A well-formed stream of an unlisted symbol is accepted and never sends (as Binance).
        params = ["nosuchusdt@kline_1m", "btcusdt@kline_1m"]
        assert await _send(ws, {"method": "SUBSCRIBE", "params": params, "id": 6}) == {
            "result": None,
            "id": 6,
        }
        assert await _send(
            ws, {"method": "UNSUBSCRIBE", "params": ["btcusdt@kline_1m"], "id": 7}
        ) == {
            "result": None,
            "id": 7,
        }
        assert await _send(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 8}) == {
            "result": ["nosuchusdt@kline_1m"],
            "id": 8,
        }


@pytest.mark.parametrize(("market", "limit"), [("spot", 5), ("futures_usdt", 10)])
async def test_incoming_rate_limit_disconnects(
    srv: BinanceImitation, market: str, limit: int
) -> None:
    async with connect(srv.ws_base_url(market)) as ws:
        for i in range(limit):
            assert (await _send(ws, {"method": "LIST_SUBSCRIPTIONS", "id": i}))["id"] == i
        await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": limit}))
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert srv.ws.stats.rate_disconnects == 1
    assert srv.ws.stats.max_messages_per_s == limit + 1


async def test_server_pings_are_answered_and_old_connections_cut(clock: ManualClock) -> None:
    config = WsConfig(ping_interval_s=0.05, ping_timeout_s=1.0, max_age_s=0.5)
    with BinanceImitation(clock=clock, ws=config) as srv:
        async with connect(srv.ws_base_url("spot"), ping_interval=None) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
        assert srv.ws.stats.age_disconnects == 1
        assert srv.ws.stats.pongs >= 2 and srv.ws.stats.pongs == srv.ws.stats.pings


async def test_refuse_then_accept(srv: BinanceImitation) -> None:
    srv.ws_faults.refuse = True
    with pytest.raises(InvalidStatus) as refused:
        async with connect(srv.ws_base_url("spot")):
            pass
    assert refused.value.response.status_code == 503
    srv.ws_faults.refuse = False
    async with connect(srv.ws_base_url("spot")) as ws:
        assert await _send(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 1}) == {"result": [], "id": 1}
    assert (srv.ws.stats.refused, srv.ws.stats.connections) == (1, 1)


async def test_drop_delay_and_never_close(srv: BinanceImitation, clock: ManualClock) -> None:
    srv.ws_faults.drop_closed.add(("btcusdt@kline_1m", T0 - 30_000))
    srv.ws_faults.never_close.add("ethusdt@kline_1m")
    async with connect(srv.ws_base_url("futures_usdt")) as ws:
        params = ["btcusdt@kline_1m", "ethusdt@kline_1m"]
        await _send(ws, {"method": "SUBSCRIBE", "params": params, "id": 1})
        await _next(ws, lambda m: m["s"] == "ETHUSDT")  # both streams are live
        clock.now = T0 + 2 * MIN
        closed = await _next(ws, lambda m: m["k"]["x"])
        assert (closed["s"], closed["k"]["t"]) == ("BTCUSDT", T0 + 30_000)  # the first dropped
        srv.ws_faults.closed_delay_s = 0.3
        clock.now = T0 + 3 * MIN
        # Forming messages of the new bar come before the late closed message.
        seen: list[tuple[str, int, bool]] = []
        while True:
            m = json.loads(await ws.recv())
            seen.append((m["s"], m["k"]["t"], m["k"]["x"]))
            if m["k"]["x"]:
                break
        assert seen[-1] == ("BTCUSDT", T0 + 90_000, True)
        assert ("BTCUSDT", T0 + 150_000, False) in seen[:-1]
    assert all(stream != "ethusdt@kline_1m" for stream, _ in srv.ws.stats.closed_sent)


async def test_disconnect_after_and_disconnect_all(srv: BinanceImitation) -> None:
    srv.ws_faults.disconnect_after = 3
    async with connect(srv.ws_base_url("futures_usdt")) as ws:
        await _send(ws, {"method": "SUBSCRIBE", "params": ["btcusdt@kline_1m"], "id": 1})
        received = 0
        with pytest.raises(ConnectionClosed):
            while True:
                await ws.recv()
                received += 1
        assert received == 3
    srv.ws_faults.disconnect_after = None
    async with connect(srv.ws_base_url("spot")) as ws:
        await _send(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 1})
        assert srv.ws.disconnect_all() == 1
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert srv.ws.stats.fault_disconnects == 2
