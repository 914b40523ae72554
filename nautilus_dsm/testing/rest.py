"""REST of the Binance imitation: klines, exchangeInfo, time and ping with Binance's semantics.

Pagination and limits, the error codes (-1100, -1102, -1120, -1121, -1130, -1023), request
weight per minute (``X-MBX-USED-WEIGHT-1M``, 429 with ``Retry-After``, the 418 ban of a client
that ignores it) and the REST faults of :class:`~nautilus_dsm.testing.faults.Faults`.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from nautilus_dsm.common import ENDPOINTS, Interval, MarketType
from nautilus_dsm.testing.faults import Faults
from nautilus_dsm.testing.klines import kline_spec, rest_rows
from nautilus_dsm.testing.responses import Response, error_response, json_response, not_found
from nautilus_dsm.testing.series import KlineSeries, parse_interval, without
from nautilus_dsm.testing.symbols import SymbolSpec, exchange_info

# "/api/v3" -> SPOT, "/fapi/v1" -> FUTURES_USDT, "/dapi/v1" -> FUTURES_COIN
REST_PREFIXES: dict[str, MarketType] = {ENDPOINTS[m].rest_prefix: m for m in MarketType}
DEFAULT_LIMIT = 500


class _BadRequest(Exception):
    def __init__(self, response: Response) -> None:
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


class RestApi:
    """The REST endpoints of the three markets (``/api/v3``, ``/fapi/v1``, ``/dapi/v1``).

    Parameters
    ----------
    series
        Where the klines, the symbols and "now" come from.
    faults
        The imitation's fault switches.
    rate_clock
        Returns epoch seconds for the weight minute windows, ``Retry-After`` and bans.
    """

    def __init__(
        self, series: KlineSeries, faults: Faults, rate_clock: Callable[[], float]
    ) -> None:
        self._series = series
        self._faults = faults
        self._rate_clock = rate_clock
        self._lock = threading.Lock()
        self._rates = {market: _RateState() for market in MarketType}

    def answer(self, market: MarketType, endpoint: str, query: dict[str, str]) -> Response:
        """Return the answer to ``endpoint`` (``klines``, ...) of ``market`` after the weight."""
        admitted = self._admit(market, _weight(market, endpoint, query))
        if isinstance(admitted, Response):
            return admitted
        try:
            response = self._endpoint(market, endpoint, query)
        except _BadRequest as exc:
            response = exc.response
        response.headers = {**(response.headers or {}), "X-MBX-USED-WEIGHT-1M": str(admitted)}
        return response

    # -- weight, 429/418 and forced errors ----------------------------------------------------

    def _admit(self, market: MarketType, weight: int) -> Response | int:
        """Count ``weight`` in the minute window: the used weight, or the refusal to send."""
        faults = self._faults
        state = self._rates[market]
        limit = faults.weight_limit
        if limit is None:
            limit = ENDPOINTS[market].weight_per_minute
        now = self._rate_clock()
        with self._lock:
            window = int(now // 60)
            if window != state.window:
                state.window, state.used = window, 0
            if state.banned_until > now:
                return self._ban_response(state, now)
            forced = self._forced_error(state, limit, now)
            if forced is not None:
                return forced
            if state.wait_until > now:
                state.ignored += 1
                if state.ignored > faults.ban_after_ignored:
                    state.banned_until = now + faults.ban_seconds
                    return self._ban_response(state, now)
                return self._error(
                    429, _limit_message(limit), math.ceil(state.wait_until - now), state
                )
            if state.used + weight > limit:
                state.wait_until = (window + 1) * 60.0
                state.ignored = 0
                return self._error(
                    429, _limit_message(limit), math.ceil(state.wait_until - now), state
                )
            state.used += weight
            return state.used

    def _forced_error(self, state: _RateState, limit: int, now: float) -> Response | None:
        """``faults.rest_418`` / ``rest_429`` / ``rest_5xx``: this answer, when one is due."""
        faults = self._faults
        if faults.take("rest_418"):
            return self._error(
                418, _ban_message(now + faults.retry_after_s), faults.retry_after_s, state
            )
        if faults.take("rest_429"):
            return self._error(429, _limit_message(limit), faults.retry_after_s, state)
        if faults.take("rest_5xx"):
            return self._error(503, "Service Unavailable.", None, state, code=-1008)
        return None

    def _error(
        self,
        status: int,
        msg: str,
        retry_after: int | None,
        state: _RateState,
        code: int = -1003,
    ) -> Response:
        headers = {"X-MBX-USED-WEIGHT-1M": str(state.used)}
        if retry_after is not None:
            headers["Retry-After"] = str(max(1, retry_after))
        _raw_retry_after(headers, status, self._faults)
        return json_response(status, {"code": code, "msg": msg}, headers)

    def _ban_response(self, state: _RateState, now: float) -> Response:
        return self._error(
            418, _ban_message(state.banned_until), math.ceil(state.banned_until - now), state
        )

    # -- endpoints ---------------------------------------------------------------------------

    def _endpoint(self, market: MarketType, endpoint: str, query: dict[str, str]) -> Response:
        if endpoint == "ping":
            return json_response(200, {})
        if endpoint == "time":
            if self._faults.time_unavailable:
                return not_found()
            return json_response(200, {"serverTime": self._series.now_ms()})
        if endpoint == "exchangeInfo":
            return self._exchange_info(market, query)
        if endpoint == "klines":
            if self._faults.take("rest_klines_unknown_symbol"):
                return error_response(400, -1121, "Invalid symbol.")
            return self._bad_klines(self._klines(market, query))
        return not_found()

    def _exchange_info(self, market: MarketType, query: dict[str, str]) -> Response:
        listed = self._series.symbols(market)
        wanted: list[str] | None = None
        if "symbol" in query:
            wanted = [query["symbol"]]
        elif "symbols" in query:
            try:
                wanted = [str(s) for s in msgspec.json.decode(query["symbols"])]
            except (msgspec.DecodeError, TypeError):
                wanted = [""]
        if wanted is not None and any(symbol not in listed for symbol in wanted):
            return error_response(400, -1121, "Invalid symbol.")
        specs = [listed[s] for s in wanted] if wanted is not None else list(listed.values())
        payload = exchange_info(market, specs, self._series.now_ms(), self._faults.weight_limit)
        return json_response(200, payload)

    def _klines(self, market: MarketType, query: dict[str, str]) -> Response:
        spec, interval, limit, start, end = _klines_params(market, query, self._series)
        series = self._series
        now = series.now_ms()
        hi = now if end is None else min(end, now)
        if start is not None:
            raw = series.select(market, spec, interval, start, hi, limit, now_ms=now)
        else:
            raw = series.select(market, spec, interval, 0, hi, limit, from_end=True, now_ms=now)
        raw = without(raw, tuple(self._faults.rest_gaps_for(spec.symbol)))
        rows = rest_rows(raw, kline_spec(spec, market))
        if self._faults.duplicate_rows and rows:
            middle = len(rows) // 2
            rows.insert(middle + 1, rows[middle])
        if self._faults.out_of_order_rows and len(rows) >= 2:
            rows[0], rows[1] = rows[1], rows[0]
        return json_response(200, self._rewrite(market, query, rows))

    def _rewrite(
        self, market: MarketType, query: dict[str, str], rows: list[tuple[object, ...]]
    ) -> object:
        """``faults.rest_rewrite`` applied to a klines answer (the rows unchanged without it)."""
        rewrite = self._faults.rest_rewrite
        if rewrite is None:
            return rows
        prefix = ENDPOINTS[market].rest_prefix
        return rewrite(f"{prefix}/klines", dict(query), [list(row) for row in rows])

    def _bad_klines(self, response: Response) -> Response:
        """``faults.rest_bad_kline_open_ms``: those klines' open price becomes ``"abc"``."""
        bad = set(self._faults.rest_bad_kline_open_ms)
        if not bad or response.status != 200:
            return response
        rows = msgspec.json.decode(response.body)
        for row in rows:
            if row[0] in bad:
                row[1] = "abc"
        return json_response(200, rows, response.headers)


def _klines_params(
    market: MarketType, query: dict[str, str], series: KlineSeries
) -> tuple[SymbolSpec, Interval, int, int | None, int | None]:
    """Return the checked ``(spec, interval, limit, startTime, endTime)`` of a klines request.

    Raises :class:`_BadRequest` with Binance's error answer, in Binance's order of checks.
    """
    for name in ("symbol", "interval"):
        if not query.get(name):
            raise _BadRequest(
                error_response(
                    400,
                    -1102,
                    f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.",
                )
            )
    spec = series.find(market, query["symbol"])
    if spec is None:
        raise _BadRequest(error_response(400, -1121, "Invalid symbol."))
    interval = parse_interval(query["interval"], market)
    if interval is None:
        raise _BadRequest(error_response(400, -1120, "Invalid interval."))
    limit = _int_param(query, "limit", DEFAULT_LIMIT)
    if not 1 <= limit <= ENDPOINTS[market].kline_limit:
        raise _BadRequest(
            error_response(400, -1130, "Data sent for parameter 'limit' is not valid.")
        )
    start = _int_param(query, "startTime", None)
    end = _int_param(query, "endTime", None)
    if start is not None and end is not None and start > end:
        raise _BadRequest(error_response(400, -1023, "Start time is greater than end time."))
    return spec, interval, limit, start, end


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
            error_response(
                400,
                -1100,
                f"Illegal characters found in parameter '{name}'; "
                "legal range is '^[0-9]{1,20}$'.",
            )
        )
    return int(text)


def _raw_retry_after(headers: dict[str, str], status: int, faults: Faults) -> None:
    """Replace the ``Retry-After`` of a 429/418 by ``faults.retry_after_raw`` when it is set."""
    raw = faults.retry_after_raw
    if raw is None or status not in (429, 418):
        return
    headers.pop("Retry-After", None)
    if raw:
        headers["Retry-After"] = raw
