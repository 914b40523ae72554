"""REST and Vision of the imitation's datasets beyond klines.

REST (under ``/fapi/v1`` and ``/dapi/v1``): ``markPriceKlines``, ``indexPriceKlines`` (by
``pair``), ``premiumIndexKlines``, ``fundingRate`` (``limit`` 1..1000, default 100, ascending
by ``fundingTime`` in ``[startTime, endTime]``; 500 requests per 5 minutes, then 429) and
``premiumIndex`` (mark, index, last funding rate, next funding time now). COIN-M kline-shaped
endpoints refuse a ``startTime..endTime`` window over 200 days, as Binance's do.

Vision: ``/data/futures/{um|cm}/{daily|monthly}/{markPriceKlines|indexPriceKlines|
premiumIndexKlines}/{SYMBOL}/{interval}/{SYMBOL}-{interval}-{date}.zip`` and
``/data/futures/{um|cm}/monthly/fundingRate/{SYMBOL}/{SYMBOL}-fundingRate-{YYYY-MM}.zip``,
each with its ``.CHECKSUM``; the Vision faults that name a file (missing, truncated, bad
checksum) apply.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import deque
from collections.abc import Callable

import polars as pl

from nautilus_dsm.common import Interval, MarketType
from nautilus_dsm.common.datasets import DAPI_KLINE_WINDOW_MS, Dataset, pair_of
from nautilus_dsm.constants import MONTH_PATH_LABEL
from nautilus_dsm.testing.derived import (
    derive,
    derived_rest_rows,
    derived_vision_csv,
    expected_frame,
)
from nautilus_dsm.testing.faults import Faults
from nautilus_dsm.testing.funding import HOUR_MS, FundingSeries, calc_ms, format_units
from nautilus_dsm.testing.klines import from_frame, kline_spec
from nautilus_dsm.testing.responses import Response, error_response, json_response
from nautilus_dsm.testing.series import KlineSeries, without
from nautilus_dsm.testing.vision import (
    VISION_MARKETS,
    _no_such_key,
    _parse_vision_interval,
    _period,
    _zip_bytes,
)

KLINE_ENDPOINTS: dict[str, Dataset] = {
    d.rest_path: d for d in Dataset if d.is_kline and d is not Dataset.KLINES
}
ENDPOINT_NAMES = frozenset({*KLINE_ENDPOINTS, "fundingRate", "premiumIndex"})
FUNDING_REQUESTS = (500, 300.0)  # per 5 minutes
_FUTURES = "|".join(re.escape(k) for k, m in VISION_MARKETS.items() if m.is_futures)
_FOLDERS = "|".join(d.vision_folder for d in KLINE_ENDPOINTS.values())
_KLINE_RE = re.compile(
    rf"^/data/(?P<market>{_FUTURES})/(?P<period>daily|monthly)/(?P<folder>{_FOLDERS})/"
    rf"(?P<symbol>[A-Z0-9_]+)/(?P<interval>[0-9]+[mhdwM]|{MONTH_PATH_LABEL})/"
    r"(?P<name>(?P=symbol)-(?P=interval)-(?P<date>\d{4}-\d{2}(?:-\d{2})?)\.zip)"
    r"(?P<checksum>\.CHECKSUM)?$"
)
_FUNDING_RE = re.compile(
    rf"^/data/(?P<market>{_FUTURES})/monthly/fundingRate/(?P<symbol>[A-Z0-9_]+)/"
    r"(?P<name>(?P=symbol)-fundingRate-(?P<date>\d{4}-\d{2})\.zip)(?P<checksum>\.CHECKSUM)?$"
)
_BY_FOLDER = {d.vision_folder: d for d in KLINE_ENDPOINTS.values()}


class DatasetApi:
    """Mark / index / premium-index klines and funding of the imitation (REST and Vision).

    Parameters
    ----------
    series
        The kline series everything derives from.
    faults
        The imitation's fault switches.
    rate_clock
        Epoch seconds for the fundingRate request window.
    """

    def __init__(
        self, series: KlineSeries, faults: Faults, rate_clock: Callable[[], float]
    ) -> None:
        self._series = series
        self._faults = faults
        self._rate_clock = rate_clock
        self.funding = FundingSeries(series)
        self._lock = threading.Lock()
        self._funding_sent: dict[MarketType, deque[float]] = {}
        self.funding_limit = FUNDING_REQUESTS

    # -- source truth -----------------------------------------------------------------------

    def expected(
        self,
        market: MarketType,
        symbol: str,
        dataset: Dataset,
        interval: Interval,
        start_ms: int,
        end_ms: int,
    ) -> pl.DataFrame:
        """Return the closed rows of a kline-shaped dataset in ``[start_ms, end_ms)``."""
        base = self._series.expected(market, symbol, interval, start_ms, end_ms)
        if dataset is Dataset.KLINES or base.height == 0:
            return base
        ks = kline_spec(self._series.spec(market, symbol), market)
        return expected_frame(derive(from_frame(base), dataset, ks), dataset)

    def expected_funding(
        self, market: MarketType, symbol: str, start_ms: int, end_ms: int
    ) -> list[tuple[int, int, int, str, str | None]]:
        """``(boundary_ms, calc_ms, hours, rate, mark)`` of the events in ``[start_ms, end_ms)``."""
        spec = self._series.spec(market, symbol)
        return [
            (e.boundary_ms, e.calc_ms, e.hours, e.rate, e.mark)
            for e in self.funding.events(market, spec, start_ms, end_ms)
        ]

    # -- REST -----------------------------------------------------------------------------

    def answer(self, market: MarketType, endpoint: str, query: dict[str, str]) -> Response:
        """Return the REST answer of ``endpoint`` (one of :data:`ENDPOINT_NAMES`) on ``market``."""
        if not market.is_futures:
            return error_response(404, -5000, "Path not found")
        if endpoint == "fundingRate":
            return self._funding_rate(market, query)
        if endpoint == "premiumIndex":
            return self._premium_index(market, query)
        return self._klines(market, KLINE_ENDPOINTS[endpoint], query)

    def _klines(self, market: MarketType, dataset: Dataset, query: dict[str, str]) -> Response:
        from nautilus_dsm.testing.rest import _BadRequest, _klines_params

        query = dict(query)
        if dataset is Dataset.INDEX_PRICE_KLINES:
            pair = query.pop("pair", "")
            query["symbol"] = self._symbol_of_pair(market, pair) if pair else ""
        try:
            spec, interval, limit, start, end = _klines_params(market, query, self._series)
        except _BadRequest as exc:
            return exc.response
        if (
            market is MarketType.FUTURES_COIN
            and start is not None
            and end is not None
            and end - start > DAPI_KLINE_WINDOW_MS
        ):
            return error_response(400, -1127, "More than 200 days between startTime and endTime.")
        now = self._series.now_ms()
        hi = now if end is None else min(end, now)
        if start is not None:
            raw = self._series.select(market, spec, interval, start, hi, limit, now_ms=now)
        else:
            raw = self._series.select(
                market, spec, interval, 0, hi, limit, from_end=True, now_ms=now
            )
        raw = without(raw, tuple(self._faults.rest_gaps_for(spec.symbol)))
        raw = derive(raw, dataset, kline_spec(spec, market))
        return json_response(200, derived_rest_rows(raw, dataset, kline_spec(spec, market)))

    def _symbol_of_pair(self, market: MarketType, pair: str) -> str:
        listed = self._series.symbols(market)
        matches = sorted(s for s in listed if pair_of(s) == pair)
        perpetual = [s for s in matches if s == pair or s.endswith("_PERP")]
        return (perpetual or matches or [""])[0]

    def _admit_funding(self, market: MarketType) -> bool:
        limit, window = self.funding_limit
        now = self._rate_clock()
        with self._lock:
            sent = self._funding_sent.setdefault(market, deque())
            while sent and now - sent[0] >= window:
                sent.popleft()
            if len(sent) >= limit:
                return False
            sent.append(now)
            return True

    def _funding_rate(self, market: MarketType, query: dict[str, str]) -> Response:
        if not self._admit_funding(market):
            return error_response(429, -1003, "Too many requests; fundingRate limit exceeded.")
        spec = self._series.find(market, query.get("symbol", ""))
        if spec is None:
            return error_response(400, -1121, "Invalid symbol.")
        try:
            limit = int(query.get("limit", "100"))
            start = int(query["startTime"]) if query.get("startTime") else None
            end = int(query["endTime"]) if query.get("endTime") else None
        except ValueError:
            return error_response(400, -1100, "Illegal characters found in a parameter.")
        if not 1 <= limit <= 1000:
            return error_response(400, -1130, "Data sent for parameter 'limit' is not valid.")
        now = self._series.now_ms()
        hi = now if end is None else min(end, now)
        lo = start if start is not None else max(0, hi - limit * 8 * HOUR_MS)
        # Boundaries first (cheap), limited, then the events of just those (marks cost a kline).
        bounds = [
            b
            for b in self.funding.boundaries(market, spec, lo - HOUR_MS, hi + 1)
            if lo <= calc_ms(b) <= hi
        ]
        bounds = bounds[:limit] if start is not None else bounds[-limit:]
        events = self.funding.events(market, spec, bounds[0], bounds[-1] + 1) if bounds else []
        return json_response(200, self.funding.rest_rows(market, spec.symbol, events))

    def _premium_index(self, market: MarketType, query: dict[str, str]) -> Response:
        spec = self._series.find(market, query.get("symbol", ""))
        if spec is None:
            return error_response(400, -1121, "Invalid symbol.")
        now = self._series.now_ms()
        ks = kline_spec(spec, market)
        minute = now // 60_000 * 60_000 - 60_000
        raw = self._series.select(market, spec, Interval.MINUTE_1, minute, minute, 1)
        mark = derive(raw, Dataset.MARK_PRICE_KLINES, ks)
        index = derive(raw, Dataset.INDEX_PRICE_KLINES, ks)
        past = self.funding.events(market, spec, now - 9 * HOUR_MS, now + 1, marks=False)
        upcoming = self.funding.boundaries(market, spec, now + 1, now + 9 * HOUR_MS + 1, past=False)

        body = {
            "symbol": spec.symbol,
            "markPrice": format_units(int(mark["close"][0])) if len(mark) else "",
            "indexPrice": format_units(int(index["close"][0])) if len(index) else "",
            "estimatedSettlePrice": format_units(int(mark["close"][0])) if len(mark) else "",
            "lastFundingRate": past[-1].rate if past else "0.00000000",
            "interestRate": "0.00010000",
            "nextFundingTime": upcoming[0] if upcoming else 0,
            "time": now,
        }
        return json_response(200, body)

    # -- Vision ---------------------------------------------------------------------------

    def vision(self, path: str) -> Response | None:
        """Return the Vision answer of a dataset ``path``; None when the path is not one of them."""
        match = _KLINE_RE.match(path)
        if match is not None:
            return self._serve(match, self._kline_zip(match))
        match = _FUNDING_RE.match(path)
        if match is not None:
            return self._serve(match, self._funding_zip(match))
        return None

    def _serve(self, match: re.Match[str], data: bytes | None) -> Response:
        name = match["name"]
        faults = self._faults
        if data is None or name in faults.vision_missing:
            return _no_such_key(match.string.lstrip("/"))
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

    def _kline_zip(self, match: re.Match[str]) -> bytes | None:
        market = VISION_MARKETS[match["market"]]
        spec = self._series.find(market, match["symbol"])
        interval = _parse_vision_interval(match["interval"], market)
        period = _period(match["period"], match["date"])
        if spec is None or interval is None or period is None:
            return None
        start, end = period
        now = self._series.now_ms()
        if end > now:
            return None
        raw = self._series.select(market, spec, interval, start, end - 1, None)
        if len(raw) == 0:
            return None
        dataset = _BY_FOLDER[match["folder"]]
        ks = kline_spec(spec, market)
        csv = derived_vision_csv(derive(raw, dataset, ks), dataset, ks)
        return _zip_bytes(match["name"][: -len(".zip")] + ".csv", csv)

    def _funding_zip(self, match: re.Match[str]) -> bytes | None:
        market = VISION_MARKETS[match["market"]]
        spec = self._series.find(market, match["symbol"])
        period = _period("monthly", match["date"])
        if spec is None or period is None:
            return None
        if (market, spec.symbol, match["date"]) in self.funding.missing_vision_months:
            return None
        start, end = period
        if end > self._series.now_ms():
            return None
        events = self.funding.events(market, spec, start, end, marks=False)
        if not events:
            return None
        csv = self.funding.vision_csv(events)
        return _zip_bytes(match["name"][: -len(".zip")] + ".csv", csv)
