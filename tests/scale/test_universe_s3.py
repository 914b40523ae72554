"""A universe on a two-worker Dask cluster into s3:// (moto), read back exact."""

from __future__ import annotations

from typing import Any

import pytest

from nautilus_dsm.catalog.storage import catalog_location, open_catalog
from nautilus_dsm.distributed import UniverseSelection, ingest_universe
from tests.scale.conftest import (
    BUCKET,
    FEB,
    JAN,
    LATE_LISTING,
    MAR,
    UNIVERSE,
    catalog_rows,
    expected_rows,
)

SELECTION = UniverseSelection("futures_usdt", quote="USDT", status="all")


@pytest.fixture(scope="module")
def first_run(s3: Any, universe_imitation: Any, dask_client: Any, scale_settings: Any) -> Any:
    uri = f"s3://{BUCKET}/readback"
    report = ingest_universe(
        uri, SELECTION, ["1m"], JAN, MAR,
        settings=scale_settings, storage_options=s3.storage_options, client=dask_client,
    )  # fmt: skip
    return uri, report


def test_the_universe_is_every_usdt_perpetual_listed_including_one_no_longer_trading(
    first_run: Any,
) -> None:
    _, report = first_run
    assert sorted(s.split(" ")[0] for s in report.symbols) == [
        f"{s}-PERP.BINANCE" for s in UNIVERSE
    ]


def test_no_month_is_planned_before_a_listing(first_run: Any) -> None:
    _, report = first_run
    assert report.tasks == 11 and report.done == 11 and report.failed == 0
    doge = report.symbols["DOGEUSDT-PERP.BINANCE 1m"]
    assert doge.months_run == 1
    assert doge.expected == (int(MAR.timestamp()) - int(LATE_LISTING.timestamp())) // 60


def test_every_bar_reads_back_exact_from_s3(
    first_run: Any, s3: Any, universe_imitation: Any
) -> None:
    from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

    uri, _ = first_run
    location = catalog_location(uri, s3.storage_options)
    # NautilusTrader's own constructor, as a backtest fleet would build it.
    cat = ParquetDataCatalog(
        uri,
        fs_protocol="s3",
        fs_storage_options=location.fs_options,
        fs_rust_storage_options=location.rust_options,
    )
    for symbol in UNIVERSE:
        bars = cat.bars([f"{symbol}-PERP.BINANCE-1-MINUTE-LAST-EXTERNAL"])
        assert catalog_rows(bars) == expected_rows(universe_imitation, symbol, JAN, MAR), symbol


def test_the_report_counts_every_bar_complete(first_run: Any) -> None:
    _, report = first_run
    btc = report.symbols["BTCUSDT-PERP.BINANCE 1m"]
    assert (btc.months_run, btc.bars, btc.expected, btc.gaps) == (2, 86_400, 86_400, [])
    assert btc.completeness == 1.0
    assert report.bars_written == 5 * 86_400 + doge_bars()


def doge_bars() -> int:
    return (int(MAR.timestamp()) - int(LATE_LISTING.timestamp())) // 60


def test_a_rerun_finds_every_month_present_and_writes_nothing(
    first_run: Any, s3: Any, dask_client: Any, scale_settings: Any
) -> None:
    uri, _ = first_run
    again = ingest_universe(
        uri, SELECTION, ["1m"], JAN, MAR,
        settings=scale_settings, storage_options=s3.storage_options, client=dask_client,
    )  # fmt: skip
    assert (again.tasks, again.skipped, again.done, again.bars_written) == (11, 11, 0, 0)


def test_a_backtest_data_config_loads_the_s3_catalog_as_a_backtest_does(
    first_run: Any, s3: Any, universe_imitation: Any
) -> None:
    from nautilus_trader.backtest.node import BacktestNode

    from nautilus_dsm.backtest.data_config import backtest_data_config

    uri, _ = first_run
    config = backtest_data_config(
        open_catalog(uri, s3.storage_options), "SOLUSDT-PERP.BINANCE", "1m", FEB, MAR
    )
    assert (config.catalog_fs_protocol, config.catalog_path) == ("s3", f"{BUCKET}/readback")
    loaded = BacktestNode.load_data_config(config)
    assert [i.id.value for i in loaded.instruments] == ["SOLUSDT-PERP.BINANCE"]
    assert catalog_rows(loaded.data) == expected_rows(universe_imitation, "SOLUSDT", FEB, MAR)
