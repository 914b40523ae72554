"""Quality of a funding frame: expected events from the (changing) interval, gaps, off-boundary.

Pure: :func:`assess_funding` looks only at the frame and the request. Expected events follow
the funding interval as it was at each point: between two events ``a < b`` the boundaries the
interval of ``b`` (the hours that ended at ``b``) puts strictly between them are missing; before
the first event, the boundaries of its interval from the start; after the last, those of the
last interval up to the end. An event is *off-boundary* when its boundary is not a multiple of
its interval (UTC) or its ``calc_time`` is a minute or more after the boundary. Nothing is
dropped or invented: the report lists what is odd.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from typing import Any

import polars as pl

from nautilus_dsm.common import MarketType, from_ms, iso, iso_ms
from nautilus_dsm.dsm.funding_schema import HOUR_MS

# A calc_time this long after its boundary is not "a few ms late" any more.
OFF_BOUNDARY_MS = 60_000


@dataclass(frozen=True, slots=True)
class FundingGap:
    """Missing funding events: boundaries in ``[start, end)`` every ``interval_hours``."""

    start: datetime
    end: datetime
    missing: int
    interval_hours: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "start": iso(self.start),
            "end": iso(self.end),
            "missing": self.missing,
            "interval_hours": self.interval_hours,
        }

    def __str__(self) -> str:
        return f"{iso(self.start)}..{iso(self.end)} ({self.missing} events)"


@dataclass(slots=True)
class FundingQualityReport:
    """What a funding fetch returned and how complete it is.

    ``events`` counts the rows returned; ``expected_events`` the boundaries the intervals put in
    ``[start, end)``; ``interval_changes`` lists ``(time, from_hours, to_hours)``;
    ``off_boundary`` the boundaries of events that are not on their interval's grid or whose
    ``calc_time`` is far from it; ``calc_time_offsets_ms`` the largest ``calc_time - boundary``.
    """

    instrument_id: str
    symbol: str
    market_type: MarketType | None
    start: datetime
    end: datetime
    events: int
    expected_events: int
    completeness: float
    gaps: list[FundingGap] = field(default_factory=list)
    off_boundary: list[datetime] = field(default_factory=list)
    interval_changes: list[tuple[datetime, int, int]] = field(default_factory=list)
    unknown_intervals: int = 0
    duplicates_removed: int = 0
    max_calc_offset_ms: int = 0
    sources: dict[str, int] = field(default_factory=lambda: {"cache": 0, "vision": 0, "rest": 0})
    warnings: list[str] = field(default_factory=list)
    dataset: str = "funding_rates"
    listing_time: datetime | None = None  # the first event ever, when inside the range

    @property
    def missing_events(self) -> int:
        """Events the intervals expect that the frame lacks."""
        return sum(g.missing for g in self.gaps)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: enums as their values, times as ISO-8601 UTC strings."""
        return {
            "instrument_id": self.instrument_id,
            "symbol": self.symbol,
            "market_type": self.market_type.value if self.market_type is not None else None,
            "dataset": self.dataset,
            "start": iso(self.start),
            "end": iso(self.end),
            "events": self.events,
            "expected_events": self.expected_events,
            "completeness": self.completeness,
            "gaps": [g.to_dict() for g in self.gaps],
            "off_boundary": [iso(t) for t in self.off_boundary],
            "interval_changes": [
                {"time": iso(t), "from_hours": a, "to_hours": b}
                for t, a, b in self.interval_changes
            ],
            "unknown_intervals": self.unknown_intervals,
            "duplicates_removed": self.duplicates_removed,
            "max_calc_offset_ms": self.max_calc_offset_ms,
            "listing_time": iso(self.listing_time),
            "sources": dict(self.sources),
            "warnings": list(self.warnings),
        }

    def summary(self) -> str:
        """One line: events, completeness, gaps, interval changes, off-boundary events."""
        return (
            f"{self.instrument_id} funding {iso(self.start)}..{iso(self.end)}: "
            f"{self.events}/{self.expected_events} events ({self.completeness:.2%}), "
            f"{len(self.gaps)} gap(s), {len(self.interval_changes)} interval change(s), "
            f"{len(self.off_boundary)} off-boundary"
        )


def _boundaries_between(lo_ms: int, hi_ms: int, step_ms: int) -> list[int]:
    """Multiples of ``step_ms`` strictly after ``lo_ms`` and strictly before ``hi_ms``."""
    first = (lo_ms // step_ms + 1) * step_ms
    return list(range(first, hi_ms, step_ms))


def expected_gaps(
    times_ms: list[int], hours: list[int | None], start_ms: int, end_ms: int
) -> list[FundingGap]:
    """Return the runs of missing boundaries around and between events."""
    gaps: list[FundingGap] = []

    def add(boundaries: list[int], step_h: int) -> None:
        if boundaries:
            step = step_h * HOUR_MS
            gaps.append(
                FundingGap(
                    from_ms(boundaries[0]), from_ms(boundaries[-1] + step), len(boundaries), step_h
                )
            )

    known = [(t, h) for t, h in zip(times_ms, hours, strict=True) if h]
    if not known:
        return gaps
    first_t, first_h = known[0]
    add(_boundaries_between(start_ms - 1, first_t, first_h * HOUR_MS), first_h)
    for (a, _), (b, h) in pairwise(known):
        add(_boundaries_between(a, b, h * HOUR_MS), h)
    last_t, last_h = known[-1]
    add(_boundaries_between(last_t, end_ms, last_h * HOUR_MS), last_h)
    return gaps


def assess_funding(
    frame: pl.DataFrame,
    start_ms: int,
    end_ms: int,
    *,
    instrument_id: str = "",
    symbol: str = "",
    market_type: MarketType | None = None,
    sources: dict[str, int] | None = None,
    duplicates_removed: int = 0,
    warnings: list[str] | None = None,
    listing_ms: int | None = None,
) -> FundingQualityReport:
    """
    Measure a sorted, unique funding frame (FUNDING_SCHEMA) against ``[start_ms, end_ms)``.

    ``listing_ms`` (the first funding event ever, when after ``start_ms``) is where expected
    events begin: none existed before it.
    """
    times = frame.get_column("funding_time").dt.epoch("ms").to_list()
    calcs = frame.get_column("calc_time").dt.epoch("ms").to_list()
    hours = frame.get_column("funding_interval_hours").to_list()
    count_from = max(start_ms, listing_ms) if listing_ms is not None else start_ms
    gaps = expected_gaps(times, hours, count_from, end_ms)
    off = [
        from_ms(t)
        for t, c, h in zip(times, calcs, hours, strict=True)
        if (h and t % (h * HOUR_MS)) or c - t >= OFF_BOUNDARY_MS
    ]
    changes = [
        (from_ms(t), a, b)
        for t, a, b in zip(times[1:], hours, hours[1:], strict=False)
        if a and b and a != b
    ]
    unknown = sum(h is None for h in hours)
    notes = list(warnings or [])
    expected = len(times) + sum(g.missing for g in gaps)
    if gaps:
        notes.append(
            f"{sum(g.missing for g in gaps)} funding event(s) missing in {len(gaps)} gap(s): "
            + ", ".join(str(g) for g in gaps[:3])
        )
    if off:
        notes.append(
            f"{len(off)} funding event(s) off their interval's boundary: "
            + ", ".join(iso_ms(int(t.timestamp() * 1000)) for t in off[:3])
        )
    if unknown:
        notes.append(
            f"{unknown} funding event(s) of unknown interval (REST gives none and no neighbour "
            "tells it); they are kept with a null interval"
        )
    return FundingQualityReport(
        instrument_id=instrument_id,
        symbol=symbol,
        market_type=market_type,
        start=from_ms(start_ms),
        end=from_ms(end_ms),
        events=len(times),
        expected_events=expected,
        completeness=(len(times) / expected) if expected else 1.0,
        gaps=gaps,
        off_boundary=off,
        interval_changes=changes,
        unknown_intervals=unknown,
        duplicates_removed=duplicates_removed,
        max_calc_offset_ms=max((c - t for t, c in zip(times, calcs, strict=True)), default=0),
        sources=dict(sources or {"cache": 0, "vision": 0, "rest": 0}),
        warnings=notes,
        listing_time=from_ms(listing_ms) if listing_ms is not None else None,
    )
