"""Binance's market-stream protocol as the imitation speaks it (pure: no sockets, no loop).

The paths of each market (from :data:`nautilus_dsm.common.ENDPOINTS`), Binance's push cadence
and incoming-message limits, stream names, kline events built from the REST generator's raw
klines (the same decimal strings as REST), and the error answers of the JSON methods. The
server (:mod:`nautilus_dsm.testing.ws`) puts them on the wire.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec

import nautilus_dsm.testing.klines as klines
from nautilus_dsm.common import ENDPOINTS, Interval, MarketType


def _market_prefixes() -> dict[str, MarketType]:
    # "/<market segment>" + Binance's own path before "/ws" (USD-M's "/market"), and the plain
    # "/<market segment>" too, so ws://host:port/{market}/ws is a template for every market.
    prefixes: dict[str, MarketType] = {}
    for market, endpoints in ENDPOINTS.items():
        binance = urlsplit(endpoints.ws_url).path.removesuffix("/ws")
        prefixes[f"/{endpoints.path_segment}{binance}"] = market
        prefixes[f"/{endpoints.path_segment}"] = market
    return prefixes


# Path prefix -> market: ``/spot``, ``/futures/um/market`` (alias ``/futures/um``), ``/futures/cm``.
WS_PATHS: dict[str, MarketType] = _market_prefixes()
# The raw endpoint of each market: ``/spot/ws``, ``/futures/um/market/ws``, ``/futures/cm/ws``.
BASE_PATHS: dict[MarketType, str] = {
    market: f"/{e.path_segment}{urlsplit(e.ws_url).path}" for market, e in ENDPOINTS.items()
}
# Binance's incoming-message limit per connection and second.
MESSAGE_LIMITS: dict[MarketType, int] = {
    MarketType.SPOT: 5,
    MarketType.FUTURES_USDT: 10,
    MarketType.FUTURES_COIN: 10,
}
FUTURES_CADENCE_S = 0.25
SPOT_1S_CADENCE_S = 1.0
SPOT_CADENCE_S = 2.0
STREAM_RE = re.compile(r"^(?P<symbol>[a-z0-9_]+)@kline_(?P<interval>[0-9]+[smhdwM])$")
METHODS = "`SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY`"


def cadence_s(market: MarketType, interval: Interval) -> float:
    """Return Binance's push period of a kline stream."""
    if market.is_futures:
        return FUTURES_CADENCE_S
    return SPOT_1S_CADENCE_S if interval is Interval.SECOND_1 else SPOT_CADENCE_S


def route(path: str) -> tuple[MarketType, bool, list[str]] | None:
    """Return ``(market, combined, initial streams)`` of a request path, None when unknown."""
    parts = urlsplit(path)
    for prefix, market in WS_PATHS.items():
        if parts.path == prefix + "/stream":
            query = parse_qs(parts.query)
            names = query.get("streams", [""])[0]
            return market, True, [s for s in names.split("/") if s]
        if parts.path == prefix + "/ws":
            return market, False, []
        if parts.path.startswith(prefix + "/ws/"):
            return market, False, [s for s in parts.path[len(prefix) + 4 :].split("/") if s]
    return None


def valid_stream(name: str) -> bool:
    """Return whether ``name`` is a well-formed ``<symbol>@kline_<interval>`` (listed or not)."""
    match = STREAM_RE.match(name)
    if match is None:
        return False
    try:
        Interval.parse(match["interval"])
    except ValueError:
        return False
    return True


def units_text(units: int, decimals: int) -> str:
    """Return an int count of 1e-8 as Binance's decimal string (``klines.format_units``'s)."""
    whole, frac = divmod(units, klines.UNIT)
    if decimals == 0:
        return str(whole)
    return f"{whole}.{frac // 10 ** (8 - decimals):0{decimals}d}"


def kline_events(
    raw: Any, ks: klines.KlineSpec, symbol: str, interval: Interval, closed: bool, event_ms: int
) -> list[dict[str, Any]]:
    """Return raw klines (``klines.RAW_SCHEMA`` frame) as Binance kline events."""
    pd, qd, vd = ks.price_decimals, ks.qty_decimals, ks.quote_decimals
    out = []
    for row in raw.iter_rows(named=True):
        first = row["open_time"] // 10
        out.append(
            {
                "e": "kline",
                "E": event_ms,
                "s": symbol,
                "k": {
                    "t": row["open_time"],
                    "T": row["close_time"],
                    "s": symbol,
                    "i": interval.value,
                    "f": first,
                    "L": first + row["trades"] - 1,
                    "o": units_text(row["open"], pd),
                    "c": units_text(row["close"], pd),
                    "h": units_text(row["high"], pd),
                    "l": units_text(row["low"], pd),
                    "v": units_text(row["volume"], qd),
                    "n": row["trades"],
                    "x": closed,
                    "q": units_text(row["quote_volume"], vd),
                    "V": units_text(row["taker_buy_base_volume"], qd),
                    "Q": units_text(row["taker_buy_quote_volume"], vd),
                    "B": "0",
                },
            }
        )
    return out


def error_answer(code: int, msg: str, ident: object) -> bytes:
    """Return a method's error answer: ``{"error": {"code", "msg"}, "id"}``."""
    return msgspec.json.encode({"error": {"code": code, "msg": msg}, "id": ident})


def parse_request(text: str) -> tuple[object, str, Any] | bytes:
    """Return ``(id, method, params)`` of a JSON method request, or the error answer to send."""
    try:
        request = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        return error_answer(3, f"Invalid JSON: {exc}", None)
    if not isinstance(request, dict):
        return error_answer(2, "Invalid request: expected an object", None)
    ident = request.get("id")
    if ident is not None and (not isinstance(ident, int) or isinstance(ident, bool) or ident < 0):
        return error_answer(2, "Invalid request: request ID must be an unsigned integer", None)
    unknown = set(request) - {"method", "params", "id"}
    if unknown:
        return error_answer(0, "Unknown property", ident)
    method = request.get("method")
    if not isinstance(method, str):
        return error_answer(2, "Invalid request: missing field `method`", ident)
    return ident, method, request.get("params", [])
