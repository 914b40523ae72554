"""``nautilus-dsm demo`` writes to one stable folder (``--out``, default under the user cache)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _demo(env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nautilus_dsm.cli", "demo", "--offline", "--days", "1", *extra],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env=env,
    )


def test_default_folder_is_reused_and_no_temp_folder_is_left(tmp_path: Path) -> None:
    cache_root, tmp = tmp_path / "cache", tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "NAUTILUS_DSM_CACHE_DIR": str(cache_root), "TMPDIR": str(tmp)}

    first = _demo(env)
    second = _demo(env)

    demo_dir = cache_root / "demo"
    for run in (first, second):
        assert run.returncode == 0, run.stderr
        assert f"output directory: {demo_dir}" in run.stdout.splitlines()
        assert "bars: 1440" in run.stdout.splitlines()
    assert sorted(p.name for p in demo_dir.iterdir()) == ["cache-synthetic", "catalog-synthetic"]
    # The second run read its klines back from the demo's own cache.
    assert (
        "BTCUSDT-PERP.BINANCE 1m 2024-01-01T00:00:00Z..2024-01-02T00:00:00Z: 1440/1440 bars "
        "(100.00%); sources cache=1440; cache hits 1/1"
    ) in second.stdout.splitlines()
    assert [p.name for p in tmp.iterdir() if p.name.startswith("nautilus-dsm")] == []


def test_an_out_under_a_file_is_refused_before_running(tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.write_text("x")

    refused = _demo(dict(os.environ), "--out", str(taken / "demo"))

    assert (refused.returncode, refused.stdout) == (2, "")
    assert refused.stderr == (
        f"error: --out {str(taken / 'demo')!r}: {str(taken)!r} is a file, not a directory\n"
    )
