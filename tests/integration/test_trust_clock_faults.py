"""Exchange time under faults: a local clock step after the sync, a ``GET /time`` that hangs.

The local clock (``clock=``) and the imitation's clock are injected; results are compared with
the imitation's truth at *its* now (``srv.expected``).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from nautilus_dsm.common import Interval, MarketType, from_ms, to_ms
from nautilus_dsm.dsm.cache import KlineCache
from nautilus_dsm.dsm.exchange_clock import ExchangeClock
from nautilus_dsm.dsm.manager import DataSourceManager
from nautilus_dsm.testing import BinanceImitation

UM = MarketType.FUTURES_USDT
PERP = "BTCUSDT-PERP.BINANCE"
MIN = 60_000
DAY = 86_400_000
T1 = to_ms(datetime(2024, 1, 2, tzinfo=UTC))  # midnight closing the day 2024-01-01


def make_dsm(srv: BinanceImitation, cache_dir: Path, local: list[int], **kwargs):
    return DataSourceManager.create(
        base_url_http=srv.url,
        base_url_vision=srv.url,
        cache_dir=cache_dir,
        clock=lambda: local[0],
        time_sync=True,
        **kwargs,
    )


def time_requests(srv: BinanceImitation) -> list[tuple[str, int]]:
    return [(r.path, r.status) for r in srv.requests if r.path.endswith("/time")]


def cached_days(cache_dir: Path) -> list[str]:
    folder = cache_dir / "binance" / "futures_usdt" / "BTCUSDT" / "1m"
    return sorted(p.stem for p in folder.glob("*.parquet")) if folder.is_dir() else []


async def test_local_clock_step_after_the_sync_never_serves_or_caches_the_forming_2359_bar(
    cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    local = [T1 - 2 * MIN]  # 23:58:00 on both clocks: the first sync measures offset 0
    skew = [0]
    with BinanceImitation(clock=lambda: local[0] + skew[0]) as srv:
        start, end = T1 - 10 * MIN, T1 + 5 * MIN
        async with make_dsm(srv, cache_dir, local) as dsm:
            synced = await dsm.fetch(PERP, "1m", from_ms(start), from_ms(end))
            synced_truth = srv.expected(UM, "BTCUSDT", "1m", start, end)
            # A VM resume / NTP step: local jumps +125 s (00:00:05), the exchange only reads
            # 23:59:55, inside the 60 s resync interval.
            local[0], skew[0] = T1 + 5_000, -10_000
            with caplog.at_level(logging.WARNING, logger="nautilus_dsm.dsm"):
                stepped = await dsm.fetch(PERP, "1m", from_ms(start), from_ms(end))
            stepped_truth = srv.expected(UM, "BTCUSDT", "1m", start, end)
            cached_after_step = cached_days(cache_dir)
            offset = dsm.exchange_clock(UM).offset_ms
            local[0] += MIN  # exchange 00:00:55: the 23:59 bar is final
            final = await dsm.fetch(PERP, "1m", from_ms(start), from_ms(end))
            final_truth = srv.expected(UM, "BTCUSDT", "1m", start, end)
        requests = time_requests(srv)

    assert synced.frame.equals(synced_truth) and synced.frame.height == 8  # 23:50 .. 23:57
    # After the step: exactly the exchange's closed bars; 23:59 (forming) is not served.
    assert stepped.frame.equals(stepped_truth)
    assert stepped.frame.height == 9
    assert stepped.frame["open_time"][-1] == datetime(2024, 1, 1, 23, 58, tzinfo=UTC)
    assert cached_after_step == []  # the day is not cached as final
    assert offset == -10_000
    steps = [r.getMessage() for r in caplog.records if "stepped" in r.getMessage()]
    prefix = "Binance FUTURES_USDT: the local clock stepped +"
    assert all(m.startswith(prefix) for m in steps)
    sizes = [int(m[len(prefix) :].split(" ")[0]) for m in steps]
    # +125 s, then the injected +60 s, each less the real time that passed meanwhile.
    assert len(sizes) == 2 and 120_000 < sizes[0] <= 125_000 and 55_000 < sizes[1] <= 60_000
    assert steps[0].endswith(
        " ms since the exchange time was last measured (NTP step, VM resume?); measuring the "
        "offset again before deciding closed bars"
    )
    # Once the exchange closed it, the final 23:59 bar is served and the day cached with it.
    assert final.frame.equals(final_truth) and final.frame.height == 10
    assert final.frame["volume"][-1] == final_truth["volume"][-1]
    assert isinstance(final.frame["volume"][-1], Decimal)
    day = KlineCache(cache_dir).read(UM, "BTCUSDT", Interval.MINUTE_1, "2024-01-01")
    assert day is not None and day.height == 1440
    assert day.equals(srv.expected(UM, "BTCUSDT", "1m", T1 - DAY, T1))
    assert requests == [("/fapi/v1/time", 200)] * 9  # the sync, the step, the next step


async def test_hung_server_time_falls_back_and_never_opens_the_klines_circuit(
    cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    local = [T1 + 12 * 60 * MIN + 30_000]  # 2024-01-02T12:00:30 on both clocks
    with BinanceImitation(clock=lambda: local[0]) as srv:
        srv.faults.hang = {"/fapi/v1/time"}
        start, end = local[0] - 30 * MIN, local[0] + MIN
        with caplog.at_level(logging.WARNING, logger="nautilus_dsm.dsm"):
            async with make_dsm(srv, cache_dir, local, timeout_s=0.5) as dsm:
                result = await dsm.fetch(PERP, "1m", from_ms(start), from_ms(end))
                breaker = dsm.rest_client(UM)._transport.breaker(srv.url)
                failures, is_open = breaker.failures, breaker.is_open
        truth = srv.expected(UM, "BTCUSDT", "1m", start, end)
        requests = time_requests(srv)
        klines = [
            (r.query["startTime"], r.status) for r in srv.requests if r.path == "/fapi/v1/klines"
        ]

    assert result.frame.equals(truth)
    assert result.frame.height == 29  # 11:31 .. 11:59
    assert requests == [("/fapi/v1/time", 0)] * 2  # two short tries, then the fallback
    # The klines were requested (no open circuit): the first-bar probe, then the one page.
    assert klines == [("0", 200), (str(start + 30_000), 200)]
    assert (failures, is_open) == (0, False)  # /time has its own circuit
    [warning] = [r.getMessage() for r in caplog.records if "server time" in r.getMessage()]
    assert warning.startswith(
        "Binance FUTURES_USDT server time could not be read (Binance FUTURES_USDT REST "
        "/fapi/v1/time failed after 2 tries; last error: ReadTimeout"
    )
    assert warning.endswith(
        "using the local clock as exchange time (offset 0); closed bars are decided by it "
        "until the next try"
    )
    assert "circuit open" not in caplog.text


async def test_slewed_clock_inside_the_interval_never_caches_the_forming_2359_bar_final(
    cache_dir: Path,
) -> None:
    local = [T1 - 20_000]  # 23:59:40 on both clocks: the first sync measures offset 0
    skew = [0]
    with BinanceImitation(clock=lambda: local[0] + skew[0]) as srv:
        day_start, day_end = T1 - DAY, T1
        async with make_dsm(srv, cache_dir, local) as dsm:
            # A slew, not a step: monotonic time follows the local clock, so no step is seen.
            dsm.exchange_clock(UM)._monotonic = lambda: local[0] / 1000
            await dsm.fetch(PERP, "1m", from_ms(T1 - 10 * MIN), from_ms(T1 - 2 * MIN))
            # 25.5 s later the local clock gained 7 s on the exchange, inside the 60 s interval:
            # local 00:00:05.5 (the day looks closed), the exchange reads 23:59:58.5.
            local[0] += 25_500
            skew[0] = -7_000
            slewed = await dsm.fetch(PERP, "1m", from_ms(day_start), from_ms(day_end))
            slewed_truth = srv.expected(UM, "BTCUSDT", "1m", day_start, day_end)
            cached_after_slew = cached_days(cache_dir)
            offset = dsm.exchange_clock(UM).offset_ms
            local[0] += MIN  # exchange 00:00:58.5: the 23:59 bar is final
            final = await dsm.fetch(PERP, "1m", from_ms(day_start), from_ms(day_end))
            final_truth = srv.expected(UM, "BTCUSDT", "1m", day_start, day_end)
        requests = time_requests(srv)

    # The stale offset said "closed"; the forced measurement says 23:59 is still forming.
    assert offset == -7_000
    assert slewed.frame.equals(slewed_truth) and slewed.frame.height == 1439
    assert slewed.frame["open_time"][-1] == datetime(2024, 1, 1, 23, 58, tzinfo=UTC)
    assert cached_after_slew == []  # the day is not cached as final
    assert final.frame.equals(final_truth) and final.frame.height == 1440
    assert final.frame["volume"][-1] == final_truth["volume"][-1]
    assert isinstance(final.frame["volume"][-1], Decimal)
    day = KlineCache(cache_dir).read(UM, "BTCUSDT", Interval.MINUTE_1, "2024-01-01")
    assert day is not None and day.equals(srv.expected(UM, "BTCUSDT", "1m", T1 - DAY, T1))
    # The first sync, the forced one before deciding the just-closed day, the scheduled one.
    assert requests == [("/fapi/v1/time", 200)] * 9


async def test_now_is_widened_by_the_slew_margin_since_the_measurement() -> None:
    local = [T1]

    async def server_time() -> int:
        return local[0] + 250

    clock = ExchangeClock("TEST", server_time, local=lambda: local[0], samples=1)
    assert clock.resync_ms == 60_000  # the default re-sync interval

    assert await clock.ensure() == T1 + 250
    # 500 ppm of the time elapsed since the reading: 0.5 ms/s, rounded down.
    assert clock.now_ms(T1 + 1_999) == T1 + 250 + 1_999
    assert clock.now_ms(T1 + 2_000) == T1 + 250 + 2_000 - 1
    assert clock.now_ms(T1 + 59_999) == T1 + 250 + 59_999 - 29
    assert clock.now_ms(T1 + 3_600_000) == T1 + 250 + 3_600_000 - 1_800
    assert clock.now_ms(T1 - 5_000) == T1 + 250 - 5_000  # the clock went back: no margin
    assert clock.proves_closed(T1 + 250) and not clock.proves_closed(T1 + 251)


async def test_a_period_proven_closed_by_the_exchange_is_not_measured_again(
    cache_dir: Path,
) -> None:
    local = [T1 + 30_000]  # 00:00:30: the day closed 30 s ago
    with BinanceImitation(clock=lambda: local[0]) as srv:
        async with make_dsm(srv, cache_dir, local) as dsm:
            dsm.exchange_clock(UM)._monotonic = lambda: local[0] / 1000
            first = await dsm.fetch(PERP, "1m", from_ms(T1 - DAY), from_ms(T1))
            local[0] += 10_000
            second = await dsm.fetch(PERP, "1m", from_ms(T1 - DAY), from_ms(T1))
        requests = time_requests(srv)

    assert first.frame.height == 1440 and second.frame.equals(first.frame)
    assert second.report.cache_hits == 1
    # One sync: its reading (00:00:30) proves the close, so no forced measurement follows.
    assert requests == [("/fapi/v1/time", 200)] * 3
