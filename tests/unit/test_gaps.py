"""How the data client names missing bars and refused rows in its log lines (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from nautilus_dsm.common import Interval, to_ms
from nautilus_dsm.gaps import describe_invalid, format_runs, missing_runs

DAY_MS = to_ms(datetime(2024, 1, 2, tzinfo=UTC))
MIN_MS = 60_000


def test_missing_open_times_group_into_runs() -> None:
    opens = [DAY_MS, DAY_MS + MIN_MS, DAY_MS + 3 * MIN_MS]

    assert missing_runs(opens, Interval.MINUTE_1) == [
        (DAY_MS, DAY_MS + 2 * MIN_MS, 2),
        (DAY_MS + 3 * MIN_MS, DAY_MS + 4 * MIN_MS, 1),
    ]


def test_runs_of_calendar_months_end_at_the_next_month() -> None:
    jan, feb = to_ms(datetime(2024, 1, 1, tzinfo=UTC)), to_ms(datetime(2024, 2, 1, tzinfo=UTC))

    assert missing_runs([jan, feb], Interval.MONTH_1) == [
        (jan, to_ms(datetime(2024, 3, 1, tzinfo=UTC)), 2)
    ]


def test_runs_are_named_in_the_one_iso_form() -> None:
    runs = [(DAY_MS, DAY_MS + 2 * MIN_MS, 2), (DAY_MS + 3 * MIN_MS, DAY_MS + 4 * MIN_MS, 1)]

    assert format_runs(runs) == (
        "[2024-01-02T00:00:00Z, 2024-01-02T00:02:00Z) 2 missing, "
        "[2024-01-02T00:03:00Z, 2024-01-02T00:04:00Z) 1 missing"
    )


def test_more_runs_than_shown_are_counted() -> None:
    runs = [(DAY_MS + 2 * i * MIN_MS, DAY_MS + (2 * i + 1) * MIN_MS, 1) for i in range(7)]

    assert (
        format_runs(runs, limit=1)
        == "[2024-01-02T00:00:00Z, 2024-01-02T00:01:00Z) 1 missing (+6 more)"
    )


def test_refused_rows_are_named_by_open_time_and_reason() -> None:
    invalid = pl.DataFrame(
        {
            "row": [0, 3],
            "open_time": [DAY_MS + 500, DAY_MS + 3 * MIN_MS],
            "reason": ["off the 1m grid", "high < low"],
        }
    ).with_columns(pl.col("open_time").cast(pl.Datetime("ms", "UTC")))

    assert describe_invalid(invalid) == (
        "2024-01-02T00:00:00.500Z (off the 1m grid), 2024-01-02T00:03:00Z (high < low)"
    )
