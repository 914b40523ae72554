"""Benchmark: a cold month through Binance Vision vs REST only, and a warm cached year -> bars.

Run: ``uv run python benchmarks/fetch.py [--reps 3]`` (offline; about 30 s).

The Binance imitation runs in its own process (``python -m nautilus_dsm.testing``), as Binance
does on its own machines, so its CSV/zip generation never competes with the client for the GIL;
its zip cache is warmed by an untimed first fetch, so the timed runs measure the client only.

1. Cold month: ``DataSourceManager.fetch`` of one month of 1m BTCUSDT-PERP bars into an empty
   cache, Vision path (one monthly zip + CHECKSUM, unzip, polars CSV, 31 cache files) and
   REST-only path (``use_vision=False``: 31 daily pages of 1440 bars) side by side, alternating,
   median of ``--reps``. Both frames must equal the imitation's truth exactly.
2. Warm year: the cache is filled by a real cold fetch of the year through the imitation's 12
   monthly zips (timed, informational), then ``dsm.fetch`` of the whole year from the cache and
   ``frame_to_bars`` are timed in process CPU (``time.process_time``, every thread) and wall;
   the target is fetch + conversion <= 1 s of CPU. The frame must equal the truth exactly, come
   from the cache only, and the bars must match the frame's first and last rows.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl
from _common import imitation_process

from nautilus_dsm.bars import bar_type_for, frame_to_bars
from nautilus_dsm.common import MarketType, to_ms
from nautilus_dsm.dsm.manager import DataSourceManager, FetchResult
from nautilus_dsm.parsing import parse_instruments
from nautilus_dsm.testing import BinanceImitation
from nautilus_dsm.testing.symbols import exchange_info

INSTRUMENT = "BTCUSDT-PERP.BINANCE"
SYMBOL = "BTCUSDT"
MARKET = MarketType.FUTURES_USDT
INTERVAL = "1m"
CPU_TARGET_S = 1.0


@dataclass
class Timed:
    wall_s: float
    cpu_s: float
    result: FetchResult
    zip_bytes: int = 0


async def timed_fetch(
    url: str, cache_dir: str, start: datetime, end: datetime, *, use_vision: bool = True
) -> Timed:
    """One ``dsm.fetch`` with a fresh manager; wall and process CPU around the await only."""
    dsm = DataSourceManager.create(
        "binance",
        base_url_http=url,
        base_url_vision=url,
        cache_dir=cache_dir,
        use_vision=use_vision,
    )
    try:
        w0, c0 = time.perf_counter(), time.process_time()
        result = await dsm.fetch(INSTRUMENT, INTERVAL, start, end)
        w1, c1 = time.perf_counter(), time.process_time()
        vision = dsm._vision.get(MARKET)  # created only when Vision was used
        zip_bytes = vision.stats.bytes if vision is not None else 0
    finally:
        await dsm.aclose()
    return Timed(w1 - w0, c1 - c0, result, zip_bytes)


def check_exact(result: FetchResult, truth: pl.DataFrame, source: str) -> None:
    """The fetched frame is the source truth, row for row, and came from ``source`` only."""
    if not result.frame.equals(truth):
        raise AssertionError(f"{source}: fetched frame differs from the imitation's truth")
    want = {"cache": 0, "vision": 0, "rest": 0, "synthetic": 0, source: truth.height}
    if result.report.sources != want:
        raise AssertionError(f"{source}: sources {result.report.sources}, expected {want}")


def med(values: list[float]) -> float:
    return statistics.median(values)


def fmt_runs(values: list[float]) -> str:
    return ", ".join(f"{v:.3f}" for v in values)


async def cold_month(url: str, truth_srv: BinanceImitation, reps: int, month: datetime) -> None:
    start = month
    end = datetime(month.year + month.month // 12, month.month % 12 + 1, 1, tzinfo=UTC)
    truth = truth_srv.expected(MARKET, SYMBOL, INTERVAL, to_ms(start), to_ms(end))
    rows = truth.height
    print(f"\n== Cold fetch: {INSTRUMENT} {INTERVAL} {start:%Y-%m}, {rows} bars, empty cache ==")
    with tempfile.TemporaryDirectory() as warm:  # server zip cache + client first-use costs
        await timed_fetch(url, warm, start, end)
    with tempfile.TemporaryDirectory() as warm:
        await timed_fetch(url, warm, start, end, use_vision=False)

    vision: list[Timed] = []
    rest: list[Timed] = []
    for _ in range(reps):  # alternate so drift hits both paths alike
        for use_vision, runs in ((True, vision), (False, rest)):
            with tempfile.TemporaryDirectory() as cache_dir:
                t = await timed_fetch(url, cache_dir, start, end, use_vision=use_vision)
            check_exact(t.result, truth, "vision" if use_vision else "rest")
            runs.append(t)

    v_wall = med([t.wall_s for t in vision])
    r_wall = med([t.wall_s for t in rest])
    zip_mb = vision[0].zip_bytes / 1e6
    print(f"Vision (monthly zip) wall s: {fmt_runs([t.wall_s for t in vision])}")
    print(f"REST only            wall s: {fmt_runs([t.wall_s for t in rest])}")
    print(
        f"Vision: {v_wall:.3f} s wall (median), {med([t.cpu_s for t in vision]):.3f} s CPU, "
        f"{zip_mb:.2f} MB zip -> {zip_mb / v_wall:.1f} MB/s, {rows / v_wall / 1e3:.0f} k rows/s"
    )
    print(
        f"REST:   {r_wall:.3f} s wall (median), {med([t.cpu_s for t in rest]):.3f} s CPU, "
        f"{rows / r_wall / 1e3:.0f} k rows/s"
    )
    print(f"REST-only / Vision wall ratio: {r_wall / v_wall:.2f}x  (exact-equality checks: OK)")
    timings = vision[0].result.report.timings
    print(
        "Vision run breakdown (first rep, s): "
        + ", ".join(f"{k} {v:.3f}" for k, v in timings.items())
    )


async def warm_year(url: str, truth_srv: BinanceImitation, reps: int, year: int) -> None:
    start = datetime(year, 1, 1, tzinfo=UTC)
    end = datetime(year + 1, 1, 1, tzinfo=UTC)
    truth = truth_srv.expected(MARKET, SYMBOL, INTERVAL, to_ms(start), to_ms(end))
    rows = truth.height
    info = exchange_info(MARKET, list(truth_srv.symbols(MARKET).values()), truth_srv.now_ms())
    [instrument] = [i for i in parse_instruments(MARKET, info, 0) if i.id.value == INSTRUMENT]
    bar_type = bar_type_for(instrument.id, INTERVAL)

    print(f"\n== Warm fetch: {INSTRUMENT} {INTERVAL} {year}, {rows} bars ==")
    with tempfile.TemporaryDirectory() as cache_dir:
        fill = await timed_fetch(url, cache_dir, start, end)
        check_exact(fill.result, truth, "vision")
        print(
            f"cache filled by a real cold fetch through the imitation's 12 monthly zips: "
            f"{fill.wall_s:.2f} s wall, {fill.cpu_s:.2f} s CPU "
            f"({fill.zip_bytes / 1e6:.1f} MB zips, {rows / fill.wall_s / 1e3:.0f} k rows/s)"
        )
        # The first conversion in a process probes NautilusTrader's Data_t layout once.
        c0 = time.process_time()
        frame_to_bars(truth.head(10), bar_type, instrument)
        probe_cpu = time.process_time() - c0

        fetch_cpu: list[float] = []
        fetch_wall: list[float] = []
        conv_cpu: list[float] = []
        conv_wall: list[float] = []
        for _ in range(reps):
            t = await timed_fetch(url, cache_dir, start, end)
            check_exact(t.result, truth, "cache")
            if t.result.report.cache_misses != 0:
                raise AssertionError(f"warm fetch missed the cache: {t.result.report.to_dict()}")
            w0, c0 = time.perf_counter(), time.process_time()
            bars = frame_to_bars(t.result.frame, bar_type, instrument)
            conv_wall.append(time.perf_counter() - w0)
            conv_cpu.append(time.process_time() - c0)
            fetch_cpu.append(t.cpu_s)
            fetch_wall.append(t.wall_s)
            check_bars(bars, truth)
            del bars, t

    f_cpu, c_cpu = med(fetch_cpu), med(conv_cpu)
    total = med([a + b for a, b in zip(fetch_cpu, conv_cpu, strict=True)])
    print(f"fetch (cache)  CPU s: {fmt_runs(fetch_cpu)}  wall s: {fmt_runs(fetch_wall)}")
    print(f"frame_to_bars  CPU s: {fmt_runs(conv_cpu)}  wall s: {fmt_runs(conv_wall)}")
    print(
        f"median CPU: fetch {f_cpu:.3f} s + bars {c_cpu:.3f} s = {total:.3f} s "
        f"(target <= {CPU_TARGET_S:.1f} s: {'MET' if total <= CPU_TARGET_S else 'MISSED'}); "
        f"wall {med(fetch_wall) + med(conv_wall):.3f} s; "
        f"{rows / total / 1e6:.2f} M bars per CPU-second end to end"
    )
    print(
        f"one-time per process: first frame_to_bars call (layout probe) {probe_cpu:.3f} s CPU; "
        "exact-equality checks: OK"
    )


def check_bars(bars: list, truth: pl.DataFrame) -> None:
    """Count, first/last values and the close-time stamps of the bars against the truth."""
    if len(bars) != truth.height:
        raise AssertionError(f"{len(bars)} bars for {truth.height} rows")
    step_ns = 60_000_000_000
    first_open_ns = to_ms(truth["open_time"][0]) * 1_000_000
    for bar, row in ((bars[0], truth.row(0, named=True)), (bars[-1], truth.row(-1, named=True))):
        got = (str(bar.open), str(bar.high), str(bar.low), str(bar.close), str(bar.volume))
        want = tuple(
            f"{row[c]:.{2 if c != 'volume' else 3}f}"
            for c in ("open", "high", "low", "close", "volume")
        )
        if got != want:
            raise AssertionError(f"bar {bar} does not match row {row}")
    if bars[0].ts_event != first_open_ns + step_ns:
        raise AssertionError(f"first bar ts_event {bars[0].ts_event}")
    if bars[-1].ts_init != first_open_ns + len(bars) * step_ns:
        raise AssertionError(f"last bar ts_init {bars[-1].ts_init} (gapless year expected)")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="repetitions per measurement")
    parser.add_argument("--month", default="2024-01", help="cold month YYYY-MM")
    parser.add_argument("--year", type=int, default=2024, help="warm year")
    args = parser.parse_args()
    month = datetime.strptime(args.month, "%Y-%m").replace(tzinfo=UTC)
    if args.reps > 5:
        # Each REST-only month costs ~311 of the imitation's 2400 request weight per minute
        # (like Binance's); past ~6 runs a minute the client rightly waits for the next window.
        print(f"note: --reps {args.reps} > 5 may hit the REST weight limit and slow REST runs")
    truth_srv = BinanceImitation()  # not started: only its deterministic source truth is used
    with imitation_process() as url:
        await cold_month(url, truth_srv, args.reps, month)
        await warm_year(url, truth_srv, args.reps, args.year)


if __name__ == "__main__":
    asyncio.run(main())
