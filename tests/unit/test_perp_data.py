"""Perpetual data -> Nautilus types: MARK bars, IndexPriceUpdate, FundingRateUpdate (exact)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import polars as pl
import pytest
from nautilus_trader.model.enums import PriceType

from nautilus_dsm.backtest.synthetic import synthetic_instruments
from nautilus_dsm.dsm.funding_schema import FUNDING_SCHEMA
from nautilus_dsm.dsm.schema import FRAME_SCHEMA
from nautilus_dsm.errors import InvalidInput
from nautilus_dsm.perp_data import (
    bar_type_for_dataset,
    dataset_of_bar_type,
    frame_to_funding_updates,
    frame_to_index_prices,
    frame_to_mark_bars,
    mark_bar_type_for,
)

T0_MS = 1_704_067_200_000  # 2024-01-01T00:00Z
T0_NS = T0_MS * 1_000_000
H_NS = 3_600_000_000_000
LINEAR = "BTCUSDT-PERP.BINANCE"


@pytest.fixture(scope="module")
def linear():
    return synthetic_instruments([LINEAR])[LINEAR]


def _klines(closes: list[str]) -> pl.DataFrame:
    n = len(closes)
    opens = [T0_MS + 60_000 * k for k in range(n)]
    c = [Decimal(x) for x in closes]
    return pl.DataFrame(
        {
            "open_time": opens,
            "close_time": [o + 59_999 for o in opens],
            "open": c,
            "high": c,
            "low": c,
            "close": c,
            "volume": [Decimal(0)] * n,
            "quote_volume": [Decimal(0)] * n,
            "trades": [60] * n,
            "taker_buy_base_volume": [Decimal(0)] * n,
            "taker_buy_quote_volume": [Decimal(0)] * n,
        },
        schema={**FRAME_SCHEMA, "open_time": pl.Int64, "close_time": pl.Int64},
    ).with_columns(pl.col("open_time", "close_time").cast(FRAME_SCHEMA["open_time"]))


def test_mark_bar_type_and_bars(linear):
    bars = frame_to_mark_bars(_klines(["42010.3", "42011.0"]), linear, "1m")

    assert str(mark_bar_type_for(LINEAR, "1m")) == "BTCUSDT-PERP.BINANCE-1-MINUTE-MARK-EXTERNAL"
    assert [str(b.close) for b in bars] == ["42010.30", "42011.00"]
    assert bars[0].bar_type.spec.price_type == PriceType.MARK
    assert [b.ts_event for b in bars] == [T0_NS + 60 * 10**9, T0_NS + 120 * 10**9]
    assert dataset_of_bar_type(bars[0].bar_type).value == "mark_price_klines"


def test_index_prices_at_each_close_rounded_to_the_tick(linear):
    updates = frame_to_index_prices(_klines(["42010.25", "42010.35000001"]), linear, "1m")

    assert [str(u.value) for u in updates] == ["42010.20", "42010.40"]
    assert [u.ts_event for u in updates] == [T0_NS + 60 * 10**9, T0_NS + 120 * 10**9]
    assert [u.ts_init for u in updates] == [u.ts_event for u in updates]


def test_no_bar_type_for_index_klines():
    with pytest.raises(InvalidInput, match="no Nautilus bar type"):
        bar_type_for_dataset(LINEAR, "1m", "index")


def _funding(rows) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "funding_time": [r[0] for r in rows],
            "calc_time": [r[0] + 7 for r in rows],
            "funding_interval_hours": [r[1] for r in rows],
            "funding_rate": [Decimal(r[2]) for r in rows],
            "mark_price": [None] * len(rows),
        },
        schema={**FUNDING_SCHEMA, "funding_time": pl.Int64, "calc_time": pl.Int64},
    ).with_columns(pl.col("funding_time", "calc_time").cast(FUNDING_SCHEMA["calc_time"]))


def test_funding_updates_exact_with_interval_change():
    h = 3_600_000
    frame = _funding(
        [(T0_MS, 8, "0.00010000"), (T0_MS + 8 * h, 8, "-0.00003750"), (T0_MS + 12 * h, 4, "0")]
    )

    updates = frame_to_funding_updates(frame, LINEAR)

    assert [u.rate for u in updates] == [Decimal("0.0001"), Decimal("-0.0000375"), Decimal(0)]
    assert [str(u.rate) for u in updates] == ["0.0001", "-0.0000375", "0"]
    assert [u.ts_event for u in updates] == [T0_NS, T0_NS + 8 * H_NS, T0_NS + 12 * H_NS]
    assert [u.interval for u in updates] == [480, 480, 240]
    assert [u.next_funding_ns for u in updates] == [
        T0_NS + 8 * H_NS,
        T0_NS + 12 * H_NS,
        T0_NS + 16 * H_NS,
    ]


def test_funding_row_of_unknown_interval_is_refused():
    with pytest.raises(InvalidInput, match="unknown or not dividing its boundary"):
        frame_to_funding_updates(_funding([(T0_MS, None, "0.0001")]), LINEAR)
    with pytest.raises(InvalidInput, match="unknown or not dividing its boundary"):
        frame_to_funding_updates(_funding([(T0_MS + 3_600_000, 8, "0.0001")]), LINEAR)


def test_start_constant():
    assert datetime.fromtimestamp(T0_MS / 1000, UTC) == datetime(2024, 1, 1, tzinfo=UTC)
