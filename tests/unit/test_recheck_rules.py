"""Re-asking unconfirmed gaps, exactly: which gaps are open, what was asked in this fetch, and
when a re-checked period needs rewriting."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from nautilus_dsm.common import Interval, to_ms
from nautilus_dsm.dsm.cache_state import PeriodGap, PeriodState
from nautilus_dsm.dsm.failover import REST, VISION, Evidence, unconfirmed
from nautilus_dsm.dsm.planner import Period
from nautilus_dsm.dsm.schema import FRAME_SCHEMA

M1 = Interval.MINUTE_1
MIN = 60_000
DAY = 86_400_000
T0 = to_ms(datetime(2024, 1, 1, tzinfo=UTC))
DAY1 = Period(T0, T0 + DAY, yearly=False)
LO, HI = T0 + 600 * MIN, T0 + 630 * MIN


def bars(opens: list[int]) -> pl.DataFrame:
    one = [1] * len(opens)
    columns = {name: one for name in FRAME_SCHEMA if name not in ("open_time", "close_time")}
    return pl.DataFrame(
        {"open_time": opens, "close_time": [t + MIN - 1 for t in opens], **columns}
    ).cast(FRAME_SCHEMA)


def short_day() -> pl.DataFrame:
    return bars([t for t in range(T0, T0 + DAY, MIN) if not LO <= t < HI])


def test_unconfirmed_keeps_gaps_lacked_by_fewer_than_two_independent_sources() -> None:
    state = PeriodState(
        final=False,
        gaps=(
            PeriodGap(1, 2, ("rest",)),
            PeriodGap(3, 4, ("vision", "vision_monthly")),  # one pipeline: counts once
            PeriodGap(5, 6, ("rest", "vision")),
            PeriodGap(7, 8, ()),
        ),
    )
    assert [g.start_ms for g in unconfirmed(state)] == [1, 3, 7]


def test_asked_windows_cover_gaps_in_this_fetch_only() -> None:
    state = PeriodState(final=False, gaps=(PeriodGap(LO, HI, (REST,)),))
    ev = Evidence.from_cache(M1, DAY1, T0, short_day(), state)
    gap = ev.state().gaps[0]
    assert gap == PeriodGap(LO, HI, (REST,))
    assert not ev.was_asked(REST, gap)  # lacked before, not yet asked in this fetch
    ev.mark_asked(REST, LO, LO + 10 * MIN)
    assert not ev.was_asked(REST, gap)
    ev.mark_asked(REST, LO, HI)
    assert ev.was_asked(REST, gap) and not ev.was_asked(VISION, gap)


def test_a_recheck_lacking_again_needs_no_write_and_new_bars_or_evidence_do() -> None:
    state = PeriodState(final=False, gaps=(PeriodGap(LO, HI, (REST,)),))
    same = Evidence.from_cache(M1, DAY1, T0, short_day(), state)
    assert not same.needs_write(same.state())  # nothing asked
    same.add(bars([]), REST, "rest", LO, HI)  # REST lacks them again
    assert same.state() == state and not same.needs_write(same.state())

    filled = Evidence.from_cache(M1, DAY1, T0, short_day(), state)
    assert filled.add(bars(list(range(LO, HI, MIN))), REST, "rest", LO, HI) == 30
    assert filled.state() == PeriodState(final=True)
    assert filled.needs_write(filled.state())

    confirmed = Evidence.from_cache(M1, DAY1, T0, short_day(), state)
    confirmed.add(short_day(), VISION, "vision", T0, T0 + DAY)
    assert confirmed.state() == PeriodState(final=True, gaps=(PeriodGap(LO, HI, (REST, VISION)),))
    assert confirmed.needs_write(confirmed.state())

    fresh = Evidence(M1, DAY1, T0)
    assert not fresh.needs_write(fresh.state())
    fresh.add(bars([]), REST, "rest", T0, T0 + DAY)  # an empty answer is still evidence
    assert fresh.needs_write(fresh.state())
