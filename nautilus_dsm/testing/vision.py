"""Binance Vision of the imitation: daily and monthly kline zips, their ``.CHECKSUM``, faults.

Paths: ``/data/{spot|futures/um|futures/cm}/{daily|monthly}/klines/{SYMBOL}/{interval}/
{SYMBOL}-{interval}-{YYYY-MM-DD|YYYY-MM}.zip[.CHECKSUM]``. A file exists once its whole period
is closed at the imitation's "now" and it holds bars; anything else answers S3's ``NoSuchKey``.
The Vision faults (missing, truncated, bad checksum, wrong columns, file gaps, member names,
CSV rewrites, µs timestamps) of :class:`~nautilus_dsm.testing.faults.Faults` apply here.
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime

from nautilus_dsm.common import ENDPOINTS, Interval, MarketType, to_ms
from nautilus_dsm.constants import DAY_MS, MONTH_PATH_LABEL
from nautilus_dsm.testing.faults import Faults
from nautilus_dsm.testing.klines import kline_spec, vision_csv
from nautilus_dsm.testing.responses import Response
from nautilus_dsm.testing.series import KlineSeries, parse_interval, without
from nautilus_dsm.testing.symbols import SymbolSpec

# "spot" -> SPOT, "futures/um" -> FUTURES_USDT, "futures/cm" -> FUTURES_COIN
VISION_MARKETS: dict[str, MarketType] = {ENDPOINTS[m].path_segment: m for m in MarketType}
_US_FROM_MS = to_ms(datetime(2025, 1, 1, tzinfo=UTC))
_VISION_RE = re.compile(
    rf"^/data/(?P<market>{'|'.join(map(re.escape, VISION_MARKETS))})/"
    r"(?P<period>daily|monthly)/klines/"
    rf"(?P<symbol>[A-Z0-9_]+)/(?P<interval>[0-9]+[smhdwM]|{MONTH_PATH_LABEL})/"
    r"(?P<name>(?P=symbol)-(?P=interval)-(?P<date>\d{4}-\d{2}(?:-\d{2})?)\.zip)"
    r"(?P<checksum>\.CHECKSUM)?$"
)
_ZIP_CACHE_SIZE = 64
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


class VisionFiles:
    """The Vision files of every series, built on request and kept in a small LRU cache.

    Parameters
    ----------
    series
        Where the klines, the symbols and "now" come from.
    faults
        The imitation's fault switches.
    """

    def __init__(self, series: KlineSeries, faults: Faults) -> None:
        self._series = series
        self._faults = faults
        self._lock = threading.Lock()
        self._zips: OrderedDict[tuple[object, ...], bytes] = OrderedDict()

    def clear(self) -> None:
        """Forget the cached zips (the series changed)."""
        with self._lock:
            self._zips.clear()

    def answer(self, path: str) -> Response:
        """Return the answer to the Vision ``path`` (``/data/...``)."""
        key = path.lstrip("/")
        match = _VISION_RE.match(path)
        if match is None:
            return _no_such_key(key)
        market = VISION_MARKETS[match["market"]]
        name = match["name"]
        spec = self._series.find(market, match["symbol"])
        interval = _parse_vision_interval(match["interval"], market)
        period = _period(match["period"], match["date"])
        faults = self._faults
        if spec is None or interval is None or period is None or name in faults.vision_missing:
            return _no_such_key(key)
        data = self._zip(market, spec, interval, name, period)
        if data is None:
            return _no_such_key(key)
        if match["checksum"]:
            digest = hashlib.sha256(data)
            if name in faults.vision_bad_checksum:
                digest.update(b"corrupted")
            return Response(
                200, f"{digest.hexdigest()}  {name}\n".encode(), content_type="text/plain"
            )
        if name in faults.vision_truncated:
            data = data[: len(data) // 2]
        return Response(200, data, content_type="application/zip")

    def _file_gaps(self, name: str) -> tuple[tuple[int, int], ...]:
        """``faults.vision_file_gaps`` of one Vision zip, as ``(start_ms, end_ms)``."""
        return tuple(
            (lo, hi) for file, lo, hi in list(self._faults.vision_file_gaps) if file == name
        )

    def _zip(
        self,
        market: MarketType,
        spec: SymbolSpec,
        interval: Interval,
        name: str,
        period: tuple[int, int],
    ) -> bytes | None:
        """Return the zip ``name`` of ``period`` (cached); None while it is open or empty."""
        start, end = period
        now = self._series.now_ms()
        if end > now:
            return None
        faults = self._faults
        forced = faults.vision_timestamps_us
        micros = (market is MarketType.SPOT and start >= _US_FROM_MS) if forced is None else forced
        wrong = name in faults.vision_wrong_columns
        gaps = tuple(faults.gaps_for(spec.symbol)) + self._file_gaps(name)
        member, rewrite = self._vision_member(name)
        key = (market, spec.symbol, interval, name, micros, wrong, gaps, self._series.version)
        key += (member, rewrite)
        with self._lock:
            cached = self._zips.get(key)
            if cached is not None:
                self._zips.move_to_end(key)
                return cached
        raw = self._series.select(market, spec, interval, start, end - 1, None)
        raw = without(raw, self._file_gaps(name))
        if len(raw) == 0 or int(raw["close_time"].max()) >= now:  # empty, or bars still open
            return None
        ks = kline_spec(spec, market)
        csv = vision_csv(
            raw, ks, header=market is not MarketType.SPOT, micros=micros, drop_ignore=wrong
        )
        if rewrite is not None:
            csv = rewrite(member, csv)
        data = _zip_bytes(member, csv)
        with self._lock:
            self._zips[key] = data
            while len(self._zips) > _ZIP_CACHE_SIZE:
                self._zips.popitem(last=False)
        return data

    def _vision_member(self, name: str) -> tuple[str, Callable[[str, bytes], bytes] | None]:
        """Return the CSV member's file name inside zip ``name`` and the CSV rewrite (faults)."""
        faults = self._faults
        member = faults.vision_member_names.get(name, name[: -len(".zip")] + ".csv")
        return member, faults.vision_csv_rewrite


def _zip_bytes(member: str, csv: bytes) -> bytes:
    """Build a zip holding ``csv`` as ``member`` (deflated, fixed date: same bytes every time)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo(member, date_time=_ZIP_DATE)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o644 << 16
        archive.writestr(info, csv, compresslevel=1)
    return buffer.getvalue()


def _no_such_key(key: str) -> Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        "<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message>"
        f"<Key>{key}</Key><RequestId>IMITATION</RequestId><HostId>127.0.0.1</HostId></Error>"
    ).encode()
    return Response(404, body, content_type="application/xml")


def _parse_vision_interval(text: str, market: MarketType) -> Interval | None:
    """Parse the interval of a Vision path: ``1mo`` is the month there, ``1M`` does not exist."""
    if text == MONTH_PATH_LABEL:
        return Interval.MONTH_1
    if text == Interval.MONTH_1.value:
        return None
    return parse_interval(text, market)


def _period(kind: str, date: str) -> tuple[int, int] | None:
    """``[start_ms, end_ms)`` of a Vision file's day or month; None when malformed."""
    try:
        if kind == "daily":
            day = datetime.strptime(date, "%Y-%m-%d").replace(tzinfo=UTC)
            return to_ms(day), to_ms(day) + DAY_MS
        month = datetime.strptime(date, "%Y-%m").replace(tzinfo=UTC)
    except ValueError:
        return None
    start = to_ms(month)
    return start, Interval.MONTH_1.next_open_ms(start)
