"""Benchmark: live bars, close -> on_bar, websocket streams vs REST polling, and 200 streams.

Run: ``uv run python benchmarks/live_latency.py [--duration 120] [--part both|side|200]``
(offline; each part runs ``--duration`` seconds, aligned so it spans at least one minute close).

The imitation runs in its own process (``python -m nautilus_dsm.testing --ws
--closed-on-cadence --symbols 98 --control``) on the wall clock, pushing klines on Binance's
cadence (250 ms futures, 1 s spot 1s) with the closed message on the first push tick after the
close, as Binance does: a futures bar's closed message is 0..250 ms late by itself (~125 ms
mean). Clients are real ``DSMDataClient`` (real ``LiveClock``, ``MessageBus``, ``Cache``) on one
event loop; delay = ``time.time_ns()`` when the bar reaches ``DataEngine.process`` (what
``on_bar`` gets next) minus ``ts_event`` (the close).

1. **Side by side**: ``live_source="websocket"`` (default) vs ``"rest"`` (``poll_delay_ms=250``)
   on the same bar types at once: spot ``BTCUSDT`` 1s and 20 USD-M perpetuals 1m. Targets:
   futures websocket p50 <= 200 ms; REST p50 <= poll delay + 50 ms.
2. **200 subscriptions** on one websocket client: 100 spot 1s + 100 USD-M 1m. Reported: 429/418
   answers seen by the imitation (must be zero), REST weight per minute, bars late (reconciled
   by REST), latency, peak RSS of this process.

Every bar must be published once, in order, without gaps, equal to the imitation's final kline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from nautilus_trader.cache.cache import Cache
from nautilus_trader.common.component import LiveClock, MessageBus
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.data.messages import SubscribeBars
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.model.identifiers import ClientId, TraderId

from nautilus_dsm.common import MarketType
from nautilus_dsm.config import DSMDataClientConfig, DSMInstrumentProviderConfig
from nautilus_dsm.data import BINANCE_VENUE, DSMDataClient
from nautilus_dsm.dsm.manager import DataSourceManager
from nautilus_dsm.providers import DSMInstrumentProvider
from nautilus_dsm.testing import BinanceImitation
from nautilus_dsm.testing.__main__ import extra_symbols

NS_PER_MS = 1_000_000
EXTRA = 98  # + BTCUSDT and ETHUSDT = 100 symbols per market
POLL_DELAY_MS = 250


def symbols() -> list[str]:
    return ["BTCUSDT", "ETHUSDT"] + [f"S{i:03d}USDT" for i in range(1, EXTRA + 1)]


def spot_1s(symbol: str) -> BarType:
    return BarType.from_str(f"{symbol}.BINANCE-1-SECOND-LAST-EXTERNAL")


def perp_1m(symbol: str) -> BarType:
    return BarType.from_str(f"{symbol}-PERP.BINANCE-1-MINUTE-LAST-EXTERNAL")


class Imitation:
    """The imitation in a child process, with ``stats()`` over its stdin/stdout."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "nautilus_dsm.testing", "--ws", "--closed-on-cadence"),
                *("--symbols", str(EXTRA), "--control"),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self.url = self.proc.stdout.readline().strip()
        self.ws_url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"the imitation did not start (printed {self.url!r})")

    def stats(self) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


@dataclass
class Run:
    """One client under test and what it published: ``(received_ns, bar)`` per bar type."""

    name: str
    client: DSMDataClient
    received: dict[BarType, list[tuple[int, Bar]]] = field(
        default_factory=lambda: defaultdict(list)
    )

    def on_data(self, item: object) -> None:
        now_ns = time.time_ns()
        if isinstance(item, Bar):
            self.received[item.bar_type].append((now_ns, item))

    def delays_ms(self, market: MarketType, *, in_client: bool = False) -> list[float]:
        """Close -> on_bar (or, ``in_client``, receipt -> on_bar: what the client adds)."""
        futures = market is MarketType.FUTURES_USDT
        return [
            (t - (bar.ts_init if in_client else bar.ts_event)) / NS_PER_MS
            for bar_type, got in self.received.items()
            if bar_type.instrument_id.symbol.value.endswith("-PERP") == futures
            for t, bar in got
        ]


def make_run(
    name: str, srv: Imitation, cache_dir: str, live_source: str, bar_types: list[BarType]
) -> Run:
    loop = asyncio.get_running_loop()
    clock = LiveClock()
    msgbus = MessageBus(TraderId("BENCH-001"), clock)
    config = DSMDataClientConfig(
        base_url_http=srv.url,
        base_url_vision=srv.url,
        base_url_ws=srv.ws_url + "/{market}/ws",
        cache_dir=cache_dir,
        poll_delay_ms=POLL_DELAY_MS,
        live_source=live_source,
        health_interval_s=0,
        # As a node does: the instruments are loaded at connect, not by each subscription.
        instrument_provider=DSMInstrumentProviderConfig(
            load_ids=frozenset(str(b.instrument_id) for b in bar_types)
        ),
    )
    dsm = DataSourceManager.from_config(config.source_config())
    provider = DSMInstrumentProvider(dsm.exchange_info, config.instrument_provider, clock)
    client = DSMDataClient(loop, dsm, msgbus, Cache(), clock, provider, config, name=name)
    run = Run(name, client)
    msgbus.register("DataEngine.process", run.on_data)
    msgbus.register("DataEngine.response", lambda _: None)
    return run


def subscribe(run: Run, bar_type: BarType) -> None:
    run.client.subscribe_bars(
        SubscribeBars(
            bar_type=bar_type,
            client_id=ClientId(run.name),
            venue=BINANCE_VENUE,
            command_id=UUID4(),
            ts_init=LiveClock().timestamp_ns(),
        )
    )


class LoopLag:
    """How late a 50 ms sleep of the benchmark's event loop wakes (a saturated client lags)."""

    def __init__(self) -> None:
        self.lags_ms: list[float] = []
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(0.05)
            self.lags_ms.append((time.perf_counter() - start - 0.05) * 1000)

    def stop(self) -> str:
        self._task.cancel()
        lags = self.lags_ms or [0.0]
        return f"event-loop lag p50 {statistics.median(lags):.1f} ms, max {max(lags):.1f} ms"


def steady(run: Run, market: MarketType, after_ns: int) -> list[float]:
    """Close -> on_bar of the bars closing after ``after_ns`` (past the start-up)."""
    futures = market is MarketType.FUTURES_USDT
    return [
        (t - bar.ts_event) / NS_PER_MS
        for bar_type, got in run.received.items()
        if bar_type.instrument_id.symbol.value.endswith("-PERP") == futures
        for t, bar in got
        if bar.ts_event > after_ns
    ]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def check_exact(run: Run, truth: BinanceImitation) -> int:
    """Each bar type: once, in order, gapless, none before its close, equal to the truth."""
    checked = 0
    for bar_type, got in run.received.items():
        bars = [b for _, b in got]
        futures = bar_type.instrument_id.symbol.value.endswith("-PERP")
        market = MarketType.FUTURES_USDT if futures else MarketType.SPOT
        step_ms = 60_000 if futures else 1_000
        closes = [b.ts_event // NS_PER_MS for b in bars]
        if closes != list(range(closes[0], closes[-1] + 1, step_ms)):
            raise AssertionError(f"{run.name} {bar_type}: bars not contiguous and ordered")
        if any(t < b.ts_event for t, b in got):
            raise AssertionError(f"{run.name} {bar_type}: a bar published before its close")
        symbol = bar_type.instrument_id.symbol.value.removesuffix("-PERP")
        frame = truth.expected(
            market, symbol, "1m" if futures else "1s", closes[0] - step_ms, closes[-1] - step_ms + 1
        )
        fields = ("open", "high", "low", "close", "volume")
        want = [tuple(_dec(r[f]) for f in fields) for r in frame.iter_rows(named=True)]
        have = [tuple(_dec(getattr(b, f)) for f in fields) for b in bars]
        if have != want:
            raise AssertionError(f"{run.name} {bar_type}: bars differ from the final klines")
        checked += len(bars)
    return checked


def _dec(value: object) -> Decimal:
    return Decimal(str(value)).normalize()


def peak_rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def align_to_minute(duration_s: float) -> None:
    """Start so that the run spans a minute close with 8 s to spare (1m bars need one)."""
    start_second = 68 - duration_s  # the boundary falls 8 s before the end
    if start_second < 0:
        return
    wait = (start_second - time.time() % 60) % 60
    print(f"  (waiting {wait:.0f} s so that the run spans a minute close)")
    await asyncio.sleep(wait)


def report_latency(runs: list[Run]) -> None:
    for market, label in ((MarketType.SPOT, "spot 1s"), (MarketType.FUTURES_USDT, "USD-M 1m")):
        row = []
        for run in runs:
            d = run.delays_ms(market)
            if d:
                row.append(
                    f"{run.name}: p50 {statistics.median(d):6.1f} ms p99 {percentile(d, 99):6.1f}"
                    f" ms (n={len(d)})"
                )
        print(f"  {label:<9} " + " | ".join(row))


async def side_by_side(duration_s: float, tmp: str, truth: BinanceImitation) -> None:
    print(f"\n== 1. websocket vs REST poll, side by side, {duration_s:.0f} s ==")
    # One imitation process per client: neither client's traffic slows the other's server.
    servers = [Imitation(), Imitation()]
    bar_types = [spot_1s("BTCUSDT")] + [perp_1m(s) for s in symbols()[:20]]
    ws = make_run("WS", servers[0], f"{tmp}/ws", "websocket", bar_types)
    rest = make_run("REST", servers[1], f"{tmp}/rest", "rest", bar_types)
    try:
        for run in (ws, rest):
            await run.client._connect()
        await align_to_minute(duration_s)
        for run in (ws, rest):
            for bar_type in bar_types:
                subscribe(run, bar_type)
        await asyncio.sleep(duration_s)
    finally:
        for run in (ws, rest):
            await run.client._disconnect()
        for srv in servers:
            srv.stop()
    checked = sum(check_exact(run, truth) for run in (ws, rest))
    report_latency([ws, rest])
    fut_ws = statistics.median(ws.delays_ms(MarketType.FUTURES_USDT) or [math.inf])
    spot_ws = statistics.median(ws.delays_ms(MarketType.SPOT) or [math.inf])
    spot_rest = statistics.median(rest.delays_ms(MarketType.SPOT) or [math.inf])
    fut_rest = statistics.median(rest.delays_ms(MarketType.FUTURES_USDT) or [math.inf])
    print(
        f"  futures websocket p50 {fut_ws:.1f} ms vs target <= 200 ms: "
        f"{'MET' if fut_ws <= 200 else 'MISSED'}; REST (one spot 1s subscription) p50 "
        f"{spot_rest:.1f} ms vs target <= {POLL_DELAY_MS + 50} ms: "
        f"{'MET' if spot_rest <= POLL_DELAY_MS + 50 else 'MISSED'}"
    )
    print(
        f"  REST/websocket p50 ratio: USD-M 1m {fut_rest / fut_ws:.1f}x, spot 1s "
        f"{spot_rest / spot_ws:.2f}x (spot 1s closed messages come on the 1 s push cadence: "
        "0..1000 ms late by themselves, by the stream's phase)"
    )
    own = ws.delays_ms(MarketType.FUTURES_USDT, in_client=True)
    own += ws.delays_ms(MarketType.SPOT, in_client=True)
    print(
        f"  websocket client's own cost (message read -> on_bar): p50 "
        f"{statistics.median(own):.2f} ms, p99 {percentile(own, 99):.2f} ms over {len(own)} bars"
    )
    print(f"  exact checks (once, in order, gapless, final values): OK over {checked} bars")


async def two_hundred(duration_s: float, tmp: str, truth: BinanceImitation) -> None:
    print(f"\n== 2. 200 subscriptions (100 spot 1s + 100 USD-M 1m), {duration_s:.0f} s ==")
    srv = Imitation()
    bar_types = [spot_1s(s) for s in symbols()] + [perp_1m(s) for s in symbols()]
    run = make_run("WS200", srv, f"{tmp}/200", "websocket", bar_types)
    try:
        await run.client._connect()
        await align_to_minute(duration_s)
        lag = LoopLag()
        started_ns = time.time_ns()
        started = time.monotonic()
        for bar_type in bar_types:
            subscribe(run, bar_type)
        await asyncio.sleep(duration_s)
        elapsed_min = (time.monotonic() - started) / 60
        health = run.client.health()
        lag_line = lag.stop()
        seen = srv.stats()
    finally:
        await run.client._disconnect()
        srv.stop()
    checked = check_exact(run, truth)
    report_latency([run])
    after = started_ns + 5_000 * NS_PER_MS
    for market, label in ((MarketType.SPOT, "spot 1s"), (MarketType.FUTURES_USDT, "USD-M 1m")):
        d = steady(run, market, after)
        if d:
            print(
                f"  {label} after the first 5 s: p50 {statistics.median(d):.1f} ms, p99 "
                f"{percentile(d, 99):.1f} ms (n={len(d)})"
            )
    print(f"  client {lag_line}")
    own = run.delays_ms(MarketType.SPOT, in_client=True)
    own += run.delays_ms(MarketType.FUTURES_USDT, in_client=True)
    print(
        f"  client's own cost (message read -> on_bar): p50 {statistics.median(own):.2f} ms, "
        f"p99 {percentile(own, 99):.2f} ms"
    )
    by_status = seen["by_status"]
    bans = by_status.get("429", 0) + by_status.get("418", 0)
    print(
        f"  429/418 answers: {bans} ({'zero: OK' if bans == 0 else 'NOT ZERO'}); REST requests "
        f"{health['rest_requests']} = {health['rest_requests'] / elapsed_min:.1f}/min, REST weight "
        f"(X-MBX-USED-WEIGHT-1M, last) {health['rest_weight_per_min']}"
    )
    print(
        f"  bars published {health['bars_published']} ({health['bars_streamed']} streamed), "
        f"late and reconciled by REST {health['bars_late_reconciled']}, gaps backfilled "
        f"{health['gaps_backfilled']}, ws reconnects {health['ws_reconnects']}, imitation "
        f"ws connections {seen['ws']['connections']}, max incoming msgs/s "
        f"{seen['ws']['max_messages_per_s']}"
    )
    print(
        f"  peak RSS {peak_rss_mb():.0f} MB (this process: both parts' clients); exact checks "
        f"OK over {checked} bars in {len(run.received)} bar types"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=120.0, help="seconds per part")
    parser.add_argument("--part", choices=("both", "side", "200"), default="both")
    args = parser.parse_args()
    truth = BinanceImitation()  # not started: only its deterministic source truth is used
    extra_symbols(truth, EXTRA)
    with tempfile.TemporaryDirectory() as tmp:
        if args.part in ("both", "side"):
            await side_by_side(args.duration, tmp, truth)
        if args.part in ("both", "200"):
            await two_hundred(args.duration, tmp, truth)


if __name__ == "__main__":
    asyncio.run(main())
