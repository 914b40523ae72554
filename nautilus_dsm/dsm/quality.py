"""Data quality of a fetched kline frame: completeness, gaps, OHLC sanity, provenance.

Pure: :func:`assess` looks only at the frame and the request, so every number in a
:class:`QualityReport` is reproducible in a unit test. The report never changes the data: bad
rows are counted and listed, not dropped, and missing bars are reported, never invented.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl

# ``iso`` / ``iso_ms`` are the common formatter (``…:00Z``, ``.001Z`` with ms), re-exported here
# for the report's users.
from nautilus_dsm.common import Interval, MarketType, from_ms, iso, iso_ms, to_ms

_LISTED = 3  # how many offending rows a warning names


@dataclass(frozen=True, slots=True)
class Gap:
    """A run of missing bars.

    ``start`` is the first missing open time, ``end`` the open time after the last missing one
    (exclusive), ``missing`` the number of bars.

    ``confirmed_by`` names the independent sources (``"rest"``, ``"vision"``) whose answers for
    these bars lacked them; a gap is *confirmed* when two did. It is evidence about the gap, not
    part of its identity, so it is left out of ``==``. Confirmed or not, a gap stays a gap: no
    bar is ever invented for it.
    """

    start: datetime
    end: datetime
    missing: int
    confirmed_by: tuple[str, ...] = field(default=(), compare=False)

    @property
    def confirmed(self) -> bool:
        """True when two independent sources lack these bars."""
        return len(self.confirmed_by) >= 2

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict: times as ISO-8601 UTC strings."""
        return {
            "start": iso(self.start),
            "end": iso(self.end),
            "missing": self.missing,
            "confirmed_by": list(self.confirmed_by),
        }

    def __str__(self) -> str:
        return f"{iso(self.start)}..{iso(self.end)} ({self.missing} bars)"


@dataclass(slots=True)
class QualityReport:
    """What a fetch returned and how good it is.

    ``bars`` counts the rows returned; ``expected_bars`` the open times on the interval's grid in
    ``[max(start, listing_time), end)`` (``end`` already capped at now); ``completeness`` is the
    share of expected open times present. ``sources`` counts returned rows per source,
    ``cache_hits``/``cache_misses`` count closed periods. ``timings`` holds wall seconds
    (``total``) and the summed seconds spent in each source's calls. ``provisional_periods``
    counts the closed periods of this fetch that are not final yet (their gaps are not
    confirmed by two sources; the next fetch re-checks them).
    """

    instrument_id: str
    symbol: str
    market_type: MarketType | None
    interval: Interval
    start: datetime
    end: datetime
    bars: int
    expected_bars: int
    completeness: float
    gaps: list[Gap] = field(default_factory=list)
    duplicates_removed: int = 0
    out_of_order_fixed: int = 0
    ohlc_violations: int = 0
    sources: dict[str, int] = field(
        default_factory=lambda: {"cache": 0, "vision": 0, "rest": 0, "synthetic": 0}
    )
    cache_hits: int = 0
    cache_misses: int = 0
    cache_hit_rate: float = 0.0
    endpoint_http: str | None = None
    endpoint_vision: str | None = None
    listing_time: datetime | None = None
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    provisional_periods: int = 0

    @property
    def missing_bars(self) -> int:
        """Expected bars that are absent, summed over the gaps."""
        return sum(g.missing for g in self.gaps)

    @property
    def confirmed_gaps(self) -> int:
        """Gaps that two independent sources lack (see :attr:`Gap.confirmed_by`)."""
        return sum(g.confirmed for g in self.gaps)

    @property
    def unconfirmed_gaps(self) -> int:
        """Gaps that fewer than two sources vouch for: they may still be filled later."""
        return len(self.gaps) - self.confirmed_gaps

    def largest_gaps(self, n: int = 3) -> list[Gap]:
        """Return the ``n`` longest gaps, longest first (earliest first among equals)."""
        return sorted(self.gaps, key=lambda g: (-g.missing, g.start))[:n]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: enums as their values, times as ISO-8601 UTC strings."""
        return {
            "instrument_id": self.instrument_id,
            "symbol": self.symbol,
            "market_type": self.market_type.value if self.market_type is not None else None,
            "interval": self.interval.value,
            "start": iso(self.start),
            "end": iso(self.end),
            "bars": self.bars,
            "expected_bars": self.expected_bars,
            "completeness": self.completeness,
            "gaps": [g.to_dict() for g in self.gaps],
            "confirmed_gaps": self.confirmed_gaps,
            "unconfirmed_gaps": self.unconfirmed_gaps,
            "provisional_periods": self.provisional_periods,
            "duplicates_removed": self.duplicates_removed,
            "out_of_order_fixed": self.out_of_order_fixed,
            "ohlc_violations": self.ohlc_violations,
            "sources": dict(self.sources),
            "cache_hits": self.cache_hits,
            "cache_misses": self.cache_misses,
            "cache_hit_rate": self.cache_hit_rate,
            "endpoint_http": self.endpoint_http,
            "endpoint_vision": self.endpoint_vision,
            "listing_time": iso(self.listing_time),
            "timings": dict(self.timings),
            "warnings": list(self.warnings),
        }

    def summary(self) -> str:
        """One line for logs and the CLI."""
        text = (
            f"{self.instrument_id} {self.interval.value} {iso(self.start)}..{iso(self.end)}: "
            f"{self.bars}/{self.expected_bars} bars ({self.completeness:.2%})"
        )
        if self.gaps:
            largest = self.largest_gaps(1)[0]
            text += f", {len(self.gaps)} gap(s), largest {largest}"
        srcs = " ".join(f"{k}={v}" for k, v in self.sources.items() if v)
        text += f"; sources {srcs or 'none'}"
        text += f"; cache hits {self.cache_hits}/{self.cache_hits + self.cache_misses}"
        if self.ohlc_violations:
            text += f"; {self.ohlc_violations} OHLC violation(s)"
        if self.warnings:
            text += f"; {len(self.warnings)} warning(s)"
        return text


def below_threshold_message(report: QualityReport, min_completeness: float) -> str:
    """Return the :class:`QualityBelowThreshold` message: how incomplete, where, how to accept."""
    text = (
        f"{report.instrument_id} {report.interval.value} {iso(report.start)}..{iso(report.end)}: "
        f"completeness {report.completeness:.2%} ({report.bars} of {report.expected_bars} "
        f"expected bars) is below min_completeness {min_completeness:.2%}"
    )
    if report.gaps:
        listed = ", ".join(str(g) for g in report.largest_gaps(3))
        text += f"; {len(report.gaps)} gap(s), largest: {listed}"
    # Floor to 4 decimals so the suggested threshold really accepts this result.
    accept = int(report.completeness * 10_000) / 10_000
    return (
        f"{text}; pass min_completeness={accept} or on_low_quality='warn' to accept it "
        "(the fetched result is attached as .result)"
    )


def find_gaps(open_ms: np.ndarray, interval: Interval, start_ms: int, end_ms: int) -> list[Gap]:
    """Return the runs of grid open times in ``[start_ms, end_ms)`` absent from ``open_ms``.

    ``open_ms`` must be sorted and unique; off-grid times and times outside the range are
    ignored.
    """
    grid_first = interval.ceil_ms(start_ms)
    if grid_first >= end_ms:
        return []
    if interval.is_month:
        grid = interval.open_times_ms(start_ms, end_ms)
        index = {t: i for i, t in enumerate(grid)}
        present = np.array(sorted(index[t] for t in open_ms.tolist() if t in index), np.int64)
        n = len(grid)

        def at(i: int) -> int:
            return grid[i] if i < n else interval.next_open_ms(grid[-1])
    else:
        size = interval.fixed_ms
        n = interval.count(start_ms, end_ms)
        rel = open_ms.astype(np.int64) - grid_first
        keep = (rel >= 0) & (rel % size == 0) & (rel < n * size)
        present = rel[keep] // size

        def at(i: int) -> int:
            return grid_first + i * size

    idx = np.concatenate(([-1], present, [n]))
    diffs = np.diff(idx)
    gaps: list[Gap] = []
    for pos in np.flatnonzero(diffs > 1).tolist():
        first_missing = int(idx[pos]) + 1
        after = int(idx[pos + 1])
        gaps.append(Gap(from_ms(at(first_missing)), from_ms(at(after)), after - first_missing))
    return gaps


def count_out_of_order(open_ms: np.ndarray) -> int:
    """Rows whose open time is earlier than the row before them, as served."""
    if len(open_ms) < 2:
        return 0
    return int(np.count_nonzero(np.diff(open_ms.astype(np.int64)) < 0))


def normalise(frame: pl.DataFrame) -> tuple[pl.DataFrame, int, int]:
    """Sort by open time and drop repeated open times (first served row wins).

    Returns the clean frame, the duplicates removed and the out-of-order rows fixed, so the
    report can say what the source sent.
    """
    if frame.height == 0:
        return frame, 0, 0
    times = open_times_ms(frame)
    out_of_order = count_out_of_order(times)
    unique = frame.unique(subset="open_time", keep="first", maintain_order=True)
    duplicates = frame.height - unique.height
    if out_of_order:
        unique = unique.sort("open_time", maintain_order=True)
    return unique, duplicates, out_of_order


def open_times_ms(frame: pl.DataFrame) -> np.ndarray:
    """Return the ``open_time`` column as int64 epoch milliseconds."""
    return frame.get_column("open_time").dt.epoch("ms").to_numpy()


def ohlc_violation_mask(frame: pl.DataFrame) -> pl.Series:
    """Return a mask of the rows whose OHLC cannot be a bar.

    True where high < max(open, close), low > min(open, close), high < low or a price <= 0.
    """
    o, h, low, c = (pl.col(n) for n in ("open", "high", "low", "close"))
    expr = (
        (h < pl.max_horizontal(o, c))
        | (low > pl.min_horizontal(o, c))
        | (h < low)
        | (o <= 0)
        | (h <= 0)
        | (low <= 0)
        | (c <= 0)
    )
    return frame.select(expr.fill_null(True).alias("bad")).get_column("bad")


def assess(
    frame: pl.DataFrame,
    interval: Interval,
    start_ms: int,
    end_ms: int,
    *,
    instrument_id: str = "",
    symbol: str = "",
    market_type: MarketType | None = None,
    listing_ms: int | None = None,
    duplicates_removed: int = 0,
    out_of_order_fixed: int = 0,
    sources: dict[str, int] | None = None,
    cache_hits: int = 0,
    cache_misses: int = 0,
    endpoint_http: str | None = None,
    endpoint_vision: str | None = None,
    timings: dict[str, float] | None = None,
    warnings: list[str] | None = None,
    gap_evidence: Sequence[tuple[int, int, tuple[str, ...]]] = (),
    provisional_periods: int = 0,
) -> QualityReport:
    """Measure a sorted, unique, trimmed frame against the request ``[start_ms, end_ms)``.

    Expected bars count from ``listing_ms`` (the first bar Binance has) when it is later than
    ``start_ms``: bars before a listing never existed, so they are not missing.
    ``gap_evidence`` holds ``(start_ms, end_ms, sources)`` ranges the sources were asked for and
    lacked; a gap's ``confirmed_by`` is the sources that lacked every one of its bars.
    """
    notes = list(warnings or [])
    count_from = max(start_ms, listing_ms) if listing_ms is not None else start_ms
    expected = interval.count(count_from, end_ms) if count_from < end_ms else 0
    times = open_times_ms(frame)
    gaps = [confirm_gap(g, gap_evidence) for g in find_gaps(times, interval, count_from, end_ms)]
    missing = sum(g.missing for g in gaps)
    completeness = (expected - missing) / expected if expected else 1.0

    notes.extend(_off_grid_notes(times, interval))
    violations = _ohlc_violations(frame, notes)

    hits_total = cache_hits + cache_misses
    return QualityReport(
        instrument_id=instrument_id,
        symbol=symbol,
        market_type=market_type,
        interval=interval,
        start=from_ms(start_ms),
        end=from_ms(end_ms),
        bars=frame.height,
        expected_bars=expected,
        completeness=completeness,
        gaps=gaps,
        duplicates_removed=duplicates_removed,
        out_of_order_fixed=out_of_order_fixed,
        ohlc_violations=violations,
        sources={"cache": 0, "vision": 0, "rest": 0, "synthetic": 0, **(sources or {})},
        cache_hits=cache_hits,
        cache_misses=cache_misses,
        cache_hit_rate=cache_hits / hits_total if hits_total else 0.0,
        endpoint_http=endpoint_http,
        endpoint_vision=endpoint_vision,
        listing_time=from_ms(listing_ms) if listing_ms is not None else None,
        timings=dict(timings or {}),
        warnings=notes,
        provisional_periods=provisional_periods,
    )


def _off_grid_notes(times: np.ndarray, interval: Interval) -> list[str]:
    off_grid = times[~interval.on_grid_mask(times)]
    if not len(off_grid):
        return []
    listed = ", ".join(iso_ms(int(t)) for t in off_grid[:_LISTED])
    return [
        f"{len(off_grid)} bar(s) open off the {interval.value} grid (first: {listed}); "
        "they are returned but not counted as expected bars"
    ]


def _ohlc_violations(frame: pl.DataFrame, notes: list[str]) -> int:
    """Count the bars violating OHLC order (or a price <= 0), naming the first in ``notes``."""
    if not frame.height:
        return 0
    mask = ohlc_violation_mask(frame)
    violations = int(mask.sum())
    if violations:
        bad = frame.filter(mask).head(_LISTED)
        listed = "; ".join(
            f"{iso(r['open_time'])} o={r['open']:f} h={r['high']:f} l={r['low']:f} c={r['close']:f}"
            for r in bad.iter_rows(named=True)
        )
        notes.append(
            f"{violations} bar(s) violate OHLC order or have a price <= 0 (kept as served; "
            f"first: {listed})"
        )
    return violations


def confirm_gap(gap: Gap, evidence: Sequence[tuple[int, int, tuple[str, ...]]]) -> Gap:
    """``gap`` with ``confirmed_by``: the sources whose evidence ranges cover all of it.

    A report gap may span several periods (across midnight); a source confirms it only when its
    ranges leave no part of it uncovered.
    """
    lo, hi = to_ms(gap.start), to_ms(gap.end)
    by_source: dict[str, list[tuple[int, int]]] = {}
    for start, end, sources in evidence:
        if start < hi and end > lo:
            for source in sources:
                by_source.setdefault(source, []).append((start, end))
    confirmed = tuple(sorted(s for s, ranges in by_source.items() if _covers(ranges, lo, hi)))
    return replace(gap, confirmed_by=confirmed) if confirmed else gap


def _covers(ranges: list[tuple[int, int]], lo: int, hi: int) -> bool:
    reach = lo
    for start, end in sorted(ranges):
        if start > reach:
            return False
        reach = max(reach, end)
        if reach >= hi:
            return True
    return reach >= hi
