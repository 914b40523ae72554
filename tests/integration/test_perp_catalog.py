"""The real data path: ingest perpetual data from the imitation, then settle funding in a node.

One month (March 2024, BTCUSDT's funding moves from 8 h to 4 h on the 15th) of BTCUSDT-PERP and
BTCUSD-PERP: 1h LAST and MARK bars, funding rates and index prices, ingested from the Binance
imitation (Vision files and REST) into a ParquetDataCatalog. A BacktestNode holds a long and a
short with the FundingRateModule reading that catalog: its payments equal the sum computed by
hand here from the imitation's own funding rows and mark prices, and nothing is paid without
positions. Ingest is resumable and exactly-once for the new datasets too.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

import pytest
from nautilus_trader.backtest.config import (
    BacktestEngineConfig,
    BacktestRunConfig,
    BacktestVenueConfig,
)
from nautilus_trader.backtest.node import BacktestNode
from nautilus_trader.config import ImportableStrategyConfig, LoggingConfig
from nautilus_trader.model.data import Bar, FundingRateUpdate
from nautilus_trader.persistence.catalog import ParquetDataCatalog

from nautilus_dsm.backtest import funding_module_config, funding_report
from nautilus_dsm.backtest.data_config import backtest_data_config
from nautilus_dsm.backtest.perp_data_config import (
    funding_data_config,
    index_price_updates,
    mark_bars_data_config,
)
from nautilus_dsm.catalog import ingest
from nautilus_dsm.common import Interval, MarketType, to_ms
from nautilus_dsm.common.datasets import Dataset
from nautilus_dsm.dsm.manager import DataSourceManager
from nautilus_dsm.errors import InvalidInput
from nautilus_dsm.testing import BinanceImitation

pytestmark = pytest.mark.timeout(120)

NOW = to_ms(datetime(2024, 6, 1, tzinfo=UTC))
START, END = datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 4, 1, tzinfo=UTC)
LINEAR, INVERSE = "BTCUSDT-PERP.BINANCE", "BTCUSD-PERP.BINANCE"
MARKETS = {
    LINEAR: (MarketType.FUTURES_USDT, "BTCUSDT"),
    INVERSE: (MarketType.FUTURES_COIN, "BTCUSD_PERP"),
}
HELD = {LINEAR: "0.500", INVERSE: "-1000"}
H_MS = 3_600_000
EIGHT_DP = Decimal("0.00000001")
DATASETS = ["klines", "mark", "funding", "index"]


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    root = tmp_path_factory.mktemp("perp")
    with BinanceImitation(clock=lambda: NOW) as srv:
        dsm = DataSourceManager.create(
            base_url_http=srv.url,
            base_url_vision=srv.url,
            cache_dir=root / "cache",
            clock=lambda: NOW,
        )
        report = ingest(
            str(root / "catalog"), [LINEAR, INVERSE], ["1h"], START, END, dsm=dsm, datasets=DATASETS
        )
        rerun = ingest(
            str(root / "catalog"), [LINEAR, INVERSE], ["1h"], START, END, dsm=dsm, datasets=DATASETS
        )
        truth = {
            iid: (
                srv.datasets.expected_funding(m, s, to_ms(START), to_ms(END)),
                srv.datasets.expected(
                    m, s, Dataset.MARK_PRICE_KLINES, Interval.HOUR_1, to_ms(START), to_ms(END)
                ),
                srv.datasets.expected(
                    m, s, Dataset.INDEX_PRICE_KLINES, Interval.HOUR_1, to_ms(START), to_ms(END)
                ),
            )
            for iid, (m, s) in MARKETS.items()
        }
        yield str(root / "catalog"), report, rerun, truth


def test_ingest_writes_every_dataset_once(ingested):
    _, report, rerun, truth = ingested

    assert report.bars_written == {
        f"{LINEAR}-1-HOUR-LAST-EXTERNAL": 744,
        f"{LINEAR}-1-HOUR-MARK-EXTERNAL": 744,
        f"{INVERSE}-1-HOUR-LAST-EXTERNAL": 744,
        f"{INVERSE}-1-HOUR-MARK-EXTERNAL": 744,
    }
    assert report.events_written == {
        f"FundingRateUpdate {LINEAR}": len(truth[LINEAR][0]),
        f"IndexPriceUpdate {LINEAR} 1h": 744,
        f"FundingRateUpdate {INVERSE}": len(truth[INVERSE][0]),
        f"IndexPriceUpdate {INVERSE} 1h": 744,
    }
    # 14 days of 8 h (42 events), then 17 days of 4 h (102 events); COIN-M 8 h all month.
    assert (len(truth[LINEAR][0]), len(truth[INVERSE][0])) == (144, 93)
    assert rerun.total_bars == 0
    assert set(rerun.events_written.values()) == {0}


def test_catalog_holds_exact_funding_rows(ingested):
    path, _, _, truth = ingested
    catalog = ParquetDataCatalog(path)

    rows = catalog.funding_rates(instrument_ids=[LINEAR])

    expected = truth[LINEAR][0]
    assert [r.ts_event for r in rows] == [b * 1_000_000 for b, *_ in expected]
    assert [Decimal(r.rate) for r in rows] == [Decimal(rate) for *_, rate, _ in expected]
    assert [r.interval for r in rows] == [h * 60 for _, _, h, _, _ in expected]
    change = to_ms(datetime(2024, 3, 15, tzinfo=UTC)) * 1_000_000
    assert [r.interval for r in rows if r.ts_event in (change, change + 4 * H_MS * 1_000_000)] == [
        480,
        240,
    ]
    assert rows[0].next_funding_ns == rows[1].ts_event


def test_catalog_mark_bars_and_index_prices_exact(ingested):
    path, _, _, truth = ingested
    catalog = ParquetDataCatalog(path)

    marks = catalog.bars(bar_types=[f"{INVERSE}-1-HOUR-MARK-EXTERNAL"])
    index = index_price_updates(path, INVERSE)

    mark_truth, index_truth = truth[INVERSE][1], truth[INVERSE][2]
    assert [b.close.as_decimal() for b in marks] == mark_truth.get_column("close").to_list()
    assert [u.value.as_decimal() for u in index] == index_truth.get_column("close").to_list()
    assert index[0].ts_init == to_ms(START) * 1_000_000 + H_MS * 1_000_000
    assert len(index_price_updates(path, INVERSE, START, datetime(2024, 3, 2, tzinfo=UTC))) == 24


def hand_total(truth, instrument_id: str) -> Decimal:
    """The funding a held position pays, by hand: every event after the first fill (01:00)."""
    funding, marks, _ = truth[instrument_id]
    close_by_ts = {to_ms(o) + H_MS: c for o, c in marks.select("open_time", "close").iter_rows()}
    quantity = Decimal(HELD[instrument_id])
    total = Decimal(0)
    for boundary, _, _, rate, _ in funding:
        if boundary < to_ms(START) + H_MS:
            continue  # before the position opened
        mark = close_by_ts[boundary]
        with localcontext() as ctx:
            ctx.prec = 60
            if instrument_id == INVERSE:
                raw = -(quantity * 100 / mark * Decimal(rate))
            else:
                raw = -(quantity * mark * Decimal(rate))
        total += raw.quantize(EIGHT_DP, rounding=ROUND_HALF_EVEN)
    return total


def run_config(path: str, quantities: dict[str, str]) -> BacktestRunConfig:
    bar_types = [f"{i}-1-HOUR-LAST-EXTERNAL" for i in (LINEAR, INVERSE)]
    return BacktestRunConfig(
        engine=BacktestEngineConfig(
            strategies=[
                ImportableStrategyConfig(
                    strategy_path="nautilus_dsm.backtest.hold:HoldPositions",
                    config_path="nautilus_dsm.backtest.hold:HoldPositionsConfig",
                    config={"bar_types": bar_types, "quantities": quantities},
                )
            ],
            logging=LoggingConfig(log_level="ERROR"),
        ),
        venues=[
            BacktestVenueConfig(
                name="BINANCE",
                oms_type="NETTING",
                account_type="MARGIN",
                starting_balances=["1000000 USDT", "10 BTC"],
                modules=[funding_module_config(path, mark_bar_spec="1-HOUR-MARK-EXTERNAL")],
            )
        ],
        data=[backtest_data_config(path, i, "1h") for i in (LINEAR, INVERSE)],
        dispose_on_completion=False,
        raise_exception=True,
    )


def test_node_funding_over_ingested_month_equals_hand_sum(ingested):
    path, _, _, truth = ingested
    held, flat = run_config(path, HELD), run_config(path, {})
    node = BacktestNode(configs=[held, flat])
    node.run()

    report = funding_report(node.get_engine(held.id).cache, "BINANCE")
    linear, inverse = report.totals[LINEAR], report.totals[INVERSE]
    assert (linear.events, linear.payments) == (144, 143)
    assert (inverse.events, inverse.payments) == (93, 92)
    assert (linear.mark_price_events, inverse.mark_price_events) == (143, 92)
    assert linear.total == hand_total(truth, LINEAR)
    assert inverse.total == hand_total(truth, INVERSE)
    assert linear.total != 0 and inverse.total != 0

    nothing = funding_report(node.get_engine(flat.id).cache, "BINANCE")
    assert nothing.totals[LINEAR].total == 0 and nothing.totals[INVERSE].total == 0
    assert nothing.totals[LINEAR].payments == 0
    node.dispose()


def test_data_config_helpers_name_the_ingested_series(ingested):
    path, *_ = ingested

    mark = mark_bars_data_config(path, LINEAR, "1h")
    funding = funding_data_config(path, LINEAR, START, END)

    assert mark.bar_types == [f"{LINEAR}-1-HOUR-MARK-EXTERNAL"] and mark.data_cls is Bar
    assert funding.data_cls is FundingRateUpdate
    assert (funding.start_time, funding.end_time) == (
        to_ms(START) * 1_000_000,
        to_ms(END) * 1_000_000 - 1,
    )
    loaded = ParquetDataCatalog(path).query(FundingRateUpdate, identifiers=[LINEAR])
    assert len(loaded) == 144


def test_ingest_refuses_premium_and_spot_funding_before_io(tmp_path):
    with pytest.raises(InvalidInput, match="premium_index_klines have no NautilusTrader type"):
        ingest(str(tmp_path / "c"), [LINEAR], ["1h"], START, END, datasets=["premium"])
    with pytest.raises(InvalidInput, match="exists only on the futures markets"):
        ingest(str(tmp_path / "c"), ["BTCUSDT.BINANCE"], ["1h"], START, END, datasets=["funding"])
    with pytest.raises(InvalidInput) as index:
        ingest(str(tmp_path / "c"), [LINEAR], ["1m", "1h"], START, END, datasets=["index"])
    assert str(index.value) == (
        "index_price_klines are IndexPriceUpdate series without an interval in the catalog: "
        "ingest them at one interval, not ['1m', '1h']; run the index dataset once with the "
        "interval you want"
    )
    assert not (tmp_path / "c").exists()


def _dsm(srv, root, **kw) -> DataSourceManager:
    return DataSourceManager.create(
        base_url_http=srv.url,
        base_url_vision=srv.url,
        cache_dir=root / "cache",
        clock=lambda: NOW,
        **kw,
    )


def test_funding_ingest_resumes_with_only_what_is_missing(tmp_path):
    catalog = str(tmp_path / "catalog")
    with BinanceImitation(clock=lambda: NOW) as srv:
        dsm = _dsm(srv, tmp_path)
        first = ingest(
            catalog,
            [INVERSE],
            ["1h"],
            START,
            datetime(2024, 3, 11, tzinfo=UTC),
            dsm=dsm,
            datasets=["funding"],
        )
        second = ingest(catalog, [INVERSE], ["1h"], START, END, dsm=dsm, datasets=["funding"])

    key = f"FundingRateUpdate {INVERSE}"
    assert (first.events_written[key], second.events_written[key]) == (30, 63)
    rows = ParquetDataCatalog(catalog).funding_rates(instrument_ids=[INVERSE])
    times = [r.ts_event for r in rows]
    assert len(times) == 93 and times == sorted(set(times))


def test_funding_gap_is_recorded_and_filled_by_a_later_run(tmp_path):
    catalog = str(tmp_path / "catalog")
    missing = to_ms(datetime(2024, 3, 2, 8, tzinfo=UTC))
    with BinanceImitation(clock=lambda: NOW) as srv:
        original = srv.datasets.funding.events
        srv.datasets.funding.events = lambda m, spec, lo, hi, *, marks=True: [
            e for e in original(m, spec, lo, hi, marks=marks) if e.boundary_ms != missing
        ]
        gappy = ingest(
            catalog, [INVERSE], ["1h"], START, END, dsm=_dsm(srv, tmp_path), datasets=["funding"]
        )
        sidecars = list((tmp_path / "catalog").rglob("*.gaps.json"))
        srv.datasets.funding.events = original
        filled = ingest(
            catalog,
            [INVERSE],
            ["1h"],
            START,
            END,
            dsm=_dsm(srv, tmp_path, use_cache=False),
            datasets=["funding"],
        )

    key = f"FundingRateUpdate {INVERSE}"
    assert (gappy.events_written[key], filled.events_written[key]) == (92, 1)
    assert len(sidecars) == 1
    assert list((tmp_path / "catalog").rglob("*.gaps.json")) == []
    rows = ParquetDataCatalog(catalog).funding_rates(instrument_ids=[INVERSE])
    assert missing * 1_000_000 in [r.ts_event for r in rows] and len(rows) == 93
