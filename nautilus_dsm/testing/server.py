"""A local imitation of Binance REST and Binance Vision over real HTTP on 127.0.0.1.

It serves the deterministic klines of :mod:`nautilus_dsm.testing.klines` with Binance's
semantics (pagination, limits, error codes, request weight, 429/418, the forming bar, Vision
zips with ``.CHECKSUM``), and the failures of :class:`~nautilus_dsm.testing.faults.Faults` on
demand, so clients are tested offline against the behaviour they meet in production.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import re
import select
import socket
import threading
import time
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

import msgspec
import numpy as np
import polars as pl

from nautilus_dsm.common import Interval, MarketType, to_ms
from nautilus_dsm.dsm.schema import empty_frame
from nautilus_dsm.errors import InvalidInput, UnknownSymbol
from nautilus_dsm.testing import klines
from nautilus_dsm.testing.faults import Faults
from nautilus_dsm.testing.symbols import (
    WEIGHT_LIMITS,
    SymbolSpec,
    default_symbols,
    exchange_info,
)
from nautilus_dsm.testing.ws import KlineStreamServer, WsConfig, WsFaults

REST_PREFIXES: dict[str, MarketType] = {
    "/api/v3": MarketType.SPOT,
    "/fapi/v1": MarketType.FUTURES_USDT,
    "/dapi/v1": MarketType.FUTURES_COIN,
}
VISION_MARKETS: dict[str, MarketType] = {
    "spot": MarketType.SPOT,
    "futures/um": MarketType.FUTURES_USDT,
    "futures/cm": MarketType.FUTURES_COIN,
}
MAX_LIMIT: dict[MarketType, int] = {
    MarketType.SPOT: 1000,
    MarketType.FUTURES_USDT: 1500,
    MarketType.FUTURES_COIN: 1500,
}
DEFAULT_LIMIT = 500
# Vision names the calendar-month interval "1mo" (REST says "1M").
VISION_MONTH = "1mo"
_US_FROM_MS = to_ms(datetime(2025, 1, 1, tzinfo=UTC))
_DAY_MS = 86_400_000
_VISION_RE = re.compile(
    r"^/data/(?P<market>spot|futures/um|futures/cm)/(?P<period>daily|monthly)/klines/"
    r"(?P<symbol>[A-Z0-9_]+)/(?P<interval>[0-9]+[smhdwM]|1mo)/"
    r"(?P<name>(?P=symbol)-(?P=interval)-(?P<date>\d{4}-\d{2}(?:-\d{2})?)\.zip)"
    r"(?P<checksum>\.CHECKSUM)?$"
)
_ZIP_CACHE_SIZE = 64
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class RequestRecord:
    """One request the imitation received (``status`` 0: the connection was closed unanswered)."""

    method: str
    path: str
    query: dict[str, str]
    status: int


@dataclass
class _Response:
    status: int
    body: bytes
    content_type: str = "application/json;charset=UTF-8"
    headers: dict[str, str] | None = None


def _json(status: int, payload: object, headers: dict[str, str] | None = None) -> _Response:
    return _Response(status, msgspec.json.encode(payload), headers=headers)


def _error(status: int, code: int, msg: str) -> _Response:
    return _json(status, {"code": code, "msg": msg})


class _BadRequest(Exception):
    def __init__(self, response: _Response) -> None:
        super().__init__(response.body.decode())
        self.response = response


@dataclass
class _RateState:
    """Request weight of one market's minute window, and the ban of a client that ignores 429."""

    window: int = -1
    used: int = 0
    wait_until: float = 0.0
    ignored: int = 0
    banned_until: float = 0.0


def _no_such_key(key: str) -> _Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        "<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message>"
        f"<Key>{key}</Key><RequestId>IMITATION</RequestId><HostId>127.0.0.1</HostId></Error>"
    ).encode()
    return _Response(404, body, content_type="application/xml")


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
        self._clock = clock or _wall_ms
        self._rate_clock = rate_clock or time.time
        self._port = port
        self.faults = Faults()
        self._symbols = default_symbols()
        self._recorded: dict[tuple[MarketType, str, Interval], pl.DataFrame] = {}
        self._version = 0
        self._lock = threading.Lock()
        self._requests: list[RequestRecord] = []
        self._zips: OrderedDict[tuple[object, ...], bytes] = OrderedDict()
        self._rates = {market: _RateState() for market in MarketType}
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
        """The raw ``/ws`` endpoint of ``market``'s kline streams."""
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
        with self._lock:
            self._requests.clear()

    def pause(self) -> None:
        """Start an outage: every connection is closed unanswered (``faults.down``)."""
        self.faults.down = True

    def resume(self) -> None:
        """End the outage."""
        self.faults.down = False

    def now_ms(self) -> int:
        """The imitation's "now" (its clock), epoch ms."""
        return int(self._clock())

    def add_symbol(self, market: MarketType | str, spec: SymbolSpec) -> None:
        """List another symbol (or replace one) on ``market``."""
        market = MarketType.parse(market)
        klines.kline_spec(spec, market)  # validates tick/step now, not at the first request
        with self._lock:
            self._symbols[market][spec.symbol] = spec
            self._version += 1
            self._zips.clear()

    def remove_symbol(self, market: MarketType | str, symbol: str) -> None:
        """Delist ``symbol`` from ``market``: exchangeInfo and klines answer -1121 for it."""
        market = MarketType.parse(market)
        with self._lock:
            self._symbols[market].pop(symbol, None)
            self._version += 1
            self._zips.clear()

    def symbols(self, market: MarketType | str) -> dict[str, SymbolSpec]:
        """The symbols listed on ``market``."""
        return dict(self._symbols[MarketType.parse(market)])

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
        market = MarketType.parse(market)
        interval = Interval.parse(interval)
        spec = self._spec(market, symbol)
        raw = klines.from_frame(frame)
        what = f"set_klines({market.name}, {symbol}, {interval.value})"
        if raw["open_time"].is_duplicated().any():
            raise InvalidInput(f"{what}: the frame has duplicate open times; pass unique bars")
        klines.check_representable(raw, klines.kline_spec(spec, market), what)
        with self._lock:
            self._recorded[(market, symbol, interval)] = raw
            self._version += 1
            self._zips.clear()

    def expected(
        self,
        market: MarketType | str,
        symbol: str,
        interval: Interval | str,
        start_ms: int,
        end_ms: int,
    ) -> pl.DataFrame:
        """The source truth: closed bars with open time in ``[start_ms, end_ms)``.

        Listing and ``faults.gaps`` applied, in ``FRAME_SCHEMA``: exactly what a perfect
        client returns for this request at the imitation's "now".
        """
        market = MarketType.parse(market)
        interval = Interval.parse(interval)
        spec = self._spec(market, symbol)
        now = self.now_ms()
        last_closed = interval.floor_ms(interval.floor_ms(now) - 1)
        raw = self._series(market, spec, interval, start_ms, min(end_ms - 1, last_closed), None)
        return klines.to_frame(raw) if len(raw) else empty_frame()

    def _spec(self, market: MarketType, symbol: str) -> SymbolSpec:
        spec = self._symbols[market].get(symbol)
        if spec is None:
            listed = ", ".join(sorted(self._symbols[market]))
            raise UnknownSymbol(
                f"{symbol} is not listed on the imitation's {market.name} market "
                f"(listed: {listed}); add it with srv.add_symbol({market.name}, SymbolSpec(...))"
            )
        return spec

    # ----------------------------------------------------------------------------------------
    # Series selection
    # ----------------------------------------------------------------------------------------

    def _series(
        self,
        market: MarketType,
        spec: SymbolSpec,
        interval: Interval,
        lo: int,
        hi: int,
        limit: int | None,
        *,
        from_end: bool = False,
        now_ms: int | None = None,
    ) -> pl.DataFrame:
        """Raw bars with open time in ``[lo, hi]`` after listing and gaps; first/last ``limit``."""
        lo = max(lo, interval.floor_ms(spec.listed_ms))
        gaps = self.faults.gaps_for(spec.symbol)
        recorded = self._recorded.get((market, spec.symbol, interval))
        if recorded is not None:
            opens = recorded["open_time"].to_numpy()
            keep = (opens >= lo) & (opens <= hi)
            for start, end in gaps:
                keep &= (opens < start) | (opens >= end)
            index = np.flatnonzero(keep)
            if limit is not None:
                index = index[-limit:] if from_end else index[:limit]
            return recorded[index] if len(index) else recorded.clear()
        opens = _select_opens(interval, lo, hi, gaps, limit, from_end)
        return klines.generate(klines.kline_spec(spec, market), interval, opens, now_ms)

    # ----------------------------------------------------------------------------------------
    # Request handling
    # ----------------------------------------------------------------------------------------

    def _record(self, method: str, path: str, query: dict[str, str], status: int) -> None:
        with self._lock:
            self._requests.append(RequestRecord(method, path, query, status))

    def _answer(self, method: str, path: str, query: dict[str, str]) -> _Response:
        if path.startswith("/data/"):
            return self._vision(path)
        for prefix, market in REST_PREFIXES.items():
            if path.startswith(prefix + "/"):
                return self._rest(market, path[len(prefix) + 1 :], query)
        return _Response(404, b"Not Found", content_type="text/plain")

    # REST ---------------------------------------------------------------------------------

    def _rest(self, market: MarketType, endpoint: str, query: dict[str, str]) -> _Response:
        weight = _weight(market, endpoint, query)
        faults = self.faults
        state = self._rates[market]
        limit = faults.weight_limit if faults.weight_limit is not None else WEIGHT_LIMITS[market]
        now = self._rate_clock()
        with self._lock:
            window = int(now // 60)
            if window != state.window:
                state.window, state.used = window, 0
            if state.banned_until > now:
                return self._ban_response(state, now)
            if faults.take("rest_418"):
                return self._rest_error(
                    418, _ban_message(now + faults.retry_after_s), faults.retry_after_s, state
                )
            if faults.take("rest_429"):
                return self._rest_error(429, _limit_message(limit), faults.retry_after_s, state)
            if faults.take("rest_5xx"):
                return self._rest_error(
                    503,
                    "Service Unavailable.",
                    None,
                    state,
                    code=-1008,
                )
            if state.wait_until > now:
                state.ignored += 1
                if state.ignored > faults.ban_after_ignored:
                    state.banned_until = now + faults.ban_seconds
                    return self._ban_response(state, now)
                return self._rest_error(
                    429, _limit_message(limit), math.ceil(state.wait_until - now), state
                )
            if state.used + weight > limit:
                state.wait_until = (window + 1) * 60.0
                state.ignored = 0
                return self._rest_error(
                    429, _limit_message(limit), math.ceil(state.wait_until - now), state
                )
            state.used += weight
            used = state.used
        try:
            response = self._rest_endpoint(market, endpoint, query)
        except _BadRequest as exc:
            response = exc.response
        response.headers = {**(response.headers or {}), "X-MBX-USED-WEIGHT-1M": str(used)}
        return response

    def _rest_error(
        self,
        status: int,
        msg: str,
        retry_after: int | None,
        state: _RateState,
        code: int = -1003,
    ) -> _Response:
        headers = {"X-MBX-USED-WEIGHT-1M": str(state.used)}
        if retry_after is not None:
            headers["Retry-After"] = str(max(1, retry_after))
        _raw_retry_after(headers, status, self.faults)
        return _json(status, {"code": code, "msg": msg}, headers)

    def _ban_response(self, state: _RateState, now: float) -> _Response:
        return self._rest_error(
            418, _ban_message(state.banned_until), math.ceil(state.banned_until - now), state
        )

    def _rest_endpoint(self, market: MarketType, endpoint: str, query: dict[str, str]) -> _Response:
        if endpoint == "ping":
            return _json(200, {})
        if endpoint == "time":
            if self.faults.time_unavailable:
                return _Response(404, b"Not Found", content_type="text/plain")
            return _json(200, {"serverTime": self.now_ms()})
        if endpoint == "exchangeInfo":
            return self._exchange_info(market, query)
        if endpoint == "klines":
            if self.faults.take("rest_klines_unknown_symbol"):
                return _error(400, -1121, "Invalid symbol.")
            return self._bad_klines(self._klines(market, query))
        return _Response(404, b"Not Found", content_type="text/plain")

    def _exchange_info(self, market: MarketType, query: dict[str, str]) -> _Response:
        listed = self._symbols[market]
        wanted: list[str] | None = None
        if "symbol" in query:
            wanted = [query["symbol"]]
        elif "symbols" in query:
            try:
                wanted = [str(s) for s in msgspec.json.decode(query["symbols"])]
            except (msgspec.DecodeError, TypeError):
                wanted = [""]
        if wanted is not None and any(symbol not in listed for symbol in wanted):
            return _error(400, -1121, "Invalid symbol.")
        specs = [listed[s] for s in wanted] if wanted is not None else list(listed.values())
        payload = exchange_info(market, specs, self.now_ms(), self.faults.weight_limit)
        return _json(200, payload)

    def _klines(self, market: MarketType, query: dict[str, str]) -> _Response:
        for name in ("symbol", "interval"):
            if not query.get(name):
                raise _BadRequest(
                    _error(
                        400,
                        -1102,
                        f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.",
                    )
                )
        spec = self._symbols[market].get(query["symbol"])
        if spec is None:
            raise _BadRequest(_error(400, -1121, "Invalid symbol."))
        interval = _parse_interval(query["interval"], market)
        if interval is None:
            raise _BadRequest(_error(400, -1120, "Invalid interval."))
        limit = _int_param(query, "limit", DEFAULT_LIMIT)
        if not 1 <= limit <= MAX_LIMIT[market]:
            raise _BadRequest(_error(400, -1130, "Data sent for parameter 'limit' is not valid."))
        start = _int_param(query, "startTime", None)
        end = _int_param(query, "endTime", None)
        if start is not None and end is not None and start > end:
            raise _BadRequest(_error(400, -1023, "Start time is greater than end time."))

        now = self.now_ms()
        hi = now if end is None else min(end, now)
        if start is not None:
            raw = self._series(market, spec, interval, start, hi, limit, now_ms=now)
        else:
            raw = self._series(market, spec, interval, 0, hi, limit, from_end=True, now_ms=now)
        raw = _without(raw, tuple(self.faults.rest_gaps_for(spec.symbol)))
        rows = klines.rest_rows(raw, klines.kline_spec(spec, market))
        if self.faults.duplicate_rows and rows:
            middle = len(rows) // 2
            rows.insert(middle + 1, rows[middle])
        if self.faults.out_of_order_rows and len(rows) >= 2:
            rows[0], rows[1] = rows[1], rows[0]
        return _json(200, self._rewrite_rest(market, query, rows))

    def _rewrite_rest(
        self, market: MarketType, query: dict[str, str], rows: list[tuple[object, ...]]
    ) -> object:
        """``faults.rest_rewrite`` applied to a klines answer (the rows unchanged without it)."""
        rewrite = self.faults.rest_rewrite
        if rewrite is None:
            return rows
        prefix = next(p for p, m in REST_PREFIXES.items() if m is market)
        return rewrite(f"{prefix}/klines", dict(query), [list(row) for row in rows])

    def _bad_klines(self, response: _Response) -> _Response:
        """``faults.rest_bad_kline_open_ms``: those klines' open price becomes ``"abc"``."""
        bad = set(self.faults.rest_bad_kline_open_ms)
        if not bad or response.status != 200:
            return response
        rows = msgspec.json.decode(response.body)
        for row in rows:
            if row[0] in bad:
                row[1] = "abc"
        return _json(200, rows, response.headers)

    # Vision -------------------------------------------------------------------------------

    def _vision(self, path: str) -> _Response:
        key = path.lstrip("/")
        match = _VISION_RE.match(path)
        if match is None:
            return _no_such_key(key)
        market = VISION_MARKETS[match["market"]]
        name = match["name"]
        spec = self._symbols[market].get(match["symbol"])
        interval = _parse_vision_interval(match["interval"], market)
        period = _period(match["period"], match["date"])
        if spec is None or interval is None or period is None or name in self.faults.vision_missing:
            return _no_such_key(key)
        data = self._zip(market, spec, interval, name, period)
        if data is None:
            return _no_such_key(key)
        if match["checksum"]:
            digest = hashlib.sha256(data)
            if name in self.faults.vision_bad_checksum:
                digest.update(b"corrupted")
            return _Response(
                200, f"{digest.hexdigest()}  {name}\n".encode(), content_type="text/plain"
            )
        if name in self.faults.vision_truncated:
            data = data[: len(data) // 2]
        return _Response(200, data, content_type="application/zip")

    def _file_gaps(self, name: str) -> tuple[tuple[int, int], ...]:
        """``faults.vision_file_gaps`` of one Vision zip, as ``(start_ms, end_ms)``."""
        return tuple(
            (lo, hi) for file, lo, hi in list(self.faults.vision_file_gaps) if file == name
        )

    def _zip(
        self,
        market: MarketType,
        spec: SymbolSpec,
        interval: Interval,
        name: str,
        period: tuple[int, int],
    ) -> bytes | None:
        start, end = period
        now = self.now_ms()
        if end > now:
            return None
        forced = self.faults.vision_timestamps_us
        micros = (market is MarketType.SPOT and start >= _US_FROM_MS) if forced is None else forced
        wrong = name in self.faults.vision_wrong_columns
        gaps = tuple(self.faults.gaps_for(spec.symbol)) + self._file_gaps(name)
        member, rewrite = self._vision_member(name)
        key = (market, spec.symbol, interval, name, micros, wrong, gaps, self._version)
        key += (member, rewrite)
        with self._lock:
            cached = self._zips.get(key)
            if cached is not None:
                self._zips.move_to_end(key)
                return cached
        raw = self._series(market, spec, interval, start, end - 1, None)
        raw = _without(raw, self._file_gaps(name))
        if len(raw) == 0 or int(raw["close_time"].max()) >= now:  # empty, or bars still open
            return None
        ks = klines.kline_spec(spec, market)
        csv = klines.vision_csv(
            raw, ks, header=market is not MarketType.SPOT, micros=micros, drop_ignore=wrong
        )
        if rewrite is not None:
            csv = rewrite(member, csv)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            info = zipfile.ZipInfo(member, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, csv, compresslevel=1)
        data = buffer.getvalue()
        with self._lock:
            self._zips[key] = data
            while len(self._zips) > _ZIP_CACHE_SIZE:
                self._zips.popitem(last=False)
        return data

    def _vision_member(self, name: str) -> tuple[str, Callable[[str, bytes], bytes] | None]:
        """The CSV member's file name inside zip ``name`` and the CSV rewrite (faults)."""
        faults = self.faults
        member = faults.vision_member_names.get(name, name[: -len(".zip")] + ".csv")
        return member, faults.vision_csv_rewrite


# --------------------------------------------------------------------------------------------
# Pure helpers
# --------------------------------------------------------------------------------------------


def _without(raw: pl.DataFrame, gaps: tuple[tuple[int, int], ...]) -> pl.DataFrame:
    """``raw`` without the rows whose open time lies in one of the ``[start, end)`` gaps."""
    if not gaps or len(raw) == 0:
        return raw
    opens = raw["open_time"].to_numpy()
    keep = np.ones(len(opens), dtype=bool)
    for lo, hi in gaps:
        keep &= (opens < lo) | (opens >= hi)
    return raw[np.flatnonzero(keep)] if not keep.all() else raw


def _ws_server(imitation: BinanceImitation, ws: bool | WsConfig) -> KlineStreamServer | None:
    if ws is False:
        return None
    return KlineStreamServer(imitation, ws if isinstance(ws, WsConfig) else None)


def _limit_message(limit: int) -> str:
    return (
        f"Too many requests; current limit of IP(127.0.0.1) is {limit} requests per minute. "
        "Please use the websocket for live updates to avoid polling the API."
    )


def _ban_message(until_s: float) -> str:
    return (
        f"Way too many requests; IP(127.0.0.1) banned until {int(until_s * 1000)}. "
        "Please use the websocket for live updates to avoid bans."
    )


def _weight(market: MarketType, endpoint: str, query: dict[str, str]) -> int:
    """Binance's request weight of one REST call."""
    if market is MarketType.SPOT:
        return {"klines": 2, "exchangeInfo": 20}.get(endpoint, 1)
    if endpoint == "klines":
        try:
            limit = int(query.get("limit", DEFAULT_LIMIT))
        except ValueError:
            limit = DEFAULT_LIMIT
        if limit < 100:
            return 1
        if limit < 500:
            return 2
        return 5 if limit <= 1000 else 10
    return 1


def _int_param(query: dict[str, str], name: str, default: int | None) -> int | None:
    text = query.get(name)
    if text is None or text == "":
        return default
    if not re.fullmatch(r"-?[0-9]{1,20}", text):
        raise _BadRequest(
            _error(
                400,
                -1100,
                f"Illegal characters found in parameter '{name}'; "
                "legal range is '^[0-9]{1,20}$'.",
            )
        )
    return int(text)


def _parse_interval(text: str, market: MarketType) -> Interval | None:
    try:
        interval = Interval.parse(text)
    except InvalidInput:
        return None
    if interval is Interval.SECOND_1 and market is not MarketType.SPOT:
        return None
    return interval


def _parse_vision_interval(text: str, market: MarketType) -> Interval | None:
    if text == VISION_MONTH:
        return Interval.MONTH_1
    if text == Interval.MONTH_1.value:
        return None
    return _parse_interval(text, market)


def _period(kind: str, date: str) -> tuple[int, int] | None:
    """``[start_ms, end_ms)`` of a Vision file's day or month; None when malformed."""
    try:
        if kind == "daily":
            day = datetime.strptime(date, "%Y-%m-%d").replace(tzinfo=UTC)
            return to_ms(day), to_ms(day) + _DAY_MS
        month = datetime.strptime(date, "%Y-%m").replace(tzinfo=UTC)
    except ValueError:
        return None
    start = to_ms(month)
    return start, Interval.MONTH_1.next_open_ms(start)


def _select_opens(
    interval: Interval,
    lo: int,
    hi: int,
    gaps: list[tuple[int, int]],
    limit: int | None,
    from_end: bool,
) -> np.ndarray:
    """Grid open times in ``[lo, hi]`` outside the ``[start, end)`` gaps; first/last ``limit``.

    Works segment by segment so a limit over decades of 1s bars costs ``limit``, not decades.
    """
    if interval.is_month:
        opens = np.array(interval.open_times_ms(lo, hi + 1), dtype=np.int64)
        keep = np.ones(len(opens), dtype=bool)
        for start, end in gaps:
            keep &= (opens < start) | (opens >= end)
        opens = opens[keep]
        if limit is not None:
            opens = opens[-limit:] if from_end else opens[:limit]
        return opens
    size = interval.fixed_ms
    first, last = interval.ceil_ms(lo), interval.floor_ms(hi)
    segments = [(first, last)] if first <= last else []
    for start, end in sorted(gaps):
        cut_lo, cut_hi = interval.ceil_ms(start) - size, interval.ceil_ms(end)
        pieces = []
        for a, b in segments:
            if b <= cut_lo or a >= cut_hi:
                pieces.append((a, b))
                continue
            if a <= cut_lo:
                pieces.append((a, cut_lo))
            if b >= cut_hi:
                pieces.append((cut_hi, b))
        segments = pieces
    remaining = limit
    chunks: list[np.ndarray] = []
    for a, b in reversed(segments) if from_end else segments:
        count = (b - a) // size + 1
        if remaining is not None:
            count = min(count, remaining)
            remaining -= count
        if from_end:
            chunks.append(np.arange(b - (count - 1) * size, b + 1, size, dtype=np.int64))
        else:
            chunks.append(np.arange(a, a + count * size, size, dtype=np.int64))
        if remaining == 0:
            break
    if from_end:
        chunks.reverse()
    return np.concatenate(chunks) if chunks else np.empty(0, dtype=np.int64)


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
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in (response.headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if head:
            return
        if cut:
            self.wfile.write(response.body[: len(response.body) // 2])
            self.wfile.flush()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if self._drip(parts.path, response.body):
            return
        self.wfile.write(response.body)

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
    """The first prefix (or key) that ``path`` starts with, None when there is none."""
    for prefix in list(prefixes):
        if path.startswith(prefix):
            return prefix
    return None


def _raw_retry_after(headers: dict[str, str], status: int, faults: Faults) -> None:
    """Replace the ``Retry-After`` of a 429/418 by ``faults.retry_after_raw`` when it is set."""
    raw = faults.retry_after_raw
    if raw is None or status not in (429, 418):
        return
    headers.pop("Retry-After", None)
    if raw:
        headers["Retry-After"] = raw
