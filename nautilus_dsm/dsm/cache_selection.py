"""Which cached periods a ``cache info`` / ``cache clear`` means, and the plan shown (pure).

A selection narrows the cache by market, symbol, interval, a time range (each period file is a
whole UTC day, or a year for intervals of a day and longer, so a range selects every file it
overlaps) and ``gaps_only``: the periods a later fetch should get again, i.e. provisional files
and files recording missing bars. Deleting those and fetching again is how a cached gap is
repaired without losing the rest of the series. The listing of the files is the cache's I/O
(:func:`nautilus_dsm.dsm.cache_files.list_periods`); here is only what to do with it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nautilus_dsm.common.times import iso_ms
from nautilus_dsm.dsm.cache_paths import PROVIDER_DIR, period_bounds

__all__ = ["CachePlan", "CacheSelection", "CachedPeriod", "SeriesSummary", "plan_selection"]


@dataclass(frozen=True, slots=True)
class CachedPeriod:
    """One period file of the cache.

    ``gaps`` is the number of missing-bar runs its state records; None when not read (the
    state is read only for a ``gaps_only`` selection: it costs one parquet footer per file).
    """

    market: str
    symbol: str
    interval: str  # the series folder: Interval.path_label ("1m", "1mo")
    key: str  # "YYYY-MM-DD" or "YYYY"
    provisional: bool
    bytes: int
    path: Path
    gaps: int | None = None
    provider: str = PROVIDER_DIR  # the dataset folder: "binance" (klines), "binance-<dataset>"

    @property
    def needs_refetch(self) -> bool:
        """True for a provisional period or one recording missing bars."""
        return self.provisional or bool(self.gaps)


@dataclass(frozen=True, slots=True)
class CacheSelection:
    """
    What a cache command selects; every field None (or False) selects everything.

    Parameters
    ----------
    market : str, optional
        Market folder (``MarketType.value``: ``spot``, ``futures_usdt``, ``futures_coin``).
    symbol : str, optional
        Binance symbol folder (``BTCUSDT``, ``BTCUSD_PERP``).
    interval : str, optional
        Interval folder (``Interval.path_label``: ``1m``, ``1mo`` for 1M).
    start_ms, end_ms : int, optional
        Periods overlapping ``[start_ms, end_ms)`` (epoch ms); open-ended when None.
    gaps_only : bool, default False
        Only provisional periods and periods recording missing bars.

    """

    market: str | None = None
    symbol: str | None = None
    interval: str | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    gaps_only: bool = False

    @property
    def whole_series(self) -> bool:
        """Whether every period of a selected series is selected.

        True without a range and without ``gaps_only``: the series' first-bar sidecar and
        idle lock go too.
        """
        return self.start_ms is None and self.end_ms is None and not self.gaps_only

    @property
    def everything(self) -> bool:
        """True when nothing narrows the selection (the quarantine goes too)."""
        return self.whole_series and (self.market, self.symbol, self.interval) == (None, None, None)

    def has_series(self, market: str, symbol: str, interval: str) -> bool:
        """Tell whether a series folder can hold selected periods."""
        return (
            (self.market is None or market == self.market)
            and (self.symbol is None or symbol == self.symbol)
            and (self.interval is None or interval == self.interval)
        )

    def selects(self, period: CachedPeriod) -> bool:
        """Tell whether ``period`` is selected."""
        if not self.has_series(period.market, period.symbol, period.interval):
            return False
        if self.gaps_only and not period.needs_refetch:
            return False
        lo, hi = period_bounds(period.key)
        if self.start_ms is not None and hi <= self.start_ms:
            return False
        return self.end_ms is None or lo < self.end_ms

    def describe(self) -> str:
        """Return the selection in words: ``futures_usdt / BTCUSDT / every interval``..."""
        parts = [
            self.market or "every market",
            self.symbol or "every symbol",
            self.interval or "every interval",
        ]
        text = " / ".join(parts)
        if self.start_ms is not None or self.end_ms is not None:
            lo = iso_ms(self.start_ms) if self.start_ms is not None else "the first period"
            hi = iso_ms(self.end_ms) if self.end_ms is not None else "the last period"
            text += f", periods overlapping {lo}..{hi}"
        if self.gaps_only:
            text += ", provisional periods and periods with gaps only"
        return text


@dataclass(frozen=True, slots=True)
class SeriesSummary:
    """The selected periods of one series."""

    market: str
    symbol: str
    interval: str
    periods: tuple[CachedPeriod, ...]
    provider: str = PROVIDER_DIR

    @property
    def files(self) -> int:
        """Number of period files."""
        return len(self.periods)

    @property
    def provisional(self) -> int:
        """Number of provisional period files."""
        return sum(p.provisional for p in self.periods)

    @property
    def bytes(self) -> int:
        """Bytes of the period files."""
        return sum(p.bytes for p in self.periods)

    def to_dict(self) -> dict[str, Any]:
        """Return the ``cache info --json`` entry of this series."""
        keys = sorted(p.key for p in self.periods)
        entry: dict[str, Any] = {
            "market": self.market,
            "symbol": self.symbol,
            "interval": self.interval,
            "files": self.files,
            "provisional": self.provisional,
            "bytes": self.bytes,
            "first": keys[0],
            "last": keys[-1],
        }
        if self.provider != PROVIDER_DIR:
            entry["dataset"] = self.provider.removeprefix(PROVIDER_DIR + "-")
        return entry


@dataclass(frozen=True, slots=True)
class CachePlan:
    """The periods a selection picks under one cache root, per series, in path order."""

    root: Path
    selection: CacheSelection
    series: tuple[SeriesSummary, ...]

    @property
    def periods(self) -> list[CachedPeriod]:
        """Every selected period file."""
        return [p for s in self.series for p in s.periods]

    @property
    def files(self) -> int:
        """Number of selected period files."""
        return sum(s.files for s in self.series)

    @property
    def bytes(self) -> int:
        """Bytes of the selected period files."""
        return sum(s.bytes for s in self.series)

    @property
    def provisional(self) -> int:
        """Number of selected provisional files."""
        return sum(s.provisional for s in self.series)

    def to_dict(self, quarantined: int) -> dict[str, Any]:
        """Return the ``cache info --json`` payload (``quarantined``: files in quarantine)."""
        return {
            "root": str(self.root),
            "selection": self.selection.describe(),
            "files": self.files,
            "provisional": self.provisional,
            "bytes": self.bytes,
            "quarantined": quarantined,
            "entries": [s.to_dict() for s in self.series],
        }


def plan_selection(
    root: Path, periods: Iterable[CachedPeriod], selection: CacheSelection
) -> CachePlan:
    """
    Return the periods of ``periods`` that ``selection`` picks, grouped per series.

    Parameters
    ----------
    root : Path
        The cache root the periods were listed under.
    periods : Iterable[CachedPeriod]
        The cache's period files (any order).
    selection : CacheSelection
        What to pick.

    Returns
    -------
    CachePlan
        Series in (market, symbol, interval) order, periods in key order; series without a
        selected period are left out.

    """
    groups: dict[tuple[str, str, str, str], list[CachedPeriod]] = {}
    for period in periods:
        if selection.selects(period):
            key = (period.market, period.symbol, period.interval, period.provider)
            groups.setdefault(key, []).append(period)
    series = tuple(
        SeriesSummary(
            market,
            symbol,
            interval,
            tuple(sorted(found, key=lambda p: (p.key, p.provisional))),
            provider,
        )
        for (market, symbol, interval, provider), found in sorted(groups.items())
    )
    return CachePlan(root, selection, series)
