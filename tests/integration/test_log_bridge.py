"""Engine logs reach the Nautilus log: the bridge (nautilus_dsm.logs)."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from nautilus_dsm.logs import component_for
from tests.conftest import dsm_messages

ROOT = Path(__file__).resolve().parents[2]


def test_component_names_follow_the_module_that_logged():
    assert component_for("nautilus_dsm.dsm.manager") == "DataSourceManager"
    assert component_for("nautilus_dsm.dsm.listing") == "DataSourceManager"
    assert component_for("nautilus_dsm.dsm.vision") == "VisionClient"
    assert component_for("nautilus_dsm.dsm.rest") == "BinanceRestClient"
    assert component_for("nautilus_dsm.dsm.cache") == "KlineCache"
    assert component_for("nautilus_dsm.catalog.ingest") == "CatalogIngest"
    assert component_for("nautilus_dsm.polling") == "DSM.polling"


def test_a_trading_node_whose_vision_fails_shows_the_fallback_in_its_log(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "tests.integration.node_log_scenario", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "bars=24" in run.stdout
    (log_file,) = tmp_path.glob("node*.log")
    # The engine's fallback, with the node's time, level and trader id, under its component,
    # in the node's console and in its log file alike.
    for text in (run.stdout, log_file.read_text()):
        (line,) = [ln for ln in text.splitlines() if "using REST" in ln]
        assert "[INFO] LOGGER-001.DataSourceManager: BTCUSDT 2024-01-01: Vision refused " in line
        assert "of the download differs from the published" in line
        assert line.endswith("the file is refused and the period will come from REST); using REST")
    # Nothing of the engine printed raw on stderr by Python's last-resort handler.
    assert "Vision" not in run.stderr


def test_without_a_kernel_warnings_still_reach_stderr(tmp_path):
    code = (
        "import logging\n"
        "from nautilus_dsm.logs import install_log_bridge\n"
        "install_log_bridge()\n"
        "logging.getLogger('nautilus_dsm.dsm.cache').warning('cache file x is corrupt')\n"
        "logging.getLogger('nautilus_dsm.dsm.cache').info('not shown')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0
    assert run.stderr == "cache file x is corrupt\n"


def test_records_still_propagate_to_the_applications_handlers(caplog):
    from nautilus_dsm.logs import install_log_bridge

    install_log_bridge()
    with caplog.at_level(logging.WARNING, logger="nautilus_dsm"):
        logging.getLogger("nautilus_dsm.dsm.vision").warning("checksum mismatch")
    assert dsm_messages(caplog.records) == ["checksum mismatch"]
