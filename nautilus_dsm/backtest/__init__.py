"""Backtest extensions for NautilusTrader 1.231: funding settlement of perpetuals."""

from __future__ import annotations

from nautilus_dsm.backtest.data_config import backtest_data_config
from nautilus_dsm.backtest.funding import (
    CACHE_KEY_PREFIX,
    DEFAULT_MARK_BAR_SPEC,
    MARK_FALLBACKS,
    FundingEvent,
    FundingPayment,
    FundingRateModule,
    FundingRateModuleConfig,
    FundingReport,
    FundingTotals,
    funding_events,
    funding_module_config,
    funding_payment,
    funding_report,
    mark_bar_type,
)
from nautilus_dsm.backtest.hold import HoldPositions, HoldPositionsConfig

__all__ = [
    "CACHE_KEY_PREFIX",
    "DEFAULT_MARK_BAR_SPEC",
    "MARK_FALLBACKS",
    "FundingEvent",
    "FundingPayment",
    "FundingRateModule",
    "FundingRateModuleConfig",
    "FundingReport",
    "FundingTotals",
    "HoldPositions",
    "HoldPositionsConfig",
    "backtest_data_config",
    "funding_events",
    "funding_module_config",
    "funding_payment",
    "funding_report",
    "mark_bar_type",
]
