"""The integration guide's generated sections (config tables, CLI reference) match the code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_guide_is_regenerated_from_the_current_code():
    run = subprocess.run(
        [sys.executable, str(ROOT / "tools/gen_docs.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stdout + run.stderr + "\nrun: uv run python tools/gen_docs.py"
    assert run.stdout.endswith("generated sections up to date\n")
