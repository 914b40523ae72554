"""One websocket of the kline streams: pacing, acknowledgements, rotation, reconnects.

A :class:`StreamConnection` carries up to ``max_streams_per_connection`` streams of one market
for :class:`~nautilus_dsm.dsm.streams.KlineStreams`. It subscribes with the ``SUBSCRIBE`` /
``UNSUBSCRIBE`` JSON methods under the incoming-message limit (:data:`SEND_RATES`), matches each
answer to its request id, sends its own keepalive pings (the library answers the server's),
replaces its socket before Binance's 24 h cut-off (make before break: the new socket is
subscribed before the old one closes), and reconnects a lost one with jittered exponential
backoff. What it reads goes to its :class:`StreamHost` (the subscription bookkeeping): closed
klines, acknowledgements, rejections and reconnects.

The transport is isolated in :meth:`StreamConnection._open` should ``picows`` be worth it later
(the client choice is explained in :mod:`nautilus_dsm.dsm.streams`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from nautilus_dsm.common import ENDPOINTS, MarketType
from nautilus_dsm.dsm.exchange_clock import wall_clock_ms
from nautilus_dsm.dsm.stream_wire import WireEnvelope, WireKlineEvent, decode_message
from nautilus_dsm.errors import InvalidInput, StreamClosed, StreamSubscriptionRejected

log = logging.getLogger(__name__)

# Binance's incoming-message limits are 5 (spot) / 10 (futures) per second and connection; one
# slot is kept for pongs and pings, which count too.
SEND_RATES: dict[MarketType, int] = {
    MarketType.SPOT: 4,
    MarketType.FUTURES_USDT: 8,
    MarketType.FUTURES_COIN: 8,
}
ROTATE_AFTER_S = 23 * 3600.0  # Binance cuts at 24 h
_RATE_SLACK_S = 0.05  # keeps our 1 s window ahead of the server's (network jitter)
_SUBSCRIBE_CHUNK = 100  # streams named by one SUBSCRIBE when a socket is (re)subscribed


def ws_base_url(
    market: MarketType | str, base_url_ws: str | Mapping[Any, str] | None = None
) -> str:
    """Return the raw ``/ws`` endpoint of ``market``.

    ``base_url_ws``: None (Binance's), a mapping market -> URL (missing markets use Binance's),
    a template containing ``{market}`` (``spot``, ``futures/um``, ``futures/cm``), or one URL
    for every market.
    """
    market = MarketType.parse(market)
    endpoints = ENDPOINTS[market]
    if base_url_ws is None:
        return endpoints.ws_url
    if isinstance(base_url_ws, Mapping):
        for key, url in base_url_ws.items():
            if MarketType.parse(key) is market:
                return _check_url(str(url))
        return endpoints.ws_url
    if "{market}" in base_url_ws:
        return _check_url(base_url_ws.replace("{market}", endpoints.path_segment))
    return _check_url(base_url_ws)


def _check_url(url: str) -> str:
    if not url.startswith(("ws://", "wss://")):
        raise InvalidInput(
            f"base_url_ws {url!r} is not a websocket URL; use ws://host:port/path or "
            "wss://host:port/path (e.g. wss://stream.binance.com:9443/ws)"
        )
    return url.rstrip("/")


@dataclass
class StreamStats:
    """Counters of a :class:`~nautilus_dsm.dsm.streams.KlineStreams`; they only grow."""

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


@dataclass(frozen=True)
class ConnectionSettings:
    """The knobs of one market's connections (see ``KlineStreams`` for each)."""

    url: str
    send_rate: int
    rotate_after_s: float
    backoff_initial_s: float
    backoff_max_s: float
    open_timeout_s: float
    ack_timeout_s: float
    ping_interval_s: float | None


class StreamHost(Protocol):
    """The receiver of what a connection reads: the bookkeeping of ``KlineStreams``."""

    @property
    def closed(self) -> bool:
        """True once the host was closed: connections stop reconnecting."""
        ...

    async def notify(self) -> None:
        """Wake the waiters of a state change."""
        ...

    async def deliver(self, market: MarketType, event: WireKlineEvent, received_ns: int) -> None:
        """Take a closed kline event read at ``received_ns``."""
        ...

    def acknowledged(self, market: MarketType, name: str) -> None:
        """Handle the server's acknowledgement of the subscription of stream ``name``."""
        ...

    def rejected(
        self, market: MarketType, name: str, error: StreamSubscriptionRejected, forget: bool
    ) -> None:
        """Handle the server's error answer for ``name``; ``forget``: never ask for it again."""
        ...

    def reconnected(self, market: MarketType, names: list[str], down_ms: int) -> None:
        """Handle a lost connection that is back, re-subscribed to ``names``.

        It was lost at ``down_ms``.
        """
        ...


class StreamConnection:
    """One market connection: the streams it carries and the socket that serves them.

    Parameters
    ----------
    market, index
        Its market and its position among the market's connections (names its task).
    settings
        URL, pacing, timeouts, rotation age and reconnect backoff.
    host
        Receives what the connection reads (see :class:`StreamHost`).
    stats
        The counters shared by every connection of the host.
    ids
        Request ids, shared by every connection of the host (each id is used once).
    rng
        Source of the backoff jitter.
    """

    def __init__(
        self,
        market: MarketType,
        index: int,
        settings: ConnectionSettings,
        host: StreamHost,
        stats: StreamStats,
        ids: Iterator[int],
        rng: random.Random,
    ) -> None:
        self.market = market
        self.index = index
        self.wanted: set[str] = set()  # streams it carries
        self.acked: set[str] = set()  # of those, acknowledged on the live socket
        self.live: ClientConnection | None = None
        self.task: asyncio.Task[None] | None = None
        self.down_ms: int | None = None  # wall-clock ms the live socket was lost
        self.ever_up = False
        self._settings = settings
        self._host = host
        self._stats = stats
        self._ids = ids
        self._rng = rng
        self._sent: deque[float] = deque()
        self._send_lock = asyncio.Lock()
        self._pending: dict[int, tuple[ClientConnection, list[str], str]] = {}
        self._answers: dict[int, asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # Streams -------------------------------------------------------------------------------

    def add(self, name: str) -> None:
        """Carry stream ``name``: start the connection, or subscribe it on the live socket."""
        self.wanted.add(name)
        if self.task is None:
            self.task = asyncio.create_task(
                self._run(), name=f"ws-{self.market.value}-{self.index}"
            )
        elif self.live is not None:
            self._spawn(self._control(self.live, "SUBSCRIBE", [name]))

    def discard(self, name: str) -> None:
        """Stop carrying stream ``name`` (nothing of it is delivered from now on)."""
        self.wanted.discard(name)
        self.acked.discard(name)

    async def unsubscribe(self, name: str) -> None:
        """Send ``UNSUBSCRIBE`` for ``name`` on the live socket and wait for the answer.

        A lost socket unsubscribes too (the next one is never subscribed to it), so a lost
        socket, a lost answer or a late one are not errors.
        """
        if self.live is None:
            return
        with contextlib.suppress(ConnectionClosed, StreamClosed, TimeoutError):
            async with asyncio.timeout(self._settings.ack_timeout_s):
                await self._control(self.live, "UNSUBSCRIBE", [name], wait=True)

    async def stop(self) -> None:
        """End the connection's task (and with it the socket)."""
        if self.task is None:
            return
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(log_failure)

    # Connection life -----------------------------------------------------------------------

    async def _open(self, url: str) -> ClientConnection:
        # The transport: swap here for another client. Server pings are answered by the library.
        return await connect(
            url,
            open_timeout=self._settings.open_timeout_s,
            # Our own pings find a connection that died silently (no FIN); one per interval
            # counts toward Binance's message limit, which SEND_RATES leaves room for.
            ping_interval=self._settings.ping_interval_s,
            ping_timeout=self._settings.ping_interval_s,
            close_timeout=1.0,
            compression=None,
            max_queue=None,
            max_size=2**22,
        )

    async def _run(self) -> None:
        url = self._settings.url
        attempt = 0
        while not self._host.closed and self.wanted:
            try:
                ws = await self._open(url)
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
                attempt += 1
                self._stats.connect_failures += 1
                self._stats.last_error = _describe(url, exc)
                log.warning("websocket %s: %s; retry %d", url, self._stats.last_error, attempt)
                await self._host.notify()
                await asyncio.sleep(self._delay(attempt))
                continue
            attempt = 0
            self._stats.connects += 1
            try:
                await self._serve(ws, url)
            except Exception as exc:  # a bug must not end the stream: log it and reconnect
                self._stats.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("websocket %s: unexpected failure; reconnecting", url)
            finally:
                with contextlib.suppress(Exception):
                    await ws.close()
            if not self._host.closed and self.wanted:
                await asyncio.sleep(self._delay(1))

    async def _serve(self, ws: ClientConnection, url: str) -> None:
        """Subscribe ``ws`` to the connection's streams and read it; rotate it when it is old."""
        reader = asyncio.create_task(self._read(ws))
        try:
            if not await self._adopt(ws, reader):
                return
            while True:
                done, _ = await asyncio.wait({reader}, timeout=self._settings.rotate_after_s)
                if done:
                    return  # lost: the caller reconnects
                # Rotation, make before break: the new connection is subscribed before the old
                # one goes; closed klines arriving on both are delivered once.
                try:
                    fresh = await self._open(url)
                except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
                    self._stats.last_error = _describe(url, exc)
                    continue  # keep the old one; try again after another period
                fresh_reader = asyncio.create_task(self._read(fresh))
                if not await self._adopt(fresh, fresh_reader, rotation=True):
                    fresh_reader.cancel()
                    with contextlib.suppress(Exception):
                        await fresh.close()
                    continue
                self._stats.rotations += 1
                old, ws, reader = ws, fresh, fresh_reader
                with contextlib.suppress(Exception):
                    await old.close()
                await self._host.notify()
        finally:
            await self._lost(ws, reader)

    async def _lost(self, ws: ClientConnection, reader: asyncio.Task[None]) -> None:
        """``ws`` is done with: stop reading it, fail its answers, mark the connection down."""
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
        self._drop_answers(ws)
        if self.live is ws or self.live is None:
            self.live = None
            self.acked.clear()
            if not self._host.closed:
                self.down_ms = wall_clock_ms()
                self._stats.disconnects += 1
                await self._host.notify()
        with contextlib.suppress(Exception):
            await ws.close()

    async def _adopt(
        self, ws: ClientConnection, reader: asyncio.Task[None], rotation: bool = False
    ) -> bool:
        """Subscribe ``ws`` to everything the connection wants; make it the live one when acked."""
        names = sorted(self.wanted)
        previous, self.live = self.live, ws
        chunks = [names[i : i + _SUBSCRIBE_CHUNK] for i in range(0, len(names), _SUBSCRIBE_CHUNK)]
        try:
            budget = self._settings.ack_timeout_s * max(1, len(names) // _SUBSCRIBE_CHUNK + 1)
            async with asyncio.timeout(budget):
                for chunk in chunks:
                    await self._control(ws, "SUBSCRIBE", chunk, wait=True)
        except (TimeoutError, ConnectionClosed, StreamClosed, StreamSubscriptionRejected) as exc:
            if isinstance(exc, StreamSubscriptionRejected):
                log.error("%s", exc)
            self.live = previous if rotation else None
            self._drop_answers(ws)
            return False
        if self.down_ms is not None and not rotation and self.ever_up:
            self._stats.reconnects += 1
            down_ms, self.down_ms = self.down_ms, None
            self._host.reconnected(self.market, names, down_ms)
        self.ever_up = True
        self.down_ms = None
        await self._host.notify()
        return True

    def _delay(self, attempt: int) -> float:
        initial, ceiling = self._settings.backoff_initial_s, self._settings.backoff_max_s
        high = min(ceiling, initial * 2 ** min(attempt, 30))
        return self._rng.uniform(initial / 2, max(initial / 2, high))

    # Control messages ----------------------------------------------------------------------

    async def _control(
        self, ws: ClientConnection, method: str, params: list[str], *, wait: bool = False
    ) -> None:
        """Send one JSON method under the per-connection rate; with ``wait``, await its answer."""
        loop = asyncio.get_running_loop()
        rate = self._settings.send_rate
        async with self._send_lock:
            while len(self._sent) >= rate:
                age = loop.time() - self._sent[0]
                if age >= 1.0 + _RATE_SLACK_S:
                    self._sent.popleft()
                    continue
                await asyncio.sleep(1.0 + _RATE_SLACK_S - age)  # pacing, not synchronisation
            ident = next(self._ids)
            answer: asyncio.Future[None] = loop.create_future()
            answer.add_done_callback(_retrieve)  # an unawaited error answer is not "lost"
            self._pending[ident] = (ws, params, method)
            self._answers[ident] = answer
            self._sent.append(loop.time())
            self._stats.control_sent += 1
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
        for ident, (sent_on, _, _) in list(self._pending.items()):
            if sent_on is ws:
                del self._pending[ident]
                answer = self._answers.pop(ident)
                if not answer.done():
                    answer.set_exception(StreamClosed("the connection was lost before it answered"))

    def _answered(self, env: WireEnvelope) -> None:
        ident = env.id
        if ident is None or ident not in self._pending:
            return
        ws, params, method = self._pending.pop(ident)
        answer = self._answers.pop(ident)
        if env.error is not None:
            exc = StreamSubscriptionRejected(
                f"Binance answered {method} {params} on {self.market.name} with error "
                f"{env.error.code}: {env.error.msg!r}; check the symbol and interval "
                "(stream names are <symbol lower case>@kline_<interval>)"
            )
            for name in params:
                forget = method == "SUBSCRIBE"  # never asked again: reconnecting would not help
                if forget:
                    self.wanted.discard(name)
                self._host.rejected(self.market, name, exc, forget)
            if not answer.done():
                answer.set_exception(exc)
            return
        if method == "SUBSCRIBE" and self.live is ws:
            for name in params:
                if name in self.wanted:
                    self.acked.add(name)
                    self._host.acknowledged(self.market, name)
        if not answer.done():
            answer.set_result(None)

    # Reading -------------------------------------------------------------------------------

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                received_ns = time.time_ns()
                self._stats.messages += 1
                try:
                    _, event, env = decode_message(raw)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    self._stats.invalid_messages += 1
                    log.warning(
                        "websocket %s: skipped a message that is not Binance's: %s",
                        self.market.name,
                        exc,
                    )
                    continue
                if event is None:
                    self._answered(env)
                    continue
                if not event.k.x:
                    self._stats.forming += 1
                    await self._host.notify()
                    continue
                await self._host.deliver(self.market, event, received_ns)
        except ConnectionClosed as exc:
            self._stats.last_error = f"connection closed: {exc}"


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _describe(url: str, exc: BaseException) -> str:
    if isinstance(exc, InvalidStatus):
        return f"{url} refused the websocket handshake with HTTP {exc.response.status_code}"
    if isinstance(exc, TimeoutError):
        return f"{url} did not complete the websocket handshake in time"
    return f"{url}: {type(exc).__name__}: {exc}"


def log_failure(task: asyncio.Future[Any]) -> None:
    """Log the exception a finished task ended with (a done callback; cancelled is fine)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("KlineStreams task failed: %r", task.exception())
