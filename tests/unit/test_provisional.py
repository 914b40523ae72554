"""Provisional periods, exactly: the evidence rules, the on-disk state, the plan, the report."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from nautilus_dsm.common import Interval, MarketType, from_ms, to_ms
from nautilus_dsm.dsm.cache import KlineCache
from nautilus_dsm.dsm.cache_checks import frame_problem
from nautilus_dsm.dsm.cache_state import PeriodGap, PeriodState
from nautilus_dsm.dsm.failover import REST, VISION, VISION_MONTHLY, Evidence, kinds
from nautilus_dsm.dsm.planner import Period, periods_for, plan_fetch
from nautilus_dsm.dsm.quality import Gap, assess, confirm_gap
from nautilus_dsm.dsm.schema import FRAME_SCHEMA
from nautilus_dsm.errors import InvalidInput

M1 = Interval.MINUTE_1
MIN = 60_000
DAY = 86_400_000
T0 = to_ms(datetime(2024, 1, 1, tzinfo=UTC))
DAY1 = Period(T0, T0 + DAY, yearly=False)


def bars(opens: list[int], step: int = MIN) -> pl.DataFrame:
    one = [1] * len(opens)
    return pl.DataFrame(
        {
            "open_time": opens,
            "close_time": [t + step - 1 for t in opens],
            "open": one,
            "high": one,
            "low": one,
            "close": one,
            "volume": one,
            "quote_volume": one,
            "trades": one,
            "taker_buy_base_volume": one,
            "taker_buy_quote_volume": one,
        }
    ).cast(FRAME_SCHEMA)


def day_without(lo: int, hi: int) -> pl.DataFrame:
    return bars([t for t in range(T0, T0 + DAY, MIN) if not lo <= t < hi])


GAP = (T0 + 600 * MIN, T0 + 630 * MIN)


def test_complete_period_is_final_after_one_source() -> None:
    ev = Evidence(M1, DAY1, T0)
    assert ev.add(bars(list(range(T0, T0 + DAY, MIN))), VISION, "vision", T0, T0 + DAY) == 1440
    assert ev.state() == PeriodState(final=True)


def test_gap_lacked_by_vision_only_is_provisional_and_by_vision_and_rest_final() -> None:
    ev = Evidence(M1, DAY1, T0)
    ev.add(day_without(*GAP), VISION, "vision", T0, T0 + DAY)
    assert ev.state() == PeriodState(final=False, gaps=(PeriodGap(*GAP, (VISION,)),))
    assert ev.add(bars([]), REST, "rest", *GAP) == 0
    assert ev.state() == PeriodState(final=True, gaps=(PeriodGap(*GAP, (REST, VISION)),))


def test_monthly_and_daily_zip_are_one_source() -> None:
    ev = Evidence(M1, DAY1, T0)
    ev.add(day_without(*GAP), VISION_MONTHLY, "vision", T0, T0 + DAY)
    ev.add(day_without(*GAP), VISION, "vision", T0, T0 + DAY)
    assert kinds((VISION_MONTHLY, VISION)) == ("vision",)
    assert ev.state().final is False  # one pipeline: not two independent confirmations


def test_rest_filling_part_of_a_gap_leaves_the_rest_lacked_by_both() -> None:
    ev = Evidence(M1, DAY1, T0)
    ev.add(day_without(*GAP), VISION, "vision", T0, T0 + DAY)
    ev.add(bars([GAP[0] + i * MIN for i in range(10)]), REST, "rest", *GAP)
    assert ev.state() == PeriodState(
        final=True, gaps=(PeriodGap(GAP[0] + 10 * MIN, GAP[1], (REST, VISION)),)
    )
    assert ev.bars().get_column("__source").value_counts(sort=True).rows() == [
        ("vision", 1410),
        ("rest", 10),
    ]


def test_bars_before_the_listing_are_not_expected() -> None:
    listing = T0 + 600 * MIN
    ev = Evidence(M1, DAY1, listing)
    ev.add(bars(list(range(listing, T0 + DAY, MIN))), REST, "rest", T0, T0 + DAY)
    assert ev.state() == PeriodState(final=True)


def test_first_source_to_have_a_bar_serves_it() -> None:
    ev = Evidence(M1, DAY1, T0)
    ev.add(bars([T0]), VISION_MONTHLY, "vision", T0, T0 + DAY)
    other = bars([T0]).with_columns(pl.lit(7, dtype=pl.Int64).alias("trades"))
    assert ev.add(other, VISION, "vision", T0, T0 + DAY) == 0
    assert ev.bars().get_column("trades").to_list() == [1]


def test_evidence_from_a_provisional_entry_keeps_who_lacked_each_gap() -> None:
    state = PeriodState(final=False, gaps=(PeriodGap(*GAP, (REST,)),))
    ev = Evidence.from_cache(M1, DAY1, T0, day_without(*GAP), state)
    assert ev.state() == state
    assert ev.changed is False
    ev.add(bars([]), VISION, "vision", T0, T0 + DAY)
    assert ev.state() == PeriodState(final=True, gaps=(PeriodGap(*GAP, (REST, VISION)),))


def test_period_state_round_trips_and_unrecorded_states_are_marked() -> None:
    state = PeriodState(final=False, gaps=(PeriodGap(1, 2, ("rest",)), PeriodGap(3, 5, ())))
    assert PeriodState.from_json(state.to_json(), final_default=True) == state
    assert PeriodState.from_json(None, final_default=True) == PeriodState(True, recorded=False)
    assert PeriodState.from_json("{not json", final_default=False) == PeriodState(
        False, recorded=False
    )
    assert PeriodState.from_json('{"status": "maybe"}', final_default=True).recorded is False


def test_plan_rechecks_provisional_periods_and_skips_them_before_the_listing() -> None:
    periods = periods_for(M1, T0, T0 + 3 * DAY)
    plan = plan_fetch(
        M1,
        periods,
        T0 + 10 * DAY,
        {"2024-01-01"},
        provisional_keys={"2024-01-02"},
        not_before_ms=None,
    )
    assert [p.key for p in plan.cached] == ["2024-01-01"]
    assert [p.key for p in plan.recheck] == ["2024-01-02"]
    assert [p.key for p in plan.vision_days] == ["2024-01-03"]
    assert plan.to_fetch == 2
    late = plan_fetch(
        M1, periods, T0 + 10 * DAY, set(), provisional_keys={"2024-01-01"}, not_before_ms=T0 + DAY
    )
    assert ([p.key for p in late.skipped], late.recheck) == (["2024-01-01"], ())


def test_report_gap_is_confirmed_by_the_sources_covering_all_of_it() -> None:
    gap = Gap(from_ms(T0 + DAY - 10 * MIN), from_ms(T0 + DAY + 20 * MIN), 30)
    across = [
        (T0 + DAY - 10 * MIN, T0 + DAY, ("rest", "vision")),
        (T0 + DAY, T0 + DAY + 20 * MIN, ("rest",)),
    ]
    assert confirm_gap(gap, across).confirmed_by == ("rest",)
    assert confirm_gap(gap, across[:1]).confirmed_by == ()  # half covered: unconfirmed
    assert gap == confirm_gap(gap, across)  # evidence, not identity
    report = assess(
        bars([T0]),
        M1,
        T0,
        T0 + 3 * MIN,
        gap_evidence=[(T0 + MIN, T0 + 3 * MIN, ("rest", "vision"))],
        provisional_periods=0,
    )
    assert [(g.missing, g.confirmed_by) for g in report.gaps] == [(2, ("rest", "vision"))]
    assert (report.confirmed_gaps, report.unconfirmed_gaps) == (1, 0)
    assert report.to_dict()["gaps"][0]["confirmed_by"] == ["rest", "vision"]


@pytest.mark.parametrize(
    ("frame", "problem"),
    [
        (bars([T0, T0]), "holding repeated or unsorted open times"),
        (bars([T0 + MIN, T0]), "holding repeated or unsorted open times"),
        (bars([T0 + DAY]), "holding open times outside the period 2024-01-01"),
        (bars([T0 + 1]), "holding open times off the 1m grid"),
        (bars([T0], step=2 * MIN), "holding close times that are not open time + 1m - 1 ms"),
        (bars([T0]).drop("trades"), "wrong schema"),
        (bars([T0]).with_columns(pl.lit(None, FRAME_SCHEMA["low"]).alias("low")), "holding 1"),
    ],
    ids=["repeated", "unsorted", "outside", "off-grid", "close", "schema", "null"],
)
def test_cache_refuses_to_write_what_fails_validation(
    tmp_path: Path, frame: pl.DataFrame, problem: str
) -> None:
    assert frame_problem(frame, M1, "2024-01-01").startswith(problem)
    with pytest.raises(InvalidInput, match="refusing to cache BTCUSDT"):
        KlineCache(tmp_path).write(MarketType.SPOT, "BTCUSDT", M1, "2024-01-01", frame)
    assert not any(tmp_path.rglob("*.parquet"))
