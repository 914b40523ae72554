"""Planning: periods, closed vs open, monthly grouping, source assignment (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

from nautilus_dsm.common import Interval, to_ms
from nautilus_dsm.dsm.planner import (
    MonthGroup,
    Period,
    closed_end_ms,
    group_months,
    is_closed,
    period_close_ms,
    period_of,
    periods_for,
    plan_fetch,
)

DAY = 86_400_000


def ms(*args: int) -> int:
    return to_ms(datetime(*args, tzinfo=UTC))


def day(y: int, m: int, d: int) -> Period:
    return Period(ms(y, m, d), ms(y, m, d) + DAY, yearly=False)


def test_periods_for_minutes_are_utc_days_covering_partial_ends() -> None:
    periods = periods_for(Interval.MINUTE_1, ms(2024, 1, 1, 12), ms(2024, 1, 3, 0, 1))

    assert [p.key for p in periods] == ["2024-01-01", "2024-01-02", "2024-01-03"]
    assert periods[0] == Period(ms(2024, 1, 1), ms(2024, 1, 2), yearly=False)


def test_periods_for_end_on_midnight_excludes_next_day() -> None:
    periods = periods_for(Interval.MINUTE_1, ms(2024, 1, 1), ms(2024, 1, 3))

    assert [p.key for p in periods] == ["2024-01-01", "2024-01-02"]


def test_periods_for_daily_and_longer_are_utc_years() -> None:
    periods = periods_for(Interval.DAY_1, ms(2023, 6, 1), ms(2025, 2, 1))

    assert [p.key for p in periods] == ["2023", "2024", "2025"]
    assert periods[1] == Period(ms(2024, 1, 1), ms(2025, 1, 1), yearly=True)


def test_periods_for_range_without_a_bar_open_is_empty() -> None:
    assert periods_for(Interval.HOUR_1, ms(2024, 1, 1, 0, 1), ms(2024, 1, 1, 0, 59)) == []


def test_period_of_month_interval_is_its_year() -> None:
    assert period_of(Interval.MONTH_1, ms(2024, 7, 1)).key == "2024"


def test_period_close_of_weekly_year_is_close_of_last_weekly_bar() -> None:
    # 2024-12-30 is a Monday: its weekly bar closes 2025-01-06.
    period = period_of(Interval.WEEK_1, ms(2024, 5, 1))

    assert period_close_ms(Interval.WEEK_1, period) == ms(2025, 1, 6)


def test_is_closed_needs_the_settle_margin_after_the_last_close() -> None:
    period = day(2024, 1, 1)

    assert not is_closed(Interval.MINUTE_1, period, ms(2024, 1, 2) + 4_999)
    assert is_closed(Interval.MINUTE_1, period, ms(2024, 1, 2) + 5_000)


def test_closed_end_caps_at_the_open_bar() -> None:
    now = ms(2024, 1, 2, 10, 30) + 12_345

    assert closed_end_ms(Interval.MINUTE_1, ms(2030, 1, 1), now) == ms(2024, 1, 2, 10, 30)
    assert closed_end_ms(Interval.MINUTE_1, ms(2024, 1, 1), now) == ms(2024, 1, 1)


def test_group_months_takes_whole_months_only() -> None:
    days = [day(2024, 2, d) for d in range(1, 30)] + [day(2024, 3, 1), day(2024, 3, 2)]

    months, rest = group_months(days)

    assert months == [MonthGroup(2024, 2, tuple(day(2024, 2, d) for d in range(1, 30)))]
    assert rest == [day(2024, 3, 1), day(2024, 3, 2)]


def test_group_months_leaves_a_partial_month_as_days() -> None:
    days = [day(2024, 1, d) for d in range(2, 32)]

    months, rest = group_months(days)

    assert months == []
    assert rest == days


def test_plan_assigns_cache_vision_and_open_period() -> None:
    periods = periods_for(Interval.MINUTE_1, ms(2024, 1, 1), ms(2024, 1, 5))
    now = ms(2024, 1, 4, 12)

    plan = plan_fetch(Interval.MINUTE_1, periods, now, {"2024-01-02"})

    assert plan.cached == (day(2024, 1, 2),)
    assert plan.vision_days == (day(2024, 1, 1), day(2024, 1, 3))
    assert plan.vision_months == ()
    assert plan.rest_closed == ()
    assert plan.open == (day(2024, 1, 4),)
    assert plan.total == 4
    assert plan.to_fetch == 3


def test_plan_uses_monthly_zip_for_a_whole_uncached_month() -> None:
    periods = periods_for(Interval.MINUTE_1, ms(2024, 1, 31), ms(2024, 3, 2))

    plan = plan_fetch(Interval.MINUTE_1, periods, ms(2024, 6, 1), set())

    assert [m.key for m in plan.vision_months] == ["2024-02"]
    assert len(plan.vision_months[0].days) == 29
    assert plan.vision_days == (day(2024, 1, 31), day(2024, 3, 1))


def test_plan_never_treats_a_cached_open_period_as_closed() -> None:
    periods = periods_for(Interval.MINUTE_1, ms(2024, 1, 4), ms(2024, 1, 4, 6))

    plan = plan_fetch(Interval.MINUTE_1, periods, ms(2024, 1, 4, 6), {"2024-01-04"})

    assert plan.cached == ()
    assert plan.open == (day(2024, 1, 4),)


def test_plan_skips_periods_entirely_before_the_first_bar() -> None:
    periods = periods_for(Interval.MINUTE_1, ms(2019, 12, 30), ms(2020, 1, 2))

    plan = plan_fetch(
        Interval.MINUTE_1, periods, ms(2024, 1, 1), set(), not_before_ms=ms(2020, 1, 1)
    )

    assert plan.skipped == (day(2019, 12, 30), day(2019, 12, 31))
    assert plan.vision_days == (day(2020, 1, 1),)


def test_plan_yearly_intervals_go_to_rest_without_vision() -> None:
    periods = periods_for(Interval.DAY_1, ms(2023, 1, 1), ms(2024, 6, 1))

    plan = plan_fetch(Interval.DAY_1, periods, ms(2024, 6, 1, 0, 0, 10), set())

    assert [p.key for p in plan.rest_closed] == ["2023"]
    assert [p.key for p in plan.open] == ["2024"]
    assert plan.vision_days == () and plan.vision_months == ()


def test_plan_without_vision_sends_closed_days_to_rest() -> None:
    periods = periods_for(Interval.MINUTE_1, ms(2024, 1, 1), ms(2024, 1, 3))

    plan = plan_fetch(Interval.MINUTE_1, periods, ms(2024, 2, 1), set(), use_vision=False)

    assert plan.rest_closed == (day(2024, 1, 1), day(2024, 1, 2))
