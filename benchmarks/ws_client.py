"""Benchmark: websocket clients for the kline streams, side by side against one local server.

Run: ``uv run --group bench python benchmarks/ws_client.py [--burst 100000] [--paced 2000]``
(offline, ~20 s). ``picows`` lives in the optional ``bench`` dependency group; a candidate that
is not installed or fails to connect is reported as such and skipped.

Candidates, each receiving on our own asyncio loop (where the live client runs):

- ``nautilus_pyo3.WebSocketClient``: NautilusTrader's Rust client (tokio + tungstenite); its
  handler is called from the Rust runtime's thread holding the GIL;
- ``websockets`` (asyncio implementation, 14+): pure asyncio, the library the imitation
  serves with;
- ``picows``: Cython frame parser over an asyncio transport.

The server (``websockets``) runs in its own process, so it does not share the GIL with the
client under test. Each run asks it for one of two workloads:

- **burst**: ``--burst`` Binance kline events (the real message of
  ``../shared/realdata/ws_kline_futures_open.json``, ~330 bytes) as fast as the server can
  send them: receive throughput in messages/s (the server is the same for every client, so
  the ratios are the client's);
- **paced**: ``--paced`` events at 1 000 per second, each carrying the sender's
  ``time.monotonic_ns()`` (one system-wide clock on Linux): receive latency p50/p99 in µs.

Every client decodes each message into the same ``msgspec`` struct (the work our client does
at the edge) and must receive every message once, in order.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

import msgspec

EVENT = (
    b'{"e":"kline","E":%d,"s":"BTCUSDT","k":{"t":1638747660000,"T":1638747719999,'
    b'"s":"BTCUSDT","i":"1m","f":100,"L":200,"o":"0.0010","c":"0.0020","h":"0.0025",'
    b'"l":"0.0015","v":"1000","n":100,"x":false,"q":"1.0000","V":"500","Q":"0.500",'
    b'"B":"123456"}}'
)
PACED_RATE = 1000  # messages per second


class _K(msgspec.Struct):
    t: int
    c: str
    x: bool


class _Event(msgspec.Struct):
    e: str
    E: int
    s: str
    k: _K


_decode = msgspec.json.Decoder(_Event).decode


# ----------------------------------------------------------------------------------------------
# Server (own process)
# ----------------------------------------------------------------------------------------------


def _frame(payload: bytes) -> bytes:
    """An unmasked server text frame (RFC 6455 section 5.2), payload < 64 KiB."""
    size = len(payload)
    header = bytes([0x81, size]) if size < 126 else bytes([0x81, 126]) + size.to_bytes(2, "big")
    return header + payload


def _serve(port_queue: mp.Queue) -> None:
    from websockets.asyncio.server import serve

    async def handler(ws) -> None:  # type: ignore[no-untyped-def]
        request = ws.request.path  # /burst/N or /paced/N
        _, mode, count = request.split("/")
        n = int(count)
        if mode == "burst":
            # Pre-framed writes straight to the transport: the server must outrun every
            # client, or the figures would be the server's (ws.send tops out near 20 k/s).
            transport = ws.transport
            for lo in range(0, n, 1000):
                transport.write(b"".join(_frame(EVENT % i) for i in range(lo, min(n, lo + 1000))))
                while transport.get_write_buffer_size() > 4 * 2**20:
                    await asyncio.sleep(0.001)
        else:
            period = 1.0 / PACED_RATE
            start = time.perf_counter()
            for i in range(n):
                delay = start + i * period - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await ws.send(EVENT % time.monotonic_ns())
        await ws.wait_closed()

    async def main() -> None:
        async with serve(handler, "127.0.0.1", 0, compression=None, max_queue=None) as server:
            port_queue.put(server.sockets[0].getsockname()[1])
            await asyncio.Future()

    asyncio.run(main())


# ----------------------------------------------------------------------------------------------
# Clients: each returns once it has received n messages
# ----------------------------------------------------------------------------------------------


class _Sink:
    """Counts, decodes and time-stamps messages; sets ``done`` at the n-th."""

    def __init__(self, n: int, paced: bool, loop: asyncio.AbstractEventLoop) -> None:
        self.n, self.paced, self.loop = n, paced, loop
        self.count = 0
        self.latencies: list[int] = []
        self.in_order = True
        self.done = asyncio.Event()

    def feed(self, raw: bytes) -> None:
        event = _decode(raw)
        now = time.monotonic_ns()
        if self.paced:
            self.latencies.append(now - event.E)
        elif self.count != event.E:
            self.in_order = False
        self.count += 1
        if self.count == self.n:
            self.loop.call_soon_threadsafe(self.done.set)


async def run_websockets(url: str, sink: _Sink) -> None:
    from websockets.asyncio.client import connect

    async with connect(url, compression=None, max_size=2**20, max_queue=None) as ws:
        async for raw in ws:
            sink.feed(raw if isinstance(raw, bytes) else raw.encode())
            if sink.count == sink.n:
                break


async def run_picows(url: str, sink: _Sink) -> None:
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

    class Listener(WSListener):
        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type in (WSMsgType.TEXT, WSMsgType.BINARY):
                sink.feed(frame.get_payload_as_bytes())

    transport, _ = await ws_connect(Listener, url)
    try:
        await sink.done.wait()
    finally:
        transport.disconnect()
        await transport.wait_disconnected()


async def run_nautilus(url: str, sink: _Sink) -> None:
    from nautilus_trader.core.nautilus_pyo3 import WebSocketClient, WebSocketConfig

    # Called on the Rust runtime's thread: the sink hands completion back to our loop.
    config = WebSocketConfig(url=url, headers=[], heartbeat=60)
    client = await WebSocketClient.connect(
        loop_=asyncio.get_running_loop(), config=config, handler=sink.feed
    )
    try:
        await sink.done.wait()
    finally:
        await client.disconnect()


CANDIDATES: dict[str, Callable[[str, _Sink], Awaitable[None]]] = {
    "nautilus_pyo3.WebSocketClient": run_nautilus,
    "websockets": run_websockets,
    "picows": run_picows,
}


async def _measure(name: str, base: str, mode: str, n: int) -> _Sink:
    sink = _Sink(n, mode == "paced", asyncio.get_running_loop())
    await asyncio.wait_for(CANDIDATES[name](f"{base}/{mode}/{n}", sink), timeout=120)
    return sink


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=100_000, help="messages per burst run")
    parser.add_argument("--paced", type=int, default=2_000, help="messages per paced run")
    parser.add_argument("--repeats", type=int, default=3, help="burst runs per client")
    args = parser.parse_args()

    ctx = mp.get_context("spawn")
    ports: mp.Queue = ctx.Queue()
    server = ctx.Process(target=_serve, args=(ports,), daemon=True)
    server.start()
    base = f"ws://127.0.0.1:{ports.get(timeout=30)}"
    rows: list[tuple[str, str, str, str]] = []
    try:
        for name in CANDIDATES:
            try:
                rates = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    sink = asyncio.run(_measure(name, base, "burst", args.burst))
                    elapsed = time.perf_counter() - start
                    assert sink.count == args.burst and sink.in_order, (name, sink.count)
                    rates.append(args.burst / elapsed)
                sink = asyncio.run(_measure(name, base, "paced", args.paced))
                lat = sorted(sink.latencies)
                p50 = statistics.median(lat) / 1000
                p99 = lat[int(len(lat) * 0.99) - 1] / 1000
                rows.append(
                    (
                        name,
                        f"{statistics.median(rates):,.0f}",
                        f"{p50:,.0f}",
                        f"{p99:,.0f}",
                    )
                )
            except Exception as exc:  # a candidate that cannot run is reported, not fatal
                rows.append((name, f"unavailable: {type(exc).__name__}: {exc}"[:90], "-", "-"))
    finally:
        server.kill()
        server.join(timeout=5)

    print(
        f"Python {sys.version.split()[0]}; burst {args.burst:,} msgs x {args.repeats} "
        f"(median), paced {args.paced:,} msgs at {PACED_RATE}/s"
    )
    print(f"{'client':32} {'burst msgs/s':>14} {'p50 µs':>9} {'p99 µs':>9}")
    for name, rate, p50, p99 in rows:
        print(f"{name:32} {rate:>14} {p50:>9} {p99:>9}")
    with contextlib.suppress(ValueError):
        ref = float(next(r[1] for r in rows if r[0] == "websockets").replace(",", ""))
        for name, rate, _, _ in rows:
            with contextlib.suppress(ValueError):
                print(f"  {name}: {float(rate.replace(',', '')) / ref:.2f}x websockets")


if __name__ == "__main__":
    main()
