"""The import graph: no cycles, the engine never imports Nautilus (tools/check_imports.py)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _checker():
    spec = importlib.util.spec_from_file_location("check_imports", ROOT / "tools/check_imports.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / "nautilus_dsm" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_the_package_has_no_cycle_and_a_nautilus_free_engine():
    assert _checker().problems(ROOT) == []


def test_the_command_exits_0_and_says_clean():
    run = subprocess.run(
        [sys.executable, str(ROOT / "tools/check_imports.py")], capture_output=True, text=True
    )
    assert run.returncode == 0
    assert run.stdout.endswith("modules checked: clean\n")


def test_a_cycle_through_a_lazy_import_is_found(tmp_path):
    root = _package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from nautilus_dsm.b import x\n",
            "b.py": "def x():\n    from nautilus_dsm import a\n",
        },
    )
    assert _checker().problems(root) == ["import cycle: nautilus_dsm.a -> nautilus_dsm.b"]


def test_type_checking_imports_do_not_count(tmp_path):
    root = _package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from nautilus_dsm.b import x\n",
            "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from nautilus_dsm.a import y\nx = 1\n",
        },
    )
    assert _checker().problems(root) == []


def test_the_engine_importing_nautilus_or_the_nautilus_side_is_refused(tmp_path):
    root = _package(
        tmp_path,
        {
            "__init__.py": "",
            "bars.py": "",
            "dsm/__init__.py": "",
            "dsm/x.py": "import nautilus_trader.model\n\ndef f():\n    from nautilus_dsm.bars import g\n",
        },
    )
    assert _checker().problems(root) == [
        "nautilus_dsm.dsm.x:1 imports nautilus_trader.model: the engine never imports Nautilus",
        "nautilus_dsm.dsm.x:4 imports nautilus_dsm.bars: the engine imports only dsm, common, "
        "constants and errors",
    ]
