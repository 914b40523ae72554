"""The live-client harness shared by the integration tests.

A ``DSMDataClient`` on a real ``LiveClock``, ``MessageBus`` and ``Cache`` against the Binance
imitation: the harness registers the two endpoints the client talks to (``DataEngine.process``
for published data, ``DataEngine.response`` for request answers) and records every message the
client logs, so each test asserts exactly what was answered, published and logged.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
import pytest
from nautilus_trader.cache.cache import Cache
from nautilus_trader.common.component import LiveClock, MessageBus
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.data.messages import DataResponse, RequestBars, SubscribeBars, UnsubscribeBars
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.model.identifiers import ClientId, TraderId

from nautilus_dsm.common import Interval, MarketType
from nautilus_dsm.config import DSMDataClientConfig
from nautilus_dsm.data import BINANCE_VENUE, DSMDataClient
from nautilus_dsm.dsm.manager import DataSourceManager
from nautilus_dsm.providers import DSMInstrumentProvider

CLIENT_ID = ClientId("DSM")
SPOT_1M = BarType.from_str("BTCUSDT.BINANCE-1-MINUTE-LAST-EXTERNAL")
SPOT_1S = BarType.from_str("BTCUSDT.BINANCE-1-SECOND-LAST-EXTERNAL")
NS = 1_000_000


class RecordingLogger:
    """Forwards to the client's Nautilus logger and keeps ``(level, message)`` for asserts."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.records: list[tuple[str, str]] = []
        # Called with every (level, message) (tests await a log line as an event).
        self.on_log: Callable[[str, str], None] | None = None

    def _log(self, level: str, message: str, *args: Any) -> None:
        self.records.append((level, message))
        getattr(self._inner, level)(message, *args)
        if self.on_log is not None:
            self.on_log(level, message)

    def debug(self, message: str, *args: Any) -> None:
        self._log("debug", message, *args)

    def info(self, message: str, *args: Any) -> None:
        self._log("info", message, *args)

    def warning(self, message: str, *args: Any) -> None:
        self._log("warning", message, *args)

    def error(self, message: str, *args: Any) -> None:
        self._log("error", message, *args)

    def exception(self, message: str, ex: BaseException) -> None:
        self._log("exception", message, ex)

    def at(self, level: str) -> list[str]:
        return [m for lv, m in self.records if lv == level]


@dataclass
class Harness:
    client: DSMDataClient
    cache: Cache
    clock: LiveClock
    srv: Any
    logs: RecordingLogger
    published: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    responses: asyncio.Queue[DataResponse] = field(default_factory=asyncio.Queue)

    async def request_bars(
        self,
        bar_type: BarType,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int = 0,
    ) -> DataResponse:
        """Send a request through the public API; return its single answer (asserted single)."""
        request = RequestBars(
            bar_type=bar_type,
            start=pd.Timestamp(start) if start is not None else None,
            end=pd.Timestamp(end) if end is not None else None,
            limit=limit,
            client_id=CLIENT_ID,
            venue=BINANCE_VENUE,
            callback=None,
            request_id=UUID4(),
            ts_init=self.clock.timestamp_ns(),
            params=None,
        )
        self.client.request_bars(request)
        response = await asyncio.wait_for(self.responses.get(), timeout=30)
        await asyncio.gather(*list(self.client._tasks))  # the request task has finished ...
        assert self.responses.empty()  # ... and answered exactly once
        assert response.correlation_id == request.id
        return response

    async def next_bar(self, timeout: float = 10.0) -> Bar:
        while True:
            item = await asyncio.wait_for(self.published.get(), timeout=timeout)
            if isinstance(item, Bar):
                return item


def build_harness(
    srv: Any,
    cache_dir: Path,
    dsm_wrapper: Callable[[Any], Any] | None = None,
    **overrides: Any,
) -> Harness:
    """A client on a real LiveClock, MessageBus and Cache against ``srv``, capturing what it
    publishes and answers (shared by every live-client test module)."""
    loop = asyncio.get_running_loop()
    clock = LiveClock()
    msgbus = MessageBus(TraderId("TESTER-001"), clock)
    cache = Cache()
    settings: dict[str, Any] = {
        "base_url_http": srv.url,
        "base_url_vision": srv.url,
        "cache_dir": str(cache_dir),
        "poll_delay_ms": 20,
        "live_source": "rest",  # the REST poller's tests; stream tests pass "websocket"
        "health_interval_s": 0,
    }
    settings.update(overrides)
    if settings["live_source"] == "websocket" and "base_url_ws" not in settings:
        settings["base_url_ws"] = srv.ws_url + "/{market}/ws"
    config = DSMDataClientConfig(**settings)
    dsm = DataSourceManager.from_config(config.source_config())
    if dsm_wrapper is not None:
        dsm = dsm_wrapper(dsm)
    provider = DSMInstrumentProvider(dsm.exchange_info, config.instrument_provider, clock)
    client = DSMDataClient(loop, dsm, msgbus, cache, clock, provider, config)
    logs = RecordingLogger(client._logger)
    client._logger = logs
    harness = Harness(client, cache, clock, srv, logs)
    msgbus.register("DataEngine.process", harness.published.put_nowait)
    msgbus.register("DataEngine.response", harness.responses.put_nowait)
    return harness


@pytest.fixture
async def make_harness(imitation: Any, cache_dir: Path) -> AsyncIterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(dsm_wrapper: Callable[[Any], Any] | None = None, **overrides: Any) -> Harness:
        harness = build_harness(imitation, cache_dir, dsm_wrapper, **overrides)
        made.append(harness)
        return harness

    yield make
    for harness in made:
        await harness.client._disconnect()


def expected_rows(
    srv: Any, market: MarketType, symbol: str, interval: Interval, start_ms: int, end_ms: int
) -> list[tuple[int, str, str, str, str, str]]:
    """The imitation's truth as ``(ts_close_ns, o, h, l, c, v)`` at 8 decimals (spot BTCUSDT)."""
    frame = srv.expected(market, symbol, interval, start_ms, end_ms)
    step = interval.fixed_ms
    return [
        (
            (r["open_time_ms"] + step) * NS,
            *(f"{r[c]:.8f}" for c in ("open", "high", "low", "close", "volume")),
        )
        for r in frame.with_columns(
            pl.col("open_time").dt.epoch("ms").alias("open_time_ms")
        ).iter_rows(named=True)
    ]


def bar_rows(bars: list[Bar], live: bool = False) -> list[tuple[int, str, str, str, str, str]]:
    """``(ts_event, o, h, l, c, v)`` of ``bars``; history bars must have ``ts_init == ts_event``
    (live bars carry their receipt time, checked by the live tests)."""
    for bar in bars:
        if not live:
            assert bar.ts_event == bar.ts_init
        assert type(bar) is Bar
    return [
        (b.ts_event, str(b.open), str(b.high), str(b.low), str(b.close), str(b.volume))
        for b in bars
    ]


def subscribe(h: Harness, bar_type: BarType) -> None:
    h.client.subscribe_bars(
        SubscribeBars(
            bar_type=bar_type,
            client_id=CLIENT_ID,
            venue=BINANCE_VENUE,
            command_id=UUID4(),
            ts_init=h.clock.timestamp_ns(),
        )
    )


async def unsubscribe(h: Harness, bar_type: BarType) -> None:
    h.client.unsubscribe_bars(
        UnsubscribeBars(
            bar_type=bar_type,
            client_id=CLIENT_ID,
            venue=BINANCE_VENUE,
            command_id=UUID4(),
            ts_init=h.clock.timestamp_ns(),
        )
    )
    await asyncio.gather(*list(h.client._tasks))


def assert_contiguous_closed_and_true(h: Harness, bars: list[Bar], received_ns: list[int]) -> None:
    step_ns = 1_000 * NS
    opens_ms = [b.ts_event // NS - 1_000 for b in bars]
    assert [b.ts_event for b in bars] == [bars[0].ts_event + i * step_ns for i in range(len(bars))]
    assert all(b.ts_event <= t for b, t in zip(bars, received_ns, strict=True))  # none forming
    assert bar_rows(bars, live=True) == expected_rows(
        h.srv, MarketType.SPOT, "BTCUSDT", Interval.SECOND_1, opens_ms[0], opens_ms[-1] + 1_000
    )
