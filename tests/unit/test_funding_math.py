"""Funding payment arithmetic and funding-row validation: pure, exact Decimals."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from nautilus_trader.model.data import FundingRateUpdate
from nautilus_trader.model.identifiers import InstrumentId

from nautilus_dsm.backtest import (
    FundingEvent,
    FundingReport,
    FundingTotals,
    funding_events,
    funding_module_config,
    funding_payment,
    mark_bar_type,
)
from nautilus_dsm.errors import FundingSettlementError

D = Decimal
HOUR_NS = 3_600_000_000_000
T0 = 1_704_067_200_000_000_000  # 2024-01-01T00:00Z
BTCUSDT = InstrumentId.from_str("BTCUSDT-PERP.BINANCE")


def row(ts: int, rate: object, interval: int | None = 480) -> FundingRateUpdate:
    return FundingRateUpdate(BTCUSDT, rate, ts, ts, interval, None)


# -- payments ----------------------------------------------------------------------------------


def test_linear_long_pays_a_positive_rate_exactly() -> None:
    # 0.5 x 42010.3 x 0.0001 = 2.100515 USDT, paid by the long.
    assert funding_payment(D("0.5"), D("42010.3"), D("0.0001"), precision=8) == D("-2.10051500")


def test_linear_short_receives_a_positive_rate() -> None:
    assert funding_payment(D("-0.5"), D("42010.3"), D("0.0001"), precision=8) == D("2.10051500")


def test_linear_long_receives_a_negative_rate() -> None:
    assert funding_payment(D("2"), D("2300.01"), D("-0.000375"), precision=8) == D("1.72500750")


def test_linear_amount_is_rounded_to_the_currency_precision() -> None:
    # 0.5 x 41991.73 x 0.00012345 = 2.59193953425 -> 2.59193953
    assert funding_payment(D("0.5"), D("41991.73"), D("0.00012345"), precision=8) == D(
        "-2.59193953"
    )


def test_linear_multiplier_scales_the_notional() -> None:
    assert funding_payment(D("3"), D("100"), D("0.001"), precision=2, multiplier=D("10")) == D(
        "-3.00"
    )


def test_inverse_short_receives_multiplier_over_mark_in_base_currency() -> None:
    # 1000 contracts x 100 USD / 42020.1 x 0.0001 = 0.000237981346...BTC, received by the short.
    assert funding_payment(
        D("-1000"), D("42020.1"), D("0.0001"), precision=8, inverse=True, multiplier=D("100")
    ) == D("0.00023798")


def test_inverse_long_pays() -> None:
    # 700 x 100 / 41897.3 x 0.00025001 = 0.000417704720...: exact rational, rounded once.
    amount = funding_payment(
        D("700"), D("41897.3"), D("0.00025001"), precision=8, inverse=True, multiplier=D("100")
    )
    assert amount == D("-0.00041770")


def test_ties_round_half_even_not_half_up() -> None:
    # 1 x 1 x 0.000000005 = 5e-9 exactly: half-even keeps 0, half-up would give -1e-8.
    assert funding_payment(D(1), D(1), D("0.000000005"), precision=8) == D(0)
    # 1.5e-8 -> 2e-8 (to even), 2.5e-8 -> 2e-8 (to even).
    assert funding_payment(D(1), D(1), D("0.000000015"), precision=8) == D("-0.00000002")
    assert funding_payment(D(1), D(1), D("0.000000025"), precision=8) == D("-0.00000002")


def test_inverse_tie_is_detected_exactly_on_rationals() -> None:
    # 1 / 8 x 0.00000004 = 5e-9 exactly (a tie only exact arithmetic sees): half-even -> 0.
    assert funding_payment(D(1), D(8), D("0.00000004"), precision=8, inverse=True) == D(0)
    assert funding_payment(D(3), D(8), D("0.00000004"), precision=8, inverse=True) == D(
        "-0.00000002"
    )


def test_zero_rate_pays_nothing() -> None:
    assert funding_payment(D("0.5"), D("42010.3"), D("0.00000000"), precision=8) == D(0)


def test_amount_has_the_currency_exponent() -> None:
    amount = funding_payment(D("0.5"), D("42010.3"), D("0.0001"), precision=8)
    assert amount.as_tuple().exponent == -8


@pytest.mark.parametrize("mark", [D(0), D("-1")])
def test_non_positive_mark_is_refused(mark: Decimal) -> None:
    with pytest.raises(FundingSettlementError, match=f"mark={mark} must be positive"):
        funding_payment(D(1), mark, D("0.0001"), precision=8)


def test_non_finite_values_are_refused() -> None:
    with pytest.raises(FundingSettlementError, match="rate=Decimal\\('NaN'\\) must be a finite"):
        funding_payment(D(1), D(1), D("NaN"), precision=8)
    with pytest.raises(
        FundingSettlementError, match=re.escape("signed_quantity=0.5 must be a finite")
    ):
        funding_payment(0.5, D(1), D("0.0001"), precision=8)  # type: ignore[arg-type]


def test_sum_of_many_payments_is_exact() -> None:
    # 90 events of 0.01 % on 0.001 BTC at 40000.1: 0.00400001 USDT each, exactly.
    total = sum(
        (funding_payment(D("0.001"), D("40000.1"), D("0.0001"), precision=8) for _ in range(90)),
        D(0),
    )
    assert total == D("-0.36000090")


# -- funding rows ------------------------------------------------------------------------------


def test_funding_events_take_rates_from_str_exactly_and_sort() -> None:
    rows = [row(T0 + 8 * HOUR_NS, "0.00012345"), row(T0, D("-0.00003750"))]
    assert funding_events(BTCUSDT.value, rows) == [
        FundingEvent(T0, D("-0.00003750"), 480, None),
        FundingEvent(T0 + 8 * HOUR_NS, D("0.00012345"), 480, None),
    ]


def test_interval_change_from_8h_to_4h_is_accepted() -> None:
    rows = [
        row(T0, "0.0001"),
        row(T0 + 8 * HOUR_NS, "0.0001"),
        row(T0 + 12 * HOUR_NS, "0.0001", 240),
    ]
    assert [e.interval_minutes for e in funding_events(BTCUSDT.value, rows)] == [480, 480, 240]


def test_off_boundary_event_is_refused() -> None:
    # A calc_time 7 ms after 08:00 that an ingest forgot to floor.
    rows = [row(T0 + 8 * HOUR_NS + 7_000_000, "0.0001")]
    with pytest.raises(
        FundingSettlementError,
        match="at 2024-01-01T08:00:00.007Z in the catalog is off its funding boundary "
        r"\(interval 480 min\); floor calc_time",
    ):
        funding_events(BTCUSDT.value, rows)


def test_event_off_an_8h_boundary_but_on_the_hour_is_refused() -> None:
    with pytest.raises(FundingSettlementError, match="off its funding boundary"):
        funding_events(BTCUSDT.value, [row(T0 + 4 * HOUR_NS, "0.0001", 480)])


def test_unknown_interval_requires_an_hour_boundary() -> None:
    assert funding_events(BTCUSDT.value, [row(T0 + HOUR_NS, "0.0001", None)])[0].ts_event == (
        T0 + HOUR_NS
    )
    with pytest.raises(FundingSettlementError, match=r"\(interval 60 min\)"):
        funding_events(BTCUSDT.value, [row(T0 + HOUR_NS // 2, "0.0001", None)])


def test_duplicate_boundary_is_refused() -> None:
    with pytest.raises(
        FundingSettlementError,
        match=re.escape("holds two funding rows of BTCUSDT-PERP.BINANCE at 2024-01-01T00:00:00Z"),
    ):
        funding_events(BTCUSDT.value, [row(T0, "0.0001"), row(T0, "0.0001")])


def test_non_decimal_rate_is_refused() -> None:
    with pytest.raises(FundingSettlementError, match="rate='abc', not a finite decimal"):
        funding_events(BTCUSDT.value, [row(T0, "abc")])


# -- config ------------------------------------------------------------------------------------


def test_mark_bar_type_defaults_to_1_minute_mark_external() -> None:
    assert str(mark_bar_type("BTCUSDT-PERP.BINANCE")) == (
        "BTCUSDT-PERP.BINANCE-1-MINUTE-MARK-EXTERNAL"
    )


def test_mark_bar_spec_must_be_a_mark_price() -> None:
    with pytest.raises(FundingSettlementError, match="'1-MINUTE-LAST-EXTERNAL' is not a MARK"):
        mark_bar_type("BTCUSDT-PERP.BINANCE", "1-MINUTE-LAST-EXTERNAL")


def test_funding_module_config_builds_an_importable_actor_config() -> None:
    config = funding_module_config("/tmp/catalog", ["BTCUSDT-PERP.BINANCE"])
    assert config.actor_path == "nautilus_dsm.backtest.funding:FundingRateModule"
    assert config.config_path == "nautilus_dsm.backtest.funding:FundingRateModuleConfig"
    assert config.config == {
        "catalog_path": "/tmp/catalog",
        "mark_bar_spec": "1-MINUTE-MARK-EXTERNAL",
        "mark_fallback": "last",
        "instrument_ids": ["BTCUSDT-PERP.BINANCE"],
    }


def test_funding_module_config_refuses_bad_input_early() -> None:
    with pytest.raises(FundingSettlementError, match="mark_fallback='nearest' is not one of"):
        funding_module_config("/tmp/catalog", mark_fallback="nearest")
    with pytest.raises(FundingSettlementError, match="instrument_ids holds 'BTCUSDT', not an"):
        funding_module_config("/tmp/catalog", ["BTCUSDT"])
    with pytest.raises(FundingSettlementError, match=r"instrument_ids=\[\] settles nothing"):
        funding_module_config("/tmp/catalog", [])


def test_report_round_trips_through_json_exactly() -> None:
    totals = FundingTotals("BTCUSDT-PERP.BINANCE", "USDT", 2, D("-4.20103000"), 3, 1, 2, 0)
    report = FundingReport("BINANCE", {"BTCUSDT-PERP.BINANCE": totals})
    back = FundingReport.from_json(report.to_json())
    assert back == report
    assert back.totals["BTCUSDT-PERP.BINANCE"].total == D("-4.20103000")
