"""Live bars on any clock, through any bad kline: DSMDataClient against a shifted imitation.

Real ``LiveClock``, ``MessageBus`` and ``Cache`` (the harness of ``conftest``). The
imitation runs ``skew`` ms from the local clock; every published bar is compared, after the
fact, with the imitation's final kline (``srv.expected``), so a forming bar published as closed
(partial volume) fails the comparison.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from nautilus_trader.model.data import Bar

from nautilus_dsm.common import Interval, MarketType, iso_ms, to_ms
from nautilus_dsm.dsm.manager import DataSourceManager
from nautilus_dsm.errors import DataUnavailable, InvalidResponse
from nautilus_dsm.testing import BinanceImitation
from tests.integration.conftest import (
    SPOT_1S,
    Harness,
    bar_rows,
    build_harness,
    expected_rows,
    subscribe,
)

NS = 1_000_000
SEC = 1_000

pytestmark = pytest.mark.timeout(30)


def _wall_ms() -> int:
    return time.time_ns() // NS


@pytest.fixture
async def live(cache_dir: Path) -> AsyncIterator[Callable[..., Harness]]:
    """``live(skew_ms)``: a harness whose imitation's clock runs ``skew_ms`` from the local one."""
    made: list[Harness] = []
    servers: list[BinanceImitation] = []

    def make(
        skew_ms: int = 0,
        wrap: Callable[[DataSourceManager], object] | None = None,
        **overrides: Any,
    ) -> Harness:
        srv = BinanceImitation(clock=lambda: _wall_ms() + skew_ms).start()
        servers.append(srv)
        harness = build_harness(srv, cache_dir, wrap, **overrides)
        made.append(harness)
        return harness

    yield make
    for harness in made:
        await harness.client._disconnect()
    for srv in servers:
        srv.stop()


async def collect_until(h: Harness, last_open_ms: int, bars: list[Bar]) -> list[Bar]:
    """Append published bars until one opens at or after ``last_open_ms``."""
    while not bars or bars[-1].ts_event // NS - SEC < last_open_ms:
        bars.append(await h.next_bar())
    return bars


def opens_ms(bars: list[Bar]) -> list[int]:
    return [b.ts_event // NS - SEC for b in bars]


def truth(h: Harness, first_open_ms: int, end_ms: int) -> list[tuple]:
    return expected_rows(
        h.srv, MarketType.SPOT, "BTCUSDT", Interval.SECOND_1, first_open_ms, end_ms
    )


def iso(ms: int) -> str:
    return iso_ms(ms)


# ---------------------------------------------------------------------------------------------
# Exchange time decides what is closed
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("skew_ms", [-400, -2_500, 400, 2_500], ids=lambda s: f"exchange{s:+d}ms")
async def test_every_live_1s_bar_is_the_final_kline_whatever_the_clock_skew(
    live, skew_ms: int
) -> None:
    h = live(skew_ms)
    subscribe(h, SPOT_1S)
    await asyncio.gather(*list(h.client._tasks))
    first = await h.next_bar()
    bars = await collect_until(h, first.ts_event // NS - SEC + 3 * SEC, [first])

    opens = opens_ms(bars)
    assert opens == [opens[0] + i * SEC for i in range(4)]  # 4 bars, in order, once
    assert bar_rows(bars, live=True) == truth(
        h, opens[0], opens[-1] + SEC
    )  # final values, Decimal-exact
    offset = h.client.dsm.exchange_clock(MarketType.SPOT).offset_ms
    assert abs(offset - skew_ms) <= 5
    assert h.logs.at("error") == []


@pytest.mark.parametrize("skew_ms", [180_000, -180_000], ids=["exchange+3min", "exchange-3min"])
async def test_first_live_bar_is_the_one_forming_on_the_exchange_minutes_off_the_local_clock(
    live, skew_ms: int
) -> None:
    h = live(skew_ms)
    before_ms = h.srv.now_ms()
    subscribe(h, SPOT_1S)
    await asyncio.gather(*list(h.client._tasks))
    bars = [await h.next_bar()]
    after_ms = h.srv.now_ms()
    bars = await collect_until(h, opens_ms(bars)[0] + 2 * SEC, bars)

    opens = opens_ms(bars)
    # Neither three minutes of backfill (local behind) nor three minutes of silence (ahead).
    assert Interval.SECOND_1.floor_ms(before_ms) <= opens[0] <= after_ms
    assert opens == [opens[0] + i * SEC for i in range(3)]
    assert bar_rows(bars, live=True) == truth(h, opens[0], opens[-1] + SEC)
    assert h.logs.at("error") == []


# ---------------------------------------------------------------------------------------------
# Live never stalls
# ---------------------------------------------------------------------------------------------


async def test_bad_live_kline_is_reported_and_skipped_and_the_stream_goes_on(live) -> None:
    # One engine try per poll (max_retries=1): the client's own BAD_KLINE_TRIES are what is
    # tested, and the skip takes ~0.3 s of backoff instead of the engine's retry budget.
    h = live(max_retries=1)
    subscribe(h, SPOT_1S)
    first = await h.next_bar()
    bad_ms = first.ts_event // NS + SEC  # the bar after the next
    h.srv.faults.rest_bad_kline_open_ms.add(bad_ms)
    skipped = asyncio.Event()
    # the skip is logged as the one error
    h.logs.on_log = lambda level, _: skipped.set() if level == "error" else None

    await asyncio.wait_for(skipped.wait(), timeout=20)  # bounded by the pytest timeout too
    bars = await collect_until(h, bad_ms + 2 * SEC, [first])

    opens = opens_ms(bars)
    assert opens == [bad_ms - 2 * SEC, bad_ms - SEC, bad_ms + SEC, bad_ms + 2 * SEC]
    expected = [
        row for row in truth(h, opens[0], opens[-1] + SEC) if row[0] != bad_ms * NS + SEC * NS
    ]
    assert bar_rows(bars, live=True) == expected
    [error] = h.logs.at("error")
    assert error.startswith(
        f"{SPOT_1S}: the kline opening at {iso(bad_ms)} is skipped: the source answered it "
        "with a bad payload 3 times ("
    )
    assert error.endswith(f"); the stream goes on from {iso(bad_ms + SEC)}")
    tries = [m for m in h.logs.at("warning") if "bad klines from" in m]
    assert [m.split("try ")[1].split(",")[0] for m in tries] == ["1 of 3", "2 of 3"]
    assert h.client.subscribed_bars() == [SPOT_1S]
    assert h.client._pollers[SPOT_1S].skipped == 1


async def test_transient_unknown_symbol_is_retried_and_nothing_is_lost(live) -> None:
    h = live()
    subscribe(h, SPOT_1S)
    first = await h.next_bar()
    h.srv.faults.rest_klines_unknown_symbol = 2  # the next two klines requests answer -1121

    bars = await collect_until(h, first.ts_event // NS + 2 * SEC, [first])

    opens = opens_ms(bars)
    assert opens == [opens[0] + i * SEC for i in range(4)]
    assert bar_rows(bars, live=True) == truth(h, opens[0], opens[-1] + SEC)
    retries = [m for m in h.logs.at("warning") if "answered -1121" in m]
    assert [m.split("attempt ")[1].split(",")[0] for m in retries] == ["1", "2"]
    assert retries[0].startswith(
        f"{SPOT_1S}: klines answered -1121 but exchangeInfo still lists BTCUSDT (transient); "
        "attempt 1, retrying in 0.10s"
    )
    checks = [r for r in h.srv.requests if r.path == "/api/v3/exchangeInfo" and r.query]
    assert [r.query for r in checks] == [{"symbol": "BTCUSDT"}] * 2
    assert h.logs.at("error") == []
    assert h.client.subscribed_bars() == [SPOT_1S]


async def test_symbol_gone_from_exchange_info_ends_the_subscription_with_an_error(live) -> None:
    h = live()
    subscribe(h, SPOT_1S)
    await h.next_bar()
    task = h.client._pollers[SPOT_1S].task
    assert task is not None

    h.srv.remove_symbol(MarketType.SPOT, "BTCUSDT")
    await asyncio.wait_for(task, timeout=10)

    [error] = h.logs.at("error")
    assert error.startswith(
        f"{SPOT_1S}: BTCUSDT is no longer listed in the SPOT exchangeInfo ('BTCUSDT' is not a "
        "Binance SPOT symbol (/api/v3/klines answered -1121 'Invalid symbol.')"
    )
    assert error.endswith("); subscription ended after 1 bars")
    assert h.client.subscribed_bars() == []
    assert h.client.poller_stats(SPOT_1S) is None


async def test_poller_measures_the_exchange_clock_once_not_per_poll(live) -> None:
    h = live(-400)
    subscribe(h, SPOT_1S)
    first = await h.next_bar()
    await collect_until(h, first.ts_event // NS - SEC + 3 * SEC, [first])

    assert [r.path for r in h.srv.requests if r.path.endswith("/time")] == ["/api/v3/time"] * 3


class NamedBadKlineDSM:
    """Proxies a DataSourceManager: ``outage`` fetches raise DataUnavailable, then every fetch
    whose range holds ``bad_ms`` raises InvalidResponse naming it (the shared contract of a
    payload that fails validation)."""

    def __init__(self, inner: DataSourceManager) -> None:
        self._inner = inner
        self.bad_ms: int | None = None
        self.outage = 0
        self.refused: list[tuple[int, int]] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def fetch(self, instrument_id: str, interval: str, start, end, **kwargs) -> object:
        if self.outage > 0:
            self.outage -= 1
            raise DataUnavailable("REST down (test)")
        lo, hi = to_ms(start), to_ms(end)
        if self.bad_ms is not None and lo <= self.bad_ms < hi:
            self.refused.append((lo, hi))
            raise InvalidResponse("kline open 'abc' (test)", open_times_ms=(self.bad_ms,))
        return await self._inner.fetch(instrument_id, interval, start, end, **kwargs)


async def test_bad_kline_named_by_the_source_is_skipped_alone_after_an_outage_backlog(
    live,
) -> None:
    h = live(wrap=NamedBadKlineDSM)
    source: NamedBadKlineDSM = h.client.dsm
    subscribe(h, SPOT_1S)
    first = await h.next_bar()
    b1 = first.ts_event // NS
    source.bad_ms = b1 + SEC
    source.outage = 4  # 0.1 + 0.2 + 0.4 + 0.8 s: a backlog around the bad kline builds up

    bars = await collect_until(h, b1 + 3 * SEC, [first])

    opens = opens_ms(bars)
    assert opens == [b1 - SEC, b1, b1 + 2 * SEC, b1 + 3 * SEC]
    expected = [r for r in truth(h, opens[0], opens[-1] + SEC) if r[0] != (b1 + 2 * SEC) * NS]
    assert bar_rows(bars, live=True) == expected
    assert len(source.refused) == 3  # the bounded tries, each over the whole backlog
    assert all(lo == b1 and hi >= b1 + 2 * SEC for lo, hi in source.refused)  # b1 and the bad
    assert h.logs.at("error") == [
        f"{SPOT_1S}: the kline opening at {iso(b1 + SEC)} is skipped: the source answered it "
        "with a bad payload 3 times (InvalidResponse: kline open 'abc' (test)); the stream goes "
        f"on from {iso(b1 + 2 * SEC)}"
    ]


@pytest.mark.parametrize(
    "skew_ms", [-10_000, 10_000, 180_000], ids=["behind-10s", "ahead-10s", "ahead-3min"]
)
async def test_request_bars_with_a_limit_ends_at_the_exchanges_last_closed_bar(
    live: Callable[..., Harness], skew_ms: int
) -> None:
    h = live(skew_ms)

    response = await h.request_bars(SPOT_1S, None, None, limit=5)
    exchange_now = _wall_ms() + skew_ms

    opens = [bar.ts_event // NS - SEC for bar in response.data]
    assert len(opens) == 5
    assert opens == list(range(opens[0], opens[0] + 5 * SEC, SEC))
    # The last bar is the exchange's last closed second when the answer was built (allow the
    # seconds that passed since: the check runs after the answer).
    last_closed = (exchange_now // SEC) * SEC - SEC
    assert 0 <= (last_closed - opens[-1]) // SEC <= 2
    assert bar_rows(response.data) == expected_rows(
        h.srv, MarketType.SPOT, "BTCUSDT", Interval.SECOND_1, opens[0], opens[-1] + SEC
    )
    assert [m for level, m in h.logs.records if level == "error"] == []
