"""Synthetic gap filling: flat bars from the last real close, never look-ahead, exact rows."""

from __future__ import annotations

from decimal import Decimal

import polars as pl

from nautilus_dsm.common import Interval
from nautilus_dsm.dsm.schema import FRAME_SCHEMA, empty_frame, parse_rest_klines
from nautilus_dsm.dsm.synthetic import fill_gaps, grid_open_times_ms, missing_open_times_ms

MIN = 60_000


def _row(open_ms: int, o: str, h: str, lo: str, c: str, v: str, close_ms: int | None = None):
    close = close_ms if close_ms is not None else open_ms + MIN - 1
    return [open_ms, o, h, lo, c, v, close, "100.5", 7, "0.5", "50.25", "0"]


def _frame() -> pl.DataFrame:
    # real bars at minutes 1 and 4; minutes 0, 2, 3, 5 missing in [0, 6 min)
    return parse_rest_klines(
        [
            _row(1 * MIN, "10.00", "11.00", "9.00", "10.50", "2.0"),
            _row(4 * MIN, "10.50", "12.00", "10.00", "11.00", "1.0"),
        ]
    )


def _prices(frame: pl.DataFrame, open_ms: int) -> tuple[Decimal, ...]:
    row = frame.filter(pl.col("open_time").dt.epoch("ms") == open_ms).row(0, named=True)
    return (
        row["open"],
        row["high"],
        row["low"],
        row["close"],
        row["volume"],
        row["quote_volume"],
        row["trades"],
    )


def test_fill_gaps_flat_bars_from_last_close_and_leading_gap_unfilled() -> None:
    result = fill_gaps(_frame(), Interval.MINUTE_1, 0, 6 * MIN)

    assert result.synthetic_open_ms == [2 * MIN, 3 * MIN, 5 * MIN]
    assert result.unfilled_open_ms == [0]
    assert result.count == 3
    assert result.frame.schema == pl.Schema(FRAME_SCHEMA)
    assert result.frame["open_time"].dt.epoch("ms").to_list() == [
        MIN,
        2 * MIN,
        3 * MIN,
        4 * MIN,
        5 * MIN,
    ]
    flat_after_first = (Decimal("10.5"),) * 4 + (Decimal(0), Decimal(0), 0)
    assert _prices(result.frame, 2 * MIN) == flat_after_first
    assert _prices(result.frame, 3 * MIN) == flat_after_first
    assert _prices(result.frame, 5 * MIN) == (Decimal("11"),) * 4 + (Decimal(0), Decimal(0), 0)
    # real rows are untouched
    assert _prices(result.frame, 4 * MIN) == (
        Decimal("10.5"),
        Decimal("12"),
        Decimal("10"),
        Decimal("11"),
        Decimal("1"),
        Decimal("100.5"),
        7,
    )
    assert result.frame.filter(pl.col("open_time").dt.epoch("ms") == 2 * MIN)[
        "close_time"
    ].dt.epoch("ms").to_list() == [3 * MIN - 1]


def test_fill_gaps_uses_previous_close_for_leading_gap() -> None:
    result = fill_gaps(_frame(), Interval.MINUTE_1, 0, 6 * MIN, previous_close=Decimal("9.99"))

    assert result.synthetic_open_ms == [0, 2 * MIN, 3 * MIN, 5 * MIN]
    assert result.unfilled_open_ms == []
    assert _prices(result.frame, 0) == (Decimal("9.99"),) * 4 + (Decimal(0), Decimal(0), 0)


def test_fill_gaps_respects_listing_time() -> None:
    result = fill_gaps(
        _frame(), Interval.MINUTE_1, 0, 6 * MIN, previous_close=Decimal("1"), first_open_ms=MIN
    )

    assert result.synthetic_open_ms == [2 * MIN, 3 * MIN, 5 * MIN]
    assert result.unfilled_open_ms == []


def test_fill_gaps_complete_frame_adds_nothing() -> None:
    frame = parse_rest_klines([_row(i * MIN, "1", "1", "1", "1", "1") for i in range(3)])

    result = fill_gaps(frame, Interval.MINUTE_1, 0, 3 * MIN, previous_close=Decimal("5"))

    assert result.count == 0
    assert result.frame.equals(frame)


def test_fill_gaps_empty_frame_with_previous_close() -> None:
    result = fill_gaps(empty_frame(), Interval.SECOND_1, 0, 3_000, previous_close=Decimal("2.5"))

    assert result.synthetic_open_ms == [0, 1_000, 2_000]
    assert result.frame["close"].to_list() == [Decimal("2.5")] * 3


def test_grid_and_missing_on_month_interval() -> None:
    jan, feb, mar = 1_704_067_200_000, 1_706_745_600_000, 1_709_251_200_000  # 2024-01/02/03-01
    frame = parse_rest_klines([_row(jan, "1", "2", "1", "2", "3", close_ms=feb - 1)])

    assert grid_open_times_ms(Interval.MONTH_1, jan, mar + 1).tolist() == [jan, feb, mar]
    assert missing_open_times_ms(frame, Interval.MONTH_1, jan, mar + 1).tolist() == [feb, mar]
    result = fill_gaps(frame, Interval.MONTH_1, jan, mar + 1)
    assert result.synthetic_open_ms == [feb, mar]
    assert result.frame["close_time"].dt.epoch("ms").to_list() == [
        feb - 1,
        mar - 1,
        1_711_929_600_000 - 1,
    ]
