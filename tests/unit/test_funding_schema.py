"""Pure funding parsing, interval inference, quality and the request window."""

from __future__ import annotations

from decimal import Decimal

import pytest

from nautilus_dsm.common.datasets import Dataset, pair_of
from nautilus_dsm.common.markets import MarketType
from nautilus_dsm.dsm.funding_quality import assess_funding
from nautilus_dsm.dsm.funding_rest import RequestWindow
from nautilus_dsm.dsm.funding_schema import (
    infer_intervals,
    parse_rest_funding,
    parse_vision_funding,
)
from nautilus_dsm.errors import InvalidInput, InvalidResponse

H = 3_600_000
JAN = 1_704_067_200_000  # 2024-01-01T00:00Z
FEB = 1_706_745_600_000


def test_vision_funding_floors_calc_time_and_keeps_the_rate_exact():
    csv = (
        b"calc_time,funding_interval_hours,last_funding_rate\n"
        b"1704067200007,8,0.00010000\n1704096000000,8,-0.00003750\n"
    )
    frame = parse_vision_funding(csv, "f", JAN, FEB)

    assert frame.get_column("funding_time").dt.epoch("ms").to_list() == [JAN, JAN + 8 * H]
    assert frame.get_column("calc_time").dt.epoch("ms").to_list() == [JAN + 7, JAN + 8 * H]
    assert frame.get_column("funding_rate").to_list() == [Decimal("0.0001"), Decimal("-0.0000375")]
    assert frame.get_column("funding_interval_hours").to_list() == [8, 8]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (b"1704067200007,8,abc", "is not a decimal number"),
        (b"1704067200007,0,0.0001", "is not 1..24"),
        (b"1706745600000,8,0.0001", "outside the file's month"),
        (b"1704067200007,8", "is not 'calc_time"),
        (b"1704067200007,8,0.0000000000001", "more than 12 decimals"),
    ],
)
def test_vision_funding_refuses_bad_rows(row, message):
    with pytest.raises(InvalidResponse, match=message):
        parse_vision_funding(row + b"\n", "Vision file X", JAN, FEB)


def test_vision_funding_refuses_an_empty_file():
    with pytest.raises(InvalidResponse, match="no data rows"):
        parse_vision_funding(b"calc_time,funding_interval_hours,last_funding_rate\n", "f", JAN, FEB)


def test_rest_funding_rows_and_refusals():
    body = b'[{"symbol":"BTCUSDT","fundingTime":1704067200001,"fundingRate":"0.00010000","markPrice":"42000.10000000"},{"symbol":"BTCUSDT","fundingTime":1704096000000,"fundingRate":"0.00020000","markPrice":""}]'
    frame = parse_rest_funding(body, "r", "BTCUSDT", JAN, FEB)

    assert frame.get_column("mark_price").to_list() == [Decimal("42000.1"), None]
    assert frame.get_column("funding_interval_hours").to_list() == [None, None]
    with pytest.raises(InvalidResponse, match="a row of 'BTCUSDT', not 'ETHUSDT'"):
        parse_rest_funding(body, "r", "ETHUSDT", JAN, FEB)
    with pytest.raises(InvalidResponse, match="outside the requested"):
        parse_rest_funding(body, "r", "BTCUSDT", JAN + H, FEB)


def test_infer_intervals_from_spacing_across_a_change_and_a_gap():
    times = [0, 8 * H, 16 * H, 20 * H, 24 * H, 40 * H]  # 8h, then 4h, then a 16h gap
    assert infer_intervals(times, [None] * 6) == [8, 8, 8, 4, 4, 4]
    assert infer_intervals([0], [None]) == [None]
    assert infer_intervals([0, 8 * H], [None, 4]) == [4, 4]  # Vision: 4 h; 04:00 missing


def test_one_missing_event_between_equal_spacings_is_a_gap_not_two_interval_changes():
    # 4 h funding, 04:00 missing: the 8 h spacing is a missing event, not 4 h -> 8 h -> 4 h.
    times = [0, 8 * H, 12 * H, 16 * H, 20 * H]
    assert infer_intervals(times, [None] * 5) == [4, 4, 4, 4, 4]
    # 08:00 missing: the same (an 8 h interval could not end at 12:00 anyway).
    times = [0, 4 * H, 12 * H, 16 * H, 20 * H]
    assert infer_intervals(times, [None] * 5) == [4, 4, 4, 4, 4]
    # A real change keeps its new spacing on both sides of the next event.
    times = [0, 4 * H, 8 * H, 16 * H, 24 * H]
    assert infer_intervals(times, [None] * 5) == [4, 4, 4, 8, 8]


def _frame(rows):
    import polars as pl

    from nautilus_dsm.dsm.funding_schema import FUNDING_SCHEMA

    return pl.DataFrame(
        {
            "funding_time": [r[0] for r in rows],
            "calc_time": [r[1] for r in rows],
            "funding_interval_hours": [r[2] for r in rows],
            "funding_rate": [Decimal("0.0001")] * len(rows),
            "mark_price": [None] * len(rows),
        },
        schema={**FUNDING_SCHEMA, "funding_time": pl.Int64, "calc_time": pl.Int64},
    ).with_columns(pl.col("funding_time", "calc_time").cast(FUNDING_SCHEMA["calc_time"]))


def test_assess_funding_counts_expected_events_with_the_interval_of_the_time():
    # 8h events at 0, 8 (16 missing), 24, then 4h at 28, 32 (36 missing), 40; range to 48.
    rows = [(t * H, t * H + 7, h) for t, h in [(0, 8), (8, 8), (24, 8), (28, 4), (32, 4), (40, 4)]]
    report = assess_funding(_frame(rows), 0, 48 * H)

    assert report.events == 6
    assert [(g.missing, g.interval_hours) for g in report.gaps] == [(1, 8), (1, 4), (1, 4)]
    assert report.expected_events == 9
    assert report.interval_changes[0][1:] == (8, 4)
    assert report.max_calc_offset_ms == 7


def test_assess_funding_reports_off_boundary_events():
    rows = [(0, 0, 8), (8 * H, 8 * H + 120_000, 8), (12 * H, 12 * H, 8)]
    report = assess_funding(_frame(rows), 0, 16 * H)

    assert [int(t.timestamp() * 1000) for t in report.off_boundary] == [8 * H, 12 * H]
    assert any("off their interval's boundary" in w for w in report.warnings)


def test_request_window_waits_for_the_oldest_request_to_leave():
    now = [0.0]
    window = RequestWindow(2, 300.0, clock=lambda: now[0])
    window.record()
    now[0] = 10.0
    window.record()

    assert window.delay_s() == pytest.approx(290.0)
    now[0] = 300.0
    assert window.delay_s() == 0.0


def test_dataset_names_and_refusals():
    assert Dataset.parse("mark") is Dataset.MARK_PRICE_KLINES
    assert Dataset.parse("premiumIndexKlines") is Dataset.PREMIUM_INDEX_KLINES
    assert Dataset.FUNDING_RATES.vision_folder == "fundingRate"
    assert Dataset.INDEX_PRICE_KLINES.symbol_param == "pair"
    assert Dataset.KLINES.cache_dir == "binance"
    assert pair_of("BTCUSD_PERP") == "BTCUSD"
    with pytest.raises(InvalidInput, match="unknown dataset 'marks'; use one of"):
        Dataset.parse("marks")
    with pytest.raises(InvalidInput, match="exists only on the futures markets"):
        Dataset.MARK_PRICE_KLINES.check_market(MarketType.SPOT)
