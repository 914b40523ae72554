"""The kline stream wire structs, names and URLs (nautilus_dsm.dsm.streams), without sockets."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import msgspec
import polars as pl
import pytest

from nautilus_dsm.common import Interval, MarketType
from nautilus_dsm.dsm.schema import FRAME_SCHEMA
from nautilus_dsm.dsm.streams import (
    KlineStreams,
    WireKlineEvent,
    closed_kline,
    decode_message,
    klines_to_frame,
    stream_name,
    ws_base_url,
)
from nautilus_dsm.errors import InvalidInput
from nautilus_dsm.testing import BinanceImitation, klines
from nautilus_dsm.testing.ws_protocol import kline_events, units_text


def test_real_closed_and_open_messages_decode_exactly(realdata: Path) -> None:
    closed = (realdata / "ws_kline_futures_closed.json").read_bytes()
    forming = (realdata / "ws_kline_futures_open.json").read_bytes()
    stream, event, _ = decode_message(closed)
    assert stream is None
    assert isinstance(event, WireKlineEvent)
    assert (event.e, event.E, event.s) == ("kline", 1638747660000, "BTCUSDT")
    k = event.k
    assert (k.t, k.T, k.i, k.f, k.L, k.n, k.x) == (
        1638747660000,
        1638747719999,
        "1m",
        100,
        200,
        100,
        True,
    )
    assert (k.o, k.c, k.h, k.l, k.v, k.q, k.V, k.Q, k.B) == (
        "0.0010",
        "0.0020",
        "0.0025",
        "0.0010",
        "1000",
        "1.0000",
        "500",
        "0.500",
        "123456",
    )
    _, open_event, _ = decode_message(forming)
    assert open_event is not None and open_event.k.x is False and open_event.k.l == "0.0015"


def test_closed_kline_keeps_exact_decimal_strings(realdata: Path) -> None:
    _, event, _ = decode_message((realdata / "ws_kline_futures_closed.json").read_bytes())
    assert event is not None
    kline = closed_kline(MarketType.FUTURES_USDT, event, received_ns=42)
    assert kline.stream == "btcusdt@kline_1m"
    assert (kline.open_ms, kline.close_ms, kline.event_ms, kline.received_ns) == (
        1638747660000,
        1638747719999,
        1638747660000,
        42,
    )
    assert (kline.open, kline.close, kline.quote_volume, kline.taker_buy_quote_volume) == (
        "0.0010",
        "0.0020",
        "1.0000",
        "0.500",
    )
    frame = klines_to_frame([kline])
    assert dict(frame.schema) == FRAME_SCHEMA
    row = frame.row(0, named=True)
    assert row["high"] == Decimal("0.0025")
    assert row["trades"] == 100
    assert frame["open_time"].dt.epoch("ms").to_list() == [1638747660000]


def test_combined_envelope_and_method_answers_decode() -> None:
    inner = {
        "e": "kline",
        "E": 5,
        "s": "ETHUSDT",
        "k": {
            "t": 0,
            "T": 999,
            "s": "ETHUSDT",
            "i": "1s",
            "f": 1,
            "L": 2,
            "o": "1",
            "c": "2",
            "h": "3",
            "l": "0.5",
            "v": "9",
            "n": 2,
            "x": True,
            "q": "1",
            "V": "1",
            "Q": "1",
            "B": "0",
        },
    }
    stream, wrapped, _ = decode_message(
        msgspec.json.encode({"stream": "ethusdt@kline_1s", "data": inner})
    )
    assert stream == "ethusdt@kline_1s" and wrapped is not None and wrapped.k.l == "0.5"
    _, none, env = decode_message(b'{"result":null,"id":7}')
    assert none is None and env.id == 7 and env.result is None and env.error is None
    _, none, env = decode_message(
        b'{"error":{"code":2,"msg":"Invalid request: invalid stream"},"id":3}'
    )
    assert none is None and env.error is not None
    assert (env.error.code, env.error.msg, env.id) == (2, "Invalid request: invalid stream", 3)


def test_a_message_of_the_wrong_shape_is_refused() -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_message(b'{"e":"kline","E":1,"s":"X","k":{"t":"soon"}}')
    with pytest.raises(msgspec.DecodeError):
        decode_message(b"not json")


def test_stream_names_and_base_urls() -> None:
    assert stream_name("BTCUSDT", "1m") == "btcusdt@kline_1m"
    assert stream_name("BTCUSD_PERP", Interval.MONTH_1) == "btcusd_perp@kline_1M"
    assert ws_base_url("spot") == "wss://stream.binance.com:9443/ws"
    assert ws_base_url(MarketType.FUTURES_USDT) == "wss://fstream.binance.com/market/ws"
    assert ws_base_url(MarketType.FUTURES_COIN) == "wss://dstream.binance.com/ws"
    template = "ws://127.0.0.1:9/{market}/ws"
    assert ws_base_url("futures_usdt", template) == "ws://127.0.0.1:9/futures/um/ws"
    assert ws_base_url("futures_coin", template) == "ws://127.0.0.1:9/futures/cm/ws"
    mapping = {"spot": "ws://mirror:1/ws/"}
    assert ws_base_url("spot", mapping) == "ws://mirror:1/ws"
    assert ws_base_url("futures_coin", mapping) == "wss://dstream.binance.com/ws"
    assert ws_base_url("spot", "wss://one/ws") == "wss://one/ws"
    with pytest.raises(InvalidInput, match="is not a websocket URL"):
        ws_base_url("spot", "https://api.binance.com")


def test_bad_arguments_are_our_errors() -> None:
    with pytest.raises(InvalidInput, match="max_streams_per_connection=0"):
        KlineStreams(max_streams_per_connection=0)
    with pytest.raises(InvalidInput, match="not a websocket URL"):
        KlineStreams(base_url_ws={"futures_usdt": "http://x"})


async def test_bad_subscriptions_are_our_errors() -> None:
    streams = KlineStreams()
    with pytest.raises(InvalidInput, match="1s is served on SPOT only"):
        await streams.subscribe("futures_usdt", "BTCUSDT", "1s")
    with pytest.raises(InvalidInput, match="invalid symbol"):
        await streams.subscribe("spot", "btc/usdt", "1m")
    with pytest.raises(InvalidInput, match="unknown interval"):
        await streams.subscribe("spot", "BTCUSDT", "7m")
    await streams.close()


def test_imitation_events_have_binance_keys_and_rest_strings(realdata: Path) -> None:
    real = json.loads((realdata / "ws_kline_futures_closed.json").read_text())
    srv = BinanceImitation()
    for market in MarketType:
        spec = srv.symbols(market)[
            "BTCUSDT" if market is not MarketType.FUTURES_COIN else "BTCUSD_PERP"
        ]
        ks = klines.kline_spec(spec, market)
        interval = Interval.MINUTE_1
        opens = [1_704_067_200_000, 1_704_067_260_000]
        raw = klines.generate(ks, interval, pl.Series(opens).to_numpy())
        events = kline_events(raw, ks, spec.symbol, interval, True, 1_704_067_320_001)
        assert [list(e) for e in events] == [list(real)] * 2
        assert [list(e["k"]) for e in events] == [list(real["k"])] * 2
        rows = klines.rest_rows(raw, ks)
        for event, row in zip(events, rows, strict=True):
            k = event["k"]
            assert (k["t"], k["o"], k["h"], k["l"], k["c"], k["v"], k["T"]) == row[:7]
            assert (k["q"], k["n"], k["V"], k["Q"]) == row[7:11]
            assert k["L"] - k["f"] + 1 == k["n"]


def test_units_text_matches_polars_formatting() -> None:
    values = [0, 1, 99_999_999, 100_000_000, 4_186_593_000_000, 123_456_789_012]
    frame = pl.DataFrame({"v": values}, schema={"v": pl.Int64})
    for decimals in (0, 1, 2, 3, 5, 8):
        expected = frame.select(klines.format_units("v", decimals))["v"].to_list()
        assert [units_text(v, decimals) for v in values] == expected
