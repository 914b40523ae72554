"""KlineStreams against the imitation's websocket streams, over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

import pytest

from nautilus_dsm.common import MarketType
from nautilus_dsm.dsm.streams import (
    ClosedKline,
    KlineStreams,
    StreamGap,
    StreamResume,
    klines_to_frame,
)
from nautilus_dsm.errors import StreamClosed, StreamSubscriptionRejected
from nautilus_dsm.testing import BinanceImitation
from nautilus_dsm.testing.ws import WsConfig

pytestmark = pytest.mark.timeout(30)

T0 = 1_704_067_230_000  # 2024-01-01 00:00:30 UTC: mid-bar of 1m bars
MIN = 60_000
FUT = MarketType.FUTURES_USDT


class ManualClock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


class Recorder:
    """The callbacks of a KlineStreams, recorded."""

    def __init__(self) -> None:
        self.klines: list[ClosedKline] = []
        self.resumes: list[tuple[MarketType, list[StreamResume]]] = []
        self.gaps: list[StreamGap] = []

    def streams(self, srv: BinanceImitation, **kwargs: object) -> KlineStreams:
        return KlineStreams(
            self.klines.append,
            on_reconnect=lambda market, resumes: self.resumes.append((market, resumes)),
            on_gap=self.gaps.append,
            base_url_ws=srv.ws_url + "/{market}/ws",
            backoff_initial_s=0.05,
            backoff_max_s=0.2,
            rng=random.Random(7),
            **kwargs,  # type: ignore[arg-type]
        )

    def opens(self, stream: str) -> list[int]:
        return [k.open_ms for k in self.klines if k.stream == stream]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def srv(clock: ManualClock) -> Iterator[BinanceImitation]:
    with BinanceImitation(clock=clock, ws=True) as server:
        yield server


async def test_only_closed_klines_once_in_order_equal_to_rest() -> None:
    # The wall clock and 1s spot bars: Binance's own cadence (1 s) and closes.
    rec = Recorder()
    with BinanceImitation(ws=True) as srv:
        async with rec.streams(srv) as streams:
            await streams.subscribe("spot", "BTCUSDT", "1s")
            await streams.subscribe("spot", "ETHUSDT", "1s")
            await streams.wait_for(lambda: len(rec.opens("btcusdt@kline_1s")) >= 3)
            await streams.wait_for(lambda: len(rec.opens("ethusdt@kline_1s")) >= 3)
            stats = streams.stats
        for stream, symbol in (("btcusdt@kline_1s", "BTCUSDT"), ("ethusdt@kline_1s", "ETHUSDT")):
            mine = [k for k in rec.klines if k.stream == stream]
            opens = [k.open_ms for k in mine]
            assert opens == list(range(opens[0], opens[0] + 1000 * len(opens), 1000))
            truth = srv.expected("spot", symbol, "1s", opens[0], opens[-1] + 1000)
            assert klines_to_frame(mine).equals(truth)
            assert all(k.received_ns // 1_000_000 >= k.close_ms for k in mine)
    assert stats.forming > 0 and stats.delivered == len(rec.klines)
    assert (stats.duplicates, stats.gaps, stats.reconnects, stats.connects) == (0, 0, 0, 1)
    assert rec.gaps == [] and rec.resumes == []


async def test_async_iterator_delivers_closed_klines(
    srv: BinanceImitation, clock: ManualClock
) -> None:
    async with KlineStreams(base_url_ws=srv.ws_url + "/{market}/ws") as streams:
        await streams.subscribe(FUT, "BTCUSDT", "1m")
        clock.now = T0 + 3 * MIN
        got = []
        async for kline in streams.klines():
            got.append(kline.open_ms)
            if len(got) == 3:
                break
    assert got == [T0 - 30_000, T0 + 30_000, T0 + 90_000]


async def test_unsubscribe_and_resubscribe(srv: BinanceImitation, clock: ManualClock) -> None:
    rec = Recorder()
    async with rec.streams(srv) as streams:
        await streams.subscribe(FUT, "BTCUSDT", "1m")
        await streams.subscribe(FUT, "ETHUSDT", "1m")
        clock.now = T0 + MIN
        await streams.wait_for(lambda: len(rec.klines) == 2)
        await streams.unsubscribe(FUT, "ETHUSDT", "1m")
        assert streams.streams() == ["btcusdt@kline_1m"]
        assert srv.ws.subscriptions() == [{"btcusdt@kline_1m"}]
        clock.now = T0 + 2 * MIN
        await streams.wait_for(lambda: len(rec.opens("btcusdt@kline_1m")) == 2)
        assert rec.opens("ethusdt@kline_1m") == [T0 - 30_000]
        await streams.subscribe(FUT, "ETHUSDT", "1m")
        clock.now = T0 + 3 * MIN
        await streams.wait_for(lambda: len(rec.opens("ethusdt@kline_1m")) == 2)
        assert rec.opens("ethusdt@kline_1m") == [T0 - 30_000, T0 + 90_000]
        assert streams.connections(FUT) == [["btcusdt@kline_1m", "ethusdt@kline_1m"]]
        assert streams.stats.connects == 1
    assert rec.gaps == []  # a stream unsubscribed on purpose has no gap


async def test_more_than_200_streams_open_a_second_connection(srv: BinanceImitation) -> None:
    # Well-formed streams of unlisted symbols: Binance (and the imitation) accept them silently.
    rec = Recorder()
    async with rec.streams(srv) as streams:
        names = await asyncio.gather(
            *(streams.subscribe("spot", f"S{i:03d}USDT", "1m") for i in range(201))
        )
        assert len(set(names)) == 201
        sizes = [len(c) for c in streams.connections("spot")]
        assert sizes == [200, 1]
        assert sorted(len(s) for s in srv.ws.subscriptions()) == [1, 200]
        assert streams.stats.connects == 2
    assert srv.ws.stats.rate_disconnects == 0


async def test_outgoing_rate_stays_under_binance_limit(srv: BinanceImitation) -> None:
    rec = Recorder()
    async with rec.streams(srv) as streams:
        await streams.subscribe("spot", "BTCUSDT", "1m")
        for i in range(9):  # one SUBSCRIBE message each: 10 messages on one spot connection
            await streams.subscribe("spot", f"S{i:03d}USDT", "1m")
        assert len(srv.ws.stats.requests) == 10
        assert srv.ws.subscriptions() == [set(streams.streams("spot"))]
    assert srv.ws.stats.rate_disconnects == 0
    assert srv.ws.stats.max_messages_per_s <= 5  # Binance: more than 5 in a second cuts


async def test_a_client_over_the_limit_is_disconnected_then_recovers(srv: BinanceImitation) -> None:
    # The imitation's limit is real: sending 10/s on spot gets cut, and the client heals.
    rec = Recorder()
    async with rec.streams(srv, send_rates={MarketType.SPOT: 10}) as streams:
        await streams.subscribe("spot", "BTCUSDT", "1m")
        await asyncio.gather(*(streams.subscribe("spot", f"S{i:03d}USDT", "1m") for i in range(8)))
        await streams.wait_for(lambda: srv.ws.stats.rate_disconnects >= 1)
        await streams.wait_for(lambda: streams.stats.reconnects >= 1)
        await streams.wait_for(lambda: srv.ws.subscriptions() == [set(streams.streams("spot"))])


async def test_disconnect_mid_bar_reconnects_resubscribes_and_reports(
    srv: BinanceImitation, clock: ManualClock
) -> None:
    rec = Recorder()
    async with rec.streams(srv) as streams:
        await streams.subscribe(FUT, "BTCUSDT", "1m")
        clock.now = T0 + MIN
        await streams.wait_for(lambda: rec.opens("btcusdt@kline_1m") == [T0 - 30_000])
        srv.ws_faults.refuse = True
        assert srv.ws.disconnect_all() == 1
        await streams.wait_for(lambda: streams.stats.connect_failures >= 1)
        clock.now = T0 + 3 * MIN  # two bars close while we are away
        srv.ws_faults.refuse = False
        await streams.wait_for(lambda: len(rec.resumes) == 1)
        market, resumes = rec.resumes[0]
        assert market is FUT
        assert [(r.stream, r.symbol, r.interval, r.last_open_ms) for r in resumes] == [
            ("btcusdt@kline_1m", "BTCUSDT", "1m", T0 - 30_000)
        ]
        assert resumes[0].down_ms <= resumes[0].up_ms
        assert srv.ws.subscriptions() == [{"btcusdt@kline_1m"}]
        clock.now = T0 + 4 * MIN
        await streams.wait_for(lambda: len(rec.klines) == 2)
        assert rec.opens("btcusdt@kline_1m") == [T0 - 30_000, T0 + 150_000]
        # The two bars closed during the outage are reported as one gap for REST backfill.
        assert rec.gaps == [StreamGap(FUT, "btcusdt@kline_1m", T0 + 30_000, T0 + 150_000)]
        stats = streams.stats
        assert (stats.disconnects, stats.reconnects, stats.duplicates) == (1, 1, 0)


async def test_refused_at_start_then_recovers(srv: BinanceImitation, clock: ManualClock) -> None:
    rec = Recorder()
    srv.ws_faults.refuse = True
    async with rec.streams(srv) as streams:
        subscribed = asyncio.create_task(streams.subscribe(FUT, "BTCUSDT", "1m"))
        await streams.wait_for(lambda: streams.stats.connect_failures >= 2)
        assert "refused the websocket handshake with HTTP 503" in streams.stats.last_error
        assert not subscribed.done()
        srv.ws_faults.refuse = False
        assert await subscribed == "btcusdt@kline_1m"
        clock.now = T0 + MIN
        await streams.wait_for(lambda: len(rec.klines) == 1)
        assert rec.resumes == []  # never connected before: nothing to backfill
    assert srv.ws.stats.refused >= 2


async def test_dropped_closed_message_is_a_reported_gap(
    srv: BinanceImitation, clock: ManualClock
) -> None:
    rec = Recorder()
    srv.ws_faults.drop_closed.add(("btcusdt@kline_1m", T0 + 30_000))
    srv.ws_faults.never_close.add("ethusdt@kline_1m")
    async with rec.streams(srv) as streams:
        await streams.subscribe(FUT, "BTCUSDT", "1m")
        await streams.subscribe(FUT, "ETHUSDT", "1m")
        clock.now = T0 + 3 * MIN  # three closes; the middle one's message is dropped
        await streams.wait_for(lambda: len(rec.opens("btcusdt@kline_1m")) == 2)
        assert rec.opens("btcusdt@kline_1m") == [T0 - 30_000, T0 + 90_000]
        assert rec.gaps == [StreamGap(FUT, "btcusdt@kline_1m", T0 + 30_000, T0 + 90_000)]
        forming = streams.stats.forming
        await streams.wait_for(lambda: streams.stats.forming >= forming + 4)
        assert rec.opens("ethusdt@kline_1m") == []  # never x: true -> nothing published


async def test_late_closed_messages_are_delivered_once(
    srv: BinanceImitation, clock: ManualClock
) -> None:
    rec = Recorder()
    srv.ws_faults.closed_delay_s = 0.3
    async with rec.streams(srv) as streams:
        await streams.subscribe(FUT, "BTCUSDT", "1m")
        clock.now = T0 + 2 * MIN
        await streams.wait_for(lambda: len(rec.klines) == 2)
        assert rec.opens("btcusdt@kline_1m") == [T0 - 30_000, T0 + 30_000]
        truth = srv.expected(FUT, "BTCUSDT", "1m", T0 - 30_000, T0 + 90_000)
        assert klines_to_frame(rec.klines).equals(truth)


async def test_rotation_before_the_server_cut_off() -> None:
    rec = Recorder()
    with BinanceImitation(ws=WsConfig(max_age_s=1.0)) as srv:
        async with rec.streams(srv, rotate_after_s=0.4) as streams:
            await streams.subscribe("spot", "BTCUSDT", "1s")
            await streams.wait_for(lambda: streams.stats.rotations >= 4, timeout=10)
            await streams.wait_for(lambda: len(rec.klines) >= 3, timeout=10)
            stats = streams.stats
        assert srv.ws.stats.age_disconnects == 0  # we always left first
    opens = rec.opens("btcusdt@kline_1s")
    assert opens == list(range(opens[0], opens[0] + 1000 * len(opens), 1000))
    assert (stats.reconnects, stats.gaps) == (0, 0) and rec.resumes == []


async def test_server_pings_are_answered() -> None:
    # The server closes a connection whose pong does not come within ping_timeout_s.
    rec = Recorder()
    config = WsConfig(ping_interval_s=0.05, ping_timeout_s=0.5)
    with BinanceImitation(ws=config) as srv:
        async with rec.streams(srv) as streams:
            await streams.subscribe("spot", "BTCUSDT", "1s")
            await streams.wait_for(lambda: len(rec.klines) >= 2)
            assert streams.stats.disconnects == 0
        assert srv.ws.stats.pongs >= 5 and srv.ws.stats.connections == 1


async def test_a_rejected_subscription_is_our_error_and_not_retried(srv: BinanceImitation) -> None:
    rec = Recorder()
    srv.ws_faults.reject_streams.add("ethusdt@kline_1m")
    async with rec.streams(srv) as streams:
        await streams.subscribe(FUT, "BTCUSDT", "1m")
        with pytest.raises(
            StreamSubscriptionRejected, match=r"error 2: 'Invalid request: invalid stream'"
        ):
            await streams.subscribe(FUT, "ETHUSDT", "1m")
        assert streams.streams() == ["btcusdt@kline_1m"]
        assert streams.stats.connects == 1
    with pytest.raises(StreamClosed, match="was closed; create a new one"):
        await streams.subscribe(FUT, "BTCUSDT", "1m")


async def test_coin_margined_stream_equals_rest(srv: BinanceImitation, clock: ManualClock) -> None:
    rec = Recorder()
    coin = MarketType.FUTURES_COIN
    async with rec.streams(srv) as streams:
        assert await streams.subscribe(coin, "BTCUSD_PERP", "1m") == "btcusd_perp@kline_1m"
        clock.now = T0 + 2 * MIN
        await streams.wait_for(lambda: len(rec.klines) == 2)
    assert [k.market for k in rec.klines] == [coin, coin]
    truth = srv.expected(coin, "BTCUSD_PERP", "1m", T0 - 30_000, T0 + 90_000)
    assert klines_to_frame(rec.klines).equals(truth)
    assert srv.ws.stats.closed_sent == [
        ("btcusd_perp@kline_1m", T0 - 30_000),
        ("btcusd_perp@kline_1m", T0 + 30_000),
    ]
