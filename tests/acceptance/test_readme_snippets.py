"""Every ```python block of the README runs, in order, against the imitation (they cannot rot)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.acceptance.readme_blocks import python_blocks, run_page

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
    proc = run_page(ROOT / "README.md", tmp_path, timeout_s=240)

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
