"""``examples/funding_backtest.py``: a held long with and without funding (SYNTHETIC, imitation)."""

from __future__ import annotations

import importlib.util
import sys
from decimal import Decimal
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "funding_backtest.py"


@pytest.mark.timeout(120)
def test_funding_example_difference_equals_hand_computed_sum(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # In-process (the example's main()) rather than a subprocess: NautilusTrader's import alone
    # costs seconds on a loaded machine.
    spec = importlib.util.spec_from_file_location("funding_backtest_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    argv = [str(EXAMPLE), "--offline", "--days", "2", "--output", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)

    assert example.main() == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"SYNTHETIC data (made-up prices and funding rates) in {tmp_path}"
    assert lines[2] == (
        "BTCUSDT-PERP.BINANCE long 0.500 (SYNTHETIC): 9 funding events while held, "
        "2024-01-01 08:00 .. 2024-01-03 00:00 UTC"
    )
    difference = [line for line in lines if line.startswith("difference (with - without):")]
    by_hand = [line for line in lines if line.startswith("hand-computed sum of payments:")]
    assert Decimal(difference[0].split(":")[1]) == Decimal(by_hand[0].split(":")[1])
    assert lines[-1] == "equal: yes"


@pytest.mark.timeout(180)
def test_funding_example_over_the_imitation_ingest_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = importlib.util.spec_from_file_location("funding_backtest_example_imitation", EXAMPLE)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    argv = [str(EXAMPLE), "--imitation", "--output", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)

    assert example.main() == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"SYNTHETIC (imitation) data, not real Binance prices, in {tmp_path}"
    # 42 events of 8 h to 03-15 00:00, then 102 of 4 h; the 03-01 00:00 one precedes the fill.
    assert lines[2] == (
        "BTCUSDT-PERP.BINANCE long 0.500 (SYNTHETIC, imitation): 143 funding events while held, "
        "2024-03-01 08:00 .. 2024-03-31 20:00 UTC"
    )
    assert lines[-1] == "equal: yes"
