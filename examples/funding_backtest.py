"""Hold a BTCUSDT-PERP long for a month with and without funding settlement, and compare.

NautilusTrader 1.231 settles no funding in backtests; ``nautilus_dsm.backtest.FundingRateModule``
does, from the funding rows (and MARK bars, when present) of a catalog. This script runs the same
held position twice in one ``BacktestNode`` (with and without the module), prints the final
balances, their difference, and the sum of the payments computed by hand from the funding rows::

    uv run python examples/funding_backtest.py --offline            # SYNTHETIC month, no network
    uv run python examples/funding_backtest.py --offline --days 2   # the same, in seconds
    uv run python examples/funding_backtest.py --imitation          # the real ingest path, offline
    uv run python examples/funding_backtest.py --catalog ./catalog  # a catalog with funding rows

``--imitation`` runs the real data path against the local Binance imitation (generated data,
not market data): 1m klines, MARK klines and funding of March 2024 ingested through Vision and
REST (``nautilus_dsm.catalog.ingest(..., datasets=["klines", "mark", "funding"])``); the
imitation moves BTCUSDT's funding from 8 h to 4 h on the 15th. Against Binance, ingest the
same way without the imitation's URLs (``nautilus-dsm ingest --dataset klines --dataset mark
--dataset funding``) and pass ``--catalog``.

A ``--catalog`` must hold the instrument, its 1m LAST bars and its ``FundingRateUpdate`` rows
(MARK bars ``...-1-MINUTE-MARK-EXTERNAL`` optional; without them the last traded price is used).
Exit code 0 when the difference equals the hand-computed sum exactly, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

from nautilus_trader.backtest.config import (
    BacktestDataConfig,
    BacktestEngineConfig,
    BacktestRunConfig,
    BacktestVenueConfig,
)
from nautilus_trader.backtest.node import BacktestNode
from nautilus_trader.config import ImportableStrategyConfig, LoggingConfig
from nautilus_trader.model.currencies import USDT
from nautilus_trader.model.data import Bar
from nautilus_trader.model.identifiers import Venue
from nautilus_trader.persistence.catalog import ParquetDataCatalog

from nautilus_dsm.backtest import funding_module_config, funding_report

INSTRUMENT_ID = "BTCUSDT-PERP.BINANCE"
LAST = f"{INSTRUMENT_ID}-1-MINUTE-LAST-EXTERNAL"
MARK = f"{INSTRUMENT_ID}-1-MINUTE-MARK-EXTERNAL"
QUANTITY = "0.500"


def run_config(catalog_path: str, with_funding: bool) -> BacktestRunConfig:
    """The held-long run, with or without the funding module on the BINANCE venue."""
    strategy = ImportableStrategyConfig(
        strategy_path="nautilus_dsm.backtest.hold:HoldPositions",
        config_path="nautilus_dsm.backtest.hold:HoldPositionsConfig",
        config={"bar_types": [LAST], "quantities": {INSTRUMENT_ID: QUANTITY}},
    )
    venue = BacktestVenueConfig(
        name="BINANCE",
        oms_type="NETTING",
        account_type="MARGIN",
        starting_balances=["1000000 USDT"],
        modules=[funding_module_config(catalog_path, [INSTRUMENT_ID])] if with_funding else [],
    )
    data = BacktestDataConfig(
        catalog_path=catalog_path, data_cls=Bar, instrument_id=INSTRUMENT_ID, bar_types=[LAST]
    )
    return BacktestRunConfig(
        engine=BacktestEngineConfig(
            strategies=[strategy], logging=LoggingConfig(log_level="ERROR")
        ),
        venues=[venue],
        data=[data],
        dispose_on_completion=False,
    )


def hand_computed_sum(catalog_path: str) -> tuple[Decimal, int]:
    """Sum of -quantity x mark x rate over the boundaries the position was held, by hand."""
    catalog = ParquetDataCatalog(catalog_path)
    last = {b.ts_event: b.close.as_decimal() for b in catalog.bars(bar_types=[LAST])}
    marks = {b.ts_event: b.close.as_decimal() for b in catalog.bars(bar_types=[MARK])}
    opened, closed = min(last), max(last)  # filled at the first bar's close, held to the end
    total, count = Decimal(0), 0
    for row in catalog.funding_rates(instrument_ids=[INSTRUMENT_ID]):
        if not opened <= row.ts_event <= closed:
            continue
        price = marks.get(row.ts_event) or last[max(t for t in last if t <= row.ts_event)]
        with localcontext() as ctx:
            ctx.prec = 60
            amount = -(Decimal(QUANTITY) * price * Decimal(row.rate))
        total += amount.quantize(Decimal("0.00000001"), rounding=ROUND_HALF_EVEN)
        count += 1
    return total, count


def ingest_from_imitation(catalog_path: str) -> None:
    """Ingest March 2024 of BTCUSDT-PERP (klines, MARK klines, funding) from the imitation."""
    from nautilus_dsm.catalog import ingest
    from nautilus_dsm.dsm.manager import DataSourceManager
    from nautilus_dsm.testing import BinanceImitation

    def now_ms() -> int:  # the imitation's "now": everything of March 2024 is closed
        return int(datetime(2024, 6, 1, tzinfo=UTC).timestamp() * 1000)

    with BinanceImitation(clock=now_ms) as srv, tempfile.TemporaryDirectory() as cache:
        dsm = DataSourceManager.create(
            base_url_http=srv.url, base_url_vision=srv.url, cache_dir=cache, clock=now_ms
        )
        ingest(
            catalog_path,
            [INSTRUMENT_ID],
            ["1m"],
            datetime(2024, 3, 1, tzinfo=UTC),
            datetime(2024, 4, 1, tzinfo=UTC),
            dsm=dsm,
            datasets=["klines", "mark", "funding"],
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--offline", action="store_true", help="build a SYNTHETIC month")
    source.add_argument("--catalog", help="a catalog holding BTCUSDT-PERP bars and funding rows")
    source.add_argument(
        "--imitation", action="store_true", help="ingest a month from the local imitation"
    )
    parser.add_argument("--days", type=int, default=31, help="SYNTHETIC days (default 31)")
    parser.add_argument("--output", help="where to write the SYNTHETIC catalog (default: temp)")
    args = parser.parse_args()
    # NautilusTrader 1.231's backtest engine calls pandas' deprecated Timestamp.utcnow.
    warnings.filterwarnings("ignore", message="Timestamp.utcnow is deprecated")

    if args.offline:
        from nautilus_dsm.backtest.synthetic import write_synthetic_perp_catalog

        catalog_path = args.output or tempfile.mkdtemp(prefix="nautilus-dsm-funding-SYNTHETIC-")
        write_synthetic_perp_catalog(
            catalog_path,
            days=args.days,
            interval_change_day=args.days // 2,
            instrument_ids=(INSTRUMENT_ID,),
            mark_bars_for=(INSTRUMENT_ID,),
        )
        print(f"SYNTHETIC data (made-up prices and funding rates) in {catalog_path}")
        print(f"  funding every 8 h, then every 4 h from day {args.days // 2}")
    elif args.imitation:
        catalog_path = args.output or tempfile.mkdtemp(prefix="nautilus-dsm-funding-IMITATION-")
        ingest_from_imitation(catalog_path)
        print(f"IMITATION data (generated by the local Binance imitation) in {catalog_path}")
        print("  ingested through Vision and REST: 1m klines, 1m MARK klines, funding rates")
    else:
        catalog_path = args.catalog

    with_funding, without = run_config(catalog_path, True), run_config(catalog_path, False)
    node = BacktestNode(configs=[with_funding, without])
    node.run()
    engine, plain = node.get_engine(with_funding.id), node.get_engine(without.id)
    venue = Venue("BINANCE")
    paid = engine.cache.account_for_venue(venue).balance_total(USDT).as_decimal()
    unpaid = plain.cache.account_for_venue(venue).balance_total(USDT).as_decimal()
    report = funding_report(engine.cache, venue)
    expected, events = hand_computed_sum(catalog_path)
    node.dispose()

    label = " (SYNTHETIC)" if args.offline else " (IMITATION)" if args.imitation else ""
    totals = report.totals.get(INSTRUMENT_ID) if report else None
    held = f"{INSTRUMENT_ID} long {QUANTITY}{label}: {events} funding events while held"
    if report and report.payments:
        first, last = (
            datetime.fromtimestamp(ts / 1e9, tz=UTC)
            for ts in (report.payments[0].ts_event, report.payments[-1].ts_event)
        )
        held += f", {first:%Y-%m-%d %H:%M} .. {last:%Y-%m-%d %H:%M} UTC"
    print(held)
    if totals is not None:
        print(f"  {totals.summary()}")
    print(f"final USDT balance without funding: {unpaid}")
    print(f"final USDT balance with funding:    {paid}")
    print(f"difference (with - without):        {paid - unpaid}")
    print(f"hand-computed sum of payments:      {expected}")
    equal = paid - unpaid == expected
    print(f"equal: {'yes' if equal else 'NO'}")
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
