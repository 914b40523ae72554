"""The websocket side of the Binance imitation: kline market streams on 127.0.0.1.

Serves ``<symbol>@kline_<interval>`` JSON market streams of the three markets with Binance's
message format, push cadence, subscription methods, error answers, incoming-message rate limit
and server pings, from the same closed-form generator (and the same clock, recorded klines and
gaps) as the REST imitation, so a closed message equals REST's final kline to the last digit and
a forming message equals REST's forming kline at the same instant.

Paths (``ws://127.0.0.1:PORT`` + ...; ``srv.ws_base_url(market)`` gives the raw endpoint):

========================  ==============================  ==========================
market                    raw (then ``SUBSCRIBE``)        combined
========================  ==============================  ==========================
SPOT                      ``/spot/ws`` [``/<stream>``]    ``/spot/stream?streams=a/b``
FUTURES_USDT              ``/futures/um/market/ws``       ``/futures/um/market/stream``
                          (alias ``/futures/um/ws``)      (alias ``/futures/um/stream``)
FUTURES_COIN              ``/futures/cm/ws``              ``/futures/cm/stream``
========================  ==============================  ==========================

so ``ws://127.0.0.1:PORT/{market}/ws`` with ``{market}`` = ``spot`` / ``futures/um`` /
``futures/cm`` is a template for all three. The combined form wraps each event as
``{"stream": name, "data": event}``.

Semantics imitated: pushes every 250 ms (futures), 1 s (spot ``1s``), 2 s (other spot
intervals); the closed message (``k.x == true``, final values) is sent right at the close in the
imitation's clock; a well-formed stream of an unlisted symbol is accepted (``result: null``) and
never sends anything, as Binance does; a malformed name is answered
``{"error": {"code": 2, "msg": "Invalid request: invalid stream"}, "id": n}``. More than 5
(spot) / 10 (futures) incoming text messages on one connection within one second closes it
(code 1008). The server pings every ``ping_interval_s`` and closes a connection whose pong does
not come within ``ping_timeout_s``; a connection older than ``max_age_s`` is closed (Binance's
24 h cut-off). Trade ids ``f``/``L`` are synthetic (``f = open_ms // 10``, ``L = f + n - 1``).

The protocol's pure parts (paths, cadence, limits, events, method answers) are in
:mod:`nautilus_dsm.testing.ws_protocol`; this module is the server that speaks it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import zlib
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import msgspec
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

import nautilus_dsm.testing.klines as klines
from nautilus_dsm.common import Interval, MarketType
from nautilus_dsm.testing.ws_protocol import (
    BASE_PATHS,
    MESSAGE_LIMITS,
    METHODS,
    STREAM_RE,
    cadence_s,
    error_answer,
    kline_events,
    parse_request,
    route,
    valid_stream,
)

if TYPE_CHECKING:
    from nautilus_dsm.testing.server import BinanceImitation

_MAX_CATCH_UP = 1000  # closed bars sent at most per stream and wake (a clock that jumps far)


@dataclass
class WsConfig:
    """Knobs of the imitation's websocket server (Binance's values by default)."""

    ping_interval_s: float = 20.0
    ping_timeout_s: float = 60.0
    max_age_s: float = 24 * 3600.0
    port: int = 0
    # True: the closed message goes out at the first push tick after the close (as Binance's,
    # 0..cadence late, ~cadence/2 on average); False: right at the close.
    closed_on_cadence: bool = False


@dataclass
class WsFaults:
    """Fault switches of the kline streams; read on every push, flip them while it runs.

    Attributes
    ----------
    drop_closed
        ``(stream, open_ms)``: that bar's closed message (``x: true``) is never sent.
    closed_delay_s
        Every closed message is sent this late (forming messages keep their cadence).
    never_close
        Stream names that never send ``x: true`` (forming updates go on).
    refuse
        The handshake of every new connection is answered HTTP 503.
    disconnect_after
        Each connection is cut (TCP abort, no close frame) after sending this many events.
    silent
        Connections stay open but no event is pushed (answers to methods still are).
    reject_streams
        A SUBSCRIBE naming one of these is answered ``invalid stream`` (code 2).
    """

    drop_closed: set[tuple[str, int]] = field(default_factory=set)
    closed_delay_s: float = 0.0
    never_close: set[str] = field(default_factory=set)
    refuse: bool = False
    disconnect_after: int | None = None
    silent: bool = False
    reject_streams: set[str] = field(default_factory=set)

    def reset(self) -> None:
        """Switch every fault off."""
        fresh = WsFaults()
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(fresh, name))


@dataclass
class WsStats:
    """What the imitation saw; counters only grow."""

    connections: int = 0
    refused: int = 0
    rate_disconnects: int = 0
    age_disconnects: int = 0
    fault_disconnects: int = 0
    pings: int = 0
    pongs: int = 0
    requests: list[tuple[int, str]] = field(default_factory=list)  # (connection id, text)
    closed_sent: list[tuple[str, int]] = field(default_factory=list)  # (stream, open_ms)
    max_messages_per_s: int = 0  # highest incoming count in one 1 s window, any connection


@dataclass(eq=False)
class _Conn:
    ident: int
    ws: ServerConnection
    market: MarketType
    combined: bool
    streams: set[str] = field(default_factory=set)
    sent: int = 0
    received: deque[float] = field(default_factory=deque)


@dataclass(eq=False)
class _Stream:
    name: str
    market: MarketType
    symbol: str
    interval: Interval
    open_ms: int
    next_push: float
    subscribers: set[_Conn] = field(default_factory=set)


class KlineStreamServer:
    """The imitation's websocket server, in a daemon thread with its own asyncio loop."""

    def __init__(self, imitation: BinanceImitation, config: WsConfig | None = None) -> None:
        self._imitation = imitation
        self.config = config or WsConfig()
        self.faults = WsFaults()
        self.stats = WsStats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Server | None = None
        self._port = 0
        self._conns: set[_Conn] = set()
        self._streams: dict[tuple[MarketType, str], _Stream] = {}
        self._wake: asyncio.Event | None = None
        self._next_id = 0
        self._tasks: set[asyncio.Future[Any]] = set()

    # Lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the server on its own thread and wait (10 s at most) until it listens."""
        if self._thread is not None:
            return
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="binance-imitation-ws", daemon=True
        )
        self._thread.start()
        if not ready.wait(timeout=10) or self._server is None:
            raise RuntimeError("the imitation's websocket server did not start within 10 s")

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._wake = asyncio.Event()

        async def open_server() -> Server:
            return await serve(
                self._handle,
                "127.0.0.1",
                self.config.port,
                process_request=self._process_request,
                ping_interval=None,  # our own pinger counts pongs
                compression=None,
                max_queue=None,
            )

        try:
            self._server = loop.run_until_complete(open_server())
            self._port = self._server.sockets[0].getsockname()[1]
            pusher = loop.create_task(self._pusher())
            ready.set()
            loop.run_until_complete(self._server.wait_closed())
            pusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(pusher)
        finally:
            ready.set()
            loop.close()

    def stop(self) -> None:
        """Close the server, abort every open connection and join its thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def close() -> None:
            if self._server is not None:
                self._server.close()
                for conn in list(self._conns):
                    conn.ws.transport.abort()

        with contextlib.suppress(RuntimeError):
            asyncio.run_coroutine_threadsafe(close(), loop).result(timeout=5)
        thread.join(timeout=5)
        self._thread = None

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:PORT``."""
        if self._thread is None:
            raise RuntimeError("the imitation's websocket server is not running")
        return f"ws://127.0.0.1:{self._port}"

    def base_url(self, market: MarketType | str) -> str:
        """Return the raw ``/ws`` endpoint of ``market`` (subscribe with the JSON methods)."""
        return self.url + BASE_PATHS[MarketType.parse(market)]

    def disconnect_all(self) -> int:
        """Cut every open connection now (TCP abort); returns how many were cut."""
        loop = self._loop
        if loop is None:
            return 0

        async def cut() -> int:
            conns = list(self._conns)
            for conn in conns:
                self.stats.fault_disconnects += 1
                conn.ws.transport.abort()
            return len(conns)

        return asyncio.run_coroutine_threadsafe(cut(), loop).result(timeout=5)

    def subscriptions(self) -> list[set[str]]:
        """Return the streams of every open connection (a snapshot)."""
        return [set(conn.streams) for conn in list(self._conns)]

    # Handshake and connection -------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if self.faults.refuse:
            self.stats.refused += 1
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "Service Unavailable\n")
        if route(request.path) is None:
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        routed = route(ws.request.path if ws.request else "")
        if routed is None:
            return
        market, combined, initial = routed
        self._next_id += 1
        conn = _Conn(self._next_id, ws, market, combined)
        self._conns.add(conn)
        self.stats.connections += 1
        for name in initial:
            if self._stream_key(market, name) is not None:
                self._add(conn, name)
        pinger = asyncio.create_task(self._pinger(conn))
        loop = asyncio.get_running_loop()
        ager = loop.call_later(self.config.max_age_s, self._age_out, conn)
        try:
            async for message in ws:
                now = loop.time()
                conn.received.append(now)
                while conn.received and now - conn.received[0] >= 1.0:
                    conn.received.popleft()
                count = len(conn.received)
                self.stats.max_messages_per_s = max(self.stats.max_messages_per_s, count)
                text = message if isinstance(message, str) else message.decode(errors="replace")
                self.stats.requests.append((conn.ident, text))
                if count > MESSAGE_LIMITS[market]:
                    self.stats.rate_disconnects += 1
                    await ws.close(1008, "Too many requests")
                    break
                answer = self._method(conn, text)
                await ws.send(answer.decode())
        except ConnectionClosed:
            pass
        finally:
            ager.cancel()
            pinger.cancel()
            self._conns.discard(conn)
            for name in list(conn.streams):
                self._remove(conn, name)

    def _age_out(self, conn: _Conn) -> None:
        self.stats.age_disconnects += 1
        self._spawn(conn.ws.close(1000, "connection lifetime reached"))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pinger(self, conn: _Conn) -> None:
        while True:
            await asyncio.sleep(self.config.ping_interval_s)
            try:
                waiter = await conn.ws.ping()
                self.stats.pings += 1
                await asyncio.wait_for(waiter, self.config.ping_timeout_s)
                self.stats.pongs += 1
            except TimeoutError:
                await conn.ws.close(1008, "pong timeout")
                return
            except ConnectionClosed:
                return

    # JSON methods -------------------------------------------------------------------------

    def _method(self, conn: _Conn, text: str) -> bytes:
        parsed = parse_request(text)
        if isinstance(parsed, bytes):
            return parsed
        ident, method, params = parsed
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                return error_answer(2, "Invalid request: invalid stream", ident)
            rejected = method == "SUBSCRIBE" and any(
                p in self.faults.reject_streams for p in params
            )
            if rejected or any(
                self._stream_key(conn.market, p) is None and not valid_stream(p) for p in params
            ):
                return error_answer(2, "Invalid request: invalid stream", ident)
            for name in params:
                if method == "SUBSCRIBE":
                    self._add(conn, name)
                else:
                    self._remove(conn, name)
            return msgspec.json.encode({"result": None, "id": ident})
        if method == "LIST_SUBSCRIPTIONS":
            return msgspec.json.encode({"result": sorted(conn.streams), "id": ident})
        if method == "GET_PROPERTY":
            return msgspec.json.encode({"result": conn.combined, "id": ident})
        if method == "SET_PROPERTY":
            if (
                not isinstance(params, list)
                or len(params) != 2
                or params[0] != "combined"
                or not isinstance(params[1], bool)
            ):
                return error_answer(1, "Invalid value type: expected Boolean", ident)
            conn.combined = params[1]
            return msgspec.json.encode({"result": None, "id": ident})
        return error_answer(
            2, f"Invalid request: unknown variant `{method}`, expected one of {METHODS}", ident
        )

    def _stream_key(self, market: MarketType, name: str) -> tuple[str, Interval] | None:
        """``(SYMBOL, interval)`` of a stream this market serves data for, else None."""
        match = STREAM_RE.match(name)
        if match is None:
            return None
        try:
            interval = Interval.parse(match["interval"])
            interval.check_market(market)
        except ValueError:
            return None
        symbol = match["symbol"].upper()
        if symbol not in self._imitation.symbols(market):
            return None
        return symbol, interval

    def _add(self, conn: _Conn, name: str) -> None:
        if name in conn.streams:
            return
        conn.streams.add(name)
        key = self._stream_key(conn.market, name)
        if key is None:  # well-formed but unlisted: accepted, never sends (as Binance)
            return
        stream = self._streams.get((conn.market, name))
        if stream is None:
            symbol, interval = key
            loop = asyncio.get_running_loop()
            now = self._imitation.now_ms()
            period = cadence_s(conn.market, interval)
            # On cadence, each stream ticks at its own phase (stable per name), so closed
            # messages of streams subscribed together are not late by one shared amount.
            phase = zlib.crc32(name.encode()) % 1000 / 1000 if self.config.closed_on_cadence else 1
            stream = _Stream(
                name,
                conn.market,
                symbol,
                interval,
                interval.floor_ms(now),
                loop.time() + period * phase,
            )
            self._streams[(conn.market, name)] = stream
        stream.subscribers.add(conn)
        if self._wake is not None:
            self._wake.set()

    def _remove(self, conn: _Conn, name: str) -> None:
        conn.streams.discard(name)
        stream = self._streams.get((conn.market, name))
        if stream is not None:
            stream.subscribers.discard(conn)
            if not stream.subscribers:
                del self._streams[(conn.market, name)]

    # Pushes -------------------------------------------------------------------------------

    async def _pusher(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wake is not None
        while True:
            now_loop = loop.time()
            now = self._imitation.now_ms()
            wait = 1.0
            on_cadence = self.config.closed_on_cadence
            for stream in list(self._streams.values()):
                current = stream.interval.floor_ms(now)
                tick = stream.next_push <= now_loop
                closed = current > stream.open_ms
                if closed and (tick or not on_cadence):
                    await self._push_closed(stream, current, now)
                if tick:
                    if not (closed and on_cadence):  # this tick carried the closed message
                        await self._push_forming(stream, now)
                    period = cadence_s(stream.market, stream.interval)
                    stream.next_push = max(stream.next_push + period, now_loop + period / 2)
                close_in = (stream.interval.next_open_ms(stream.open_ms) - now) / 1000
                if on_cadence:
                    close_in = wait  # closes go out on ticks: no wake at the close itself
                wait = min(wait, stream.next_push - now_loop, close_in)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0005, wait + 0.0005))

    def _raw(self, stream: _Stream, lo: int, hi: int, now_ms: int | None) -> Any:
        imitation = self._imitation
        spec = imitation.symbols(stream.market).get(stream.symbol)
        if spec is None:
            return None
        raw = imitation.series.select(
            stream.market, spec, stream.interval, lo, hi, None, now_ms=now_ms
        )
        return raw, klines.kline_spec(spec, stream.market)

    async def _push_closed(self, stream: _Stream, current: int, now: int) -> None:
        opens_from = stream.open_ms
        stream.open_ms = current
        if stream.name in self.faults.never_close:
            return
        got = self._raw(stream, opens_from, current - 1, None)
        if got is None:
            return
        raw, ks = got
        events = kline_events(
            raw.tail(_MAX_CATCH_UP), ks, stream.symbol, stream.interval, True, now
        )
        for event in events:
            key = (stream.name, event["k"]["t"])
            if key in self.faults.drop_closed:
                continue
            delay = self.faults.closed_delay_s
            if delay > 0:
                asyncio.get_running_loop().call_later(
                    delay, lambda s=stream, e=event: self._spawn(self._send(s, e, True))
                )
            else:
                await self._send(stream, event, True)

    async def _push_forming(self, stream: _Stream, now: int) -> None:
        got = self._raw(stream, stream.open_ms, stream.open_ms, now)
        if got is None:
            return
        raw, ks = got
        for event in kline_events(raw, ks, stream.symbol, stream.interval, False, now):
            await self._send(stream, event, False)

    async def _send(self, stream: _Stream, event: dict[str, Any], closed: bool) -> None:
        if self.faults.silent:
            return
        if closed:
            self.stats.closed_sent.append((stream.name, event["k"]["t"]))
        raw = msgspec.json.encode(event).decode()
        wrapped: str | None = None
        for conn in list(stream.subscribers):
            if conn.combined:
                if wrapped is None:
                    wrapped = f'{{"stream":"{stream.name}","data":{raw}}}'
                text = wrapped
            else:
                text = raw
            try:
                await conn.ws.send(text)
            except ConnectionClosed:
                continue
            conn.sent += 1
            limit = self.faults.disconnect_after
            if limit is not None and conn.sent >= limit:
                self.stats.fault_disconnects += 1
                conn.ws.transport.abort()
