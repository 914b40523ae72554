"""DataSourceManager against the local Binance imitation: failover, cache, quality, listing."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from nautilus_dsm.common import DataProvider, Interval, MarketType, to_ms
from nautilus_dsm.dsm.manager import DataSourceManager, FetchInsideEventLoop
from nautilus_dsm.dsm.quality import Gap
from nautilus_dsm.dsm.rest import BinanceRestClient
from nautilus_dsm.errors import (
    DataUnavailable,
    InvalidInput,
    MarketTypeMismatch,
    QualityBelowThreshold,
    UnknownSymbol,
)
from nautilus_dsm.testing import BinanceImitation
from tests.conftest import dsm_messages

UM = MarketType.FUTURES_USDT
SPOT = MarketType.SPOT
M1 = Interval.MINUTE_1
MIN = 60_000
DAY = 86_400_000
JAN1 = datetime(2024, 1, 1, tzinfo=UTC)
T0 = to_ms(JAN1)
PERP = "BTCUSDT-PERP.BINANCE"


def make_dsm(srv_or_url, cache_dir: Path, **kwargs) -> DataSourceManager:
    url = srv_or_url if isinstance(srv_or_url, str) else srv_or_url.url
    return DataSourceManager.create(
        DataProvider.BINANCE,
        kwargs.pop("market_type", None),
        base_url_http=url,
        base_url_vision=url,
        cache_dir=cache_dir,
        **kwargs,
    )


def cached_files(cache_dir: Path, market: str, symbol: str, interval: str) -> list[str]:
    folder = cache_dir / "binance" / market / symbol / interval
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def kline_starts(srv, path: str = "/fapi/v1/klines") -> list[tuple[int, str]]:
    """(startTime, limit) of every klines request, in order."""
    return sorted(
        (int(r.query["startTime"]), r.query["limit"]) for r in srv.requests if r.path == path
    )


def vision_paths(srv) -> list[str]:
    return sorted(r.path for r in srv.requests if r.path.startswith("/data/"))


async def test_week_with_gap_and_bad_vision_files_then_warm_from_cache_with_server_stopped(
    imitation, cache_dir: Path
) -> None:
    imitation.faults.gaps.append(("BTCUSDT", T0 + 2 * DAY + 600 * MIN, T0 + 2 * DAY + 630 * MIN))
    imitation.faults.vision_missing.add("BTCUSDT-1m-2024-01-02.zip")
    imitation.faults.vision_bad_checksum.add("BTCUSDT-1m-2024-01-04.zip")
    imitation.faults.vision_truncated.add("BTCUSDT-1m-2024-01-05.zip")
    expected = imitation.expected(UM, "BTCUSDT", M1, T0, T0 + 7 * DAY)
    threshold = (10080 - 30) / 10080

    async with make_dsm(imitation, cache_dir, min_completeness=threshold) as dsm:
        cold = await dsm.fetch(PERP, "1m", JAN1, JAN1 + timedelta(days=7))

    report = cold.report
    assert cold.frame.height == 10050
    assert cold.frame.equals(expected)
    assert report.gaps == [
        Gap(datetime(2024, 1, 3, 10, tzinfo=UTC), datetime(2024, 1, 3, 10, 30, tzinfo=UTC), 30)
    ]
    assert report.expected_bars == 10080
    assert report.completeness == threshold
    assert report.sources == {"cache": 0, "vision": 4 * 1440 - 30, "rest": 3 * 1440, "synthetic": 0}
    assert (report.cache_hits, report.cache_misses, report.cache_hit_rate) == (0, 7, 0.0)
    assert report.listing_time is None
    assert report.warnings == []
    # The listing probe (limit 1), then whole days 2, 4 and 5 from REST (1440 < 1500 per page),
    # and REST for day 3's 30 bars the daily zip lacks: REST lacks them too, so the gap is
    # confirmed by two sources and day 3 is cached final.
    assert kline_starts(imitation) == [
        (0, "1"),
        (T0 + DAY, "1500"),
        (T0 + 2 * DAY + 600 * MIN, "1500"),
        (T0 + 3 * DAY, "1500"),
        (T0 + 4 * DAY, "1500"),
    ]
    assert report.gaps[0].confirmed_by == ("rest", "vision")
    assert cached_files(cache_dir, "futures_usdt", "BTCUSDT", "1m") == [
        f"2024-01-0{d}.parquet" for d in range(1, 8)
    ]

    url = imitation.url
    imitation.stop()
    async with make_dsm(url, cache_dir, min_completeness=threshold) as dsm:
        warm = await dsm.fetch(PERP, "1m", JAN1, JAN1 + timedelta(days=7))

    assert warm.frame.equals(cold.frame)
    assert warm.report.cache_hit_rate == 1.0
    assert warm.report.sources == {"cache": 10050, "vision": 0, "rest": 0, "synthetic": 0}
    assert warm.report.gaps == report.gaps


async def test_open_period_is_fetched_from_rest_for_the_requested_part_and_not_cached(
    imitation, cache_dir: Path
) -> None:
    now = T0 + 2 * DAY + 12 * 60 * MIN + 30_000  # 2024-01-03T12:00:30Z
    dsm = make_dsm(imitation, cache_dir, clock=lambda: now)

    result = await dsm.fetch(PERP, "1m", JAN1 + timedelta(days=1), JAN1 + timedelta(days=5))
    await dsm.aclose()

    stop = T0 + 2 * DAY + 12 * 60 * MIN
    assert result.frame.equals(imitation.expected(UM, "BTCUSDT", M1, T0 + DAY, stop))
    assert result.report.sources == {"cache": 0, "vision": 1440, "rest": 720, "synthetic": 0}
    assert result.report.expected_bars == 2160
    assert (result.report.cache_hits, result.report.cache_misses) == (0, 1)
    assert result.report.warnings == [
        "end 2024-01-06T00:00:00Z is after the last closed bar; capped at "
        "2024-01-03T12:00:00Z (bars still forming are never returned)"
    ]
    assert kline_starts(imitation) == [(0, "1"), (T0 + 2 * DAY, "1500")]
    assert cached_files(cache_dir, "futures_usdt", "BTCUSDT", "1m") == ["2024-01-02.parquet"]


async def test_corrupt_cache_file_is_refetched(imitation, cache_dir: Path) -> None:
    async with make_dsm(imitation, cache_dir) as dsm:
        first = await dsm.fetch(PERP, "1m", JAN1, JAN1 + timedelta(days=2))
        path = cache_dir / "binance" / "futures_usdt" / "BTCUSDT" / "1m" / "2024-01-02.parquet"
        path.write_bytes(path.read_bytes()[:300])
        imitation.clear_requests()

        second = await dsm.fetch(PERP, "1m", JAN1, JAN1 + timedelta(days=2))

    assert second.frame.equals(first.frame)
    assert dsm.cache.corrupt == 1
    assert (second.report.cache_hits, second.report.cache_misses) == (1, 1)
    assert second.report.sources == {"cache": 1440, "vision": 1440, "rest": 0, "synthetic": 0}
    assert vision_paths(imitation) == [
        "/data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-02.zip",
        "/data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-02.zip.CHECKSUM",
    ]


async def test_rest_duplicates_and_disorder_are_removed_and_counted(
    imitation, cache_dir: Path
) -> None:
    imitation.faults.duplicate_rows = True
    imitation.faults.out_of_order_rows = True

    async with make_dsm(imitation, cache_dir, use_vision=False) as dsm:
        result = await dsm.fetch(PERP, "1m", JAN1, JAN1 + timedelta(days=1))

    assert result.frame.equals(imitation.expected(UM, "BTCUSDT", M1, T0, T0 + DAY))
    assert result.report.duplicates_removed == 1
    assert result.report.out_of_order_fixed == 1
    assert result.report.sources["rest"] == 1440


async def test_spot_1s_over_an_hour(imitation, cache_dir: Path) -> None:
    async with make_dsm(imitation, cache_dir) as dsm:
        result = await dsm.fetch("BTCUSDT.BINANCE", "1s", JAN1, JAN1 + timedelta(hours=1))

    assert result.frame.height == 3600
    assert result.frame.equals(
        imitation.expected(SPOT, "BTCUSDT", Interval.SECOND_1, T0, T0 + 3_600_000)
    )
    assert result.report.completeness == 1.0
    assert result.report.sources["vision"] == 3600
    assert cached_files(cache_dir, "spot", "BTCUSDT", "1s") == ["2024-01-01.parquet"]


async def test_daily_bars_over_a_year_come_from_one_rest_request(
    imitation, cache_dir: Path
) -> None:
    start = datetime(2023, 1, 1, tzinfo=UTC)

    async with make_dsm(imitation, cache_dir) as dsm:
        result = await dsm.fetch(PERP, "1d", start, JAN1)

    assert result.frame.height == 365
    expected = imitation.expected(UM, "BTCUSDT", Interval.DAY_1, to_ms(start), T0)
    assert result.frame.equals(expected)
    assert result.report.sources["rest"] == 365
    assert vision_paths(imitation) == []
    assert kline_starts(imitation) == [(0, "1"), (to_ms(start), "1500")]
    assert cached_files(cache_dir, "futures_usdt", "BTCUSDT", "1d") == ["2023.parquet"]


async def test_monthly_bars_over_a_year(imitation, cache_dir: Path) -> None:
    start = datetime(2023, 1, 1, tzinfo=UTC)

    async with make_dsm(imitation, cache_dir) as dsm:
        result = await dsm.fetch(PERP, "1M", start, JAN1)

    assert result.frame.height == 12
    expected = imitation.expected(UM, "BTCUSDT", Interval.MONTH_1, to_ms(start), T0)
    assert result.frame.equals(expected)
    assert result.report.expected_bars == 12
    assert result.report.completeness == 1.0


async def test_whole_uncached_month_comes_from_the_monthly_zip(imitation, cache_dir: Path) -> None:
    start = datetime(2024, 2, 1, tzinfo=UTC)
    end = datetime(2024, 3, 1, tzinfo=UTC)
    progress: list[tuple[int, int]] = []

    async with make_dsm(imitation, cache_dir) as dsm:
        result = await dsm.fetch(
            PERP, "1h", start, end, progress=lambda d, t: progress.append((d, t))
        )

    assert result.frame.equals(
        imitation.expected(UM, "BTCUSDT", Interval.HOUR_1, to_ms(start), to_ms(end))
    )
    assert vision_paths(imitation) == [
        "/data/futures/um/monthly/klines/BTCUSDT/1h/BTCUSDT-1h-2024-02.zip",
        "/data/futures/um/monthly/klines/BTCUSDT/1h/BTCUSDT-1h-2024-02.zip.CHECKSUM",
    ]
    assert len(cached_files(cache_dir, "futures_usdt", "BTCUSDT", "1h")) == 29
    assert progress == [(i, 29) for i in range(1, 30)]


async def test_range_before_listing_is_reported_and_not_requested(
    imitation, cache_dir: Path
) -> None:
    start = datetime(2019, 12, 30, tzinfo=UTC)
    end = datetime(2020, 1, 2, tzinfo=UTC)

    async with make_dsm(imitation, cache_dir) as dsm:
        result = await dsm.fetch(PERP, "1m", start, end)

    report = result.report
    assert report.listing_time == datetime(2020, 1, 1, tzinfo=UTC)
    assert report.expected_bars == 1440
    assert report.bars == 1440
    assert report.completeness == 1.0
    assert report.warnings == [
        "BTCUSDT-PERP.BINANCE has no data before 2020-01-01T00:00:00Z (first bar); 2880 bars "
        "requested before it are not counted as missing"
    ]
    assert report.to_dict()["listing_time"] == "2020-01-01T00:00:00Z"
    assert [p for p in vision_paths(imitation) if "2019-" in p] == []
    assert kline_starts(imitation) == [(0, "1")]


async def test_below_threshold_raises_with_the_result_attached(imitation, cache_dir: Path) -> None:
    imitation.faults.gaps.append(("BTCUSDT", T0 + 600 * MIN, T0 + 630 * MIN))

    async with make_dsm(imitation, cache_dir, min_completeness=0.99) as dsm:
        with pytest.raises(QualityBelowThreshold) as info:
            await dsm.fetch(PERP, "1m", JAN1, JAN1 + timedelta(days=1))

    assert str(info.value) == (
        "BTCUSDT-PERP.BINANCE 1m 2024-01-01T00:00:00Z..2024-01-02T00:00:00Z: completeness "
        "97.92% (1410 of 1440 expected bars) is below min_completeness 99.00%; 1 gap(s), "
        "largest: 2024-01-01T10:00:00Z..2024-01-01T10:30:00Z (30 bars); pass "
        "min_completeness=0.9791 or on_low_quality='warn' to accept it (the fetched result "
        "is attached as .result)"
    )
    assert info.value.result.frame.height == 1410
    assert info.value.result.report.gaps[0].missing == 30


async def test_warn_policy_logs_and_returns(imitation, cache_dir: Path, caplog) -> None:
    imitation.faults.gaps.append(("BTCUSDT", T0 + 600 * MIN, T0 + 630 * MIN))

    async with make_dsm(imitation, cache_dir, min_completeness=0.99) as dsm:
        with caplog.at_level(logging.WARNING, logger="nautilus_dsm.dsm"):
            result = await dsm.fetch(
                PERP, "1m", JAN1, JAN1 + timedelta(days=1), on_low_quality="warn"
            )

    assert result.frame.height == 1410
    [warning] = [r for r in caplog.records if r.name.startswith("nautilus_dsm")]
    assert warning.name == "nautilus_dsm.dsm.manager"
    assert "completeness 97.92%" in warning.getMessage()
    assert result.report.warnings == [warning.getMessage()]


async def test_unknown_symbol_is_one_error_before_any_vision_request(
    imitation, cache_dir: Path
) -> None:
    async with make_dsm(imitation, cache_dir) as dsm:
        with pytest.raises(UnknownSymbol, match="'NOPEUSDT' is not a Binance FUTURES_USDT symbol"):
            await dsm.fetch("NOPEUSDT-PERP.BINANCE", "1m", JAN1, JAN1 + timedelta(days=3))

    assert vision_paths(imitation) == []
    assert len(imitation.requests) == 1


async def test_market_mismatch_is_refused_before_any_io(imitation, cache_dir: Path) -> None:
    async with make_dsm(imitation, cache_dir, market_type=SPOT) as dsm:
        with pytest.raises(MarketTypeMismatch, match=r"use MarketType\.FUTURES_USDT"):
            await dsm.fetch(PERP, "1m", JAN1, JAN1 + timedelta(days=1))

    assert imitation.requests == []


async def test_fetch_sync_refuses_a_running_loop(imitation, cache_dir: Path) -> None:
    dsm = make_dsm(imitation, cache_dir)

    with pytest.raises(FetchInsideEventLoop, match=r"use `await dsm.fetch\(...\)`"):
        dsm.fetch_sync(PERP, "1m", JAN1, JAN1 + timedelta(days=1))


def test_fetch_sync_twice_outside_a_loop(imitation, cache_dir: Path) -> None:
    dsm = make_dsm(imitation, cache_dir)

    cold = dsm.fetch_sync(PERP, "1h", JAN1, JAN1 + timedelta(days=1))
    warm = dsm.fetch_sync(PERP, "1h", JAN1, JAN1 + timedelta(days=1))

    assert cold.frame.equals(imitation.expected(UM, "BTCUSDT", Interval.HOUR_1, T0, T0 + DAY))
    assert warm.frame.equals(cold.frame)
    assert warm.report.cache_hit_rate == 1.0


async def test_exchange_info_is_memoised_per_market(imitation, cache_dir: Path) -> None:
    async with make_dsm(imitation, cache_dir) as dsm:
        first = await dsm.exchange_info(SPOT)
        second = await dsm.exchange_info("spot")

    assert first is second
    assert [s["symbol"] for s in first["symbols"]] == ["BTCUSDT", "ETHUSDT"]
    assert [r.path for r in imitation.requests] == ["/api/v3/exchangeInfo"]


async def test_outage_at_the_start_is_a_gap_not_a_listing(imitation, cache_dir: Path) -> None:
    imitation.faults.gaps.append(("BTCUSDT", T0, T0 + 30 * MIN))

    async with make_dsm(imitation, cache_dir, min_completeness=0.97) as dsm:
        result = await dsm.fetch(PERP, "1m", JAN1, JAN1 + timedelta(days=1))

    assert result.report.listing_time is None
    assert result.report.gaps == [Gap(JAN1, JAN1 + timedelta(minutes=30), 30)]
    assert result.report.completeness == 1410 / 1440


async def test_range_entirely_before_listing_requests_nothing(imitation, cache_dir: Path) -> None:
    start = datetime(2019, 12, 1, tzinfo=UTC)

    async with make_dsm(imitation, cache_dir) as dsm:
        result = await dsm.fetch(PERP, "1m", start, start + timedelta(days=3))

    assert result.frame.height == 0
    assert result.report.expected_bars == 0
    assert result.report.completeness == 1.0
    assert result.report.listing_time == datetime(2020, 1, 1, tzinfo=UTC)
    assert result.report.warnings == [
        "BTCUSDT-PERP.BINANCE has its first bar at 2020-01-01T00:00:00Z, after the requested "
        "range 2019-12-01T00:00:00Z..2019-12-04T00:00:00Z; nothing was requested"
    ]
    assert [r.path for r in imitation.requests] == ["/fapi/v1/klines"]


async def test_period_no_source_can_serve_raises_data_unavailable(
    imitation, cache_dir: Path
) -> None:
    dsm = make_dsm(imitation, cache_dir, use_vision=False)
    await dsm.fetch(PERP, "1m", JAN1, JAN1 + timedelta(days=1))  # day 1 now cached
    await dsm.aclose()
    dsm._rest[UM] = BinanceRestClient(UM, imitation.url, max_retries=1)  # fail fast
    imitation.faults.down = True

    with pytest.raises(DataUnavailable) as info:
        await dsm.fetch(PERP, "1m", JAN1, JAN1 + timedelta(days=2))
    await dsm.aclose()

    assert str(info.value).startswith(
        "BTCUSDT-PERP.BINANCE 1m: 1 period(s) could not be fetched from any source: "
        "2024-01-02 (REST: "
    )
    assert str(info.value).endswith(
        "Periods fetched so far are cached, so a retry only requests these; check the network "
        "and base_url_http / base_url_vision, or narrow the range"
    )


@pytest.mark.parametrize(
    ("interval", "start", "match"),
    [
        ("1s", JAN1, "interval 1s is served on SPOT only, not FUTURES_USDT"),
        ("1m", datetime(2024, 1, 1), "naive datetime 2024-01-01T00:00:00 is ambiguous"),
        ("1x", JAN1, "unknown interval '1x'"),
    ],
)
async def test_invalid_requests_fail_before_any_io(
    imitation, cache_dir: Path, interval: str, start: datetime, match: str
) -> None:
    async with make_dsm(imitation, cache_dir) as dsm:
        with pytest.raises(InvalidInput, match=match):
            await dsm.fetch(PERP, interval, start, JAN1 + timedelta(days=1))

    assert imitation.requests == []


async def test_first_bar_probe_is_done_once_per_symbol_and_interval(
    imitation, cache_dir: Path
) -> None:
    now = T0 + 2 * DAY + 12 * 60 * MIN  # polling the open period, as the live client does
    async with make_dsm(imitation, cache_dir, clock=lambda: now) as dsm:
        for minutes in (60, 30):
            start = JAN1 + timedelta(days=2, hours=12, minutes=-minutes)
            await dsm.fetch(PERP, "1m", start, JAN1 + timedelta(days=3))

    assert kline_starts(imitation) == [
        (0, "1"),
        (T0 + 2 * DAY + 660 * MIN, "1500"),
        (T0 + 2 * DAY + 690 * MIN, "1500"),
    ]
    assert cached_files(cache_dir, "futures_usdt", "BTCUSDT", "1m") == []


async def test_a_few_1s_bars_of_a_closed_day_missing_on_vision_cost_one_page_not_87(
    imitation, cache_dir: Path
) -> None:
    # A live poll just after midnight: yesterday is closed, Vision has not published it yet.
    now = T0 + DAY + 30_000  # 2024-01-02T00:00:30Z
    imitation.faults.vision_missing.add("BTCUSDT-1s-2024-01-01.zip")
    dsm = make_dsm(imitation, cache_dir, clock=lambda: now)

    result = await dsm.fetch(
        "BTCUSDT.BINANCE",
        "1s",
        JAN1 + timedelta(days=1, seconds=-10),
        JAN1 + timedelta(days=1, seconds=20),
    )
    await dsm.aclose()

    start, stop = T0 + DAY - 10_000, T0 + DAY + 20_000
    assert result.frame.equals(imitation.expected(SPOT, "BTCUSDT", "1s", start, stop))
    assert result.report.sources == {"cache": 0, "vision": 0, "rest": 30, "synthetic": 0}
    assert kline_starts(imitation, "/api/v3/klines") == [
        (0, "1"),
        (start, "1000"),
        (T0 + DAY, "1000"),
    ]
    assert vision_paths(imitation) == [
        "/data/spot/daily/klines/BTCUSDT/1s/BTCUSDT-1s-2024-01-01.zip",
    ]
    assert cached_files(cache_dir, "spot", "BTCUSDT", "1s") == []


def listed_later(srv, symbol: str, listed: datetime) -> None:
    """List ``symbol`` on USDT-M from ``listed`` instead of the imitation's default 2020."""
    spec = srv.symbols(UM)[symbol]
    srv.add_symbol(UM, replace(spec, listed_ms=to_ms(listed)))


async def test_warm_fetch_of_a_listing_day_takes_the_listing_from_the_cache_offline(
    imitation, cache_dir: Path
) -> None:
    listed_later(imitation, "ETHUSDT", datetime(2024, 1, 2, 12, tzinfo=UTC))
    start, end = datetime(2024, 1, 2, tzinfo=UTC), datetime(2024, 1, 4, tzinfo=UTC)
    expected = imitation.expected(UM, "ETHUSDT", M1, to_ms(start), to_ms(end))
    warnings = [
        "ETHUSDT-PERP.BINANCE has no data before 2024-01-02T12:00:00Z (first bar); 720 bars "
        "requested before it are not counted as missing"
    ]
    async with make_dsm(imitation, cache_dir) as dsm:
        cold = await dsm.fetch("ETHUSDT-PERP.BINANCE", "1m", start, end)
    sidecar = cache_dir / "binance" / "futures_usdt" / "ETHUSDT" / "1m.first_bar.json"
    assert json.loads(sidecar.read_text()) == {
        "market": "futures_usdt",
        "symbol": "ETHUSDT",
        "interval": "1m",
        "first_open_ms": T0 + DAY + 720 * MIN,
        "first_open": "2024-01-02T12:00:00Z",
        "endpoint": f"{imitation.url}/fapi/v1",
    }

    url = imitation.url
    imitation.stop()  # the first period is cached: the listing must come from the cache
    async with make_dsm(url, cache_dir) as dsm:
        warm = await dsm.fetch("ETHUSDT-PERP.BINANCE", "1m", start, end)

    for result in (cold, warm):
        assert result.frame.equals(expected)
        assert result.frame.height == 2160
        assert result.report.expected_bars == 2160
        assert result.report.completeness == 1.0
        assert result.report.gaps == []
        assert result.report.listing_time == datetime(2024, 1, 2, 12, tzinfo=UTC)
        assert result.report.warnings == warnings
    assert warm.report.sources == {"cache": 2160, "vision": 0, "rest": 0, "synthetic": 0}
    assert (warm.report.cache_hits, warm.report.cache_misses) == (2, 0)


async def test_corrupt_first_bar_sidecar_is_discarded_and_the_listing_probed_again(
    imitation, cache_dir: Path
) -> None:
    listed_later(imitation, "ETHUSDT", datetime(2024, 1, 2, 12, tzinfo=UTC))
    start, end = datetime(2024, 1, 2, tzinfo=UTC), datetime(2024, 1, 4, tzinfo=UTC)
    async with make_dsm(imitation, cache_dir) as dsm:
        await dsm.fetch("ETHUSDT-PERP.BINANCE", "1m", start, end)
    sidecar = cache_dir / "binance" / "futures_usdt" / "ETHUSDT" / "1m.first_bar.json"
    sidecar.write_text('{"first_open_ms": ')
    imitation.clear_requests()

    async with make_dsm(imitation, cache_dir) as dsm:
        warm = await dsm.fetch("ETHUSDT-PERP.BINANCE", "1m", start, end)
        corrupt = dsm.cache.corrupt

    assert corrupt == 1
    assert warm.report.listing_time == datetime(2024, 1, 2, 12, tzinfo=UTC)
    assert warm.report.completeness == 1.0
    assert [r.path for r in imitation.requests] == ["/fapi/v1/klines"]
    assert kline_starts(imitation) == [(0, "1")]
    assert json.loads(sidecar.read_text())["first_open_ms"] == T0 + DAY + 720 * MIN


async def test_cache_holding_the_first_requested_bar_needs_no_listing_probe(
    imitation, cache_dir: Path
) -> None:
    async with make_dsm(imitation, cache_dir) as dsm:
        await dsm.fetch(PERP, "1m", JAN1, JAN1 + timedelta(days=2))
    # A cache written before first-bar sidecars existed.
    (cache_dir / "binance" / "futures_usdt" / "BTCUSDT" / "1m.first_bar.json").unlink()
    imitation.clear_requests()

    async with make_dsm(imitation, cache_dir) as dsm:
        warm = await dsm.fetch(PERP, "1m", JAN1 + timedelta(hours=1), JAN1 + timedelta(days=2))

    assert imitation.requests == []
    assert warm.report.listing_time is None
    assert warm.report.bars == warm.report.expected_bars == 2820


ETH_PERP = "ETHUSDT-PERP.BINANCE"
ETH_LISTED = datetime(2024, 1, 2, 12, tzinfo=UTC)


def eth_sidecar(cache_dir: Path) -> Path:
    return cache_dir / "binance" / "futures_usdt" / "ETHUSDT" / "1m.first_bar.json"


async def test_first_bar_of_another_endpoint_sharing_the_cache_is_not_trusted(
    imitation, cache_dir: Path
) -> None:
    # A testnet (or mirror) lists BTCUSDT later than mainnet and shares the cache dir.
    with BinanceImitation() as testnet:
        spec = testnet.symbols(UM)["BTCUSDT"]
        testnet.add_symbol(UM, replace(spec, listed_ms=T0))
        testnet_rest = f"{testnet.url}/fapi/v1"
        async with make_dsm(testnet, cache_dir) as dsm:
            await dsm.fetch(PERP, "1h", JAN1, JAN1 + timedelta(days=1))
    sidecar = cache_dir / "binance" / "futures_usdt" / "BTCUSDT" / "1h.first_bar.json"
    assert json.loads(sidecar.read_text())["endpoint"] == testnet_rest
    start, end = datetime(2023, 6, 1, tzinfo=UTC), datetime(2023, 6, 3, tzinfo=UTC)

    async with make_dsm(imitation, cache_dir) as dsm:
        result = await dsm.fetch(PERP, "1h", start, end)
        corrupt = dsm.cache.corrupt

    assert result.frame.equals(imitation.expected(UM, "BTCUSDT", "1h", to_ms(start), to_ms(end)))
    report = result.report
    assert (report.bars, report.expected_bars, report.completeness) == (48, 48, 1.0)
    assert report.listing_time is None
    assert report.warnings == []
    assert kline_starts(imitation) == [(0, "1")]  # mainnet's own listing probe
    assert corrupt == 0  # another endpoint's sidecar is not corrupt, just not ours
    assert json.loads(sidecar.read_text()) == {
        "market": "futures_usdt",
        "symbol": "BTCUSDT",
        "interval": "1h",
        "first_open_ms": to_ms(datetime(2020, 1, 1, tzinfo=UTC)),
        "first_open": "2020-01-01T00:00:00Z",
        "endpoint": f"{imitation.url}/fapi/v1",
    }


async def test_sidecar_contradicted_by_cached_bars_is_discarded_and_probed_again(
    imitation, cache_dir: Path
) -> None:
    async with make_dsm(imitation, cache_dir) as dsm:
        await dsm.fetch(PERP, "1m", JAN1 + timedelta(days=1), JAN1 + timedelta(days=2))
    sidecar = cache_dir / "binance" / "futures_usdt" / "BTCUSDT" / "1m.first_bar.json"
    body = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps(body | {"first_open_ms": T0 + DAY + 720 * MIN}))  # wrong
    imitation.clear_requests()

    async with make_dsm(imitation, cache_dir) as dsm:
        result = await dsm.fetch(PERP, "1m", JAN1, JAN1 + timedelta(days=2))
        corrupt = dsm.cache.corrupt

    assert corrupt == 1
    assert result.frame.equals(imitation.expected(UM, "BTCUSDT", M1, T0, T0 + 2 * DAY))
    report = result.report
    assert (report.bars, report.expected_bars, report.completeness) == (2880, 2880, 1.0)
    assert report.listing_time is None
    assert report.sources == {"cache": 1440, "vision": 1440, "rest": 0, "synthetic": 0}
    assert kline_starts(imitation) == [(0, "1")]
    assert json.loads(sidecar.read_text())["first_open_ms"] == to_ms(
        datetime(2020, 1, 1, tzinfo=UTC)
    )


async def test_sidecar_alone_putting_the_range_before_the_listing_is_confirmed_by_rest(
    imitation, cache_dir: Path
) -> None:
    async with make_dsm(imitation, cache_dir) as dsm:
        await dsm.fetch(PERP, "1m", JAN1, JAN1 + timedelta(hours=1))  # today's sidecar: 2020
    sidecar = cache_dir / "binance" / "futures_usdt" / "BTCUSDT" / "1m.first_bar.json"
    body = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps(body | {"first_open_ms": T0 + 10 * DAY}))  # wrong, no bars
    imitation.clear_requests()
    start, end = JAN1 + timedelta(days=3), JAN1 + timedelta(days=4)

    async with make_dsm(imitation, cache_dir) as dsm:
        result = await dsm.fetch(PERP, "1m", start, end)
        corrupt = dsm.cache.corrupt

    assert corrupt == 1
    assert result.frame.equals(imitation.expected(UM, "BTCUSDT", M1, T0 + 3 * DAY, T0 + 4 * DAY))
    assert (result.report.bars, result.report.expected_bars) == (1440, 1440)
    assert result.report.listing_time is None
    assert result.report.warnings == []
    assert kline_starts(imitation) == [(0, "1")]
    assert json.loads(sidecar.read_text())["first_open_ms"] == to_ms(
        datetime(2020, 1, 1, tzinfo=UTC)
    )


async def test_sidecar_confirmed_by_rest_still_requests_nothing_before_the_listing(
    imitation, cache_dir: Path
) -> None:
    listed_later(imitation, "ETHUSDT", ETH_LISTED)
    async with make_dsm(imitation, cache_dir) as dsm:
        await dsm.fetch(ETH_PERP, "1m", ETH_LISTED, ETH_LISTED + timedelta(hours=1))
    written = eth_sidecar(cache_dir).read_text()
    imitation.clear_requests()

    async with make_dsm(imitation, cache_dir) as dsm:
        result = await dsm.fetch(ETH_PERP, "1m", JAN1, JAN1 + timedelta(days=1))
        again = await dsm.fetch(ETH_PERP, "1m", JAN1, JAN1 + timedelta(days=1))  # memoised
        corrupt = dsm.cache.corrupt

    for r in (result, again):
        assert (r.report.bars, r.report.expected_bars, r.report.completeness) == (0, 0, 1.0)
        assert r.report.listing_time == ETH_LISTED
        assert r.report.warnings == [
            "ETHUSDT-PERP.BINANCE has its first bar at 2024-01-02T12:00:00Z, after the requested "
            "range 2024-01-01T00:00:00Z..2024-01-02T00:00:00Z; nothing was requested"
        ]
    assert kline_starts(imitation) == [(0, "1")]  # one probe, nothing else
    assert imitation.requests[0].path == "/fapi/v1/klines"
    assert len(imitation.requests) == 1
    assert corrupt == 0
    assert eth_sidecar(cache_dir).read_text() == written


@pytest.mark.parametrize("offline", ["rest_down", "rest_disabled"])
async def test_unconfirmed_sidecar_listing_is_used_offline_with_a_warning(
    imitation, cache_dir: Path, offline: str
) -> None:
    listed_later(imitation, "ETHUSDT", ETH_LISTED)
    async with make_dsm(imitation, cache_dir) as dsm:
        await dsm.fetch(ETH_PERP, "1m", ETH_LISTED, ETH_LISTED + timedelta(hours=1))
    imitation.clear_requests()
    dsm = make_dsm(imitation, cache_dir, use_rest=offline == "rest_down")
    dsm._rest[UM] = BinanceRestClient(UM, imitation.url, max_retries=1)  # fail fast
    imitation.faults.down = True

    result = await dsm.fetch(ETH_PERP, "1m", JAN1, JAN1 + timedelta(days=1))
    await dsm.aclose()

    report = result.report
    assert (report.bars, report.expected_bars, report.completeness) == (0, 0, 1.0)
    assert report.listing_time == ETH_LISTED
    unconfirmed, nothing = report.warnings
    prefix = (
        "ETHUSDT-PERP.BINANCE first bar 2024-01-02T12:00:00Z is taken from the cache unconfirmed: "
    )
    if offline == "rest_disabled":
        assert unconfirmed == prefix + "REST is disabled"
        assert imitation.requests == []
    else:
        assert unconfirmed.startswith(
            prefix + "REST could not be asked (Binance FUTURES_USDT REST /fapi/v1/klines failed "
            "after 1 tries; "
        )
        assert kline_starts(imitation) == [(0, "1")]
    assert nothing == (
        "ETHUSDT-PERP.BINANCE has its first bar at 2024-01-02T12:00:00Z, after the requested "
        "range 2024-01-01T00:00:00Z..2024-01-02T00:00:00Z; nothing was requested"
    )
    assert dsm.cache.corrupt == 0
    assert json.loads(eth_sidecar(cache_dir).read_text())["first_open_ms"] == to_ms(ETH_LISTED)


def tick_size(info: dict, symbol: str) -> str:
    [spec] = [s for s in info["symbols"] if s["symbol"] == symbol]
    [price_filter] = [f for f in spec["filters"] if f["filterType"] == "PRICE_FILTER"]
    return price_filter["tickSize"]


async def test_exchange_info_is_fetched_again_once_older_than_its_ttl(
    imitation, cache_dir: Path
) -> None:
    now = [T0]
    btc = imitation.symbols(SPOT)["BTCUSDT"]
    async with make_dsm(imitation, cache_dir, clock=lambda: now[0], exchange_info_ttl_s=60) as dsm:
        first = await dsm.exchange_info(SPOT)
        imitation.add_symbol(SPOT, replace(btc, tick_size="0.10000000"))  # Binance changes it
        now[0] += 59_999
        memo = await dsm.exchange_info(SPOT)
        now[0] += 1
        fresh = await dsm.exchange_info(SPOT)
        again = await dsm.exchange_info(SPOT)

    assert memo is first
    assert again is fresh
    assert tick_size(first, "BTCUSDT") == btc.tick_size == "0.01000000"
    assert tick_size(fresh, "BTCUSDT") == "0.10000000"
    assert [r.path for r in imitation.requests] == ["/api/v3/exchangeInfo"] * 2


async def test_exchange_info_refresh_failure_serves_the_old_copy_with_a_warning(
    imitation, cache_dir: Path, caplog
) -> None:
    now = [T0]
    dsm = make_dsm(imitation, cache_dir, clock=lambda: now[0], exchange_info_ttl_s=3600)
    first = await dsm.exchange_info(SPOT)
    await dsm.aclose()
    dsm._rest[SPOT] = BinanceRestClient(SPOT, imitation.url, max_retries=1)  # fail fast
    imitation.faults.down = True
    now[0] += 3_601_000

    with caplog.at_level(logging.WARNING, logger="nautilus_dsm.dsm"):
        served = await dsm.exchange_info(SPOT)
    await dsm.aclose()

    assert served is first
    [message] = dsm_messages(caplog.records)
    assert message.startswith(
        "exchangeInfo of SPOT could not be refreshed (Binance SPOT REST /api/v3/exchangeInfo "
        "failed after 1 tries; "
    )
    assert message.endswith("serving the copy fetched 3601 s ago, the next call tries again")


@pytest.mark.parametrize("ttl", [-1.0, float("nan")])
def test_negative_exchange_info_ttl_is_refused(cache_dir: Path, ttl: float) -> None:
    with pytest.raises(InvalidInput, match=r"exchange_info_ttl_s must be >= 0 seconds, was "):
        DataSourceManager.create(cache_dir=cache_dir, exchange_info_ttl_s=ttl)
