"""The built wheel installs into a fresh venv and works from outside the source tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.acceptance.readme_blocks import python_blocks, script

ROOT = Path(__file__).resolve().parents[2]
LABEL = "SYNTHETIC (imitation) data, not real Binance prices"


def _uv() -> str:
    # `uv run` exports UV (its own binary); a pyenv shim on PATH may not resolve outside ROOT.
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not installed")
    return uv


def _run(args: list[str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.timeout(600)
def test_wheel_installs_in_a_fresh_venv_and_runs_cli_demo_and_backtest(tmp_path: Path) -> None:
    uv = _uv()
    outside = tmp_path / "user-project"
    outside.mkdir()
    # The base interpreter of this 3.12 venv: no Python download needed (CI may be offline).
    python = os.path.realpath(sys._base_executable)

    built = _run(
        [
            uv,
            "build",
            "--wheel",
            "--python",
            python,
            "--out-dir",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        cwd=outside,
    )
    assert built.returncode == 0, built.stderr
    wheels = sorted((tmp_path / "dist").glob("nautilus_dsm-*-py3-none-any.whl"))
    assert len(wheels) == 1

    venv = tmp_path / "venv"
    made = _run([uv, "venv", "--python", python, str(venv)], cwd=outside)
    assert made.returncode == 0, made.stderr
    vpy = venv / "bin" / "python"
    installed = _run([uv, "pip", "install", "--python", str(vpy), str(wheels[0])], cwd=outside)
    assert installed.returncode == 0, installed.stderr

    # Imported from the venv's site-packages, not from the checkout.
    where = _run([str(vpy), "-c", "import nautilus_dsm; print(nautilus_dsm.__file__)"], outside)
    assert where.returncode == 0, where.stderr
    assert where.stdout.strip().startswith(str(venv))

    cli = str(venv / "bin" / "nautilus-dsm")
    helped = _run([cli, "--help"], cwd=outside)
    assert helped.returncode == 0, helped.stderr
    for command in ("cache", "demo", "fetch", "ingest", "instruments", "quality"):
        assert f"  {command} " in helped.stdout

    demo = _run(
        [
            cli,
            "demo",
            "--offline",
            "--days",
            "1",
            "--no-progress",
            "--output",
            str(tmp_path / "demo"),
        ],
        cwd=outside,
    )
    assert demo.returncode == 0, demo.stderr
    assert f"== nautilus-dsm demo [{LABEL}] ==" in demo.stdout.splitlines()
    assert "bars fetched: 1440 of 1440 expected" in demo.stdout.splitlines()
    assert "bars: 1440" in demo.stdout.splitlines()

    # The README's BacktestNode block, run by the venv against the imitation of the wheel.
    (backtest,) = [b for b in python_blocks(ROOT / "README.md") if "BacktestNode(" in b]
    runner = outside / "backtest.py"
    runner.write_text(
        "from nautilus_dsm.testing import BinanceImitation\n"
        "srv = BinanceImitation().__enter__()\n"
        + script([backtest], "__URL__", outside / "cache").replace("'__URL__'", "srv.url")
        + "srv.__exit__(None, None, None)\n",
        encoding="utf-8",
    )
    ran = _run([str(vpy), str(runner)], cwd=outside)
    assert ran.returncode == 0, ran.stderr[-4000:]
    assert "bars: 1440" in ran.stdout.splitlines()
    assert "-- all blocks ran --" in ran.stdout.splitlines()
