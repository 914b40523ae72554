"""Benchmark: engine kline frame -> Nautilus ``Bar`` objects, side by side (median of 3).

    uv run python benchmarks/frame_to_bars.py [--rows 1000000]

Compares, on one synthetic BTCUSDT-PERP 1m frame (``FRAME_SCHEMA``, prices on tick):
the seed's loop (pandas ``iterrows`` + ``Price.from_str``/``Quantity.from_str`` per field, timed
on 20 k rows and extrapolated), NautilusTrader's ``BarDataWrangler`` (pandas), the
``Bar.from_raw_arrays_to_list`` call alone (arrays prepared outside the timing: conservative),
and ``nautilus_dsm.bars.frame_to_bars`` (everything from the Decimal frame, checks included).
Our bars are then checked field by field against a slow per-row reference on a sample.
"""

from __future__ import annotations

import argparse
import sys
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.model.instruments import Instrument
from nautilus_trader.model.objects import Price, Quantity
from nautilus_trader.persistence.wranglers import BarDataWrangler
from nautilus_trader.test_kit.providers import TestInstrumentProvider

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median_seconds, synthetic_engine_frame

from nautilus_dsm.bars import bar_close_ns, bar_type_for, frame_to_bars

SEED_ROWS = 20_000


def seed_loop(pdf: pd.DataFrame, bar_type: BarType, interval_ns: int) -> list[Bar]:
    """The classic tutorial loop the project started from."""
    bars = []
    for _, row in pdf.iterrows():
        ts = int(row["open_time"].value) + interval_ns
        bars.append(
            Bar(
                bar_type,
                Price.from_str(str(row["open"])),
                Price.from_str(str(row["high"])),
                Price.from_str(str(row["low"])),
                Price.from_str(str(row["close"])),
                Quantity.from_str(str(row["volume"])),
                ts,
                ts,
            )
        )
    return bars


def reference_bar(row: dict, bar_type: BarType, instrument: Instrument) -> Bar:
    """Slow, obviously right: Decimal rounding to the tick, formatted at the precision."""

    def on_grid(value: Decimal, increment: Decimal, precision: int) -> str:
        units = (value / increment).quantize(Decimal(1), rounding=ROUND_HALF_UP)
        return f"{units * increment:.{precision}f}"

    pp, sp = instrument.price_precision, instrument.size_precision
    tick = instrument.price_increment.as_decimal()
    step = instrument.size_increment.as_decimal()
    open_ms = int(row["open_time"].timestamp() * 1000)
    ts = open_ms * 1_000_000 + 60_000_000_000
    prices = [Price.from_str(on_grid(row[c], tick, pp)) for c in ("open", "high", "low", "close")]
    volume = Quantity.from_str(on_grid(row["volume"], step, sp))
    return Bar(bar_type, *prices, volume, ts, ts)


def time_seed_loop(frame: pl.DataFrame, bar_type: BarType) -> float:
    """Bars/s of the seed's loop (pandas built outside the timing)."""
    pdf = frame.to_pandas()
    return len(pdf) / median_seconds(lambda: seed_loop(pdf, bar_type, 60_000_000_000))


def time_wrangler(frame: pl.DataFrame, bar_type: BarType, instrument: Instrument) -> float | None:
    """Bars/s of NautilusTrader's v1 BarDataWrangler, or None (printed) when it fails."""
    pdf = (
        frame.select(
            pl.col("open_time").alias("timestamp"),
            *[pl.col(c).cast(pl.Float64) for c in ("open", "high", "low", "close", "volume")],
        )
        .to_pandas()
        .set_index("timestamp")
    )
    wrangler = BarDataWrangler(bar_type, instrument)
    try:
        return len(pdf) / median_seconds(lambda: wrangler.process(pdf))
    except Exception as exc:
        print(
            f"BarDataWrangler.process FAILED under pandas {pd.__version__}: "
            f"{type(exc).__name__}: {exc}"
        )
        return None


def time_raw_arrays(frame: pl.DataFrame, bar_type: BarType, instrument: Instrument) -> float:
    """Bars/s of the Bar.from_raw_arrays_to_list call alone (float64 arrays made outside)."""
    arrays = [
        frame[c].cast(pl.Float64).to_numpy(writable=True)
        for c in ("open", "high", "low", "close", "volume")
    ]
    ts = bar_close_ns(frame["open_time"].dt.epoch("ms").to_numpy(), "1m")
    pp, sp = instrument.price_precision, instrument.size_precision
    return len(ts) / median_seconds(
        lambda: Bar.from_raw_arrays_to_list(bar_type, pp, sp, *arrays, ts, ts)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    n = args.rows

    instrument = TestInstrumentProvider.btcusdt_perp_binance()
    bar_type = bar_type_for(instrument.id, "1m")
    print(f"building a {n:,}-row engine frame ...", flush=True)
    frame = synthetic_engine_frame(n)
    frame_to_bars(frame.head(2), bar_type, instrument)  # one-time layout probe, outside timing

    results: dict[str, float] = {}
    seed_rows = min(n, SEED_ROWS)
    results[f"seed loop (iterrows + from_str, {seed_rows:,} rows)"] = time_seed_loop(
        frame.head(seed_rows), bar_type
    )
    wrangler_rate = time_wrangler(frame, bar_type, instrument)
    if wrangler_rate is not None:
        results["BarDataWrangler.process (pandas)"] = wrangler_rate
    results["Bar.from_raw_arrays_to_list (call only)"] = time_raw_arrays(
        frame, bar_type, instrument
    )
    ours_name = "nautilus_dsm.bars.frame_to_bars"
    results[ours_name] = n / median_seconds(lambda: frame_to_bars(frame, bar_type, instrument))

    ours = results[ours_name]
    print(f"\n{n:,} rows, median of 3 runs")
    print(f"{'path':<52} {'M bars/s':>9} {'ours is':>9}")
    for name, rate in results.items():
        ratio = "" if name == ours_name else f"{ours / rate:8.1f}x"
        print(f"{name:<52} {rate / 1e6:9.3f} {ratio:>9}")

    # exactness on a sample: first, last, chunk edges and random rows
    bars = frame_to_bars(frame, bar_type, instrument)
    rng = np.random.default_rng(1)
    sample = sorted({0, n - 1, *(rng.integers(0, n, 2000).tolist())})
    for i in sample:
        want = reference_bar(frame.row(i, named=True), bar_type, instrument)
        got = bars[i]
        assert type(got) is Bar
        assert got == want and str(got) == str(want), (i, str(got), str(want))
        for field in ("open", "high", "low", "close", "volume"):
            g, w = getattr(got, field), getattr(want, field)
            assert (g.raw, g.precision) == (w.raw, w.precision), (i, field)
        assert (got.ts_event, got.ts_init) == (want.ts_event, want.ts_init), i
    print(f"\nexact: {len(sample):,} sampled bars equal the per-row reference in every field")


if __name__ == "__main__":
    main()
