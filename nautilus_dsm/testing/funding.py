"""Funding events of the imitation: schedules, deterministic rates, the REST and Vision forms.

Every futures symbol settles funding every 8 h from its listing, except the schedules set per
symbol: by default USD-M ``BTCUSDT`` moves from 8 h to 4 h at :data:`INTERVAL_CHANGE_MS`
(2024-03-15T00:00Z). An event's ``calc_time`` is its boundary plus a few ms
(``(hour * 7) % 13``, as Vision's files show ``…007``); its interval is the hours since the
previous boundary (the interval that ended at it); its rate a signed 8-decimal number from a
hash of the boundary. REST's ``fundingTime`` is the same ``calc_time``; USD-M rows carry the
``markPrice``: the close of the 1m mark price kline that closes at the boundary. Vision's monthly
``fundingRate`` file of :data:`MISSING_VISION_MONTHS` (BTCUSDT 2024-02) does not exist, so that
month comes from REST.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from nautilus_dsm.common import Interval, MarketType, to_ms
from nautilus_dsm.common.datasets import Dataset
from nautilus_dsm.testing.derived import derive
from nautilus_dsm.testing.klines import UNIT, kline_spec, splitmix64
from nautilus_dsm.testing.series import KlineSeries
from nautilus_dsm.testing.symbols import SymbolSpec

HOUR_MS = 3_600_000
INTERVAL_CHANGE_MS = to_ms(datetime(2024, 3, 15, tzinfo=UTC))
DEFAULT_SCHEDULES: dict[tuple[MarketType, str], tuple[tuple[int, int], ...]] = {
    (MarketType.FUTURES_USDT, "BTCUSDT"): ((0, 8), (INTERVAL_CHANGE_MS, 4)),
}
MISSING_VISION_MONTHS = frozenset({(MarketType.FUTURES_USDT, "BTCUSDT", "2024-02")})


@dataclass(frozen=True, slots=True)
class FundingEvent:
    """One imitated funding event."""

    boundary_ms: int
    calc_ms: int
    hours: int
    rate: str  # 8 decimals, as Binance prints them
    mark: str | None  # REST markPrice (USD-M only)


def format_units(units: int, decimals: int = 8) -> str:
    """Return a signed count of 1e-8 as a decimal string with ``decimals`` decimals."""
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), UNIT)
    text = f"{sign}{whole}.{frac:08d}"
    return text[: len(text) - (8 - decimals)] if decimals < 8 else text


def calc_ms(boundary_ms: int) -> int:
    """Return the imitated ``calc_time`` of a boundary: a few ms after it (``…007``)."""
    return boundary_ms + (boundary_ms // HOUR_MS * 7) % 13


class FundingSeries:
    """Which funding events exist (schedules per symbol), from the imitation's klines.

    Parameters
    ----------
    series
        The kline series (symbols, listing, clock; mark prices derive from its klines).
    """

    def __init__(self, series: KlineSeries) -> None:
        self._series = series
        self.schedules = dict(DEFAULT_SCHEDULES)
        self.missing_vision_months: set[tuple[MarketType, str, str]] = set(MISSING_VISION_MONTHS)

    def set_schedule(
        self, market: MarketType, symbol: str, changes: tuple[tuple[int, int], ...]
    ) -> None:
        """Set ``(from_ms, hours)`` steps of a symbol's funding interval (sorted by time)."""
        self.schedules[(market, symbol)] = tuple(sorted(changes))

    def boundaries(
        self, market: MarketType, spec: SymbolSpec, lo: int, hi: int, *, past: bool = True
    ) -> list[int]:
        """Return funding boundaries in ``[lo, hi)`` after the listing (before now if ``past``)."""
        steps = self.schedules.get((market, spec.symbol), ((0, 8),))
        lo = max(lo, spec.listed_ms)
        hi = min(hi, self._series.now_ms()) if past else hi
        out: list[int] = []
        for k, (start, hours) in enumerate(steps):
            end = steps[k + 1][0] if k + 1 < len(steps) else hi
            step = hours * HOUR_MS
            first = -(-max(start, lo) // step) * step
            out.extend(range(first, min(end, hi), step))
        return out

    def _hours_before(self, market: MarketType, spec: SymbolSpec, boundary: int) -> int:
        steps = self.schedules.get((market, spec.symbol), ((0, 8),))
        earlier = [h for start, h in steps if start < boundary]
        return earlier[-1] if earlier else steps[0][1]

    def events(
        self, market: MarketType, spec: SymbolSpec, lo: int, hi: int, *, marks: bool = True
    ) -> list[FundingEvent]:
        """Return the funding events with boundary in ``[lo, hi)``, in time order."""
        times = self.boundaries(market, spec, lo, hi)
        if not times:
            return []
        arr = np.array(times, dtype=np.int64)
        rates = (splitmix64(arr.astype(np.uint64) ^ np.uint64(0xF00D)) % np.uint64(50001)).astype(
            np.int64
        ) - 15000
        mark_prices = self._marks(market, spec, times) if marks else [None] * len(times)
        out = []
        for t, r, m in zip(times, rates.tolist(), mark_prices, strict=True):
            previous = self.boundaries(market, spec, t - 8 * HOUR_MS, t)
            hours = (
                (t - previous[-1]) // HOUR_MS if previous else self._hours_before(market, spec, t)
            )
            calc = calc_ms(t)
            out.append(FundingEvent(t, calc, int(hours), format_units(int(r)), m))
        return out

    def _marks(self, market: MarketType, spec: SymbolSpec, times: list[int]) -> list[str | None]:
        """Return the close of the 1m mark kline closing at each boundary (USD-M REST only)."""
        if market is not MarketType.FUTURES_USDT:
            return [None] * len(times)
        ks = kline_spec(spec, market)
        out: list[str | None] = []
        for t in times:
            raw = self._series.select(market, spec, Interval.MINUTE_1, t - 60_000, t - 60_000, 1)
            raw = derive(raw, Dataset.MARK_PRICE_KLINES, ks)
            out.append(format_units(int(raw["close"][0])) if len(raw) else None)
        return out

    def vision_csv(self, events: list[FundingEvent]) -> bytes:
        """Return a Vision ``fundingRate`` CSV (with its header)."""
        out = io.StringIO()
        out.write("calc_time,funding_interval_hours,last_funding_rate\n")
        for e in events:
            out.write(f"{e.calc_ms},{e.hours},{e.rate}\n")
        return out.getvalue().encode()

    def rest_rows(self, market: MarketType, symbol: str, events: list[FundingEvent]) -> list[dict]:
        """``GET /fundingRate`` rows (``markPrice`` on USD-M only)."""
        rows: list[dict] = []
        for e in events:
            row: dict[str, object] = {
                "symbol": symbol,
                "fundingTime": e.calc_ms,
                "fundingRate": e.rate,
            }
            if market is MarketType.FUTURES_USDT:
                row["markPrice"] = e.mark or ""
            rows.append(row)
        return rows
