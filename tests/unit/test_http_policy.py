"""Pure policy of the HTTP sources: backoff, Retry-After, weight gate, page planning, zips."""

from __future__ import annotations

import asyncio
import io
import itertools
import zipfile
from datetime import UTC, datetime

import pytest

from nautilus_dsm.common import Interval, to_ms
from nautilus_dsm.dsm.bounds import check_knobs
from nautilus_dsm.dsm.circuit import CircuitBreaker
from nautilus_dsm.dsm.http import gather_or_cancel
from nautilus_dsm.dsm.planner import closed_end_ms
from nautilus_dsm.dsm.rest import Page, plan_pages
from nautilus_dsm.dsm.retry_policy import (
    MAX_HONOURED_WAIT_S,
    RATE_LIMIT_FLOOR_S,
    RetryPolicy,
    backoff_delay,
    parse_retry_after,
    rate_limit_wait,
)
from nautilus_dsm.dsm.vision import _CorruptZip, extract_csv, parse_checksum
from nautilus_dsm.dsm.weight_gate import WeightGate, parse_used_weight
from nautilus_dsm.errors import InvalidInput, SourceError

MIN = 60_000
T0 = to_ms(datetime(2024, 1, 1, tzinfo=UTC))  # 1_704_067_200_000


# -- backoff ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry", "ceiling"), [(1, 0.25), (2, 0.5), (3, 1.0), (4, 2.0), (6, 8.0), (7, 8.0), (30, 8.0)]
)
def test_backoff_ceiling_doubles_and_caps(retry: int, ceiling: float) -> None:
    assert backoff_delay(retry, 0.25, 8.0, rand=lambda: 1.0) == ceiling


def test_backoff_full_jitter_scales_the_draw() -> None:
    assert backoff_delay(3, 0.25, 8.0, rand=lambda: 0.5) == 0.5
    assert backoff_delay(3, 0.25, 8.0, rand=lambda: 0.0) == 0.0


def test_backoff_default_rand_stays_within_bounds() -> None:
    delays = [backoff_delay(4, 0.25, 8.0) for _ in range(500)]
    assert min(delays) >= 0.0
    assert max(delays) <= 2.0


def test_retry_policy_refuses_zero_tries() -> None:
    with pytest.raises(ValueError, match="max_retries must be >= 1, was 0"):
        RetryPolicy(max_retries=0)


# -- Retry-After -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("5", 5.0), (" 2 ", 2.0), ("0.5", 0.5), ("-3", 0.0), ("", None), (None, None), ("x", None)],
)
def test_parse_retry_after_seconds(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


def test_parse_retry_after_http_date() -> None:
    now = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Mon, 01 Jan 2024 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Mon, 01 Jan 2024 11:59:00 GMT", now=now) == 0.0


@pytest.mark.parametrize(
    ("header", "used"), [("1234", 1234), (" 7", 7), ("n/a", None), (None, None)]
)
def test_parse_used_weight(header: str | None, used: int | None) -> None:
    assert parse_used_weight(header) == used


# -- weight gate -----------------------------------------------------------------------------


def test_weight_gate_open_before_any_answer() -> None:
    assert WeightGate(2400).pause_s(T0) == 0.0


def test_weight_gate_open_at_ninety_percent() -> None:
    gate = WeightGate(2400)
    gate.observe(2160, T0 + 10_000)  # exactly 90 %
    assert gate.pause_s(T0 + 10_000) == 0.0


def test_weight_gate_pauses_until_next_minute_above_ninety_percent() -> None:
    gate = WeightGate(2400)
    gate.observe(2161, T0 + 15_000)
    assert gate.pause_s(T0 + 15_000) == 45.0
    assert gate.pause_s(T0 + 59_500) == 0.5
    assert gate.pause_s(T0 + MIN) == 0.0
    assert gate.last_used == 2161
    assert gate.peak_used == 2161


def test_weight_gate_reopens_when_a_new_window_reports_low_weight() -> None:
    gate = WeightGate(6000)
    gate.observe(5900, T0 + 1_000)
    gate.observe(12, T0 + MIN + 1_000)
    assert gate.pause_s(T0 + MIN + 1_000) == 0.0
    assert gate.last_used == 12
    assert gate.peak_used == 5900


# -- page planning ---------------------------------------------------------------------------


def test_plan_pages_week_of_1m_futures() -> None:
    end = T0 + 7 * 1440 * MIN  # 10080 bars
    pages = plan_pages(Interval.MINUTE_1, T0, end, 1500)
    assert len(pages) == 7
    assert [p.bars for p in pages] == [1500] * 6 + [1080]
    assert pages[0] == Page(T0, T0 + 1500 * MIN, 1500)
    assert pages[-1] == Page(T0 + 9000 * MIN, end, 1080)
    assert all(a.end_ms == b.start_ms for a, b in itertools.pairwise(pages))
    assert pages[0].end_time_param == T0 + 1500 * MIN - 1


def test_plan_pages_aligns_an_off_grid_start_and_end() -> None:
    pages = plan_pages(Interval.HOUR_1, T0 + 1, T0 + 3 * 3_600_000 + 5, 1000)
    assert pages == [Page(T0 + 3_600_000, T0 + 4 * 3_600_000, 3)]


def test_plan_pages_exact_multiple_and_empty() -> None:
    assert len(plan_pages(Interval.MINUTE_1, T0, T0 + 2000 * MIN, 1000)) == 2
    assert plan_pages(Interval.MINUTE_1, T0, T0, 1000) == []
    assert plan_pages(Interval.MINUTE_1, T0 + 1, T0 + MIN, 1000) == []


def test_plan_pages_calendar_months() -> None:
    start = to_ms(datetime(2023, 11, 15, tzinfo=UTC))
    end = to_ms(datetime(2024, 3, 1, tzinfo=UTC))
    pages = plan_pages(Interval.MONTH_1, start, end, 2)
    dec = to_ms(datetime(2023, 12, 1, tzinfo=UTC))
    feb = to_ms(datetime(2024, 2, 1, tzinfo=UTC))
    assert pages == [Page(dec, feb, 2), Page(feb, end, 1)]


def test_closed_end_excludes_the_forming_bar() -> None:
    now = T0 + 10 * MIN + 30_000  # 10:30 into the 11th minute
    assert closed_end_ms(Interval.MINUTE_1, T0 + 60 * MIN, now) == T0 + 10 * MIN
    assert closed_end_ms(Interval.MINUTE_1, T0 + 5 * MIN, now) == T0 + 5 * MIN
    # At the exact boundary the bar opening at `now` is forming, the one before it is closed.
    assert closed_end_ms(Interval.MINUTE_1, T0 + 60 * MIN, T0 + 10 * MIN) == T0 + 10 * MIN


# -- Vision checksum and zip -----------------------------------------------------------------

SHA = "a" * 64


def test_parse_checksum() -> None:
    assert parse_checksum(f"{SHA.upper()}  BTCUSDT-1m-2024-01-01.zip\n", "x.zip") == SHA


def test_parse_checksum_refuses_garbage() -> None:
    with pytest.raises(SourceError, match=r"Vision checksum file of x\.zip is malformed"):
        parse_checksum("<html>oops</html>", "x.zip")


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_extract_csv_returns_the_member() -> None:
    assert extract_csv(_zip({"a.csv": b"1,2\n"}), "a.zip", 100) == b"1,2\n"


def test_extract_csv_refuses_a_member_above_the_cap() -> None:
    data = _zip({"a.csv": b"0" * 1000})
    with pytest.raises(
        SourceError,
        match=r"^Vision file a\.zip: member a\.csv declares 1000 bytes, which exceeds the cap of "
        r"999 bytes; raise max_decompressed_bytes if the file is genuine$",
    ):
        extract_csv(data, "a.zip", 999)
    assert extract_csv(data, "a.zip", 1000) == b"0" * 1000


def test_extract_csv_truncated_zip_is_corrupt() -> None:
    data = _zip({"a.csv": b"1,2,3\n" * 1000})
    with pytest.raises(_CorruptZip):
        extract_csv(data[: len(data) // 2], "a.zip", 1 << 20)


def test_extract_csv_without_a_csv_member_is_corrupt() -> None:
    with pytest.raises(_CorruptZip, match="expected one CSV member"):
        extract_csv(_zip({"readme.txt": b"hi"}), "a.zip", 1 << 20)


# -- gather_or_cancel ------------------------------------------------------------------------


async def test_gather_or_cancel_returns_results_in_job_order() -> None:
    async def after(delay: float, value: int) -> int:
        await asyncio.sleep(delay)
        return value

    assert await gather_or_cancel([after(0.02, 1), after(0, 2), after(0.01, 3)]) == [1, 2, 3]
    assert await gather_or_cancel([]) == []


async def test_gather_or_cancel_cancels_the_other_jobs_on_the_first_error() -> None:
    started = asyncio.Event()
    outcome: list[str] = []

    async def slow() -> None:
        started.set()
        try:
            await asyncio.Event().wait()  # never set: only cancellation ends it
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    async def failing() -> None:
        await started.wait()
        raise SourceError("boom")

    with pytest.raises(SourceError, match="boom"):
        await gather_or_cancel([slow(), failing()])

    assert outcome == ["cancelled"]


# -- Trust, bounded time: Retry-After defensively, the circuit breaker, the knobs -------------


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("nan", None),
        ("NaN", None),
        ("inf", float("inf")),
        ("1e12", 1e12),
        ("1e400", float("inf")),
        ("-inf", 0.0),
        ("Fri, 31 Dec 99999 23:59:59 GMT", None),  # beyond datetime: unusable, not a crash
    ],
)
def test_parse_retry_after_never_raises(header: str, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


def test_parse_retry_after_far_http_date_is_huge_not_an_overflow() -> None:
    now = datetime(2024, 1, 1, tzinfo=UTC)
    assert parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now=now) > 2.5e11


@pytest.mark.parametrize(
    ("status", "header", "wait"),
    [
        (429, None, RATE_LIMIT_FLOOR_S),
        (429, "0", RATE_LIMIT_FLOOR_S),
        (429, "0.2", RATE_LIMIT_FLOOR_S),
        (429, "-7", RATE_LIMIT_FLOOR_S),
        (429, "nan", RATE_LIMIT_FLOOR_S),
        (429, "soon", RATE_LIMIT_FLOOR_S),
        (429, "7", 7.0),
        (429, "inf", MAX_HONOURED_WAIT_S),
        (429, "1e12", MAX_HONOURED_WAIT_S),
        (418, "0", RATE_LIMIT_FLOOR_S),
        (418, "120", 120.0),
        (418, "inf", MAX_HONOURED_WAIT_S),
        (418, None, None),  # a ban of unknown length: RateLimited at once, never probed
        (418, "nan", None),
    ],
)
def test_rate_limit_wait_floor_and_cap(status: int, header: str | None, wait: float | None) -> None:
    assert rate_limit_wait(status, header)[0] == wait


def test_rate_limit_wait_names_the_raw_header() -> None:
    assert rate_limit_wait(429, "inf")[1] == (
        "Retry-After 'inf', absurd: held for the 259200 s cap"
    )
    assert rate_limit_wait(429, "0")[1] == "Retry-After '0', waited the 1 s floor"
    assert rate_limit_wait(429, None)[1] == "no Retry-After, waited the 1 s floor"


def _breaker(now: list[float], threshold: int = 3) -> CircuitBreaker:
    return CircuitBreaker(threshold, cooldown_s=2.0, max_cooldown_s=5.0, clock=lambda: now[0])


def test_breaker_opens_after_threshold_consecutive_failures_only() -> None:
    now = [0.0]
    breaker = _breaker(now)
    assert breaker.failure("ReadTimeout") is None
    assert breaker.failure("ReadTimeout") is None
    breaker.success()  # not consecutive any more
    assert breaker.failure("ConnectError") is None
    assert breaker.failure("ConnectError") is None
    assert breaker.admit() is None
    assert breaker.failure("ConnectError") == "opened"
    assert breaker.admit() == "skipped for 2.0 s more"
    now[0] = 1.5
    assert breaker.admit() == "skipped for 0.5 s more"


def test_breaker_half_open_admits_one_probe_and_backs_off_on_failure() -> None:
    now = [0.0]
    breaker = _breaker(now, threshold=1)
    assert breaker.failure("x") == "opened"
    now[0] = 2.0
    assert breaker.admit() is None  # the probe
    assert breaker.admit() == "skipped while one probe request is in flight"
    assert breaker.failure("x") == "reopened"
    assert breaker.cooldown_s == 4.0
    now[0] = 6.0
    assert breaker.admit() is None
    assert breaker.failure("x") == "reopened"
    assert breaker.cooldown_s == 5.0  # capped
    now[0] = 11.0
    assert breaker.admit() is None
    breaker.abandon()  # a cancelled probe lets the next request probe
    assert breaker.admit() is None
    assert breaker.success() is True
    assert (breaker.is_open, breaker.failures, breaker.cooldown_s) == (False, 0, 2.0)
    assert breaker.success() is False


@pytest.mark.parametrize(
    ("kwargs", "knobs"),
    [
        ({}, {}),
        (
            {"max_retries": 1, "timeout_s": 0.5, "deadline_s": 2},
            {"max_retries": 1, "timeout_s": 0.5, "deadline_s": 2.0},
        ),
    ],
)
def test_check_knobs_keeps_only_the_set_ones(kwargs: dict, knobs: dict) -> None:
    assert check_knobs(**kwargs) == knobs


def test_check_knobs_message_names_the_owner_and_the_cli_flag() -> None:
    with pytest.raises(InvalidInput) as info:
        check_knobs(timeout_s=-2, owner="DSMDataClientConfig.")
    assert str(info.value) == (
        "DSMDataClientConfig.timeout_s must be a finite number of seconds > 0, was -2; "
        "e.g. timeout_s=10 (CLI --timeout 10)"
    )
