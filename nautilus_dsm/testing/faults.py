"""Fault switches of the Binance imitation: the failures a real client meets, on demand.

Every switch is a plain attribute, so a test flips it while the server runs. Counters ("the next
N answers fail") are consumed under a lock, so concurrent requests never both take the last one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Faults:
    """Mutable fault switches; the server reads them on every request.

    Attributes
    ----------
    gaps
        ``(symbol, start_ms, end_ms)``: bars with open time in ``[start_ms, end_ms)`` are absent
        from REST and Vision (every market and interval of that symbol).
    vision_missing, vision_bad_checksum, vision_truncated, vision_wrong_columns
        Vision zip names (``"BTCUSDT-1m-2024-01-03.zip"``): answered 404; with a ``.CHECKSUM``
        that does not match; with the zip cut in half; with a CSV of 11 columns (no ``ignore``).
    vision_timestamps_us
        Force µs (True) or ms (False) timestamps in every Vision CSV; None = Binance's behaviour
        (spot files dated 2025-01-01 or later in µs, everything else in ms).
    rest_5xx, rest_429, rest_418
        The next N REST requests answer 503 / 429 / 418 (``Retry-After: retry_after_s``).
    retry_after_s
        ``Retry-After`` of the forced 429/418 answers.
    ban_seconds
        Length of the ban (418) for a client that ignores ``Retry-After`` after a real 429.
    weight_limit
        Request-weight limit per minute; None = Binance's (6000 spot, 2400 futures).
    ban_after_ignored
        How many requests sent while told to wait are tolerated before the ban.
    latency_s
        Delay before each answer.
    reset_mid_body
        The next N answers send their headers and half the body, then close the socket.
    duplicate_rows, out_of_order_rows
        REST kline pages repeat a row / swap their first two rows.
    down
        Close every connection without answering (an outage).

    Bounded time (hangs, drips, ``Retry-After``, redirects):

    hang
        Path prefixes (``"/data/"`` for Vision, ``"/fapi/v1/klines"``): the request is read and
        recorded (status 0), then nothing is ever sent until the client hangs up.
    drip
        Path prefix -> bytes per second: the headers go out at once, the body at that rate.
    retry_after_raw
        Sent verbatim as the ``Retry-After`` of every 429/418 answer instead of
        ``retry_after_s`` (``"0"``, ``"nan"``, ``"inf"``, an HTTP-date...); ``""`` sends none.
    redirect_to
        Path prefix -> base URL: answered 302 to that base + the request's path and query (the
        imitation's own ``url`` makes a redirect loop, another host an off-host redirect).
    redirect_next
        The next N requests answer 302 to their own URL (a same-host hop), then serve.
    rest_klines_unknown_symbol
        (exchange time and live streams) The next N klines requests answer ``400 -1121 Invalid
        symbol.`` although the symbol is listed (Binance's transient -1121).
    rest_bad_kline_open_ms
        (exchange time and live streams) REST klines with these open times (epoch ms) are served
        with the open price ``"abc"``: a kline that cannot be parsed.
    time_unavailable
        (exchange time and live streams) ``GET /time`` answers 404 (a mirror without it).
    vision_file_gaps
        ``(zip_name, start_ms, end_ms)``: rows with open time in ``[start_ms, end_ms)`` are
        absent from that one Vision file only (a short monthly zip whose daily zips and REST
        still have the bars; the ``.CHECKSUM`` matches the short file).
    rest_gaps
        ``(symbol, start_ms, end_ms)``: bars absent from REST kline pages only (a short page;
        Vision still has them).
    rest_rewrite
        ``(path, query, rows) -> rows``: rewrites every REST klines answer before it is sent
        (``rows`` are the 12-field lists Binance would send; return any JSON-encodable value),
        e.g. a price ``"abc"``, a ``null``, 11 or 13 fields, or 1h rows for a 1m request.
    vision_csv_rewrite
        ``(member name, csv bytes) -> csv bytes``: rewrites the CSV inside every Vision zip
        before it is zipped and checksummed (so the checksum is valid), e.g. a BOM, a leading
        space, CRLF, an empty field, another day's rows or no rows at all. Must be
        deterministic: the zip and its ``.CHECKSUM`` are built from one call each.
    vision_member_names
        Zip name -> the file name of the CSV member inside it (default: the zip's name with
        ``.csv``), e.g. an ETHUSDT member inside a BTCUSDT zip.
    """

    gaps: list[tuple[str, int, int]] = field(default_factory=list)
    vision_missing: set[str] = field(default_factory=set)
    vision_bad_checksum: set[str] = field(default_factory=set)
    vision_truncated: set[str] = field(default_factory=set)
    vision_wrong_columns: set[str] = field(default_factory=set)
    vision_timestamps_us: bool | None = None
    rest_5xx: int = 0
    rest_429: int = 0
    rest_418: int = 0
    retry_after_s: int = 1
    ban_seconds: int = 120
    weight_limit: int | None = None
    ban_after_ignored: int = 3
    latency_s: float = 0.0
    reset_mid_body: int = 0
    duplicate_rows: bool = False
    out_of_order_rows: bool = False
    down: bool = False
    # -- bounded time --
    hang: set[str] = field(default_factory=set)
    drip: dict[str, float] = field(default_factory=dict)
    retry_after_raw: str | None = None
    redirect_to: dict[str, str] = field(default_factory=dict)
    redirect_next: int = 0
    # -- exchange time and live streams --
    rest_klines_unknown_symbol: int = 0
    rest_bad_kline_open_ms: set[int] = field(default_factory=set)
    time_unavailable: bool = False
    # -- provisional periods --
    vision_file_gaps: list[tuple[str, int, int]] = field(default_factory=list)
    rest_gaps: list[tuple[str, int, int]] = field(default_factory=list)
    # -- trust: validation at the edge --
    rest_rewrite: Callable[[str, dict[str, str], list[list[object]]], object] | None = None
    vision_csv_rewrite: Callable[[str, bytes], bytes] | None = None
    vision_member_names: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    def take(self, name: str) -> bool:
        """Consume one unit of the counter ``name``; True when it was positive."""
        with self._lock:
            value = getattr(self, name)
            if value > 0:
                setattr(self, name, value - 1)
                return True
            return False

    def gaps_for(self, symbol: str) -> list[tuple[int, int]]:
        """Return the ``[start_ms, end_ms)`` gaps of ``symbol``."""
        return [(start, end) for sym, start, end in list(self.gaps) if sym == symbol]

    def rest_gaps_for(self, symbol: str) -> list[tuple[int, int]]:
        """Return the ``[start_ms, end_ms)`` REST-only gaps of ``symbol``."""
        return [(start, end) for sym, start, end in list(self.rest_gaps) if sym == symbol]

    def reset(self) -> None:
        """Switch every fault off."""
        fresh = Faults()
        with self._lock:
            for name in self.__dataclass_fields__:
                if name != "_lock":
                    setattr(self, name, getattr(fresh, name))
