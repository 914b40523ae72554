"""Benchmark: how fast the ``nautilus-dsm`` commands start, beside NautilusTrader's own import.

Run: ``uv run python benchmarks/cli_startup.py [--reps 5]`` (offline; about a minute).

Each variant is the wall time of a fresh process (interpreter start included, so ``pass`` is
the floor), variants interleaved, median of ``--reps``:

- ``python -c pass``, ``import nautilus_trader`` and ``import nautilus_trader.model.data``
  (what an eager CLI would pay before doing anything: the "~4 s" of issue 14);
- the console script's ``--help`` of the group and of every command;
- ``eager fetch --help``: the same ``fetch --help`` with NautilusTrader imported first, i.e.
  the CLI as it was when every command imported it at start-up;
- real runs against the bundled Binance imitation (started in this process, on 127.0.0.1),
  warm cache: ``fetch`` of one day of 1m bars, ``cache info``, and ``quality`` (which converts
  the klines to Nautilus bars to count the bar success rate, so it does import NautilusTrader).

Target (issue 14): ``fetch --help`` <= 1.2 s on these machines.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nautilus_dsm.testing import BinanceImitation

TARGET_S = 1.2
SCRIPT = str(Path(sys.executable).with_name("nautilus-dsm"))
EAGER = (
    "import sys, nautilus_trader.model.data; from nautilus_dsm.cli import main; "
    "sys.argv = ['nautilus-dsm', 'fetch', '--help']; main()"
)


def wall(cmd: list[str]) -> float:
    """Return the wall seconds of one fresh process running ``cmd``."""
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def variants(url: str, cache_dir: str, out: str) -> dict[str, list[str]]:
    """Return the timed commands by name."""
    py = sys.executable
    sources = ["--base-url-http", url, "--base-url-vision", url, "--cache-dir", cache_dir]
    day = ["--interval", "1m", "--start", "2024-01-01", "--end", "2024-01-02"]
    found: dict[str, list[str]] = {
        "python -c pass": [py, "-c", "pass"],
        "import nautilus_trader": [py, "-c", "import nautilus_trader"],
        "import nautilus_trader.model.data": [py, "-c", "import nautilus_trader.model.data"],
        "nautilus-dsm --help": [SCRIPT, "--help"],
    }
    for command in ("fetch", "quality", "cache", "ingest", "instruments", "demo"):
        found[f"nautilus-dsm {command} --help"] = [SCRIPT, command, "--help"]
    found["eager fetch --help"] = [py, "-c", EAGER]
    instrument = "BTCUSDT-PERP.BINANCE"
    found["fetch (warm cache, 1 day 1m)"] = [
        SCRIPT, "fetch", instrument, *day, *sources, "--out", out, "--no-progress"
    ]  # fmt: skip
    found["cache info"] = [SCRIPT, "cache", "info", "--cache-dir", cache_dir]
    found["quality (warm cache, 1 day 1m)"] = [
        SCRIPT, "quality", instrument, *day, *sources, "--no-progress"
    ]  # fmt: skip
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="fresh processes per variant")
    args = parser.parse_args()
    with BinanceImitation() as srv, tempfile.TemporaryDirectory() as tmp:
        runs = variants(srv.url, str(Path(tmp) / "cache"), str(Path(tmp) / "bars.parquet"))
        for cmd in runs.values():  # warm the page cache and the kline cache
            wall(cmd)
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.reps):
            for name, cmd in runs.items():
                times[name].append(wall(cmd))
    med = {name: statistics.median(values) for name, values in times.items()}
    nt = med["import nautilus_trader.model.data"]
    print(f"\n== nautilus-dsm start-up: fresh processes, median of {args.reps} ==")
    for name in runs:
        print(f"{name:>36}: {med[name]:6.3f} s   ({med[name] / nt:4.2f} x NT model import)")
    fetch_help = med["nautilus-dsm fetch --help"]
    print(
        f"fetch --help {fetch_help:.3f} s (target <= {TARGET_S} s: "
        f"{'MET' if fetch_help <= TARGET_S else 'MISSED'}); eager (NautilusTrader imported "
        f"first) {med['eager fetch --help']:.3f} s: {med['eager fetch --help'] / fetch_help:.1f}x"
    )


if __name__ == "__main__":
    main()
