"""The per-period source chain: cache -> Vision monthly zip -> Vision daily zip -> REST.

Each closed period is served by the first source that has its bars; a source that answers short
sends only the missing bars on to the next one (see ``failover.py``). The cache serves final
periods in one read; a short final file without a recorded state, and every provisional one,
is re-checked: its bars are served and its gaps asked again of the sources that have not
confirmed them, each at most once per fetch. A closed period is then cached once, final when
complete or every gap is lacked by Vision and REST, else provisional; one that cannot be
cached costs a warning, never its bars. The open period is fetched from REST for the requested
part only and never cached. Every frame is cleaned (sorted, unique, inside its period) and what
the source sent is counted on the run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable

import polars as pl

from nautilus_dsm.common import ENDPOINTS, Interval, iso_ms
from nautilus_dsm.constants import DAY_MS
from nautilus_dsm.dsm.cache_state import PeriodState
from nautilus_dsm.dsm.failover import REST, VISION, VISION_MONTHLY, Evidence, kinds, unconfirmed
from nautilus_dsm.dsm.fetch_run import FetchRun
from nautilus_dsm.dsm.http import gather_or_cancel
from nautilus_dsm.dsm.planner import MonthGroup, Period, is_closed, is_yearly
from nautilus_dsm.dsm.quality import normalise
from nautilus_dsm.dsm.schema import COLUMNS, empty_frame
from nautilus_dsm.dsm.sources import MarketSources
from nautilus_dsm.errors import (
    CacheUnwritable,
    InvalidInput,
    InvalidResponse,
    RateLimited,
    SourceError,
)

log = logging.getLogger(__name__)


class PeriodChain:
    """
    Serve the periods of a fetch through cache -> Vision -> REST, recording the evidence.

    Parameters
    ----------
    sources : MarketSources
        The manager: its cache, source switches and clients (read on every use).

    """

    def __init__(self, sources: MarketSources) -> None:
        self._sources = sources

    # -- the cache ---------------------------------------------------------------------------

    def read_cache(self, run: FetchRun, periods: list[Period]) -> set[str]:
        """Read the run's closed periods from the cache; return the keys of the final ones.

        The provisional ones go to ``run.provisional``, the final frame to ``run.cache_frame``
        (served by :meth:`settle_cached`), the earliest cached open time to
        ``run.cached_first_ms``.
        """
        if not self._sources.use_cache:
            return set()
        closed = [p.key for p in periods if is_closed(run.interval, p, run.now_ms)]
        if not closed:
            return set()
        t0 = time.perf_counter()
        inst, cache = run.instrument, self._sources.cache
        frame, hits = cache.read_many(inst.market_type, inst.symbol, run.interval, closed)
        pending = [k for k in closed if k not in set(hits)]
        run.provisional = cache.read_provisional(
            inst.market_type, inst.symbol, run.interval, pending
        )
        run.timings["cache"] += time.perf_counter() - t0
        firsts = [
            int(f.get_column("open_time").dt.epoch("ms").min())
            for f in [frame, *(p[0] for p in run.provisional.values())]
            if f is not None and f.height
        ]
        run.cached_first_ms = min(firsts) if firsts else None
        run.cache_frame = frame
        return set(hits)

    def settle_cached(self, run: FetchRun, periods: list[Period], hits: set[str]) -> set[str]:
        """Serve the final cached periods; send the unexplained short ones to the re-check.

        A short one whose gaps no recorded state explains (a file written before states
        existed) is re-checked like a provisional.

        A final file's recorded gaps become evidence for the report (confirmed, by whom).
        """
        frame = run.cache_frame
        if frame is None or not hits:
            return hits
        counts = _bars_per_period(frame, run.interval)
        demoted: list[Period] = []
        for period in periods:
            if period.key in hits and not self._explained(
                run, period, counts.get(period.start_ms, 0)
            ):
                demoted.append(period)
        if demoted:
            opens = pl.col("open_time").dt.epoch("ms")
            for period in demoted:
                inside = (opens >= period.start_ms) & (opens < period.end_ms)
                unrecorded = PeriodState(final=False, recorded=False)
                run.provisional[period.key] = (frame.filter(inside), unrecorded)
                frame = frame.filter(~inside)
                hits.discard(period.key)
            log.info(
                "%s %s: %d short cached period(s) without a recorded state (%s); re-checking",
                run.instrument.symbol,
                run.interval.value,
                len(demoted),
                ", ".join(p.key for p in demoted),
            )
        if frame.height:
            run.add(frame, "cache")
        return hits

    def _explained(self, run: FetchRun, period: Period, have: int) -> bool:
        """Return True when a final cached period is complete or its recorded gaps explain it.

        Gaps that explain what it lacks go to the run's gap evidence.
        """
        inst = run.instrument
        expected = run.interval.count(_expect_from(run, period), period.end_ms)
        if have >= expected:
            return True
        state = self._sources.cache.read_state(
            inst.market_type, inst.symbol, run.interval, period.key
        )
        recorded = (
            0
            if state is None
            else sum(run.interval.count(g.start_ms, g.end_ms) for g in state.gaps)
        )
        if state is not None and state.recorded and have + recorded >= expected:
            run.gap_evidence.extend((g.start_ms, g.end_ms, kinds(g.missing_in)) for g in state.gaps)
            return True
        return False

    # -- Vision ------------------------------------------------------------------------------

    async def vision_month(self, run: FetchRun, month: MonthGroup) -> None:
        """Fetch a whole uncached month from its monthly zip; its daily zips when it is missing."""
        inst = run.instrument
        t0 = time.perf_counter()
        try:
            frame = await self._sources.vision_client(inst.market_type).monthly(
                inst.symbol, run.interval, month.year, month.month
            )
            reason = "404"
        except SourceError as exc:
            frame, reason = None, str(exc)
        finally:
            run.timings["vision"] += time.perf_counter() - t0
        if frame is None:
            # Monthly files appear days after the month ends; the daily files come first.
            log.info(
                "Vision monthly %s %s unavailable (%s); using daily files",
                inst.symbol,
                month.key,
                reason,
            )
            await gather_or_cancel([self.vision_day(run, day) for day in month.days])
            return
        opens = pl.col("open_time").dt.epoch("ms")
        inside = frame.filter((opens >= month.days[0].start_ms) & (opens < month.days[-1].end_ms))
        run.note_outside(frame.height - inside.height, f"Vision monthly {month.key}")
        jobs: list[Awaitable[None]] = []
        for day in month.days:
            part = inside.filter((opens >= day.start_ms) & (opens < day.end_ms))
            ev = _evidence(run, day)
            clean = _clean(run, day, part, "vision")
            ev.add(clean, VISION_MONTHLY, "vision", day.start_ms, day.end_ms)
            # A day the monthly zip lacks bars of goes on to its daily zip and REST.
            jobs.append(self._complete(run, day, ev))
        await gather_or_cancel(jobs)

    async def _daily_file(self, run: FetchRun, period: Period) -> tuple[pl.DataFrame | None, str]:
        """Fetch the Vision daily zip of a period (clean), or return None and why not."""
        inst = run.instrument
        t0 = time.perf_counter()
        try:
            frame = await self._sources.vision_client(inst.market_type).daily(
                inst.symbol, run.interval, period.day
            )
            reason = "not on Vision (404)"
        except SourceError as exc:
            frame, reason = None, f"Vision refused ({exc})"
        finally:
            run.timings["vision"] += time.perf_counter() - t0
        if frame is None:
            return None, reason
        return _clean(run, period, frame, "vision"), reason

    async def vision_day(self, run: FetchRun, period: Period) -> None:
        """Fetch an uncached day from its daily zip; REST when the zip is missing or refused."""
        inst = run.instrument
        frame, reason = await self._daily_file(run, period)
        ev = _evidence(run, period)
        ev.tried.add(VISION)
        if frame is not None:
            ev.add(frame, VISION, "vision", period.start_ms, period.end_ms)
            await self._complete(run, period, ev)
        elif self._sources.use_rest:
            log.info("%s %s: %s; using REST", inst.symbol, period.key, reason)
            await self.rest_period(run, period, cache=True, ev=ev)
        elif reason.startswith("not on Vision"):
            run.warnings.append(f"{period.key}: {reason} and REST is disabled; counted as missing")
            run.advance()
        else:
            run.failures.append(f"{period.key} ({reason}; REST is disabled)")
            run.advance()

    # -- REST --------------------------------------------------------------------------------

    async def rest_period(
        self, run: FetchRun, period: Period, *, cache: bool, ev: Evidence | None = None
    ) -> None:
        """Fetch a period from REST: a closed one whole (then cached), the open one as requested."""
        inst = run.instrument
        if not self._sources.use_rest:
            run.warnings.append(
                f"{period.key}: the open period needs REST, which is disabled; counted as missing"
            )
            run.advance()
            return
        if cache and not _worth_whole(run, period):
            cache = False
        # A closed period is fetched whole (and cached); the open one only as far as requested.
        lo = period.start_ms if cache else max(period.start_ms, run.start_ms)
        hi = period.end_ms if cache else min(period.end_ms, run.stop_ms)
        t0 = time.perf_counter()
        try:
            frame = await self._sources.rest_client(inst.market_type).klines(
                inst.symbol, run.interval, lo, hi, now_ms=run.now_ms
            )
        except SourceError as exc:
            run.failures.append(f"{period.key} (REST: {exc})")
            run.rate_limited |= isinstance(exc, RateLimited)
            if isinstance(exc, InvalidResponse):  # exchange-clock/live hunk (trust-h3)
                run.invalid.append(exc)
            run.advance()
            return
        finally:
            run.timings["rest"] += time.perf_counter() - t0
        if not cache:
            # The open period (or a partial closed one): served, never cached.
            run.add(_clean(run, period, frame, "rest"), "rest")
            run.advance()
            return
        ev = ev if ev is not None else _evidence(run, period)
        ev.tried.add(REST)
        ev.add(_clean(run, period, frame, "rest"), REST, "rest", lo, hi)
        await self._complete(run, period, ev)

    async def _rest_range(
        self, run: FetchRun, period: Period, lo: int, hi: int
    ) -> pl.DataFrame | None:
        """Ask REST for the missing open times ``[lo, hi)`` of a closed period (clean).

        Return None (with a warning) when REST fails: the period then stays provisional.
        """
        inst = run.instrument
        t0 = time.perf_counter()
        try:
            frame = await self._sources.rest_client(inst.market_type).klines(
                inst.symbol, run.interval, lo, hi, now_ms=run.now_ms
            )
        except SourceError as exc:
            run.warnings.append(
                f"{period.key}: REST could not be asked for the missing bars "
                f"{iso_ms(lo)}..{iso_ms(hi)} ({exc}); served as they are, the next fetch asks "
                "again"
            )
            return None
        finally:
            run.timings["rest"] += time.perf_counter() - t0
        opens = pl.col("open_time").dt.epoch("ms")
        clean = _clean(run, period, frame, "rest")
        return clean.filter((opens >= lo) & (opens < hi))

    # -- completing a period -----------------------------------------------------------------

    async def recheck(self, run: FetchRun, period: Period) -> None:
        """Re-check a provisional cached period: serve its bars and try to complete it.

        The sources that did not confirm its gaps are asked for the missing bars only; the
        period is cached final once complete or confirmed.
        """
        frame, state = run.provisional[period.key]
        ev = Evidence.from_cache(run.interval, period, _expect_from(run, period), frame, state)
        await self._complete(run, period, ev)

    async def _complete(self, run: FetchRun, period: Period, ev: Evidence) -> None:
        """Ask the sources for what the period still lacks, then cache it once.

        It is cached final when complete or when every gap is lacked by Vision and REST, else
        provisional.

        An unconfirmed gap is asked of every enabled source, each at most once per fetch: first
        the sources that have not lacked it (the daily zip, then REST for the missing open times
        only), then, for what is still missing, the ones that lacked it before. One source's
        lack is no evidence (a transiently short page), so a gap only one source lacked is
        re-asked by every later fetch; a gap two sources lacked is confirmed and never asked.
        """
        for again in (False, True):
            await self._ask_vision(run, period, ev, again=again)
            await self._ask_rest(run, period, ev, again=again)
        self._finish(run, period, ev, ev.state())

    async def _ask_vision(
        self, run: FetchRun, period: Period, ev: Evidence, *, again: bool
    ) -> None:
        """Ask the daily zip for the period's unconfirmed gaps, at most once per fetch.

        On the first pass, only when one of them is a gap Vision has not lacked yet.
        """
        open_gaps = unconfirmed(ev.state())
        if (
            not open_gaps
            or not self._sources.use_vision
            or period.yearly
            or VISION in ev.tried
            or not (again or any(VISION not in g.missing_in for g in open_gaps))
        ):
            return
        ev.tried.add(VISION)
        frame, reason = await self._daily_file(run, period)
        if frame is not None:
            ev.add(frame, VISION, "vision", period.start_ms, period.end_ms)
        else:
            log.info("%s %s: %s for its missing bars", run.instrument.symbol, period.key, reason)

    async def _ask_rest(self, run: FetchRun, period: Period, ev: Evidence, *, again: bool) -> None:
        """Ask REST for the unconfirmed gaps' missing open times it was not asked in this fetch.

        On the first pass, only the gaps REST has not lacked yet.
        """
        if not self._sources.use_rest:
            return
        ask = [
            g
            for g in unconfirmed(ev.state())
            if not ev.was_asked(REST, g) and (again or REST not in g.missing_in)
        ]
        if not ask:
            return
        for gap in ask:
            ev.mark_asked(REST, gap.start_ms, gap.end_ms)
        answers = await gather_or_cancel(
            [self._rest_range(run, period, g.start_ms, g.end_ms) for g in ask]
        )
        for gap, frame in zip(ask, answers, strict=True):
            if frame is not None:
                ev.add(frame, REST, "rest", gap.start_ms, gap.end_ms)

    def _finish(self, run: FetchRun, period: Period, ev: Evidence, state: PeriodState) -> None:
        use_cache = self._sources.use_cache
        bars = ev.bars()
        if use_cache and ev.needs_write(state):
            stored = bars.select(COLUMNS) if bars is not None else empty_frame()
            self._cache_write(run, period, stored, state)
        run.gap_evidence.extend((g.start_ms, g.end_ms, kinds(g.missing_in)) for g in state.gaps)
        if not state.final and use_cache:  # without a cache there is nothing to re-check
            run.provisional_left.append(period.key)
            if not self._can_confirm(period):
                run.provisional_stuck.append(period.key)
        if bars is not None and bars.height:
            run.frames.append(bars)
        run.advance()

    def _cache_write(
        self, run: FetchRun, period: Period, frame: pl.DataFrame, state: PeriodState
    ) -> None:
        """Cache one period; a cache that cannot take it costs the entry, never the bars."""
        inst = run.instrument
        t0 = time.perf_counter()
        try:
            self._sources.cache.write(
                inst.market_type, inst.symbol, run.interval, period.key, frame, state=state
            )
        except (CacheUnwritable, InvalidInput) as exc:
            if not run.uncached:
                run.uncached_why = str(exc)
            run.uncached.append(period.key)
        finally:
            run.timings["cache"] += time.perf_counter() - t0

    def _can_confirm(self, period: Period) -> bool:
        """Return True when Vision and REST, two independent sources, are enabled for the period.

        Only then can its gaps be confirmed; otherwise they are only ever asked again.
        """
        return self._sources.use_vision and self._sources.use_rest and not period.yearly


def _expect_from(run: FetchRun, period: Period) -> int:
    """Where the grid's expected bars of a period begin: after the first bar, when known."""
    first = run.first_bar_ms
    return max(period.start_ms, first) if first is not None else period.start_ms


def _evidence(run: FetchRun, period: Period) -> Evidence:
    return Evidence(run.interval, period, _expect_from(run, period))


def _worth_whole(run: FetchRun, period: Period) -> bool:
    """Fetch a closed period whole from REST (to cache it) unless that costs many pages.

    A live poll just after midnight asks for a few 1s bars of yesterday, which Vision has
    not published yet; the whole day would be 87 pages. Then only the requested part is
    fetched, and not cached (a later request or Vision completes the day).
    """
    if run.start_ms <= period.start_ms and period.end_ms <= run.stop_ms:
        return True
    limit = ENDPOINTS[run.instrument.market_type].kline_limit
    return run.interval.count(period.start_ms, period.end_ms) <= 2 * limit


def _clean(run: FetchRun, period: Period, frame: pl.DataFrame, where: str) -> pl.DataFrame:
    """Return a source's frame sorted, unique and inside the period (what it sent is counted)."""
    clean, duplicates, out_of_order = normalise(frame.select(COLUMNS))
    run.duplicates += duplicates
    run.out_of_order += out_of_order
    opens = pl.col("open_time").dt.epoch("ms")
    inside = clean.filter((opens >= period.start_ms) & (opens < period.end_ms))
    run.note_outside(clean.height - inside.height, f"{where} {period.key}")
    return inside


def _bars_per_period(frame: pl.DataFrame, interval: Interval) -> dict[int, int]:
    """Bars per period start (epoch ms) of a cached frame."""
    if frame.height == 0:
        return {}
    opens = frame.get_column("open_time")
    if is_yearly(interval):
        starts = opens.dt.truncate("1y").dt.epoch("ms")
    else:
        starts = opens.dt.epoch("ms") // DAY_MS * DAY_MS
    counts = starts.value_counts()
    return {int(k): int(n) for k, n in counts.iter_rows()}
