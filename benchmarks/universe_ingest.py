"""Benchmark: a universe ingest on a Dask LocalCluster, 1 worker vs 2 workers, side by side.

Run: ``uv run python benchmarks/universe_ingest.py [--symbols 8] [--months 3] [--s3]``
(offline, against the Binance imitation; about two minutes on 2 cores).

The same universe (``--symbols`` USDT-M perpetuals listed on the imitation, ``--months`` UTC
months of 1m bars from 2024-01) is ingested into a fresh catalog by a 1-worker and a 2-worker
``LocalCluster`` (processes, one thread each), alternating ``--reps`` times; each run starts its
own cluster, but its workers are warmed (imports, one small series) before the clock starts, so
the figures are the steady state a long job runs at. Printed per worker count: series-months per
minute and bars per second (medians), the ratio 2 vs 1, and each worker's peak RSS
(``VmHWM`` from ``/proc/self/status``). The imitation builds every zip once before the runs
(it serves them from memory after). The catalog is local by default (``--s3``: a moto S3
server in a child process, which is itself a Python server on the same 2 cores). Every run's
catalog must hold exactly the universe's bars, once.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nautilus_dsm.catalog.storage import open_catalog
from nautilus_dsm.common import MarketType, to_ms
from nautilus_dsm.distributed import UniverseSelection, ingest_universe
from nautilus_dsm.dsm.settings import SourceSettings
from nautilus_dsm.testing import BinanceImitation
from nautilus_dsm.testing.symbols import SymbolSpec

UM = MarketType.FUTURES_USDT
START = datetime(2024, 1, 1, tzinfo=UTC)


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM), MB; run on each worker."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def warm_up() -> None:
    """Import what a task imports, so the timed run measures ingestion, not imports."""
    import nautilus_dsm.bars
    import nautilus_dsm.catalog
    import nautilus_dsm.dsm.manager  # noqa: F401


def month_end(months: int) -> datetime:
    year, month = divmod(START.month - 1 + months, 12)
    return datetime(START.year + year, month + 1, 1, tzinfo=UTC)


def run_once(workers: int, universe: list[str], end: datetime, settings: SourceSettings,
             catalog: str, storage: dict[str, str] | None) -> dict[str, Any]:  # fmt: skip
    from distributed import Client, LocalCluster

    selection = UniverseSelection("futures_usdt", symbols=tuple(universe))
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,  # fmt: skip
        Client(cluster) as client,
    ):
        client.run(warm_up)
        # One small series per worker first (not timed): engines, exchangeInfo, catalog.
        warm = tempfile.mkdtemp(prefix="warm-") if storage is None else f"{catalog}-warm"
        ingest_universe(
            warm, UniverseSelection("futures_usdt", symbols=tuple(universe[:workers])), ["1h"],
            START, datetime(2024, 1, 2, tzinfo=UTC), settings=settings, storage_options=storage,
            client=client,
        )  # fmt: skip
        started = time.perf_counter()
        report = ingest_universe(
            catalog, selection, ["1m"], START, end,
            settings=settings, storage_options=storage, client=client,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        rss = sorted(client.run(peak_rss_mb).values())
    assert report.failed == 0, report.failures
    return {
        "seconds": seconds,
        "series_months": report.done,
        "bars": report.bars_written,
        "rss": rss,
    }


def prefetch(imitation: BinanceImitation, universe: list[str], months: int) -> None:
    """Have the imitation build every monthly zip once (it keeps 64): the timed runs then
    measure our pipeline, not the imitation generating klines on the same cores."""
    import httpx

    for symbol in universe:
        for m in range(months):
            month = month_end(m).strftime("%Y-%m")
            name = f"{symbol}-1m-{month}.zip"
            url = f"{imitation.url}/data/futures/um/monthly/klines/{symbol}/1m/{name}"
            assert httpx.get(url).status_code == 200, url


def check_catalog(catalog: str, storage: dict[str, str] | None, universe: list[str],
                  imitation: BinanceImitation, end: datetime) -> None:  # fmt: skip
    cat = open_catalog(catalog, storage)
    for symbol in universe:
        bars = cat.bars([f"{symbol}-PERP.BINANCE-1-MINUTE-LAST-EXTERNAL"])
        truth = imitation.expected(UM, symbol, "1m", to_ms(START), to_ms(end))
        ts = [b.ts_init for b in bars]
        assert len(ts) == len(set(ts)) == truth.height, (symbol, len(ts), truth.height)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--symbols", type=int, default=8)
    parser.add_argument("--months", type=int, default=3)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--s3", action="store_true", help="catalog on a local moto S3 server")
    args = parser.parse_args()
    end = month_end(args.months)
    universe = [f"SYM{i:02d}USDT" for i in range(args.symbols)]
    results: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    with BinanceImitation() as imitation, tempfile.TemporaryDirectory() as tmp:
        for i, symbol in enumerate(universe):
            spec = SymbolSpec(symbol, symbol[:-4], "USDT", 10.0 + i, "0.001", "0.1")
            imitation.add_symbol(UM, spec)
        settings = SourceSettings(
            base_url_http=imitation.url, base_url_vision=imitation.url,
            cache_dir=str(Path(tmp) / "cache"), use_cache=False,
        )  # fmt: skip
        prefetch(imitation, universe, args.months)
        s3 = None
        if args.s3:
            from nautilus_dsm.testing.s3 import LocalS3

            s3 = LocalS3().start()
            s3.create_bucket("bench")
        try:
            for rep in range(args.reps):
                for workers in (1, 2):
                    catalog = (
                        f"s3://bench/r{rep}-w{workers}"
                        if s3
                        else str(Path(tmp) / f"r{rep}-w{workers}")
                    )
                    storage = s3.storage_options if s3 else None
                    out = run_once(workers, universe, end, settings, catalog, storage)
                    check_catalog(catalog, storage, universe, imitation, end)
                    results[workers].append(out)
                    print(
                        f"rep {rep} workers {workers}: {out['series_months']} series-months "
                        f"in {out['seconds']:.1f} s", file=sys.stderr,
                    )  # fmt: skip
        finally:
            if s3 is not None:
                s3.stop()
    report(results, args, "moto S3" if args.s3 else "local directory")


def report(results: dict[int, list[dict[str, Any]]], args: argparse.Namespace, where: str) -> None:
    rates = {}
    print(f"universe ingest: {args.symbols} symbols x {args.months} months of 1m bars "
          f"into a {where} catalog, medians of {args.reps}")  # fmt: skip
    print(f"{'workers':>7} {'series-months/min':>18} {'bars/s':>10} {'peak RSS/worker (MB)':>22}")
    for workers, runs in results.items():
        per_min = statistics.median(r["series_months"] * 60 / r["seconds"] for r in runs)
        bars_s = statistics.median(r["bars"] / r["seconds"] for r in runs)
        rss = max(max(r["rss"]) for r in runs)
        rates[workers] = (per_min, bars_s)
        print(f"{workers:>7} {per_min:>18.1f} {bars_s:>10,.0f} {rss:>22.0f}")
    print(f"2 workers vs 1: {rates[2][0] / rates[1][0]:.2f}x series-months/min, "
          f"{rates[2][1] / rates[1][1]:.2f}x bars/s")  # fmt: skip


if __name__ == "__main__":
    main()
