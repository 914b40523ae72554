"""Reliability through the command line: bad input exits 2 before any I/O, a killed ingest resumes.

The bad-input matrix runs every case through ``fetch``, ``quality`` and ``ingest``: exit code 2,
exactly one line on stderr naming the input and the fix, nothing on stdout, no request to the
imitation (one, for a symbol only Binance can call unknown) and nothing written. The ingest case
kills a real ``nautilus-dsm ingest`` process with SIGKILL in the middle of its run and shows that
a re-run completes the catalog with every bar exactly once.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from nautilus_trader.model.data import Bar
from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

from nautilus_dsm.catalog import SkippedRange, ingest
from nautilus_dsm.cli import cli
from nautilus_dsm.common import DataProvider, MarketType, to_ms
from nautilus_dsm.dsm.manager import DataSourceManager

PERP = "BTCUSDT-PERP.BINANCE"
BAR_TYPE = "BTCUSDT-PERP.BINANCE-1-MINUTE-LAST-EXTERNAL"
START = datetime(2024, 1, 1, tzinfo=UTC)
D0 = to_ms(START)
DAY = timedelta(days=1)
DAY_MS = 86_400_000
NS = 1_000_000
_SYMBOL_HELP = "(e.g. BTCUSDT, BTCUSD_PERP, or the Nautilus id BTCUSDT-PERP.BINANCE)"
_RANGE_FIX = "the range is [start, end), so pass an end after the start"


def _sources(srv: Any, cache_dir: Path) -> list[str]:
    return ["--base-url-http", srv.url, "--base-url-vision", srv.url, "--cache-dir", str(cache_dir)]


def _command(command: str, instrument: str, tmp_path: Path) -> list[str]:
    if command == "fetch":
        return ["fetch", instrument, "--out", str(tmp_path / "out.parquet")]
    if command == "ingest":
        return ["ingest", instrument, "--catalog", str(tmp_path / "catalog")]
    return ["quality", instrument]


BAD_INPUT = [
    pytest.param(
        PERP,
        "1m",
        "2024-01-01",
        "2024-01-02",
        ["--market-type", "spot"],
        "BTCUSDT-PERP.BINANCE is a USDT-margined futures instrument, but market type SPOT was "
        "requested; use MarketType.FUTURES_USDT (--market-type futures_usdt) or leave it unset, or use the "
        "spot instrument id (e.g. BTCUSDT.BINANCE)",
        id="wrong-market-type",
    ),
    pytest.param(
        PERP,
        "1s",
        "2024-01-01",
        "2024-01-02",
        [],
        "interval 1s is served on SPOT only, not FUTURES_USDT; use 1m or a longer interval for "
        "futures",
        id="1s-on-futures",
    ),
    pytest.param(
        PERP,
        "2m",
        "2024-01-01",
        "2024-01-02",
        [],
        "unknown interval '2m'; Binance supports: 1s 1m 3m 5m 15m 30m 1h 2h 4h 6h 8h 12h 1d 3d "
        "1w 1M",
        id="unknown-interval",
    ),
    pytest.param(
        PERP,
        "1m",
        "2024-01-02",
        "2024-01-02T00:00:00Z",
        [],
        f"start 2024-01-02T00:00:00+00:00 is not before end 2024-01-02T00:00:00+00:00; {_RANGE_FIX}",
        id="start-equals-end",
    ),
    pytest.param(
        PERP,
        "1m",
        "2024-01-03",
        "2024-01-02",
        [],
        f"start 2024-01-03T00:00:00+00:00 is not before end 2024-01-02T00:00:00+00:00; {_RANGE_FIX}",
        id="start-after-end",
    ),
    pytest.param(
        PERP,
        "1m",
        "yesterday",
        "2024-01-02",
        [],
        "--start 'yesterday' is not a date; use a UTC date like 2024-01-01 or an ISO datetime "
        "like 2024-01-01T12:00:00Z",
        id="not-a-date",
    ),
    pytest.param(
        "../../etc/passwd-PERP.BINANCE",
        "1m",
        "2024-01-01",
        "2024-01-02",
        [],
        f"invalid symbol '../../etc/passwd-PERP.BINANCE': Binance symbols are upper-case letters "
        f"and digits {_SYMBOL_HELP}",
        id="path-in-instrument-id",
    ),
    pytest.param(
        "BTC/USDT",
        "1m",
        "2024-01-01",
        "2024-01-02",
        [],
        f"invalid symbol 'BTC/USDT': Binance symbols are upper-case letters and digits "
        f"{_SYMBOL_HELP}",
        id="slash-symbol",
    ),
]


@pytest.mark.parametrize("command", ["fetch", "quality", "ingest"])
@pytest.mark.parametrize(("instrument", "interval", "start", "end", "extra", "message"), BAD_INPUT)
def test_bad_input_exits_2_with_one_stderr_line_before_any_io(
    imitation: Any,
    cache_dir: Path,
    tmp_path: Path,
    command: str,
    instrument: str,
    interval: str,
    start: str,
    end: str,
    extra: list[str],
    message: str,
) -> None:
    args = [
        *_command(command, instrument, tmp_path),
        "--interval",
        interval,
        "--start",
        start,
        "--end",
        end,
        *_sources(imitation, cache_dir),
        "--no-progress",
        *extra,
    ]

    result = CliRunner().invoke(cli, args, catch_exceptions=False)

    assert result.exit_code == 2
    assert result.stderr == f"error: {message}\n"
    assert result.stdout == ""
    assert imitation.requests == []
    assert list(cache_dir.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]  # no output, no catalog


@pytest.mark.parametrize(
    ("command", "message", "path"),
    [
        (
            "fetch",
            "'NOPEUSDT' is not a Binance FUTURES_USDT symbol (/fapi/v1/klines answered -1121 "
            "'Invalid symbol.'); check the spelling and the market type (e.g. BTCUSDT on SPOT or "
            "FUTURES_USDT, BTCUSD_PERP on FUTURES_COIN)",
            "/fapi/v1/klines",
        ),
        (
            "ingest",
            "NOPEUSDT-PERP.BINANCE is not listed in Binance FUTURES_USDT exchangeInfo; check the "
            "symbol (e.g. BTCUSDT-PERP.BINANCE) and its market",
            "/fapi/v1/exchangeInfo",
        ),
    ],
)
def test_unknown_symbol_exits_2_after_exactly_one_request(
    imitation: Any, cache_dir: Path, tmp_path: Path, command: str, message: str, path: str
) -> None:
    args = [
        *_command(command, "NOPEUSDT-PERP.BINANCE", tmp_path),
        "--interval",
        "1m",
        "--start",
        "2024-01-01",
        "--end",
        "2024-01-08",
        *_sources(imitation, cache_dir),
        "--no-progress",
    ]

    result = CliRunner().invoke(cli, args, catch_exceptions=False)

    assert result.exit_code == 2
    assert result.stderr == f"error: {message}\n"
    assert [r.path for r in imitation.requests] == [path]
    assert not (tmp_path / "out.parquet").exists()
    assert not (tmp_path / "catalog" / "data").exists()


def test_subprocess_path_symbol_exits_2_with_one_stderr_line(
    imitation: Any, cache_dir: Path, tmp_path: Path
) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "nautilus_dsm.cli",
            "ingest",
            "../x",
            "--interval",
            "1m",
            "--start",
            "2024-01-01",
            "--end",
            "2024-01-02",
            "--catalog",
            str(tmp_path / "catalog"),
            *_sources(imitation, cache_dir),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == (
        "error: invalid symbol '../x': Binance symbols are upper-case letters and digits "
        "(e.g. BTCUSDT, BTCUSD_PERP, or the Nautilus id BTCUSDT-PERP.BINANCE)\n"
    )
    assert imitation.requests == []
    assert not (tmp_path / "catalog").exists()


# -- ingest killed midway ----------------------------------------------------------------------


def _day_file(day: int) -> str:
    start = (START + day * DAY).strftime("%Y-%m-%d")
    end = (START + (day + 1) * DAY).strftime("%Y-%m-%d")
    return f"{start}T00-00-00-000000001Z_{end}T00-00-00-000000000Z.parquet"


def test_ingest_killed_midway_then_rerun_gives_every_bar_exactly_once(
    imitation: Any, cache_dir: Path, tmp_path: Path
) -> None:
    days = 6
    catalog_dir = tmp_path / "catalog"
    bar_dir = catalog_dir / "data" / "bar" / BAR_TYPE
    imitation.faults.latency_s = 0.1  # ~0.2 s per daily chunk: the kill lands mid-run
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nautilus_dsm.cli",
            "ingest",
            PERP,
            "--interval",
            "1m",
            "--start",
            "2024-01-01",
            "--end",
            f"2024-01-0{1 + days}",
            "--catalog",
            str(catalog_dir),
            "--chunk-days",
            "1",
            *_sources(imitation, cache_dir),
            "--no-progress",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        # Watch for the first complete chunk file; there is no other signal from the child.
        while not (bar_dir.is_dir() and any(p.suffix == ".parquet" for p in bar_dir.iterdir())):
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    survived = sorted(p.name for p in bar_dir.iterdir() if p.suffix == ".parquet")
    done = len(survived)
    assert 1 <= done < days  # really interrupted
    assert survived == [_day_file(d) for d in range(done)]
    imitation.faults.latency_s = 0.0

    dsm = DataSourceManager.create(
        DataProvider.BINANCE,
        base_url_http=imitation.url,
        base_url_vision=imitation.url,
        cache_dir=cache_dir,
    )
    resumed = ingest(
        str(catalog_dir), [PERP], ["1m"], START, START + days * DAY, dsm=dsm, chunk=DAY
    )
    again = ingest(str(catalog_dir), [PERP], ["1m"], START, START + days * DAY, dsm=dsm, chunk=DAY)

    assert resumed.skipped == [SkippedRange(BAR_TYPE, START, START + done * DAY)]
    assert resumed.bars_written == {BAR_TYPE: (days - done) * 1440}
    assert resumed.instruments_written == []  # the killed run had written it
    assert again.bars_written == {BAR_TYPE: 0}
    # The chunk files of both runs are consolidated into the fixed grid's file (one UTC month).
    assert sorted(p.name for p in bar_dir.iterdir()) == [
        f"{START:%Y-%m-%d}T00-00-00-000000001Z_{START + days * DAY:%Y-%m-%d}T00-00-00-000000000Z.parquet"
    ]
    catalog = ParquetDataCatalog(str(catalog_dir))
    bars = catalog.bars([BAR_TYPE])
    assert [b.ts_init for b in bars] == [(D0 + (i + 1) * 60_000) * NS for i in range(days * 1440)]
    expected = imitation.expected(MarketType.FUTURES_USDT, "BTCUSDT", "1m", D0, D0 + days * DAY_MS)
    assert [str(b.close) for b in bars] == [f"{c:.2f}" for c in expected["close"].to_list()]
    intervals = sorted(catalog.get_intervals(Bar, BAR_TYPE))
    assert all(a[1] < b[0] for a, b in itertools.pairwise(intervals))
    assert [i.id.value for i in catalog.instruments()] == [PERP]
