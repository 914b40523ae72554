"""Binance markets and their endpoints (hosts come from config; paths and limits from here)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from nautilus_dsm.constants import DEFAULT_VISION_URL
from nautilus_dsm.errors import InvalidInput

__all__ = [
    "DEFAULT_VISION_URL",
    "ENDPOINTS",
    "DataProvider",
    "Endpoints",
    "MarketType",
    "check_base_url",
    "rest_base_url",
]


class DataProvider(Enum):
    """Where the data comes from (Binance is the only provider today)."""

    BINANCE = "binance"


class MarketType(Enum):
    """Binance market: spot, USDT-margined (UM) futures, coin-margined (CM) futures."""

    SPOT = "spot"
    FUTURES_USDT = "futures_usdt"
    FUTURES_COIN = "futures_coin"

    @classmethod
    def parse(cls, value: MarketType | str) -> MarketType:
        """Parse ``spot``/``futures_usdt``/``futures_coin`` (any case) or pass a member through."""
        if isinstance(value, MarketType):
            return value
        text = str(value).strip().lower().replace("-", "_")
        aliases = {"um": "futures_usdt", "cm": "futures_coin", "futures": "futures_usdt"}
        text = aliases.get(text, text)
        for member in cls:
            if member.value == text or member.name.lower() == text:
                return member
        choices = ", ".join(m.value for m in cls)
        raise InvalidInput(f"unknown market type {value!r}; use one of: {choices}")

    @property
    def is_futures(self) -> bool:
        """True for the futures markets (UM and CM), False for spot."""
        return self is not MarketType.SPOT


@dataclass(frozen=True)
class Endpoints:
    """Binance hosts and paths of one market; config overrides the hosts (mirrors, tests)."""

    rest_host: str
    rest_prefix: str
    vision_prefix: str  # "data/spot": Vision's path, also the imitation's market segment
    kline_limit: int  # most klines one REST page returns
    weight_per_minute: int  # REQUEST_WEIGHT per minute (exchangeInfo rateLimits)
    ws_url: str  # the JSON market-stream endpoint (raw streams at /ws)

    @property
    def path_segment(self) -> str:
        """``spot``, ``futures/um`` or ``futures/cm``: the market in Vision and imitation paths."""
        return self.vision_prefix.removeprefix("data/")


ENDPOINTS: dict[MarketType, Endpoints] = {
    MarketType.SPOT: Endpoints(
        "https://api.binance.com",
        "/api/v3",
        "data/spot",
        1000,
        6000,
        "wss://stream.binance.com:9443/ws",
    ),
    MarketType.FUTURES_USDT: Endpoints(
        "https://fapi.binance.com",
        "/fapi/v1",
        "data/futures/um",
        1500,
        2400,
        "wss://fstream.binance.com/market/ws",
    ),
    MarketType.FUTURES_COIN: Endpoints(
        "https://dapi.binance.com",
        "/dapi/v1",
        "data/futures/cm",
        1500,
        2400,
        "wss://dstream.binance.com/ws",
    ),
}


_URL_EXAMPLE = "e.g. https://api.binance.com or http://127.0.0.1:8080"


def check_base_url(url: object, option_name: str) -> str | None:
    """
    Return a base URL override when it can be one, else raise :class:`InvalidInput`.

    ``None`` (use Binance's host) passes. A URL must be ``http://`` or ``https://`` with a
    host (and optional port and path prefix, for a proxy), without whitespace, query or
    fragment. For ``base_url_http`` the market's path (``/api/v3``...) is appended, so a URL
    already ending in one is refused too (it would request ``/api/v3/api/v3``). Pure: called
    before any I/O, so a typo fails at configuration rather than as a connection error.
    """
    from urllib.parse import urlsplit

    if url is None:
        return None
    fix = f"pass the scheme and host, {_URL_EXAMPLE}, or leave {option_name} unset for Binance"
    if not isinstance(url, str) or not url.strip():
        raise InvalidInput(f"{option_name} {url!r} is not a URL; {fix}")
    if url != url.strip() or any(c.isspace() for c in url):
        raise InvalidInput(f"{option_name} {url!r} contains whitespace; {fix}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not url.lower().startswith(f"{scheme}://"):
        found = f"scheme {parts.scheme!r}" if "://" in url else "no http:// or https://"
        raise InvalidInput(f"{option_name} {url!r} has {found}; {fix}")
    try:
        port = parts.port
    except ValueError:
        raise InvalidInput(f"{option_name} {url!r} has an invalid port; {fix}") from None
    if not parts.hostname or (port is None and parts.netloc.endswith(":")):
        raise InvalidInput(f"{option_name} {url!r} has no host; {fix}")
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise InvalidInput(f"{option_name} {url!r} has a query or fragment; {fix}")
    path = parts.path.rstrip("/")
    if option_name.endswith("http") and path.endswith(
        tuple(e.rest_prefix for e in ENDPOINTS.values())
    ):
        raise InvalidInput(
            f"{option_name} {url!r} ends in the API path, which is appended per market "
            f"(/api/v3, /fapi/v1, /dapi/v1); pass the host only, {_URL_EXAMPLE}"
        )
    return url


def rest_base_url(market_type: MarketType, base_url_http: str | None = None) -> str:
    """Return the REST base (host + version prefix) for a market, honouring an override host."""
    endpoints = ENDPOINTS[market_type]
    host = (base_url_http or endpoints.rest_host).rstrip("/")
    return host + endpoints.rest_prefix


# --------------------------------------------------------------------------------------------
# Intervals
# --------------------------------------------------------------------------------------------
