"""The kline frame and its parsers, on real recorded Binance payloads (pure)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from nautilus_dsm.dsm.schema import (
    FRAME_SCHEMA,
    empty_frame,
    parse_rest_klines,
    parse_vision_csv,
)
from nautilus_dsm.errors import InvalidResponse


def test_rest_spot_klines_keep_binance_decimals(realdata: Path) -> None:
    frame = parse_rest_klines(json.loads((realdata / "klines_spot.json").read_text()))
    assert dict(frame.schema) == FRAME_SCHEMA
    assert frame.height == 10
    first = frame.row(0, named=True)
    assert first["open_time"] == datetime(2021, 10, 22, 23, 3, tzinfo=UTC)
    assert first["close_time"] == datetime(2021, 10, 22, 23, 3, 59, 999000, tzinfo=UTC)
    assert first["open"] == Decimal("60685.22000000")
    assert first["trades"] == 617
    assert frame["open"].cast(pl.String).to_list()[0] == "60685.22000000"


def test_rest_futures_klines(realdata: Path) -> None:
    frame = parse_rest_klines(json.loads((realdata / "klines_futures_um.json").read_text()))
    row = frame.row(0, named=True)
    assert row["open_time"] == datetime(2017, 7, 3, tzinfo=UTC)
    assert row["high"] == Decimal("0.8")
    assert row["volume"] == Decimal("148976.11427815")
    assert row["taker_buy_quote_volume"] == Decimal("28.46694368")


def test_vision_spot_csv_without_header(realdata: Path) -> None:
    frame = parse_vision_csv((realdata / "vision_spot_ADABTC-1m-2021-11-27.csv").read_bytes())
    assert frame["open_time"][0] == datetime(2021, 11, 27, tzinfo=UTC)
    assert frame["open"][0] == Decimal("0.00002853")
    assert frame["open_time"].diff().drop_nulls().dt.total_milliseconds().unique().to_list() == [
        60000
    ]


def test_vision_futures_header_and_microseconds_match_ms() -> None:
    header = (
        b"open_time,open,high,low,close,volume,close_time,quote_volume,count,"
        b"taker_buy_volume,taker_buy_quote_volume,ignore\n"
    )
    row_ms = b"1735689600000,93576.00,93610.93,93537.50,93610.93,8.21827,1735689659999,769036.2,1233,3.7,346276.3,0\n"
    row_us = b"1735689600000000,93576.00,93610.93,93537.50,93610.93,8.21827,1735689659999999,769036.2,1233,3.7,346276.3,0\n"
    from_header = parse_vision_csv(header + row_ms)
    from_us = parse_vision_csv(row_us)
    assert from_header.equals(from_us)
    assert from_us["close_time"][0] == datetime(2025, 1, 1, 0, 0, 59, 999000, tzinfo=UTC)


def test_vision_wrong_column_count_is_an_error() -> None:
    with pytest.raises(InvalidResponse, match="Vision CSV has 6 columns, expected Binance's 12"):
        parse_vision_csv(b"1,2,3,4,5,6\n")


def test_rest_rows_of_wrong_width_are_an_error() -> None:
    with pytest.raises(
        InvalidResponse,
        match=r"the row at 1970-01-01T00:00:00\.001Z has 5 fields; Binance sends 12",
    ):
        parse_rest_klines([[1, "1", "1", "1", "1"]])


def test_empty_inputs_give_empty_frames() -> None:
    assert parse_rest_klines([]).equals(empty_frame())
    assert parse_vision_csv(b"").equals(empty_frame())
