"""Exchange time decides what is closed: the manager against an imitation on a shifted clock.

The local clock (``clock=``) and the imitation's clock are frozen and offset from each other, so
round trips measure 0 ms and the offset is exact. Every result is compared with the imitation's
truth at *its* now (``srv.expected``): a forming kline served or cached, or a closed one held
back, makes the frames differ.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from nautilus_dsm.common import Interval, MarketType, from_ms, to_ms
from nautilus_dsm.dsm.cache import KlineCache
from nautilus_dsm.dsm.manager import DataSourceManager
from nautilus_dsm.dsm.rest import BinanceRestClient
from nautilus_dsm.errors import InvalidResponse
from nautilus_dsm.testing import BinanceImitation

UM = MarketType.FUTURES_USDT
SPOT = MarketType.SPOT
PERP = "BTCUSDT-PERP.BINANCE"
MIN = 60_000
DAY = 86_400_000
T0 = to_ms(datetime(2024, 1, 1, tzinfo=UTC))


def make_dsm(
    srv: BinanceImitation, cache_dir: Path, local: list[int], **kwargs
) -> DataSourceManager:
    return DataSourceManager.create(
        base_url_http=srv.url,
        base_url_vision=srv.url,
        cache_dir=cache_dir,
        clock=lambda: local[0],
        time_sync=True,
        **kwargs,
    )


def time_requests(srv: BinanceImitation) -> list[str]:
    return [r.path for r in srv.requests if r.path.endswith("/time")]


def cached_days(cache_dir: Path, market: str, interval: str) -> list[str]:
    folder = cache_dir / "binance" / market / "BTCUSDT" / interval
    return sorted(p.stem for p in folder.glob("*.parquet")) if folder.is_dir() else []


async def test_forming_2359_bar_is_not_cached_with_the_local_clock_10s_ahead_after_midnight(
    cache_dir: Path,
) -> None:
    local = [T0 + DAY + 5_000]  # local 2024-01-02T00:00:05, exchange 2024-01-01T23:59:55
    with BinanceImitation(clock=lambda: local[0] - 10_000) as srv:
        start, end = T0 + DAY - 10 * MIN, T0 + DAY + 5 * MIN
        async with make_dsm(srv, cache_dir, local) as dsm:
            early = await dsm.fetch(PERP, "1m", from_ms(start), from_ms(end))
            early_truth = srv.expected(UM, "BTCUSDT", "1m", start, end)
            cached_early = cached_days(cache_dir, "futures_usdt", "1m")
            local[0] += MIN  # exchange 2024-01-02T00:00:55: the 23:59 bar is final
            late = await dsm.fetch(PERP, "1m", from_ms(start), from_ms(end))
            late_truth = srv.expected(UM, "BTCUSDT", "1m", start, end)
            offset = dsm.exchange_clock(UM).offset_ms
        requests = time_requests(srv)

    # The 23:59 bar was forming on the exchange: not served, and the day was not cached.
    assert early.frame.equals(early_truth)
    assert early.frame.height == 9
    assert early.frame["open_time"][-1] == datetime(2024, 1, 1, 23, 58, tzinfo=UTC)
    assert early.report.warnings[0] == (
        "end 2024-01-02T00:05:00Z is after the last closed bar; capped at "
        "2024-01-01T23:59:00Z (bars still forming are never returned)"
    )
    assert cached_early == []
    # A minute later the final 23:59 bar is served and the closed day is cached with it.
    assert late.frame.equals(late_truth)
    assert late.frame.height == 10
    last = late.frame.row(9, named=True)
    assert last["open_time"] == datetime(2024, 1, 1, 23, 59, tzinfo=UTC)
    assert last["volume"] == late_truth["volume"][9]
    assert isinstance(last["volume"], Decimal)
    day = KlineCache(cache_dir).read(UM, "BTCUSDT", Interval.MINUTE_1, "2024-01-01")
    assert day is not None and day.height == 1440
    assert day.tail(1).equals(late_truth.tail(1))
    assert offset == -10_000
    # The injected clock moved 60 s while monotonic time did not: a clock step, so the second
    # fetch measures again before deciding (3 + 3).
    assert requests == ["/fapi/v1/time"] * 6


@pytest.mark.parametrize(
    "skew_ms", [-180_000, -10_000, -400, 400, 10_000, 180_000], ids=lambda s: f"exchange{s:+d}ms"
)
async def test_1m_fetch_near_now_serves_exactly_the_exchanges_closed_bars(
    cache_dir: Path, skew_ms: int
) -> None:
    local = [T0 + 2 * DAY + 12 * 60 * MIN + 100]  # 2024-01-03T12:00:00.100 local
    with BinanceImitation(clock=lambda: local[0] + skew_ms) as srv:
        start, end = T0 + 2 * DAY + 11 * 60 * MIN, T0 + 2 * DAY + 13 * 60 * MIN
        async with make_dsm(srv, cache_dir, local) as dsm:
            result = await dsm.fetch(PERP, "1m", from_ms(start), from_ms(end))
            now = await dsm.exchange_now_ms(UM)
        truth = srv.expected(UM, "BTCUSDT", "1m", start, end)

    exchange_now = local[0] + skew_ms
    assert now == exchange_now
    assert result.frame.equals(truth)
    assert result.frame.height == (Interval.MINUTE_1.floor_ms(exchange_now) - start) // MIN
    assert cached_days(cache_dir, "futures_usdt", "1m") == []  # the open day is never cached


@pytest.mark.parametrize("skew_ms", [-400, 400, -1_500, 1_500], ids=lambda s: f"exchange{s:+d}ms")
async def test_1s_fetch_never_serves_the_forming_second(cache_dir: Path, skew_ms: int) -> None:
    local = [T0 + 2 * DAY + 12 * 60 * MIN + 200]  # 200 ms into a second, local
    with BinanceImitation(clock=lambda: local[0] + skew_ms) as srv:
        start, end = local[0] - 10_200, local[0] + 9_800
        async with make_dsm(srv, cache_dir, local) as dsm:
            result = await dsm.fetch("BTCUSDT.BINANCE", "1s", from_ms(start), from_ms(end))
        truth = srv.expected(SPOT, "BTCUSDT", "1s", start, end)

    assert result.frame.equals(truth)
    expected_last = Interval.SECOND_1.floor_ms(local[0] + skew_ms) - 1_000
    assert to_ms(result.frame["open_time"][-1]) == expected_last
    assert result.frame.height == (expected_last - start) // 1_000 + 1


async def test_local_clock_behind_caches_a_day_as_soon_as_the_exchange_closed_it(
    cache_dir: Path,
) -> None:
    local = [T0 + DAY - 90_000]  # local 2024-01-01T23:58:30, exchange 2024-01-02T00:01:30
    with BinanceImitation(clock=lambda: local[0] + 180_000) as srv:
        start, end = T0 + DAY - 5 * MIN, T0 + DAY + 5 * MIN
        async with make_dsm(srv, cache_dir, local) as dsm:
            result = await dsm.fetch(PERP, "1m", from_ms(start), from_ms(end))
        truth = srv.expected(UM, "BTCUSDT", "1m", start, end)

    assert result.frame.equals(truth)
    assert result.frame.height == 6  # 23:55 .. 00:00, after the local clock's now
    assert cached_days(cache_dir, "futures_usdt", "1m") == ["2024-01-01"]
    assert result.report.sources == {"cache": 0, "vision": 5, "rest": 1, "synthetic": 0}


async def test_unreachable_server_time_falls_back_to_the_local_clock_with_a_warning(
    cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    local = [T0 + 2 * DAY + 12 * 60 * MIN + 30_000]
    with BinanceImitation(clock=lambda: local[0]) as srv:
        srv.faults.time_unavailable = True
        start, end = local[0] - 10 * MIN, local[0] + MIN
        with caplog.at_level(logging.WARNING, logger="nautilus_dsm.dsm"):
            async with make_dsm(srv, cache_dir, local) as dsm:
                result = await dsm.fetch(PERP, "1m", from_ms(start), from_ms(end))
        truth = srv.expected(UM, "BTCUSDT", "1m", start, end)
        requests = time_requests(srv)

    assert result.frame.equals(truth)
    assert result.frame.height == 9  # 11:51 .. 11:59
    assert requests == ["/fapi/v1/time"]  # a failing host is not asked three times
    [warning] = [r.getMessage() for r in caplog.records if "server time" in r.getMessage()]
    assert warning.startswith("Binance FUTURES_USDT server time could not be read (Binance ")
    assert warning.endswith(
        "using the local clock as exchange time (offset 0); closed bars are decided by it "
        "until the next try"
    )


async def test_clock_offset_is_measured_again_after_the_interval(cache_dir: Path) -> None:
    local = [T0 + 2 * DAY + 12 * 60 * MIN]
    skew = [2_000]
    with BinanceImitation(clock=lambda: local[0] + skew[0]) as srv:
        async with make_dsm(srv, cache_dir, local, time_sync_interval_s=60) as dsm:
            # The injected clock runs here (no step): monotonic time follows it.
            dsm.exchange_clock(SPOT)._monotonic = lambda: local[0] / 1000
            first = await dsm.exchange_now_ms(SPOT)
            skew[0] = -3_000  # the local clock drifted 5 s (slewed, not stepped)
            local[0] += 59_999
            memo = dsm.exchange_clock(SPOT).offset_ms
            held = await dsm.exchange_now_ms(SPOT)
            local[0] += 1
            fresh = await dsm.exchange_now_ms(SPOT)
        requests = time_requests(srv)

    assert first == T0 + 2 * DAY + 12 * 60 * MIN + 2_000
    assert memo == 2_000
    # Not measured again before the interval; less the slew margin, 59 999 ms x 500 ppm = 29 ms.
    assert held == local[0] - 1 + 2_000 - 29
    assert fresh == local[0] - 3_000
    assert requests == ["/api/v3/time"] * 6


async def test_historical_fetch_makes_no_time_request(imitation, cache_dir: Path) -> None:
    # The system clock (time sync on by default): a range closed long ago needs no /time.
    async with DataSourceManager.create(
        base_url_http=imitation.url, base_url_vision=imitation.url, cache_dir=cache_dir
    ) as dsm:
        result = await dsm.fetch(PERP, "1m", from_ms(T0), from_ms(T0 + DAY))
        assert dsm.exchange_clock(UM).enabled

    assert result.frame.height == 1440
    assert time_requests(imitation) == []


async def test_fetch_near_now_on_the_system_clock_measures_the_offset_once(
    imitation, cache_dir: Path
) -> None:
    async with DataSourceManager.create(
        base_url_http=imitation.url, base_url_vision=imitation.url, cache_dir=cache_dir
    ) as dsm:
        now = datetime.now(UTC)
        for _ in range(2):
            result = await dsm.fetch(PERP, "1m", now - timedelta(minutes=5), now)
        offset, rtt = dsm.exchange_clock(UM).offset_ms, dsm.exchange_clock(UM).rtt_ms

    assert result.frame.height in (4, 5)  # the bar forming at `now` is never served
    assert time_requests(imitation) == ["/fapi/v1/time"] * 3
    assert rtt is not None and abs(offset) <= rtt + 1  # same machine: no offset


def test_injected_clock_without_time_sync_takes_it_as_exchange_time(cache_dir: Path) -> None:
    dsm = DataSourceManager.create(cache_dir=cache_dir, clock=lambda: 123)

    assert dsm.time_sync is False
    assert dsm.exchange_clock(SPOT).enabled is False
    assert dsm.exchange_clock(SPOT).now_ms() == 123


@pytest.mark.parametrize("value", [0.0, -5.0, float("nan")])
def test_bad_time_sync_interval_is_refused(cache_dir: Path, value: float) -> None:
    from nautilus_dsm.errors import InvalidInput

    with pytest.raises(InvalidInput, match="time_sync_interval_s must be > 0 seconds, was "):
        DataSourceManager.create(cache_dir=cache_dir, time_sync_interval_s=value)


async def test_rest_client_alone_filters_the_forming_bar_by_exchange_time() -> None:
    # The system clock, 1.5 s ahead of the exchange: its "closed" second is still forming there.
    with BinanceImitation(clock=lambda: time.time_ns() // 1_000_000 - 1_500) as srv:
        client = BinanceRestClient(SPOT, srv.url)
        local_now = time.time_ns() // 1_000_000
        start, end = local_now - 10_000, local_now + 10_000
        before = srv.now_ms()
        frame = await client.klines("BTCUSDT", "1s", start, end)
        after = srv.now_ms()
        await client.aclose()
        last_open = to_ms(frame["open_time"][-1])
        truth = srv.expected(SPOT, "BTCUSDT", "1s", start, last_open + 1_000)
        requests = time_requests(srv)

    assert frame.equals(truth)  # final values: nothing forming
    assert before < last_open + 2_000 and last_open + 1_000 <= after  # and nothing held back
    assert requests == ["/api/v3/time"] * 3
    assert -1_510 <= client.exchange_clock().offset_ms <= -1_490


class BadPayloadRest(BinanceRestClient):
    """A REST client whose klines answers fail validation at ``bad_ms`` (as a validating parser
    reports it: ``InvalidResponse`` naming the open time)."""

    bad_ms = 0

    async def klines(
        self,
        symbol: str,
        interval: str,
        start_ms: int,
        end_ms: int,
        *,
        now_ms: int | None = None,
        **kwargs: Any,
    ) -> pl.DataFrame:
        frame = await super().klines(symbol, interval, start_ms, end_ms, now_ms=now_ms, **kwargs)
        if self.bad_ms in [to_ms(t) for t in frame["open_time"]]:
            raise InvalidResponse("open 'abc' (test)", open_times_ms=(self.bad_ms,))
        return frame


async def test_fetch_whose_only_failures_are_bad_payloads_raises_invalid_response_naming_bars(
    cache_dir: Path,
) -> None:
    local = [T0 + 2 * DAY + 12 * 60 * MIN]
    with BinanceImitation(clock=lambda: local[0]) as srv:
        dsm = make_dsm(srv, cache_dir, local)
        rest = BadPayloadRest(UM, srv.url, max_retries=1, clock=lambda: local[0])
        rest.bad_ms = local[0] - 5 * MIN
        dsm._rest[UM] = rest
        with pytest.raises(InvalidResponse) as caught:
            await dsm.fetch(PERP, "1m", from_ms(local[0] - 10 * MIN), from_ms(local[0]))
        await dsm.aclose()

    assert caught.value.open_times_ms == (local[0] - 5 * MIN,)
    assert str(caught.value) == (
        "BTCUSDT-PERP.BINANCE 1m: 1 period(s) were answered with payloads that fail validation: "
        "2024-01-03 (REST: open 'abc' (test))"
    )
    assert cached_days(cache_dir, "futures_usdt", "1m") == []
