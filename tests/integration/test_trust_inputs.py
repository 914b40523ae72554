"""Trust, inputs (issue 9, point 8): bad input fails before any I/O, over the real imitation.

Every refusal asserts the exact message and that the imitation received no data request (a
``/time`` request, which an exchange-time "now" may need, is not data). Accepted inputs
(aware datetimes, ISO-8601 strings with an offset) fetch exactly the imitation's bars.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

from nautilus_dsm.catalog import ingest
from nautilus_dsm.cli import cli
from nautilus_dsm.common import ACCEPTED_TIMES, DataProvider, Interval, MarketType, to_ms
from nautilus_dsm.config import DSMDataClientConfig
from nautilus_dsm.dsm.manager import DataSourceManager
from nautilus_dsm.errors import InvalidInput

PERP = "BTCUSDT-PERP.BINANCE"
UM = MarketType.FUTURES_USDT
JAN1 = datetime(2024, 1, 1, tzinfo=UTC)
T0 = to_ms(JAN1)
HOUR_MS = 3_600_000


def make_dsm(srv: Any, cache_dir: Path, **kwargs: Any) -> DataSourceManager:
    return DataSourceManager.create(
        DataProvider.BINANCE,
        base_url_http=srv.url,
        base_url_vision=srv.url,
        cache_dir=cache_dir,
        **kwargs,
    )


def data_requests(srv: Any) -> list[str]:
    """Paths of every request but the exchange-time probe (``/time``), which is not data."""
    return [r.path for r in srv.requests if not r.path.endswith("/time")]


def _sources(srv: Any, cache_dir: Path) -> list[str]:
    return ["--base-url-http", srv.url, "--base-url-vision", srv.url, "--cache-dir", str(cache_dir)]


# -- times --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("2024-01-01T00:00:00Z", "2024-01-01T02:00:00Z"),
        ("2024-01-01T02:00:00+02:00", "2024-01-01T04:00:00+02:00"),
        ("2023-12-31T19:00:00-05:00", JAN1 + timedelta(hours=2)),
    ],
)
async def test_fetch_accepts_iso_strings_with_an_offset(
    imitation: Any, cache_dir: Path, start: Any, end: Any
) -> None:
    async with make_dsm(imitation, cache_dir, use_vision=False) as dsm:
        result = await dsm.fetch(PERP, "1m", start, end)

    assert result.frame.height == 120
    assert result.frame.equals(
        imitation.expected(UM, "BTCUSDT", Interval.MINUTE_1, T0, T0 + 2 * HOUR_MS)
    )


def test_fetch_sync_accepts_an_iso_string(imitation: Any, cache_dir: Path) -> None:
    dsm = make_dsm(imitation, cache_dir, use_vision=False)

    result = dsm.fetch_sync(PERP, "1h", "2024-01-01T00:00:00Z", "2024-01-02T00:00:00+00:00")

    assert result.frame.height == 24
    assert result.frame.equals(
        imitation.expected(UM, "BTCUSDT", Interval.HOUR_1, T0, T0 + 24 * HOUR_MS)
    )


@pytest.mark.parametrize(
    ("start", "message"),
    [
        (
            datetime(2024, 1, 1),
            "naive datetime 2024-01-01T00:00:00 is ambiguous; pass a timezone-aware UTC "
            "datetime, e.g. datetime(2024, 1, 1, tzinfo=UTC), or an ISO-8601 string with an "
            "offset, e.g. '2024-01-01T00:00:00Z'",
        ),
        (
            "2024-01-01T00:00:00",
            "start '2024-01-01T00:00:00' has no UTC offset, so its time zone is ambiguous; "
            f"pass {ACCEPTED_TIMES}",
        ),
        (
            "next tuesday",
            f"start 'next tuesday' is not an ISO-8601 datetime; pass {ACCEPTED_TIMES}",
        ),
        (T0, f"start {T0} (int) is not a datetime; pass {ACCEPTED_TIMES}"),
        (
            date(2024, 1, 1),
            f"start datetime.date(2024, 1, 1) (date) is not a datetime; pass {ACCEPTED_TIMES}",
        ),
    ],
)
async def test_fetch_refuses_other_times_before_any_io(
    imitation: Any, cache_dir: Path, start: Any, message: str
) -> None:
    async with make_dsm(imitation, cache_dir) as dsm:
        with pytest.raises(InvalidInput) as info:
            await dsm.fetch(PERP, "1m", start, JAN1 + timedelta(days=1))

    assert str(info.value) == message
    assert data_requests(imitation) == []


def test_fetch_sync_refuses_a_naive_string_before_any_io(imitation: Any, cache_dir: Path) -> None:
    dsm = make_dsm(imitation, cache_dir)

    with pytest.raises(InvalidInput, match=r"^end '2024-01-02' has no UTC offset"):
        dsm.fetch_sync(PERP, "1m", JAN1, "2024-01-02")

    assert data_requests(imitation) == []


async def test_a_start_in_the_future_is_refused_before_any_io(
    imitation: Any, cache_dir: Path
) -> None:
    now = T0 + 10 * HOUR_MS + 123
    async with make_dsm(imitation, cache_dir, clock=lambda: now) as dsm:
        with pytest.raises(InvalidInput) as info:
            await dsm.fetch(PERP, "1m", JAN1 + timedelta(hours=11), JAN1 + timedelta(hours=12))
        # the start at "now" itself is not the future: nothing is closed there, nothing asked
        at_now = await dsm.fetch(PERP, "1m", JAN1 + timedelta(hours=10), JAN1 + timedelta(hours=12))

    assert str(info.value) == (
        "start 2024-01-01T11:00:00Z is in the future (now is 2024-01-01T10:00:00.123Z); only "
        "closed bars exist, so pass a start before now"
    )
    assert at_now.frame.height == 0
    assert [p for p in data_requests(imitation) if p.endswith("/klines")] == []


# -- base URLs ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base_url_http": "ftp://x"}, "base_url_http 'ftp://x' has scheme 'ftp'; "),
        ({"base_url_http": "127.0.0.1:8080"}, "base_url_http '127.0.0.1:8080' has no http:// "),
        ({"base_url_http": ""}, "base_url_http '' is not a URL; "),
        (
            {"base_url_vision": "data.binance.vision"},
            "base_url_vision 'data.binance.vision' has no",
        ),
        ({"base_url_vision": "http://"}, "base_url_vision 'http://' has no host; "),
    ],
)
def test_create_refuses_a_base_url_that_cannot_be_a_host(
    cache_dir: Path, kwargs: dict[str, str], message: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        DataSourceManager.create("binance", cache_dir=cache_dir, **kwargs)

    assert str(info.value).startswith(message)
    assert "e.g. https://api.binance.com or http://127.0.0.1:8080" in str(info.value)


def test_client_config_with_a_bad_base_url_fails_when_built(cache_dir: Path) -> None:
    # Refused by the config itself (its engine settings validate on construction), before a
    # node is even created.
    with pytest.raises(InvalidInput) as info:
        DSMDataClientConfig(base_url_http="ftp://x", cache_dir=str(cache_dir))

    assert str(info.value) == (
        "base_url_http 'ftp://x' has scheme 'ftp'; pass the scheme and host, e.g. "
        "https://api.binance.com or http://127.0.0.1:8080, or leave base_url_http unset for "
        "Binance"
    )


@pytest.mark.parametrize("command", ["fetch", "quality", "ingest"])
def test_cli_bad_base_url_exits_2_with_one_line(
    imitation: Any, cache_dir: Path, tmp_path: Path, command: str
) -> None:
    target = {
        "fetch": ["--out", str(tmp_path / "out.parquet")],
        "ingest": ["--catalog", str(tmp_path / "catalog")],
        "quality": [],
    }[command]
    args = [command, PERP, "--interval", "1m", "--start", "2024-01-01", "--end", "2024-01-02"]
    result = CliRunner().invoke(
        cli,
        [
            *args,
            *target,
            "--base-url-http",
            "ftp://x",
            "--base-url-vision",
            imitation.url,
            "--cache-dir",
            str(cache_dir),
            "--no-progress",
        ],
    )

    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (
        "error: base_url_http 'ftp://x' has scheme 'ftp'; pass the scheme and host, e.g. "
        "https://api.binance.com or http://127.0.0.1:8080, or leave base_url_http unset for "
        "Binance\n"
    )
    assert imitation.requests == []
    assert not (tmp_path / "out.parquet").exists()


# -- CLI: the future, --out ---------------------------------------------------------------------


@pytest.mark.parametrize("command", ["fetch", "quality", "ingest"])
def test_cli_start_in_the_future_exits_2_before_any_io(
    imitation: Any, cache_dir: Path, tmp_path: Path, command: str
) -> None:
    target = {
        "fetch": ["--out", str(tmp_path / "out.parquet")],
        "ingest": ["--catalog", str(tmp_path / "catalog")],
        "quality": [],
    }[command]
    start = (datetime.now(UTC) + timedelta(days=2)).date().isoformat()
    end = (datetime.now(UTC) + timedelta(days=3)).date().isoformat()
    result = CliRunner().invoke(
        cli,
        [
            command,
            PERP,
            "--interval",
            "1m",
            "--start",
            start,
            "--end",
            end,
            *target,
            *_sources(imitation, cache_dir),
            "--no-progress",
        ],
    )

    assert result.exit_code == 2
    assert result.stdout == ""
    line = result.stderr
    assert line.startswith(f"error: start {start}T00:00:00Z is in the future (now is ")
    assert line.endswith("only closed bars exist, so pass a start before now\n")
    assert line.count("\n") == 1
    assert imitation.requests == []
    assert not (tmp_path / "catalog").exists()


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("bars.csv", "has suffix '.csv'"),
        ("bars", "has no suffix"),
        ("bars.json", "has suffix '.json'"),
    ],
)
def test_cli_out_other_than_parquet_exits_2_before_any_io(
    imitation: Any, cache_dir: Path, tmp_path: Path, name: str, why: str
) -> None:
    out = tmp_path / name
    result = CliRunner().invoke(
        cli,
        [
            "fetch",
            PERP,
            "--interval",
            "1m",
            "--start",
            "2024-01-01",
            "--end",
            "2024-01-02",
            "--out",
            str(out),
            *_sources(imitation, cache_dir),
            "--no-progress",
        ],
    )

    assert result.exit_code == 2
    assert result.stdout == ""
    stem = name.split(".")[0]
    assert result.stderr == (
        f"error: --out '{out}' {why}; fetch writes Parquet, so name the file *.parquet, e.g. "
        f"{stem}.parquet\n"
    )
    assert imitation.requests == []
    assert not out.exists()


# -- row cap ------------------------------------------------------------------------------------


async def test_a_request_above_the_row_cap_is_refused_before_any_io(
    imitation: Any, cache_dir: Path
) -> None:
    async with make_dsm(imitation, cache_dir, max_rows=1000) as dsm:
        with pytest.raises(InvalidInput) as info:
            await dsm.fetch(PERP, "1m", JAN1, JAN1 + timedelta(days=1))
        assert data_requests(imitation) == []
        # the cap is per call too: raised for this fetch, the same request is served
        result = await dsm.fetch(PERP, "1m", JAN1, JAN1 + timedelta(days=1), max_rows=1440)

    assert str(info.value) == (
        "BTCUSDT-PERP.BINANCE 1m 2024-01-01T00:00:00Z..2024-01-02T00:00:00Z would be 1,440 bars "
        "in one frame, more than max_rows=1,000 (~0.0 GB); use ingest (`nautilus-dsm ingest` or "
        "nautilus_dsm.catalog.ingest), which streams the range in chunks, or narrow the range, "
        "or raise max_rows"
    )
    assert result.frame.height == 1440


async def test_the_row_cap_counts_only_bars_that_can_exist_by_now(
    imitation: Any, cache_dir: Path
) -> None:
    # An end far in the future is capped at now before counting: 1 h of closed bars fits.
    now = T0 + HOUR_MS
    async with make_dsm(imitation, cache_dir, max_rows=60, clock=lambda: now) as dsm:
        result = await dsm.fetch(PERP, "1m", JAN1, datetime(2100, 1, 1, tzinfo=UTC))

    assert result.frame.height == 60


def test_default_cap_refuses_two_years_of_1s_bars_before_any_io(
    imitation: Any, cache_dir: Path
) -> None:
    dsm = make_dsm(imitation, cache_dir, clock=lambda: T0 + 800 * 86_400_000)

    with pytest.raises(
        InvalidInput,
        match=r"would be 63,158,400 bars in one frame, more than "
        r"max_rows=50,000,000 \(~6\.3 GB\); use ingest",
    ):
        dsm.fetch_sync("BTCUSDT.BINANCE", "1s", JAN1, "2026-01-01T00:00:00Z")

    assert data_requests(imitation) == []


def test_ingest_streams_a_range_above_the_cap_in_chunks_below_it(
    imitation: Any, cache_dir: Path, tmp_path: Path
) -> None:
    # A manager capped at 1,000 rows: one fetch of the two days is refused, ingest's 12 h
    # chunks (720 bars each) are all served.
    dsm = make_dsm(imitation, cache_dir, max_rows=1000, use_vision=False)
    catalog = ParquetDataCatalog(str(tmp_path / "catalog"))
    with pytest.raises(InvalidInput, match="would be 2,880 bars in one frame"):
        dsm.fetch_sync(PERP, "1m", JAN1, JAN1 + timedelta(days=2))

    report = ingest(
        catalog,
        [PERP],
        ["1m"],
        JAN1,
        JAN1 + timedelta(days=2),
        dsm=dsm,
        chunk=timedelta(hours=12),
    )

    assert [c.bars for c in report.chunks] == [720, 720, 720, 720]
    bars = catalog.bars()
    assert len(bars) == 2880
    assert bars[0].ts_event == (T0 + 60_000) * 1_000_000


def test_ingest_refuses_a_string_time_as_invalid_input_not_a_raw_error(
    imitation: Any, cache_dir: Path, tmp_path: Path
) -> None:
    # ingest keeps start/end in its report as datetimes: a string is refused up front (it was
    # a raw AttributeError); fetch is the entry point that parses ISO strings.
    dsm = make_dsm(imitation, cache_dir)
    catalog = ParquetDataCatalog(str(tmp_path / "catalog"))

    with pytest.raises(InvalidInput) as info:
        ingest(catalog, [PERP], ["1m"], "2024-01-01T00:00:00Z", JAN1 + timedelta(days=1), dsm=dsm)

    assert str(info.value) == (
        "start '2024-01-01T00:00:00Z' (str) is not a datetime; pass a timezone-aware datetime, "
        "e.g. datetime(2024, 1, 1, tzinfo=UTC)"
    )
    assert imitation.requests == []


async def test_max_rows_knob_is_validated_at_create_and_per_call(
    imitation: Any, cache_dir: Path
) -> None:
    with pytest.raises(InvalidInput, match=r"^max_rows=0 is not a positive whole number"):
        make_dsm(imitation, cache_dir, max_rows=0)
    async with make_dsm(imitation, cache_dir) as dsm:
        with pytest.raises(InvalidInput, match=r"^max_rows=-5 is not a positive whole number"):
            await dsm.fetch(PERP, "1m", JAN1, JAN1 + timedelta(hours=1), max_rows=-5)

    assert data_requests(imitation) == []
