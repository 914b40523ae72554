"""The streamed-kline fast path gives exactly the bar the frame conversion gives, or defers."""

from __future__ import annotations

import msgspec
import pytest
from nautilus_trader.model.data import Bar, BarType

from nautilus_dsm.bars import convert_frame
from nautilus_dsm.common import Interval, MarketType
from nautilus_dsm.dsm.stream_wire import ClosedKline, klines_to_frame
from nautilus_dsm.live_stream import kline_bar
from tests.unit.test_bars import perpetual, spot

T0 = 1_704_153_600_000
NS = 1_000_000
SPOT_1S = BarType.from_str("BTCUSDT.BINANCE-1-SECOND-LAST-EXTERNAL")
PERP_1M = BarType.from_str("BTCUSDT-PERP.BINANCE-1-MINUTE-LAST-EXTERNAL")


def _kline(open_ms: int = T0, **values: str) -> ClosedKline:
    fields = {
        "open": "42000.12000000",
        "high": "42001.00000000",
        "low": "41999.01000000",
        "close": "42000.50000000",
        "volume": "1.23456000",
    } | values
    return ClosedKline(
        MarketType.SPOT, "btcusdt@kline_1s", "BTCUSDT", "1s", open_ms, open_ms + 999,
        quote_volume="0", trades=3, taker_buy_base_volume="0", taker_buy_quote_volume="0",
        event_ms=open_ms + 1000, received_ns=0, **fields,
    )  # fmt: skip


def _fields(bar: Bar) -> tuple:
    return (bar.bar_type, bar.open, bar.high, bar.low, bar.close, bar.volume, bar.ts_event)


@pytest.mark.parametrize(
    ("bar_type", "interval", "instrument", "kline"),
    [
        (SPOT_1S, Interval.SECOND_1, spot("BTCUSDT", "0.01000000", "0.00001000"), _kline()),
        (
            PERP_1M,
            Interval.MINUTE_1,
            perpetual("BTCUSDT-PERP", "0.10", "0.001"),
            msgspec.structs.replace(
                _kline(open="42000.10", high="42001.00", low="41999.00", close="42000.50"),
                interval="1m",
                volume="12.345",
            ),
        ),
    ],
    ids=["spot-8-decimals", "perp-tick-0.10"],
)
def test_fast_path_equals_the_frame_conversion(bar_type, interval, instrument, kline) -> None:
    fast = kline_bar(bar_type, interval, instrument, kline, ts_init=T0 * NS + 5)

    [slow] = convert_frame(klines_to_frame([kline]), bar_type, instrument).bars
    assert fast is not None and type(fast) is Bar
    assert _fields(fast) == _fields(slow)
    assert fast.ts_init == T0 * NS + 5
    assert fast.open.precision == instrument.price_precision
    assert fast.volume.precision == instrument.size_precision


@pytest.mark.parametrize(
    "kline",
    [
        _kline(open_ms=T0 + 1),  # off the grid
        _kline(open="42000.123456789"),  # more decimals than the instrument
        _kline(low="42002.00000000"),  # low above high
        _kline(volume="-1"),
        _kline(close="NaN"),
    ],
    ids=["off-grid", "off-precision", "ohlc", "negative", "nan"],
)
def test_anything_unusual_is_left_to_the_full_conversion(kline) -> None:
    instrument = spot("BTCUSDT", "0.01000000", "0.00001000")

    assert kline_bar(SPOT_1S, Interval.SECOND_1, instrument, kline, ts_init=0) is None
