"""Funding settlement of perpetuals in NautilusTrader 1.231 backtests.

``funding.payments`` holds the pure part (funding events from catalog rows, the payment
arithmetic, the totals and the report); ``funding.module`` the ``SimulationModule`` that settles
them (:class:`FundingRateModule`). Both are re-exported here and from
:mod:`nautilus_dsm.backtest`; ``nautilus_dsm.backtest.funding:FundingRateModule`` is the import
path an ``ImportableActorConfig`` names.
"""

from nautilus_dsm.backtest.funding.module import (
    FundingRateModule,
    FundingRateModuleConfig,
    funding_module_config,
)
from nautilus_dsm.backtest.funding.payments import (
    CACHE_KEY_PREFIX,
    DEFAULT_MARK_BAR_SPEC,
    MARK_FALLBACKS,
    FundingEvent,
    FundingPayment,
    FundingReport,
    FundingTotals,
    funding_events,
    funding_payment,
    funding_report,
    mark_bar_type,
)

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
    "funding_events",
    "funding_module_config",
    "funding_payment",
    "funding_report",
    "mark_bar_type",
]
