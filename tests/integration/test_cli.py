"""The ``nautilus-dsm`` command line against the local Binance imitation: exit codes, files."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import click
import polars as pl
import pytest
from click.testing import CliRunner, Result
from nautilus_trader.model.data import Bar
from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

from nautilus_dsm.cli import cli
from nautilus_dsm.cli.options import REQUEST_BOUNDS, SHARED_OPTIONS, SOURCE_OPTIONS
from nautilus_dsm.common import MarketType, to_ms

INSTRUMENT = "BTCUSDT-PERP.BINANCE"
D0 = to_ms(datetime(2024, 1, 1, tzinfo=UTC))
HOUR = 3_600_000
RANGE = ["--start", "2024-01-01", "--end", "2024-01-03"]


def _sources(srv: object, cache_dir: Path) -> list[str]:
    url = srv.url  # type: ignore[attr-defined]
    return ["--base-url-http", url, "--base-url-vision", url, "--cache-dir", str(cache_dir)]


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _fetch_args(srv: object, cache_dir: Path, out: Path, *extra: str) -> list[str]:
    return [
        "fetch",
        INSTRUMENT,
        "--interval",
        "1m",
        *RANGE,
        *_sources(srv, cache_dir),
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]


# -- fetch -------------------------------------------------------------------------------------


def test_fetch_writes_the_exact_bars_and_the_report(
    imitation: object, cache_dir: Path, tmp_path: Path
) -> None:
    out, report = tmp_path / "out" / "btc.parquet", tmp_path / "report.json"

    result = _invoke(*_fetch_args(imitation, cache_dir, out, "--report", str(report)))

    assert result.exit_code == 0
    assert result.stderr == ""
    assert result.stdout.splitlines() == [
        "BTCUSDT-PERP.BINANCE 1m 2024-01-01T00:00:00Z..2024-01-03T00:00:00Z: 2880/2880 bars "
        "(100.00%); sources vision=2880; cache hits 0/2",
        f"wrote 2880 bars to {out}",
    ]
    expected = imitation.expected(MarketType.FUTURES_USDT, "BTCUSDT", "1m", D0, D0 + 48 * HOUR)
    assert pl.read_parquet(out).equals(expected)
    payload = json.loads(report.read_text())
    assert payload["bars"] == 2880
    assert payload["expected_bars"] == 2880
    assert payload["completeness"] == 1.0
    assert payload["gaps"] == []
    assert payload["sources"] == {"cache": 0, "vision": 2880, "rest": 0, "synthetic": 0}
    assert payload["market_type"] == "futures_usdt"


@pytest.mark.parametrize(
    ("replace", "extra", "message"),
    [
        (
            ("2024-01-01", "2024-13-01"),
            (),
            "--start '2024-13-01' is not a date; use a UTC date like 2024-01-01 "
            "or an ISO datetime like 2024-01-01T12:00:00Z",
        ),
        (
            None,
            ("--market-type", "spot"),
            "BTCUSDT-PERP.BINANCE is a USDT-margined futures instrument, but market type "
            "SPOT was requested; use MarketType.FUTURES_USDT (--market-type futures_usdt) or leave it unset, "
            "or use the spot instrument id (e.g. BTCUSDT.BINANCE)",
        ),
        (
            ("2024-01-03", "2023-12-31T23:00:00+01:00"),
            (),
            "start 2024-01-01T00:00:00+00:00 is not before end 2023-12-31T22:00:00+00:00; "
            "the range is [start, end), so pass an end after the start",
        ),
        (
            ("1m", "1s"),
            (),
            "interval 1s is served on SPOT only, not FUTURES_USDT; "
            "use 1m or a longer interval for futures",
        ),
    ],
    ids=["invalid-date", "market-type-mismatch", "reversed-range", "spot-only-interval"],
)
def test_fetch_invalid_input_exits_2_with_one_line_before_any_io(
    imitation: object,
    cache_dir: Path,
    tmp_path: Path,
    replace: tuple[str, str] | None,
    extra: tuple[str, ...],
    message: str,
) -> None:
    args = _fetch_args(imitation, cache_dir, tmp_path / "x.parquet", *extra)
    if replace is not None:
        args[args.index(replace[0])] = replace[1]

    result = _invoke(*args)

    assert result.exit_code == 2
    assert result.stderr == f"error: {message}\n"
    assert imitation.requests == []
    assert not (tmp_path / "x.parquet").exists()


def test_fetch_unknown_market_type_is_a_usage_error_2(
    imitation: object, cache_dir: Path, tmp_path: Path
) -> None:
    args = _fetch_args(imitation, cache_dir, tmp_path / "x.parquet", "--market-type", "options")

    result = _invoke(*args)

    assert result.exit_code == 2
    assert "Invalid value for '--market-type': 'options' is not one of" in result.stderr
    assert imitation.requests == []


def test_fetch_below_threshold_exits_3_and_still_writes_data_and_report(
    imitation: object, cache_dir: Path, tmp_path: Path
) -> None:
    imitation.faults.gaps.append(("BTCUSDT", D0 + 12 * HOUR, D0 + 18 * HOUR))
    out, report = tmp_path / "btc.parquet", tmp_path / "report.json"

    result = _invoke(*_fetch_args(imitation, cache_dir, out, "--report", str(report)))

    assert result.exit_code == 3
    assert result.stderr == (
        "quality below threshold: BTCUSDT-PERP.BINANCE 1m completeness 87.50% (2520 of 2880 "
        f"bars, 1 gap(s)) < --min-completeness 95.00%; data written to {out} and report to "
        f"{report}; pass --min-completeness 0.875 to accept it\n"
    )
    assert pl.read_parquet(out).height == 2520
    payload = json.loads(report.read_text())
    assert payload["bars"] == 2520
    assert payload["expected_bars"] == 2880
    assert payload["completeness"] == 0.875
    assert payload["gaps"] == [
        {
            "start": "2024-01-01T12:00:00Z",
            "end": "2024-01-01T18:00:00Z",
            "missing": 360,
            "confirmed_by": ["rest", "vision"],  # both sources lack these bars
        }
    ]


def test_fetch_accepts_lower_min_completeness(
    imitation: object, cache_dir: Path, tmp_path: Path
) -> None:
    imitation.faults.gaps.append(("BTCUSDT", D0 + 12 * HOUR, D0 + 18 * HOUR))
    out = tmp_path / "btc.parquet"

    result = _invoke(*_fetch_args(imitation, cache_dir, out, "--min-completeness", "0.875"))

    assert result.exit_code == 0
    assert result.stderr == ""
    assert pl.read_parquet(out).height == 2520


def test_fetch_out_under_a_file_exits_2_before_any_io(
    imitation: object, cache_dir: Path, tmp_path: Path
) -> None:
    # Was exit 1 with a raw FileExistsError after the download; now refused before any I/O.
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    out = blocker / "btc.parquet"

    result = _invoke(*_fetch_args(imitation, cache_dir, out))

    assert result.exit_code == 2
    assert result.stderr == f"error: --out '{out}': '{blocker}' is a file, not a directory\n"
    assert imitation.requests == []


# -- real subprocess ---------------------------------------------------------------------------


def _subprocess(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nautilus_dsm.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_subprocess_fetch_exits_0_and_writes_bars(
    imitation: object, cache_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "btc.parquet"

    proc = _subprocess(*_fetch_args(imitation, cache_dir, out))

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == f"wrote 2880 bars to {out}"
    assert proc.stderr == ""
    assert pl.read_parquet(out).height == 2880


def test_subprocess_invalid_input_exits_2_with_one_stderr_line(tmp_path: Path) -> None:
    proc = _subprocess(
        "fetch",
        "BTC/USDT",
        "--interval",
        "1m",
        *RANGE,
        "--out",
        str(tmp_path / "x.parquet"),
        "--no-progress",
    )

    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == (
        "error: invalid symbol 'BTC/USDT': Binance symbols are upper-case letters and digits "
        "(e.g. BTCUSDT, BTCUSD_PERP, or the Nautilus id BTCUSDT-PERP.BINANCE)\n"
    )


def test_subprocess_quality_below_threshold_exits_3(
    imitation: object, cache_dir: Path, tmp_path: Path
) -> None:
    imitation.faults.gaps.append(("BTCUSDT", D0, D0 + 12 * HOUR))
    out = tmp_path / "btc.parquet"

    proc = _subprocess(*_fetch_args(imitation, cache_dir, out))

    assert proc.returncode == 3
    assert proc.stderr == (
        "quality below threshold: BTCUSDT-PERP.BINANCE 1m completeness 75.00% (2160 of 2880 "
        f"bars, 1 gap(s)) < --min-completeness 95.00%; data written to {out}; "
        "pass --min-completeness 0.75 to accept it\n"
    )
    assert pl.read_parquet(out).height == 2160


_NAUTILUS_FREE = """
import json, sys
from click.testing import CliRunner
from nautilus_dsm.cli import cli
codes = [CliRunner().invoke(cli, args).exit_code for args in json.loads(sys.argv[1])]
print(json.dumps({"codes": codes, "nautilus": sorted(m for m in sys.modules if m.startswith("nautilus_trader"))}))
"""


def test_fetch_and_cache_import_no_nautilus_trader(
    imitation: object, cache_dir: Path, tmp_path: Path
) -> None:
    # A fresh interpreter: the CLI, --help and the Nautilus-free commands, then sys.modules.
    runs = [
        ["--help"],
        ["fetch", "--help"],
        _fetch_args(imitation, cache_dir, tmp_path / "btc.parquet"),
        ["quality", "--help"],
        ["cache", "info", "--cache-dir", str(cache_dir)],
        ["cache", "clear", "--cache-dir", str(cache_dir), "--yes"],
    ]

    proc = subprocess.run(
        [sys.executable, "-c", _NAUTILUS_FREE, json.dumps(runs)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == {"codes": [0] * 6, "nautilus": []}
    assert pl.read_parquet(tmp_path / "btc.parquet").height == 2880


# -- instruments, cache ------------------------------------------------------------------------


def test_instruments_lists_every_market(imitation: object, cache_dir: Path) -> None:
    result = _invoke("instruments", *_sources(imitation, cache_dir))

    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "id                    market        tick        step        price_prec  size_prec",
        "BTCUSDT.BINANCE       spot          0.01000000  0.00001000  8           8",
        "ETHUSDT.BINANCE       spot          0.01000000  0.00010000  8           8",
        "BTCUSDT-PERP.BINANCE  futures_usdt  0.10        0.001       2           3",
        "ETHUSDT-PERP.BINANCE  futures_usdt  0.01        0.001       2           3",
        "BTCUSD-PERP.BINANCE   futures_coin  0.1         1           1           0",
        "ETHUSD-PERP.BINANCE   futures_coin  0.01        1           2           0",
    ]


def test_instruments_of_one_market(imitation: object, cache_dir: Path) -> None:
    result = _invoke(
        "instruments", "--market-type", "futures_coin", *_sources(imitation, cache_dir)
    )

    assert result.exit_code == 0
    assert [line.split()[0] for line in result.stdout.splitlines()] == [
        "id",
        "BTCUSD-PERP.BINANCE",
        "ETHUSD-PERP.BINANCE",
    ]


def test_cache_info_and_clear(imitation: object, cache_dir: Path, tmp_path: Path) -> None:
    assert _invoke(*_fetch_args(imitation, cache_dir, tmp_path / "x.parquet")).exit_code == 0

    info = _invoke("cache", "info", "--cache-dir", str(cache_dir), "--json")
    declined = CliRunner().invoke(
        cli, ["cache", "clear", "--cache-dir", str(cache_dir)], input="n\n"
    )
    cleared = _invoke(
        "cache", "clear", "--cache-dir", str(cache_dir), "--symbol", INSTRUMENT, "--yes"
    )
    after = _invoke("cache", "info", "--cache-dir", str(cache_dir), "--json")

    assert info.exit_code == 0
    entries = json.loads(info.stdout)["entries"]
    assert [(e["market"], e["symbol"], e["interval"], e["files"]) for e in entries] == [
        ("futures_usdt", "BTCUSDT", "1m", 2)
    ]
    # Issue 14: declining is no failure (exit 0, "nothing deleted"); clear prints its plan.
    assert declined.exit_code == 0
    assert declined.stdout.splitlines()[-1] == "nothing deleted"
    assert cleared.exit_code == 0
    assert cleared.stdout.splitlines()[-1] == (
        f"removed 2 cached file(s) of futures_usdt / BTCUSDT / every interval from {cache_dir}"
    )
    assert json.loads(after.stdout)["files"] == 0


# -- ingest, quality -----------------------------------------------------------------------------


def test_ingest_writes_the_catalog_and_a_rerun_adds_nothing(
    imitation: object, cache_dir: Path, tmp_path: Path
) -> None:
    catalog_dir = tmp_path / "catalog"
    args = [
        "ingest",
        INSTRUMENT,
        "--interval",
        "1m",
        "--interval",
        "1h",
        *RANGE,
        "--catalog",
        str(catalog_dir),
        "--chunk-days",
        "1",
        *_sources(imitation, cache_dir),
        "--no-progress",
        "--json",
    ]

    first = _invoke(*args)
    second = _invoke(*args)

    assert first.exit_code == 0, first.stderr
    assert json.loads(first.stdout)["bars_written"] == {
        "BTCUSDT-PERP.BINANCE-1-MINUTE-LAST-EXTERNAL": 2880,
        "BTCUSDT-PERP.BINANCE-1-HOUR-LAST-EXTERNAL": 48,
    }
    assert second.exit_code == 0, second.stderr
    report = json.loads(second.stdout)
    assert report["total_bars"] == 0
    assert [(s["bar_type"], s["start"], s["end"]) for s in report["skipped"]] == [
        (
            "BTCUSDT-PERP.BINANCE-1-MINUTE-LAST-EXTERNAL",
            "2024-01-01T00:00:00+00:00",
            "2024-01-03T00:00:00+00:00",
        ),
        (
            "BTCUSDT-PERP.BINANCE-1-HOUR-LAST-EXTERNAL",
            "2024-01-01T00:00:00+00:00",
            "2024-01-03T00:00:00+00:00",
        ),
    ]
    catalog = ParquetDataCatalog(str(catalog_dir))
    assert len(catalog.bars(["BTCUSDT-PERP.BINANCE-1-MINUTE-LAST-EXTERNAL"])) == 2880
    assert len(catalog.bars(["BTCUSDT-PERP.BINANCE-1-HOUR-LAST-EXTERNAL"])) == 48
    # One file per fixed grid cell (a UTC month for 1m), not per --chunk-days chunk.
    assert len(catalog.get_intervals(Bar, "BTCUSDT-PERP.BINANCE-1-MINUTE-LAST-EXTERNAL")) == 1


def test_ingest_below_threshold_exits_3_keeping_earlier_chunks(
    imitation: object, cache_dir: Path, tmp_path: Path
) -> None:
    imitation.faults.gaps.append(("BTCUSDT", D0 + 24 * HOUR, D0 + 36 * HOUR))
    catalog_dir = tmp_path / "catalog"

    result = _invoke(
        "ingest",
        INSTRUMENT,
        "--interval",
        "1m",
        *RANGE,
        "--catalog",
        str(catalog_dir),
        "--chunk-days",
        "1",
        *_sources(imitation, cache_dir),
        "--no-progress",
    )

    assert result.exit_code == 3
    assert result.stderr == (
        "quality below threshold: BTCUSDT-PERP.BINANCE 1m completeness 50.00% (720 of 1440 "
        f"bars, 1 gap(s)) < --min-completeness 95.00%; data written to {catalog_dir}; pass "
        "--min-completeness 0.5 to accept it (chunks before it are in the catalog; a re-run "
        "resumes there)\n"
    )
    catalog = ParquetDataCatalog(str(catalog_dir))
    assert len(catalog.bars(["BTCUSDT-PERP.BINANCE-1-MINUTE-LAST-EXTERNAL"])) == 1440


def test_quality_table_flags_the_seed_thresholds(imitation: object, cache_dir: Path) -> None:
    args = ["quality", INSTRUMENT, "--interval", "1m", *RANGE, *_sources(imitation, cache_dir)]

    first = _invoke(*args, "--no-progress")
    second = _invoke(*args, "--no-progress", "--json")

    assert first.exit_code == 0
    lines = first.stdout.splitlines()
    # Issue 14: a first fetch finds a cold cache (no alert, a note); the timings are explained.
    assert re.fullmatch(
        r"  timings: [0-9.]+ s wall; summed over concurrent calls: cache [0-9.]+ s, "
        r"vision [0-9.]+ s, rest [0-9.]+ s \(one can exceed the wall time\)",
        lines.pop(),
    )
    assert lines == [
        "BTCUSDT-PERP.BINANCE 1m 2024-01-01T00:00:00Z..2024-01-03T00:00:00Z",
        "  completeness          100.00%  (alert < 95%)  ok",
        "  bars / expected   2880 / 2880",
        "  missing bars                0",
        "  gaps                        0",
        "  bar success rate      100.00%  (alert < 90%)  ok",
        "  cache hit rate          0.00%",
        "  sources           vision=2880",
        "  ohlc violations             0",
        "  note: cold cache (none of the 2 closed period(s) was cached before this fetch); the "
        "cache hit rate alert (< 60%) applies once it is warm",
    ]
    assert second.exit_code == 0
    payload = json.loads(second.stdout)
    assert payload["cache_hit_rate"] == 1.0
    assert payload["bar_success_rate"] == 1.0
    assert payload["alerts"] == []


def test_quality_below_threshold_exits_3(imitation: object, cache_dir: Path) -> None:
    imitation.faults.gaps.append(("BTCUSDT", D0, D0 + 6 * HOUR))

    result = _invoke(
        "quality",
        INSTRUMENT,
        "--interval",
        "1m",
        *RANGE,
        *_sources(imitation, cache_dir),
        "--no-progress",
        "--json",
    )

    assert result.exit_code == 3
    payload = json.loads(result.stdout)
    assert payload["bars"] == 2520
    assert payload["alerts"] == ["completeness"]  # issue 14: a cold cache raises no alert
    assert payload["cache_cold"] is True
    assert result.stderr == (
        "quality below threshold: BTCUSDT-PERP.BINANCE 1m completeness 87.50% (2520 of 2880 "
        "bars, 1 gap(s)) < --min-completeness 95.00%; pass --min-completeness 0.875 to accept it\n"
    )


@pytest.mark.parametrize("command", ["fetch", "ingest", "quality", "instruments", "cache", "demo"])
def test_help_of_every_command(command: str) -> None:
    result = _invoke(command, "--help")

    assert result.exit_code == 0
    assert result.stdout.startswith(f"Usage: cli {command} [OPTIONS]")


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found = []
    for name, command in sorted(group.commands.items()):
        found.append((f"{prefix}{name}", command))
        if isinstance(command, click.Group):
            found += _commands(command, f"{prefix}{name} ")
    return found


def test_every_option_has_help_text() -> None:
    missing = [
        f"{name} {param.opts[0]}"
        for name, command in _commands(cli)
        for param in command.params
        if isinstance(param, click.Option) and not param.help
    ]

    assert missing == []


@pytest.mark.parametrize(
    ("command", "shared"),
    [
        ("fetch", SHARED_OPTIONS),
        ("ingest", SHARED_OPTIONS),
        ("quality", SHARED_OPTIONS),
        ("instruments", (*SOURCE_OPTIONS, *REQUEST_BOUNDS)),
        ("cache info", SOURCE_OPTIONS),
        ("cache clear", SOURCE_OPTIONS),
        ("demo", (*REQUEST_BOUNDS, "--no-progress")),
    ],
)
def test_the_shared_options_of_each_command(command: str, shared: tuple[str, ...]) -> None:
    params = dict(_commands(cli))[command].params
    flags = [p.opts[0] for p in params if p.opts[0] in SHARED_OPTIONS]

    assert flags == [f for f in SHARED_OPTIONS if f in shared]


def test_overridden_endpoints_without_cache_dir_never_touch_binance_default_cache(
    imitation: object, tmp_path: Path
) -> None:
    # The session points XDG_CACHE_HOME at a temp dir (tests/conftest.py).
    from nautilus_dsm.dsm.cache_paths import default_cache_dir, endpoint_cache_dir

    urls = ["--base-url-http", imitation.url, "--base-url-vision", imitation.url]
    out = tmp_path / "bars.parquet"
    fetched = _invoke(
        "fetch", INSTRUMENT, "--interval", "1m", *RANGE, *urls, "--out", str(out), "--no-progress"
    )
    info = _invoke("cache", "info", *urls, "--json")
    default_info = _invoke("cache", "info", "--json")

    assert fetched.exit_code == 0, fetched.output
    root = endpoint_cache_dir(imitation.url, imitation.url)
    assert root.parent == default_cache_dir() / "endpoints"
    assert json.loads(info.output)["root"] == str(root)
    assert json.loads(info.output)["files"] == 2
    assert json.loads(default_info.output)["files"] == 0
