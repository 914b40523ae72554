"""Backtest NautilusTrader's EMA cross on Binance bars ingested by nautilus-dsm.

The whole path in one readable script: ingest into a ``ParquetDataCatalog`` (resumable, no
duplicates), point a ``BacktestNode`` at exactly that bar type with ``backtest_data_config``,
run, and read orders / positions / PnL from the engine::

    uv run python examples/backtest_node.py                 # real Binance data (internet)
    uv run python examples/backtest_node.py --offline       # bundled imitation: SYNTHETIC prices
    uv run python examples/backtest_node.py --catalog ./catalog --days 7

Re-running with the same ``--catalog`` fetches nothing that is already there.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from nautilus_trader.backtest.node import BacktestNode
from nautilus_trader.model.identifiers import Venue

from nautilus_dsm import DataProvider, DataSourceManager, backtest_data_config, ingest
from nautilus_dsm.backtest.demo import ema_cross_run_config

INSTRUMENT_ID = "BTCUSDT-PERP.BINANCE"
INTERVAL = "1m"


@contextlib.contextmanager
def binance_source(offline: bool) -> Iterator[str | None]:
    """Yield the base URL to use: None for Binance itself, or the local imitation's URL."""
    if not offline:
        yield None
        return
    from nautilus_dsm.testing import BinanceImitation

    with BinanceImitation() as srv:
        print(f"offline: SYNTHETIC prices from the Binance imitation at {srv.url}")
        yield srv.url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offline", action="store_true", help="use the bundled imitation")
    parser.add_argument("--catalog", default=None, help="catalog directory (temporary if unset)")
    parser.add_argument("--days", type=int, default=3, help="days of 1m bars (default 3)")
    args = parser.parse_args()

    catalog_path = args.catalog or tempfile.mkdtemp(prefix="nautilus-dsm-catalog-")
    if args.offline:
        start = datetime(2024, 1, 1, tzinfo=UTC)
    else:
        start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        start -= timedelta(days=args.days)
    end = start + timedelta(days=args.days)

    with binance_source(args.offline) as base_url:
        # Synthetic data gets its own cache so it never mixes with real cached klines.
        cache_dir = f"{catalog_path}/.synthetic-cache" if base_url else None
        dsm = DataSourceManager.create(
            DataProvider.BINANCE,
            base_url_http=base_url,
            base_url_vision=base_url,
            cache_dir=cache_dir,
        )
        # 1. Ingest: instruments first, then bars chunk by chunk in the catalog's own layout.
        report = ingest(catalog_path, [INSTRUMENT_ID], [INTERVAL], start, end, dsm=dsm)
        print(report.summary())

    # 2. Backtest exactly that bar type: backtest_data_config selects it (data_cls=Bar the class,
    #    bar_types=[...]); ema_cross_run_config adds NautilusTrader's EMACross, a BINANCE venue
    #    (netting, margin, 100000 USDT) and keeps the engine after the run to read results from.
    data = backtest_data_config(catalog_path, INSTRUMENT_ID, INTERVAL, start, end)
    run_config = ema_cross_run_config(data)
    node = BacktestNode(configs=[run_config])
    result = node.run()[0]
    engine = node.get_engine(run_config.id)

    # 3. Results.
    label = " (SYNTHETIC)" if args.offline else ""
    print(f"catalog: {catalog_path}")
    print(f"bars iterated{label}: {result.iterations}")
    print(f"orders: {result.total_orders}, positions: {result.total_positions}")
    print(f"PnL{label}: {result.stats_pnls.get('USDT', {}).get('PnL (total)')}")
    print(engine.trader.generate_account_report(Venue("BINANCE")).tail(1).to_string())
    node.dispose()


if __name__ == "__main__":
    main()
