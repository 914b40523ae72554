"""Benchmark: live bar latency, from a bar's close to its publication by ``DSMDataClient``.

Run: ``uv run python benchmarks/live_latency.py [--bars 60]`` (offline; ``--bars`` seconds + ~3 s).

Two real ``DSMDataClient`` (real ``LiveClock``, ``MessageBus`` and ``Cache``, the harness of
``tests/integration/test_data_client.py``) subscribe to ``BTCUSDT.BINANCE-1-SECOND-LAST-
EXTERNAL`` side by side on one event loop against the Binance imitation, which runs in its own
process (``python -m nautilus_dsm.testing``) with the wall clock, so a bar closes at its
``ts_event`` exactly as it would on Binance:

- ``poll_delay_ms=250``: the default, which leaves Binance time to close the kline;
- ``poll_delay_ms=0``: the floor, i.e. what the client itself costs.

Delay = wall clock (``time.time_ns``) when the bar reaches ``DataEngine.process`` (the endpoint
``_handle_data`` sends to) minus its ``ts_event`` (the close). Median and p99 over ``--bars``
bars per client; target: <= 300 ms with the default. Every bar must be published once, in
order, without gaps, and equal the imitation's truth.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import tempfile
import time
from dataclasses import dataclass, field

from _common import imitation_process
from nautilus_trader.cache.cache import Cache
from nautilus_trader.common.component import LiveClock, MessageBus
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.data.messages import SubscribeBars
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.model.identifiers import ClientId, TraderId

from nautilus_dsm.bars import frame_to_bars
from nautilus_dsm.common import MarketType
from nautilus_dsm.config import DSMDataClientConfig
from nautilus_dsm.data import BINANCE_VENUE, DSMDataClient
from nautilus_dsm.dsm.manager import DataSourceManager
from nautilus_dsm.providers import DSMInstrumentProvider
from nautilus_dsm.testing import BinanceImitation

BAR_TYPE = BarType.from_str("BTCUSDT.BINANCE-1-SECOND-LAST-EXTERNAL")
TARGET_MS = 300.0
NS_PER_MS = 1_000_000


@dataclass
class Run:
    """One client under test and what it published: ``(received_ns, bar)``."""

    name: str
    poll_delay_ms: int
    client: DSMDataClient
    wanted: int
    received: list[tuple[int, Bar]] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def on_data(self, item: object) -> None:
        now_ns = time.time_ns()
        if isinstance(item, Bar) and not self.done.is_set():
            self.received.append((now_ns, item))
            if len(self.received) >= self.wanted:
                self.done.set()

    def delays_ms(self) -> list[float]:
        return [(t - bar.ts_event) / NS_PER_MS for t, bar in self.received]


def make_run(name: str, url: str, cache_dir: str, poll_delay_ms: int, bars: int) -> Run:
    loop = asyncio.get_running_loop()
    clock = LiveClock()
    msgbus = MessageBus(TraderId(f"BENCH-{poll_delay_ms:03d}"), clock)
    cache = Cache()
    config = DSMDataClientConfig(
        base_url_http=url, base_url_vision=url, cache_dir=cache_dir, poll_delay_ms=poll_delay_ms
    )
    dsm = DataSourceManager.create(
        "binance", base_url_http=url, base_url_vision=url, cache_dir=cache_dir
    )
    provider = DSMInstrumentProvider(dsm.exchange_info, config.instrument_provider, clock)
    client = DSMDataClient(loop, dsm, msgbus, cache, clock, provider, config, name=name)
    run = Run(name, poll_delay_ms, client, bars)
    msgbus.register("DataEngine.process", run.on_data)
    msgbus.register("DataEngine.response", lambda _: None)
    return run


def subscribe(run: Run) -> None:
    run.client.subscribe_bars(
        SubscribeBars(
            bar_type=BAR_TYPE,
            client_id=ClientId(run.name),
            venue=BINANCE_VENUE,
            command_id=UUID4(),
            ts_init=LiveClock().timestamp_ns(),
        )
    )


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (p99 of 60 values is the 60th smallest, i.e. the maximum)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def check_exact(run: Run, truth_srv: BinanceImitation) -> None:
    """Published once each, in order, gapless, none before its close, equal to the truth."""
    bars = [bar for _, bar in run.received]
    step_ns = 1_000 * NS_PER_MS
    if [b.ts_event for b in bars] != [bars[0].ts_event + i * step_ns for i in range(len(bars))]:
        raise AssertionError(f"{run.name}: bars are not contiguous, ordered 1 s bars")
    if any(t < b.ts_event for t, b in run.received):
        raise AssertionError(f"{run.name}: a bar was published before its close")
    first_open_ms = bars[0].ts_event // NS_PER_MS - 1_000
    last_open_ms = bars[-1].ts_event // NS_PER_MS - 1_000
    truth = truth_srv.expected(MarketType.SPOT, "BTCUSDT", "1s", first_open_ms, last_open_ms + 1)
    instrument = run.client._cache.instrument(BAR_TYPE.instrument_id)
    if instrument is None:
        instrument = run.client._instrument_provider.find(BAR_TYPE.instrument_id)
    if bars != frame_to_bars(truth, BAR_TYPE, instrument):
        raise AssertionError(f"{run.name}: published bars differ from the imitation's truth")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=60, help="bars per client (one per second)")
    args = parser.parse_args()
    truth_srv = BinanceImitation()  # not started: only its deterministic source truth is used
    print(f"\n== Live latency: {BAR_TYPE}, {args.bars} bars per client, 2 clients side by side ==")
    with imitation_process() as url, tempfile.TemporaryDirectory() as tmp:
        runs = [
            make_run("DSM-DEFAULT", url, f"{tmp}/a", 250, args.bars),
            make_run("DSM-NODELAY", url, f"{tmp}/b", 0, args.bars),
        ]
        try:
            for run in runs:
                subscribe(run)
            timeout = args.bars + 30
            await asyncio.wait_for(
                asyncio.gather(*(run.done.wait() for run in runs)), timeout=timeout
            )
        finally:
            for run in runs:
                await run.client._disconnect()
        for run in runs:
            check_exact(run, truth_srv)

    results = {}
    for run in runs:
        delays = run.delays_ms()
        med, p99 = statistics.median(delays), percentile(delays, 99)
        results[run.poll_delay_ms] = (med, p99)
        print(
            f"poll_delay_ms={run.poll_delay_ms:>3}: median {med:6.1f} ms, p99 {p99:6.1f} ms, "
            f"min {min(delays):6.1f} ms, max {max(delays):6.1f} ms over {len(delays)} bars"
        )
    med, p99 = results[250]
    floor_med = results[0][0]
    print(
        f"default config: median {med:.1f} ms / p99 {p99:.1f} ms vs target <= {TARGET_MS:.0f} ms: "
        f"{'MET' if p99 <= TARGET_MS else 'MISSED'} (median/target {med / TARGET_MS:.2f}, "
        f"p99/target {p99 / TARGET_MS:.2f}); client's own cost (poll_delay 0): median "
        f"{floor_med:.1f} ms; exact checks (once, in order, gapless, equal to truth): OK"
    )


if __name__ == "__main__":
    asyncio.run(main())
