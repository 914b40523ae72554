"""Tiny helpers shared by the benchmarks: synthetic engine frames and median timing."""

from __future__ import annotations

import contextlib
import gc
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import polars as pl

from nautilus_dsm.dsm.schema import DECIMAL, FRAME_SCHEMA, TIME

MINUTE_MS = 60_000
START_MS = 1_704_067_200_000  # 2024-01-01 00:00 UTC


def synthetic_engine_frame(rows: int, seed: int = 0, start_ms: int = START_MS) -> pl.DataFrame:
    """A 1m BTCUSDT-PERP-like frame in ``FRAME_SCHEMA``: prices on the 0.1 tick, volumes on
    the 0.001 step, OHLC-consistent, random-walking around 42 000."""
    rng = np.random.default_rng(seed)
    close = 420_000 + np.cumsum(rng.integers(-30, 31, rows))  # tenths
    close = np.maximum(close, 1_000)
    open_ = np.r_[close[0], close[:-1]]
    high = np.maximum(open_, close) + rng.integers(0, 40, rows)
    low = np.minimum(open_, close) - rng.integers(0, 40, rows)
    volume = rng.integers(1, 500_000_000, rows)  # thousandths
    open_time = start_ms + np.arange(rows, dtype=np.int64) * MINUTE_MS

    def tenths(x: np.ndarray) -> pl.Expr:
        return (pl.lit(pl.Series(x)).cast(DECIMAL) / 10).cast(DECIMAL)

    frame = pl.DataFrame({"open_time": open_time}).select(
        pl.col("open_time").cast(TIME),
        (pl.col("open_time") + (MINUTE_MS - 1)).cast(TIME).alias("close_time"),
        tenths(open_).alias("open"),
        tenths(high).alias("high"),
        tenths(low).alias("low"),
        tenths(close).alias("close"),
        (pl.lit(pl.Series(volume)).cast(DECIMAL) / 1000).cast(DECIMAL).alias("volume"),
        pl.lit(0).cast(DECIMAL).alias("quote_volume"),
        pl.lit(1, dtype=pl.Int64).alias("trades"),
        pl.lit(0).cast(DECIMAL).alias("taker_buy_base_volume"),
        pl.lit(0).cast(DECIMAL).alias("taker_buy_quote_volume"),
    )
    assert dict(frame.schema) == FRAME_SCHEMA
    return frame


def median_seconds(fn: Callable[[], Any], repeats: int = 3) -> float:
    """Median wall time of ``fn()``; results are dropped and garbage collected between runs."""
    times = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
        del result
    gc.collect()
    return statistics.median(times)


@contextlib.contextmanager
def imitation_process() -> Iterator[str]:
    """Serve the imitation in a child process; yield its URL (REST and Vision base)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "nautilus_dsm.testing", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"the imitation did not start (printed {url!r})")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
