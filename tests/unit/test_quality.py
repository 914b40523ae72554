"""Quality assessment: expected bars, gaps, completeness, OHLC, dedupe counting (pure)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
import polars as pl
import pytest

from nautilus_dsm.common import Interval, MarketType, to_ms
from nautilus_dsm.dsm.quality import (
    Gap,
    assess,
    below_threshold_message,
    find_gaps,
    normalise,
)
from nautilus_dsm.dsm.schema import FRAME_SCHEMA

MIN = 60_000


def ms(*args: int) -> int:
    return to_ms(datetime(*args, tzinfo=UTC))


def dt(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def frame(
    opens: list[int], interval_ms: int = MIN, prices: list[tuple] | None = None
) -> pl.DataFrame:
    rows = prices or [("100", "101", "99", "100.5")] * len(opens)
    return pl.DataFrame(
        {
            "open_time": opens,
            "close_time": [t + interval_ms - 1 for t in opens],
            "open": [Decimal(r[0]) for r in rows],
            "high": [Decimal(r[1]) for r in rows],
            "low": [Decimal(r[2]) for r in rows],
            "close": [Decimal(r[3]) for r in rows],
            "volume": [Decimal("1")] * len(opens),
            "quote_volume": [Decimal("100")] * len(opens),
            "trades": [1] * len(opens),
            "taker_buy_base_volume": [Decimal("0.5")] * len(opens),
            "taker_buy_quote_volume": [Decimal("50")] * len(opens),
        },
        schema=FRAME_SCHEMA,
    )


def test_find_gaps_reports_leading_inner_and_trailing_runs() -> None:
    start = ms(2024, 1, 1)
    present = np.array([start + i * MIN for i in (2, 3, 7, 8)], np.int64)

    gaps = find_gaps(present, Interval.MINUTE_1, start, start + 10 * MIN)

    assert gaps == [
        Gap(dt(2024, 1, 1, 0, 0), dt(2024, 1, 1, 0, 2), 2),
        Gap(dt(2024, 1, 1, 0, 4), dt(2024, 1, 1, 0, 7), 3),
        Gap(dt(2024, 1, 1, 0, 9), dt(2024, 1, 1, 0, 10), 1),
    ]


def test_find_gaps_calendar_months() -> None:
    present = np.array([ms(2024, 1, 1), ms(2024, 4, 1)], np.int64)

    gaps = find_gaps(present, Interval.MONTH_1, ms(2024, 1, 1), ms(2024, 5, 1))

    assert gaps == [Gap(dt(2024, 2, 1), dt(2024, 4, 1), 2)]


def test_find_gaps_weekly_grid_opens_monday() -> None:
    # 2024-01-01 is a Monday.
    present = np.array([ms(2024, 1, 1), ms(2024, 1, 22)], np.int64)

    gaps = find_gaps(present, Interval.WEEK_1, ms(2023, 12, 30), ms(2024, 1, 29))

    assert gaps == [Gap(dt(2024, 1, 8), dt(2024, 1, 22), 2)]


def test_assess_completeness_and_one_gap() -> None:
    start = ms(2024, 1, 1)
    opens = [start + i * MIN for i in range(60) if not 10 <= i < 40]

    report = assess(frame(opens), Interval.MINUTE_1, start, start + 60 * MIN)

    assert report.bars == 30
    assert report.expected_bars == 60
    assert report.completeness == 0.5
    assert report.gaps == [Gap(dt(2024, 1, 1, 0, 10), dt(2024, 1, 1, 0, 40), 30)]
    assert report.warnings == []


def test_assess_counts_expected_from_listing() -> None:
    listing = ms(2024, 1, 1, 0, 30)
    opens = [listing + i * MIN for i in range(30)]

    report = assess(
        frame(opens), Interval.MINUTE_1, ms(2024, 1, 1), listing + 30 * MIN, listing_ms=listing
    )

    assert report.expected_bars == 30
    assert report.completeness == 1.0
    assert report.gaps == []
    assert report.listing_time == dt(2024, 1, 1, 0, 30)


def test_assess_counts_and_lists_ohlc_violations_but_keeps_rows() -> None:
    start = ms(2024, 1, 1)
    prices = [
        ("100", "101", "99", "100"),  # fine
        ("100", "99", "98", "100"),  # high < open
        ("100", "101", "100.5", "100"),  # low > min(open, close)
        ("0", "1", "0", "1"),  # price <= 0
    ]

    report = assess(
        frame([start + i * MIN for i in range(4)], prices=prices),
        Interval.MINUTE_1,
        start,
        start + 4 * MIN,
    )

    assert report.bars == 4
    assert report.ohlc_violations == 3
    assert report.warnings == [
        "3 bar(s) violate OHLC order or have a price <= 0 (kept as served; first: "
        "2024-01-01T00:01:00Z o=100.00000000 h=99.00000000 l=98.00000000 c=100.00000000; "
        "2024-01-01T00:02:00Z o=100.00000000 h=101.00000000 l=100.50000000 c=100.00000000; "
        "2024-01-01T00:03:00Z o=0.00000000 h=1.00000000 l=0.00000000 c=1.00000000)"
    ]


def test_assess_reports_off_grid_open_times() -> None:
    start = ms(2024, 1, 1)

    report = assess(
        frame([start, start + 30_000, start + MIN]), Interval.MINUTE_1, start, start + 2 * MIN
    )

    assert report.bars == 3
    assert report.completeness == 1.0
    assert report.warnings == [
        "1 bar(s) open off the 1m grid (first: 2024-01-01T00:00:30Z); they are returned "
        "but not counted as expected bars"
    ]


def test_normalise_sorts_dedupes_and_counts() -> None:
    start = ms(2024, 1, 1)
    served = frame([start + MIN, start, start + MIN, start + 2 * MIN, start + 2 * MIN])

    clean, duplicates, out_of_order = normalise(served)

    assert clean.get_column("open_time").dt.epoch("ms").to_list() == [
        start,
        start + MIN,
        start + 2 * MIN,
    ]
    assert duplicates == 2
    assert out_of_order == 1


def test_report_to_dict_is_json_ready() -> None:
    start = ms(2024, 1, 1)
    report = assess(
        frame([start]),
        Interval.MINUTE_1,
        start,
        start + 2 * MIN,
        instrument_id="BTCUSDT-PERP.BINANCE",
        symbol="BTCUSDT",
        market_type=MarketType.FUTURES_USDT,
        sources={"vision": 1},
        cache_hits=1,
        cache_misses=3,
    )

    data = json.loads(json.dumps(report.to_dict()))

    assert data["start"] == "2024-01-01T00:00:00Z"
    assert data["end"] == "2024-01-01T00:02:00Z"
    assert data["market_type"] == "futures_usdt"
    assert data["gaps"] == [
        {
            "start": "2024-01-01T00:01:00Z",
            "end": "2024-01-01T00:02:00Z",
            "missing": 1,
            "confirmed_by": [],
        }
    ]
    assert data["sources"] == {"cache": 0, "vision": 1, "rest": 0, "synthetic": 0}
    assert data["cache_hit_rate"] == 0.25
    assert data["listing_time"] is None
    assert report.summary() == (
        "BTCUSDT-PERP.BINANCE 1m 2024-01-01T00:00:00Z..2024-01-01T00:02:00Z: 1/2 bars "
        "(50.00%), 1 gap(s), largest 2024-01-01T00:01:00Z..2024-01-01T00:02:00Z (1 bars); "
        "sources vision=1; cache hits 1/4"
    )


def test_below_threshold_message_names_gaps_and_fix() -> None:
    start = ms(2024, 1, 1)
    opens = [start + i * MIN for i in range(1000) if not 100 <= i < 130]
    report = assess(
        frame(opens),
        Interval.MINUTE_1,
        start,
        start + 1000 * MIN,
        instrument_id="BTCUSDT-PERP.BINANCE",
    )

    message = below_threshold_message(report, 0.99)

    assert message == (
        "BTCUSDT-PERP.BINANCE 1m 2024-01-01T00:00:00Z..2024-01-01T16:40:00Z: completeness "
        "97.00% (970 of 1000 expected bars) is below min_completeness 99.00%; 1 gap(s), "
        "largest: 2024-01-01T01:40:00Z..2024-01-01T02:10:00Z (30 bars); pass "
        "min_completeness=0.97 or on_low_quality='warn' to accept it (the fetched result "
        "is attached as .result)"
    )


@pytest.mark.parametrize(
    ("interval", "opens", "on_grid"),
    [
        (
            Interval.MINUTE_1,
            [ms(2024, 1, 1), ms(2024, 1, 1) + 30_000, ms(2024, 1, 1) + MIN],
            [1, 0, 1],
        ),
        (Interval.HOUR_4, [ms(2024, 1, 1, 4), ms(2024, 1, 1, 2), 0], [1, 0, 1]),
        # Weekly bars open on Mondays 00:00 UTC (2024-01-01 was a Monday, 1970-01-01 a Thursday).
        (Interval.WEEK_1, [ms(2024, 1, 1), ms(2024, 1, 4), ms(2024, 1, 8), 0], [1, 0, 1, 0]),
        (
            Interval.MONTH_1,
            [ms(2024, 2, 1), ms(2024, 2, 2), ms(2024, 3, 1), ms(2024, 2, 29)],
            [1, 0, 1, 0],
        ),
        (Interval.SECOND_1, [ms(2024, 1, 1) + 1_000, ms(2024, 1, 1) + 1_500], [1, 0]),
    ],
)
def test_on_grid_mask(interval: Interval, opens: list[int], on_grid: list[int]) -> None:
    mask = interval.on_grid_mask(np.array(opens, dtype=np.int64))

    assert mask.dtype == np.bool_
    assert mask.tolist() == [bool(x) for x in on_grid]


def test_assess_reports_off_grid_weekly_and_monthly_open_times() -> None:
    weekly = assess(
        frame([ms(2024, 1, 1), ms(2024, 1, 4)], 7 * 1440 * MIN),
        Interval.WEEK_1,
        ms(2024, 1, 1),
        ms(2024, 1, 8),
    )
    monthly = assess(
        frame([ms(2024, 2, 1), ms(2024, 2, 15)]), Interval.MONTH_1, ms(2024, 2, 1), ms(2024, 3, 1)
    )

    assert weekly.warnings == [
        "1 bar(s) open off the 1w grid (first: 2024-01-04T00:00:00Z); they are returned "
        "but not counted as expected bars"
    ]
    assert monthly.warnings == [
        "1 bar(s) open off the 1M grid (first: 2024-02-15T00:00:00Z); they are returned "
        "but not counted as expected bars"
    ]
