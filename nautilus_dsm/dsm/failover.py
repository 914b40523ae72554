"""The evidence behind one closed period: its bars so far, and who was asked about the rest.

The manager's per-period source chain (Vision monthly zip -> Vision daily zip -> REST) asks
each next source only for what the previous ones lacked: a short monthly zip sends its day to
the daily zip, a short daily zip (or REST page) sends the missing open times to REST. An
:class:`Evidence` records every answer as a window ``[lo, hi)`` per source tag, so each missing
run of bars knows which sources lacked it. A period is *final* (immutable in the cache) only
when nothing the grid expects is missing, or every missing run was lacked by two independent
sources (Vision and REST: a Vision monthly and daily zip come from one pipeline and count once).
Anything else is *provisional*: cached with its gaps and re-checked by every later fetch
against every enabled source, the ones that lacked a gap included (one source's short answer is
no evidence: a page can be transiently short), each at most once per fetch. Pure bookkeeping
over frames and integers: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from nautilus_dsm.common import Interval, to_ms
from nautilus_dsm.dsm.cache_state import PeriodGap, PeriodState
from nautilus_dsm.dsm.planner import Period
from nautilus_dsm.dsm.quality import find_gaps, open_times_ms

VISION_MONTHLY = "vision_monthly"
VISION = "vision"
REST = "rest"
# The independent source behind each tag: two kinds must lack a bar for it to be confirmed.
_KIND = {VISION_MONTHLY: "vision", VISION: "vision", REST: "rest"}
SOURCE_COL = "__source"


def kinds(tags: tuple[str, ...] | set[str] | frozenset[str]) -> tuple[str, ...]:
    """Return the independent sources behind source tags, sorted (``("rest", "vision")``)."""
    return tuple(sorted({_KIND.get(t, t) for t in tags}))


@dataclass
class Evidence:
    """Bars of one closed period and the windows each source tag answered for.

    ``expect_from_ms`` is where the grid's expected bars begin: the period start, or the
    symbol's first bar when the period holds its listing. ``tried`` holds the tags asked in
    this fetch (answered or not), so no source is asked twice for one period.
    """

    interval: Interval
    period: Period
    expect_from_ms: int
    frame: pl.DataFrame | None = None
    answered: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    tried: set[str] = field(default_factory=set)
    # Windows each tag was asked for in this fetch (answered or failed): a source is asked at
    # most once per fetch for a missing run, even one it lacked before.
    asked: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    changed: bool = False  # bars or answers were added since the evidence was created
    # What the cache held (bar count, state) for evidence read from it: a re-check whose
    # sources lacked again what they lacked before changes neither, so nothing is rewritten.
    cached: tuple[int, PeriodState] | None = None
    _state: PeriodState | None = field(default=None, repr=False)  # memo, reset by add()

    @classmethod
    def from_cache(
        cls,
        interval: Interval,
        period: Period,
        expect_from_ms: int,
        frame: pl.DataFrame,
        state: PeriodState,
    ) -> Evidence:
        """Evidence of a cached (provisional or unrecorded) period: its bars and recorded gaps."""
        ev = cls(interval, period, expect_from_ms)
        ev.frame = frame.with_columns(pl.lit("cache").alias(SOURCE_COL))
        ev.cached = (frame.height, state)
        for gap in state.gaps:
            for tag in gap.missing_in:
                ev.answered.setdefault(tag, []).append((gap.start_ms, gap.end_ms))
        return ev

    def add(self, frame: pl.DataFrame, tag: str, label: str, lo: int, hi: int) -> int:
        """Record that source ``tag`` answered for open times ``[lo, hi)`` with ``frame``.

        ``frame`` is clean and inside the period. Return how many new bars it contributed.
        """
        self.answered.setdefault(tag, []).append((lo, hi))
        self.mark_asked(tag, lo, hi)
        self.changed = True
        self._state = None
        tagged = frame.with_columns(pl.lit(label).alias(SOURCE_COL))
        if self.frame is None or self.frame.height == 0:
            self.frame = tagged
            return tagged.height
        before = self.frame.height
        # Bars already held win (the first source that had a bar serves it).
        self.frame = (
            pl.concat([self.frame, tagged], how="vertical")
            .unique(subset="open_time", keep="first", maintain_order=True)
            .sort("open_time", maintain_order=True)
        )
        return self.frame.height - before

    def needs_write(self, state: PeriodState) -> bool:
        """Tell whether the period's bars or ``state`` differ from what the cache holds."""
        if not self.changed:
            return False
        height = self.frame.height if self.frame is not None else 0
        return self.cached is None or self.cached != (height, state)

    def mark_asked(self, tag: str, lo: int, hi: int) -> None:
        """Record that ``tag`` was asked for ``[lo, hi)`` in this fetch (even if it failed)."""
        self.asked.setdefault(tag, []).append((lo, hi))

    def was_asked(self, tag: str, gap: PeriodGap) -> bool:
        """Tell whether ``tag`` was already asked for all of ``gap`` in this fetch."""
        return _covered(self.asked.get(tag, []), gap.start_ms, gap.end_ms)

    def gaps(self) -> list[PeriodGap]:
        """Return the runs of expected open times still missing.

        Each comes with the tags that lacked all of it.
        """
        lo, hi = self.expect_from_ms, self.period.end_ms
        if lo >= hi:
            return []
        times = open_times_ms(self.frame) if self.frame is not None else _NO_TIMES
        out: list[PeriodGap] = []
        for gap in find_gaps(times, self.interval, lo, hi):
            start, end = to_ms(gap.start), to_ms(gap.end)
            tags = tuple(
                sorted(
                    tag for tag, windows in self.answered.items() if _covered(windows, start, end)
                )
            )
            out.append(PeriodGap(start, end, tags))
        return out

    def state(self) -> PeriodState:
        """Return the period's state: final when complete or every gap is lacked by two sources.

        The two sources must be independent (see :func:`kinds`).
        """
        if self._state is None:
            gaps = tuple(self.gaps())
            final = all(len(kinds(g.missing_in)) >= 2 for g in gaps)
            self._state = PeriodState(final=final, gaps=gaps)
        return self._state

    def bars(self) -> pl.DataFrame | None:
        """Return the bars held (with the source column), sorted and unique."""
        return self.frame


def unconfirmed(state: PeriodState) -> list[PeriodGap]:
    """Return the gaps fewer than two independent sources lacked: still worth asking again."""
    return [g for g in state.gaps if len(kinds(g.missing_in)) < 2]


def _covered(windows: list[tuple[int, int]], lo: int, hi: int) -> bool:
    return any(w_lo <= lo and hi <= w_hi for w_lo, w_hi in windows)


_NO_TIMES = open_times_ms(
    pl.DataFrame({"open_time": []}, schema={"open_time": pl.Datetime("ms", "UTC")})
)
