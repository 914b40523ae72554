"""Binance markets, endpoints, intervals, and the Nautilus instrument id <-> symbol mapping.

The mapping is identical to NautilusTrader's own Binance adapter
(``adapters/binance/common/symbol.py``) so that DSM bars and Binance execution share one
instrument id. The market type is always inferred from the instrument id: perpetual data from the
SPOT endpoint is silently wrong data, so a contradiction is an error, never a guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import TYPE_CHECKING

from nautilus_dsm.errors import InvalidInput, MarketTypeMismatch

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

VENUE = "BINANCE"


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
        return self is not MarketType.SPOT


@dataclass(frozen=True)
class Endpoints:
    """Binance paths of one market; hosts come from config so mirrors and tests can override."""

    rest_host: str
    rest_prefix: str
    vision_prefix: str
    kline_limit: int


ENDPOINTS: dict[MarketType, Endpoints] = {
    MarketType.SPOT: Endpoints("https://api.binance.com", "/api/v3", "data/spot", 1000),
    MarketType.FUTURES_USDT: Endpoints(
        "https://fapi.binance.com", "/fapi/v1", "data/futures/um", 1500
    ),
    MarketType.FUTURES_COIN: Endpoints(
        "https://dapi.binance.com", "/dapi/v1", "data/futures/cm", 1500
    ),
}
DEFAULT_VISION_URL = "https://data.binance.vision"


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

_SECOND_MS = 1_000
_MINUTE_MS = 60 * _SECOND_MS
_HOUR_MS = 60 * _MINUTE_MS
_DAY_MS = 24 * _HOUR_MS
# 1970-01-01 was a Thursday; Binance weekly klines open on Mondays 00:00 UTC.
_WEEK_OFFSET_MS = 4 * _DAY_MS


class Interval(Enum):
    """Binance kline intervals. ``1s`` exists on spot only; ``1M`` is a calendar month."""

    SECOND_1 = "1s"
    MINUTE_1 = "1m"
    MINUTE_3 = "3m"
    MINUTE_5 = "5m"
    MINUTE_15 = "15m"
    MINUTE_30 = "30m"
    HOUR_1 = "1h"
    HOUR_2 = "2h"
    HOUR_4 = "4h"
    HOUR_6 = "6h"
    HOUR_8 = "8h"
    HOUR_12 = "12h"
    DAY_1 = "1d"
    DAY_3 = "3d"
    WEEK_1 = "1w"
    MONTH_1 = "1M"

    @classmethod
    def parse(cls, value: Interval | str) -> Interval:
        """Parse Binance's interval string (``1m``, ``1h``, ``1M``...); case matters for m/M."""
        if isinstance(value, Interval):
            return value
        for member in cls:
            if member.value == value:
                return member
        choices = " ".join(m.value for m in cls)
        raise InvalidInput(f"unknown interval {value!r}; Binance supports: {choices}")

    @property
    def is_month(self) -> bool:
        return self is Interval.MONTH_1

    @property
    def fixed_ms(self) -> int:
        """Length in milliseconds; undefined for ``1M`` (calendar months differ)."""
        if self.is_month:
            raise ValueError("1M has no fixed length; use open_times()/next_open()")
        return _INTERVAL_MS[self]

    @property
    def step(self) -> int:
        """Number of units (``15`` for ``15m``)."""
        return int(self.value[:-1])

    @property
    def unit(self) -> str:
        return self.value[-1]

    def check_market(self, market_type: MarketType) -> None:
        """Raise when Binance does not serve this interval on the market (1s is spot only)."""
        if self is Interval.SECOND_1 and market_type is not MarketType.SPOT:
            raise InvalidInput(
                f"interval 1s is served on SPOT only, not {market_type.name}; "
                "use 1m or a longer interval for futures"
            )

    def floor_ms(self, ts_ms: int) -> int:
        """Open time (ms) of the bar containing ``ts_ms``."""
        if self.is_month:
            dt = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
            return _ms(datetime(dt.year, dt.month, 1, tzinfo=UTC))
        size = _INTERVAL_MS[self]
        offset = _WEEK_OFFSET_MS if self is Interval.WEEK_1 else 0
        return (ts_ms - offset) // size * size + offset

    def ceil_ms(self, ts_ms: int) -> int:
        """First bar open time at or after ``ts_ms``."""
        floor = self.floor_ms(ts_ms)
        return floor if floor == ts_ms else self.next_open_ms(floor)

    def next_open_ms(self, open_ms: int) -> int:
        """Open time of the bar after the one opening at ``open_ms`` (= its close, exclusive)."""
        if self.is_month:
            dt = datetime.fromtimestamp(open_ms / 1000, tz=UTC)
            year, month = (dt.year + 1, 1) if dt.month == 12 else (dt.year, dt.month + 1)
            return _ms(datetime(year, month, 1, tzinfo=UTC))
        return open_ms + _INTERVAL_MS[self]

    def open_times_ms(self, start_ms: int, end_ms: int) -> list[int]:
        """Every bar open time in ``[start_ms, end_ms)`` on the interval's grid."""
        if not self.is_month:
            size = _INTERVAL_MS[self]
            first = self.ceil_ms(start_ms)
            return list(range(first, end_ms, size)) if first < end_ms else []
        out: list[int] = []
        t = self.ceil_ms(start_ms)
        while t < end_ms:
            out.append(t)
            t = self.next_open_ms(t)
        return out

    def count(self, start_ms: int, end_ms: int) -> int:
        """Number of bar open times in ``[start_ms, end_ms)``."""
        if self.is_month:
            return len(self.open_times_ms(start_ms, end_ms))
        first = self.ceil_ms(start_ms)
        if first >= end_ms:
            return 0
        return (end_ms - 1 - first) // _INTERVAL_MS[self] + 1

    def on_grid_mask(self, open_ms: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """True where an epoch-ms open time lies on this interval's grid.

        The grid is where Binance opens bars: multiples of the length from the epoch, Mondays
        00:00 UTC for ``1w``, the first of a month 00:00 UTC for ``1M``. An off-grid open time
        means the data is of another interval (or corrupt). Vectorised: a year of 1s bars is
        one pass.
        """
        import numpy as np  # markets is imported by light entry points; numpy only when used

        times = np.asarray(open_ms, dtype=np.int64)
        if self.is_month:
            months = times.astype("datetime64[ms]").astype("datetime64[M]")
            return months.astype("datetime64[ms]").astype(np.int64) == times
        size = _INTERVAL_MS[self]
        offset = _WEEK_OFFSET_MS if self is Interval.WEEK_1 else 0
        return (times - offset) % size == 0


_INTERVAL_MS: dict[Interval, int] = {
    Interval.SECOND_1: _SECOND_MS,
    Interval.MINUTE_1: _MINUTE_MS,
    Interval.MINUTE_3: 3 * _MINUTE_MS,
    Interval.MINUTE_5: 5 * _MINUTE_MS,
    Interval.MINUTE_15: 15 * _MINUTE_MS,
    Interval.MINUTE_30: 30 * _MINUTE_MS,
    Interval.HOUR_1: _HOUR_MS,
    Interval.HOUR_2: 2 * _HOUR_MS,
    Interval.HOUR_4: 4 * _HOUR_MS,
    Interval.HOUR_6: 6 * _HOUR_MS,
    Interval.HOUR_8: 8 * _HOUR_MS,
    Interval.HOUR_12: 12 * _HOUR_MS,
    Interval.DAY_1: _DAY_MS,
    Interval.DAY_3: 3 * _DAY_MS,
    Interval.WEEK_1: 7 * _DAY_MS,
}


def _ms(dt: datetime) -> int:
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# The forms ``fetch`` accepts for start/end, named by every message that refuses one.
ACCEPTED_TIMES = (
    "a timezone-aware datetime, e.g. datetime(2024, 1, 1, tzinfo=UTC), or an ISO-8601 string "
    "with an offset, e.g. '2024-01-01T00:00:00Z' or '2024-01-01T00:00:00+02:00'"
)


def to_ms(dt: datetime) -> int:
    """UTC datetime -> epoch milliseconds, exactly; naive datetimes are refused."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise InvalidInput(
            f"naive datetime {dt.isoformat()} is ambiguous; pass a timezone-aware UTC datetime, "
            "e.g. datetime(2024, 1, 1, tzinfo=UTC), or an ISO-8601 string with an offset, "
            "e.g. '2024-01-01T00:00:00Z'"
        )
    return _ms(dt)


def parse_instant(value: object, name: str = "time") -> datetime:
    """
    Return ``value`` as a timezone-aware datetime, or raise :class:`InvalidInput`.

    Accepted: an aware ``datetime`` (``pandas.Timestamp`` included) and an ISO-8601 string with
    an offset or ``Z``. Refused, naming the accepted forms: naive datetimes and strings (whose
    zone is a guess), dates, numbers (seconds or milliseconds? another guess) and anything else.
    """
    if isinstance(value, datetime):
        to_ms(value)  # refuses a naive one with the shared message
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidInput(
                f"{name} {value!r} is not an ISO-8601 datetime; pass {ACCEPTED_TIMES}"
            ) from None
        if parsed.tzinfo is None or parsed.utcoffset() is None:
            raise InvalidInput(
                f"{name} {value!r} has no UTC offset, so its time zone is ambiguous; "
                f"pass {ACCEPTED_TIMES}"
            )
        return parsed
    kind = type(value).__name__
    raise InvalidInput(f"{name} {value!r} ({kind}) is not a datetime; pass {ACCEPTED_TIMES}")


def from_ms(ms: int) -> datetime:
    """Epoch milliseconds -> UTC datetime, exactly."""
    return _EPOCH + timedelta(milliseconds=ms)


def check_range(start: datetime, end: datetime) -> tuple[int, int]:
    """Validate a ``[start, end)`` request of aware datetimes; return it in epoch milliseconds.

    Strings are parsed by the caller that accepts them (``fetch``: :func:`parse_instant`), so
    a caller that keeps ``start``/``end`` as datetimes (``ingest``'s report) never holds one.
    """
    for name, value in (("start", start), ("end", end)):
        if not isinstance(value, datetime):
            raise InvalidInput(
                f"{name} {value!r} ({type(value).__name__}) is not a datetime; pass a "
                "timezone-aware datetime, e.g. datetime(2024, 1, 1, tzinfo=UTC)"
            )
    start_ms, end_ms = to_ms(start), to_ms(end)
    if start_ms >= end_ms:
        raise InvalidInput(
            f"start {start.isoformat()} is not before end {end.isoformat()}; "
            "the range is [start, end), so pass an end after the start"
        )
    return start_ms, end_ms


def check_not_future(start_ms: int, now_ms: int) -> None:
    """Refuse a start after "now": no bar of it exists yet, so the request is a mistake.

    Pure, so the caller decides which clock is "now" (the exchange's, once it is known).
    """
    if start_ms > now_ms:
        raise InvalidInput(
            f"start {_iso(start_ms)} is in the future (now is {_iso(now_ms)}); only closed "
            "bars exist, so pass a start before now"
        )


# A frame row is ~100 bytes (12 columns, 8 bytes each, plus validity): 50 M rows ~ 5 GB.
DEFAULT_MAX_ROWS = 50_000_000


def check_max_rows(value: object, name: str = "max_rows") -> int:
    """Return a valid row cap (an int >= 1), or raise :class:`InvalidInput`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(
            f"{name}={value!r} is not a positive whole number of rows; pass e.g. "
            f"{DEFAULT_MAX_ROWS:_} (the default)"
        )
    return value


def check_row_cap(
    interval: Interval, start_ms: int, stop_ms: int, max_rows: int, what: str = "the request"
) -> int:
    """Refuse a ``[start_ms, stop_ms)`` request whose frame would hold more than ``max_rows``.

    Returns the number of bars the range can hold. One frame is held in memory whole;
    ``ingest`` streams a range of any size in chunks, so it is the advice.
    """
    rows = interval.count(start_ms, stop_ms) if stop_ms > start_ms else 0
    if rows > max_rows:
        raise InvalidInput(
            f"{what} {interval.value} {_iso(start_ms)}..{_iso(stop_ms)} would be {rows:,} bars "
            f"in one frame, more than max_rows={max_rows:,} (~{rows * 100 / 1e9:.1f} GB); use "
            "ingest (`nautilus-dsm ingest` or nautilus_dsm.catalog.ingest), which streams the "
            "range in chunks, or narrow the range, or raise max_rows"
        )
    return rows


def _iso(ms: int) -> str:
    return from_ms(ms).isoformat().replace("+00:00", "Z")


# --------------------------------------------------------------------------------------------
# Symbols
# --------------------------------------------------------------------------------------------

_LINEAR_QUOTES = ("USDT", "BUSD", "TUSD", "FDUSD", "USDC", "DAI")
# Binance's public symbol alphabet; anything else (dots, slashes, spaces) could escape a path.
# The one definition: the cache and Vision validate with it too (check_binance_symbol).
BINANCE_SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,24}(_(PERP|[0-9]{6}))?$")
_NAUTILUS_SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,24}(-PERP|_[0-9]{6})?$")


def _is_linear(base_symbol: str) -> bool:
    # Same guard as NautilusTrader: COIN-M {BASE}USD can overlap a linear quote (BNBUSD / BUSD).
    return any(
        base_symbol.endswith(q) and (not q.endswith("USD") or len(base_symbol) > len(q) + 2)
        for q in _LINEAR_QUOTES
    )


@dataclass(frozen=True)
class ResolvedInstrument:
    """An instrument resolved to its market: the Nautilus id and the Binance symbol."""

    instrument_id: str  # "BTCUSDT-PERP.BINANCE"
    symbol: str  # Binance's symbol: "BTCUSDT", "BTCUSD_PERP"
    market_type: MarketType

    @property
    def nautilus_symbol(self) -> str:
        return self.instrument_id.rsplit(".", 1)[0]


def market_type_of(nautilus_symbol: str) -> MarketType:
    """Infer the market from a Nautilus Binance symbol (``BTCUSDT-PERP`` -> FUTURES_USDT)."""
    if nautilus_symbol.endswith("-PERP"):
        base = nautilus_symbol[: -len("-PERP")]
        return MarketType.FUTURES_USDT if _is_linear(base) else MarketType.FUTURES_COIN
    if "_" in nautilus_symbol:  # deliverable: BTCUSDT_240628 (UM) / BTCUSD_240628 (CM)
        base = nautilus_symbol.split("_", 1)[0]
        return MarketType.FUTURES_USDT if _is_linear(base) else MarketType.FUTURES_COIN
    return MarketType.SPOT


def to_binance_symbol(nautilus_symbol: str) -> str:
    """``BTCUSDT-PERP`` -> ``BTCUSDT``; ``BTCUSD-PERP`` -> ``BTCUSD_PERP``; others unchanged."""
    if nautilus_symbol.endswith("-PERP"):
        base = nautilus_symbol[: -len("-PERP")]
        return base if _is_linear(base) else base + "_PERP"
    return nautilus_symbol


def to_nautilus_symbol(binance_symbol: str, market_type: MarketType) -> str:
    """``BTCUSDT`` on FUTURES_USDT -> ``BTCUSDT-PERP``; ``BTCUSD_PERP`` -> ``BTCUSD-PERP``."""
    if market_type is MarketType.SPOT or binance_symbol[-1].isdigit():
        return binance_symbol
    if binance_symbol.endswith("_PERP"):
        return binance_symbol.replace("_", "-")
    return binance_symbol + "-PERP"


_DESCRIBE = {
    MarketType.SPOT: "a SPOT instrument",
    MarketType.FUTURES_USDT: "a USDT-margined futures instrument",
    MarketType.FUTURES_COIN: "a coin-margined futures instrument",
}


def _mismatch(instrument_id: str, inferred: MarketType, given: MarketType) -> MarketTypeMismatch:
    hint = {
        MarketType.SPOT: "the spot instrument id (e.g. BTCUSDT.BINANCE)",
        MarketType.FUTURES_USDT: "the USDT-M perpetual id (e.g. BTCUSDT-PERP.BINANCE)",
        MarketType.FUTURES_COIN: "the COIN-M perpetual id (e.g. BTCUSD-PERP.BINANCE)",
    }[given]
    return MarketTypeMismatch(
        f"{instrument_id} is {_DESCRIBE[inferred]}, but market type {given.name} was requested; "
        f"use MarketType.{inferred.name} (--market-type {inferred.value}) or leave it unset, "
        f"or use {hint}"
    )


def resolve_instrument(
    instrument_id_or_symbol: str,
    market_type: MarketType | str | None = None,
) -> ResolvedInstrument:
    """Resolve a Nautilus instrument id or a raw Binance symbol to its market.

    A Nautilus id (``BTCUSDT-PERP.BINANCE``) carries its market; an explicit ``market_type``
    that contradicts it raises :class:`MarketTypeMismatch`. A raw Binance symbol (no venue,
    e.g. ``BTCUSDT``) takes the explicit market type, spot when none is given.
    """
    given = MarketType.parse(market_type) if market_type is not None else None
    text = str(instrument_id_or_symbol).strip()
    if "." in text:
        symbol_part, venue = text.rsplit(".", 1)
        if not venue.isalnum():  # "../x", "BTC.USDT/": a path, not a venue
            _check_symbol(text, BINANCE_SYMBOL_RE, text)
        if venue != VENUE:
            raise InvalidInput(
                f"instrument id {text!r} has venue {venue!r}; nautilus-dsm serves Binance data, "
                f"so use the {VENUE} venue, e.g. BTCUSDT-PERP.{VENUE}"
            )
        _check_symbol(symbol_part, _NAUTILUS_SYMBOL_RE, text)
        inferred = market_type_of(symbol_part)
        if given is not None and given is not inferred:
            raise _mismatch(text, inferred, given)
        return ResolvedInstrument(text, to_binance_symbol(symbol_part), inferred)

    raw = text.upper()
    if raw.endswith("-PERP"):  # a Nautilus symbol without the venue
        return resolve_instrument(f"{raw}.{VENUE}", given)
    _check_symbol(raw, BINANCE_SYMBOL_RE, text)
    if raw.endswith("_PERP") or "_" in raw:
        inferred = market_type_of(raw if not raw.endswith("_PERP") else raw[:-5] + "-PERP")
        if given is not None and given is not inferred:
            raise _mismatch(raw, inferred, given)
        market = inferred
    else:
        market = given or MarketType.SPOT
    return ResolvedInstrument(f"{to_nautilus_symbol(raw, market)}.{VENUE}", raw, market)


def check_binance_symbol(symbol: str) -> str:
    """Return ``symbol`` when it is a Binance symbol (``BTCUSDT``, ``BTCUSD_PERP``), else raise.

    Symbols become file and URL path segments (cache folders, Vision file names), so anything
    outside Binance's alphabet is refused with :class:`InvalidInput` before it reaches a path.
    """
    _check_symbol(symbol, BINANCE_SYMBOL_RE, symbol)
    return symbol


def _check_symbol(symbol: str, pattern: re.Pattern[str], original: str) -> None:
    if not pattern.fullmatch(symbol):  # fullmatch: "$" would accept a trailing newline
        raise InvalidInput(
            f"invalid symbol {original!r}: Binance symbols are upper-case letters and digits "
            "(e.g. BTCUSDT, BTCUSD_PERP, or the Nautilus id BTCUSDT-PERP.BINANCE)"
        )
