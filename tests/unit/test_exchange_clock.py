"""ExchangeClock: the offset estimate, its lower-bound "now", lazy re-sync and the fallback."""

from __future__ import annotations

import asyncio
import logging

import pytest

from nautilus_dsm.common import Interval
from nautilus_dsm.dsm.exchange_clock import (
    RETRY_FAILED_SYNC_S,
    ExchangeClock,
    TimeSample,
    best_sample,
)
from nautilus_dsm.dsm.planner import MAX_CLOCK_SKEW_MS, SETTLE_MS, decided_without_now
from nautilus_dsm.errors import SourceError
from tests.conftest import dsm_messages

DAY = 86_400_000
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z


def test_sample_offset_is_the_server_time_minus_the_midpoint_of_the_round_trip() -> None:
    sample = TimeSample(sent_ms=1_000, received_ms=1_010, server_ms=600)

    assert (sample.rtt_ms, sample.offset_ms, sample.uncertainty_ms) == (10, -405, 5)


def test_odd_round_trip_rounds_the_offset_down_and_the_uncertainty_up() -> None:
    sample = TimeSample(sent_ms=0, received_ms=3, server_ms=10)

    assert (sample.offset_ms, sample.uncertainty_ms) == (8, 2)


def test_best_sample_is_the_smallest_round_trip_first_on_ties() -> None:
    slow = TimeSample(0, 50, 400)
    fast = TimeSample(100, 102, 501)
    tie = TimeSample(200, 202, 700)

    assert best_sample([slow, fast, tie]) is fast


def test_a_sample_whose_local_clock_stepped_back_is_not_used() -> None:
    assert best_sample([TimeSample(100, 90, 5)]) is None
    assert best_sample([TimeSample(100, 90, 5), TimeSample(0, 4, 9)]) == TimeSample(0, 4, 9)


class FakeExchange:
    """Answers serverTime = local + skew; each request takes ``rtts[i]`` local ms."""

    def __init__(self, local: list[int], skew_ms: int, rtts: list[int]) -> None:
        self.local, self.skew_ms, self.rtts = local, skew_ms, list(rtts)
        self.calls = 0
        self.fail = False

    async def server_time(self) -> int:
        self.calls += 1
        if self.fail:
            raise SourceError("time down (test)")
        rtt = self.rtts[(self.calls - 1) % len(self.rtts)]
        self.local[0] += rtt // 2
        server = self.local[0] + self.skew_ms  # read mid-flight
        self.local[0] += rtt - rtt // 2
        return server


def make_clock(skew_ms: int, rtts: list[int], **kwargs) -> tuple[ExchangeClock, FakeExchange, list]:
    local = [T0]
    exchange = FakeExchange(local, skew_ms, rtts)
    # The fake local clock runs (it never steps) unless a test says so: monotonic follows it.
    kwargs.setdefault("monotonic", lambda: local[0] / 1000)
    clock = ExchangeClock("SPOT", exchange.server_time, local=lambda: local[0], **kwargs)
    return clock, exchange, local


async def test_first_use_measures_with_three_samples_and_keeps_the_fastest() -> None:
    clock, exchange, local = make_clock(-400, [30, 4, 12])

    now = await clock.ensure()

    assert exchange.calls == 3
    assert (clock.offset_ms, clock.rtt_ms, clock.syncs) == (-400, 4, 1)
    # A lower bound: the fast sample's server reading plus the local time since its receipt.
    assert now == local[0] - 400 - 2
    assert clock.now_ms(local[0] + 1_000) == local[0] + 1_000 - 402


async def test_resyncs_only_once_the_interval_has_passed() -> None:
    clock, exchange, local = make_clock(250, [0], resync_s=300)
    await clock.ensure()

    local[0] += 299_999
    await clock.ensure()
    calls_before = exchange.calls
    exchange.skew_ms = 300  # the local clock drifted
    local[0] += 1
    await clock.ensure()

    assert calls_before == 3
    assert exchange.calls == 6
    assert clock.offset_ms == 300


async def test_concurrent_first_uses_share_one_measurement() -> None:
    clock, exchange, _ = make_clock(1_000, [2])

    nows = await asyncio.gather(*(clock.ensure() for _ in range(5)))

    assert exchange.calls == 3
    assert len(set(nows)) == 1


async def test_unreachable_server_time_falls_back_to_the_local_clock_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, exchange, local = make_clock(5_000, [2])
    exchange.fail = True

    with caplog.at_level(logging.WARNING, logger="nautilus_dsm.dsm"):
        now = await clock.ensure()

    assert now == local[0]
    assert (clock.offset_ms, clock.synced, exchange.calls) == (0, False, 1)
    assert dsm_messages(caplog.records) == [
        "Binance SPOT server time could not be read (time down (test)); using the local clock "
        "as exchange time (offset 0); closed bars are decided by it until the next try"
    ]


async def test_after_a_failure_it_tries_again_within_a_minute_and_keeps_the_old_offset() -> None:
    clock, exchange, local = make_clock(700, [0], resync_s=600)
    await clock.ensure()
    local[0] += 600_000
    exchange.fail = True
    await clock.ensure()  # fails: the old offset stays
    assert (clock.offset_ms, exchange.calls) == (700, 4)

    local[0] += int(RETRY_FAILED_SYNC_S * 1000) - 1
    await clock.ensure()
    assert exchange.calls == 4
    exchange.fail = False
    local[0] += 1
    await clock.ensure()

    assert (clock.offset_ms, exchange.calls, clock.syncs) == (700, 7, 2)


async def test_offset_beyond_100_ms_is_logged_at_warning(caplog: pytest.LogCaptureFixture) -> None:
    small, _, _ = make_clock(100, [0])
    large, _, _ = make_clock(-101, [0])

    with caplog.at_level(logging.WARNING, logger="nautilus_dsm.dsm"):
        await small.ensure()
        await large.ensure()

    assert dsm_messages(caplog.records) == [
        "Binance SPOT clock is -101 ms from the local clock (round trip 0 ms); closed bars are "
        "decided by exchange time, so nothing forming is served, but check the machine's time "
        "sync (NTP)"
    ]


async def test_disabled_clock_is_the_local_clock_and_never_measures() -> None:
    local = [T0]
    clock = ExchangeClock("SPOT", None, local=lambda: local[0])

    assert await clock.ensure() == T0
    assert (clock.enabled, clock.due(), clock.offset_ms) == (False, False, 0)


@pytest.mark.parametrize(("resync_s", "samples"), [(0.0, 3), (float("nan"), 3), (300.0, 0)])
def test_bad_knobs_are_refused(resync_s: float, samples: int) -> None:
    with pytest.raises(ValueError):
        ExchangeClock("SPOT", None, local=lambda: 0, resync_s=resync_s, samples=samples)


def test_a_range_that_ended_a_day_ago_is_decided_without_the_exchange_clock() -> None:
    # 1m: periods are UTC days; the last one closes at the end of the day holding end - 1.
    day_8_end = T0 + 9 * DAY

    now = day_8_end + SETTLE_MS + MAX_CLOCK_SKEW_MS
    assert decided_without_now(Interval.MINUTE_1, T0 + 8 * DAY + 1, now) is True
    assert decided_without_now(Interval.MINUTE_1, T0 + 8 * DAY + 1, now - 1) is False
    assert decided_without_now(Interval.MINUTE_1, T0 + 8 * DAY, now - DAY) is True  # day 7
    # 1d: periods are UTC years, so anything in the current year needs the exchange clock.
    assert decided_without_now(Interval.DAY_1, T0 + DAY, T0 + 10 * DAY) is False


# -- local clock steps (NTP step, VM resume) ------------------------------------------------


@pytest.mark.parametrize("step_ms", [125_000, -125_000, 1_001, -1_001])
async def test_a_local_clock_step_either_way_is_measured_again_before_the_interval(
    caplog: pytest.LogCaptureFixture, step_ms: int
) -> None:
    mono = [100.0]
    clock, exchange, local = make_clock(0, [0], resync_s=300, monotonic=lambda: mono[0])
    await clock.ensure()
    mono[0] += 2.0  # two seconds pass; the local clock steps besides, the exchange's does not
    local[0] += 2_000 + step_ms
    exchange.skew_ms = -step_ms

    with caplog.at_level(logging.WARNING, logger="nautilus_dsm.dsm"):
        assert clock.step_ms() == step_ms
        now = await clock.ensure()

    assert exchange.calls == 6
    assert clock.offset_ms == -step_ms
    assert now == T0 + 2_000  # exchange time, unmoved by the step
    assert clock.step_ms() == 0  # measured against the new base
    assert dsm_messages(caplog.records)[0] == (
        f"Binance SPOT: the local clock stepped {step_ms:+d} ms since the exchange time was last "
        "measured (NTP step, VM resume?); measuring the offset again before deciding closed bars"
    )


async def test_clock_drift_within_a_second_of_monotonic_time_is_no_step() -> None:
    mono = [100.0]
    clock, exchange, local = make_clock(0, [0], resync_s=300, monotonic=lambda: mono[0])
    await clock.ensure()
    mono[0] += 200.0
    local[0] += 200_000 + 1_000

    assert clock.step_ms() == 0
    await clock.ensure()
    assert exchange.calls == 3


async def test_a_step_after_a_failed_sync_is_tried_once_not_on_every_use() -> None:
    mono = [100.0]
    clock, exchange, local = make_clock(0, [0], resync_s=300, monotonic=lambda: mono[0])
    exchange.fail = True
    await clock.ensure()
    local[0] += 30_000  # stepped; the retry-after-failure minute has not passed
    await clock.ensure()  # the step is measured for (and fails again)
    await clock.ensure()  # no new step: waits for the retry minute

    assert exchange.calls == 2
    assert clock.step_ms() == 0
