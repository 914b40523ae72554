"""The state of one fetch: what was served, counted, warned about and failed.

:class:`FetchRun` collects, period by period, the frames served (tagged with their source), the
counts of what the sources sent (duplicates, disorder), the warnings, the failures and the
evidence behind gaps; at the end it merges the frames, states what stayed provisional or
uncached, raises when periods could not be fetched, and builds the quality report.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import polars as pl

from nautilus_dsm.common import Interval, ResolvedInstrument
from nautilus_dsm.common.datasets import Dataset
from nautilus_dsm.dsm.failover import SOURCE_COL
from nautilus_dsm.dsm.planner import FetchPlan
from nautilus_dsm.dsm.quality import QualityReport, assess
from nautilus_dsm.dsm.schema import COLUMNS, empty_frame
from nautilus_dsm.errors import DataUnavailable, InvalidData, InvalidResponse, RateLimited

if TYPE_CHECKING:
    from nautilus_dsm.dsm.cache_state import PeriodState

log = logging.getLogger(__name__)

Source = Literal["cache", "vision", "rest"]
ProgressCallback = Callable[[int, int], None]


@dataclass
class FetchRun:
    """Mutable state of one fetch: frames per period, counters, failures, timings."""

    instrument: ResolvedInstrument
    interval: Interval
    start_ms: int
    stop_ms: int
    now_ms: int
    total: int
    progress: ProgressCallback | None
    done: int = 0
    frames: list[pl.DataFrame] = field(default_factory=list)
    duplicates: int = 0
    out_of_order: int = 0
    warnings: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    rate_limited: bool = False  # a failure was a 429/418 wait beyond max_wait_s
    invalid: list[InvalidResponse] = field(default_factory=list)  # failures that were bad payloads
    cached_first_ms: int | None = None  # earliest open time read from the cache
    # The provisional source chain (see failover.py): what the cache held, which gaps the
    # sources lacked, which periods stay provisional, which could not be cached.
    cache_frame: pl.DataFrame | None = None
    provisional: dict[str, tuple[pl.DataFrame, PeriodState]] = field(default_factory=dict)
    first_bar_ms: int | None = None
    gap_evidence: list[tuple[int, int, tuple[str, ...]]] = field(default_factory=list)
    provisional_left: list[str] = field(default_factory=list)
    provisional_stuck: list[str] = field(default_factory=list)  # no second source can confirm
    uncached: list[str] = field(default_factory=list)
    uncached_why: str = ""
    timings: dict[str, float] = field(
        default_factory=lambda: {"cache": 0.0, "vision": 0.0, "rest": 0.0}
    )
    dataset: Dataset = Dataset.KLINES  # which kline-shaped dataset the run fetches

    def advance(self, n: int = 1) -> None:
        """Count ``n`` periods done and report the progress."""
        self.done += n
        if self.progress is not None and n:
            self.progress(self.done, self.total)

    def add(self, frame: pl.DataFrame, source: Source) -> None:
        """Serve a frame's bars, tagged with their source."""
        self.frames.append(frame.with_columns(pl.lit(source).alias(SOURCE_COL)))

    def note_outside(self, n: int, where: str) -> None:
        """Warn about ``n`` rows a file held outside its period (ignored)."""
        if n:
            self.warnings.append(
                f"{where}: {n} row(s) with open times outside the file's period were ignored"
            )

    def merge(self) -> tuple[pl.DataFrame, dict[str, int]]:
        """Return the served bars in ``[start, stop)``, sorted and unique, and rows per source."""
        if not self.frames:
            return empty_frame(), {}
        opens = pl.col("open_time").dt.epoch("ms")
        merged = (
            pl.concat(self.frames, how="vertical")
            .filter((opens >= self.start_ms) & (opens < self.stop_ms))
            .sort("open_time", maintain_order=True)
        )
        unique = merged.unique(subset="open_time", keep="first", maintain_order=True)
        self.duplicates += merged.height - unique.height
        counts = unique.get_column(SOURCE_COL).value_counts()
        sources = {str(s): int(n) for s, n in counts.iter_rows()}
        return unique.select(COLUMNS), sources

    def note_trust(self) -> None:
        """One warning each for periods left provisional and periods that were not cached."""
        if self.provisional_left:
            self.warnings.append(
                _provisional_warning(self.provisional_left, self.provisional_stuck)
            )
        if self.uncached:
            keys = sorted(self.uncached)
            message = (
                f"{len(keys)} period(s) could not be cached ({_listed(keys)}): {self.uncached_why}"
            )
            self.warnings.append(message)
            log.warning(message)

    def report(
        self,
        frame: pl.DataFrame,
        sources: dict[str, int],
        plan: FetchPlan,
        listing_ms: int | None,
        *,
        endpoint_http: str | None,
        endpoint_vision: str | None,
    ) -> QualityReport:
        """Return the quality report of the merged ``frame`` (see :meth:`merge`)."""
        instrument = self.instrument
        return assess(
            frame,
            self.interval,
            self.start_ms,
            self.stop_ms,
            instrument_id=instrument.instrument_id,
            symbol=instrument.symbol,
            market_type=instrument.market_type,
            listing_ms=listing_ms,
            duplicates_removed=self.duplicates,
            out_of_order_fixed=self.out_of_order,
            sources=sources,
            cache_hits=len(plan.cached),
            cache_misses=sum(len(m.days) for m in plan.vision_months)
            + len(plan.vision_days)
            + len(plan.rest_closed)
            + len(plan.recheck),
            endpoint_http=endpoint_http,
            endpoint_vision=endpoint_vision,
            timings=self.timings,
            warnings=self.warnings,
            gap_evidence=self.gap_evidence,
            provisional_periods=len(self.provisional_left),
            dataset=self.dataset.value,
        )

    def raise_failures(self) -> None:
        """Raise for the periods no source could serve (nothing when all were served)."""
        inst, interval = self.instrument, self.interval
        if self.failures and len(self.invalid) == len(self.failures):
            # Every failure was a payload that failed validation: say which bars, so a live
            # stream can skip exactly those (retrying an outage is another matter).
            opens = sorted({t for exc in self.invalid for t in exc.open_times_ms})
            raise InvalidData(
                f"{inst.instrument_id} {interval.value}: {len(self.failures)} period(s) "
                f"were answered with payloads that fail validation: {'; '.join(self.failures)}",
                open_times_ms=tuple(opens),
            )
        if self.failures:
            # A ban is not missing data: RateLimited (a SourceError, like DataUnavailable) lets
            # callers back off and retry after the time the message names.
            error = RateLimited if self.rate_limited else DataUnavailable
            raise error(
                f"{inst.instrument_id} {interval.value}: {len(self.failures)} period(s) "
                f"could not be fetched from any source: {'; '.join(self.failures)}. Periods "
                "fetched so far are cached, so a retry only requests these; check the network "
                "and base_url_http / base_url_vision, or narrow the range"
            )


def _provisional_warning(left: list[str], stuck_keys: list[str]) -> str:
    keys = sorted(left)
    stuck = set(stuck_keys)
    text = (
        f"{len(keys)} period(s) cached as provisional ({_listed(keys)}): their missing "
        "bars are not confirmed missing by both Vision and REST; every later fetch asks "
        "the enabled sources again for them"
    )
    if stuck == set(keys):
        text += (
            " (no second enabled source can confirm them: a REST-only period, or a "
            "source is disabled)"
        )
    elif stuck:
        text += (
            f" (no second enabled source can confirm {_listed(sorted(stuck))}: a "
            "REST-only period, or a source is disabled)"
        )
    return text


def _listed(keys: list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")
