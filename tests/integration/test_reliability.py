"""Reliability fault matrix: nothing lost, duplicated or invented under faults and bad input.

Every case runs the whole engine (``DataSourceManager``: cache -> Vision -> REST) against the
local Binance imitation over real HTTP, switches one fault on, and asserts that the result equals
the source bar for bar (``srv.expected``) or fails with a clear error where no source has the
data, and that the quality report says what happened. Retry/backoff values are tiny so the
matrix stays fast; the waits that are the scenario (Retry-After, bans) are one or two seconds.
The matrix with its results is in docs/RELIABILITY.md.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from nautilus_trader.model.data import Bar

from nautilus_dsm.common import DataProvider, Interval, MarketType, to_ms
from nautilus_dsm.dsm.cache import KlineCache
from nautilus_dsm.dsm.manager import DataSourceManager
from nautilus_dsm.dsm.quality import Gap
from nautilus_dsm.dsm.rest import BinanceRestClient
from nautilus_dsm.dsm.vision import VisionClient
from nautilus_dsm.errors import (
    DataUnavailable,
    InvalidInput,
    MarketTypeMismatch,
    RateLimited,
    UnknownSymbol,
)
from nautilus_dsm.testing import BinanceImitation
from nautilus_dsm.testing import server as imitation_server
from tests.conftest import dsm_messages
from tests.integration.conftest import (  # the data-client harness, reused
    SPOT_1S,
    Harness,
    assert_contiguous_closed_and_true,
    subscribe,
    unsubscribe,
)

UM = MarketType.FUTURES_USDT
SPOT = MarketType.SPOT
M1 = Interval.MINUTE_1
H1 = Interval.HOUR_1
MIN = 60_000
DAY = 86_400_000
JAN1 = datetime(2024, 1, 1, tzinfo=UTC)
T0 = to_ms(JAN1)
PERP = "BTCUSDT-PERP.BINANCE"
UM_DAILY = "/data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-{}.zip"


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def fast_dsm(
    srv: Any,
    cache_dir: Path,
    *,
    rest: dict[str, Any] | None = None,
    vision: dict[str, Any] | None = None,
    **kwargs: Any,
) -> DataSourceManager:
    """A manager on the imitation whose sources back off in milliseconds, not seconds."""
    dsm = DataSourceManager.create(
        DataProvider.BINANCE,
        kwargs.pop("market_type", None),
        base_url_http=srv.url,
        base_url_vision=srv.url,
        cache_dir=cache_dir,
        **kwargs,
    )
    rest_settings = {"backoff_base_s": 0.01, "backoff_max_s": 0.05, "max_wait_s": 5.0}
    vision_settings = {"backoff_base_s": 0.01, "backoff_max_s": 0.05, "max_retries": 2}
    for market in MarketType:
        dsm._rest[market] = BinanceRestClient(market, srv.url, **{**rest_settings, **(rest or {})})
        dsm._vision[market] = VisionClient(market, srv.url, **{**vision_settings, **(vision or {})})
    return dsm


def klines_requests(srv: Any, path: str = "/fapi/v1/klines") -> list[tuple[int, int]]:
    """``(startTime, status)`` of every klines request, in arrival order."""
    return [(int(r.query["startTime"]), r.status) for r in srv.requests if r.path == path]


def paths(srv: Any, fragment: str) -> list[tuple[str, int]]:
    """``(path, status)`` of the requests whose path contains ``fragment``, in order."""
    return [(r.path, r.status) for r in srv.requests if fragment in r.path]


def cached(cache_dir: Path, market: str = "futures_usdt", interval: str = "1m") -> list[str]:
    folder = cache_dir / "binance" / market / "BTCUSDT" / interval
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def src(cache: int = 0, vision: int = 0, rest: int = 0) -> dict[str, int]:
    return {"cache": cache, "vision": vision, "rest": rest, "synthetic": 0}


def at(day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2024, 1, day, hour, minute, tzinfo=UTC)


# --------------------------------------------------------------------------------------------
# REST: rate limits
# --------------------------------------------------------------------------------------------


async def test_429_storm_from_the_weight_limit_is_waited_out_without_a_ban(
    cache_dir: Path,
) -> None:
    # The imitation's minute window ends 2 s after start, its limit is 25 weight per minute and
    # a single request sent while told to wait bans the IP (418): only a client that honours
    # Retry-After gets through. Probe (1) + two 1500-bar pages (10 each) fit; the third page
    # is answered 429 with Retry-After 2 and must wait for the next window.
    window_end = (int(time.time() // 60) + 10) * 60
    first_request: list[float] = []

    def rate_clock() -> float:  # the window's last 2 s start at the first request
        now = time.time()
        if not first_request:
            first_request.append(now)
        return window_end - 2.0 + (now - first_request[0])

    with BinanceImitation(rate_clock=rate_clock) as srv:
        srv.faults.weight_limit = 25
        srv.faults.ban_after_ignored = 0
        async with fast_dsm(srv, cache_dir, use_vision=False) as dsm:
            t0 = time.monotonic()
            result = await dsm.fetch(PERP, "1m", JAN1, at(4))
            elapsed = time.monotonic() - t0
            stats = dsm._rest[UM].stats

        assert result.frame.equals(srv.expected(UM, "BTCUSDT", M1, T0, T0 + 3 * DAY))
        assert result.report.sources == src(rest=3 * 1440)
        assert result.report.completeness == 1.0
        statuses = [status for _, status in klines_requests(srv)]
        assert sorted(statuses) == [200, 200, 200, 200, 429]
        assert 418 not in [r.status for r in srv.requests]
        [(rejected, _)] = [(s, st) for s, st in klines_requests(srv) if st == 429]
        assert klines_requests(srv)[-1] == (rejected, 200)  # the same page, after the wait
        retry_after = 2  # ceil(window end - now) the imitation sent, ~1.9 s before the window end
        assert elapsed >= retry_after
        assert stats.waited_s >= retry_after - 0.01
        assert stats.retries == 0  # a 429 burns no retry


async def test_418_ban_within_max_wait_is_waited_out(imitation: Any, cache_dir: Path) -> None:
    imitation.faults.rest_418 = 1
    imitation.faults.retry_after_s = 1

    async with fast_dsm(imitation, cache_dir, use_vision=False, rest={"max_wait_s": 5}) as dsm:
        t0 = time.monotonic()
        result = await dsm.fetch(PERP, "1m", JAN1, at(2))
        elapsed = time.monotonic() - t0

    assert result.frame.equals(imitation.expected(UM, "BTCUSDT", M1, T0, T0 + DAY))
    assert result.report.sources == src(rest=1440)
    assert klines_requests(imitation) == [(0, 418), (0, 200), (T0, 200)]
    assert elapsed >= 1.0


async def test_418_ban_beyond_max_wait_raises_rate_limited_naming_the_ban(
    imitation: Any, cache_dir: Path
) -> None:
    imitation.faults.rest_418 = 1
    imitation.faults.retry_after_s = 30

    async with fast_dsm(imitation, cache_dir, use_vision=False, rest={"max_wait_s": 2}) as dsm:
        t0 = time.monotonic()
        with pytest.raises(RateLimited) as info:
            await dsm.fetch(PERP, "1m", JAN1, at(3))
        elapsed = time.monotonic() - t0

    message = str(info.value)
    assert message.startswith(
        "BTCUSDT-PERP.BINANCE 1m: 2 period(s) could not be fetched from any source: "
        "2024-01-01 (REST: Binance FUTURES_USDT REST /fapi/v1/klines: Binance banned this IP "
        "(HTTP 418) until "
    )
    assert message.count("beyond max_wait_s=2s") == 2
    assert "retry after that time, lower the concurrency, or raise max_wait_s" in message
    # Only the request that was answered 418; nothing more is sent into the ban.
    assert klines_requests(imitation) == [(0, 418)]
    assert elapsed < 2.0


# --------------------------------------------------------------------------------------------
# REST: 5xx, slow answers, timeouts, resets
# --------------------------------------------------------------------------------------------


async def test_5xx_burst_is_retried_to_the_exact_bars(imitation: Any, cache_dir: Path) -> None:
    imitation.faults.rest_5xx = 4

    async with fast_dsm(imitation, cache_dir, use_vision=False) as dsm:
        result = await dsm.fetch(PERP, "1m", JAN1, at(2))

    assert result.frame.equals(imitation.expected(UM, "BTCUSDT", M1, T0, T0 + DAY))
    assert result.report.sources == src(rest=1440)
    assert result.report.warnings == []
    assert klines_requests(imitation) == [(0, 503)] * 4 + [(0, 200), (T0, 200)]


async def test_5xx_beyond_max_retries_fails_after_a_bounded_number_of_requests(
    imitation: Any, cache_dir: Path
) -> None:
    imitation.faults.rest_5xx = 100

    async with fast_dsm(imitation, cache_dir, use_vision=False, rest={"max_retries": 2}) as dsm:
        with pytest.raises(DataUnavailable) as info:
            await dsm.fetch(PERP, "1m", JAN1, at(2))

    assert str(info.value).startswith(
        "BTCUSDT-PERP.BINANCE 1m: 1 period(s) could not be fetched from any source: 2024-01-01 "
        "(REST: Binance FUTURES_USDT REST /fapi/v1/klines failed after 2 tries; last error: "
        'HTTP 503 {"code":-1008,"msg":"Service Unavailable."}; the source is unreachable or '
        "failing, retry later or raise max_retries)."
    )
    # Two tries of the listing probe, two of the day: four requests, not a retry storm.
    assert klines_requests(imitation) == [(0, 503), (0, 503), (T0, 503), (T0, 503)]
    assert cached(cache_dir) == []


async def test_slow_answers_within_the_timeout_give_the_exact_bars(
    imitation: Any, cache_dir: Path
) -> None:
    imitation.faults.latency_s = 0.2

    async with fast_dsm(imitation, cache_dir, rest={"timeout_s": 2.0}) as dsm:
        result = await dsm.fetch(PERP, "1m", JAN1, at(3))

    assert result.frame.equals(imitation.expected(UM, "BTCUSDT", M1, T0, T0 + 2 * DAY))
    assert result.report.sources == src(vision=2880)
    assert dsm.vision_client(UM).stats.retries == 0


async def test_answers_slower_than_the_timeout_are_retried_then_raise_source_error(
    imitation: Any, cache_dir: Path
) -> None:
    imitation.faults.latency_s = 0.3

    dsm = fast_dsm(
        imitation, cache_dir, use_vision=False, rest={"timeout_s": 0.1, "max_retries": 2}
    )
    with pytest.raises(DataUnavailable) as info:
        await dsm.fetch(PERP, "1m", JAN1, at(2))
    stats = dsm._rest[UM].stats
    await dsm.aclose()

    # Trust (bounded time): the probe's 2 timeouts and the day's first make 3 consecutive
    # failures on the host, so its circuit opens and the day is not retried into it.
    message = str(info.value)
    assert message.startswith(
        "BTCUSDT-PERP.BINANCE 1m: 1 period(s) could not be fetched from any source: 2024-01-01 "
        "(REST: Binance FUTURES_USDT REST /fapi/v1/klines failed after 1 tries; last error: "
        "ReadTimeout; circuit open for 127.0.0.1:"
    )
    assert "after 3 consecutive failures (last: ReadTimeout); skipped for " in message
    assert "the source is unreachable or failing, retry later or raise max_retries)." in message
    assert (stats.requests, stats.retries) == (3, 1)  # probe 2 tries, the day 1 try
    assert cached(cache_dir) == []


async def test_connection_resets_mid_body_on_rest_and_vision_are_retried(
    imitation: Any, cache_dir: Path
) -> None:
    # Three tries per file: even two cuts of the same file leave it a try that succeeds.
    vision = {"max_retries": 3}
    async with fast_dsm(imitation, cache_dir, use_vision=False, vision=vision) as dsm:
        warm = await dsm.fetch(PERP, "1m", JAN1, at(2))  # the probe is now known
        imitation.clear_requests()
        dsm.use_vision = True
        imitation.faults.reset_mid_body = 2  # the next two answers are cut mid-body

        result = await dsm.fetch(PERP, "1m", JAN1, at(4))
        vision_stats = dsm.vision_client(UM).stats

    assert warm.report.sources == src(rest=1440)
    assert result.frame.equals(imitation.expected(UM, "BTCUSDT", M1, T0, T0 + 3 * DAY))
    assert result.report.sources == src(cache=1440, vision=2880)
    # 2 zips + 2 checksums, plus one re-request per cut answer; REST is not needed.
    assert len(paths(imitation, "/data/")) == 4 + 2
    assert klines_requests(imitation) == []
    assert imitation.faults.reset_mid_body == 0
    assert (vision_stats.files, vision_stats.retries) == (2, 2)


# --------------------------------------------------------------------------------------------
# Vision
# --------------------------------------------------------------------------------------------


async def test_every_refused_vision_day_comes_from_rest_and_the_log_says_why(
    imitation: Any, cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    faults = imitation.faults
    faults.vision_missing.add("BTCUSDT-1m-2024-01-02.zip")
    faults.vision_bad_checksum.add("BTCUSDT-1m-2024-01-03.zip")
    faults.vision_truncated.add("BTCUSDT-1m-2024-01-04.zip")
    faults.vision_wrong_columns.add("BTCUSDT-1m-2024-01-05.zip")

    with caplog.at_level(logging.INFO, logger="nautilus_dsm.dsm"):
        async with fast_dsm(imitation, cache_dir) as dsm:
            result = await dsm.fetch(PERP, "1m", JAN1, at(7))

    assert result.frame.equals(imitation.expected(UM, "BTCUSDT", M1, T0, T0 + 6 * DAY))
    assert result.report.sources == src(vision=2 * 1440, rest=4 * 1440)
    assert result.report.completeness == 1.0
    assert result.report.warnings == []
    assert sorted(start for start, _ in klines_requests(imitation)) == [
        0,
        T0 + DAY,
        T0 + 2 * DAY,
        T0 + 3 * DAY,
        T0 + 4 * DAY,
    ]

    def downloads(day: str) -> list[int]:
        return [status for path, status in paths(imitation, UM_DAILY.format(day))]

    assert downloads("2024-01-02") == [404]
    assert downloads("2024-01-03") == [200] * 4  # zip + checksum, twice: never accepted
    assert downloads("2024-01-04") == [200] * 4  # truncated twice
    assert downloads("2024-01-05") == [200] * 2  # deterministic format error: not re-downloaded
    reasons = sorted(r.getMessage() for r in caplog.records if "using REST" in r.getMessage())
    assert len(reasons) == 4
    assert reasons[0] == "BTCUSDT 2024-01-02: not on Vision (404); using REST"
    assert reasons[1].startswith(
        "BTCUSDT 2024-01-03: Vision refused (Vision file BTCUSDT-1m-2024-01-03.zip: SHA-256 "
    )
    assert reasons[1].endswith(
        "after 2 downloads; the file is refused and the period will come from REST); using REST"
    )
    # A cut download fails its checksum before it is ever unzipped.
    assert reasons[2].startswith(
        "BTCUSDT 2024-01-04: Vision refused (Vision file BTCUSDT-1m-2024-01-04.zip: SHA-256 "
    )
    assert reasons[3] == (
        "BTCUSDT 2024-01-05: Vision refused (Vision file BTCUSDT-1m-2024-01-05.zip: Vision CSV "
        "has 11 columns, expected Binance's 12 kline fields; the file is not a kline file or its "
        "format changed); using REST"
    )
    # The refused files were never cached as Vision data: the cache holds the REST bars.
    cache = KlineCache(cache_dir)
    for day in (2, 3, 4, 5):
        key = f"2024-01-0{day}"
        start = T0 + (day - 1) * DAY
        assert cache.read(UM, "BTCUSDT", M1, key).equals(
            imitation.expected(UM, "BTCUSDT", M1, start, start + DAY)
        )


# Statuses of the monthly zip's downloads per fault: refused files are downloaded max_retries
# times (2 here) when they may be a transfer error, once when the answer is final.
_MONTHLY_DOWNLOADS = {
    "vision_missing": [404],
    "vision_bad_checksum": [200, 200],
    "vision_truncated": [200, 200],
    "vision_wrong_columns": [200],
}


@pytest.mark.parametrize("fault", list(_MONTHLY_DOWNLOADS))
async def test_refused_monthly_zip_falls_back_to_the_daily_files(
    imitation: Any, cache_dir: Path, fault: str
) -> None:
    getattr(imitation.faults, fault).add("BTCUSDT-1h-2024-02.zip")
    start, end = datetime(2024, 2, 1, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC)

    async with fast_dsm(imitation, cache_dir) as dsm:
        result = await dsm.fetch(PERP, "1h", start, end)

    assert result.frame.equals(imitation.expected(UM, "BTCUSDT", H1, to_ms(start), to_ms(end)))
    assert result.report.sources == src(vision=29 * 24)
    monthly = [s for p, s in paths(imitation, "/monthly/") if p.endswith(".zip")]
    assert monthly == _MONTHLY_DOWNLOADS[fault]
    daily = [p for p, s in paths(imitation, "/daily/") if p.endswith(".zip") and s == 200]
    assert len(daily) == 29
    assert len(cached(cache_dir, interval="1h")) == 29


async def test_refused_monthly_zip_and_a_refused_daily_zip_end_at_rest_for_that_day(
    imitation: Any, cache_dir: Path
) -> None:
    imitation.faults.vision_missing.add("BTCUSDT-1h-2024-02.zip")
    imitation.faults.vision_bad_checksum.add("BTCUSDT-1h-2024-02-10.zip")
    start, end = datetime(2024, 2, 1, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC)

    async with fast_dsm(imitation, cache_dir) as dsm:
        result = await dsm.fetch(PERP, "1h", start, end)

    assert result.frame.equals(imitation.expected(UM, "BTCUSDT", H1, to_ms(start), to_ms(end)))
    assert result.report.sources == src(vision=28 * 24, rest=24)
    feb10 = to_ms(datetime(2024, 2, 10, tzinfo=UTC))
    assert klines_requests(imitation) == [(0, 200), (feb10, 200)]


async def test_microsecond_and_millisecond_files_across_new_year_are_one_exact_series(
    imitation: Any, cache_dir: Path
) -> None:
    # Binance's spot files are in ms up to 2024-12-31 and in µs from 2025-01-01.
    start, end = datetime(2024, 12, 31, tzinfo=UTC), datetime(2025, 1, 2, tzinfo=UTC)
    expected = imitation.expected(SPOT, "BTCUSDT", M1, to_ms(start), to_ms(end))

    async with fast_dsm(imitation, cache_dir) as dsm:
        cold = await dsm.fetch("BTCUSDT.BINANCE", "1m", start, end)
        warm = await dsm.fetch("BTCUSDT.BINANCE", "1m", start, end)

    assert cold.frame.height == 2880
    assert cold.frame.equals(expected)
    assert cold.report.sources == src(vision=2880)
    assert cold.report.gaps == []
    assert cold.report.duplicates_removed == 0
    assert cold.frame["open_time"].diff().drop_nulls().unique().to_list() == [timedelta(minutes=1)]
    assert warm.frame.equals(expected)
    assert warm.report.sources == src(cache=2880)


async def test_oversized_vision_file_is_refused_unread_and_the_day_comes_from_rest(
    imitation: Any, cache_dir: Path
) -> None:
    async with fast_dsm(imitation, cache_dir, vision={"max_decompressed_bytes": 10_000}) as dsm:
        result = await dsm.fetch(PERP, "1m", JAN1, at(2))

    assert result.frame.equals(imitation.expected(UM, "BTCUSDT", M1, T0, T0 + DAY))
    assert result.report.sources == src(rest=1440)
    assert [s for p, s in paths(imitation, "/data/") if p.endswith(".zip")] == [200]  # once


async def test_unreachable_vision_host_leaves_every_day_to_rest(
    imitation: Any, cache_dir: Path
) -> None:
    dsm = fast_dsm(imitation, cache_dir)
    with socket.socket() as closed:  # a port nobody listens on: connection refused
        closed.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{closed.getsockname()[1]}"
    dsm._vision[UM] = VisionClient(UM, dead, backoff_base_s=0.01, max_retries=2)

    result = await dsm.fetch(PERP, "1m", JAN1, at(3))
    vision_stats = dsm._vision[UM].stats
    await dsm.aclose()

    assert result.frame.equals(imitation.expected(UM, "BTCUSDT", M1, T0, T0 + 2 * DAY))
    assert result.report.sources == src(rest=2880)
    assert sorted(klines_requests(imitation)) == [(0, 200), (T0, 200), (T0 + DAY, 200)]
    assert (vision_stats.files, vision_stats.retries) == (0, 2)  # one retry per day's zip
    assert cached(cache_dir) == ["2024-01-01.parquet", "2024-01-02.parquet"]


# --------------------------------------------------------------------------------------------
# Source data: gaps, duplicates, disorder
# --------------------------------------------------------------------------------------------


async def test_gap_across_a_day_boundary_is_reported_exactly_and_not_filled(
    imitation: Any, cache_dir: Path
) -> None:
    imitation.faults.gaps.append(("BTCUSDT", T0 + DAY - 10 * MIN, T0 + DAY + 20 * MIN))
    imitation.faults.gaps.append(("BTCUSDT", T0 + 2 * DAY - 5 * MIN, T0 + 2 * DAY))  # the tail

    async with fast_dsm(imitation, cache_dir, min_completeness=0.9) as dsm:
        result = await dsm.fetch(PERP, "1m", JAN1, at(3))

    report = result.report
    assert result.frame.height == 2880 - 35
    assert result.frame.equals(imitation.expected(UM, "BTCUSDT", M1, T0, T0 + 2 * DAY))
    assert report.gaps == [Gap(at(1, 23, 50), at(2, 0, 20), 30), Gap(at(2, 23, 55), at(3), 5)]
    assert (report.bars, report.expected_bars, report.missing_bars) == (2845, 2880, 35)
    assert report.completeness == 2845 / 2880
    assert report.sources == src(vision=2845)
    assert report.to_dict()["gaps"] == [
        {
            "start": "2024-01-01T23:50:00Z",
            "end": "2024-01-02T00:20:00Z",
            "missing": 30,
            "confirmed_by": ["rest", "vision"],  # the gap check asked REST: it lacks them too
        },
        {
            "start": "2024-01-02T23:55:00Z",
            "end": "2024-01-03T00:00:00Z",
            "missing": 5,
            "confirmed_by": ["rest", "vision"],
        },
    ]


async def test_a_day_no_source_has_is_one_gap_and_nothing_is_invented(
    imitation: Any, cache_dir: Path
) -> None:
    imitation.faults.gaps.append(("BTCUSDT", T0 + DAY, T0 + 2 * DAY))

    async with fast_dsm(imitation, cache_dir, on_low_quality="warn") as dsm:
        result = await dsm.fetch(PERP, "1m", JAN1, at(4))

    assert result.frame.equals(imitation.expected(UM, "BTCUSDT", M1, T0, T0 + 3 * DAY))
    assert result.report.gaps == [Gap(at(2), at(3), 1440)]
    assert result.report.sources == src(vision=2880)
    assert paths(imitation, UM_DAILY.format("2024-01-02")) == [(UM_DAILY.format("2024-01-02"), 404)]
    assert klines_requests(imitation) == [(0, 200), (T0 + DAY, 200)]  # asked, answered empty
    assert result.report.warnings[-1].startswith(
        "BTCUSDT-PERP.BINANCE 1m 2024-01-01T00:00:00Z..2024-01-04T00:00:00Z: completeness "
        "66.67% (2880 of 4320 expected bars) is below min_completeness 95.00%"
    )


async def test_duplicate_and_out_of_order_rest_rows_are_removed_sorted_and_counted(
    imitation: Any, cache_dir: Path
) -> None:
    imitation.faults.duplicate_rows = True
    imitation.faults.out_of_order_rows = True

    async with fast_dsm(imitation, cache_dir, use_vision=False) as dsm:
        result = await dsm.fetch("BTCUSDT.BINANCE", "1m", JAN1, at(2))

    # Spot pages hold 1000 bars: two pages, each with one repeated row and its first two swapped.
    assert result.frame.equals(imitation.expected(SPOT, "BTCUSDT", M1, T0, T0 + DAY))
    assert result.report.duplicates_removed == 2
    assert result.report.out_of_order_fixed == 2
    assert result.report.sources == src(rest=1440)
    assert sorted(klines_requests(imitation, "/api/v3/klines")) == [  # pages run concurrently
        (0, 200),
        (T0, 200),
        (T0 + 1000 * MIN, 200),
    ]
    cache = KlineCache(cache_dir)
    assert cache.read(SPOT, "BTCUSDT", M1, "2024-01-01").equals(result.frame)


# --------------------------------------------------------------------------------------------
# Cache: corrupt files, killed writers
# --------------------------------------------------------------------------------------------


def _corrupt(path: Path, how: str) -> None:
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "garbage":
        path.write_bytes(b"PAR1 this is not a parquet file PAR1")
    elif how == "empty":
        path.write_bytes(b"")
    else:  # a valid parquet file with the wrong schema (a column missing)
        pl.read_parquet(path).drop("trades").write_parquet(path)


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty", "wrong_schema"])
async def test_corrupt_cache_file_is_detected_deleted_and_refetched(
    imitation: Any, cache_dir: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = cache_dir / "binance" / "futures_usdt" / "BTCUSDT" / "1m" / "2024-01-02.parquet"
    expected = imitation.expected(UM, "BTCUSDT", M1, T0, T0 + 3 * DAY)
    async with fast_dsm(imitation, cache_dir) as dsm:
        await dsm.fetch(PERP, "1m", JAN1, at(4))
        _corrupt(path, how)
        imitation.clear_requests()

        with caplog.at_level(logging.WARNING, logger="nautilus_dsm.dsm"):
            repaired = await dsm.fetch(PERP, "1m", JAN1, at(4))
        warm = await dsm.fetch(PERP, "1m", JAN1, at(4))

    assert repaired.frame.equals(expected)
    assert repaired.report.sources == src(cache=2880, vision=1440)
    assert (repaired.report.cache_hits, repaired.report.cache_misses) == (2, 1)
    assert dsm.cache.corrupt == 1
    [message] = dsm_messages(caplog.records)
    assert message.split(" is ")[0] == f"cache file {path}"
    # Moved aside under the root (quarantined for inspection), not deleted.
    assert f"; moved to {cache_dir / 'quarantine' / 'binance' / 'futures_usdt'}" in message
    assert message.endswith(", the period will be fetched again")
    assert paths(imitation, "/data/") == [
        (UM_DAILY.format("2024-01-02"), 200),
        (UM_DAILY.format("2024-01-02") + ".CHECKSUM", 200),
    ]
    assert warm.frame.equals(expected)
    assert warm.report.sources == src(cache=4320)


_KILLED_AT_FSYNC = textwrap.dedent(
    """
    import os, sys, time
    import polars as pl
    from nautilus_dsm.dsm.cache import KlineCache
    from nautilus_dsm.common import Interval, MarketType

    root, frame_path = sys.argv[1:3]
    frame = pl.read_parquet(frame_path)

    def stall(fd):  # the bytes are written, not yet synced or renamed: the worst moment
        print("writing", flush=True)
        time.sleep(60)

    os.fsync = stall
    cache = KlineCache(root)
    cache.write(MarketType.FUTURES_USDT, "BTCUSDT", Interval.MINUTE_1, "2024-01-02", frame)
    """
)


async def test_writer_killed_mid_write_leaves_no_file_that_is_ever_read(
    imitation: Any, cache_dir: Path, tmp_path: Path
) -> None:
    day2 = imitation.expected(UM, "BTCUSDT", M1, T0 + DAY, T0 + 2 * DAY)
    frame_path = tmp_path / "day2.parquet"
    day2.write_parquet(frame_path)
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_AT_FSYNC, str(cache_dir), str(frame_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline() == "writing\n"  # the child is inside write()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    [leftover] = cached(cache_dir)
    assert leftover.startswith(".2024-01-02.") and leftover.endswith(".tmp")

    async with fast_dsm(imitation, cache_dir) as dsm:
        result = await dsm.fetch(PERP, "1m", JAN1, at(4))

    assert result.frame.equals(imitation.expected(UM, "BTCUSDT", M1, T0, T0 + 3 * DAY))
    assert result.report.sources == src(vision=4320)  # the temp file was not taken for a hit
    assert result.report.cache_hits == 0
    assert dsm.cache.corrupt == 0
    assert cached(cache_dir) == [
        leftover,
        "2024-01-01.parquet",
        "2024-01-02.parquet",
        "2024-01-03.parquet",
    ]
    assert KlineCache(cache_dir).info()["files"] == 3
    assert KlineCache(cache_dir).clear() == 3
    assert cached(cache_dir) == []  # clear() removes stale temp files too


_WRITE_LOOP = textwrap.dedent(
    """
    import sys
    from datetime import date, timedelta
    import polars as pl
    from nautilus_dsm.dsm.cache import KlineCache
    from nautilus_dsm.common import Interval, MarketType

    root, frame_path = sys.argv[1:3]
    frame = pl.read_parquet(frame_path)
    cache = KlineCache(root)
    for i in range(366):
        key = (date(2024, 1, 1) + timedelta(days=i)).isoformat()
        shift = pl.duration(days=i)  # the cache refuses bars outside the period's day
        day = frame.with_columns(pl.col("open_time") + shift, pl.col("close_time") + shift)
        cache.write(MarketType.FUTURES_USDT, "BTCUSDT", Interval.MINUTE_1, key, day)
        print(key, flush=True)
    """
)


def test_writer_killed_at_an_arbitrary_moment_never_leaves_a_partial_parquet(
    imitation: Any, cache_dir: Path, tmp_path: Path
) -> None:
    frame = imitation.expected(UM, "BTCUSDT", M1, T0, T0 + DAY)
    frame_path = tmp_path / "day.parquet"
    frame.write_parquet(frame_path)
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITE_LOOP, str(cache_dir), str(frame_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        reported = [proc.stdout.readline().strip() for _ in range(10)]
        os.kill(proc.pid, signal.SIGKILL)  # somewhere inside one of the following writes
    finally:
        proc.wait(timeout=10)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL

    names = cached(cache_dir)
    done = [n.removesuffix(".parquet") for n in names if n.endswith(".parquet")]
    temporary = [n for n in names if not n.endswith(".parquet")]
    assert len(temporary) <= 1  # at most the one write the kill interrupted ...
    assert all(n.startswith(".") and n.endswith(".tmp") for n in temporary)  # ... as a temp
    assert done[: len(reported)] == reported  # every reported write is there, in order
    assert done == [
        (datetime(2024, 1, 1) + timedelta(days=i)).date().isoformat() for i in range(len(done))
    ]
    cache = KlineCache(cache_dir)
    for i, key in enumerate(done):  # every file present is whole: none half-written or corrupt
        shift = pl.duration(days=i)
        day = frame.with_columns(pl.col("open_time") + shift, pl.col("close_time") + shift)
        assert cache.read(UM, "BTCUSDT", M1, key).equals(day)
    assert cache.corrupt == 0


# --------------------------------------------------------------------------------------------
# Bad input: clear errors before any I/O (or before any harm)
# --------------------------------------------------------------------------------------------

_SUPPORTED = "1s 1m 3m 5m 15m 30m 1h 2h 4h 6h 8h 12h 1d 3d 1w 1M"


@pytest.mark.parametrize(
    ("instrument", "interval", "start", "end", "market_type", "error", "message"),
    [
        pytest.param(
            PERP,
            "1m",
            JAN1,
            at(2),
            SPOT,
            MarketTypeMismatch,
            "BTCUSDT-PERP.BINANCE is a USDT-margined futures instrument, but market type SPOT "
            "was requested; use MarketType.FUTURES_USDT (--market-type futures_usdt) or leave it unset, or use "
            "the spot instrument id (e.g. BTCUSDT.BINANCE)",
            id="wrong-market-type",
        ),
        pytest.param(
            PERP,
            "1s",
            JAN1,
            at(2),
            None,
            InvalidInput,
            "interval 1s is served on SPOT only, not FUTURES_USDT; use 1m or a longer interval "
            "for futures",
            id="1s-on-futures",
        ),
        pytest.param(
            PERP,
            "2m",
            JAN1,
            at(2),
            None,
            InvalidInput,
            f"unknown interval '2m'; Binance supports: {_SUPPORTED}",
            id="unknown-interval",
        ),
        pytest.param(
            PERP,
            "1m",
            at(2),
            at(2),
            None,
            InvalidInput,
            "start 2024-01-02T00:00:00+00:00 is not before end 2024-01-02T00:00:00+00:00; the "
            "range is [start, end), so pass an end after the start",
            id="start-equals-end",
        ),
        pytest.param(
            PERP,
            "1m",
            at(3),
            at(2),
            None,
            InvalidInput,
            "start 2024-01-03T00:00:00+00:00 is not before end 2024-01-02T00:00:00+00:00; the "
            "range is [start, end), so pass an end after the start",
            id="start-after-end",
        ),
        pytest.param(
            PERP,
            "1m",
            datetime(2024, 1, 1),
            at(2),
            None,
            InvalidInput,
            "naive datetime 2024-01-01T00:00:00 is ambiguous; pass a timezone-aware UTC "
            "datetime, e.g. datetime(2024, 1, 1, tzinfo=UTC), or an ISO-8601 string with an "
            "offset, e.g. '2024-01-01T00:00:00Z'",
            id="naive-start",
        ),
        pytest.param(
            "../x",
            "1m",
            JAN1,
            at(2),
            None,
            InvalidInput,
            "invalid symbol '../x': Binance symbols are upper-case letters and digits "
            "(e.g. BTCUSDT, BTCUSD_PERP, or the Nautilus id BTCUSDT-PERP.BINANCE)",
            id="dot-dot-symbol",
        ),
        pytest.param(
            "../../etc/passwd-PERP.BINANCE",
            "1m",
            JAN1,
            at(2),
            None,
            InvalidInput,
            "invalid symbol '../../etc/passwd-PERP.BINANCE': Binance symbols are upper-case "
            "letters and digits (e.g. BTCUSDT, BTCUSD_PERP, or the Nautilus id "
            "BTCUSDT-PERP.BINANCE)",
            id="path-in-instrument-id",
        ),
        pytest.param(
            "BTC/USDT",
            "1m",
            JAN1,
            at(2),
            None,
            InvalidInput,
            "invalid symbol 'BTC/USDT': Binance symbols are upper-case letters and digits (e.g. "
            "BTCUSDT, BTCUSD_PERP, or the Nautilus id BTCUSDT-PERP.BINANCE)",
            id="slash-symbol",
        ),
    ],
)
async def test_bad_input_is_refused_before_any_io(
    imitation: Any,
    cache_dir: Path,
    instrument: str,
    interval: str,
    start: datetime,
    end: datetime,
    market_type: MarketType | None,
    error: type[Exception],
    message: str,
) -> None:
    async with fast_dsm(imitation, cache_dir, market_type=market_type) as dsm:
        with pytest.raises(error) as info:
            await dsm.fetch(instrument, interval, start, end)

    assert type(info.value) is error
    assert str(info.value) == message
    assert imitation.requests == []
    assert list(cache_dir.iterdir()) == []


async def test_unknown_symbol_costs_exactly_one_request(imitation: Any, cache_dir: Path) -> None:
    async with fast_dsm(imitation, cache_dir) as dsm:
        with pytest.raises(UnknownSymbol) as info:
            await dsm.fetch("NOPEUSDT-PERP.BINANCE", "1m", JAN1, at(8))

    assert str(info.value) == (
        "'NOPEUSDT' is not a Binance FUTURES_USDT symbol (/fapi/v1/klines answered -1121 "
        "'Invalid symbol.'); check the spelling and the market type (e.g. BTCUSDT on SPOT or "
        "FUTURES_USDT, BTCUSD_PERP on FUTURES_COIN)"
    )
    assert [(r.path, r.status) for r in imitation.requests] == [("/fapi/v1/klines", 400)]
    assert list(cache_dir.iterdir()) == []


async def test_range_before_the_listing_is_reported_with_a_bounded_number_of_requests(
    imitation: Any, cache_dir: Path
) -> None:
    listed = at(3, 12)
    spec = imitation.symbols(UM)["BTCUSDT"]
    imitation.add_symbol(
        UM, dataclasses.replace(spec, symbol="NEWUSDT", base_asset="NEW", listed_ms=to_ms(listed))
    )
    start = datetime(2023, 12, 1, tzinfo=UTC)  # 33.5 days before the listing

    async with fast_dsm(imitation, cache_dir) as dsm:
        result = await dsm.fetch("NEWUSDT-PERP.BINANCE", "1m", start, at(5))
        before = await dsm.fetch("NEWUSDT-PERP.BINANCE", "1m", start, at(3))

    report = result.report
    assert result.frame.equals(imitation.expected(UM, "NEWUSDT", M1, to_ms(listed), T0 + 4 * DAY))
    assert report.listing_time == listed
    assert report.to_dict()["listing_time"] == "2024-01-03T12:00:00Z"
    assert (report.bars, report.expected_bars, report.completeness) == (2160, 2160, 1.0)
    assert report.gaps == []
    assert report.warnings == [
        "NEWUSDT-PERP.BINANCE has no data before 2024-01-03T12:00:00Z (first bar); 48240 bars "
        "requested before it are not counted as missing"
    ]
    assert before.frame.height == 0
    assert before.report.warnings == [
        "NEWUSDT-PERP.BINANCE has its first bar at 2024-01-03T12:00:00Z, after the requested "
        "range 2023-12-01T00:00:00Z..2024-01-03T00:00:00Z; nothing was requested"
    ]
    # One probe for both fetches (memoised), then only the two days from the listing on:
    # no walk through 33 days of 404s.
    assert len(imitation.requests) == 5
    assert [p for p, _ in paths(imitation, "/fapi/v1/")] == ["/fapi/v1/klines"]
    assert sorted(p.rsplit("/", 1)[1] for p, _ in paths(imitation, "/data/")) == [
        "NEWUSDT-1m-2024-01-03.zip",
        "NEWUSDT-1m-2024-01-03.zip.CHECKSUM",
        "NEWUSDT-1m-2024-01-04.zip",
        "NEWUSDT-1m-2024-01-04.zip.CHECKSUM",
    ]


# --------------------------------------------------------------------------------------------
# TLS and credentials
# --------------------------------------------------------------------------------------------


def _ssl_context(transport: Any) -> ssl.SSLContext:
    client = transport._loop_state().client
    return client._transport._pool._ssl_context


async def test_tls_verification_is_on_unless_turned_off_explicitly(cache_dir: Path) -> None:
    default = DataSourceManager.create(DataProvider.BINANCE, cache_dir=cache_dir)
    insecure = DataSourceManager.create(DataProvider.BINANCE, cache_dir=cache_dir, verify_tls=False)

    for dsm in (default, insecure):
        rest, vision = dsm.rest_client(UM)._transport, dsm.vision_client(UM)._transport
        verified = dsm is default
        for transport in (rest, vision):
            assert transport.verify_tls is verified
            context = _ssl_context(transport)
            assert context.verify_mode == (ssl.CERT_REQUIRED if verified else ssl.CERT_NONE)
            assert context.check_hostname is verified
        await dsm.aclose()


async def test_no_credential_is_sent_or_logged(
    imitation: Any,
    cache_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    headers: list[dict[str, str]] = []
    serve = imitation_server._Handler._serve

    def spy(handler: Any, head: bool) -> None:
        headers.append({k.lower(): v for k, v in handler.headers.items()})
        serve(handler, head)

    monkeypatch.setattr(imitation_server._Handler, "_serve", spy)
    imitation.faults.vision_missing.add("BTCUSDT-1m-2024-01-02.zip")  # REST is used too

    with caplog.at_level(logging.DEBUG):
        async with fast_dsm(imitation, cache_dir) as dsm:
            result = await dsm.fetch(PERP, "1m", JAN1, at(3))
            await dsm.exchange_info(UM)

    assert result.report.sources == src(vision=1440, rest=1440)
    assert len(headers) == len(imitation.requests) == 6
    assert {name for h in headers for name in h} == {
        "host",
        "accept",
        "accept-encoding",
        "connection",
        "user-agent",
    }
    assert {h["user-agent"] for h in headers} == {"nautilus-dsm/0.1"}
    assert {key for r in imitation.requests for key in r.query} <= {
        "symbol",
        "interval",
        "startTime",
        "endTime",
        "limit",
    }
    logged = "\n".join(r.getMessage() for r in caplog.records).lower()
    assert "http request: get" in logged  # httpx's request log was captured ...
    for secret in ("x-mbx-apikey", "signature", "apikey", "secret"):
        assert secret not in logged  # ... and carries no credential


# --------------------------------------------------------------------------------------------
# Live client (the data-client tests' harness: real LiveClock, MessageBus, Cache)
# --------------------------------------------------------------------------------------------


def _drain_bars(h: Harness) -> list[Bar]:
    bars = []
    while not h.published.empty():
        item = h.published.get_nowait()
        if isinstance(item, Bar):
            bars.append(item)
    return bars


async def test_live_answers_slower_than_the_bar_publish_each_bar_once_in_order(
    make_harness: Any,
) -> None:
    h = make_harness()
    h.srv.faults.latency_s = 1.2  # every answer outlasts the 1 s bar: the next one is due first
    subscribe(h, SPOT_1S)
    bars, received = [], []
    while len(bars) < 5:
        bars.append(await h.next_bar(timeout=20))
        received.append(h.clock.timestamp_ns())

    await unsubscribe(h, SPOT_1S)
    late = _drain_bars(h)  # published by the poll that was in flight at the unsubscribe

    assert_contiguous_closed_and_true(h, bars, received)
    everything = [b.ts_event for b in bars + late]
    assert everything == [everything[0] + i * 1_000_000_000 for i in range(len(everything))]
    # Polls really overlapped bar closes: at least one answer carried several bars at once.
    assert any(m.endswith("bars (backfill)") for m in h.logs.at("info"))
    assert h.logs.at("error") == []


async def test_live_5xx_for_several_bars_is_backfilled_in_order_without_gap_or_duplicate(
    make_harness: Any,
) -> None:
    h = make_harness()
    subscribe(h, SPOT_1S)
    bars, received = [await h.next_bar()], [h.clock.timestamp_ns()]

    h.srv.faults.rest_5xx = 1_000_000  # every REST answer is 503 ...
    await asyncio.sleep(2.5)  # ... for 2.5 s: the outage itself (the scenario), not a sync
    h.srv.faults.rest_5xx = 0
    resumed_ms = h.srv.now_ms()
    while bars[-1].ts_event // 1_000_000 < resumed_ms + 1_000:
        bars.append(await h.next_bar(timeout=20))
        received.append(h.clock.timestamp_ns())

    assert_contiguous_closed_and_true(h, bars, received)
    during = [b for b in bars if bars[0].ts_event < b.ts_event <= resumed_ms * 1_000_000]
    assert len(during) >= 2  # bars that closed during the outage arrived once, in order
    assert 503 in [r.status for r in h.srv.requests]
    assert h.logs.at("error") == []
