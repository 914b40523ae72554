"""The cache selection and plan of ``cache info`` / ``cache clear`` (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from nautilus_dsm.cli.cache import selection_of
from nautilus_dsm.common import MarketType, to_ms
from nautilus_dsm.dsm.cache_selection import CachedPeriod, CacheSelection, plan_selection
from nautilus_dsm.errors import InvalidInput

ROOT = Path("/cache")
D1 = to_ms(datetime(2024, 1, 1, tzinfo=UTC))
D2 = to_ms(datetime(2024, 1, 2, tzinfo=UTC))
D3 = to_ms(datetime(2024, 1, 3, tzinfo=UTC))


def _period(
    market: str = "futures_usdt",
    symbol: str = "BTCUSDT",
    interval: str = "1m",
    key: str = "2024-01-01",
    *,
    provisional: bool = False,
    gaps: int | None = None,
) -> CachedPeriod:
    name = f"{key}.provisional.parquet" if provisional else f"{key}.parquet"
    return CachedPeriod(
        market, symbol, interval, key, provisional, 100, ROOT / market / symbol / name, gaps
    )


PERIODS = [
    _period(key="2024-01-02", gaps=1),
    _period(key="2024-01-01", gaps=0),
    _period(key="2024-01-03", provisional=True, gaps=0),
    _period("spot", interval="1h", key="2024-01-01", gaps=0),
    _period("futures_coin", "BTCUSD_PERP", "1d", key="2024", gaps=0),
]


def _keys(selection: CacheSelection) -> list[tuple[str, str, str, str]]:
    plan = plan_selection(ROOT, PERIODS, selection)
    return [(p.market, p.symbol, p.interval, p.key) for p in plan.periods]


def test_an_empty_selection_picks_everything_grouped_per_series_in_key_order() -> None:
    assert _keys(CacheSelection()) == [
        ("futures_coin", "BTCUSD_PERP", "1d", "2024"),
        ("futures_usdt", "BTCUSDT", "1m", "2024-01-01"),
        ("futures_usdt", "BTCUSDT", "1m", "2024-01-02"),
        ("futures_usdt", "BTCUSDT", "1m", "2024-01-03"),
        ("spot", "BTCUSDT", "1h", "2024-01-01"),
    ]
    assert CacheSelection().everything and CacheSelection().whole_series


def test_a_range_selects_the_period_files_it_overlaps_with_exact_ms_bounds() -> None:
    # [D2, D3) overlaps only the 2024-01-02 day files, and the 2024 year file.
    assert _keys(CacheSelection(start_ms=D2, end_ms=D3)) == [
        ("futures_coin", "BTCUSD_PERP", "1d", "2024"),
        ("futures_usdt", "BTCUSDT", "1m", "2024-01-02"),
    ]
    # One ms into the next day picks it too; an end at a day's open excludes that day.
    assert [k[3] for k in _keys(CacheSelection(interval="1m", start_ms=D2 - 1, end_ms=D2))] == [
        "2024-01-01"
    ]
    assert [k[3] for k in _keys(CacheSelection(interval="1m", start_ms=D3))] == ["2024-01-03"]
    assert not CacheSelection(start_ms=D2).whole_series


def test_gaps_only_picks_provisional_periods_and_periods_recording_gaps() -> None:
    assert _keys(CacheSelection(gaps_only=True)) == [
        ("futures_usdt", "BTCUSDT", "1m", "2024-01-02"),
        ("futures_usdt", "BTCUSDT", "1m", "2024-01-03"),
    ]


def test_market_symbol_interval_narrow_to_series() -> None:
    assert _keys(CacheSelection(symbol="BTCUSDT", interval="1h")) == [
        ("spot", "BTCUSDT", "1h", "2024-01-01")
    ]
    plan = plan_selection(ROOT, PERIODS, CacheSelection(market="futures_usdt"))
    assert (plan.files, plan.bytes, plan.provisional) == (3, 300, 1)
    assert plan.to_dict(quarantined=2) == {
        "root": "/cache",
        "selection": "futures_usdt / every symbol / every interval",
        "files": 3,
        "provisional": 1,
        "bytes": 300,
        "quarantined": 2,
        "entries": [
            {
                "market": "futures_usdt",
                "symbol": "BTCUSDT",
                "interval": "1m",
                "files": 3,
                "provisional": 1,
                "bytes": 300,
                "first": "2024-01-01",
                "last": "2024-01-03",
            }
        ],
    }


def test_the_selection_in_words() -> None:
    selection = CacheSelection("spot", "BTCUSDT", "1mo", D1, None, gaps_only=True)

    assert selection.describe() == (
        "spot / BTCUSDT / 1mo, periods overlapping 2024-01-01T00:00:00Z..the last period, "
        "provisional periods and periods with gaps only"
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            (None, "BTCUSDT-PERP.BINANCE", None, None, None, False),
            CacheSelection("futures_usdt", "BTCUSDT"),
        ),
        ((None, "btcusdt", "1M", None, None, False), CacheSelection(None, "BTCUSDT", "1mo")),
        (
            (None, "BTCUSD_PERP", None, None, None, False),
            CacheSelection("futures_coin", "BTCUSD_PERP"),
        ),
        (
            (MarketType.SPOT, "BTCUSDT", None, "2024-01-02", "2024-01-03T00:00:00Z", True),
            CacheSelection("spot", "BTCUSDT", None, D2, D3, True),
        ),
    ],
)
def test_selection_of_the_command_options(args: tuple, expected: CacheSelection) -> None:
    assert selection_of(*args) == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            (None, None, None, "2024-01-03", "2024-01-02", False),
            "--end '2024-01-02' is not after --start '2024-01-03'; swap them",
        ),
        (
            (MarketType.SPOT, "BTCUSDT-PERP.BINANCE", None, None, None, False),
            "BTCUSDT-PERP.BINANCE is a USDT-margined futures instrument, but market type SPOT "
            "was requested; use MarketType.FUTURES_USDT (--market-type futures_usdt) or leave "
            "it unset, or use the spot instrument id (e.g. BTCUSDT.BINANCE)",
        ),
        (
            (None, None, None, "yesterday", None, False),
            "--start 'yesterday' is not a date; use a UTC date like 2024-01-01 or an ISO "
            "datetime like 2024-01-01T12:00:00Z",
        ),
    ],
)
def test_bad_selection_options_are_refused(args: tuple, message: str) -> None:
    with pytest.raises(InvalidInput) as err:
        selection_of(*args)

    assert str(err.value) == message
