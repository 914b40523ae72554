"""DSMDataClient against the Binance imitation, with a real LiveClock, MessageBus and Cache.

The harness (``conftest``) records what the client publishes, answers and logs, so each test
asserts exactly what was answered, published and logged.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
import pytest
from nautilus_trader.cache.cache import Cache
from nautilus_trader.common.component import LiveClock, MessageBus
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.data.messages import RequestInstrument
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.model.identifiers import InstrumentId, TraderId
from nautilus_trader.model.instruments import Instrument

from nautilus_dsm.common import Interval, MarketType, iso_ms, to_ms
from nautilus_dsm.config import DSMDataClientConfig, DSMSourceConfig
from nautilus_dsm.data import BINANCE_VENUE, DSMDataClient
from nautilus_dsm.dsm.manager import DataSourceManager
from nautilus_dsm.errors import DataUnavailable, InvalidInput, SourceError
from nautilus_dsm.factories import dsm_holders
from nautilus_dsm.providers import DSMInstrumentProvider
from tests.integration.conftest import (
    CLIENT_ID,
    NS,
    SPOT_1M,
    SPOT_1S,
    Harness,
    assert_contiguous_closed_and_true,
    bar_rows,
    expected_rows,
    subscribe,
    unsubscribe,
)

DAY = datetime(2024, 1, 2, tzinfo=UTC)
DAY_MS = to_ms(DAY)
MIN_MS = 60_000


# ---------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------


async def test_request_bars_range_returns_exactly_the_source_bars(make_harness) -> None:
    h = make_harness()
    start, end = DAY, datetime(2024, 1, 2, 3, tzinfo=UTC)

    response = await h.request_bars(SPOT_1M, start, end)

    bars = response.data
    assert len(bars) == 180, h.logs.records
    assert bar_rows(bars) == expected_rows(
        h.srv, MarketType.SPOT, "BTCUSDT", Interval.MINUTE_1, DAY_MS, DAY_MS + 180 * MIN_MS
    )
    assert bars[0].ts_event == (DAY_MS + MIN_MS) * NS  # stamped at the close
    assert bars[-1].ts_event == to_ms(end) * NS
    instrument: Instrument = h.cache.instrument(SPOT_1M.instrument_id)
    assert bars[0].open.precision == instrument.price_precision == 8
    assert bars[0].volume.precision == instrument.size_precision == 8
    assert h.logs.at("error") == []


async def test_request_bars_with_limit_serves_last_bars_before_end(make_harness) -> None:
    h = make_harness()
    end = datetime(2024, 1, 2, 3, tzinfo=UTC)

    response = await h.request_bars(SPOT_1M, None, end, limit=10)

    assert bar_rows(response.data) == expected_rows(
        h.srv,
        MarketType.SPOT,
        "BTCUSDT",
        Interval.MINUTE_1,
        DAY_MS + 170 * MIN_MS,
        DAY_MS + 180 * MIN_MS,
    )
    assert any("start derived from limit=10" in m for m in h.logs.at("info"))


async def test_request_bars_with_start_and_limit_keeps_the_last(make_harness) -> None:
    h = make_harness()

    response = await h.request_bars(SPOT_1M, DAY, datetime(2024, 1, 2, 1, tzinfo=UTC), limit=5)

    assert [b.ts_event for b in response.data] == [
        (DAY_MS + m * MIN_MS) * NS for m in range(56, 61)
    ]


async def test_request_bars_with_old_start_and_limit_fetches_only_the_last_bars(
    make_harness,
) -> None:
    h = make_harness()
    end = datetime(2024, 1, 10, tzinfo=UTC)

    response = await h.request_bars(SPOT_1M, datetime(2024, 1, 1, tzinfo=UTC), end, limit=5)

    assert [b.ts_event for b in response.data] == [
        (to_ms(end) + m * MIN_MS) * NS for m in range(-4, 1)
    ]
    # the last day only, not nine days of files fetched to keep five bars
    assert [r.path for r in h.srv.requests if r.path.startswith("/data/")] == [
        "/data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-09.zip",
        "/data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-09.zip.CHECKSUM",
    ]


@pytest.mark.parametrize("gap_minutes", [10, 3])  # narrowed window below / above 95%
async def test_request_bars_start_and_limit_across_a_source_gap_serves_limit_bars(
    make_harness, gap_minutes: int
) -> None:
    h = make_harness()
    end_ms = DAY_MS + 180 * MIN_MS
    gap = (end_ms - 30 * MIN_MS, end_ms - (30 - gap_minutes) * MIN_MS)
    h.srv.faults.gaps.append(("BTCUSDT", *gap))

    response = await h.request_bars(SPOT_1M, DAY, datetime(2024, 1, 2, 3, tzinfo=UTC), limit=100)

    # the last 100 bars the source has before end reach back 100 + gap_minutes intervals
    truth = expected_rows(
        h.srv,
        MarketType.SPOT,
        "BTCUSDT",
        Interval.MINUTE_1,
        end_ms - (100 + gap_minutes) * MIN_MS,
        end_ms,
    )
    assert len(truth) == 100
    assert bar_rows(response.data) == truth
    assert h.logs.at("error") == []
    reason = "is below min_completeness" if gap_minutes == 10 else "has gaps"
    [refetch] = [m for m in h.logs.at("info") if "fetching again" in m]
    assert refetch == (
        f"{SPOT_1M}: the last 100 intervals hold {100 - gap_minutes} bars (window {reason}; "
        f"gaps: 2024-01-02T02:30:00Z..2024-01-02T02:{30 + gap_minutes}:00Z ({gap_minutes} bars)); "
        "fetching again from the requested start 2024-01-02T00:00:00Z to serve the last "
        "100 bars"
    )


async def test_request_bars_start_and_limit_with_too_few_bars_in_range_answers_empty(
    make_harness,
) -> None:
    h = make_harness()
    h.srv.faults.gaps.append(("BTCUSDT", DAY_MS + 10 * MIN_MS, DAY_MS + 110 * MIN_MS))

    response = await h.request_bars(SPOT_1M, DAY, datetime(2024, 1, 2, 2, tzinfo=UTC), limit=100)

    assert response.data == []
    assert h.logs.at("error") == [
        f"Cannot serve {SPOT_1M} bars: only 20 of the last 100 bars requested exist "
        "in [2024-01-02T00:00:00Z, 2024-01-02T02:00:00Z) (20.00% < min_completeness "
        "95.00%); pass min_completeness=0.20 or on_low_quality='warn' to accept them"
    ]


async def test_request_bars_unknown_symbol_answers_empty_once(make_harness) -> None:
    h = make_harness()
    bar_type = BarType.from_str("FOOBARUSDT.BINANCE-1-MINUTE-LAST-EXTERNAL")

    response = await h.request_bars(bar_type, DAY, datetime(2024, 1, 2, 1, tzinfo=UTC))

    assert response.data == []
    assert h.logs.at("error") == [
        f"Cannot serve {bar_type} bars: FOOBARUSDT.BINANCE is not listed in the SPOT "
        "exchangeInfo (2 instruments); check the symbol, and that a SPOT instrument id is meant "
        "(e.g. BTCUSDT.BINANCE spot, BTCUSDT-PERP.BINANCE USDT-M, BTCUSD-PERP.BINANCE COIN-M)"
    ]
    assert [r.path for r in h.srv.requests] == ["/api/v3/exchangeInfo"]  # no kline request


async def test_request_bars_market_type_contradiction_answers_empty(make_harness) -> None:
    h = make_harness(market_type="spot")
    bar_type = BarType.from_str("BTCUSDT-PERP.BINANCE-1-MINUTE-LAST-EXTERNAL")

    response = await h.request_bars(bar_type, DAY, datetime(2024, 1, 2, 1, tzinfo=UTC))

    assert response.data == []
    assert h.logs.at("error") == [
        f"Cannot serve {bar_type} bars: BTCUSDT-PERP.BINANCE is a USDT-margined futures "
        "instrument, but market type SPOT was requested; use MarketType.FUTURES_USDT "
        "(--market-type futures_usdt) or leave it unset, or use the spot instrument id "
        "(e.g. BTCUSDT.BINANCE)"
    ]
    assert h.srv.requests == []  # refused before any I/O


async def test_request_bars_two_minute_bars_answer_empty_with_fix(make_harness) -> None:
    h = make_harness()
    bar_type = BarType.from_str("BTCUSDT.BINANCE-2-MINUTE-LAST-EXTERNAL")

    response = await h.request_bars(bar_type, DAY, datetime(2024, 1, 2, 1, tzinfo=UTC))

    assert response.data == []
    assert h.logs.at("error") == [
        f"Cannot serve {bar_type} bars: Binance has no kline for 2-MINUTE-LAST ({bar_type}); "
        "use one of 1-MINUTE, 3-MINUTE, 5-MINUTE, 15-MINUTE, 30-MINUTE"
    ]
    assert h.srv.requests == []


async def test_request_bars_1s_futures_answers_empty(make_harness) -> None:
    h = make_harness()
    bar_type = BarType.from_str("BTCUSDT-PERP.BINANCE-1-SECOND-LAST-EXTERNAL")

    response = await h.request_bars(bar_type, DAY, datetime(2024, 1, 2, 1, tzinfo=UTC))

    assert response.data == []
    assert h.logs.at("error") == [
        f"Cannot serve {bar_type} bars: interval 1s is served on SPOT only, not FUTURES_USDT; "
        "use 1m or a longer interval for futures"
    ]
    assert h.srv.requests == []


async def test_request_bars_below_min_completeness_answers_empty(make_harness) -> None:
    h = make_harness()
    h.srv.faults.gaps.append(("BTCUSDT", DAY_MS + 10 * MIN_MS, DAY_MS + 40 * MIN_MS))

    response = await h.request_bars(SPOT_1M, DAY, datetime(2024, 1, 2, 1, tzinfo=UTC))

    assert response.data == []
    assert h.logs.at("error") == [
        f"Cannot serve {SPOT_1M} bars: BTCUSDT.BINANCE 1m "
        "2024-01-02T00:00:00Z..2024-01-02T01:00:00Z: completeness 50.00% (30 of 60 expected "
        "bars) is below min_completeness 95.00%; 1 gap(s), largest: "
        "2024-01-02T00:10:00Z..2024-01-02T00:40:00Z (30 bars); pass min_completeness=0.5 or "
        "on_low_quality='warn' to accept it (the fetched result is attached as .result)"
    ]


async def test_request_bars_low_quality_with_warn_serves_real_bars(make_harness) -> None:
    h = make_harness(on_low_quality="warn")
    h.srv.faults.gaps.append(("BTCUSDT", DAY_MS + 10 * MIN_MS, DAY_MS + 40 * MIN_MS))

    response = await h.request_bars(SPOT_1M, DAY, datetime(2024, 1, 2, 1, tzinfo=UTC))

    assert bar_rows(response.data) == expected_rows(
        h.srv, MarketType.SPOT, "BTCUSDT", Interval.MINUTE_1, DAY_MS, DAY_MS + 60 * MIN_MS
    )
    assert len(response.data) == 30
    assert h.logs.at("error") == []
    assert (
        f"{SPOT_1M}: 30/60 bars (50.0000%), gaps: "
        "2024-01-02T00:10:00Z..2024-01-02T00:40:00Z (30 bars)"
    ) in h.logs.at("warning")


async def test_request_bars_synthetic_fallback_fills_gaps_with_flat_bars(make_harness) -> None:
    h = make_harness(synthetic_fallback=True, min_completeness=0.0)
    h.srv.faults.gaps.append(("BTCUSDT", DAY_MS + 10 * MIN_MS, DAY_MS + 13 * MIN_MS))
    end = datetime(2024, 1, 2, 0, 20, tzinfo=UTC)

    response = await h.request_bars(SPOT_1M, DAY, end)

    bars = response.data
    assert [b.ts_event for b in bars] == [(DAY_MS + m * MIN_MS) * NS for m in range(1, 21)]
    real = expected_rows(h.srv, MarketType.SPOT, "BTCUSDT", Interval.MINUTE_1, DAY_MS, to_ms(end))
    assert len(real) == 17
    by_ts = {row[0]: row for row in bar_rows(bars)}
    assert all(by_ts[row[0]] == row for row in real)
    last_close = real[9][4]  # the close of the bar opening at minute 9
    for minute in (10, 11, 12):
        ts = (DAY_MS + (minute + 1) * MIN_MS) * NS
        assert by_ts[ts] == (ts, last_close, last_close, last_close, last_close, "0.00000000")
    warnings = [m for m in h.logs.at("warning") if "SYNTHETIC" in m]
    assert warnings == [
        f"{SPOT_1M}: 3 SYNTHETIC flat bars generated (no source has them): "
        "[2024-01-02T00:10:00Z, 2024-01-02T00:13:00Z) 3 missing"
    ]
    assert [m for m in h.logs.at("info") if "serving" in m] == [
        f"{SPOT_1M}: serving 20 bars [2024-01-02T00:00:00Z, 2024-01-02T00:20:00Z) "
        "sources={'cache': 0, 'vision': 17, 'rest': 0, 'synthetic': 3}"
    ]


async def test_request_instrument_coin_m_is_inverse(make_harness) -> None:
    h = make_harness()
    request = RequestInstrument(
        instrument_id=InstrumentId.from_str("BTCUSD-PERP.BINANCE"),
        start=None,
        end=None,
        client_id=CLIENT_ID,
        venue=BINANCE_VENUE,
        callback=None,
        request_id=UUID4(),
        ts_init=h.clock.timestamp_ns(),
        params=None,
    )

    h.client.request_instrument(request)
    response = await asyncio.wait_for(h.responses.get(), timeout=10)

    [instrument] = response.data
    assert instrument.is_inverse is True
    assert instrument.multiplier.as_decimal() == Decimal(100)


# ---------------------------------------------------------------------------------------------
# Live subscriptions
# ---------------------------------------------------------------------------------------------


async def test_subscribe_1s_bars_publishes_each_closed_bar_once_in_order(make_harness) -> None:
    h = make_harness()
    before_ms = h.clock.timestamp_ms()

    subscribe(h, SPOT_1S)
    await asyncio.gather(*list(h.client._tasks))  # the subscription is active
    after_ms = h.clock.timestamp_ms()
    bars, received = [], []
    for _ in range(3):
        bars.append(await h.next_bar())
        received.append(h.clock.timestamp_ns())

    # the first bar published is the one forming when the subscription became active
    first_open_ms = bars[0].ts_event // NS - 1_000
    assert Interval.SECOND_1.floor_ms(before_ms) <= first_open_ms <= after_ms
    assert_contiguous_closed_and_true(h, bars, received)
    assert h.logs.at("error") == []


async def test_outage_is_backfilled_in_order_without_gap_or_duplicate(make_harness) -> None:
    h = make_harness()
    subscribe(h, SPOT_1S)
    bars, received = [await h.next_bar()], [h.clock.timestamp_ns()]

    h.srv.pause()
    await asyncio.sleep(3.0)  # the outage itself (the scenario), not a synchronisation
    resumed_ms = h.srv.now_ms()
    h.srv.resume()
    while bars[-1].ts_event // NS < resumed_ms + 1_000:
        bars.append(await h.next_bar(timeout=20))
        received.append(h.clock.timestamp_ns())

    assert len(bars) >= 5
    assert_contiguous_closed_and_true(h, bars, received)
    paused = [b for b in bars if bars[0].ts_event < b.ts_event <= resumed_ms * NS]
    assert len(paused) >= 2  # bars that closed during the outage arrived, in order, once
    assert h.logs.at("error") == []


class FlakyDSM:
    """Proxies a DataSourceManager; ``fetch`` raises DataUnavailable while ``failures`` > 0."""

    def __init__(self, inner: DataSourceManager) -> None:
        self._inner = inner
        self.failures = 0
        self.failed = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def fetch(self, *args: Any, **kwargs: Any) -> Any:
        if self.failures > 0:
            self.failures -= 1
            if self.failures == 0:
                self.failed.set()
            raise DataUnavailable("REST down (test)")
        return await self._inner.fetch(*args, **kwargs)


async def test_source_errors_are_retried_with_backoff_then_backfilled(make_harness) -> None:
    h = make_harness(dsm_wrapper=FlakyDSM)
    flaky: FlakyDSM = h.client.dsm
    subscribe(h, SPOT_1S)
    bars, received = [await h.next_bar()], [h.clock.timestamp_ns()]

    flaky.failures = 5  # 0.1 + 0.2 + 0.4 + 0.8 + 1.6 s of backoff: bars close meanwhile
    await asyncio.wait_for(flaky.failed.wait(), timeout=10)
    failed_until_ms = h.clock.timestamp_ms()
    while bars[-1].ts_event // NS < failed_until_ms + 1_000:
        bars.append(await h.next_bar(timeout=10))
        received.append(h.clock.timestamp_ns())

    assert_contiguous_closed_and_true(h, bars, received)
    retries = [m for m in h.logs.at("warning") if "retrying in" in m]
    assert [m.split("attempt ")[1].split(",")[0] for m in retries] == ["1", "2", "3", "4", "5"]
    assert [m.split("retrying in ")[1].split("s;")[0] for m in retries] == [
        "0.10",
        "0.20",
        "0.40",
        "0.80",
        "1.60",
    ]
    assert retries[0].startswith(
        f"{SPOT_1S}: fetch failed (DataUnavailable: REST down (test)); attempt 1"
    )
    assert any("source back after 5 failed attempts" in m for m in h.logs.at("info"))
    assert any("(backfill)" in m for m in h.logs.at("info"))


class OffGridDSM:
    """Proxies a DataSourceManager; once armed, every fetch reaching the armed slot also
    returns a kline stamped ``offset_ms`` off the 1s grid inside that slot (a mis-stamped bar
    the source keeps serving)."""

    def __init__(self, inner: DataSourceManager) -> None:
        self._inner = inner
        self.slot_ms: int | None = None
        self.offset_ms = 500
        self.injected = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def fetch(self, *args: Any, **kwargs: Any) -> Any:
        result = await self._inner.fetch(*args, **kwargs)
        opens = result.frame["open_time"].dt.epoch("ms")
        if self.slot_ms is not None and self.slot_ms in opens.to_list():
            shift = pl.duration(milliseconds=self.offset_ms)
            bad = result.frame.filter(opens == self.slot_ms).with_columns(
                pl.col("open_time") + shift, pl.col("close_time") + shift
            )
            result.frame = pl.concat([result.frame, bad]).sort("open_time")
            self.injected.set()
        return result


async def test_live_kline_off_the_grid_is_skipped_not_retried(make_harness) -> None:
    h = make_harness(dsm_wrapper=OffGridDSM)
    source: OffGridDSM = h.client.dsm
    subscribe(h, SPOT_1S)
    bars, received = [await h.next_bar()], [h.clock.timestamp_ns()]
    slot_ms = bars[0].ts_event // NS  # the next bar's open
    source.slot_ms = slot_ms

    while bars[-1].ts_event // NS < slot_ms + 2_000:
        bars.append(await h.next_bar())
        received.append(h.clock.timestamp_ns())

    assert source.injected.is_set()
    assert_contiguous_closed_and_true(h, bars, received)  # the real bar of that slot is there
    bad_time = iso_ms(slot_ms + 500)
    [error] = h.logs.at("error")
    assert error.startswith(f"{SPOT_1S}: 1 of ")  # of the rows that poll returned
    assert error.endswith(f" klines cannot be bars and are skipped: {bad_time} (off the 1s grid)")
    assert [m for m in h.logs.at("warning") if "fetch failed" in m] == []


class UnconvertibleDSM(OffGridDSM):
    """Once armed, every fetch reaching the armed slot returns volumes as strings: a frame no
    retry can convert."""

    async def fetch(self, *args: Any, **kwargs: Any) -> Any:
        result = await self._inner.fetch(*args, **kwargs)
        opens = result.frame["open_time"].dt.epoch("ms").to_list()
        if self.slot_ms is not None and self.slot_ms in opens:
            result.frame = result.frame.with_columns(pl.col("volume").cast(pl.String))
            self.injected.set()
        return result


async def test_live_frame_that_cannot_convert_is_skipped_and_polling_goes_on(
    make_harness,
) -> None:
    h = make_harness(dsm_wrapper=UnconvertibleDSM)
    source: UnconvertibleDSM = h.client.dsm
    subscribe(h, SPOT_1S)
    bars = [await h.next_bar()]
    slot_ms = bars[0].ts_event // NS
    source.slot_ms = slot_ms

    after = await h.next_bar()

    [error] = h.logs.at("error")
    resume_iso = error.split("polling continues from ")[1]
    resume_ms = to_ms(datetime.fromisoformat(resume_iso))
    assert after.ts_event // NS - 1_000 == resume_ms > slot_ms  # next bar right after the skip
    skipped = (resume_ms - slot_ms) // 1_000
    first, last = from_iso(slot_ms), from_iso(resume_ms - 1_000)
    assert error == (
        f"{SPOT_1S}: {skipped} klines from {first} to {last} could not be published and are "
        "skipped (InvalidInput: column volume has dtype String; prices and volumes must be "
        "Decimal, float or integer: cast it first, e.g. "
        "pl.col('volume').cast(pl.Decimal(38, 8))); polling continues from "
        f"{from_iso(resume_ms)}"
    )
    assert [m for m in h.logs.at("warning") if "fetch failed" in m] == []


def from_iso(ms: int) -> str:
    return iso_ms(ms)


class InstrumentDownDSM:
    """Proxies a DataSourceManager; ``exchange_info`` raises SourceError ``failures`` times."""

    def __init__(self, inner: DataSourceManager) -> None:
        self._inner = inner
        self.failures = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def exchange_info(self, market_type: Any) -> dict:
        if self.failures > 0:
            self.failures -= 1
            raise SourceError("exchangeInfo down (test)")
        return await self._inner.exchange_info(market_type)


async def test_subscribe_while_instrument_lookup_fails_retries_then_delivers(
    make_harness,
) -> None:
    h = make_harness(dsm_wrapper=InstrumentDownDSM)
    h.client.dsm.failures = 3
    before_ms = h.clock.timestamp_ms()

    subscribe(h, SPOT_1S)
    await asyncio.gather(*list(h.client._tasks))
    bars, received = [await h.next_bar()], [h.clock.timestamp_ns()]
    bars.append(await h.next_bar())
    received.append(h.clock.timestamp_ns())

    # nothing missed: the first bar is the one forming when the subscription was made
    assert bars[0].ts_event // NS - 1_000 == Interval.SECOND_1.floor_ms(before_ms)
    assert_contiguous_closed_and_true(h, bars, received)
    lookups = [m for m in h.logs.at("warning") if "instrument lookup failed" in m]
    assert [m.split("; bars from")[0] for m in lookups] == [
        f"{SPOT_1S}: instrument lookup failed (SourceError: exchangeInfo down (test)); "
        f"attempt {n}, retrying in {s}s"
        for n, s in ((1, "0.10"), (2, "0.20"), (3, "0.40"))
    ]
    assert f"{SPOT_1S}: instrument resolved after 3 failed attempts" in h.logs.at("info")
    assert h.client.subscribed_bars() == [SPOT_1S]
    assert h.logs.at("error") == []


async def test_subscribe_unknown_symbol_ends_the_subscription(make_harness) -> None:
    h = make_harness()
    bar_type = BarType.from_str("FOOBARUSDT.BINANCE-1-SECOND-LAST-EXTERNAL")

    subscribe(h, bar_type)
    await asyncio.gather(*list(h.client._tasks))
    poller_task = h.client._pollers[bar_type].task
    await poller_task

    assert h.logs.at("error") == [
        f"Cannot subscribe to {bar_type}: FOOBARUSDT.BINANCE is not listed in the SPOT "
        "exchangeInfo (2 instruments); check the symbol, and that a SPOT instrument id is meant "
        "(e.g. BTCUSDT.BINANCE spot, BTCUSDT-PERP.BINANCE USDT-M, BTCUSD-PERP.BINANCE COIN-M)"
    ]
    assert h.client.subscribed_bars() == []
    assert h.client.poller_stats(bar_type) is None


async def test_unsubscribe_before_subscribe_ran_starts_no_poller(make_harness) -> None:
    h = make_harness()

    subscribe(h, SPOT_1S)
    await unsubscribe(h, SPOT_1S)  # both commands queued before either ran

    assert h.client.poller_stats(SPOT_1S) is None
    assert h.client.subscribed_bars() == []
    with pytest.raises(TimeoutError):
        await h.next_bar(timeout=1.6)  # past the next close + poll delay: nothing comes


async def _stream_across_gap(h: Harness) -> tuple[list[Bar], int, int]:
    """Subscribe; remove the forming bar and the next from the source; collect past the gap."""
    subscribe(h, SPOT_1S)
    bars = [await h.next_bar()]
    gap_start = bars[-1].ts_event // NS  # the open of the bar forming now
    gap_end = gap_start + 2_000
    h.srv.faults.gaps.append(("BTCUSDT", gap_start, gap_end))
    while bars[-1].ts_event // NS < gap_end + 1_000:
        bars.append(await h.next_bar())
    return bars, gap_start, gap_end


async def test_live_source_gap_publishes_real_bars_only_and_logs_error(make_harness) -> None:
    h = make_harness()

    bars, gap_start, gap_end = await _stream_across_gap(h)

    opens_ms = [b.ts_event // NS - 1_000 for b in bars]
    assert gap_start not in opens_ms and gap_start + 1_000 not in opens_ms
    assert opens_ms == sorted(set(opens_ms))  # in order, each once
    assert bar_rows(bars, live=True) == expected_rows(
        h.srv, MarketType.SPOT, "BTCUSDT", Interval.SECOND_1, opens_ms[0], opens_ms[-1] + 1_000
    )
    gap_iso = (iso_ms(gap_start), iso_ms(gap_end))
    assert h.logs.at("error") == [
        f"{SPOT_1S}: the source has no bars for 2 of 3 open times (33.33% < min_completeness): "
        f"[{gap_iso[0]}, {gap_iso[1]}) 2 missing"
    ]


async def test_live_source_gap_with_synthetic_fallback_is_filled_flat(make_harness) -> None:
    h = make_harness(synthetic_fallback=True)

    bars, gap_start, gap_end = await _stream_across_gap(h)

    opens_ms = [b.ts_event // NS - 1_000 for b in bars]
    assert opens_ms == [opens_ms[0] + 1_000 * i for i in range(len(opens_ms))]
    by_open = dict(zip(opens_ms, bars, strict=True))
    before = by_open[gap_start - 1_000]
    for open_ms in (gap_start, gap_start + 1_000):
        bar = by_open[open_ms]
        assert (bar.open, bar.high, bar.low, bar.close) == (before.close,) * 4
        assert str(bar.volume) == "0.00000000"
    real = [b for o, b in by_open.items() if not gap_start <= o < gap_end]
    real_opens = [o for o in opens_ms if not gap_start <= o < gap_end]
    truth = expected_rows(
        h.srv, MarketType.SPOT, "BTCUSDT", Interval.SECOND_1, opens_ms[0], opens_ms[-1] + 1_000
    )
    assert bar_rows(real, live=True) == truth
    assert [r[0] // NS - 1_000 for r in truth] == real_opens
    assert h.client.poller_stats(SPOT_1S)["synthetic"] == 2
    assert [m for m in h.logs.at("warning") if "SYNTHETIC" in m] == [
        f"{SPOT_1S}: 2 SYNTHETIC flat bars generated (no source has them): "
        f"[{iso_ms(gap_start)}, {iso_ms(gap_end)}) 2 missing"
    ]


async def test_unsubscribe_stops_publication(make_harness) -> None:
    h = make_harness()
    subscribe(h, SPOT_1S)
    await h.next_bar()

    await unsubscribe(h, SPOT_1S)

    assert h.client.poller_stats(SPOT_1S) is None
    while not h.published.empty():  # a bar published before the unsubscribe took effect
        h.published.get_nowait()
    with pytest.raises(TimeoutError):
        await h.next_bar(timeout=1.6)  # past the next close + poll delay: nothing comes


async def test_subscribe_two_minute_bars_logs_error_naming_the_fix(make_harness) -> None:
    h = make_harness()
    bar_type = BarType.from_str("BTCUSDT.BINANCE-2-MINUTE-LAST-EXTERNAL")

    subscribe(h, bar_type)
    await asyncio.gather(*list(h.client._tasks))

    errors = h.logs.at("error")
    assert len(errors) == 1
    assert errors[0].startswith(f"Cannot subscribe to {bar_type}: ")
    assert h.client.poller_stats(bar_type) is None


# ---------------------------------------------------------------------------------------------
# Synchronous mode: BacktestNode download engine (each coroutine under its own asyncio.run)
# ---------------------------------------------------------------------------------------------


def test_download_engine_drives_the_client_synchronously(imitation: Any, tmp_path: Path) -> None:
    from nautilus_trader.backtest.node import BacktestNode
    from nautilus_trader.common.config import ImportableFactoryConfig
    from nautilus_trader.config import DataCatalogConfig, ImportableConfig
    from nautilus_trader.persistence.catalog import ParquetDataCatalog

    node = BacktestNode(configs=[])
    node.setup_download_engine(
        DataCatalogConfig(path=str(tmp_path / "catalog")),
        {
            "DSM": ImportableConfig(
                path="nautilus_dsm.config:DSMDataClientConfig",
                factory=ImportableFactoryConfig(
                    path="nautilus_dsm.factories:DSMLiveDataClientFactory"
                ),
                config={
                    "base_url_http": imitation.url,
                    "base_url_vision": imitation.url,
                    "cache_dir": str(tmp_path / "cache"),
                },
            )
        },
    )
    client = node._engines["download"].kernel.data_engine._clients[CLIENT_ID]
    open_after: list[tuple[int, int]] = []
    try:
        # Two requests = two event loops: nothing may stay bound to the first one.
        for hour in (0, 1):
            node.download_data(
                "request_bars",
                bar_type=SPOT_1M,
                start=pd.Timestamp(datetime(2024, 1, 2, hour, tzinfo=UTC)),
                end=pd.Timestamp(datetime(2024, 1, 2, hour + 1, tzinfo=UTC)),
                client_id=CLIENT_ID,
            )
            # the request's loop has ended: its HTTP clients were closed with it
            open_after.append((len(client.dsm._rest), len(client.dsm._vision)))
    finally:
        node.dispose()

    assert client._is_sync is True
    assert open_after == [(0, 0), (0, 0)]

    bars = ParquetDataCatalog(str(tmp_path / "catalog")).bars([str(SPOT_1M)])
    assert len(bars) == 120
    assert bar_rows(bars) == expected_rows(
        imitation, MarketType.SPOT, "BTCUSDT", Interval.MINUTE_1, DAY_MS, DAY_MS + 120 * MIN_MS
    )


class HaltedSpotDSM:
    """Proxies a DataSourceManager whose spot exchangeInfo says every symbol is HALTed."""

    def __init__(self, inner: DataSourceManager) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def exchange_info(self, market_type: Any) -> dict:
        info = await self._inner.exchange_info(market_type)
        if MarketType.parse(market_type) is not MarketType.SPOT:
            return info
        symbols = [{**s, "status": "HALT"} for s in info["symbols"]]
        return {**info, "symbols": symbols}


async def test_history_of_a_listed_symbol_that_no_longer_trades_is_served(make_harness) -> None:
    h = make_harness(dsm_wrapper=HaltedSpotDSM)
    start, end = DAY, datetime(2024, 1, 2, 1, tzinfo=UTC)

    response = await h.request_bars(SPOT_1M, start, end)

    assert bar_rows(response.data) == expected_rows(
        h.srv, MarketType.SPOT, "BTCUSDT", Interval.MINUTE_1, DAY_MS, DAY_MS + 60 * MIN_MS
    )
    assert h.cache.instrument(SPOT_1M.instrument_id).info["status"] == "HALT"


async def test_subscribe_after_history_of_a_non_trading_symbol_is_refused(make_harness) -> None:
    h = make_harness(dsm_wrapper=HaltedSpotDSM)
    await h.request_bars(SPOT_1M, DAY, datetime(2024, 1, 2, 1, tzinfo=UTC))
    assert h.cache.instrument(SPOT_1M.instrument_id) is not None  # loaded for the history

    subscribe(h, SPOT_1M)
    await asyncio.gather(*list(h.client._tasks))

    assert h.logs.at("error") == [
        f"Cannot subscribe to {SPOT_1M}: BTCUSDT.BINANCE has status 'HALT' on Binance, not "
        "TRADING: it has no live klines, only its history is available (request_bars)"
    ]
    assert h.client.poller_stats(SPOT_1M) is None
    assert h.client.subscribed_bars() == []


async def test_subscribe_non_trading_symbol_found_by_the_provider_is_refused(
    make_harness,
) -> None:
    h = make_harness(dsm_wrapper=HaltedSpotDSM)
    provider: DSMInstrumentProvider = h.client._instrument_provider
    await provider.instrument_for(SPOT_1M.instrument_id, include_non_trading=True)
    assert h.cache.instrument(SPOT_1M.instrument_id) is None  # the poller looks it up

    subscribe(h, SPOT_1M)
    await asyncio.gather(*list(h.client._tasks))
    poller = h.client._pollers.get(SPOT_1M)
    if poller is not None:
        await poller.task

    assert h.logs.at("error") == [
        f"Cannot subscribe to {SPOT_1M}: BTCUSDT.BINANCE has status 'HALT' on Binance, not "
        "TRADING: it has no live klines, only its history is available (request_bars)"
    ]
    assert h.client.poller_stats(SPOT_1M) is None
    assert h.client.subscribed_bars() == []


def test_engine_settings_are_read_from_the_source_config(cache_dir: Path) -> None:
    loop = asyncio.new_event_loop()
    try:
        clock = LiveClock()
        source = DSMSourceConfig(
            market_type="futures_coin", cache_dir=str(cache_dir), on_low_quality="warn"
        )
        config = DSMDataClientConfig(source=source)
        dsm = DataSourceManager.from_config(source)
        provider = DSMInstrumentProvider(dsm.exchange_info, config.instrument_provider, clock)
        msgbus = MessageBus(TraderId("TESTER-001"), clock)

        client = DSMDataClient(loop, dsm, msgbus, Cache(), clock, provider, config)

        # the keywords keep their defaults (market_type=None, on_low_quality="raise")
        assert client._source == source
        assert client._market_type is MarketType.FUTURES_COIN
        loop.run_until_complete(client._disconnect())
    finally:
        loop.close()


def test_refused_configuration_holds_no_manager(cache_dir: Path) -> None:
    loop = asyncio.new_event_loop()
    try:
        clock = LiveClock()
        config = DSMDataClientConfig(cache_dir=str(cache_dir), poll_delay_ms=-1)
        dsm = DataSourceManager.create("binance", cache_dir=config.cache_dir)
        provider = DSMInstrumentProvider(dsm.exchange_info, config.instrument_provider, clock)
        msgbus = MessageBus(TraderId("TESTER-001"), clock)

        with pytest.raises(InvalidInput) as refused:
            DSMDataClient(loop, dsm, msgbus, Cache(), clock, provider, config)

        assert str(refused.value) == "poll_delay_ms=-1 is negative; pass e.g. 250"
        assert dsm_holders(dsm) == 0
        # a valid client holds it, so the failed one above would have been counted too
        client = DSMDataClient(
            loop,
            dsm,
            msgbus,
            Cache(),
            clock,
            provider,
            DSMDataClientConfig(cache_dir=str(cache_dir)),
        )
        assert dsm_holders(dsm) == 1
        loop.run_until_complete(client._disconnect())
        assert dsm_holders(dsm) == 0
    finally:
        loop.close()
