"""The wire schema of Binance kline stream messages: msgspec structs, decoded once at the edge.

Every message a market-stream connection receives (a raw-stream event, a combined-stream
``{"stream", "data"}`` event, or a method answer) is decoded in one pass into
:class:`WireEnvelope`; a closed kline becomes a :class:`ClosedKline` with Binance's exact decimal
strings, and :func:`klines_to_frame` turns a list of them into a ``FRAME_SCHEMA`` frame. Pure.
"""

from __future__ import annotations

from typing import Any

import msgspec

from nautilus_dsm.common import Interval, MarketType


class WireKline(msgspec.Struct, frozen=True):
    """Binance's ``k`` object of a kline event (field names as on the wire)."""

    t: int
    T: int
    s: str
    i: str
    f: int
    L: int
    o: str
    c: str
    h: str
    l: str  # noqa: E741
    v: str
    n: int
    x: bool
    q: str
    V: str
    Q: str
    B: str


class WireKlineEvent(msgspec.Struct, frozen=True):
    """A kline event: ``{"e": "kline", "E": event ms, "s": symbol, "k": {...}}``."""

    e: str
    E: int
    s: str
    k: WireKline


class WireError(msgspec.Struct, frozen=True):
    """The ``error`` of a method answer: ``{"code": 2, "msg": "Invalid request: ..."}``."""

    code: int
    msg: str


class WireEnvelope(msgspec.Struct, frozen=True):
    """Every message a market-stream connection receives, in one decode.

    A raw-stream event (``e``/``E``/``s``/``k``), a combined-stream event (``stream``/``data``)
    or a method answer (``result``/``error`` with ``id``).
    """

    e: str | None = None
    E: int | None = None
    s: str | None = None
    k: WireKline | None = None
    stream: str | None = None
    data: WireKlineEvent | None = None
    result: Any = msgspec.UNSET
    error: WireError | None = None
    id: int | None = None


_decode = msgspec.json.Decoder(WireEnvelope).decode


class ClosedKline(msgspec.Struct, frozen=True):
    """A closed kline as delivered: exact decimal strings, epoch-ms times, receipt stamp.

    ``close_ms`` is Binance's ``T`` (close time, inclusive: the next open minus 1 ms);
    ``received_ns`` is ``time.time_ns()`` when the message was read (a live ``ts_init``).
    """

    market: MarketType
    stream: str
    symbol: str
    interval: str
    open_ms: int
    close_ms: int
    open: str
    high: str
    low: str
    close: str
    volume: str
    quote_volume: str
    trades: int
    taker_buy_base_volume: str
    taker_buy_quote_volume: str
    event_ms: int
    received_ns: int


def decode_message(raw: bytes | str) -> tuple[str | None, WireKlineEvent | None, WireEnvelope]:
    """Decode one message: ``(stream name or None, kline event or None, envelope)``.

    Raises :class:`msgspec.ValidationError` / :class:`msgspec.DecodeError` on a message that is
    not Binance's shape (the caller counts and skips it).
    """
    env = _decode(raw)
    if env.data is not None:
        return env.stream, env.data, env
    if env.k is not None and env.e == "kline" and env.E is not None and env.s is not None:
        return None, WireKlineEvent(env.e, env.E, env.s, env.k), env
    return None, None, env


def closed_kline(market: MarketType, event: WireKlineEvent, received_ns: int) -> ClosedKline:
    """Convert a closed wire event to a :class:`ClosedKline`."""
    k = event.k
    return ClosedKline(
        market=market,
        stream=stream_name(k.s, k.i),
        symbol=k.s,
        interval=k.i,
        open_ms=k.t,
        close_ms=k.T,
        open=k.o,
        high=k.h,
        low=k.l,
        close=k.c,
        volume=k.v,
        quote_volume=k.q,
        trades=k.n,
        taker_buy_base_volume=k.V,
        taker_buy_quote_volume=k.Q,
        event_ms=event.E,
        received_ns=received_ns,
    )


def klines_to_frame(items: list[ClosedKline]) -> Any:
    """Convert closed klines to a ``FRAME_SCHEMA`` polars frame (exact decimals, UTC ms times)."""
    import polars as pl

    from nautilus_dsm.dsm.schema import COLUMNS, FRAME_SCHEMA

    data = {
        "open_time": [k.open_ms for k in items],
        "close_time": [k.close_ms for k in items],
        "open": [k.open for k in items],
        "high": [k.high for k in items],
        "low": [k.low for k in items],
        "close": [k.close for k in items],
        "volume": [k.volume for k in items],
        "quote_volume": [k.quote_volume for k in items],
        "trades": [k.trades for k in items],
        "taker_buy_base_volume": [k.taker_buy_base_volume for k in items],
        "taker_buy_quote_volume": [k.taker_buy_quote_volume for k in items],
    }
    frame = pl.DataFrame(data, schema_overrides={"trades": pl.Int64})
    return frame.select(
        [
            pl.col(name).cast(pl.Int64).cast(FRAME_SCHEMA[name])
            if name in ("open_time", "close_time")
            else pl.col(name).cast(FRAME_SCHEMA[name])
            for name in COLUMNS
        ]
    )


def stream_name(symbol: str, interval: Interval | str) -> str:
    """``btcusdt@kline_1m`` (Binance wants the symbol in lower case; ``1M`` keeps its case)."""
    return f"{symbol.lower()}@kline_{Interval.parse(interval).value}"
