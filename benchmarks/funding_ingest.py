"""Benchmark: a year of funding rates and MARK bars ingested, next to a year of klines.

Run: ``uv run python benchmarks/funding_ingest.py [--days 365] [--interval 1m] [--reps 1]``
(offline: the local Binance imitation serves Vision files and REST; a few minutes for 1m).

Each case ingests BTCUSDT-PERP ``[2023-01-01, +days)`` through ``nautilus_dsm.catalog.ingest``
into a fresh catalog with a fresh (cold) cache, so every case pays the same path: Vision
monthly zips (SHA-256 checked), parsing, the quality report, conversion, parquet writes.
Cases, run one after the other in this process (median of ``--reps``):

- ``klines``: LAST bars (the baseline);
- ``mark``: MARK bars (mark price klines);
- ``funding``: ``FundingRateUpdate`` rows (8 h, then 4 h from 2024-03-15 in the imitation: a
  2023 year is 8 h throughout, 1095 events);
- ``funding+mark``: both in one ingest, as a funding backtest needs them.

A one-day ingest of every dataset runs first and is discarded (imports, first-use probes).
Printed per case: seconds, rows written, rows/s, and seconds relative to ``klines``. The
catalog of each case must hold exactly the rows the report counts.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta

from nautilus_dsm.catalog import ingest
from nautilus_dsm.common import to_ms
from nautilus_dsm.dsm.manager import DataSourceManager
from nautilus_dsm.testing import BinanceImitation

INSTRUMENT = "BTCUSDT-PERP.BINANCE"
START = datetime(2023, 1, 1, tzinfo=UTC)
NOW_MS = to_ms(datetime(2024, 6, 1, tzinfo=UTC))
CASES = {
    "klines": ["klines"],
    "mark": ["mark"],
    "funding": ["funding"],
    "funding+mark": ["funding", "mark"],
}


def run_case(
    srv: BinanceImitation, datasets: list[str], interval: str, days: int
) -> tuple[float, int]:
    """Ingest one case into a fresh catalog and cache; return (seconds, rows written)."""
    with tempfile.TemporaryDirectory() as root:
        dsm = DataSourceManager.create(
            base_url_http=srv.url,
            base_url_vision=srv.url,
            cache_dir=f"{root}/cache",
            clock=lambda: NOW_MS,
        )
        t0 = time.perf_counter()
        report = ingest(
            f"{root}/catalog",
            [INSTRUMENT],
            [interval],
            START,
            START + timedelta(days=days),
            dsm=dsm,
            datasets=datasets,
            chunk=timedelta(days=31),
        )
        seconds = time.perf_counter() - t0
    return seconds, report.total_bars + sum(report.events_written.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--interval", default="1m")
    parser.add_argument("--reps", type=int, default=1)
    args = parser.parse_args()

    results: dict[str, tuple[float, int]] = {}
    with BinanceImitation(clock=lambda: NOW_MS) as srv:
        # Warm-up (discarded): imports, the bar fast path's first probe, the imitation's caches.
        run_case(srv, ["klines", "mark", "funding"], args.interval, 1)
        runs: dict[str, list[tuple[float, int]]] = {name: [] for name in CASES}
        for _ in range(args.reps):
            for name, datasets in CASES.items():  # one after the other, each rep in turn
                runs[name].append(run_case(srv, datasets, args.interval, args.days))
        for name, values in runs.items():
            rows = {r for _, r in values}
            assert len(rows) == 1, f"{name}: rows differ between reps: {rows}"
            results[name] = (statistics.median(s for s, _ in values), rows.pop())

    base = results["klines"][0]
    print(
        f"BTCUSDT-PERP {args.interval}, {args.days} days from {START:%Y-%m-%d}, cold cache, "
        f"imitation over 127.0.0.1, median of {args.reps}"
    )
    print(f"{'case':<14}{'seconds':>10}{'rows':>12}{'rows/s':>14}{'vs klines':>12}")
    for name, (seconds, rows) in results.items():
        print(
            f"{name:<14}{seconds:>10.2f}{rows:>12,}{rows / seconds:>14,.0f}{seconds / base:>11.2f}x"
        )


if __name__ == "__main__":
    main()
