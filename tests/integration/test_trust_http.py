"""Trust, bounded time: every request ends within its deadline, hangs cost seconds, not minutes.

Each fault is injected over real HTTP by the imitation (``Faults.hang``, ``drip``,
``retry_after_raw``, ``redirect_to``, ``redirect_next``); the knobs (``max_retries``,
``timeout_s``, ``deadline_s``) are set the way a user sets them: on ``DataSourceManager.create``,
on ``DSMDataClientConfig`` through the factory, and on the CLI.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from nautilus_dsm.cli import cli
from nautilus_dsm.common import Interval, MarketType, to_ms
from nautilus_dsm.config import DSMDataClientConfig
from nautilus_dsm.dsm.http import HttpTransport
from nautilus_dsm.dsm.manager import DataSourceManager
from nautilus_dsm.dsm.rest import BinanceRestClient
from nautilus_dsm.dsm.retry_policy import RATE_LIMIT_FLOOR_S, RetryPolicy
from nautilus_dsm.errors import (
    CircuitOpen,
    DataUnavailable,
    InvalidInput,
    RateLimited,
    SourceError,
)
from nautilus_dsm.factories import dsm_for_config

pytestmark = pytest.mark.timeout(30)

UM = MarketType.FUTURES_USDT
M1 = Interval.MINUTE_1
MIN = 60_000
DAY = 86_400_000
JAN1 = datetime(2024, 1, 1, tzinfo=UTC)
T0 = to_ms(JAN1)
PERP = "BTCUSDT-PERP.BINANCE"
KLINES = "/fapi/v1/klines"


def _dsm(srv: Any, cache_dir: Path, **kwargs: Any) -> DataSourceManager:
    return DataSourceManager.create(
        base_url_http=srv.url, base_url_vision=srv.url, cache_dir=cache_dir, **kwargs
    )


def _rest(srv: Any, **kwargs: Any) -> BinanceRestClient:
    settings: dict[str, Any] = {"backoff_base_s": 0.01, "backoff_max_s": 0.05}
    return BinanceRestClient(UM, srv.url, **{**settings, **kwargs})


def _vision_requests(srv: Any) -> list[tuple[str, int]]:
    return [(r.path, r.status) for r in srv.requests if r.path.startswith("/data/")]


def _klines_statuses(srv: Any) -> list[int]:
    return [r.status for r in srv.requests if r.path == KLINES]


# --------------------------------------------------------------------------------------------
# 1. A total deadline per request
# --------------------------------------------------------------------------------------------


async def test_a_dripped_body_ends_at_the_total_deadline_after_the_bounded_retries(
    imitation: Any,
) -> None:
    # 1 byte/s: every read sees data well within the 5 s inactivity timeout, so only a total
    # deadline (connect + headers + body) can end the request.
    imitation.faults.drip = {KLINES: 1.0}
    client = _rest(imitation, timeout_s=5.0, deadline_s=0.3, max_retries=2)

    with pytest.raises(SourceError) as info:
        await client.klines("BTCUSDT", "1m", T0, T0 + 10 * MIN)
    await client.aclose()

    assert str(info.value) == (
        "Binance FUTURES_USDT REST /fapi/v1/klines failed after 2 tries; last error: no "
        "complete answer within the total deadline deadline_s=0.3s (connect + headers + body); "
        "the source is unreachable or failing, retry later or raise max_retries, or raise "
        "deadline_s (CLI --deadline) if the host is only slow"
    )
    assert _klines_statuses(imitation) == [200, 200]  # headers sent, bodies never finished
    assert client.stats.requests == 2


async def test_a_dripped_vision_host_leaves_the_days_to_rest_with_the_exact_bars(
    imitation: Any, cache_dir: Path
) -> None:
    imitation.faults.drip = {"/data/": 1.0}

    knobs = {"timeout_s": 5.0, "deadline_s": 0.6, "max_retries": 2, "max_concurrency": 1}
    async with _dsm(imitation, cache_dir, **knobs) as dsm:
        result = await dsm.fetch(PERP, "1m", JAN1, JAN1 + timedelta(days=2))

    assert result.frame.equals(imitation.expected(UM, "BTCUSDT", M1, T0, T0 + 2 * DAY))
    assert result.report.sources == {"cache": 0, "vision": 0, "rest": 2880, "synthetic": 0}
    # The first zip twice (max_retries), the second once: 3 consecutive failures open the
    # host's circuit, and the second day goes to REST without a retry.
    assert [status for _, status in _vision_requests(imitation)] == [200, 200, 200]


# --------------------------------------------------------------------------------------------
# 2. Hangs cost seconds: the per-host circuit breaker
# --------------------------------------------------------------------------------------------


async def test_a_hanging_vision_host_costs_seconds_and_the_month_comes_from_rest(
    imitation: Any, cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    imitation.faults.hang = {"/data/"}
    end = datetime(2024, 2, 1, tzinfo=UTC)

    with caplog.at_level(logging.INFO, logger="nautilus_dsm.dsm"):
        async with _dsm(imitation, cache_dir, timeout_s=0.5, deadline_s=5.0) as dsm:
            result = await dsm.fetch(PERP, "1m", JAN1, end)
            vision = dsm.vision_client(UM)

    assert result.frame.equals(imitation.expected(UM, "BTCUSDT", M1, T0, to_ms(end)))
    assert result.frame.height == 31 * 1440
    assert result.report.sources == {"cache": 0, "vision": 0, "rest": 44_640, "synthetic": 0}
    requests = _vision_requests(imitation)
    # The monthly zip hangs 3 times (the breaker threshold), then every daily file is skipped
    # without a request; at most one half-open probe per cooldown may go out meanwhile.
    assert (
        requests[:3]
        == [("/data/futures/um/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01.zip", 0)] * 3
    )
    assert 3 <= len(requests) <= 3 + vision._transport.concurrency
    opened = [
        r for r in caplog.records if r.levelno == logging.WARNING and "circuit open" in r.message
    ]
    assert len(opened) == 1  # logged once, not once per skipped file
    assert "after 3 consecutive failures" in opened[0].message


async def test_a_hanging_rest_host_is_skipped_after_the_breaker_threshold(
    imitation: Any, cache_dir: Path
) -> None:
    imitation.faults.hang = {KLINES}

    dsm = _dsm(imitation, cache_dir, use_vision=False, timeout_s=0.2, max_retries=5)
    with pytest.raises(DataUnavailable) as info:
        await dsm.fetch(PERP, "1m", JAN1, JAN1 + timedelta(days=5))
    await dsm.aclose()

    # The listing probe hangs 3 times; then the circuit is open and the 5 days fail fast.
    assert _klines_statuses(imitation) == [0, 0, 0]
    message = str(info.value)
    assert message.startswith("BTCUSDT-PERP.BINANCE 1m: 5 period(s) could not be fetched")
    assert message.count("circuit open for 127.0.0.1:") == 5
    assert "after 3 consecutive failures (last: ReadTimeout); skipped for " in message


async def test_the_breaker_half_opens_after_its_cooldown_and_recovers(imitation: Any) -> None:
    now = [1000.0]
    transport = HttpTransport(
        name="test REST",
        policy=RetryPolicy(max_retries=1),
        timeout_s=0.2,
        deadline_s=5.0,
        concurrency=1,
        breaker_threshold=3,
        breaker_cooldown_s=2.0,
        monotonic=lambda: now[0],
    )
    url = f"{imitation.url}/api/v3/ping"
    imitation.faults.hang = {"/api/v3/ping"}
    for _ in range(3):
        with pytest.raises(SourceError, match="failed after 1 tries; last error: ReadTimeout"):
            await transport.get(url)
    with pytest.raises(CircuitOpen, match=r"skipped for 2\.0 s more"):
        await transport.get(url)
    assert transport.counters.requests == 3  # the open circuit sent nothing

    imitation.faults.hang = set()  # the host is back
    now[0] += 2.0  # the cooldown has passed: one probe may go
    reply = await transport.get(url)
    again = await transport.get(url)
    await transport.aclose()

    assert (reply.status, again.status) == (200, 200)
    assert transport.counters.requests == 5


async def test_a_failed_probe_reopens_the_circuit_for_a_longer_cooldown(imitation: Any) -> None:
    now = [1000.0]
    transport = HttpTransport(
        name="test REST",
        policy=RetryPolicy(max_retries=1),
        timeout_s=0.2,
        deadline_s=5.0,
        concurrency=1,
        breaker_threshold=2,
        breaker_cooldown_s=2.0,
        monotonic=lambda: now[0],
    )
    url = f"{imitation.url}/api/v3/ping"
    imitation.faults.hang = {"/api/v3/ping"}
    for _ in range(2):
        with pytest.raises(SourceError, match="ReadTimeout"):
            await transport.get(url)
    now[0] += 2.0
    with pytest.raises(SourceError, match="ReadTimeout"):  # the probe hangs too
        await transport.get(url)
    now[0] += 2.0
    with pytest.raises(CircuitOpen, match=r"skipped for 2\.0 s more"):  # doubled: 4 s
        await transport.get(url)
    await transport.aclose()
    assert transport.counters.requests == 3


# --------------------------------------------------------------------------------------------
# 3. Retry-After, parsed defensively
# --------------------------------------------------------------------------------------------


async def test_retry_after_zero_waits_the_floor_and_does_not_hammer(imitation: Any) -> None:
    imitation.faults.rest_429 = 2
    imitation.faults.retry_after_raw = "0"
    client = _rest(imitation)

    frame = await client.klines("BTCUSDT", "1m", T0, T0 + 10 * MIN)
    counters = client._transport.counters
    await client.aclose()

    assert frame.equals(imitation.expected(UM, "BTCUSDT", M1, T0, T0 + 10 * MIN))
    assert _klines_statuses(imitation) == [429, 429, 200]
    assert RATE_LIMIT_FLOOR_S == 1.0
    assert (counters.rate_limited, counters.imposed_wait_s) == (2, 2 * RATE_LIMIT_FLOOR_S)
    assert counters.waited_s >= 2 * RATE_LIMIT_FLOOR_S - 0.01


@pytest.mark.parametrize("raw", ["-5", "nan", "soon", ""])
async def test_an_unusable_retry_after_waits_the_floor(imitation: Any, raw: str) -> None:
    imitation.faults.rest_429 = 1
    imitation.faults.retry_after_raw = raw
    client = _rest(imitation)

    frame = await client.klines("BTCUSDT", "1m", T0, T0 + 10 * MIN)
    counters = client._transport.counters
    await client.aclose()

    assert frame.height == 10
    assert _klines_statuses(imitation) == [429, 200]
    assert (counters.rate_limited, counters.imposed_wait_s) == (1, RATE_LIMIT_FLOOR_S)


@pytest.mark.parametrize("status", [429, 418])
@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("inf", "'inf'"),
        ("1e12", "'1e12'"),
        ("1e400", "'1e400'"),
        ("Fri, 31 Dec 9999 23:59:59 GMT", "'Fri, 31 Dec 9999 23:59:59 GMT'"),
    ],
)
async def test_an_absurd_retry_after_is_rate_limited_after_one_request(
    imitation: Any, status: int, raw: str, shown: str
) -> None:
    setattr(imitation.faults, f"rest_{status}", 1)
    imitation.faults.retry_after_raw = raw
    client = _rest(imitation, max_wait_s=60.0)

    with pytest.raises(RateLimited) as info:
        await client.klines("BTCUSDT", "1m", T0, T0 + 10 * MIN)
    # The gate holds later requests too: refused at once, nothing sent.
    with pytest.raises(RateLimited):
        await client.klines("BTCUSDT", "1m", T0, T0 + 10 * MIN)
    await client.aclose()

    message = str(info.value)
    assert f"(HTTP {status}) until 20" in message  # a real date, never an OverflowError
    assert f"(Retry-After {shown}, absurd: held for the 259200 s cap)" in message
    assert "beyond max_wait_s=60s" in message
    assert _klines_statuses(imitation) == [status]


async def test_a_ban_without_retry_after_is_rate_limited_at_once(imitation: Any) -> None:
    imitation.faults.rest_418 = 1
    imitation.faults.retry_after_raw = ""
    client = _rest(imitation)
    with pytest.raises(RateLimited, match=r"HTTP 418\) without a usable Retry-After"):
        await client.klines("BTCUSDT", "1m", T0, T0 + 10 * MIN)
    await client.aclose()
    assert _klines_statuses(imitation) == [418]


# --------------------------------------------------------------------------------------------
# 4. Redirects
# --------------------------------------------------------------------------------------------


async def test_a_redirect_loop_is_a_source_error_naming_the_url(imitation: Any) -> None:
    imitation.faults.redirect_to = {KLINES: imitation.url}  # to itself, forever
    client = _rest(imitation)

    with pytest.raises(SourceError) as info:
        await client.klines("BTCUSDT", "1m", T0, T0 + 10 * MIN)
    await client.aclose()

    message = str(info.value)
    assert message.startswith(
        f"Binance FUTURES_USDT REST {imitation.url}/fapi/v1/klines?symbol=BTCUSDT&interval=1m"
    )
    assert "redirect loop: still redirected after 3 redirects" in message
    assert not isinstance(info.value, RateLimited)
    assert _klines_statuses(imitation) == [302] * 4  # 1 + 3 hops, and not retried


async def test_an_off_host_redirect_is_not_followed_and_vision_falls_back_to_rest(
    imitation: Any, cache_dir: Path
) -> None:
    imitation.faults.redirect_to = {"/data/": "http://127.0.0.2:1"}

    async with _dsm(imitation, cache_dir) as dsm:
        result = await dsm.fetch(PERP, "1m", JAN1, JAN1 + timedelta(days=2))
        with pytest.raises(SourceError) as info:
            await dsm.vision_client(UM).daily("BTCUSDT", "1m", JAN1.date())

    assert result.frame.equals(imitation.expected(UM, "BTCUSDT", M1, T0, T0 + 2 * DAY))
    assert result.report.sources == {"cache": 0, "vision": 0, "rest": 2880, "synthetic": 0}
    assert {status for _, status in _vision_requests(imitation)} == {302}
    assert len(_vision_requests(imitation)) == 3  # one per file, never retried
    assert "redirected off-host to http://127.0.0.2:1/data/futures/um/daily/" in str(info.value)
    assert "not followed" in str(info.value)


async def test_same_host_redirects_are_followed_a_few_times(imitation: Any) -> None:
    imitation.faults.redirect_next = 2
    client = _rest(imitation)
    frame = await client.klines("BTCUSDT", "1m", T0, T0 + 10 * MIN)
    await client.aclose()
    assert frame.equals(imitation.expected(UM, "BTCUSDT", M1, T0, T0 + 10 * MIN))
    assert _klines_statuses(imitation) == [302, 302, 200]


# --------------------------------------------------------------------------------------------
# 5. The knobs: create, the client config through the factory, the CLI
# --------------------------------------------------------------------------------------------


def _knobs(dsm: DataSourceManager) -> list[tuple[int, float, float]]:
    transports = [dsm.rest_client(UM)._transport, dsm.vision_client(UM)._transport]
    return [(t.policy.max_retries, t.timeout_s, t.deadline_s) for t in transports]


def test_create_passes_the_knobs_to_both_sources(cache_dir: Path) -> None:
    default = DataSourceManager.create(cache_dir=cache_dir)
    tuned = DataSourceManager.create(cache_dir=cache_dir, max_retries=2, timeout_s=3, deadline_s=7)
    assert _knobs(default) == [(5, 10.0, 60.0), (3, 10.0, 300.0)]
    assert _knobs(tuned) == [(2, 3.0, 7.0), (2, 3.0, 7.0)]


@pytest.mark.parametrize(
    ("knob", "value", "match"),
    [
        ("max_retries", 0, r"max_retries must be a whole number of tries >= 1, was 0; e\.g\."),
        ("max_retries", 2.5, r"max_retries must be a whole number of tries >= 1, was 2\.5"),
        ("max_retries", True, r"max_retries must be a whole number of tries >= 1, was True"),
        ("timeout_s", 0, r"timeout_s must be a finite number of seconds > 0, was 0; e\.g\."),
        ("timeout_s", -1.0, r"timeout_s must be a finite number of seconds > 0, was -1\.0"),
        ("deadline_s", float("nan"), r"deadline_s must be a finite number of seconds > 0, was nan"),
        ("deadline_s", float("inf"), r"deadline_s must be a finite number of seconds > 0, was inf"),
        ("deadline_s", "60", r"deadline_s must be a finite number of seconds > 0, was '60'"),
    ],
)
def test_bad_knobs_are_refused_by_create_and_by_the_config(
    cache_dir: Path, knob: str, value: object, match: str
) -> None:
    with pytest.raises(InvalidInput, match=match):
        DataSourceManager.create(cache_dir=cache_dir, **{knob: value})
    with pytest.raises(InvalidInput, match=match):
        DSMDataClientConfig(**{knob: value})


def test_the_config_knobs_reach_the_engine_through_the_factory(tmp_path: Path) -> None:
    config = DSMDataClientConfig(
        cache_dir=str(tmp_path / "factory-cache"), max_retries=4, timeout_s=2.5, deadline_s=9.0
    )
    dsm = dsm_for_config(config)
    assert _knobs(dsm) == [(4, 2.5, 9.0), (4, 2.5, 9.0)]
    assert DSMDataClientConfig().max_retries is None  # each source's own default


@pytest.mark.parametrize("command", ["fetch", "ingest", "quality"])
@pytest.mark.parametrize(
    ("option", "value", "match"),
    [
        ("--timeout", "0", "timeout_s must be a finite number of seconds > 0, was 0.0"),
        ("--deadline", "nan", "deadline_s must be a finite number of seconds > 0, was nan"),
        ("--max-retries", "0", "max_retries must be a whole number of tries >= 1, was 0"),
    ],
)
def test_cli_refuses_bad_knobs_with_exit_2_before_any_io(
    tmp_path: Path, command: str, option: str, value: str, match: str
) -> None:
    # An unroutable host: any I/O would hang or fail with another message and exit code.
    sources = ["--base-url-http", "http://127.0.0.2:1", "--base-url-vision", "http://127.0.0.2:1"]
    sources += ["--cache-dir", str(tmp_path / "cache")]
    where = {
        "fetch": ["--out", str(tmp_path / "out.parquet")],
        "ingest": ["--catalog", str(tmp_path / "catalog")],
        "quality": [],
    }[command]
    args = [command, PERP, "--interval", "1m", "--start", "2024-01-01", "--end", "2024-01-02"]
    result = CliRunner().invoke(cli, [*args, *sources, *where, option, value, "--no-progress"])
    assert result.exit_code == 2, result.output
    [line] = result.output.splitlines()  # one line, like every other bad input
    assert line.startswith(f"error: invalid value for {option}: ")
    assert match in line
    assert not (tmp_path / "cache").exists()


def test_cli_knobs_bound_the_requests(imitation: Any, tmp_path: Path) -> None:
    imitation.faults.drip = {KLINES: 1.0, "/data/": 1.0}
    args = ["fetch", PERP, "--interval", "1m", "--start", "2024-01-01", "--end", "2024-01-02"]
    args += ["--base-url-http", imitation.url, "--base-url-vision", imitation.url]
    args += ["--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out.parquet")]
    args += ["--deadline", "0.3", "--timeout", "5", "--max-retries", "1", "--no-progress"]

    result = CliRunner().invoke(cli, args)

    assert result.exit_code == 1, result.output
    assert "within the total deadline deadline_s=0.3s" in result.output
    # The listing probe and the day: one try each (--max-retries 1), then the error.
    assert _klines_statuses(imitation) == [200, 200]


async def test_every_rate_limit_hold_is_logged_once_with_its_end(
    imitation: Any, caplog: pytest.LogCaptureFixture
) -> None:
    imitation.faults.rest_429 = 1
    imitation.faults.retry_after_raw = "1"
    client = _rest(imitation)

    with caplog.at_level(logging.WARNING, logger="nautilus_dsm.dsm"):
        frame = await client.klines("BTCUSDT", "1m", T0, T0 + 10 * MIN)
    await client.aclose()

    assert frame.height == 10
    holds = [r.getMessage() for r in caplog.records if "requests are held" in r.getMessage()]
    assert len(holds) == 1
    assert holds[0].startswith("Binance FUTURES_USDT REST: requests are held for ")
    assert "Binance rate-limited the client (HTTP 429) until " in holds[0]
    assert "(Retry-After '1')" in holds[0]
