"""FundingRateModule in real NautilusTrader 1.231 backtests over a SYNTHETIC perpetuals catalog.

The catalog (``nautilus_dsm.backtest.synthetic``) is made up: two days of 1m LAST bars of
BTCUSDT-PERP (linear) and BTCUSD-PERP (inverse, 100 USD contracts), MARK bars for the linear one
only, funding rows every 8 h on day 0 and every 4 h from day 1 on, their Vision-style calc_time
ms offsets floored to the boundary. A strategy opens a long 0.5 BTCUSDT-PERP and a short 1000
BTCUSD-PERP at the first bar and holds them; every expected amount below is computed by hand
here, from the catalog rows, with plain Decimal arithmetic.
"""

from __future__ import annotations

import itertools
import re
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from pathlib import Path

import pytest
from nautilus_trader.backtest.config import (
    BacktestDataConfig,
    BacktestEngineConfig,
    BacktestRunConfig,
    BacktestVenueConfig,
)
from nautilus_trader.backtest.engine import BacktestEngine
from nautilus_trader.backtest.node import BacktestNode
from nautilus_trader.config import ImportableStrategyConfig, LoggingConfig
from nautilus_trader.model.currencies import BTC, USDT
from nautilus_trader.model.data import Bar, FundingRateUpdate
from nautilus_trader.model.enums import AccountType, OmsType
from nautilus_trader.model.identifiers import Venue
from nautilus_trader.model.objects import Money
from nautilus_trader.persistence.catalog import ParquetDataCatalog

from nautilus_dsm.backtest import (
    FundingRateModule,
    FundingRateModuleConfig,
    HoldPositions,
    HoldPositionsConfig,
    funding_module_config,
    funding_report,
)
from nautilus_dsm.backtest.synthetic import (
    INVERSE_ID,
    LINEAR_ID,
    SyntheticPerpCatalog,
    write_synthetic_perp_catalog,
)
from nautilus_dsm.errors import FundingSettlementError

pytestmark = pytest.mark.timeout(60)

BINANCE = Venue("BINANCE")
MIN_NS = 60_000_000_000
HOUR_NS = 60 * MIN_NS
HELD = {LINEAR_ID: "0.500", INVERSE_ID: "-1000"}  # long the linear, short the inverse
EIGHT_DP = Decimal("0.00000001")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> SyntheticPerpCatalog:
    # SYNTHETIC data: 2 days, 8 h funding on day 0 then 4 h; MARK bars for BTCUSDT-PERP only.
    path = tmp_path_factory.mktemp("synthetic-perp-catalog")
    return write_synthetic_perp_catalog(path, days=2, interval_change_day=1)


# -- hand computation -------------------------------------------------------------------------


def hand_computed(
    syn: SyntheticPerpCatalog,
    instrument_id: str,
    signed_quantity: str,
    opened_ns: int,
) -> list[tuple[int, Decimal, Decimal]]:
    """(boundary, mark, amount) of every funding row after ``opened_ns``, by hand."""
    catalog = ParquetDataCatalog(syn.path)
    closes = {
        b.ts_event: b.close.as_decimal()
        for b in catalog.bars(bar_types=[syn.last_bar_types[instrument_id]])
    }
    marks = {}
    if instrument_id in syn.mark_bar_types:
        bars = catalog.bars(bar_types=[syn.mark_bar_types[instrument_id]])
        marks = {b.ts_event: b.close.as_decimal() for b in bars}
    quantity = Decimal(signed_quantity)
    out = []
    for row in catalog.funding_rates(instrument_ids=[instrument_id]):
        if row.ts_event < opened_ns:
            continue
        rate = Decimal(row.rate)  # the 1.231 catalog reads rates back as str
        mark = marks[row.ts_event] if marks else closes[row.ts_event]
        with localcontext() as ctx:
            ctx.prec = 60
            if instrument_id == INVERSE_ID:
                raw = -(quantity * 100 / mark * rate)  # BTC
            else:
                raw = -(quantity * mark * rate)  # USDT
        out.append((row.ts_event, mark, raw.quantize(EIGHT_DP, rounding=ROUND_HALF_EVEN)))
    return out


def hand_total(syn: SyntheticPerpCatalog, instrument_id: str) -> Decimal:
    first_close = syn.start_ns + MIN_NS  # the strategy fills at the first bar's close
    rows = hand_computed(syn, instrument_id, HELD[instrument_id], first_close)
    return sum((amount for _, _, amount in rows), Decimal(0))


# -- engine helpers ---------------------------------------------------------------------------


def make_engine(
    syn: SyntheticPerpCatalog,
    modules: list[FundingRateModule],
    balances: list[Money] | None = None,
) -> BacktestEngine:
    engine = BacktestEngine(BacktestEngineConfig(logging=LoggingConfig(log_level="ERROR")))
    engine.add_venue(
        BINANCE,
        OmsType.NETTING,
        AccountType.MARGIN,
        balances or [Money(1_000_000, USDT), Money(10, BTC)],
        base_currency=None,
        modules=modules,
    )
    return engine


def run_engine(
    syn: SyntheticPerpCatalog,
    modules: list[FundingRateModule],
    held: dict[str, str],
    drop_bars_at: dict[str, int] | None = None,
    **strategy: int,
) -> BacktestEngine:
    engine = make_engine(syn, modules)
    catalog = ParquetDataCatalog(syn.path)
    for instrument in syn.instruments.values():
        engine.add_instrument(instrument)
    for instrument_id, bar_type in syn.last_bar_types.items():
        bars = catalog.bars(bar_types=[bar_type])
        dropped = (drop_bars_at or {}).get(instrument_id)
        engine.add_data([b for b in bars if b.ts_event != dropped])
    bar_types = list(syn.last_bar_types.values())
    config = HoldPositionsConfig(bar_types=bar_types, quantities=held, **strategy)
    engine.add_strategy(HoldPositions(config))
    engine.run()
    return engine


def balances(engine: BacktestEngine) -> dict[str, Decimal]:
    account = engine.cache.account_for_venue(BINANCE)
    return {c.code: account.balance_total(c).as_decimal() for c in (USDT, BTC)}


def module(syn: SyntheticPerpCatalog, **kwargs: object) -> FundingRateModule:
    return FundingRateModule(FundingRateModuleConfig(catalog_path=syn.path, **kwargs))


def node_run_config(
    syn: SyntheticPerpCatalog,
    with_funding: bool,
    chunk_size: int | None = None,
) -> BacktestRunConfig:
    modules = [funding_module_config(syn.path)] if with_funding else []
    data = [
        BacktestDataConfig(
            catalog_path=syn.path,
            data_cls=Bar,
            instrument_id=instrument_id,
            bar_types=[bar_type],
        )
        for instrument_id, bar_type in syn.last_bar_types.items()
    ]
    strategy = ImportableStrategyConfig(
        strategy_path="nautilus_dsm.backtest.hold:HoldPositions",
        config_path="nautilus_dsm.backtest.hold:HoldPositionsConfig",
        config={"bar_types": list(syn.last_bar_types.values()), "quantities": HELD},
    )
    return BacktestRunConfig(
        engine=BacktestEngineConfig(
            strategies=[strategy], logging=LoggingConfig(log_level="ERROR")
        ),
        venues=[
            BacktestVenueConfig(
                name="BINANCE",
                oms_type="NETTING",
                account_type="MARGIN",
                starting_balances=["1000000 USDT", "10 BTC"],
                modules=modules,
            )
        ],
        data=data,
        dispose_on_completion=False,
        raise_exception=True,
        chunk_size=chunk_size,
    )


# -- the acceptance case: a BacktestNode, a long and a short ----------------------------------


def test_node_funding_equals_hand_computed_sum_and_balance_difference(
    synthetic: SyntheticPerpCatalog,
) -> None:
    with_funding = node_run_config(synthetic, with_funding=True)
    without = node_run_config(synthetic, with_funding=False)
    node = BacktestNode(configs=[with_funding, without])
    node.run()
    engine, plain = node.get_engine(with_funding.id), node.get_engine(without.id)

    report = funding_report(engine.cache, "BINANCE")
    assert report is not None
    linear, inverse = report.totals[LINEAR_ID], report.totals[INVERSE_ID]
    # 10 rows (00, 08, 16 h on day 0; every 4 h on day 1; 00 h on day 2); the 00:00 one
    # precedes the first fill, so 9 payments per position.
    assert (linear.events, linear.payments, linear.events_without_position) == (10, 9, 1)
    assert (inverse.events, inverse.payments, inverse.events_without_position) == (10, 9, 1)
    assert (linear.currency, inverse.currency) == ("USDT", "BTC")
    assert linear.total == hand_total(synthetic, LINEAR_ID)
    assert inverse.total == hand_total(synthetic, INVERSE_ID)
    assert (linear.mark_price_events, linear.last_price_events) == (9, 0)
    assert (inverse.mark_price_events, inverse.last_price_events) == (0, 9)

    diff = {k: v - balances(plain)[k] for k, v in balances(engine).items()}
    assert diff == {"USDT": linear.total, "BTC": inverse.total}
    assert funding_report(plain.cache, "BINANCE") is None
    node.dispose()


def test_node_streaming_in_chunks_settles_the_same_sum(synthetic: SyntheticPerpCatalog) -> None:
    # chunk_size streams the catalog in batches (engine.run(streaming=True) per batch): the
    # module keeps its state across batches, so the sum is the same.
    config = node_run_config(synthetic, with_funding=True, chunk_size=700)
    node = BacktestNode(configs=[config])
    node.run()

    report = funding_report(node.get_engine(config.id).cache, "BINANCE")
    assert report is not None
    assert report.totals[LINEAR_ID].total == hand_total(synthetic, LINEAR_ID)
    assert report.totals[INVERSE_ID].total == hand_total(synthetic, INVERSE_ID)
    assert [t.payments for t in report.totals.values()] == [9, 9]
    node.dispose()


def test_engine_payments_match_hand_computation_one_by_one(
    synthetic: SyntheticPerpCatalog,
) -> None:
    funding = module(synthetic)
    run_engine(synthetic, [funding], HELD)

    opened = synthetic.start_ns + MIN_NS
    for instrument_id, source in ((LINEAR_ID, "mark"), (INVERSE_ID, "last")):
        paid = [p for p in funding.payments if p.instrument_id == instrument_id]
        expected = hand_computed(synthetic, instrument_id, HELD[instrument_id], opened)
        assert [(p.ts_event, p.mark, p.amount) for p in paid] == expected
        assert {p.mark_source for p in paid} == {source}
        assert [p.ts_settled for p in paid] == [p.ts_event for p in paid]
        assert {p.signed_quantity for p in paid} == {Decimal(HELD[instrument_id])}
    # The interval change is honoured: 8 h steps, then 4 h steps.
    boundaries = [p.ts_event for p in funding.payments if p.instrument_id == LINEAR_ID]
    steps = [(b - a) // HOUR_NS for a, b in itertools.pairwise(boundaries)]
    assert steps == [8, 8, 4, 4, 4, 4, 4, 4]


def test_long_pays_and_short_receives_a_positive_rate(synthetic: SyntheticPerpCatalog) -> None:
    funding = module(synthetic)
    run_engine(synthetic, [funding], HELD)

    positive = [p for p in funding.payments if p.rate > 0]
    assert {p.amount < 0 for p in positive if p.instrument_id == LINEAR_ID} == {True}
    assert {p.amount > 0 for p in positive if p.instrument_id == INVERSE_ID} == {True}


def test_no_open_positions_books_nothing(synthetic: SyntheticPerpCatalog) -> None:
    funding = module(synthetic)
    engine = run_engine(synthetic, [funding], held={})

    assert funding.payments == []
    totals = funding.totals()
    assert [(t.events, t.payments, t.events_without_position) for t in totals.values()] == [
        (10, 0, 10),
        (10, 0, 10),
    ]
    assert [t.total for t in totals.values()] == [Decimal(0), Decimal(0)]
    assert balances(engine) == {"USDT": Decimal("1000000.00000000"), "BTC": Decimal("10")}
    assert totals[LINEAR_ID].summary() == (
        "Funding BTCUSDT-PERP.BINANCE: 0 payments, total 0 over 10 events (10 without "
        "position); mark price from MARK bars 0x, last traded price 0x"
    )


def test_boundary_without_bar_settles_at_next_datum_on_last_price_before_it(
    synthetic: SyntheticPerpCatalog,
) -> None:
    boundary = synthetic.start_ns + 8 * HOUR_NS
    funding = module(synthetic)
    run_engine(synthetic, [funding], HELD, drop_bars_at={INVERSE_ID: boundary})

    (paid,) = [
        p for p in funding.payments if p.instrument_id == INVERSE_ID and p.ts_event == boundary
    ]
    catalog = ParquetDataCatalog(synthetic.path)
    closes = {
        b.ts_event: b.close.as_decimal()
        for b in catalog.bars(bar_types=[synthetic.last_bar_types[INVERSE_ID]])
    }
    assert paid.mark == closes[boundary - MIN_NS]  # 07:59's close: the last price before 08:00
    assert paid.ts_settled == boundary + MIN_NS  # booked before the 08:01 datum was processed
    with localcontext() as ctx:
        ctx.prec = 60
        expected = -(Decimal(-1000) * 100 / paid.mark * paid.rate)
    assert paid.amount == expected.quantize(EIGHT_DP, rounding=ROUND_HALF_EVEN)


def test_position_opened_in_a_data_gap_after_the_boundary_does_not_pay(
    synthetic: SyntheticPerpCatalog,
) -> None:
    # No BTCUSDT-PERP bar at 08:00, so its 08:00 event settles after 08:00; a strategy timer
    # opens the positions at 08:00:30, before that. Held at 08:00: nothing.
    boundary = synthetic.start_ns + 8 * HOUR_NS
    funding = module(synthetic)
    run_engine(
        synthetic,
        [funding],
        HELD,
        drop_bars_at={LINEAR_ID: boundary},
        open_at_ns=boundary + 30_000_000_000,
    )

    paid = [p for p in funding.payments if p.instrument_id == LINEAR_ID]
    assert paid[0].ts_event == boundary + 8 * HOUR_NS
    assert len(paid) == 8
    assert funding.totals()[LINEAR_ID].events_without_position == 2


def test_position_closed_in_a_data_gap_after_the_boundary_still_pays(
    synthetic: SyntheticPerpCatalog,
) -> None:
    # Held through 08:00, closed by a timer at 08:00:30 before the delayed settlement: it pays
    # the 08:00 event on the quantity it held then, and nothing after.
    boundary = synthetic.start_ns + 8 * HOUR_NS
    funding = module(synthetic)
    run_engine(
        synthetic,
        [funding],
        HELD,
        drop_bars_at={LINEAR_ID: boundary},
        close_at_ns=boundary + 30_000_000_000,
    )

    (paid,) = [p for p in funding.payments if p.instrument_id == LINEAR_ID]
    assert (paid.ts_event, paid.ts_settled) == (boundary, boundary + 30_000_000_000)
    assert paid.signed_quantity == Decimal("0.500")
    opened = synthetic.start_ns + MIN_NS
    by_hand = hand_computed(synthetic, LINEAR_ID, HELD[LINEAR_ID], opened)
    assert (paid.ts_event, paid.mark, paid.amount) == by_hand[0]  # the 08:00 row
    (inverse,) = [p for p in funding.payments if p.instrument_id == INVERSE_ID]
    assert (inverse.ts_event, inverse.ts_settled) == (boundary, boundary)


# -- MARK bar fallback ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mark_gap(tmp_path_factory: pytest.TempPathFactory) -> SyntheticPerpCatalog:
    # SYNTHETIC data: 1 day of BTCUSDT-PERP, its MARK bar closing at 08:00 left out.
    path = tmp_path_factory.mktemp("synthetic-mark-gap")
    start = 1_704_067_200_000_000_000
    return write_synthetic_perp_catalog(
        path,
        days=1,
        interval_change_day=None,
        instrument_ids=(LINEAR_ID,),
        mark_missing_at_ns=(start + 8 * HOUR_NS,),
    )


def test_missing_mark_bar_falls_back_to_last_price(mark_gap: SyntheticPerpCatalog) -> None:
    funding = module(mark_gap)
    run_engine(mark_gap, [funding], {LINEAR_ID: "0.500"})

    gap = mark_gap.start_ns + 8 * HOUR_NS
    hours = [(p.ts_event - mark_gap.start_ns) // HOUR_NS for p in funding.payments]
    assert hours == [8, 16, 24]
    assert [p.mark_source for p in funding.payments] == ["last", "mark", "mark"]
    catalog = ParquetDataCatalog(mark_gap.path)
    closes = {
        b.ts_event: b.close.as_decimal()
        for b in catalog.bars(bar_types=[mark_gap.last_bar_types[LINEAR_ID]])
    }
    assert funding.payments[0].mark == closes[gap]
    totals = funding.totals()[LINEAR_ID]
    assert (totals.mark_price_events, totals.last_price_events) == (2, 1)


def test_missing_mark_bar_with_raise_policy_stops_the_run(mark_gap: SyntheticPerpCatalog) -> None:
    funding = module(mark_gap, mark_fallback="raise")
    with pytest.raises(
        FundingSettlementError,
        match=re.escape(
            "cannot settle funding of BTCUSDT-PERP.BINANCE at 2024-01-01T08:00:00Z: no "
            "BTCUSDT-PERP.BINANCE-1-MINUTE-MARK-EXTERNAL bar closes at 2024-01-01T08:00:00Z; "
            "ingest the mark price klines, or set mark_fallback='last'"
        ),
    ):
        run_engine(mark_gap, [funding], {LINEAR_ID: "0.500"})


# -- errors of our own, before the run --------------------------------------------------------


def test_instrument_without_funding_rows_fails_at_add_venue(tmp_path: Path) -> None:
    # SYNTHETIC catalog: both perpetuals defined, funding rows for the linear one only.
    syn = write_synthetic_perp_catalog(tmp_path, days=1, funding_for=(LINEAR_ID,))
    with pytest.raises(
        FundingSettlementError,
        match=re.escape(
            f"the catalog at {tmp_path} holds no FundingRateUpdate rows for BTCUSD-PERP.BINANCE; "
            "ingest its funding rates into the catalog, or leave it out of the module's "
            "instrument_ids"
        ),
    ):
        make_engine(syn, [module(syn)])


def test_configured_instrument_ids_limit_what_is_settled(tmp_path: Path) -> None:
    syn = write_synthetic_perp_catalog(tmp_path, days=1, funding_for=(LINEAR_ID,))
    funding = module(syn, instrument_ids=[LINEAR_ID])
    run_engine(syn, [funding], HELD)
    assert list(funding.totals()) == [LINEAR_ID]
    assert {p.instrument_id for p in funding.payments} == {LINEAR_ID}


def test_catalog_path_that_is_not_a_directory_fails(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    funding = FundingRateModule(FundingRateModuleConfig(catalog_path=str(missing)))
    engine = BacktestEngine(BacktestEngineConfig(logging=LoggingConfig(log_level="ERROR")))
    with pytest.raises(FundingSettlementError, match=re.escape(f"catalog_path='{missing}' is not")):
        engine.add_venue(
            BINANCE, OmsType.NETTING, AccountType.MARGIN, [Money(1, USDT)], modules=[funding]
        )


def test_catalog_without_perpetuals_of_the_venue_fails(tmp_path: Path) -> None:
    funding = FundingRateModule(FundingRateModuleConfig(catalog_path=str(tmp_path)))
    engine = BacktestEngine(BacktestEngineConfig(logging=LoggingConfig(log_level="ERROR")))
    with pytest.raises(
        FundingSettlementError,
        match=re.escape(f"the catalog at {tmp_path} defines no perpetual of venue BINANCE"),
    ):
        engine.add_venue(
            BINANCE, OmsType.NETTING, AccountType.MARGIN, [Money(1, USDT)], modules=[funding]
        )


def test_instrument_of_another_venue_fails(synthetic: SyntheticPerpCatalog) -> None:
    with pytest.raises(
        FundingSettlementError,
        match=re.escape("instrument_ids holds BTCUSDT-PERP.BYBIT, which is not on venue BINANCE"),
    ):
        make_engine(synthetic, [module(synthetic, instrument_ids=["BTCUSDT-PERP.BYBIT"])])


def test_raise_policy_without_any_mark_bars_fails_before_the_run(
    synthetic: SyntheticPerpCatalog,
) -> None:
    with pytest.raises(
        FundingSettlementError,
        match=re.escape(
            "holds no BTCUSD-PERP.BINANCE-1-MINUTE-MARK-EXTERNAL bars and mark_fallback='raise'"
        ),
    ):
        make_engine(synthetic, [module(synthetic, mark_fallback="raise")])


def test_off_boundary_funding_row_fails_at_add_venue(tmp_path: Path) -> None:
    syn = write_synthetic_perp_catalog(
        tmp_path, days=1, instrument_ids=(LINEAR_ID,), funding_for=()
    )
    instrument = syn.instruments[LINEAR_ID]
    late = syn.start_ns + 8 * HOUR_NS + 7_000_000  # a raw calc_time, not floored
    row = FundingRateUpdate(instrument.id, Decimal("0.0001"), late, late, 480, None)
    ParquetDataCatalog(syn.path).write_data([row])
    with pytest.raises(
        FundingSettlementError,
        match=re.escape("at 2024-01-01T08:00:00.007Z in the catalog at"),
    ):
        make_engine(syn, [module(syn)])


def test_node_surfaces_the_error_of_a_catalog_without_funding(tmp_path: Path) -> None:
    # SYNTHETIC catalog with bars and instruments but no funding rows at all.
    syn = write_synthetic_perp_catalog(tmp_path, days=1, funding_for=())
    node = BacktestNode(configs=[node_run_config(syn, with_funding=True)])
    with pytest.raises(
        FundingSettlementError,
        match=re.escape("holds no FundingRateUpdate rows for BTCUSD-PERP.BINANCE"),
    ):
        node.run()
    node.dispose()
