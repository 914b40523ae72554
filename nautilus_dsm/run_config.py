"""Backtest run configs whose JSON round trip keeps the bar-type selection.

NautilusTrader 1.231 serialises ``BacktestDataConfig.data_cls`` as a string
(``"nautilus_trader.model.data:Bar"``) and ``BacktestRunConfig.parse`` keeps it a string.
``BacktestDataConfig.query`` only honours ``bar_types`` when ``data_cls is Bar`` (the class), so
the one-shot loader of a parsed run filters by instrument only and every bar type of the
instrument leaks into the run (a 1h series into a 1m backtest). The streaming loader
(``BacktestRunConfig(chunk_size=...)``) resolves the class and is not affected.
"""

from __future__ import annotations

import msgspec
from nautilus_trader.backtest.config import BacktestRunConfig
from nautilus_trader.model.data import Bar

from nautilus_dsm.errors import InvalidInput

_BAR_PATHS = frozenset({"nautilus_trader.model.data:Bar", "nautilus_trader.model.data.Bar"})


def parse_run_config(raw: str | bytes) -> BacktestRunConfig:
    """
    Parse a ``BacktestRunConfig`` JSON, restoring ``data_cls=Bar`` (the class) in its data.

    Use it instead of ``BacktestRunConfig.parse`` for runs built with
    :func:`nautilus_dsm.catalog.backtest_data_config`: the parsed run then loads exactly the
    bar types it names, in one-shot and streaming mode alike.

    Parameters
    ----------
    raw : str | bytes
        The JSON of ``BacktestRunConfig.json()``.

    Returns
    -------
    BacktestRunConfig

    Raises
    ------
    InvalidInput
        If ``raw`` is not a valid ``BacktestRunConfig`` JSON.
    """
    try:
        run = BacktestRunConfig.parse(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, TypeError, ValueError) as exc:
        raise InvalidInput(
            f"not a BacktestRunConfig JSON ({exc}); pass the output of BacktestRunConfig.json()"
        ) from None
    data = [
        msgspec.structs.replace(config, data_cls=Bar)
        if isinstance(config.data_cls, str) and config.data_cls in _BAR_PATHS
        else config
        for config in run.data
    ]
    return msgspec.structs.replace(run, data=data)
