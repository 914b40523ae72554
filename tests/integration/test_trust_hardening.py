"""Trust, hardening (issue 9 follow-up): breaks an adversarial tester found after the trust work.

``cache clear`` never leaves the cache root through a symlinked top-level folder; an end in
year 9999 is capped like any end after now; CLI output paths that cannot be written are refused
(exit 2) before any I/O; a corrupt catalog file is quarantined and its range ingested again;
duplicate column names are refused as ``InvalidInput``. Every I/O path runs over real HTTP
against the local imitation.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner
from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

from nautilus_dsm.bars import bar_type_for, convert_frame, frame_to_bars
from nautilus_dsm.catalog import ingest
from nautilus_dsm.cli import cli
from nautilus_dsm.common import DataProvider, Interval, MarketType, to_ms
from nautilus_dsm.dsm.cache import KlineCache
from nautilus_dsm.dsm.manager import DataSourceManager
from nautilus_dsm.dsm.planner import period_of, periods_for
from nautilus_dsm.errors import InvalidInput

pytestmark = pytest.mark.timeout(60)

PERP = "BTCUSDT-PERP.BINANCE"
BAR_TYPE = "BTCUSDT-PERP.BINANCE-1-MINUTE-LAST-EXTERNAL"
UM = MarketType.FUTURES_USDT
START = datetime(2024, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
MIN_MS = 60_000
NS = 1_000_000


def _dsm(srv: Any, cache_dir: Path, **kwargs: Any) -> DataSourceManager:
    return DataSourceManager.create(
        DataProvider.BINANCE,
        base_url_http=srv.url,
        base_url_vision=srv.url,
        cache_dir=cache_dir,
        **kwargs,
    )


def _outside_files(outside: Path) -> list[str]:
    return sorted(str(p.relative_to(outside)) for p in outside.rglob("*") if p.is_file())


# -- 1. cache clear never follows a symlinked top-level folder ---------------------------------


def _linked_cache(tmp_path: Path) -> tuple[Path, Path]:
    """A cache root whose ``binance/`` and ``quarantine/`` are links to a cache-shaped tree."""
    outside, root = tmp_path / "outside", tmp_path / "root"
    (outside / "prov/futures_usdt/BTCUSDT/1m").mkdir(parents=True)
    (outside / "prov/futures_usdt/BTCUSDT/1m/2024-01-01.parquet").write_text("precious")
    (outside / "q/sub").mkdir(parents=True)
    (outside / "q/sub/important.txt").write_text("precious")
    (outside / "q/top.txt").write_text("precious")
    root.mkdir()
    os.symlink(outside / "prov", root / "binance")
    os.symlink(outside / "q", root / "quarantine")
    return outside, root


BEFORE = ["prov/futures_usdt/BTCUSDT/1m/2024-01-01.parquet", "q/sub/important.txt", "q/top.txt"]


def test_clear_and_info_never_follow_a_symlinked_provider_or_quarantine_folder(
    tmp_path: Path, caplog: Any
) -> None:
    outside, root = _linked_cache(tmp_path)
    cache = KlineCache(root)

    with caplog.at_level(logging.WARNING, logger="nautilus_dsm.dsm.cache_files"):
        info = cache.info()
        removed = cache.clear()

    assert (info["files"], info["quarantined"], info["entries"]) == (0, 0, [])
    assert removed == 0
    assert _outside_files(outside) == BEFORE
    assert (root / "binance").is_symlink() and (root / "quarantine").is_symlink()
    linked = [r.getMessage() for r in caplog.records if "is a symbolic link" in r.getMessage()]
    assert f"cache: {root / 'binance'} is a symbolic link; not followed" in linked[0]
    assert any(str(root / "quarantine") in m for m in linked)


def test_cli_cache_clear_leaves_files_behind_symlinked_top_level_folders(tmp_path: Path) -> None:
    outside, root = _linked_cache(tmp_path)

    proc = subprocess.run(
        [sys.executable, "-m", "nautilus_dsm.cli", "cache", "clear", "--yes",
         "--cache-dir", str(root)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert proc.returncode == 0
    # Issue 14: clear prints its plan; the links hide nothing to delete.
    assert proc.stdout == (
        f"nothing to delete: no cached file of every market / every symbol / every interval "
        f"under {root}\n"
    )
    assert "binance is a symbolic link; not followed" in proc.stderr
    assert _outside_files(outside) == BEFORE


# -- 2. an end in year 9999 --------------------------------------------------------------------


@pytest.mark.parametrize("interval", ["1d", "3d", "1w", "1M"])
def test_period_arithmetic_reaches_the_end_of_year_9999(interval: str) -> None:
    iv = Interval.parse(interval)
    last = to_ms(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC))
    period = period_of(iv, last)
    assert (period.start_ms, period.end_ms) == (
        to_ms(datetime(9999, 1, 1, tzinfo=UTC)),
        to_ms(datetime(9999, 12, 31, tzinfo=UTC)) + 86_400_000,
    )
    spans = periods_for(iv, to_ms(datetime(9998, 6, 1, tzinfo=UTC)), last)
    assert [p.start_ms for p in spans] == [
        to_ms(datetime(9998, 1, 1, tzinfo=UTC)),
        to_ms(datetime(9999, 1, 1, tzinfo=UTC)),
    ]


@pytest.mark.parametrize("interval", ["1d", "3d", "1w", "1M"])
async def test_an_end_in_year_9999_is_capped_at_now(imitation: Any, tmp_path: Path,
                                                      interval: str) -> None:  # fmt: skip
    now = to_ms(datetime(2024, 3, 1, 12, tzinfo=UTC))
    iv = Interval.parse(interval)
    async with _dsm(imitation, tmp_path / "c", clock=lambda: now) as dsm:
        result = await dsm.fetch(PERP, interval, START, datetime(9999, 12, 31, tzinfo=UTC))
    stop = iv.floor_ms(now)
    expected = imitation.expected(UM, "BTCUSDT", iv, to_ms(START), stop)
    assert expected.height > 0
    assert result.frame.equals(expected)
    assert any(
        w.startswith("end 9999-12-31T00:00:00Z is after the last closed bar; capped at ")
        for w in result.report.warnings
    )


def test_cli_fetch_with_an_end_in_year_9999_exits_0(imitation: Any, tmp_path: Path) -> None:
    out = tmp_path / "bars.parquet"
    result = CliRunner().invoke(
        cli,
        ["fetch", PERP, "--interval", "1M", "--start", "2024-01-01", "--end", "9999-12-31",
         "--out", str(out), "--cache-dir", str(tmp_path / "c"), "--base-url-http", imitation.url,
         "--base-url-vision", imitation.url, "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "ValueError" not in result.output
    assert pl.read_parquet(out)["open_time"][0] == START


# -- 3 and 4. output paths refused before any I/O ----------------------------------------------


def _fetch_args(srv: Any, tmp_path: Path, *extra: str) -> list[str]:
    return ["fetch", PERP, "--interval", "1h", "--start", "2024-01-01", "--end", "2024-01-02",
            "--base-url-http", srv.url, "--base-url-vision", srv.url, "--no-progress",
            *extra]  # fmt: skip


def test_cli_report_equal_to_out_exits_2_before_any_io(imitation: Any, tmp_path: Path) -> None:
    out = tmp_path / "b.parquet"
    result = CliRunner().invoke(
        cli,
        _fetch_args(
            imitation,
            tmp_path,
            "--out",
            str(out),
            "--report",
            str(out),
            "--cache-dir",
            str(tmp_path / "c"),
        ),
    )
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: --report '{out}' is the --out file; the report would replace the bars, so name "
        "another file, e.g. report.json\n"
    )
    assert imitation.requests == []
    assert not out.exists()


def test_cli_report_under_a_file_exits_2_before_any_io(imitation: Any, tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    out = tmp_path / "a.parquet"
    result = CliRunner().invoke(
        cli,
        _fetch_args(
            imitation,
            tmp_path,
            "--out",
            str(out),
            "--report",
            str(afile / "r.json"),
            "--cache-dir",
            str(tmp_path / "c"),
        ),
    )
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: --report '{afile / 'r.json'}': '{afile}' is a file, not a directory\n"
    )
    assert imitation.requests == []
    assert not out.exists()


def test_cli_cache_dir_under_a_file_exits_2_before_any_io(imitation: Any, tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    out = tmp_path / "a.parquet"
    result = CliRunner().invoke(
        cli,
        _fetch_args(imitation, tmp_path, "--out", str(out), "--cache-dir", str(afile / "sub")),
    )
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: --cache-dir '{afile / 'sub'}': '{afile}' is a file, not a directory\n"
    )
    assert imitation.requests == []
    assert not out.exists()


@pytest.mark.parametrize("where", ["is", "under", "cache-under"])
def test_cli_ingest_catalog_or_cache_at_a_file_exits_2_before_any_io(
    imitation: Any, tmp_path: Path, where: str
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    catalog = {"is": afile, "under": afile / "cat", "cache-under": tmp_path / "cat"}[where]
    cache = afile / "sub" if where == "cache-under" else tmp_path / "c"
    result = CliRunner().invoke(
        cli,
        ["ingest", PERP, "--interval", "1h", "--start", "2024-01-01", "--end", "2024-01-02",
         "--catalog", str(catalog), "--cache-dir", str(cache), "--base-url-http", imitation.url,
         "--base-url-vision", imitation.url, "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert (
        result.stderr
        == {
            "is": f"error: --catalog '{afile}' is a file, not a directory; name a directory\n",
            "under": f"error: --catalog '{afile / 'cat'}': '{afile}' is a file, not a directory\n",
            "cache-under": (
                f"error: --cache-dir '{afile / 'sub'}': '{afile}' is a file, not a directory\n"
            ),
        }[where]
    )
    assert imitation.requests == []
    assert afile.read_text() == "x"
    assert not (tmp_path / "cat").exists()


# -- 5. a corrupt catalog file -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        ("truncated", "Parquet magic bytes not found in footer"),  # a killed copy
        ("pages", "Corrupt snappy compressed data"),  # a disk fault: the footer still reads
    ],
)
def test_a_corrupt_catalog_file_is_quarantined_and_its_range_ingested_again(
    imitation: Any, cache_dir: Path, tmp_path: Path, caplog: Any, damage: str, why: str
) -> None:
    catalog = ParquetDataCatalog(str(tmp_path / "cat"))
    bars = Path(catalog.path) / "data" / "bar" / BAR_TYPE
    ingest(catalog, [PERP], ["1m"], START, START + 2 * DAY,
           dsm=_dsm(imitation, cache_dir), chunk=DAY)  # fmt: skip
    [broken] = sorted(bars.glob("*.parquet"))
    data = broken.read_bytes()
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data = data[:100] + b"\xab" * (len(data) // 2 - 100) + data[len(data) // 2 :]
    broken.write_bytes(data)
    imitation.clear_requests()

    with caplog.at_level(logging.WARNING, logger="nautilus_dsm.catalog"):
        report = ingest(catalog, [PERP], ["1m"], START, START + 4 * DAY,
                        dsm=_dsm(imitation, cache_dir), chunk=DAY)  # fmt: skip

    d0 = to_ms(START)
    ts = [b.ts_init for b in catalog.bars([BAR_TYPE])]
    assert ts == [(d0 + (i + 1) * MIN_MS) * NS for i in range(4 * 1440)]  # every bar once
    assert report.total_bars == 4 * 1440
    moved = Path(catalog.path) / "quarantine" / "bar" / BAR_TYPE / broken.name
    assert moved.read_bytes() == data
    assert [p.name for p in sorted(bars.glob("*.parquet"))] == [
        "2024-01-01T00-00-00-000000001Z_2024-01-05T00-00-00-000000000Z.parquet"
    ]
    [warning] = [r.getMessage() for r in caplog.records if "quarantined" in r.getMessage()]
    assert str(broken) in warning and str(moved) in warning and why in warning
    # The quarantined days came back from the cache; only the two new days were downloaded.
    assert {r.path.split("BTCUSDT-1m-")[1][:10] for r in imitation.requests
            if r.path.startswith("/data/")} == {"2024-01-03", "2024-01-04"}  # fmt: skip


# -- 6. duplicate column names -----------------------------------------------------------------


@pytest.mark.parametrize("fn", [frame_to_bars, convert_frame])
def test_a_pandas_frame_with_duplicate_columns_is_invalid_input(fn: Any) -> None:
    from tests.unit.test_bars import perpetual

    instrument = perpetual("BTCUSDT", "0.10", "0.001")
    bar_type = bar_type_for(str(instrument.id), "1m")
    times = [START + timedelta(minutes=i) for i in range(3)]
    frame = pl.DataFrame(
        {"open_time": times, "open": [100.1] * 3, "high": [101.0] * 3, "low": [99.0] * 3,
         "close": [100.5] * 3, "volume": [1.5] * 3, "extra": [1] * 3}
    ).to_pandas().rename(columns={"extra": "open"})  # fmt: skip

    with pytest.raises(InvalidInput) as info:
        fn(frame, bar_type, instrument)
    assert "duplicate column name(s) ['open']" in str(info.value)


def test_symlinked_market_and_symbol_folders_are_logged_and_skipped(
    tmp_path: Path, caplog: Any
) -> None:
    outside, root = tmp_path / "outside", tmp_path / "root"
    (outside / "BTCUSDT/1m").mkdir(parents=True)
    (outside / "BTCUSDT/1m/2024-01-01.parquet").write_text("precious")
    (root / "binance/futures_usdt").mkdir(parents=True)
    os.symlink(outside, root / "binance/spot")  # a market folder pointing outside
    os.symlink(outside / "BTCUSDT", root / "binance/futures_usdt/BTCUSDT")  # a symbol folder

    with caplog.at_level(logging.WARNING, logger="nautilus_dsm.dsm.cache_files"):
        assert KlineCache(root).info()["files"] == 0
        assert KlineCache(root).clear() == 0

    assert _outside_files(outside) == ["BTCUSDT/1m/2024-01-01.parquet"]
    linked = {r.getMessage() for r in caplog.records}
    assert f"cache: {root / 'binance/spot'} is a symbolic link; not followed" in linked
    assert f"cache: {root / 'binance/futures_usdt/BTCUSDT'} is a symbolic link; not followed" in (
        linked
    )
