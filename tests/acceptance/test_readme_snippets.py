"""Every ```python block of the README runs, in order, against the imitation (they cannot rot)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from nautilus_dsm.testing import BinanceImitation
from tests.acceptance.readme_blocks import python_blocks, script

ROOT = Path(__file__).resolve().parents[2]


def test_readme_has_the_documented_python_blocks() -> None:
    blocks = python_blocks(ROOT / "README.md")

    assert len(blocks) == 4
    assert "base_url_http=None" in blocks[0]
    assert "instrument_for(" in blocks[1]
    assert "node.build()" in blocks[2]
    assert "BacktestNode(configs=[run])" in blocks[3]
    assert not any(line.startswith("await ") for b in blocks for line in b.splitlines())


@pytest.mark.timeout(300)
def test_readme_python_blocks_run_in_order_against_the_imitation(tmp_path: Path) -> None:
    blocks = python_blocks(ROOT / "README.md")
    path = tmp_path / "readme_blocks.py"
    with BinanceImitation() as srv:
        path.write_text(script(blocks, srv.url, tmp_path / "cache"), encoding="utf-8")
        proc = subprocess.run(
            [sys.executable, str(path)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )

    assert proc.returncode == 0, proc.stderr[-4000:]
    # NautilusTrader's Rust logger writes to the same stdout from its own thread, so a marker
    # may share a line with a log record: find them in order anywhere in the output.
    markers = re.findall(r"-- (?:block \d+|all blocks ran) --", proc.stdout)
    assert markers == [
        "-- block 0 --",
        "-- block 1 --",
        "-- block 2 --",
        "-- block 3 --",
        "-- all blocks ran --",
    ]
    assert "bars: 1440" in proc.stdout
    assert (tmp_path / "catalog" / "data" / "bar").is_dir()
    assert (tmp_path / "cache").is_dir()
