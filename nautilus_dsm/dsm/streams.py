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
isolated in :meth:`StreamConnection._open` should ``picows`` be worth it later.

Layout: :mod:`.stream_wire` (the message structs, decoding, :class:`ClosedKline`,
:func:`klines_to_frame`), :mod:`.stream_connection` (one websocket: pacing, acknowledgements,
rotation, reconnects) and this module (subscriptions, delivery in order, gaps, reconnects
reported for backfill). The public names of all three are importable from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from nautilus_dsm.common import Interval, MarketType, check_binance_symbol
from nautilus_dsm.dsm.exchange_clock import wall_clock_ms
from nautilus_dsm.dsm.stream_connection import (
    ROTATE_AFTER_S,
    SEND_RATES,
    ConnectionSettings,
    StreamConnection,
    StreamStats,
    log_failure,
    ws_base_url,
)
from nautilus_dsm.dsm.stream_wire import (
    ClosedKline,
    WireEnvelope,
    WireError,
    WireKline,
    WireKlineEvent,
    closed_kline,
    decode_message,
    klines_to_frame,
    stream_name,
)
from nautilus_dsm.errors import InvalidInput, StreamClosed, StreamSubscriptionRejected

__all__ = [
    "MAX_STREAMS_PER_CONNECTION",
    "ROTATE_AFTER_S",
    "SEND_RATES",
    "ClosedKline",
    "KlineStreams",
    "StreamGap",
    "StreamResume",
    "StreamStats",
    "WireEnvelope",
    "WireError",
    "WireKline",
    "WireKlineEvent",
    "closed_kline",
    "decode_message",
    "klines_to_frame",
    "stream_name",
    "ws_base_url",
]

log = logging.getLogger(__name__)

MAX_STREAMS_PER_CONNECTION = 200


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


# ----------------------------------------------------------------------------------------------
# The manager
# ----------------------------------------------------------------------------------------------


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
        rates = {**SEND_RATES, **(send_rates or {})}
        self._settings = {
            # A bad URL fails here, not at the first connect.
            market: ConnectionSettings(
                url=ws_base_url(market, base_url_ws),
                send_rate=rates[market],
                rotate_after_s=rotate_after_s,
                backoff_initial_s=backoff_initial_s,
                backoff_max_s=backoff_max_s,
                open_timeout_s=open_timeout_s,
                ack_timeout_s=ack_timeout_s,
                ping_interval_s=ping_interval_s,
            )
            for market in MarketType
        }
        self._on_kline = on_kline
        self._on_reconnect = on_reconnect
        self._on_gap = on_gap
        self._max_streams = max_streams_per_connection
        self._rng = rng or random.Random()
        self._ids = itertools.count(1)  # request ids, unique across connections
        self.stats = StreamStats()
        self._conns: dict[MarketType, list[StreamConnection]] = {m: [] for m in MarketType}
        self._intervals: dict[tuple[MarketType, str], Interval] = {}
        self._last_open: dict[tuple[MarketType, str], int] = {}
        self._waiters: dict[tuple[MarketType, str], list[asyncio.Future[None]]] = {}
        self._queue: asyncio.Queue[ClosedKline] = asyncio.Queue()
        self._changed = asyncio.Condition()
        self._closed = False

    # Public API ----------------------------------------------------------------------------

    def streams(self, market: MarketType | str | None = None) -> list[str]:
        """Return the subscribed stream names (of one market, or all), sorted."""
        markets = list(MarketType) if market is None else [MarketType.parse(market)]
        return sorted(s for m in markets for c in self._conns[m] for s in c.wanted)

    def connections(self, market: MarketType | str) -> list[list[str]]:
        """Return the streams of each connection of ``market`` (sorted)."""
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
            self._intervals[key] = interval
            self._conn_with_room(market).add(name)
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
        conn.discard(name)
        self._last_open.pop((market, name), None)
        self._intervals.pop((market, name), None)
        for future in self._waiters.pop((market, name), []):
            if not future.done():
                future.set_exception(
                    StreamClosed(f"{name} was unsubscribed before it was acknowledged")
                )
        await conn.unsubscribe(name)
        if not conn.wanted and conn.task is not None:
            await conn.stop()
            self._conns[market].remove(conn)
        await self.notify()

    async def klines(self) -> AsyncIterator[ClosedKline]:
        """Yield closed klines as they arrive (when constructed without ``on_kline``)."""
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

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

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

    def _find(self, market: MarketType, name: str) -> StreamConnection | None:
        for conn in self._conns[market]:
            if name in conn.wanted:
                return conn
        return None

    def _conn_with_room(self, market: MarketType) -> StreamConnection:
        for conn in self._conns[market]:
            if len(conn.wanted) < self._max_streams:
                return conn
        conn = StreamConnection(
            market,
            len(self._conns[market]),
            self._settings[market],
            self,
            self.stats,
            self._ids,
            self._rng,
        )
        self._conns[market].append(conn)
        return conn

    # What the connections report (StreamHost) ---------------------------------------------

    async def notify(self) -> None:
        """Wake :meth:`wait_for` (called at every state change)."""
        async with self._changed:
            self._changed.notify_all()

    def acknowledged(self, market: MarketType, name: str) -> None:
        """Resolve the subscribers waiting for ``name``'s acknowledgement."""
        for future in self._waiters.pop((market, name), []):
            if not future.done():
                future.set_result(None)

    def rejected(
        self, market: MarketType, name: str, error: StreamSubscriptionRejected, forget: bool
    ) -> None:
        """Fail the subscribers waiting for ``name``; with ``forget``, drop the stream."""
        if forget:
            self._intervals.pop((market, name), None)
        for future in self._waiters.pop((market, name), []):
            if not future.done():
                future.set_exception(error)

    def reconnected(self, market: MarketType, names: list[str], down_ms: int) -> None:
        """Report each stream of a connection that came back to ``on_reconnect``."""
        resumes = [
            StreamResume(
                name,
                name.split("@", 1)[0].upper(),
                self._intervals[(market, name)].value,
                self._last_open.get((market, name)),
                down_ms,
                wall_clock_ms(),
            )
            for name in names
            if (market, name) in self._intervals
        ]
        if self._on_reconnect is not None:
            _call(self._on_reconnect, market, resumes)

    async def deliver(self, market: MarketType, event: WireKlineEvent, received_ns: int) -> None:
        """Deliver a closed kline once and in open-time order; report a gap before it."""
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
        await self.notify()


def _call(fn: Callable[..., Any], *args: Any) -> None:
    """Run a user callback; a failure is logged, never breaks the stream."""
    try:
        result = fn(*args)
        if asyncio.iscoroutine(result):
            asyncio.ensure_future(result).add_done_callback(log_failure)
    except Exception:
        log.exception("a KlineStreams callback failed")
