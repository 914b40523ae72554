"""VisionClient against the local Binance imitation (real HTTP on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import datetime as dt
from datetime import UTC, datetime

import pytest

from nautilus_dsm.common import Interval, MarketType, to_ms
from nautilus_dsm.dsm.vision import VisionClient
from nautilus_dsm.errors import ChecksumMismatch, InvalidResponse, SourceError

DAY_MS = 86_400_000
UM = MarketType.FUTURES_USDT
SPOT = MarketType.SPOT
JAN3 = dt.date(2024, 1, 3)
JAN3_MS = to_ms(datetime(2024, 1, 3, tzinfo=UTC))
DAILY_PATH = "/data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-03.zip"


def _client(srv, market: MarketType = UM, **kwargs) -> VisionClient:
    kwargs.setdefault("backoff_base_s", 0.01)
    kwargs.setdefault("backoff_max_s", 0.05)
    return VisionClient(market, srv.url, **kwargs)


def _zip_requests(srv, path: str = DAILY_PATH) -> list:
    return [r for r in srv.requests if r.path == path]


async def test_daily_equals_source(imitation) -> None:
    client = _client(imitation)
    try:
        frame = await client.daily("BTCUSDT", Interval.MINUTE_1, JAN3)
    finally:
        await client.aclose()
    expected = imitation.expected(UM, "BTCUSDT", Interval.MINUTE_1, JAN3_MS, JAN3_MS + DAY_MS)
    assert frame is not None
    assert frame.height == 1440
    assert frame.equals(expected)
    stats = client.stats
    assert (stats.files, stats.checksum_failures, stats.retries, stats.not_found) == (1, 0, 0, 0)
    assert stats.bytes > 0
    assert [r.path for r in imitation.requests] == [DAILY_PATH, DAILY_PATH + ".CHECKSUM"]


async def test_monthly_equals_source(imitation) -> None:
    client = _client(imitation, MarketType.FUTURES_COIN)
    try:
        frame = await client.monthly("BTCUSD_PERP", "1h", 2024, 2)
    finally:
        await client.aclose()
    start = to_ms(datetime(2024, 2, 1, tzinfo=UTC))
    end = to_ms(datetime(2024, 3, 1, tzinfo=UTC))
    expected = imitation.expected(
        MarketType.FUTURES_COIN, "BTCUSD_PERP", Interval.HOUR_1, start, end
    )
    assert frame is not None
    assert frame.height == 29 * 24
    assert frame.equals(expected)


async def test_spot_microsecond_file_is_floored_to_ms(imitation) -> None:
    day = dt.date(2025, 1, 2)
    start = to_ms(datetime(2025, 1, 2, tzinfo=UTC))
    client = _client(imitation, SPOT)
    try:
        frame = await client.daily("BTCUSDT", "1h", day)
    finally:
        await client.aclose()
    assert frame is not None
    assert frame.equals(imitation.expected(SPOT, "BTCUSDT", Interval.HOUR_1, start, start + DAY_MS))


async def test_missing_file_is_none(imitation) -> None:
    imitation.faults.vision_missing.add("BTCUSDT-1m-2024-01-03.zip")
    client = _client(imitation)
    try:
        frame = await client.daily("BTCUSDT", "1m", JAN3)
    finally:
        await client.aclose()
    assert frame is None
    assert client.stats.not_found == 1
    assert [r.status for r in _zip_requests(imitation)] == [404]


async def test_bad_checksum_refused_after_exactly_max_retries_downloads(imitation) -> None:
    imitation.faults.vision_bad_checksum.add("BTCUSDT-1m-2024-01-03.zip")
    client = _client(imitation, max_retries=3)
    with pytest.raises(ChecksumMismatch) as info:
        await client.daily("BTCUSDT", "1m", JAN3)
    await client.aclose()
    message = str(info.value)
    assert message.startswith("Vision file BTCUSDT-1m-2024-01-03.zip: SHA-256 ")
    assert message.endswith(
        "after 3 downloads; the file is refused and the period will come from REST"
    )
    assert len(_zip_requests(imitation)) == 3
    assert client.stats.checksum_failures == 3
    assert client.stats.files == 0


async def test_truncated_zip_raises_source_error(imitation) -> None:
    imitation.faults.vision_truncated.add("BTCUSDT-1m-2024-01-03.zip")
    client = _client(imitation, max_retries=2)
    with pytest.raises(SourceError, match=r"^Vision file BTCUSDT-1m-2024-01-03\.zip"):
        await client.daily("BTCUSDT", "1m", JAN3)
    await client.aclose()
    assert len(_zip_requests(imitation)) == 2
    assert client.stats.files == 0


async def test_wrong_columns_raise_source_error(imitation) -> None:
    imitation.faults.vision_wrong_columns.add("BTCUSDT-1m-2024-01-03.zip")
    client = _client(imitation)
    # Refused as an InvalidResponse (a SourceError) at once: the checksum was valid, so a
    # re-download would fetch the same file.
    with pytest.raises(
        InvalidResponse,
        match=r"^Vision file BTCUSDT-1m-2024-01-03\.zip: Vision CSV has 11 columns, expected "
        r"Binance's 12 kline fields",
    ):
        await client.daily("BTCUSDT", "1m", JAN3)
    await client.aclose()
    assert len(_zip_requests(imitation)) == 1


async def test_decompressed_size_cap(imitation) -> None:
    client = _client(imitation, max_decompressed_bytes=10_000)
    with pytest.raises(
        SourceError,
        match=r"^Vision file BTCUSDT-1m-2024-01-03\.zip: member BTCUSDT-1m-2024-01-03\.csv "
        r"declares \d+ bytes, which exceeds the cap of 10000 bytes; raise "
        r"max_decompressed_bytes if the file is genuine$",
    ):
        await client.daily("BTCUSDT", "1m", JAN3)
    await client.aclose()
    assert len(_zip_requests(imitation)) == 1  # deterministic: not re-downloaded


async def test_reset_mid_body_is_retried_like_rest(imitation) -> None:
    imitation.faults.reset_mid_body = 2
    client = _client(imitation)
    try:
        frame = await client.daily("BTCUSDT", "1m", JAN3)
    finally:
        await client.aclose()
    expected = imitation.expected(UM, "BTCUSDT", Interval.MINUTE_1, JAN3_MS, JAN3_MS + DAY_MS)
    assert frame is not None
    assert frame.equals(expected)
    assert [r.path for r in _zip_requests(imitation)] == [DAILY_PATH] * 3
    assert client.stats.retries == 2


async def test_monthly_calendar_month_interval_is_named_1mo(imitation) -> None:
    client = _client(imitation, SPOT)
    try:
        frame = await client.monthly("BTCUSDT", "1M", 2023, 6)
    finally:
        await client.aclose()
    start = to_ms(datetime(2023, 6, 1, tzinfo=UTC))
    assert frame is not None
    assert frame.equals(imitation.expected(SPOT, "BTCUSDT", Interval.MONTH_1, start, start + 1))
    assert imitation.requests[0].path == (
        "/data/spot/monthly/klines/BTCUSDT/1mo/BTCUSDT-1mo-2023-06.zip"
    )


async def test_many_days_concurrently(imitation) -> None:
    client = _client(imitation, concurrency=2)
    days = [JAN3 + dt.timedelta(days=i) for i in range(6)]
    try:
        frames = await asyncio.gather(*(client.daily("ETHUSDT", "5m", d) for d in days))
    finally:
        await client.aclose()
    for day, frame in zip(days, frames, strict=True):
        start = to_ms(datetime(day.year, day.month, day.day, tzinfo=UTC))
        expected = imitation.expected(UM, "ETHUSDT", Interval.MINUTE_5, start, start + DAY_MS)
        assert frame is not None
        assert frame.equals(expected)
    assert client.stats.files == 6


def test_client_survives_a_new_event_loop_per_call(imitation) -> None:
    client = _client(imitation)
    first = asyncio.run(client.daily("BTCUSDT", "1h", JAN3))
    second = asyncio.run(client.daily("BTCUSDT", "1h", JAN3 + dt.timedelta(days=1)))
    asyncio.run(client.aclose())
    assert first is not None
    assert second is not None
    assert first.height == second.height == 24
