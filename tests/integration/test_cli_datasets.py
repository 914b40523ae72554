"""``--dataset`` on ``fetch``, ``quality`` and ``ingest`` against the imitation (exit codes, text)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner, Result
from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

from nautilus_dsm.cli import cli
from nautilus_dsm.common import Interval, MarketType, to_ms
from nautilus_dsm.common.datasets import Dataset

UM = MarketType.FUTURES_USDT


def _sources(srv, cache_dir: Path) -> list[str]:
    return ["--base-url-http", srv.url, "--base-url-vision", srv.url, "--cache-dir", str(cache_dir)]


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _ms(day: str) -> int:
    return to_ms(datetime.fromisoformat(day).replace(tzinfo=UTC))


def test_fetch_mark_klines(imitation, cache_dir, tmp_path):
    out = tmp_path / "mark.parquet"
    result = _invoke(
        "fetch", "BTCUSDT-PERP.BINANCE", "--interval", "1h", "--start", "2024-01-01",
        "--end", "2024-01-02", "--dataset", "mark", "--out", str(out),
        *_sources(imitation, cache_dir),
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == f"wrote 24 bars to {out}"
    expected = imitation.datasets.expected(
        UM,
        "BTCUSDT",
        Dataset.MARK_PRICE_KLINES,
        Interval.HOUR_1,
        _ms("2024-01-01"),
        _ms("2024-01-02"),
    )
    assert pl.read_parquet(out).equals(expected)


def test_fetch_funding_without_interval(imitation, cache_dir, tmp_path):
    out, report = tmp_path / "funding.parquet", tmp_path / "funding.json"
    result = _invoke(
        "fetch", "BTCUSDT-PERP.BINANCE", "--start", "2024-03-14", "--end", "2024-03-16",
        "--dataset", "funding", "--out", str(out), "--report", str(report),
        *_sources(imitation, cache_dir),
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "BTCUSDT-PERP.BINANCE funding 2024-03-14T00:00:00Z..2024-03-16T00:00:00Z: 9/9 events "
        "(100.00%), 0 gap(s), 1 interval change(s), 0 off-boundary",
        "  sources: cache 0, vision 9, rest 0; max calc_time offset 12 ms",
        "  interval change at 2024-03-15T04:00Z: 8 h -> 4 h",
        f"wrote 9 funding events to {out}",
    ]
    frame = pl.read_parquet(out)
    assert frame.get_column("funding_interval_hours").to_list() == [8, 8, 8, 8, 4, 4, 4, 4, 4]
    assert json.loads(report.read_text())["expected_events"] == 9


def test_fetch_without_interval_for_klines_is_exit_2(imitation, cache_dir, tmp_path):
    result = _invoke(
        "fetch", "BTCUSDT-PERP.BINANCE", "--start", "2024-01-01", "--end", "2024-01-02",
        "--out", str(tmp_path / "x.parquet"), *_sources(imitation, cache_dir),
    )  # fmt: skip

    assert result.exit_code == 2
    assert result.stderr == (
        "error: --interval is required for --dataset klines, e.g. --interval 1m\n"
    )
    assert imitation.requests == []


@pytest.mark.parametrize("command", ["fetch", "quality"])
def test_an_interval_with_funding_is_exit_2_before_io(imitation, cache_dir, tmp_path, command):
    out = ["--out", str(tmp_path / "x.parquet")] if command == "fetch" else []
    result = _invoke(
        command, "BTCUSDT-PERP.BINANCE", "--dataset", "funding", "--interval", "1h",
        "--start", "2024-01-01", "--end", "2024-01-02", *out, *_sources(imitation, cache_dir),
    )  # fmt: skip

    assert result.exit_code == 2
    assert result.stderr == (
        "error: --interval does not apply to --dataset funding (funding events fall on the "
        "funding boundaries); drop --interval\n"
    )
    assert imitation.requests == []


def test_fetch_spot_funding_is_exit_2_before_io(imitation, cache_dir, tmp_path):
    result = _invoke(
        "fetch", "BTCUSDT.BINANCE", "--start", "2024-01-01", "--end", "2024-01-02",
        "--dataset", "funding", "--out", str(tmp_path / "x.parquet"),
        *_sources(imitation, cache_dir),
    )  # fmt: skip

    assert result.exit_code == 2
    assert "exists only on the futures markets" in result.stderr
    assert imitation.requests == []


def test_quality_index_and_funding_json(imitation, cache_dir):
    index = _invoke(
        "quality", "BTCUSD-PERP.BINANCE", "--interval", "1h", "--start", "2024-01-01",
        "--end", "2024-01-02", "--dataset", "index", "--json", *_sources(imitation, cache_dir),
    )  # fmt: skip
    funding = _invoke(
        "quality", "BTCUSD-PERP.BINANCE", "--start", "2024-01-01", "--end", "2024-02-01",
        "--dataset", "funding", "--json", *_sources(imitation, cache_dir),
    )  # fmt: skip

    assert index.exit_code == 0, index.output
    payload = json.loads(index.stdout)
    assert (payload["dataset"], payload["bars"], payload["completeness"]) == (
        "index_price_klines",
        24,
        1.0,
    )
    assert funding.exit_code == 0, funding.output
    report = json.loads(funding.stdout)
    assert (report["dataset"], report["events"], report["expected_events"]) == (
        "funding_rates",
        93,
        93,
    )


def test_ingest_several_datasets(imitation, cache_dir, tmp_path):
    catalog = tmp_path / "catalog"
    result = _invoke(
        "ingest", "BTCUSDT-PERP.BINANCE", "--interval", "1h", "--start", "2024-01-01",
        "--end", "2024-01-03", "--catalog", str(catalog), "--dataset", "klines",
        "--dataset", "mark", "--dataset", "funding", "--json", *_sources(imitation, cache_dir),
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["bars_written"] == {
        "BTCUSDT-PERP.BINANCE-1-HOUR-LAST-EXTERNAL": 48,
        "BTCUSDT-PERP.BINANCE-1-HOUR-MARK-EXTERNAL": 48,
    }
    assert report["events_written"] == {"FundingRateUpdate BTCUSDT-PERP.BINANCE": 6}
    rows = ParquetDataCatalog(str(catalog)).funding_rates(instrument_ids=["BTCUSDT-PERP.BINANCE"])
    expected = imitation.datasets.expected_funding(
        UM, "BTCUSDT", _ms("2024-01-01"), _ms("2024-01-03")
    )
    assert [Decimal(r.rate) for r in rows] == [Decimal(e[3]) for e in expected]
