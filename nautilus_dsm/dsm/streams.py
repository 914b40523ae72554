"""Binance kline websocket streams: closed klines only, on shared, self-healing connections.

The engine side of live streaming (never imports NautilusTrader). :class:`KlineStreams` keeps
one set of connections per market (at most ``max_streams_per_connection`` streams each, 200 as
NautilusTrader's own Binance client), subscribes with the ``SUBSCRIBE`` / ``UNSUBSCRIBE`` JSON
methods under the incoming-message limit (5/s spot, 10/s futures; we send at most 4 / 8 so a
pong or ping never tips a connection over), answers server pings (the websocket library does it
at the protocol level), rotates each connection before Binance's 24 h cut-off (make before
break: the new connection is subscribed before the old one closes), reconnects with jittered
exponential backoff and re-subscribes. Every message is decoded once at the edge into typed
msgspec structs; only closed klines (``k.x == true``) are delivered, each once and in order per
stream, as :class:`ClosedKline` (prices as Binance's exact decimal strings) to a callback or an
async iterator. Reconnects and gaps are reported (``on_reconnect``, ``on_gap``) so the live
client can backfill the missed range by REST.

Client choice. Measured by ``benchmarks/ws_client.py`` against one local server (see
benchmarks/README.md): on an idle machine ``picows`` received ~2.9x the messages per second of
``websockets`` (~311 k vs ~107 k/s, decode included) and NautilusTrader's Rust
``WebSocketClient`` the fewest (~28 k/s: every message crosses from the tokio thread into Python
under the GIL), p50 latency 123 / 145 / 205 µs. The load here is at most 4 messages per second
per futures stream, 800/s on a full connection: ``websockets`` handles that at < 1 % of one
core, so throughput does not decide. ``websockets`` is chosen because it is asyncio-native (no
foreign thread calling into our loop, cancellation and timeouts behave as asyncio's), pure
Python with no binary wheel to match, well maintained, answers pings itself, exposes the
handshake status (refusals are clear errors), and the imitation already serves with it (one
dependency, one implementation of the protocol in tests and production). The Rust client
reconnects on its own to the URL it was created with, and reports only that it came back (a
``post_reconnection`` callback), not when it was lost, so the outage window we report for REST
backfill would be a guess, and makes make-before-break rotation impossible; its Python API is a
low-level binding of NautilusTrader's internals, not a stable interface. The transport is
isolated in :meth:`KlineStreams._open` should ``picows`` be worth it later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from nautilus_dsm.common import Interval, MarketType, check_binance_symbol
from nautilus_dsm.errors import InvalidInput, StreamClosed, StreamSubscriptionRejected

log = logging.getLogger(__name__)

WS_BASE_URLS: dict[MarketType, str] = {
    MarketType.SPOT: "wss://stream.binance.com:9443/ws",
    MarketType.FUTURES_USDT: "wss://fstream.binance.com/market/ws",
    MarketType.FUTURES_COIN: "wss://dstream.binance.com/ws",
}
# ``{market}`` in a base_url_ws template (the Vision slugs).
MARKET_SLUGS: dict[MarketType, str] = {
    MarketType.SPOT: "spot",
    MarketType.FUTURES_USDT: "futures/um",
    MarketType.FUTURES_COIN: "futures/cm",
}
# Binance's incoming-message limits are 5 (spot) / 10 (futures) per second and connection; one
# slot is kept for pongs and pings, which count too.
SEND_RATES: dict[MarketType, int] = {
    MarketType.SPOT: 4,
    MarketType.FUTURES_USDT: 8,
    MarketType.FUTURES_COIN: 8,
}
MAX_STREAMS_PER_CONNECTION = 200
ROTATE_AFTER_S = 23 * 3600.0  # Binance cuts at 24 h
_RATE_SLACK_S = 0.05  # keeps our 1 s window ahead of the server's (network jitter)


# ----------------------------------------------------------------------------------------------
# Wire structs (decoded once, at the edge)
# ----------------------------------------------------------------------------------------------


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
    code: int
    msg: str


class _Envelope(msgspec.Struct, frozen=True):
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


_decode = msgspec.json.Decoder(_Envelope).decode


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


def decode_message(raw: bytes | str) -> tuple[str | None, WireKlineEvent | None, _Envelope]:
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
    """A closed wire event -> :class:`ClosedKline`."""
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
    """Closed klines -> a ``FRAME_SCHEMA`` polars frame (exact decimals, UTC ms times)."""
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


# ----------------------------------------------------------------------------------------------
# Names and URLs
# ----------------------------------------------------------------------------------------------


def stream_name(symbol: str, interval: Interval | str) -> str:
    """``btcusdt@kline_1m`` (Binance wants the symbol in lower case; ``1M`` keeps its case)."""
    return f"{symbol.lower()}@kline_{Interval.parse(interval).value}"


def ws_base_url(
    market: MarketType | str, base_url_ws: str | Mapping[Any, str] | None = None
) -> str:
    """The raw ``/ws`` endpoint of ``market``.

    ``base_url_ws``: None (Binance's), a mapping market -> URL (missing markets use Binance's),
    a template containing ``{market}`` (``spot``, ``futures/um``, ``futures/cm``), or one URL
    for every market.
    """
    market = MarketType.parse(market)
    if base_url_ws is None:
        return WS_BASE_URLS[market]
    if isinstance(base_url_ws, Mapping):
        for key, url in base_url_ws.items():
            if MarketType.parse(key) is market:
                return _check_url(str(url))
        return WS_BASE_URLS[market]
    if "{market}" in base_url_ws:
        return _check_url(base_url_ws.replace("{market}", MARKET_SLUGS[market]))
    return _check_url(base_url_ws)


def _check_url(url: str) -> str:
    if not url.startswith(("ws://", "wss://")):
        raise InvalidInput(
            f"base_url_ws {url!r} is not a websocket URL; use ws://host:port/path or "
            "wss://host:port/path (e.g. wss://stream.binance.com:9443/ws)"
        )
    return url.rstrip("/")


# ----------------------------------------------------------------------------------------------
# Events reported to the live client
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamResume:
    """One stream of a connection that came back: what to backfill by REST.

    ``last_open_ms`` is the open time of the last closed kline delivered on it (None: none yet);
    bars after it and closing before the first closed kline the new connection delivers may be
    missing. ``down_ms`` / ``up_ms`` are the local wall-clock ms when the connection was lost and
    when it was subscribed again.
    """

    stream: str
    symbol: str
    interval: str
    last_open_ms: int | None
    down_ms: int
    up_ms: int


@dataclass(frozen=True)
class StreamGap:
    """Closed klines of ``stream`` with open time in ``[start_ms, end_ms)`` never arrived."""

    market: MarketType
    stream: str
    start_ms: int
    end_ms: int


@dataclass
class StreamStats:
    """Counters of a :class:`KlineStreams`; they only grow."""

    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    reconnects: int = 0
    rotations: int = 0
    messages: int = 0
    invalid_messages: int = 0
    forming: int = 0
    delivered: int = 0
    duplicates: int = 0
    stale: int = 0
    gaps: int = 0
    control_sent: int = 0
    last_error: str = ""


# ----------------------------------------------------------------------------------------------
# The manager
# ----------------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Conn:
    market: MarketType
    index: int
    wanted: set[str] = field(default_factory=set)
    live: ClientConnection | None = None
    acked: set[str] = field(default_factory=set)
    task: asyncio.Task[None] | None = None
    sent: deque[float] = field(default_factory=deque)
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    down_ms: int | None = None
    ever_up: bool = False


class KlineStreams:
    """Closed Binance klines from websocket market streams, on shared connections.

    Parameters
    ----------
    on_kline
        Called with every closed kline (once per bar and stream, in open-time order). When
        None, iterate with ``async for k in streams.klines()``.
    on_reconnect
        ``on_reconnect(market, [StreamResume, ...])`` after a lost connection is back and
        re-subscribed (not after a planned rotation).
    on_gap
        ``on_gap(StreamGap)`` when a closed kline arrives and earlier ones of the stream never
        did (a dropped closed message, or an outage).
    base_url_ws
        See :func:`ws_base_url`.
    max_streams_per_connection
        Streams per connection (Binance allows 1024; 200 as NautilusTrader).
    rotate_after_s
        Age at which a connection is replaced (Binance closes at 24 h).
    backoff_initial_s, backoff_max_s
        Reconnect delays: full jitter in ``[initial/2, min(max, initial * 2**attempt)]``.
    send_rates
        Control messages per second and connection (defaults :data:`SEND_RATES`).
    open_timeout_s, ack_timeout_s
        Handshake timeout; how long a method answer may take before the connection is
        considered dead and replaced.
    ping_interval_s
        Our own keepalive pings (a pong must come within the same time, else reconnect);
        None disables them.
    rng
        Source of the backoff jitter (tests pass a seeded one).
    """

    def __init__(
        self,
        on_kline: Callable[[ClosedKline], Any] | None = None,
        *,
        on_reconnect: Callable[[MarketType, list[StreamResume]], Any] | None = None,
        on_gap: Callable[[StreamGap], Any] | None = None,
        base_url_ws: str | Mapping[Any, str] | None = None,
        max_streams_per_connection: int = MAX_STREAMS_PER_CONNECTION,
        rotate_after_s: float = ROTATE_AFTER_S,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        send_rates: Mapping[MarketType, int] | None = None,
        open_timeout_s: float = 10.0,
        ack_timeout_s: float = 10.0,
        ping_interval_s: float | None = 20.0,
        rng: random.Random | None = None,
    ) -> None:
        if not 1 <= max_streams_per_connection <= 1024:
            raise InvalidInput(
                f"max_streams_per_connection={max_streams_per_connection} is outside Binance's "
                "1..1024; use 200 (the default)"
            )
        if rotate_after_s <= 0 or backoff_initial_s <= 0 or backoff_max_s < backoff_initial_s:
            raise InvalidInput(
                "rotate_after_s and backoff_initial_s must be > 0 and backoff_max_s >= "
                f"backoff_initial_s (got {rotate_after_s}, {backoff_initial_s}, {backoff_max_s})"
            )
        for market in MarketType:
            ws_base_url(market, base_url_ws)  # a bad URL fails here, not at the first connect
        self._on_kline = on_kline
        self._on_reconnect = on_reconnect
        self._on_gap = on_gap
        self._base_url_ws = base_url_ws
        self._max_streams = max_streams_per_connection
        self._rotate_after_s = rotate_after_s
        self._backoff = (backoff_initial_s, backoff_max_s)
        self._rates = {**SEND_RATES, **(send_rates or {})}
        self._open_timeout_s = open_timeout_s
        self._ack_timeout_s = ack_timeout_s
        self._ping_interval_s = ping_interval_s
        self._rng = rng or random.Random()
        self.stats = StreamStats()
        self._conns: dict[MarketType, list[_Conn]] = {m: [] for m in MarketType}
        self._intervals: dict[tuple[MarketType, str], Interval] = {}
        self._last_open: dict[tuple[MarketType, str], int] = {}
        self._waiters: dict[tuple[MarketType, str], list[asyncio.Future[None]]] = {}
        self._pending: dict[int, tuple[_Conn, ClientConnection, list[str], str]] = {}
        self._answers: dict[int, asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._queue: asyncio.Queue[ClosedKline] = asyncio.Queue()
        self._changed = asyncio.Condition()
        self._next_id = 0
        self._closed = False

    # Public API ----------------------------------------------------------------------------

    def streams(self, market: MarketType | str | None = None) -> list[str]:
        """Subscribed stream names (of one market, or all), sorted."""
        markets = list(MarketType) if market is None else [MarketType.parse(market)]
        return sorted(s for m in markets for c in self._conns[m] for s in c.wanted)

    def connections(self, market: MarketType | str) -> list[list[str]]:
        """The streams of each connection of ``market`` (sorted)."""
        return [sorted(c.wanted) for c in self._conns[MarketType.parse(market)] if c.wanted]

    async def subscribe(
        self,
        market: MarketType | str,
        symbol: str,
        interval: Interval | str,
        *,
        wait: bool = True,
    ) -> str:
        """Subscribe ``symbol``'s ``interval`` klines; returns the stream name.

        With ``wait`` (default) returns once the server acknowledged the subscription (across
        reconnects); raises :class:`StreamSubscriptionRejected` when it answers an error.
        """
        market, name, interval = self._parse(market, symbol, interval)
        key = (market, name)
        if self._find(market, name) is None:
            conn = self._conn_with_room(market)
            conn.wanted.add(name)
            self._intervals[key] = interval
            if conn.task is None:
                conn.task = asyncio.create_task(
                    self._run(conn), name=f"ws-{market.value}-{conn.index}"
                )
            elif conn.live is not None:
                self._spawn(self._control(conn, conn.live, "SUBSCRIBE", [name]))
        conn = self._find(market, name)
        if wait and conn is not None and name not in conn.acked:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(key, []).append(future)
            await future
        return name

    async def unsubscribe(
        self, market: MarketType | str, symbol: str, interval: Interval | str
    ) -> None:
        """Stop a stream; nothing of it is delivered after this returns."""
        market, name, _ = self._parse(market, symbol, interval)
        conn = self._find(market, name)
        if conn is None:
            return
        conn.wanted.discard(name)
        conn.acked.discard(name)
        self._last_open.pop((market, name), None)
        self._intervals.pop((market, name), None)
        for future in self._waiters.pop((market, name), []):
            if not future.done():
                future.set_exception(
                    StreamClosed(f"{name} was unsubscribed before it was acknowledged")
                )
        if conn.live is not None:
            # A lost connection unsubscribes too: the next one is never subscribed to it.
            with contextlib.suppress(ConnectionClosed, StreamClosed, TimeoutError):
                async with asyncio.timeout(self._ack_timeout_s):
                    await self._control(conn, conn.live, "UNSUBSCRIBE", [name], wait=True)
        if not conn.wanted and conn.task is not None:
            conn.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await conn.task
            self._conns[market].remove(conn)
        await self._notify()

    async def klines(self) -> AsyncIterator[ClosedKline]:
        """Closed klines as they arrive (when constructed without ``on_kline``)."""
        while True:
            item = await self._queue.get()
            yield item

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate()`` holds; it is re-evaluated at every state change."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    async def close(self) -> None:
        """Close every connection; the manager cannot be used afterwards."""
        self._closed = True
        tasks = [c.task for conns in self._conns.values() for c in conns if c.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for futures in self._waiters.values():
            for future in futures:
                if not future.done():
                    future.set_exception(StreamClosed("the KlineStreams was closed"))
        self._waiters.clear()

    async def __aenter__(self) -> KlineStreams:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # Bookkeeping ---------------------------------------------------------------------------

    def _parse(
        self, market: MarketType | str, symbol: str, interval: Interval | str
    ) -> tuple[MarketType, str, Interval]:
        if self._closed:
            raise StreamClosed("this KlineStreams was closed; create a new one")
        market = MarketType.parse(market)
        interval = Interval.parse(interval)
        interval.check_market(market)
        check_binance_symbol(symbol)
        return market, stream_name(symbol, interval), interval

    def _find(self, market: MarketType, name: str) -> _Conn | None:
        for conn in self._conns[market]:
            if name in conn.wanted:
                return conn
        return None

    def _conn_with_room(self, market: MarketType) -> _Conn:
        for conn in self._conns[market]:
            if len(conn.wanted) < self._max_streams:
                return conn
        conn = _Conn(market, len(self._conns[market]))
        self._conns[market].append(conn)
        return conn

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # Connection life -----------------------------------------------------------------------

    async def _open(self, url: str) -> ClientConnection:
        # The transport: swap here for another client. Server pings are answered by the library.
        return await connect(
            url,
            open_timeout=self._open_timeout_s,
            # Our own pings find a connection that died silently (no FIN); one per interval
            # counts toward Binance's message limit, which SEND_RATES leaves room for.
            ping_interval=self._ping_interval_s,
            ping_timeout=self._ping_interval_s,
            close_timeout=1.0,
            compression=None,
            max_queue=None,
            max_size=2**22,
        )

    async def _run(self, conn: _Conn) -> None:
        url = ws_base_url(conn.market, self._base_url_ws)
        attempt = 0
        while not self._closed and conn.wanted:
            try:
                ws = await self._open(url)
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
                attempt += 1
                self.stats.connect_failures += 1
                self.stats.last_error = _describe(url, exc)
                log.warning("websocket %s: %s; retry %d", url, self.stats.last_error, attempt)
                await self._notify()
                await asyncio.sleep(self._delay(attempt))
                continue
            attempt = 0
            self.stats.connects += 1
            try:
                await self._serve(conn, ws, url)
            except Exception as exc:  # a bug must not end the stream: log it and reconnect
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("websocket %s: unexpected failure; reconnecting", url)
            finally:
                with contextlib.suppress(Exception):
                    await ws.close()
            if not self._closed and conn.wanted:
                await asyncio.sleep(self._delay(1))

    async def _serve(self, conn: _Conn, ws: ClientConnection, url: str) -> None:
        """Subscribe ``ws`` to the connection's streams and read it; rotate it when it is old."""
        reader = asyncio.create_task(self._read(conn, ws))
        try:
            if not await self._adopt(conn, ws, reader):
                return
            while True:
                done, _ = await asyncio.wait({reader}, timeout=self._rotate_after_s)
                if done:
                    return  # lost: the caller reconnects
                # Rotation, make before break: the new connection is subscribed before the old
                # one goes; closed klines arriving on both are delivered once.
                try:
                    fresh = await self._open(url)
                except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
                    self.stats.last_error = _describe(url, exc)
                    continue  # keep the old one; try again after another period
                fresh_reader = asyncio.create_task(self._read(conn, fresh))
                if not await self._adopt(conn, fresh, fresh_reader, rotation=True):
                    fresh_reader.cancel()
                    with contextlib.suppress(Exception):
                        await fresh.close()
                    continue
                self.stats.rotations += 1
                old, ws, reader = ws, fresh, fresh_reader
                with contextlib.suppress(Exception):
                    await old.close()
                await self._notify()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            self._drop_answers(ws)
            if conn.live is ws or conn.live is None:
                conn.live = None
                conn.acked.clear()
                if not self._closed:
                    conn.down_ms = _wall_ms()
                    self.stats.disconnects += 1
                    await self._notify()
            with contextlib.suppress(Exception):
                await ws.close()

    async def _adopt(
        self, conn: _Conn, ws: ClientConnection, reader: asyncio.Task[None], rotation: bool = False
    ) -> bool:
        """Subscribe ``ws`` to everything ``conn`` wants; make it the live one when acked."""
        names = sorted(conn.wanted)
        previous, conn.live = conn.live, ws
        try:
            async with asyncio.timeout(self._ack_timeout_s * max(1, len(names) // 100 + 1)):
                for chunk in _chunks(names, 100):
                    await self._control(conn, ws, "SUBSCRIBE", chunk, wait=True)
        except (TimeoutError, ConnectionClosed, StreamClosed, StreamSubscriptionRejected) as exc:
            if isinstance(exc, StreamSubscriptionRejected):
                log.error("%s", exc)
            conn.live = previous if rotation else None
            self._drop_answers(ws)
            return False
        if conn.down_ms is not None and not rotation and conn.ever_up:
            self.stats.reconnects += 1
            resumes = [
                StreamResume(
                    name,
                    name.split("@", 1)[0].upper(),
                    self._intervals[(conn.market, name)].value,
                    self._last_open.get((conn.market, name)),
                    conn.down_ms,
                    _wall_ms(),
                )
                for name in names
                if (conn.market, name) in self._intervals
            ]
            conn.down_ms = None
            if self._on_reconnect is not None:
                _call(self._on_reconnect, conn.market, resumes)
        conn.ever_up = True
        conn.down_ms = None
        await self._notify()
        return True

    def _delay(self, attempt: int) -> float:
        initial, ceiling = self._backoff
        high = min(ceiling, initial * 2 ** min(attempt, 30))
        return self._rng.uniform(initial / 2, max(initial / 2, high))

    # Control messages ----------------------------------------------------------------------

    async def _control(
        self,
        conn: _Conn,
        ws: ClientConnection,
        method: str,
        params: list[str],
        *,
        wait: bool = False,
    ) -> None:
        """Send one JSON method under the per-connection rate; with ``wait``, await its answer."""
        loop = asyncio.get_running_loop()
        rate = self._rates[conn.market]
        async with conn.send_lock:
            while len(conn.sent) >= rate:
                age = loop.time() - conn.sent[0]
                if age >= 1.0 + _RATE_SLACK_S:
                    conn.sent.popleft()
                    continue
                await asyncio.sleep(1.0 + _RATE_SLACK_S - age)  # pacing, not synchronisation
            self._next_id += 1
            ident = self._next_id
            answer: asyncio.Future[None] = loop.create_future()
            answer.add_done_callback(_retrieve)  # an unawaited error answer is not "lost"
            self._pending[ident] = (conn, ws, params, method)
            self._answers[ident] = answer
            conn.sent.append(loop.time())
            self.stats.control_sent += 1
            try:
                await ws.send(
                    msgspec.json.encode({"method": method, "params": params, "id": ident}).decode()
                )
            except ConnectionClosed:
                self._pending.pop(ident, None)
                self._answers.pop(ident, None)
                if wait:
                    raise
                return
        if wait:
            await answer

    def _drop_answers(self, ws: ClientConnection) -> None:
        """Cancel the answers still awaited from a connection that is gone."""
        for ident, (_, sent_on, _, _) in list(self._pending.items()):
            if sent_on is ws:
                del self._pending[ident]
                answer = self._answers.pop(ident)
                if not answer.done():
                    answer.set_exception(StreamClosed("the connection was lost before it answered"))

    def _answered(self, env: _Envelope) -> None:
        ident = env.id
        if ident is None or ident not in self._pending:
            return
        conn, ws, params, method = self._pending.pop(ident)
        answer = self._answers.pop(ident)
        if env.error is not None:
            exc = StreamSubscriptionRejected(
                f"Binance answered {method} {params} on {conn.market.name} with error "
                f"{env.error.code}: {env.error.msg!r}; check the symbol and interval "
                "(stream names are <symbol lower case>@kline_<interval>)"
            )
            for name in params:
                if method == "SUBSCRIBE":  # never asked again: reconnecting would not help
                    conn.wanted.discard(name)
                    self._intervals.pop((conn.market, name), None)
                for future in self._waiters.pop((conn.market, name), []):
                    if not future.done():
                        future.set_exception(exc)
            if not answer.done():
                answer.set_exception(exc)
            return
        if method == "SUBSCRIBE" and conn.live is ws:
            for name in params:
                if name in conn.wanted:
                    conn.acked.add(name)
                    for future in self._waiters.pop((conn.market, name), []):
                        if not future.done():
                            future.set_result(None)
        if not answer.done():
            answer.set_result(None)

    # Reading -------------------------------------------------------------------------------

    async def _read(self, conn: _Conn, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                received_ns = time.time_ns()
                self.stats.messages += 1
                try:
                    _, event, env = decode_message(raw)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    self.stats.invalid_messages += 1
                    log.warning(
                        "websocket %s: skipped a message that is not Binance's: %s",
                        conn.market.name,
                        exc,
                    )
                    continue
                if event is None:
                    self._answered(env)
                    continue
                if not event.k.x:
                    self.stats.forming += 1
                    await self._notify()
                    continue
                await self._deliver(conn.market, event, received_ns)
        except ConnectionClosed as exc:
            self.stats.last_error = f"connection closed: {exc}"

    async def _deliver(self, market: MarketType, event: WireKlineEvent, received_ns: int) -> None:
        name = stream_name(event.k.s, event.k.i)
        key = (market, name)
        interval = self._intervals.get(key)
        if interval is None:
            return  # unsubscribed (or never asked): nothing of it is delivered
        last = self._last_open.get(key)
        open_ms = event.k.t
        if last is not None and open_ms <= last:
            if open_ms == last:
                self.stats.duplicates += 1
            else:
                self.stats.stale += 1
            return
        if last is not None:
            expected = interval.next_open_ms(last)
            if open_ms > expected:
                self.stats.gaps += 1
                if self._on_gap is not None:
                    _call(self._on_gap, StreamGap(market, name, expected, open_ms))
        self._last_open[key] = open_ms
        kline = closed_kline(market, event, received_ns)
        self.stats.delivered += 1
        if self._on_kline is not None:
            _call(self._on_kline, kline)
        else:
            self._queue.put_nowait(kline)
        await self._notify()


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _describe(url: str, exc: BaseException) -> str:
    if isinstance(exc, InvalidStatus):
        return f"{url} refused the websocket handshake with HTTP {exc.response.status_code}"
    if isinstance(exc, TimeoutError):
        return f"{url} did not complete the websocket handshake in time"
    return f"{url}: {type(exc).__name__}: {exc}"


def _call(fn: Callable[..., Any], *args: Any) -> None:
    """Run a user callback; a failure is logged, never breaks the stream."""
    try:
        result = fn(*args)
        if asyncio.iscoroutine(result):
            asyncio.ensure_future(result).add_done_callback(_log_failure)
    except Exception:
        log.exception("a KlineStreams callback failed")


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("KlineStreams task failed: %r", task.exception())
