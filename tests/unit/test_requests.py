"""History-request planning and checks (pure): which closed bars answer a RequestBars."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest
from nautilus_trader.model.data import BarType

from nautilus_dsm.common import Interval, MarketType, to_ms
from nautilus_dsm.errors import InvalidInput, MarketTypeMismatch
from nautilus_dsm.requests import (
    DEFAULT_REQUEST_LIMIT,
    check_bar_type,
    plan_bar_request,
    steps_back_ms,
    timestamp_ns,
)

SPOT_1M = BarType.from_str("BTCUSDT.BINANCE-1-MINUTE-LAST-EXTERNAL")
DAY = datetime(2024, 1, 2, tzinfo=UTC)
DAY_MS = to_ms(DAY)
MIN_MS = 60_000
NS = 1_000_000


def test_plan_range_serves_bars_closing_in_start_end() -> None:
    # bars closing in (start, end]: start mid-bar -> that bar (it closes after start);
    # end mid-bar -> the bar containing end is excluded (it closes after end)
    plan = plan_bar_request(
        Interval.MINUTE_1,
        (DAY_MS + 30_000) * NS,
        (DAY_MS + 10 * MIN_MS + 5) * NS,
        0,
        now_ns=(DAY_MS + 86_400_000) * NS,
    )

    assert (plan.start_ms, plan.end_ms, plan.limit, plan.notes) == (
        DAY_MS,
        DAY_MS + 10 * MIN_MS,  # exclusive: the last bar opens at 00:09 and closes at 00:10
        0,
        (),
    )


@pytest.mark.parametrize(
    ("start_ns", "first_open_ms"),
    [
        (DAY_MS * NS, DAY_MS),  # the bar closing at start belongs to the previous request
        (DAY_MS * NS + 1, DAY_MS),  # the engine's continuation after a catalog file ending at start
        ((DAY_MS + MIN_MS) * NS - 1, DAY_MS),
        ((DAY_MS + MIN_MS) * NS, DAY_MS + MIN_MS),
    ],
)
def test_plan_start_boundaries(start_ns: int, first_open_ms: int) -> None:
    plan = plan_bar_request(Interval.MINUTE_1, start_ns, (DAY_MS + 3_600_000) * NS, 0, 2**62)

    assert plan.start_ms == first_open_ms


def test_plan_clamps_end_to_now_and_says_so() -> None:
    now_ns = (DAY_MS + 5 * MIN_MS + 123) * NS

    plan = plan_bar_request(Interval.MINUTE_1, DAY_MS * NS, (DAY_MS + 3_600_000) * NS, 0, now_ns)

    assert (plan.start_ms, plan.end_ms) == (DAY_MS, DAY_MS + 5 * MIN_MS)
    assert plan.notes == (
        "clamped end from 2024-01-02T01:00:00Z to now 2024-01-02T00:05:00.123Z "
        "(only closed bars exist)",
    )


def test_plan_start_and_limit_fetches_only_the_last_limit_bars() -> None:
    plan = plan_bar_request(Interval.MINUTE_1, DAY_MS * NS, (DAY_MS + 3_600_000) * NS, 5, 2**62)

    assert (plan.start_ms, plan.end_ms, plan.limit) == (
        DAY_MS + 55 * MIN_MS,
        DAY_MS + 60 * MIN_MS,
        5,
    )
    assert plan.notes == (
        "limit=5 keeps the last 5 bars: fetching from 2024-01-02T00:55:00Z instead of "
        "2024-01-02T00:00:00Z",
    )
    assert plan.full_start_ms == DAY_MS  # where the earlier bars are, should gaps need them


def test_plan_start_within_limit_is_kept() -> None:
    plan = plan_bar_request(Interval.MINUTE_1, DAY_MS * NS, (DAY_MS + 3 * MIN_MS) * NS, 5, 2**62)

    assert (plan.start_ms, plan.end_ms, plan.notes, plan.full_start_ms) == (
        DAY_MS,
        DAY_MS + 3 * MIN_MS,
        (),
        None,
    )


def test_plan_limit_without_start_derives_start() -> None:
    plan = plan_bar_request(Interval.HOUR_1, None, (DAY_MS + 1) * NS, 3, DAY_MS * 2 * NS)

    assert (plan.start_ms, plan.end_ms, plan.limit) == (DAY_MS - 3 * 3_600_000, DAY_MS, 3)


def test_plan_neither_start_nor_limit_serves_default_page() -> None:
    plan = plan_bar_request(Interval.MINUTE_1, None, None, 0, DAY_MS * NS)

    assert plan.limit == DEFAULT_REQUEST_LIMIT
    assert plan.start_ms == DAY_MS - DEFAULT_REQUEST_LIMIT * MIN_MS


def test_steps_back_on_calendar_months() -> None:
    mar = to_ms(datetime(2024, 3, 1, tzinfo=UTC))

    assert steps_back_ms(Interval.MONTH_1, mar, 2) == to_ms(datetime(2024, 1, 1, tzinfo=UTC))


def test_plan_refuses_a_negative_limit() -> None:
    with pytest.raises(InvalidInput) as refused:
        plan_bar_request(Interval.MINUTE_1, None, None, -1, DAY_MS * NS)

    assert str(refused.value) == "limit -1 is negative; pass 0 (no limit) or a positive count"


def test_plan_derived_start_is_noted() -> None:
    plan = plan_bar_request(Interval.MINUTE_1, None, None, 0, DAY_MS * NS)

    assert plan.notes == (
        "no start and no limit: serving the last 500 bars",
        "start derived from limit=500: 2024-01-01T15:40:00Z",
    )


def test_plan_of_a_range_within_one_bar_is_empty() -> None:
    plan = plan_bar_request(
        Interval.HOUR_1, (DAY_MS + MIN_MS) * NS, (DAY_MS + 2 * MIN_MS) * NS, 0, 2**62
    )

    assert (plan.start_ms, plan.end_ms, plan.is_empty) == (DAY_MS, DAY_MS, True)


# ---------------------------------------------------------------------------------------------
# Request times and bar types
# ---------------------------------------------------------------------------------------------


def test_timestamp_ns_keeps_pandas_nanoseconds() -> None:
    assert timestamp_ns(pd.Timestamp("2024-01-02T00:00:00.000000001Z")) == DAY_MS * NS + 1


def test_timestamp_ns_of_an_aware_datetime_is_exact() -> None:
    assert timestamp_ns(datetime(2024, 1, 2, 0, 0, 0, 123_456, tzinfo=UTC)) == (
        DAY_MS * NS + 123_456_000
    )


def test_timestamp_ns_passes_none_and_refuses_naive() -> None:
    assert timestamp_ns(None) is None
    with pytest.raises(InvalidInput) as refused:
        timestamp_ns(datetime(2024, 1, 2))

    assert str(refused.value) == "naive datetime 2024-01-02T00:00:00; pass a UTC-aware datetime"


def test_check_bar_type_resolves_interval_and_instrument() -> None:
    interval, resolved = check_bar_type(SPOT_1M, None)

    assert (interval, resolved.instrument_id, resolved.symbol, resolved.market_type) == (
        Interval.MINUTE_1,
        "BTCUSDT.BINANCE",
        "BTCUSDT",
        MarketType.SPOT,
    )


def test_check_bar_type_refuses_internal_aggregation() -> None:
    internal = BarType.from_str("BTCUSDT.BINANCE-1-MINUTE-LAST-INTERNAL")

    with pytest.raises(InvalidInput) as refused:
        check_bar_type(internal, None)

    assert str(refused.value) == (
        "BTCUSDT.BINANCE-1-MINUTE-LAST-INTERNAL is INTERNAL (aggregated by NautilusTrader); "
        "DSMDataClient serves EXTERNAL Binance kline bars (LAST): use "
        "BTCUSDT.BINANCE-1-MINUTE-LAST-EXTERNAL, or let NautilusTrader aggregate DSM bars "
        "(e.g. BTCUSDT.BINANCE-5-MINUTE-LAST-INTERNAL@1-MINUTE-EXTERNAL)"
    )


def test_check_bar_type_refuses_another_market() -> None:
    with pytest.raises(MarketTypeMismatch):
        check_bar_type(SPOT_1M, MarketType.FUTURES_USDT)
