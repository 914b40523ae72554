"""A local imitation of Binance REST and Binance Vision over real HTTP on 127.0.0.1.

It serves the deterministic klines of :mod:`nautilus_dsm.testing.klines` with Binance's
semantics (pagination, limits, error codes, request weight, 429/418, the forming bar, Vision
zips with ``.CHECKSUM``), and the failures of :class:`~nautilus_dsm.testing.faults.Faults` on
demand, so clients are tested offline against the behaviour they meet in production.

This module is the HTTP server (routing, the request log, lifecycle, the connection-level
faults) and the :class:`BinanceImitation` facade; the answers come from
:mod:`~nautilus_dsm.testing.rest` and :mod:`~nautilus_dsm.testing.vision`, the bars from
:mod:`~nautilus_dsm.testing.series`.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

import polars as pl

from nautilus_dsm.common import Interval, MarketType
from nautilus_dsm.testing.datasets import ENDPOINT_NAMES, DatasetApi
from nautilus_dsm.testing.faults import Faults
from nautilus_dsm.testing.responses import Response, not_found
from nautilus_dsm.testing.rest import REST_PREFIXES, RestApi
from nautilus_dsm.testing.series import KlineSeries
from nautilus_dsm.testing.symbols import SymbolSpec
from nautilus_dsm.testing.vision import VisionFiles
from nautilus_dsm.testing.ws import KlineStreamServer, WsConfig, WsFaults


@dataclass(frozen=True)
class RequestRecord:
    """One request the imitation received (``status`` 0: the connection was closed unanswered)."""

    method: str
    path: str
    query: dict[str, str]
    status: int


class BinanceImitation:
    """Binance REST (spot, USDT-M, COIN-M) and Binance Vision on one local HTTP server.

    Parameters
    ----------
    clock
        Returns "now" in epoch ms; decides which bars are closed, the forming bar and which
        Vision files exist. Defaults to the wall clock.
    port
        TCP port on 127.0.0.1; 0 (default) picks a free one.
    rate_clock
        Returns epoch seconds for the request-weight minute windows, ``Retry-After`` and bans.
        Defaults to the wall clock, so a client's real waits are what lift a limit even when
        ``clock`` is frozen in the past.
    ws
        Also serve the kline websocket streams (:mod:`nautilus_dsm.testing.ws`) on a port of
        their own (``srv.ws_url``, ``srv.ws_base_url(market)``, faults ``srv.ws_faults``); a
        :class:`~nautilus_dsm.testing.ws.WsConfig` sets its ping and lifetime knobs.

    Examples
    --------
    >>> with BinanceImitation() as srv:  # doctest: +SKIP
    ...     httpx.get(f"{srv.url}/api/v3/klines", params={"symbol": "BTCUSDT", "interval": "1m"})
    """

    def __init__(
        self,
        clock: Callable[[], int] | None = None,
        *,
        port: int = 0,
        rate_clock: Callable[[], float] | None = None,
        ws: bool | WsConfig = False,
    ) -> None:
        self._port = port
        self.faults = Faults()
        self._kline_series = KlineSeries(clock, self.faults)
        self._rest = RestApi(self._kline_series, self.faults, rate_clock or time.time)
        self._vision = VisionFiles(self._kline_series, self.faults)
        self.datasets = DatasetApi(self._kline_series, self.faults, rate_clock or time.time)
        self._rest.datasets = self.datasets.answer
        self._rest.dataset_endpoints = ENDPOINT_NAMES
        self._lock = threading.Lock()
        self._requests: list[RequestRecord] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._ws = _ws_server(self, ws)

    # ----------------------------------------------------------------------------------------
    # Lifecycle
    # ----------------------------------------------------------------------------------------

    def start(self) -> BinanceImitation:
        """Bind an ephemeral port on 127.0.0.1 and serve in a daemon thread."""
        if self._server is not None:
            return self
        handler = type("BinanceImitationHandler", (_Handler,), {"imitation": self})
        server = ThreadingHTTPServer(("127.0.0.1", self._port), handler)
        server.daemon_threads = True
        server.block_on_close = False
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"binance-imitation-{server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        if self._ws is not None:
            self._ws.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection."""
        server, self._server = self._server, None
        if server is None:
            return
        if self._ws is not None:
            self._ws.stop()
        server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> BinanceImitation:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: the base of REST and of Vision alike."""
        if self._server is None:
            raise RuntimeError("the imitation is not running; call start() or use `with`")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def port(self) -> int:
        """The TCP port the imitation serves on."""
        return int(self.url.rsplit(":", 1)[1])

    # -- websocket streams (ws=True) --

    @property
    def ws(self) -> KlineStreamServer:
        """The kline stream server (``stats``, ``disconnect_all()``); needs ``ws=True``."""
        if self._ws is None:
            raise RuntimeError("construct BinanceImitation(ws=True) to serve websocket streams")
        return self._ws

    @property
    def ws_faults(self) -> WsFaults:
        """Fault switches of the kline streams."""
        return self.ws.faults

    @property
    def ws_url(self) -> str:
        """``ws://127.0.0.1:PORT`` of the kline streams."""
        return self.ws.url

    def ws_base_url(self, market: MarketType | str) -> str:
        """Return the raw ``/ws`` endpoint of ``market``'s kline streams."""
        return self.ws.base_url(market)

    # ----------------------------------------------------------------------------------------
    # Test API
    # ----------------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of the requests received so far, in arrival-of-answer order."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        """Forget the requests received so far."""
        with self._lock:
            self._requests.clear()

    def pause(self) -> None:
        """Start an outage: every connection is closed unanswered (``faults.down``)."""
        self.faults.down = True

    def resume(self) -> None:
        """End the outage."""
        self.faults.down = False

    def now_ms(self) -> int:
        """Return the imitation's "now" (its clock), epoch ms."""
        return self._kline_series.now_ms()

    def add_symbol(self, market: MarketType | str, spec: SymbolSpec) -> None:
        """List another symbol (or replace one) on ``market``."""
        self._kline_series.add_symbol(MarketType.parse(market), spec)
        self._vision.clear()

    def remove_symbol(self, market: MarketType | str, symbol: str) -> None:
        """Delist ``symbol`` from ``market``: exchangeInfo and klines answer -1121 for it."""
        self._kline_series.remove_symbol(MarketType.parse(market), symbol)
        self._vision.clear()

    def symbols(self, market: MarketType | str) -> dict[str, SymbolSpec]:
        """Return the symbols listed on ``market``."""
        return self._kline_series.symbols(MarketType.parse(market))

    def set_klines(
        self,
        market: MarketType | str,
        symbol: str,
        interval: Interval | str,
        frame: pl.DataFrame,
    ) -> None:
        """Serve exactly these recorded bars (a ``FRAME_SCHEMA`` frame) for the series.

        Bars outside the frame do not exist; listing, gaps, the clock and every fault still
        apply. Values must fit the market's printed decimals (else :class:`InvalidInput`).
        """
        series = self._kline_series
        series.set_klines(MarketType.parse(market), symbol, Interval.parse(interval), frame)
        self._vision.clear()

    def expected(
        self,
        market: MarketType | str,
        symbol: str,
        interval: Interval | str,
        start_ms: int,
        end_ms: int,
    ) -> pl.DataFrame:
        """Return the source truth: closed bars with open time in ``[start_ms, end_ms)``.

        Listing and ``faults.gaps`` applied, in ``FRAME_SCHEMA``: exactly what a perfect
        client returns for this request at the imitation's "now".
        """
        market, interval = MarketType.parse(market), Interval.parse(interval)
        return self._kline_series.expected(market, symbol, interval, start_ms, end_ms)

    @property
    def series(self) -> KlineSeries:
        """The kline series every endpoint reads (REST, Vision and the websocket streams)."""
        return self._kline_series

    # ----------------------------------------------------------------------------------------
    # Routing and the request log
    # ----------------------------------------------------------------------------------------

    def _record(self, method: str, path: str, query: dict[str, str], status: int) -> None:
        with self._lock:
            self._requests.append(RequestRecord(method, path, query, status))

    def _answer(self, method: str, path: str, query: dict[str, str]) -> Response:
        if path.startswith("/data/"):
            answer = self.datasets.vision(path)
            return answer if answer is not None else self._vision.answer(path)
        for prefix, market in REST_PREFIXES.items():
            if path.startswith(prefix + "/"):
                return self._rest.answer(market, path[len(prefix) + 1 :], query)
        return not_found()


def _ws_server(imitation: BinanceImitation, ws: bool | WsConfig) -> KlineStreamServer | None:
    if ws is False:
        return None
    return KlineStreamServer(imitation, ws if isinstance(ws, WsConfig) else None)


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "BinanceImitation/1.0"
    timeout = 60
    imitation: BinanceImitation

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without this, Nagle + delayed ACK add ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.imitation._lock:
            self.imitation._connections.add(self.connection)

    def handle(self) -> None:
        # A client that timed out or hung up mid-answer is an expected event, not a server error
        # (socketserver would print a traceback for each).
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            super().handle()

    def finish(self) -> None:
        with self.imitation._lock:
            self.imitation._connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: tests read srv.requests

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _serve(self, head: bool) -> None:
        imitation = self.imitation
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        faults = imitation.faults
        if faults.down:
            imitation._record(self.command, parts.path, query, 0)
            self.close_connection = True
            return
        if self._bounded_time_fault(parts.path, query):  # hang or redirect: answered there
            return
        response = imitation._answer(self.command, parts.path, query)
        if faults.latency_s > 0:
            time.sleep(faults.latency_s)
        imitation._record(self.command, parts.path, query, response.status)
        cut = faults.take("reset_mid_body")
        self._send_head(response)
        if head:
            return
        if cut:
            self._reset_mid_body(response.body)
            return
        if self._drip(parts.path, response.body):
            return
        self.wfile.write(response.body)

    def _send_head(self, response: Response) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in (response.headers or {}).items():
            self.send_header(name, value)
        self.end_headers()

    def _reset_mid_body(self, body: bytes) -> None:
        """``faults.reset_mid_body``: send half the body, then reset the connection."""
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    # -- bounded time: hang, drip, redirects ---------------------------------------------------

    def _bounded_time_fault(self, path: str, query: dict[str, str]) -> bool:
        """Hang or redirect this request per ``faults``; True when it was answered here."""
        imitation, faults = self.imitation, self.imitation.faults
        if _matching(faults.hang, path) is not None:
            imitation._record(self.command, path, query, 0)
            self._hang()
            return True
        prefix = _matching(faults.redirect_to, path)
        base = faults.redirect_to.get(prefix) if prefix is not None else None
        if base is None and faults.take("redirect_next"):
            base = imitation.url
        if base is None:
            return False
        imitation._record(self.command, path, query, 302)
        self.send_response(302)
        self.send_header("Location", base.rstrip("/") + self.path)
        self.send_header("Content-Length", "0")
        self.end_headers()
        return True

    def _hang(self) -> None:
        # Say nothing until the client hangs up (or the server stops), then close.
        conn = self.connection
        while self.imitation._server is not None:
            ready, _, _ = select.select([conn], [], [], 0.05)
            if ready:
                try:
                    if not conn.recv(4096):
                        break
                except OSError:
                    break
        self.close_connection = True

    def _drip(self, path: str, body: bytes) -> bool:
        """Send ``body`` at ``faults.drip``'s rate for this path; False when not dripped."""
        drip = self.imitation.faults.drip
        prefix = _matching(drip, path)
        if prefix is None:
            return False
        rate = float(drip[prefix])
        chunk = max(1, round(rate * 0.05))
        for i in range(0, len(body), chunk):
            if self.imitation._server is None:
                break
            self.wfile.write(body[i : i + chunk])  # raises once the client hung up
            time.sleep(chunk / rate)
        self.close_connection = True
        return True


def _matching(prefixes: set[str] | dict[str, object], path: str) -> str | None:
    """Return the first prefix (or key) that ``path`` starts with, None when there is none."""
    for prefix in list(prefixes):
        if path.startswith(prefix):
            return prefix
    return None
