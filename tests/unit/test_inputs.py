"""Input validation (issue 9, point 8): pure rules, no I/O.

Times: aware datetimes and ISO-8601 strings with an offset are accepted, anything else refused
naming the accepted forms; a start in the future is refused; base URLs must be http(s)://host;
a request above the row cap is refused with the figure and the advice to use ``ingest``; the
CLI's ``--out`` must end in ``.parquet``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from nautilus_dsm.cli.inputs import check_out_path, parse_utc
from nautilus_dsm.common import (
    ACCEPTED_TIMES,
    DEFAULT_MAX_ROWS,
    Interval,
    check_base_url,
    check_max_rows,
    check_not_future,
    check_range,
    check_row_cap,
    parse_instant,
    to_ms,
)
from nautilus_dsm.errors import InvalidInput

JAN1 = datetime(2024, 1, 1, tzinfo=UTC)
JAN1_MS = 1_704_067_200_000
DAY_MS = 86_400_000

# -- times --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        (JAN1, JAN1_MS),
        (datetime(2024, 1, 1, 2, tzinfo=timezone(timedelta(hours=2))), JAN1_MS),
        (pd.Timestamp("2024-01-01T00:00:00Z"), JAN1_MS),
        ("2024-01-01T00:00:00Z", JAN1_MS),
        ("2024-01-01T00:00:00+00:00", JAN1_MS),
        ("2024-01-01T02:00:00+02:00", JAN1_MS),
        ("2024-01-01T00:00:00+02:00", JAN1_MS - 2 * 3_600_000),
        ("  2024-01-01T00:00:00.123Z ", JAN1_MS + 123),
        ("2023-12-31T19:00:00-05:00", JAN1_MS),
    ],
)
def test_aware_datetimes_and_iso_strings_with_offset_are_accepted(value: object, ms: int) -> None:
    assert to_ms(parse_instant(value, "start")) == ms


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            datetime(2024, 1, 1),
            "naive datetime 2024-01-01T00:00:00 is ambiguous; pass a timezone-aware UTC "
            "datetime, e.g. datetime(2024, 1, 1, tzinfo=UTC), or an ISO-8601 string with an "
            "offset, e.g. '2024-01-01T00:00:00Z'",
        ),
        (
            "2024-01-01T00:00:00",
            f"start '2024-01-01T00:00:00' has no UTC offset, so its time zone is ambiguous; "
            f"pass {ACCEPTED_TIMES}",
        ),
        (
            "2024-01-01",
            f"start '2024-01-01' has no UTC offset, so its time zone is ambiguous; "
            f"pass {ACCEPTED_TIMES}",
        ),
        ("yesterday", f"start 'yesterday' is not an ISO-8601 datetime; pass {ACCEPTED_TIMES}"),
        ("", f"start '' is not an ISO-8601 datetime; pass {ACCEPTED_TIMES}"),
        (1704067200000, f"start 1704067200000 (int) is not a datetime; pass {ACCEPTED_TIMES}"),
        (1704067200.0, f"start 1704067200.0 (float) is not a datetime; pass {ACCEPTED_TIMES}"),
        (None, f"start None (NoneType) is not a datetime; pass {ACCEPTED_TIMES}"),
        (
            date(2024, 1, 1),
            f"start datetime.date(2024, 1, 1) (date) is not a datetime; pass {ACCEPTED_TIMES}",
        ),
    ],
)
def test_anything_else_is_refused_naming_the_accepted_forms(value: object, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_instant(value, "start")

    assert str(info.value) == message
    assert "'2024-01-01T00:00:00Z'" in str(info.value)


def test_accepted_forms_name_both_datetime_and_iso_string() -> None:
    assert ACCEPTED_TIMES == (
        "a timezone-aware datetime, e.g. datetime(2024, 1, 1, tzinfo=UTC), or an ISO-8601 "
        "string with an offset, e.g. '2024-01-01T00:00:00Z' or '2024-01-01T00:00:00+02:00'"
    )


def test_check_range_takes_parsed_instants_and_refuses_raw_strings() -> None:
    start, end = parse_instant("2024-01-01T00:00:00Z", "start"), JAN1 + timedelta(minutes=1)
    assert check_range(start, end) == (JAN1_MS, JAN1_MS + 60_000)
    # A caller that keeps the values (ingest's report) must never hold a string.
    with pytest.raises(InvalidInput) as info:
        check_range(JAN1, "2024-01-02T00:00:00Z")
    assert str(info.value) == (
        "end '2024-01-02T00:00:00Z' (str) is not a datetime; pass a timezone-aware datetime, "
        "e.g. datetime(2024, 1, 1, tzinfo=UTC)"
    )
    with pytest.raises(InvalidInput) as info:
        check_range(
            parse_instant("2024-01-02T00:00:00+00:00", "start"),
            parse_instant("2024-01-01T00:00:00Z", "end"),
        )
    assert str(info.value) == (
        "start 2024-01-02T00:00:00+00:00 is not before end 2024-01-01T00:00:00+00:00; "
        "the range is [start, end), so pass an end after the start"
    )


def test_a_start_in_the_future_is_refused_and_now_itself_is_not() -> None:
    check_not_future(JAN1_MS, JAN1_MS)  # a start at now: nothing closed yet, but not a mistake
    check_not_future(JAN1_MS - 1, JAN1_MS)
    with pytest.raises(InvalidInput) as info:
        check_not_future(JAN1_MS + 1, JAN1_MS)

    assert str(info.value) == (
        "start 2024-01-01T00:00:00.001Z is in the future (now is 2024-01-01T00:00:00Z); "
        "only closed bars exist, so pass a start before now"
    )


# -- base URLs ----------------------------------------------------------------------------------

_FIX = (
    "pass the scheme and host, e.g. https://api.binance.com or http://127.0.0.1:8080, or leave "
    "base_url_http unset for Binance"
)


@pytest.mark.parametrize(
    "url",
    [
        None,
        "https://api.binance.com",
        "http://127.0.0.1:8080",
        "http://127.0.0.1:8080/",
        "HTTPS://testnet.binance.vision",
        "https://proxy.example.com/binance",  # a reverse proxy's path prefix
        "http://[::1]:8080",
    ],
)
def test_http_and_https_hosts_are_accepted(url: str | None) -> None:
    assert check_base_url(url, "base_url_http") == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", f"base_url_http '' is not a URL; {_FIX}"),
        ("   ", f"base_url_http '   ' is not a URL; {_FIX}"),
        (123, f"base_url_http 123 is not a URL; {_FIX}"),
        ("ftp://x", f"base_url_http 'ftp://x' has scheme 'ftp'; {_FIX}"),
        ("file:///etc/passwd", f"base_url_http 'file:///etc/passwd' has scheme 'file'; {_FIX}"),
        ("api.binance.com", f"base_url_http 'api.binance.com' has no http:// or https://; {_FIX}"),
        ("localhost:8080", f"base_url_http 'localhost:8080' has no http:// or https://; {_FIX}"),
        ("/tmp/binance", f"base_url_http '/tmp/binance' has no http:// or https://; {_FIX}"),
        ("http:/x", f"base_url_http 'http:/x' has no http:// or https://; {_FIX}"),
        ("http://", f"base_url_http 'http://' has no host; {_FIX}"),
        ("http:///api", f"base_url_http 'http:///api' has no host; {_FIX}"),
        ("http://:8080", f"base_url_http 'http://:8080' has no host; {_FIX}"),
        ("http://host:port", f"base_url_http 'http://host:port' has an invalid port; {_FIX}"),
        ("http://h:99999", f"base_url_http 'http://h:99999' has an invalid port; {_FIX}"),
        (" http://x", f"base_url_http ' http://x' contains whitespace; {_FIX}"),
        ("http://a b", f"base_url_http 'http://a b' contains whitespace; {_FIX}"),
        ("http://x?a=1", f"base_url_http 'http://x?a=1' has a query or fragment; {_FIX}"),
        ("http://x#top", f"base_url_http 'http://x#top' has a query or fragment; {_FIX}"),
        (
            "https://api.binance.com/api/v3",
            "base_url_http 'https://api.binance.com/api/v3' ends in the API path, which is "
            "appended per market (/api/v3, /fapi/v1, /dapi/v1); pass the host only, e.g. "
            "https://api.binance.com or http://127.0.0.1:8080",
        ),
        (
            "https://fapi.binance.com/fapi/v1/",
            "base_url_http 'https://fapi.binance.com/fapi/v1/' ends in the API path, which is "
            "appended per market (/api/v3, /fapi/v1, /dapi/v1); pass the host only, e.g. "
            "https://api.binance.com or http://127.0.0.1:8080",
        ),
    ],
)
def test_a_base_url_that_cannot_be_a_host_is_refused(url: object, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        check_base_url(url, "base_url_http")

    assert str(info.value) == message


def test_the_option_name_is_the_one_given() -> None:
    with pytest.raises(InvalidInput, match=r"^base_url_vision 'ftp://x' has scheme 'ftp';"):
        check_base_url("ftp://x", "base_url_vision")
    # the API-path rule is REST's: a Vision mirror under /fapi/v1 is merely odd
    assert check_base_url("http://m/fapi/v1", "base_url_vision") == "http://m/fapi/v1"


# -- row cap ------------------------------------------------------------------------------------


def test_row_cap_refuses_with_the_figure_and_the_advice_to_ingest() -> None:
    year = 366 * DAY_MS  # 2024 is a leap year
    assert DEFAULT_MAX_ROWS == 50_000_000
    assert check_row_cap(Interval.SECOND_1, JAN1_MS, JAN1_MS + year, DEFAULT_MAX_ROWS) == 31_622_400
    with pytest.raises(InvalidInput) as info:
        check_row_cap(
            Interval.SECOND_1, JAN1_MS, JAN1_MS + 2 * year, DEFAULT_MAX_ROWS, "BTCUSDT.BINANCE"
        )

    assert str(info.value) == (
        "BTCUSDT.BINANCE 1s 2024-01-01T00:00:00Z..2026-01-02T00:00:00Z would be 63,244,800 bars "
        "in one frame, more than max_rows=50,000,000 (~6.3 GB); use ingest (`nautilus-dsm "
        "ingest` or nautilus_dsm.catalog.ingest), which streams the range in chunks, or narrow "
        "the range, or raise max_rows"
    )


def test_row_cap_is_inclusive_and_counts_calendar_months() -> None:
    assert check_row_cap(Interval.MINUTE_1, JAN1_MS, JAN1_MS + DAY_MS, 1440) == 1440
    with pytest.raises(InvalidInput, match=r"would be 1,440 bars in one frame, more than max_row"):
        check_row_cap(Interval.MINUTE_1, JAN1_MS, JAN1_MS + DAY_MS, 1439)
    assert check_row_cap(Interval.MONTH_1, JAN1_MS, JAN1_MS + 366 * DAY_MS, 12) == 12
    assert check_row_cap(Interval.MINUTE_1, JAN1_MS, JAN1_MS, 1) == 0


@pytest.mark.parametrize("value", [0, -1, 1.5, "10", True, None])
def test_max_rows_must_be_a_positive_int(value: object) -> None:
    with pytest.raises(InvalidInput) as info:
        check_max_rows(value)

    assert str(info.value) == (
        f"max_rows={value!r} is not a positive whole number of rows; pass e.g. 50_000_000 "
        "(the default)"
    )


# -- CLI ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-01", JAN1),  # the CLI keeps taking naive dates as UTC (its --help says so)
        ("2024-01-01T00:00:00", JAN1),
        ("2024-01-01T02:00:00+02:00", JAN1),
        ("2024-01-01T00:00:00Z", JAN1),
    ],
)
def test_cli_dates_are_utc_naive_included(text: str, expected: datetime) -> None:
    assert parse_utc(text, "--start") == expected


@pytest.mark.parametrize("text", ["9999-12-31T23:00:00-05:00", "0001-01-01T00:00:00+01:00", ""])
def test_cli_dates_out_of_range_are_invalid_input_not_overflow(text: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_utc(text, "--end")

    assert str(info.value) == (
        f"--end {text!r} is not a date; use a UTC date like 2024-01-01 or an ISO datetime like "
        "2024-01-01T12:00:00Z"
    )


@pytest.mark.parametrize("name", ["bars.parquet", "BARS.PARQUET", "a/b/c.parquet"])
def test_out_accepts_parquet_names(tmp_path: Path, name: str) -> None:
    assert check_out_path(tmp_path / name) == tmp_path / name


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "bars.csv",
            "has suffix '.csv'; fetch writes Parquet, so name the file *.parquet, "
            "e.g. bars.parquet",
        ),
        (
            "bars",
            "has no suffix; fetch writes Parquet, so name the file *.parquet, e.g. bars.parquet",
        ),
        (
            "bars.parquet.tmp",
            "has suffix '.tmp'; fetch writes Parquet, so name the file "
            "*.parquet, e.g. bars.parquet.parquet",
        ),
        (
            "bars.pq",
            "has suffix '.pq'; fetch writes Parquet, so name the file *.parquet, e.g. bars.parquet",
        ),
    ],
)
def test_out_refuses_other_suffixes(tmp_path: Path, name: str, message: str) -> None:
    out = tmp_path / name
    with pytest.raises(InvalidInput) as info:
        check_out_path(out)

    assert str(info.value) == f"--out {str(out)!r} {message}"


def test_out_under_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "sub" / "bars.parquet"
    with pytest.raises(InvalidInput) as info:
        check_out_path(out)

    assert str(info.value) == (
        f"--out {str(out)!r}: {str(tmp_path / 'file')!r} is a file, not a directory"
    )
