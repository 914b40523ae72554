"""Trust: validation at the edge, over real HTTP against the Binance imitation.

Each case rewrites one answer of the imitation (``Faults.rest_rewrite`` /
``Faults.vision_csv_rewrite`` / ``Faults.vision_member_names``) and asserts the exact outcome:
a Vision file that fails validation is refused at once (one download, its checksum is valid)
and the day comes from REST bar for bar; a REST page that fails is retried, then the period is
``DataUnavailable`` with a message naming the field and the open time; nothing that failed is
cached, so a fetch after the fault is gone gets the source's bars. Formatting noise that loses
nothing (a BOM, spaces, CRLF) is read as the data it is. The matrix is in docs/RELIABILITY.md.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest

from nautilus_dsm.common import DataProvider, Interval, MarketType, to_ms
from nautilus_dsm.dsm.manager import DataSourceManager
from nautilus_dsm.dsm.rest import BinanceRestClient
from nautilus_dsm.dsm.vision import VisionClient
from nautilus_dsm.errors import DataUnavailable, InvalidResponse

pytestmark = pytest.mark.timeout(30)

UM = MarketType.FUTURES_USDT
SPOT = MarketType.SPOT
M1 = Interval.MINUTE_1
MIN = 60_000
HOUR = 60 * MIN
DAY = 86_400_000
T0 = to_ms(datetime(2024, 1, 1, tzinfo=UTC))
JAN3 = T0 + 2 * DAY
JAN3_0005 = JAN3 + 5 * MIN
PERP = "BTCUSDT-PERP.BINANCE"
SPOT_ID = "BTCUSDT.BINANCE"
UM_ZIP = "BTCUSDT-1m-2024-01-03.zip"
UM_CSV = "BTCUSDT-1m-2024-01-03.csv"
REST_TRIES = 3


def at(day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2024, 1, day, hour, minute, tzinfo=UTC)


def fast_dsm(srv: Any, cache_dir: Path, **kwargs: Any) -> DataSourceManager:
    """A manager on the imitation whose sources back off in milliseconds."""
    dsm = DataSourceManager.create(
        DataProvider.BINANCE,
        base_url_http=srv.url,
        base_url_vision=srv.url,
        cache_dir=cache_dir,
        **kwargs,
    )
    for market in MarketType:
        dsm._rest[market] = BinanceRestClient(
            market, srv.url, max_retries=REST_TRIES, backoff_base_s=0.001, backoff_max_s=0.005
        )
        dsm._vision[market] = VisionClient(
            market, srv.url, max_retries=2, backoff_base_s=0.001, backoff_max_s=0.005
        )
    return dsm


def fetch(srv: Any, cache_dir: Path, instrument: str = PERP, **kwargs: Any) -> Any:
    """The closed bars of 2024-01-03 through the whole engine."""
    return fast_dsm(srv, cache_dir, **kwargs).fetch_sync(instrument, "1m", at(3), at(4))


def src(cache: int = 0, vision: int = 0, rest: int = 0) -> dict[str, int]:
    return {"cache": cache, "vision": vision, "rest": rest, "synthetic": 0}


def truth(srv: Any, market: MarketType = UM, start: int = JAN3, end: int = JAN3 + DAY) -> Any:
    return srv.expected(market, "BTCUSDT", M1, start, end)


def zip_downloads(srv: Any, name: str) -> int:
    return sum(1 for r in srv.requests if r.path.endswith("/" + name))


def klines_requests(srv: Any, path: str = "/fapi/v1/klines") -> list[int]:
    return [int(r.query["startTime"]) for r in srv.requests if r.path == path]


def cached_days(cache_dir: Path, market: str = "futures_usdt") -> list[str]:
    folder = cache_dir / "binance" / market / "BTCUSDT" / "1m"
    return sorted(p.stem for p in folder.glob("*.parquet")) if folder.is_dir() else []


def vision_csv(srv: Any, path: str) -> bytes:
    """The CSV of a Vision zip as the imitation serves it (fetched before any rewrite is set)."""
    reply = httpx.get(f"{srv.url}/data/{path}")
    reply.raise_for_status()
    with zipfile.ZipFile(io.BytesIO(reply.content)) as archive:
        return archive.read(archive.namelist()[0])


def rewrite_csv(member: str, change: Callable[[bytes], bytes]) -> Callable[[str, bytes], bytes]:
    return lambda name, csv: change(csv) if name == member else csv


def rewrite_row(open_ms: int, change: Callable[[list[Any]], list[Any]]) -> Callable[..., Any]:
    """A ``rest_rewrite`` changing the row that opens at ``open_ms`` (the probe is untouched)."""

    def rewrite(path: str, query: dict[str, str], rows: list[list[Any]]) -> list[Any]:
        return [change(row) if row[0] == open_ms else row for row in rows]

    return rewrite


def set_field(index: int, value: Any) -> Callable[[list[Any]], list[Any]]:
    def change(row: list[Any]) -> list[Any]:
        row = list(row)
        row[index] = value
        return row

    return change


def blank_field(csv: bytes, open_ms: int, index: int, value: bytes = b"") -> bytes:
    """The CSV with field ``index`` of the row opening at ``open_ms`` set to ``value``."""
    lines = csv.split(b"\n")
    for i, line in enumerate(lines):
        fields = line.split(b",")
        if fields[0] == str(open_ms).encode():
            fields[index] = value
            lines[i] = b",".join(fields)
    return b"\n".join(lines)


# --------------------------------------------------------------------------------------------
# Vision: formatting that loses nothing is read exactly
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "change"),
    [
        ("bom", lambda csv: b"\xef\xbb\xbf" + csv),
        ("leading space", lambda csv: b" " + csv),
        ("leading newline and tabs", lambda csv: b"\n\t" + csv),
        ("crlf", lambda csv: csv.replace(b"\n", b"\r\n")),
        ("spaces around fields", lambda csv: csv.replace(b",", b" , ")),
    ],
)
@pytest.mark.parametrize("market", [SPOT, UM], ids=["spot-no-header", "um-header"])
def test_vision_formatting_noise_is_read_exactly(
    imitation: Any, cache_dir: Path, case: str, change: Callable[[bytes], bytes], market: MarketType
) -> None:
    imitation.faults.vision_csv_rewrite = rewrite_csv(UM_CSV, change)
    result = fetch(imitation, cache_dir, SPOT_ID if market is SPOT else PERP)
    assert result.frame.equals(truth(imitation, market)), case
    assert result.report.sources == src(vision=1440)


# --------------------------------------------------------------------------------------------
# Vision: a file that fails validation is refused at once; the day comes from REST
# --------------------------------------------------------------------------------------------


def _wrong_interval(srv: Any) -> Callable[[bytes], bytes]:
    hourly = vision_csv(srv, "futures/um/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2024-01-03.zip")
    return lambda csv: hourly


def _wrong_day(srv: Any) -> Callable[[bytes], bytes]:
    jan4 = vision_csv(srv, "futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-04.zip")
    return lambda csv: jan4


VISION_REFUSED: dict[str, tuple[Callable[[Any], Callable[[bytes], bytes]], str]] = {
    "empty price field": (
        lambda srv: lambda csv: blank_field(csv, JAN3_0005, 2),
        "field 'high' is empty at 2024-01-03T00:05:00Z",
    ),
    "price abc": (
        lambda srv: lambda csv: blank_field(csv, JAN3_0005, 3, b"abc"),
        "field 'low' is not a number: 'abc' at 2024-01-03T00:05:00Z",
    ),
    "1h rows for 1m": (
        _wrong_interval,
        "close_time - open_time + 1 is 3600000 ms, not the 1m interval's 60000 ms",
    ),
    "csv of the wrong day": (
        _wrong_day,
        "opens outside the file's period 2024-01-03T00:00:00Z..2024-01-04T00:00:00Z",
    ),
    "empty csv": (lambda srv: lambda csv: b"", "has no data rows"),
    "header only": (lambda srv: lambda csv: csv.split(b"\n", 1)[0] + b"\n", "has no data rows"),
    "13 fields": (
        lambda srv: lambda csv: csv.replace(b"\n", b",x\n"),
        "Vision CSV has 13 columns, expected Binance's 12 kline fields",
    ),
    "11 fields": (
        lambda srv: lambda csv: b"\n".join(line.rsplit(b",", 1)[0] for line in csv.split(b"\n")),
        "Vision CSV has 11 columns, expected Binance's 12 kline fields",
    ),
    "a blank line inside": (
        lambda srv: lambda csv: csv.replace(b"\n", b"\n\n", 5),
        "the row has fewer than 12 fields at row 2 (no open time)",
    ),
    "off-grid open time": (
        lambda srv: lambda csv: csv.replace(str(JAN3_0005).encode(), str(JAN3_0005 + 1).encode()),
        "is not on the 1m grid",
    ),
}


@pytest.mark.parametrize("case", list(VISION_REFUSED))
def test_vision_file_failing_validation_goes_to_rest_and_never_to_the_cache(
    imitation: Any, cache_dir: Path, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    make_change, message = VISION_REFUSED[case]
    imitation.faults.vision_csv_rewrite = rewrite_csv(UM_CSV, make_change(imitation))
    imitation.clear_requests()
    with caplog.at_level("INFO", logger="nautilus_dsm.dsm"):
        result = fetch(imitation, cache_dir)
    assert result.frame.equals(truth(imitation))
    assert result.report.sources == src(rest=1440)
    assert zip_downloads(imitation, UM_ZIP) == 1  # the checksum is valid: no re-download
    assert len(klines_requests(imitation)) == 1 + 1  # the listing probe, then the day's page
    assert message in caplog.text, caplog.text
    # What was cached is REST's day, exactly; the refused file never reached the cache.
    imitation.faults.reset()
    imitation.clear_requests()
    again = fetch(imitation, cache_dir)
    assert again.frame.equals(truth(imitation))
    assert again.report.sources == src(cache=1440)
    assert imitation.requests == []


def test_vision_member_of_another_symbol_is_refused(
    imitation: Any, cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    imitation.faults.vision_member_names = {UM_ZIP: "ETHUSDT-1m-2024-01-03.csv"}
    with caplog.at_level("INFO", logger="nautilus_dsm.dsm"):
        result = fetch(imitation, cache_dir)
    assert result.frame.equals(truth(imitation))
    assert result.report.sources == src(rest=1440)
    assert "holds ETHUSDT-1m-2024-01-03.csv, not BTCUSDT-1m-2024-01-03.csv" in caplog.text


def test_vision_monthly_failing_validation_falls_to_daily_files(
    imitation: Any, cache_dir: Path
) -> None:
    monthly = "BTCUSDT-1m-2024-01.csv"
    imitation.faults.vision_csv_rewrite = rewrite_csv(
        monthly, lambda csv: blank_field(csv, JAN3_0005, 4)
    )
    result = fast_dsm(imitation, cache_dir).fetch_sync(
        PERP, "1m", at(1), datetime(2024, 2, 1, tzinfo=UTC)
    )
    assert result.frame.equals(truth(imitation, start=T0, end=T0 + 31 * DAY))
    assert result.report.sources == src(vision=31 * 1440)
    assert zip_downloads(imitation, "BTCUSDT-1m-2024-01.zip") == 1
    assert zip_downloads(imitation, UM_ZIP) == 1


def test_vision_and_rest_both_bad_is_data_unavailable_and_nothing_cached(
    imitation: Any, cache_dir: Path
) -> None:
    imitation.faults.vision_csv_rewrite = rewrite_csv(
        UM_CSV, lambda csv: blank_field(csv, JAN3_0005, 2)
    )
    imitation.faults.rest_rewrite = rewrite_row(JAN3_0005, set_field(2, ""))
    with pytest.raises(DataUnavailable) as info:
        fetch(imitation, cache_dir)
    assert "2024-01-03 (REST: " in str(info.value)
    assert "field 'high' is empty at 2024-01-03T00:05:00Z" in str(info.value)
    assert cached_days(cache_dir) == []


# --------------------------------------------------------------------------------------------
# REST: a page that fails validation is retried, then the period is unavailable
# --------------------------------------------------------------------------------------------


REST_REFUSED: dict[str, tuple[Callable[[list[Any]], list[Any]], str]] = {
    "price abc": (
        set_field(2, "abc"),
        "field 'high' is not a number: 'abc' at 2024-01-03T00:05:00Z",
    ),
    "empty volume": (set_field(5, ""), "field 'volume' is empty at 2024-01-03T00:05:00Z"),
    "null price": (set_field(4, None), "field 'close' is null at 2024-01-03T00:05:00Z"),
    "price as a JSON number": (
        set_field(1, 1.5),
        "field 'open' has the wrong type (expected `str`, got `float`) at 2024-01-03T00:05:00Z",
    ),
    "trades as a string": (
        set_field(8, "12"),
        "field 'trades' has the wrong type (expected `int`, got `str`) at 2024-01-03T00:05:00Z",
    ),
    "11 fields": (lambda row: row[:11], "has 11 fields; Binance sends 12"),
    "13 fields": (lambda row: [*row, "x"], "has 13 fields; Binance sends 12"),
    "1h close time for 1m": (
        lambda row: [*row[:6], row[0] + HOUR - 1, *row[7:]],
        "close_time - open_time + 1 is 3600000 ms, not the 1m interval's 60000 ms",
    ),
    "off-grid open time": (
        lambda row: [row[0] + 1, *row[1:6], row[6] + 1, *row[7:]],
        "is not on the 1m grid",
    ),
}


@pytest.mark.parametrize("case", list(REST_REFUSED))
def test_rest_page_failing_validation_is_unavailable_named_and_never_cached(
    imitation: Any, cache_dir: Path, case: str
) -> None:
    change, message = REST_REFUSED[case]
    imitation.faults.rest_rewrite = rewrite_row(JAN3_0005, change)
    with pytest.raises(DataUnavailable) as info:
        fetch(imitation, cache_dir, use_vision=False)
    text = str(info.value)
    assert "2024-01-03 (REST: " in text
    assert message in text, text
    assert f"after {REST_TRIES} tries" in text
    assert "2024-01-03T00:05:00" in text  # the open time of the offending row
    first_page = [s for s in klines_requests(imitation) if s == JAN3]
    assert len(first_page) == REST_TRIES  # retried like a garbled body, then refused
    assert cached_days(cache_dir) == []
    imitation.faults.reset()
    again = fetch(imitation, cache_dir, use_vision=False)
    assert again.frame.equals(truth(imitation))
    assert again.report.sources == src(rest=1440)


async def test_rest_client_raises_invalid_response_with_the_open_times(imitation: Any) -> None:
    imitation.faults.rest_rewrite = rewrite_row(JAN3_0005, set_field(3, "abc"))
    client = BinanceRestClient(UM, imitation.url, max_retries=2, backoff_base_s=0.001)
    try:
        with pytest.raises(InvalidResponse) as info:
            await client.klines("BTCUSDT", "1m", JAN3, JAN3 + HOUR)
    finally:
        await client.aclose()
    assert info.value.open_times_ms == (JAN3_0005,)
    assert str(info.value) == (
        "Binance FUTURES_USDT REST /fapi/v1/klines BTCUSDT 1m "
        "2024-01-03T00:00:00Z..2024-01-03T01:00:00Z: 1 of 60 rows fail validation: "
        "field 'low' is not a number: 'abc' at 2024-01-03T00:05:00Z; the answer is refused "
        "(after 2 tries)"
    )


async def test_rest_rows_outside_the_page_are_refused(imitation: Any) -> None:
    # A page answered with the next day's rows: refused, not trimmed into an empty day.
    imitation.faults.rest_rewrite = lambda path, query, rows: [
        [row[0] + DAY, *row[1:6], row[6] + DAY, *row[7:]] for row in rows
    ]
    client = BinanceRestClient(UM, imitation.url, max_retries=1)
    try:
        with pytest.raises(InvalidResponse) as info:
            await client.klines("BTCUSDT", "1m", JAN3, JAN3 + HOUR)
    finally:
        await client.aclose()
    assert "60 of 60 rows fail validation: opens outside the requested period" in str(info.value)
    assert info.value.open_times_ms == tuple(range(JAN3 + DAY, JAN3 + DAY + HOUR, MIN))


async def test_rest_first_bar_probe_is_validated(imitation: Any) -> None:
    imitation.faults.rest_rewrite = lambda path, query, rows: [set_field(7, None)(r) for r in rows]
    client = BinanceRestClient(UM, imitation.url, max_retries=1)
    try:
        with pytest.raises(
            InvalidResponse, match="field 'quote_volume' is null at 2020-01-01T00:00:00Z"
        ):
            await client.first_open_time("BTCUSDT", "1m", 0)
    finally:
        await client.aclose()


def test_rest_high_below_low_is_the_exchanges_data_not_a_failure(
    imitation: Any, cache_dir: Path
) -> None:
    # OHLC-insane rows are reported and skipped downstream, not a structural failure.
    imitation.faults.rest_rewrite = rewrite_row(JAN3_0005, set_field(2, "1.00"))
    result = fetch(imitation, cache_dir, use_vision=False, on_low_quality="warn")
    assert result.frame.height == 1440
    row = result.frame.filter(pl.col("open_time") == at(3, 0, 5)).row(0, named=True)
    assert row["high"] == Decimal("1.00")
    assert result.report.sources == src(rest=1440)
