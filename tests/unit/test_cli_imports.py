"""The command line starts without NautilusTrader (and without polars for --help and cache).

Not a timing assertion (benchmarks/cli_startup.py measures the wall times): a fresh interpreter
imports the modules and reports what ``sys.modules`` then holds.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

_PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


def _loaded(module: str) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, module],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return set(json.loads(proc.stdout))


@pytest.mark.parametrize(
    "module",
    [
        "nautilus_dsm.cli",
        "nautilus_dsm.cli.fetch",
        "nautilus_dsm.cli.quality",
        "nautilus_dsm.cli.cache",
    ],
)
def test_cli_modules_import_no_nautilus_trader_nor_polars(module: str) -> None:
    loaded = _loaded(module)

    assert "nautilus_trader" not in loaded
    assert {"polars", "numpy", "pyarrow", "pandas"} & loaded == set()


def test_the_cache_listing_needs_no_polars() -> None:
    # `cache info/clear` lists and deletes with these; only --gaps-only reads parquet footers.
    loaded = _loaded("nautilus_dsm.dsm.cache_files")

    assert {"polars", "numpy", "nautilus_trader"} & loaded == set()
