"""The README's first command, ``nautilus-dsm demo``, run offline as a real subprocess."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

LABEL = "SYNTHETIC (imitation) data, not real Binance prices"


def test_demo_offline_prints_the_synthetic_label_and_exact_bar_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.perf_counter()

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "nautilus_dsm.cli",
            "demo",
            "--offline",
            "--days",
            "2",
            "--no-progress",
            "--output",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    wall = time.perf_counter() - started

    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    headers = [line for line in lines if line.startswith("== ")]
    assert headers == [
        f"== nautilus-dsm demo [{LABEL}] ==",
        f"== 1. data quality [{LABEL}] ==",
        f"== 2. catalog ingest [{LABEL}] ==",
        f"== 3. backtest: EMA(10/30) cross on the catalog [{LABEL}] ==",
        f"== done [{LABEL}] ==",
    ]
    assert lines[1].startswith("source: the bundled Binance imitation at http://127.0.0.1:")
    assert lines[1].endswith(" (--offline)")
    assert (
        "BTCUSDT-PERP.BINANCE 1m, 2024-01-01T00:00:00Z .. 2024-01-03T00:00:00Z (2 day(s))" in lines
    )
    assert "bars fetched: 2880 of 2880 expected" in lines
    assert (
        "  BTCUSDT-PERP.BINANCE-1-MINUTE-LAST-EXTERNAL: 2880 bars (expected 2880, gaps 0)" in lines
    )
    assert "bars: 2880" in lines
    assert (
        lines[-1] == "all prices above are SYNTHETIC (imitation); run with internet for real data"
    )
    assert (tmp_path / "catalog-synthetic" / "data" / "bar").is_dir()
    assert (tmp_path / "cache-synthetic").is_dir()
    with capsys.disabled():
        print(f"\ndemo --offline --days 2 wall time: {wall:.2f} s")
