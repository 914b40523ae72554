"""``nautilus-dsm ingest-universe``: refusals before any I/O, and one run into s3://."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from nautilus_dsm.catalog.storage import open_catalog
from nautilus_dsm.cli import cli
from tests.scale.conftest import BUCKET


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, ["ingest-universe", *args], catch_exceptions=False)


BASE = ("--universe", "futures_usdt", "--interval", "1h", "--start", "2024-01-01",
        "--end", "2024-02-01")  # fmt: skip


def test_a_storage_option_without_a_value_is_refused_before_any_io() -> None:
    result = invoke(*BASE, "--catalog", "s3://b/c", "--storage-option", "endpoint_url")
    assert result.exit_code == 2
    assert result.stderr == (
        "error: storage option 'endpoint_url' is not KEY=VALUE; pass e.g. "
        "--storage-option endpoint_url=http://127.0.0.1:9000\n"
    )


def test_a_bucketless_uri_is_refused() -> None:
    result = invoke(*BASE, "--catalog", "s3://")
    assert result.exit_code == 2
    assert result.stderr == "error: catalog 's3://' names no bucket; pass e.g. s3://bucket/prefix\n"


def test_workers_and_scheduler_together_are_refused(tmp_path: Path) -> None:
    result = invoke(*BASE, "--catalog", str(tmp_path), "--workers", "2",
                    "--scheduler", "tcp://127.0.0.1:8786")  # fmt: skip
    assert result.exit_code == 2
    assert (
        result.stderr == "error: pass one of workers, scheduler, client; got workers, scheduler\n"
    )


def test_an_unlisted_symbol_in_the_symbols_file_is_refused_naming_it(
    tmp_path: Path, universe_imitation: Any
) -> None:
    symbols = tmp_path / "symbols.txt"
    symbols.write_text("BTCUSDT  # the big one\nNOPEUSDT\n")
    result = invoke(*BASE, "--catalog", str(tmp_path / "cat"), "--symbols-file", str(symbols),
                    "--base-url-http", universe_imitation.url, "--workers", "1")  # fmt: skip
    assert result.exit_code == 2
    assert result.stderr == (
        "error: NOPEUSDT not listed on Binance futures_usdt (futures universes are perpetuals); "
        "fix the symbols file or pick the market\n"
    )


def test_the_selection_is_ingested_into_s3_on_a_running_cluster(
    tmp_path: Path, s3: Any, universe_imitation: Any, dask_client: Any
) -> None:
    symbols = tmp_path / "symbols.txt"
    symbols.write_text("BTCUSDT\nETHUSDT\nSOLUSDT\n")
    options = [f"--storage-option={k}={v}" for k, v in s3.storage_options.items()]
    result = invoke(
        *BASE, "--catalog", f"s3://{BUCKET}/cli", *options, "--symbols-file", str(symbols),
        "--exclude", "ETHUSDT", "--base-url-http", universe_imitation.url,
        "--base-url-vision", universe_imitation.url, "--cache-dir", str(tmp_path / "cache"),
        "--scheduler", dask_client.scheduler.address, "--json", "--no-progress",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["tasks"], report["done"], report["failed"], report["bars_written"]) == (
        2,
        2,
        0,
        2 * 744,
    )
    assert [(s["instrument_id"], s["bars"], s["completeness"]) for s in report["symbols"]] == [
        ("BTCUSDT-PERP.BINANCE", 744, 1.0),
        ("SOLUSDT-PERP.BINANCE", 744, 1.0),
    ]
    cat = open_catalog(f"s3://{BUCKET}/cli", s3.storage_options)
    assert len(cat.bars(["SOLUSDT-PERP.BINANCE-1-HOUR-LAST-EXTERNAL"])) == 744


def test_a_missing_bucket_is_refused_before_any_work(
    tmp_path: Path, s3: Any, universe_imitation: Any
) -> None:
    options = [f"--storage-option={k}={v}" for k, v in s3.storage_options.items()]
    result = invoke(*BASE, "--catalog", "s3://no-such-bucket/cat", *options,
                    "--base-url-http", universe_imitation.url, "--workers", "1")  # fmt: skip
    assert result.exit_code == 2
    assert result.stderr == (
        "error: bucket 'no-such-bucket' of catalog s3://no-such-bucket/cat does not exist or "
        "these credentials cannot see it; create it, or fix --storage-option / the AWS_* "
        "variables\n"
    )
