"""KlineCache on disk: layout, atomic writes, corrupt files, fast multi-period reads."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from nautilus_dsm.common import Interval, MarketType, rest_base_url, to_ms
from nautilus_dsm.dsm.cache import KlineCache
from nautilus_dsm.dsm.schema import FRAME_SCHEMA
from nautilus_dsm.errors import InvalidInput

UM = MarketType.FUTURES_USDT
M1 = Interval.MINUTE_1
T_JAN2_NOON = to_ms(datetime(2024, 1, 2, 12, tzinfo=UTC))
# The REST endpoints that served a first bar (local addresses: nothing is requested here).
EP = rest_base_url(UM, "http://127.0.0.1:9001")
EP_OTHER = rest_base_url(UM, "http://127.0.0.1:9002")


def day_frame(day: date, n: int = 1440, step_ms: int = 60_000) -> pl.DataFrame:
    start = to_ms(datetime(day.year, day.month, day.day, tzinfo=UTC))
    opens = [start + i * step_ms for i in range(n)]
    price = [Decimal(f"42000.{i:08d}") for i in range(n)]
    one = [Decimal("1.5")] * n
    return pl.DataFrame(
        {
            "open_time": opens,
            "close_time": [t + step_ms - 1 for t in opens],
            "open": price,
            "high": price,
            "low": price,
            "close": price,
            "volume": one,
            "quote_volume": one,
            "trades": list(range(n)),
            "taker_buy_base_volume": one,
            "taker_buy_quote_volume": one,
        },
        schema=FRAME_SCHEMA,
    )


def test_write_then_read_round_trips_exactly(cache_dir: Path) -> None:
    cache = KlineCache(cache_dir)
    frame = day_frame(date(2024, 1, 3))

    path = cache.write(UM, "BTCUSDT", M1, "2024-01-03", frame)

    assert path == cache_dir / "binance" / "futures_usdt" / "BTCUSDT" / "1m" / "2024-01-03.parquet"
    assert cache.read(UM, "BTCUSDT", M1, "2024-01-03").equals(frame)
    assert [p.name for p in path.parent.iterdir()] == ["2024-01-03.parquet"]  # no temp left


def test_read_absent_period_is_none(cache_dir: Path) -> None:
    assert KlineCache(cache_dir).read(UM, "BTCUSDT", M1, "2024-01-03") is None


def test_truncated_file_is_counted_deleted_and_absent(cache_dir: Path) -> None:
    cache = KlineCache(cache_dir)
    path = cache.write(UM, "BTCUSDT", M1, "2024-01-03", day_frame(date(2024, 1, 3)))
    path.write_bytes(path.read_bytes()[:500])

    assert cache.read(UM, "BTCUSDT", M1, "2024-01-03") is None
    assert cache.corrupt == 1
    assert not path.exists()


def test_wrong_schema_file_is_counted_and_absent(cache_dir: Path) -> None:
    cache = KlineCache(cache_dir)
    path = cache.path(UM, "BTCUSDT", M1, "2024-01-03")
    path.parent.mkdir(parents=True)
    day_frame(date(2024, 1, 3)).drop("trades").write_parquet(path)

    assert cache.read(UM, "BTCUSDT", M1, "2024-01-03") is None
    assert cache.corrupt == 1


def test_read_many_skips_a_corrupt_file_and_keeps_the_rest(cache_dir: Path) -> None:
    cache = KlineCache(cache_dir)
    days = [date(2024, 1, d) for d in (1, 2, 3)]
    for day in days:
        cache.write(UM, "BTCUSDT", M1, day.isoformat(), day_frame(day))
    cache.path(UM, "BTCUSDT", M1, "2024-01-02").write_bytes(b"not parquet")

    frame, hits = cache.read_many(UM, "BTCUSDT", M1, [d.isoformat() for d in days] + ["2024-01-04"])

    assert hits == ["2024-01-01", "2024-01-03"]
    assert frame.equals(pl.concat([day_frame(days[0]), day_frame(days[2])]))
    assert cache.corrupt == 1


def test_read_many_of_a_year_of_minutes_is_fast(cache_dir: Path) -> None:
    cache = KlineCache(cache_dir)
    template = day_frame(date(2024, 1, 1))
    keys = []
    for i in range(365):
        day = date(2024, 1, 1) + timedelta(days=i)
        shifted = template.with_columns(
            pl.col("open_time") + timedelta(days=i), pl.col("close_time") + timedelta(days=i)
        )
        cache.write(UM, "BTCUSDT", M1, day.isoformat(), shifted)
        keys.append(day.isoformat())

    cpu = time.process_time()
    frame, hits = cache.read_many(UM, "BTCUSDT", M1, keys)
    cpu = time.process_time() - cpu

    assert frame.height == 365 * 1440
    assert len(hits) == 365
    assert cpu < 1.0


def test_concurrent_writers_of_one_period_both_succeed(cache_dir: Path) -> None:
    cache = KlineCache(cache_dir)
    frame = day_frame(date(2024, 1, 3))

    with ThreadPoolExecutor(8) as pool:
        paths = list(
            pool.map(lambda _: cache.write(UM, "BTCUSDT", M1, "2024-01-03", frame), range(16))
        )

    assert len(set(paths)) == 1
    assert cache.read(UM, "BTCUSDT", M1, "2024-01-03").equals(frame)
    assert [p.name for p in paths[0].parent.iterdir()] == ["2024-01-03.parquet"]


@pytest.mark.parametrize("symbol", ["../etc", "btcusdt", "BTC/USDT", "A"])
def test_path_refuses_symbols_outside_binance_alphabet(cache_dir: Path, symbol: str) -> None:
    with pytest.raises(InvalidInput, match="invalid symbol"):
        KlineCache(cache_dir).path(UM, symbol, M1, "2024-01-03")


def test_path_refuses_bad_period_keys(cache_dir: Path) -> None:
    with pytest.raises(InvalidInput, match=r"invalid cache period '\.\./2024'"):
        KlineCache(cache_dir).path(UM, "BTCUSDT", M1, "../2024")


def test_info_and_clear(cache_dir: Path) -> None:
    cache = KlineCache(cache_dir)
    cache.write(UM, "BTCUSDT", M1, "2024-01-01", day_frame(date(2024, 1, 1)))
    cache.write(UM, "BTCUSDT", M1, "2024-01-02", day_frame(date(2024, 1, 2)))
    cache.write(
        MarketType.SPOT,
        "ETHUSDT",
        Interval.HOUR_1,
        "2024-01-01",
        day_frame(date(2024, 1, 1), 24, 3_600_000),  # the cache refuses off-grid bars
    )

    info = cache.info()

    assert info["files"] == 3
    assert [
        (e["market"], e["symbol"], e["interval"], e["files"], e["first"], e["last"])
        for e in info["entries"]
    ] == [
        ("futures_usdt", "BTCUSDT", "1m", 2, "2024-01-01", "2024-01-02"),
        ("spot", "ETHUSDT", "1h", 1, "2024-01-01", "2024-01-01"),
    ]
    assert info["bytes"] == sum(e["bytes"] for e in info["entries"]) > 0
    assert cache.clear(market="spot") == 1
    assert cache.info()["files"] == 2
    assert cache.clear() == 2
    assert cache.info()["files"] == 0


def test_first_bar_sidecar_round_trips_beside_the_series_folder(cache_dir: Path) -> None:
    cache = KlineCache(cache_dir)
    first = to_ms(datetime(2024, 1, 2, 12, tzinfo=UTC))

    path = cache.write_first_bar(UM, "ETHUSDT", M1, first, endpoint=EP)

    assert path == cache_dir / "binance" / "futures_usdt" / "ETHUSDT" / "1m.first_bar.json"
    assert json.loads(path.read_text()) == {
        "market": "futures_usdt",
        "symbol": "ETHUSDT",
        "interval": "1m",
        "first_open_ms": first,
        "first_open": "2024-01-02T12:00:00Z",
        "endpoint": "http://127.0.0.1:9001/fapi/v1",
    }
    assert [p.name for p in path.parent.iterdir()] == ["1m.first_bar.json"]  # no temp left
    assert cache.read_first_bar(UM, "ETHUSDT", M1, endpoint=EP) == first
    assert cache.read_first_bar(UM, "ETHUSDT", Interval.HOUR_1, endpoint=EP) is None
    assert cache.read_first_bar(MarketType.SPOT, "ETHUSDT", M1, endpoint=EP) is None
    assert cache.corrupt == 0


def test_monthly_first_bar_sidecar_does_not_collide_with_1m(cache_dir: Path) -> None:
    cache = KlineCache(cache_dir)
    cache.write_first_bar(UM, "ETHUSDT", M1, T_JAN2_NOON, endpoint=EP)

    path = cache.write_first_bar(
        UM, "ETHUSDT", Interval.MONTH_1, to_ms(datetime(2024, 1, 1, tzinfo=UTC)), endpoint=EP
    )

    assert path.name == "1mo.first_bar.json"
    assert cache.read_first_bar(UM, "ETHUSDT", Interval.MONTH_1, endpoint=EP) == to_ms(
        datetime(2024, 1, 1, tzinfo=UTC)
    )


@pytest.mark.parametrize(
    "body",
    [
        b'{"first_open_ms": ',
        b"[1704196800000]",
        b'{"market": "spot", "symbol": "ETHUSDT", "interval": "1m", "first_open_ms": 0}',
        b'{"market": "futures_usdt", "symbol": "BTCUSDT", "interval": "1m", "first_open_ms": 0}',
        b'{"market": "futures_usdt", "symbol": "ETHUSDT", "interval": "1m", '
        b'"first_open_ms": 1704196800001}',
        b'{"market": "futures_usdt", "symbol": "ETHUSDT", "interval": "1m", '
        b'"first_open_ms": -60000}',
        b'{"market": "futures_usdt", "symbol": "ETHUSDT", "interval": "1m", "first_open_ms": true}',
        b'{"market": "futures_usdt", "symbol": "ETHUSDT", "interval": "1m", '
        b'"first_open_ms": "1704196800000"}',
    ],
)
def test_invalid_first_bar_sidecar_is_counted_deleted_and_absent(
    cache_dir: Path, body: bytes
) -> None:
    cache = KlineCache(cache_dir)
    path = cache.first_bar_path(UM, "ETHUSDT", M1)
    path.parent.mkdir(parents=True)
    path.write_bytes(body)

    assert cache.read_first_bar(UM, "ETHUSDT", M1, endpoint=EP) is None
    assert cache.corrupt == 1
    assert not path.exists()


def test_first_bar_sidecar_of_another_endpoint_is_absent_but_kept(cache_dir: Path) -> None:
    # A testnet / mirror / imitation sharing the cache dir may list the symbol later.
    cache = KlineCache(cache_dir)
    path = cache.write_first_bar(UM, "ETHUSDT", M1, T_JAN2_NOON, endpoint=EP_OTHER)

    assert cache.read_first_bar(UM, "ETHUSDT", M1, endpoint=EP) is None
    assert cache.read_first_bar(UM, "ETHUSDT", M1, endpoint=EP_OTHER) == T_JAN2_NOON
    assert cache.corrupt == 0
    assert path.exists()


def test_first_bar_sidecar_without_an_endpoint_is_absent_but_kept(cache_dir: Path) -> None:
    # Written before endpoints were recorded: nobody knows which server it came from.
    cache = KlineCache(cache_dir)
    path = cache.first_bar_path(UM, "ETHUSDT", M1)
    path.parent.mkdir(parents=True)
    path.write_text(
        json.dumps(
            {"market": "futures_usdt", "symbol": "ETHUSDT", "interval": "1m", "first_open_ms": 0}
        )
    )

    assert cache.read_first_bar(UM, "ETHUSDT", M1, endpoint=EP) is None
    assert cache.corrupt == 0
    assert path.exists()


def test_discard_first_bar_counts_and_deletes_only_an_existing_sidecar(cache_dir: Path) -> None:
    cache = KlineCache(cache_dir)
    cache.discard_first_bar(UM, "ETHUSDT", M1, "contradicted")
    assert cache.corrupt == 0
    path = cache.write_first_bar(UM, "ETHUSDT", M1, T_JAN2_NOON, endpoint=EP)

    cache.discard_first_bar(UM, "ETHUSDT", M1, "contradicted")

    assert cache.corrupt == 1
    assert not path.exists()
    assert cache.read_first_bar(UM, "ETHUSDT", M1, endpoint=EP) is None


@pytest.mark.parametrize("endpoint", ["", None])
def test_write_first_bar_refuses_a_missing_endpoint(cache_dir: Path, endpoint: object) -> None:
    with pytest.raises(
        InvalidInput,
        match=r"first bar of ETHUSDT 1m needs the REST endpoint that served it, was ",
    ):
        KlineCache(cache_dir).write_first_bar(UM, "ETHUSDT", M1, T_JAN2_NOON, endpoint=endpoint)


@pytest.mark.parametrize(
    ("open_ms", "match"),
    [
        (T_JAN2_NOON + 1, "first bar 1704196800001 of ETHUSDT is not on the 1m grid"),
        (-60_000, "first bar of ETHUSDT 1m must be epoch ms >= 0, was -60000"),
    ],
)
def test_write_first_bar_refuses_impossible_open_times(
    cache_dir: Path, open_ms: int, match: str
) -> None:
    with pytest.raises(InvalidInput, match=match):
        KlineCache(cache_dir).write_first_bar(UM, "ETHUSDT", M1, open_ms, endpoint=EP)


def test_info_ignores_and_clear_removes_first_bar_sidecars(cache_dir: Path) -> None:
    cache = KlineCache(cache_dir)
    cache.write(UM, "BTCUSDT", M1, "2024-01-01", day_frame(date(2024, 1, 1)))
    cache.write_first_bar(UM, "BTCUSDT", M1, to_ms(datetime(2020, 1, 1, tzinfo=UTC)), endpoint=EP)
    cache.write_first_bar(
        UM, "BTCUSDT", Interval.HOUR_1, to_ms(datetime(2020, 1, 1, tzinfo=UTC)), endpoint=EP
    )
    cache.write_first_bar(UM, "ETHUSDT", M1, T_JAN2_NOON, endpoint=EP)  # a sidecar with no periods
    symbol_dir = cache_dir / "binance" / "futures_usdt" / "BTCUSDT"

    info = cache.info()

    assert info["files"] == 1
    assert [(e["symbol"], e["interval"], e["files"]) for e in info["entries"]] == [
        ("BTCUSDT", "1m", 1)
    ]
    assert cache.clear(interval="1h") == 0
    assert sorted(p.name for p in symbol_dir.iterdir()) == [
        "1m",
        "1m.first_bar.json",
        "1m.lock",
    ]  # the series lock
    assert cache.clear(symbol="ETHUSDT") == 0
    assert not (cache_dir / "binance" / "futures_usdt" / "ETHUSDT").exists()
    assert cache.clear() == 1
    assert sorted(p.name for p in (cache_dir / "binance" / "futures_usdt").iterdir()) == []


@pytest.mark.parametrize("symbol", ["BTCUSDT\n", "BTC_USDT", "BTCUSD_PERPX"])
def test_cache_uses_the_one_binance_symbol_rule(cache_dir: Path, symbol: str) -> None:
    with pytest.raises(
        InvalidInput,
        match=r"invalid symbol .*: Binance symbols are upper-case letters and digits",
    ):
        KlineCache(cache_dir).directory(UM, symbol, M1)
