"""Benchmark: what importing nautilus_dsm adds to a NautilusTrader script's start-up.

Run: ``uv run python benchmarks/import_time.py [--reps 5]`` (offline; about a minute).

Each variant is timed as the wall time of a fresh ``python -c`` (interpreter start included,
so the ``pass`` variant is the floor), variants interleaved, median of ``--reps``:

- ``nt``: ``import nautilus_trader.live.node, nautilus_trader.model.data`` (NautilusTrader's
  equivalent: what a live or backtest script imports anyway);
- ``dsm``: the public names a user touches (``DataSourceManager``, ``DSMDataClientConfig``,
  ``DSMLiveDataClientFactory``, ``frame_to_bars``) alone;
- ``nt+dsm``: both, i.e. the real script; ``nt+deps``: NautilusTrader plus our third-party
  dependencies (polars, httpx), to separate their cost from our own modules'.

Target: nautilus_dsm adds <= 0.3 s over the NautilusTrader equivalent. ``import nautilus_dsm``
(lazy public API) and ``nt+node`` (config + factory, what a TradingNode script imports; the
engine loads when the node builds the client) are the readings the target is judged on. The full
data path (``DataSourceManager``, ``frame_to_bars``) loads polars and httpx, whose own import
cost dominates; it is reported too: ``dsm - nt`` (importing ours instead of NT's) and
``nt+dsm - nt`` (what ours adds to a script that imports NT anyway). A ``-X importtime`` run
splits what ours adds by package (self times summed), separating our own modules from polars,
httpx and what they pull in.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

NT = "import nautilus_trader.live.node, nautilus_trader.model.data"
DSM = (
    "from nautilus_dsm import DataSourceManager, DSMDataClientConfig, "
    "DSMLiveDataClientFactory, frame_to_bars"
)
# What a TradingNode script imports from us: polars/httpx load only when a client is built.
NODE = "from nautilus_dsm import DSMDataClientConfig, DSMLiveDataClientFactory"
VARIANTS: dict[str, str] = {
    "pass": "pass",
    "import nautilus_dsm": "import nautilus_dsm",
    "nt": NT,
    "nt+node": f"{NT}; {NODE}",
    "dsm": DSM,
    "nt+dsm": f"{NT}; {DSM}",
    "nt+deps": f"{NT}; import polars, httpx",
}
TARGET_S = 0.3
# A stdlib module nothing else imports: everything -X importtime lists after it is ours.
MARKER = "colorsys"


def wall(code: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - t0


def added_packages(ours: str = DSM) -> dict[str, float]:
    """Seconds (summed self time) per top-level package that ``ours`` adds after NT's import."""
    code = f"{NT}; import {MARKER}; {ours}"
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        check=True,
        capture_output=True,
        text=True,
    )
    lines = [line for line in done.stderr.splitlines() if line.startswith("import time:")]
    names = [line.split("|")[2].strip() for line in lines]
    start = next(i for i, name in enumerate(names) if name == MARKER) + 1
    out: dict[str, float] = {}
    for line, name in zip(lines[start:], names[start:], strict=True):
        self_us = int(line.split("|")[0].removeprefix("import time:"))
        package = name.split(".")[0]
        out[package] = out.get(package, 0.0) + self_us / 1e6
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="fresh interpreters per variant")
    args = parser.parse_args()
    for code in VARIANTS.values():  # warm the OS page cache (.so files, .pyc)
        wall(code)
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.reps):
        for name, code in VARIANTS.items():
            times[name].append(wall(code))
    med = {name: statistics.median(values) for name, values in times.items()}

    print(f"\n== Import time: fresh `python -c`, median of {args.reps} ==")
    for name, code in VARIANTS.items():
        print(f"{name:>20}: {med[name]:.3f} s   ({code})")
    package = med["import nautilus_dsm"] - med["pass"]
    node = med["nt+node"] - med["nt"]
    print(
        f"import nautilus_dsm - pass = {package:+.3f} s (target <= {TARGET_S} s: "
        f"{'MET' if package <= TARGET_S else 'MISSED'})"
    )
    # Wall differences of ~4 s interpreter starts are noisy (+-0.3 s here); the summed
    # -X importtime self times of what the node path adds are exact enough to judge.
    node_self = statistics.median(sum(added_packages(NODE).values()) for _ in range(3))
    print(
        f"nt+node - nt = {node:+.3f} s wall; -X importtime self times {node_self:.3f} s: "
        f"config + factory in a TradingNode script (target <= {TARGET_S} s: "
        f"{'MET' if node_self <= TARGET_S else 'MISSED'})"
    )
    print("the data path below loads polars + httpx, which the engine's frames need:")
    alone = med["dsm"] - med["nt"]
    added = med["nt+dsm"] - med["nt"]
    deps = med["nt+deps"] - med["nt"]
    print(
        f"dsm - nt = {alone:+.3f} s (target <= {TARGET_S} s: "
        f"{'MET' if alone <= TARGET_S else 'MISSED'}); ratio dsm/nt {med['dsm'] / med['nt']:.2f}"
    )
    print(
        f"nt+dsm - nt = {added:+.3f} s (target <= {TARGET_S} s: "
        f"{'MET' if added <= TARGET_S else 'MISSED'}); nt+deps - nt (polars + httpx alone) "
        f"= {deps:+.3f} s"
    )
    packages = added_packages()
    total = sum(packages.values())
    print(f"what nautilus_dsm adds on top of NautilusTrader (-X importtime, {total:.3f} s):")
    for package, seconds in list(packages.items())[:10]:
        print(f"  {seconds:7.3f} s  {seconds / total:5.1%}  {package}")


if __name__ == "__main__":
    main()
