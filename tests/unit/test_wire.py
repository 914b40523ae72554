"""Validation at the edge, pure: the msgspec kline decoder, the CSV reader and the checks."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import msgspec
import polars as pl
import pytest

from nautilus_dsm.common import Interval, to_ms
from nautilus_dsm.dsm.schema import FRAME_SCHEMA, empty_frame, parse_rest_klines, parse_vision_csv
from nautilus_dsm.dsm.validate import MAX_OPEN_TIMES, Expect, check_times, iso
from nautilus_dsm.dsm.wire import KLINES_DECODER, BinanceKline, decode_klines, raw_frame
from nautilus_dsm.errors import InvalidResponse, SourceError

MIN = 60_000
HOUR = 60 * MIN
DAY = 86_400_000
T0 = to_ms(datetime(2024, 1, 3, tzinfo=UTC))
M1 = Interval.MINUTE_1
DAY_EXPECT = Expect(M1, T0, T0 + DAY, "test file", period_word="the file's period")


def row(open_ms: int, length: int = MIN, **fields: object) -> list[object]:
    values: list[object] = [
        open_ms,
        "42000.10",
        "42010.20",
        "41990.30",
        "42005.40",
        "12.345",
        open_ms + length - 1,
        "518000.12345678",
        1234,
        "6.1",
        "256000.1",
        "0",
    ]
    names = BinanceKline.__struct_fields__
    for name, value in fields.items():
        values[names.index(name)] = value
    return values


def csv_line(values: list[object]) -> bytes:
    return ",".join("" if v is None else str(v) for v in values).encode()


def csv(*rows: list[object], header: bool = False) -> bytes:
    head = (
        b"open_time,open,high,low,close,volume,close_time,quote_volume,count,"
        b"taker_buy_volume,taker_buy_quote_volume,ignore\n"
        if header
        else b""
    )
    return head + b"\n".join(csv_line(r) for r in rows) + b"\n"


def refusal(call, *args: object) -> InvalidResponse:
    with pytest.raises(InvalidResponse) as info:
        call(*args)
    return info.value


# --------------------------------------------------------------------------------------------
# The msgspec decoder
# --------------------------------------------------------------------------------------------


def test_decoder_is_built_once_and_types_the_fields() -> None:
    klines = decode_klines(msgspec.json.encode([row(T0)]), "test")
    assert isinstance(KLINES_DECODER, msgspec.json.Decoder)
    assert KLINES_DECODER.type == list[BinanceKline]
    assert klines == [BinanceKline(*row(T0))]
    raw = raw_frame(klines)
    assert raw.schema["open_time"] == pl.Int64 and raw.schema["open"] == pl.String
    assert raw.columns == list(BinanceKline.__struct_fields__[:-1])


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (row(T0 + MIN, open=None), "test: field 'open' is null at 2024-01-03T00:01:00Z"),
        (
            row(T0 + MIN, high=1.5),
            "test: field 'high' has the wrong type (expected `str`, got `float`) at "
            "2024-01-03T00:01:00Z",
        ),
        (
            row(T0 + MIN, trades="7"),
            "test: field 'trades' has the wrong type (expected `int`, got `str`) at "
            "2024-01-03T00:01:00Z",
        ),
        (row(T0 + MIN)[:11], "test: the row at 2024-01-03T00:01:00Z has 11 fields; Binance sends"),
        ([*row(T0 + MIN), "x"], "test: the row at 2024-01-03T00:01:00Z has 13 fields; Binance"),
        (["x", *row(T0)[1:]], "test: field 'open_time' has the wrong type (expected `int`, got"),
        (
            row(T0 + MIN, trades=2**63),
            f"test: field 'trades' is out of range ({2**63}: expected `int` <= {2**63 - 1}) at "
            "2024-01-03T00:01:00Z",
        ),
        (
            row(T0 + MIN, trades=-1),
            "test: field 'trades' is out of range (-1: expected `int` >= 0) at 2024-01-03T00:01",
        ),
        (
            row(-MIN),
            "test: field 'open_time' is out of range (-60000: expected `int` >= 0) in row 2 (no",
        ),
    ],
)
def test_decoder_refuses_what_is_not_binance_klines(bad: list[object], message: str) -> None:
    error = refusal(decode_klines, msgspec.json.encode([row(T0), bad]), "test")
    assert str(error).startswith(message), str(error)
    assert isinstance(error, SourceError)


def test_decoder_names_the_open_time_of_the_offending_row() -> None:
    error = refusal(decode_klines, msgspec.json.encode([row(T0), row(T0 + MIN, low=None)]), "t")
    assert error.open_times_ms == (T0 + MIN,)


def test_decoder_refuses_an_object() -> None:
    error = refusal(decode_klines, b'{"code": 0}', "test")
    assert str(error) == (
        "test: the answer is a JSON dict, not a list of klines (expected `array`, got "
        "`object`); refused"
    )


def test_garbled_json_stays_a_decode_error_for_the_transport_to_retry() -> None:
    with pytest.raises(msgspec.DecodeError):
        decode_klines(b"[[1,", "test")


# --------------------------------------------------------------------------------------------
# REST parsing: values
# --------------------------------------------------------------------------------------------


def test_rest_non_numeric_and_empty_values_are_refused_with_their_open_times() -> None:
    payload = [row(T0), row(T0 + MIN, high="abc"), row(T0 + 2 * MIN, volume="")]
    error = refusal(parse_rest_klines, payload)
    assert str(error) == (
        "klines payload: 2 of 3 rows fail validation: field 'high' is not a number: 'abc' at "
        "2024-01-03T00:01:00Z; field 'volume' is empty at 2024-01-03T00:02:00Z; the answer is "
        "refused"
    )
    assert error.open_times_ms == (T0 + MIN, T0 + 2 * MIN)


def test_rest_valid_payload_keeps_binance_decimals() -> None:
    frame = parse_rest_klines([row(T0)], DAY_EXPECT)
    assert dict(frame.schema) == FRAME_SCHEMA
    assert frame.row(0, named=True)["quote_volume"] == Decimal("518000.12345678")


def test_rest_ohlc_insane_row_is_not_a_structural_failure() -> None:
    frame = parse_rest_klines([row(T0, high="1", low="2")], DAY_EXPECT)
    assert frame.row(0, named=True)["high"] == Decimal("1")


# --------------------------------------------------------------------------------------------
# Time checks
# --------------------------------------------------------------------------------------------


def test_rows_of_another_interval_are_refused() -> None:
    error = refusal(parse_rest_klines, [row(T0, HOUR), row(T0 + HOUR, HOUR)], DAY_EXPECT)
    assert str(error) == (
        "test file: 2 of 2 rows fail validation: close_time - open_time + 1 is 3600000 ms, not "
        "the 1m interval's 60000 ms at 2024-01-03T00:00:00Z, 2024-01-03T01:00:00Z; the answer "
        "is refused"
    )


def test_off_grid_and_outside_rows_are_refused() -> None:
    payload = [row(T0 + 1), row(T0 + DAY), row(T0 - MIN), row(T0 + 5 * MIN)]
    error = refusal(parse_rest_klines, payload, DAY_EXPECT)
    assert str(error) == (
        "test file: 3 of 4 rows fail validation: open time is not on the 1m grid at "
        "2024-01-03T00:00:00.001Z; opens outside the file's period "
        "2024-01-03T00:00:00Z..2024-01-04T00:00:00Z at 2024-01-04T00:00:00Z, "
        "2023-01-02T23:59:00Z; the answer is refused".replace("2023-01-02", "2024-01-02")
    )
    assert error.open_times_ms == (T0 + 1, T0 + DAY, T0 - MIN)


def test_duplicates_and_disorder_are_not_failures() -> None:
    payload = [row(T0 + MIN), row(T0), row(T0)]
    assert parse_rest_klines(payload, DAY_EXPECT).height == 3


def test_calendar_months_have_their_own_length() -> None:
    jan, feb, mar = (to_ms(datetime(2024, m, 1, tzinfo=UTC)) for m in (1, 2, 3))
    expect = Expect(Interval.MONTH_1, jan, to_ms(datetime(2025, 1, 1, tzinfo=UTC)), "year")
    frame = parse_rest_klines([row(jan, feb - jan), row(feb, mar - feb)], expect)
    assert frame.height == 2
    error = refusal(parse_rest_klines, [row(feb, feb - jan)], expect)  # January's length
    assert "close_time - open_time + 1 is 2678400000 ms, not the 1M interval's 2505600000 ms" in (
        str(error)
    )


def test_weekly_grid_is_mondays() -> None:
    monday = to_ms(datetime(2024, 1, 1, tzinfo=UTC))
    week = 7 * DAY
    expect = Expect(Interval.WEEK_1, monday, monday + 10 * week, "weeks")
    assert parse_rest_klines([row(monday, week)], expect).height == 1
    error = refusal(parse_rest_klines, [row(monday + DAY, week)], expect)
    assert "open time is not on the 1w grid at 2024-01-02T00:00:00Z" in str(error)


def test_open_ended_expect_checks_only_the_start() -> None:
    expect = Expect(M1, T0, None, "probe")
    assert parse_rest_klines([row(T0 + 10 * DAY)], expect).height == 1
    assert "opens outside the requested period 2024-01-03T00:00:00Z.. at" in str(
        refusal(parse_rest_klines, [row(T0 - MIN)], expect)
    )


def test_open_times_carried_are_capped_and_the_message_counts_all() -> None:
    n = MAX_OPEN_TIMES + 500
    frame = parse_rest_klines([row(T0 + i * MIN, HOUR) for i in range(n)])
    with pytest.raises(InvalidResponse) as info:
        check_times(frame, Expect(M1, T0, T0 + 2 * DAY, "big"))
    assert len(info.value.open_times_ms) == MAX_OPEN_TIMES
    assert str(info.value).startswith(f"big: {n} of {n} rows fail validation: ")
    assert f"and {200 - 3} more; {n - 200} more problem(s) not itemised" in str(info.value)


def test_iso_shows_milliseconds_only_when_there_are_some() -> None:
    assert iso(T0) == "2024-01-03T00:00:00Z"
    assert iso(T0 + 7) == "2024-01-03T00:00:00.007Z"


# --------------------------------------------------------------------------------------------
# Vision CSV reading
# --------------------------------------------------------------------------------------------

ROWS = [row(T0), row(T0 + MIN), row(T0 + 2 * MIN)]


def truth() -> pl.DataFrame:
    return parse_rest_klines(ROWS)


@pytest.mark.parametrize("header", [False, True], ids=["no-header", "header"])
@pytest.mark.parametrize(
    "change",
    [
        lambda b: b,
        lambda b: b"\xef\xbb\xbf" + b,
        lambda b: b"  " + b,
        lambda b: b"\r\n" + b,
        lambda b: b.replace(b"\n", b"\r\n"),
        lambda b: b.replace(b",", b" ,\t"),
        lambda b: b.rstrip(b"\n"),
        lambda b: b + b"\n\n  \n",
    ],
    ids=["plain", "bom", "spaces", "leading-crlf", "crlf", "field-spaces", "no-final-eol", "tail"],
)
def test_formatting_noise_loses_no_row(header: bool, change) -> None:
    assert parse_vision_csv(change(csv(*ROWS, header=header)), DAY_EXPECT).equals(truth())


def test_a_first_row_that_is_not_a_number_is_refused_not_eaten_as_a_header() -> None:
    data = csv(row(T0, open_time="x1704240000000"), *ROWS[1:])
    error = refusal(parse_vision_csv, data, DAY_EXPECT)
    assert "field 'open_time' is not a number: 'x1704240000000' at row 1 (no open time)" in str(
        error
    )


@pytest.mark.parametrize(
    "first", [b"open_time", b"Open Time", b" open_time", b"timestamp", b'"open_time"']
)
def test_header_is_a_first_field_that_names_a_column(first: bytes) -> None:
    data = csv(*ROWS, header=True).replace(b"open_time", first, 1)
    assert parse_vision_csv(data, DAY_EXPECT).equals(truth())


def test_empty_field_and_short_row_in_a_csv_are_named() -> None:
    short = csv_line(ROWS[2])[: csv_line(ROWS[2]).rfind(b",")]  # 11 fields
    data = csv(ROWS[0], row(T0 + MIN, low="")) + short + b"\n"
    error = refusal(parse_vision_csv, data, DAY_EXPECT)
    assert str(error) == (
        "test file: 1 of 3 rows fail validation: the row has fewer than 12 fields at "
        "2024-01-03T00:02:00Z; the answer is refused"
    )  # the short row first; the empty field once every row has its 12 fields
    data = csv(ROWS[0], row(T0 + MIN, low=""), ROWS[2])
    assert str(refusal(parse_vision_csv, data, DAY_EXPECT)) == (
        "test file: 1 of 3 rows fail validation: field 'low' is empty at 2024-01-03T00:01:00Z; "
        "the answer is refused"
    )


def test_a_row_with_too_many_fields_is_refused() -> None:
    data = csv(*ROWS) + csv_line([*row(T0 + 3 * MIN), "x"]) + b"\n"
    error = refusal(parse_vision_csv, data, DAY_EXPECT)
    assert str(error).startswith("test file: a row does not have Binance's 12 fields (")


def test_wrong_field_count_on_the_first_row_is_refused() -> None:
    error = refusal(parse_vision_csv, b"1,2,3\n", DAY_EXPECT)
    assert str(error).startswith("test file: Vision CSV has 3 columns, expected Binance's 12")


def test_microsecond_files_are_floored_to_the_same_rows() -> None:
    micros = [
        row(0, open_time=int(r[0]) * 1000, close_time=int(r[6]) * 1000 + 999)  # type: ignore[call-overload]
        for r in ROWS
    ]
    assert parse_vision_csv(csv(*micros), DAY_EXPECT).equals(truth())


def test_empty_inputs_give_empty_frames() -> None:
    assert parse_vision_csv(b"", DAY_EXPECT).equals(empty_frame())
    assert parse_vision_csv(b"\xef\xbb\xbf \r\n", DAY_EXPECT).equals(empty_frame())
    assert parse_vision_csv(csv(header=True)[:-1], DAY_EXPECT).equals(empty_frame())
