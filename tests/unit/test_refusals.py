"""The refusal texts of DSMDataClient (pure): which bar types are refused, and how."""

from __future__ import annotations

import pytest
from nautilus_trader.model.data import BarType

from nautilus_dsm.refusals import BINANCE_CLIENT, bar_type_refusal, subscription_refusal


@pytest.mark.parametrize(
    "bar_type",
    [
        "BTCUSDT.BINANCE-1-MINUTE-LAST-EXTERNAL",
        "BTCUSD-PERP.BINANCE-1-MONTH-LAST-EXTERNAL",
        "BTCUSDT.BINANCE-2-MINUTE-LAST-EXTERNAL",  # no such kline: refused later, by interval_for
    ],
)
def test_last_external_bar_types_are_not_refused_here(bar_type: str) -> None:
    assert bar_type_refusal(BarType.from_str(bar_type)) is None


def test_a_quote_price_type_is_refused_before_internal_aggregation() -> None:
    refusal = bar_type_refusal(BarType.from_str("BTCUSDT.BINANCE-1-HOUR-ASK-INTERNAL"))

    assert refusal == (
        "BTCUSDT.BINANCE-1-HOUR-ASK-INTERNAL aggregates ASK prices; DSMDataClient serves "
        "EXTERNAL Binance kline bars (LAST): use BTCUSDT.BINANCE-1-HOUR-LAST-EXTERNAL; ASK bars "
        "are aggregated from quote ticks, which Binance streams live only: subscribe to "
        f"BTCUSDT.BINANCE-1-HOUR-ASK-INTERNAL with {BINANCE_CLIENT}"
    )


def test_the_composite_example_names_this_client_id() -> None:
    refusal = subscription_refusal("trade_ticks", "ETHUSDT.BINANCE", client_id="DSM-2")

    assert refusal.endswith(
        "(e.g. ETHUSDT.BINANCE-5-MINUTE-LAST-INTERNAL@1-MINUTE-EXTERNAL with "
        'client_id=ClientId("DSM-2"))'
    )
