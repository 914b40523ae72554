"""Every ```python block of docs/INTEGRATION.md runs, in order, against the imitation."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.acceptance.readme_blocks import python_blocks, run_page

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "INTEGRATION.md"


@pytest.mark.timeout(180)
def test_guide_python_blocks_run_in_order_against_the_imitation(tmp_path: Path) -> None:
    blocks = python_blocks(GUIDE)
    assert len(blocks) == 2
    proc = run_page(GUIDE, tmp_path, timeout_s=150)

    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.splitlines() == [
        "-- block 0 --",
        "True",
        "-- block 1 --",
        "24 1.0",
        "-- all blocks ran --",
    ]
    assert (tmp_path / "cache").is_dir()
