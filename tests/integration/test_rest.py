"""BinanceRestClient against the local Binance imitation (real HTTP on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest

from nautilus_dsm.common import Interval, MarketType, to_ms
from nautilus_dsm.dsm.rest import BinanceRestClient
from nautilus_dsm.errors import InvalidResponse, RateLimited, SourceError, UnknownSymbol
from nautilus_dsm.testing import BinanceImitation

MIN = 60_000
DAY = 1440 * MIN
T0 = to_ms(datetime(2024, 1, 1, tzinfo=UTC))
UM = MarketType.FUTURES_USDT


def _client(srv, market: MarketType = UM, **kwargs) -> BinanceRestClient:
    kwargs.setdefault("backoff_base_s", 0.01)
    kwargs.setdefault("backoff_max_s", 0.05)
    return BinanceRestClient(market, srv.url, **kwargs)


def _kline_requests(srv, path: str = "/fapi/v1/klines") -> list:
    return [r for r in srv.requests if r.path == path]


async def test_week_of_1m_futures_equals_source_bar_for_bar(imitation) -> None:
    client = _client(imitation)
    try:
        frame = await client.klines("BTCUSDT", Interval.MINUTE_1, T0, T0 + 7 * DAY)
    finally:
        await client.aclose()
    expected = imitation.expected(UM, "BTCUSDT", Interval.MINUTE_1, T0, T0 + 7 * DAY)
    assert frame.height == 10_080
    assert frame.equals(expected)
    # 10 080 bars at 1500 per page: exactly 7 requests, all answered 200.
    requests = _kline_requests(imitation)
    assert len(requests) == 7
    assert {r.status for r in requests} == {200}
    assert client.stats.requests == 7
    assert client.stats.retries == 0


async def test_spot_paginates_at_1000(imitation) -> None:
    client = _client(imitation, MarketType.SPOT)
    try:
        frame = await client.klines("ETHUSDT", "1m", T0, T0 + 2500 * MIN)
    finally:
        await client.aclose()
    expected = imitation.expected(
        MarketType.SPOT, "ETHUSDT", Interval.MINUTE_1, T0, T0 + 2500 * MIN
    )
    assert frame.equals(expected)
    assert len(_kline_requests(imitation, "/api/v3/klines")) == 3


async def test_coin_margined_hourly(imitation) -> None:
    client = _client(imitation, MarketType.FUTURES_COIN)
    try:
        frame = await client.klines("BTCUSD_PERP", "1h", T0, T0 + 3 * DAY)
    finally:
        await client.aclose()
    expected = imitation.expected(
        MarketType.FUTURES_COIN, "BTCUSD_PERP", Interval.HOUR_1, T0, T0 + 3 * DAY
    )
    assert frame.height == 72
    assert frame.equals(expected)


async def test_forming_bar_is_never_returned(imitation) -> None:
    now = time.time_ns() // 1_000_000
    forming_open = Interval.MINUTE_1.floor_ms(now)
    client = _client(imitation, clock=lambda: now)
    try:
        frame = await client.klines("BTCUSDT", "1m", forming_open - 5 * MIN, forming_open + 5 * MIN)
    finally:
        await client.aclose()
    expected = imitation.expected(
        UM, "BTCUSDT", Interval.MINUTE_1, forming_open - 5 * MIN, forming_open
    )
    assert frame.height == 5
    assert frame.equals(expected)
    assert frame["open_time"].max() == datetime.fromtimestamp((forming_open - MIN) / 1000, UTC)


async def test_now_ms_caps_the_range_at_the_last_closed_bar(imitation) -> None:
    client = _client(imitation)
    try:
        frame = await client.klines("BTCUSDT", "1m", T0, T0 + DAY, now_ms=T0 + 10 * MIN + 30_000)
    finally:
        await client.aclose()
    assert frame.equals(imitation.expected(UM, "BTCUSDT", Interval.MINUTE_1, T0, T0 + 10 * MIN))


async def test_gap_inside_pages_does_not_end_the_fetch(imitation) -> None:
    # A gap covering the end of page 1 and the start of page 2: both pages come back short.
    imitation.faults.gaps.append(("BTCUSDT", T0 + 1400 * MIN, T0 + 1700 * MIN))
    client = _client(imitation)
    try:
        frame = await client.klines("BTCUSDT", "1m", T0, T0 + 4000 * MIN)
    finally:
        await client.aclose()
    expected = imitation.expected(UM, "BTCUSDT", Interval.MINUTE_1, T0, T0 + 4000 * MIN)
    assert frame.height == 3700
    assert frame.equals(expected)
    assert len(_kline_requests(imitation)) == 3


async def test_duplicate_rows_are_kept_for_the_manager(imitation) -> None:
    imitation.faults.duplicate_rows = True
    client = _client(imitation)
    try:
        frame = await client.klines("BTCUSDT", "1m", T0, T0 + 3000 * MIN)
    finally:
        await client.aclose()
    expected = imitation.expected(UM, "BTCUSDT", Interval.MINUTE_1, T0, T0 + 3000 * MIN)
    # Nothing lost, nothing invented: deduplicated, the rows are exactly the source's bars.
    assert frame.unique(maintain_order=True).sort("open_time").equals(expected)
    assert frame.height > expected.height


async def test_out_of_order_rows_are_kept_for_the_manager(imitation) -> None:
    imitation.faults.out_of_order_rows = True
    client = _client(imitation)
    try:
        frame = await client.klines("BTCUSDT", "1m", T0, T0 + 3000 * MIN)
    finally:
        await client.aclose()
    expected = imitation.expected(UM, "BTCUSDT", Interval.MINUTE_1, T0, T0 + 3000 * MIN)
    assert not frame["open_time"].is_sorted()
    assert frame.sort("open_time").equals(expected)


async def test_429_waits_retry_after_and_provokes_no_418(imitation) -> None:
    imitation.faults.rest_429 = 1
    imitation.faults.retry_after_s = 1
    client = _client(imitation, concurrency=1)
    started = time.monotonic()
    try:
        frame = await client.klines("BTCUSDT", "1m", T0, T0 + 3000 * MIN)
    finally:
        await client.aclose()
    elapsed = time.monotonic() - started
    assert frame.equals(imitation.expected(UM, "BTCUSDT", Interval.MINUTE_1, T0, T0 + 3000 * MIN))
    statuses = [r.status for r in _kline_requests(imitation)]
    assert statuses == [429, 200, 200]
    assert elapsed >= 1.0
    # The gate starts a few µs after the 429 arrived; the sleep itself is ~Retry-After.
    assert client.stats.waited_s >= 0.99
    assert client.stats.retries == 0  # a 429 does not burn a try


async def test_429_holds_every_concurrent_request(imitation) -> None:
    imitation.faults.rest_429 = 1
    imitation.faults.retry_after_s = 1
    client = _client(imitation, concurrency=4)
    try:
        frame = await client.klines("BTCUSDT", "1m", T0, T0 + 7 * DAY)
    finally:
        await client.aclose()
    assert frame.equals(imitation.expected(UM, "BTCUSDT", Interval.MINUTE_1, T0, T0 + 7 * DAY))
    statuses = [r.status for r in _kline_requests(imitation)]
    assert 418 not in statuses
    assert statuses.count(429) == 1
    assert statuses.count(200) == 7


async def test_418_beyond_max_wait_raises_rate_limited(imitation) -> None:
    imitation.faults.rest_418 = 1
    imitation.faults.retry_after_s = 30
    client = _client(imitation, max_wait_s=2.0)
    started = time.monotonic()
    with pytest.raises(RateLimited) as info:
        await client.klines("BTCUSDT", "1m", T0, T0 + 10 * MIN)
    await client.aclose()
    assert time.monotonic() - started < 2.0
    message = str(info.value)
    assert message.startswith(
        "Binance FUTURES_USDT REST /fapi/v1/klines: Binance banned this IP (HTTP 418) until "
    )
    assert "beyond max_wait_s=2s" in message
    assert message.endswith("retry after that time, lower the concurrency, or raise max_wait_s")


async def test_418_within_max_wait_waits_and_succeeds(imitation) -> None:
    imitation.faults.rest_418 = 1
    imitation.faults.retry_after_s = 1
    client = _client(imitation, max_wait_s=5.0)
    try:
        frame = await client.klines("BTCUSDT", "1m", T0, T0 + 10 * MIN)
    finally:
        await client.aclose()
    assert frame.equals(imitation.expected(UM, "BTCUSDT", Interval.MINUTE_1, T0, T0 + 10 * MIN))
    assert [r.status for r in _kline_requests(imitation)] == [418, 200]
    assert client.stats.waited_s >= 0.99


async def test_5xx_burst_is_recovered(imitation) -> None:
    imitation.faults.rest_5xx = 3
    client = _client(imitation, max_retries=5)
    try:
        frame = await client.klines("BTCUSDT", "1m", T0, T0 + 10 * MIN)
    finally:
        await client.aclose()
    assert frame.equals(imitation.expected(UM, "BTCUSDT", Interval.MINUTE_1, T0, T0 + 10 * MIN))
    assert [r.status for r in _kline_requests(imitation)] == [503, 503, 503, 200]
    assert client.stats.retries == 3


async def test_5xx_beyond_max_retries_raises_source_error(imitation) -> None:
    imitation.faults.rest_5xx = 10
    client = _client(imitation, max_retries=2)
    with pytest.raises(SourceError) as info:
        await client.klines("BTCUSDT", "1m", T0, T0 + 10 * MIN)
    await client.aclose()
    message = str(info.value)
    assert message.startswith(
        "Binance FUTURES_USDT REST /fapi/v1/klines failed after 2 tries; last error: HTTP 503"
    )
    assert len(_kline_requests(imitation)) == 2


async def test_reset_mid_body_is_recovered(imitation) -> None:
    imitation.faults.reset_mid_body = 2
    client = _client(imitation)
    try:
        frame = await client.klines("BTCUSDT", "1m", T0, T0 + 3000 * MIN)
    finally:
        await client.aclose()
    assert frame.equals(imitation.expected(UM, "BTCUSDT", Interval.MINUTE_1, T0, T0 + 3000 * MIN))
    assert client.stats.retries == 2


async def test_outage_raises_source_error_after_max_retries(imitation) -> None:
    imitation.faults.down = True
    client = _client(imitation, max_retries=3)
    with pytest.raises(SourceError, match=r"/fapi/v1/klines failed after 3 tries; last error: "):
        await client.klines("BTCUSDT", "1m", T0, T0 + 10 * MIN)
    await client.aclose()
    assert client.stats.requests == 3


async def test_unknown_symbol(imitation) -> None:
    client = _client(imitation)
    with pytest.raises(UnknownSymbol) as info:
        await client.klines("NOPEUSDT", "1m", T0, T0 + 10 * MIN)
    await client.aclose()
    assert str(info.value) == (
        "'NOPEUSDT' is not a Binance FUTURES_USDT symbol (/fapi/v1/klines answered -1121 "
        "'Invalid symbol.'); check the spelling and the market type (e.g. BTCUSDT on SPOT or "
        "FUTURES_USDT, BTCUSD_PERP on FUTURES_COIN)"
    )
    assert client.stats.retries == 0


async def test_first_open_time_finds_the_listing_in_one_request(imitation) -> None:
    client = _client(imitation)
    try:
        listed = await client.first_open_time("BTCUSDT", "1d", 0)
        future = await client.first_open_time("BTCUSDT", "1d", T0 + 100_000 * DAY)
    finally:
        await client.aclose()
    assert listed == to_ms(datetime(2020, 1, 1, tzinfo=UTC))
    assert future is None
    assert len(_kline_requests(imitation)) == 2


async def test_exchange_info(imitation) -> None:
    client = _client(imitation)
    try:
        info = await client.exchange_info()
        one = await client.exchange_info("ETHUSDT")
    finally:
        await client.aclose()
    assert {s["symbol"] for s in info["symbols"]} >= {"BTCUSDT", "ETHUSDT"}
    assert [s["symbol"] for s in one["symbols"]] == ["ETHUSDT"]


async def test_used_weight_is_tracked(imitation) -> None:
    client = _client(imitation)
    try:
        await client.klines("BTCUSDT", "1m", T0, T0 + 3000 * MIN)
    finally:
        await client.aclose()
    stats = client.stats
    assert stats.last_used_weight is not None
    assert stats.used_weight >= stats.last_used_weight > 0


def test_client_survives_a_new_event_loop_per_call(imitation) -> None:
    # NautilusTrader's download_data runs each coroutine under its own asyncio.run.
    client = _client(imitation)
    first = asyncio.run(client.klines("BTCUSDT", "1m", T0, T0 + 10 * MIN))
    second = asyncio.run(client.klines("BTCUSDT", "1m", T0 + 10 * MIN, T0 + 20 * MIN))
    asyncio.run(client.aclose())
    assert first.equals(imitation.expected(UM, "BTCUSDT", Interval.MINUTE_1, T0, T0 + 10 * MIN))
    assert second.equals(
        imitation.expected(UM, "BTCUSDT", Interval.MINUTE_1, T0 + 10 * MIN, T0 + 20 * MIN)
    )


async def test_weight_gate_holds_requests_near_the_limit(imitation) -> None:
    # Binance reported 2300 of 2400 used this minute: no request may go out before the next one.
    client = _client(imitation, max_wait_s=0.0)
    client._weight.observe(2300, time.time_ns() // 1_000_000)
    with pytest.raises(RateLimited) as info:
        await client.klines("BTCUSDT", "1m", T0, T0 + 10 * MIN)
    await client.aclose()
    assert str(info.value).startswith(
        "Binance FUTURES_USDT REST /fapi/v1/klines: the used weight 2300 passed 90% of the "
        "2400/minute limit; requests are held until "
    )
    assert imitation.requests == []


class StartTimeIgnoringImitation(BinanceImitation):
    """A misbehaving Binance: every klines answer starts at ``pinned_ms``, whatever startTime."""

    pinned_ms = T0 - 10 * MIN

    def __init__(self) -> None:
        super().__init__()
        klines = self._rest._klines  # the imitation's REST handler (nautilus_dsm.testing.rest)

        def pinned(market: MarketType, query: dict[str, str]) -> object:
            return klines(market, {**query, "startTime": str(self.pinned_ms)})

        self._rest._klines = pinned  # type: ignore[method-assign]


async def test_answers_before_the_cursor_are_refused_not_trimmed() -> None:
    # A server that ignores startTime answers rows before the page: not what was asked, so the
    # answer is refused (after the transport's retries) instead of being trimmed to the range,
    # and the manager takes the period from the next source. Paging cannot loop: every
    # accepted answer lies at or after the cursor, so the cursor always advances.
    with StartTimeIgnoringImitation() as srv:
        client = _client(srv, max_retries=2)
        try:
            with pytest.raises(InvalidResponse) as info:
                await asyncio.wait_for(client.klines("BTCUSDT", "1m", T0, T0 + 1500 * MIN), 10)
        finally:
            await client.aclose()
        starts = [int(r.query["startTime"]) for r in _kline_requests(srv)]

    assert starts == [T0, T0]
    assert str(info.value).startswith(
        "Binance FUTURES_USDT REST /fapi/v1/klines BTCUSDT 1m "
        "2024-01-01T00:00:00Z..2024-01-02T01:00:00Z: 10 of 1500 rows fail validation: opens "
        "outside the requested period 2024-01-01T00:00:00Z..2024-01-02T01:00:00Z at "
        "2023-12-31T23:50:00Z, 2023-12-31T23:51:00Z, 2023-12-31T23:52:00Z and 7 more; "
    )
    assert info.value.open_times_ms == tuple(range(T0 - 10 * MIN, T0, MIN))
