"""Chunk planning for catalog ingestion: file intervals in ts_init space, resume, overlap."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from nautilus_dsm.catalog import ChunkPlan, plan_chunks
from nautilus_dsm.catalog.grid import diff_closed
from nautilus_dsm.common import to_ms
from nautilus_dsm.errors import InvalidInput

NS = 1_000_000
DAY = 86_400_000
MIN = 60_000
D0 = to_ms(datetime(2024, 1, 1, tzinfo=UTC))
D1 = D0 + DAY
D2 = D0 + 2 * DAY
FAR = D0 + 1000 * DAY


def test_diff_closed_removes_covered_pieces() -> None:
    assert diff_closed(0, 100, [(10, 20), (15, 30), (50, 60), (200, 300)]) == [
        (0, 9),
        (31, 49),
        (61, 100),
    ]


def test_diff_closed_fully_covered_is_empty() -> None:
    assert diff_closed(10, 20, [(0, 15), (16, 25)]) == []


def test_adjacent_files_are_reported_as_one_skipped_range() -> None:
    existing = [(D1 * NS + 1, D2 * NS), (D0 * NS + 1, D1 * NS)]

    chunks, skipped = plan_chunks("1m", D0, D2, existing, DAY, FAR)

    assert chunks == []
    assert skipped == [(D0, D2)]


def test_empty_catalog_splits_into_contiguous_disjoint_chunks() -> None:
    chunks, skipped = plan_chunks("1m", D0, D2, [], DAY, FAR)

    assert chunks == [
        ChunkPlan(D0, D1, D0 * NS + 1, D1 * NS),
        ChunkPlan(D1, D2, D1 * NS + 1, D2 * NS),
    ]
    assert skipped == []


def test_existing_first_chunk_is_skipped() -> None:
    chunks, skipped = plan_chunks("1m", D0, D2, [(D0 * NS + 1, D1 * NS)], DAY, FAR)

    assert chunks == [ChunkPlan(D1, D2, D1 * NS + 1, D2 * NS)]
    assert skipped == [(D0, D1)]


def test_overlapping_request_fetches_only_the_uncovered_part() -> None:
    half = D0 + DAY // 2
    chunks, skipped = plan_chunks("1m", half, D2, [(D0 * NS + 1, D1 * NS)], 7 * DAY, FAR)

    assert chunks == [ChunkPlan(D1, D2, D1 * NS + 1, D2 * NS)]
    assert skipped == [(half, D1)]


def test_write_data_style_names_leave_no_refetch_of_covered_bars() -> None:
    # write_data names files [first ts_init, last ts_init]: bars opening D0 .. D1-1m.
    existing = [((D0 + MIN) * NS, D1 * NS)]
    chunks, skipped = plan_chunks("1m", D0, D2, existing, DAY, FAR)

    assert chunks == [ChunkPlan(D1, D2, D1 * NS + 1, D2 * NS)]
    assert skipped == [(D0, D1)]


def test_fully_covered_request_plans_nothing() -> None:
    chunks, skipped = plan_chunks("1m", D0, D1, [(D0 * NS + 1, D2 * NS)], DAY, FAR)

    assert chunks == []
    assert skipped == [(D0, D1)]


def test_end_is_capped_at_the_last_closed_bar() -> None:
    chunks, _ = plan_chunks("1m", D0, D2, [], 7 * DAY, D1 + 30_000)

    assert chunks == [ChunkPlan(D0, D1, D0 * NS + 1, D1 * NS)]


def test_unaligned_start_begins_at_the_next_open() -> None:
    chunks, _ = plan_chunks("1m", D0 + 30_000, D0 + 3 * MIN, [], DAY, FAR)

    assert chunks == [ChunkPlan(D0 + MIN, D0 + 3 * MIN, (D0 + MIN) * NS + 1, (D0 + 3 * MIN) * NS)]


def test_unaligned_end_includes_the_bar_opening_before_it() -> None:
    chunks, _ = plan_chunks("1h", D0, D0 + 90 * MIN, [], DAY, FAR)

    assert chunks == [ChunkPlan(D0, D0 + 120 * MIN, D0 * NS + 1, (D0 + 120 * MIN) * NS)]


def test_monthly_bars_get_one_calendar_month_per_chunk_when_chunk_is_shorter() -> None:
    feb = to_ms(datetime(2024, 2, 1, tzinfo=UTC))
    mar = to_ms(datetime(2024, 3, 1, tzinfo=UTC))
    apr = to_ms(datetime(2024, 4, 1, tzinfo=UTC))

    chunks, _ = plan_chunks("1M", D0, apr, [], 7 * DAY, FAR)

    assert chunks == [
        ChunkPlan(D0, feb, D0 * NS + 1, feb * NS),
        ChunkPlan(feb, mar, feb * NS + 1, mar * NS),
        ChunkPlan(mar, apr, mar * NS + 1, apr * NS),
    ]


def test_range_without_a_bar_open_plans_nothing() -> None:
    assert plan_chunks("1h", D0 + 1, D0 + 30 * MIN, [], DAY, FAR) == ([], [])


def test_non_positive_chunk_is_refused() -> None:
    with pytest.raises(InvalidInput, match="chunk 0 ms is not positive"):
        plan_chunks("1m", D0, D1, [], 0, FAR)
