"""nautilus-dsm: Binance klines for NautilusTrader, exactly and with their quality reported.

The public API is loaded lazily so ``import nautilus_dsm`` stays cheap; every name below is
importable from the package top level.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # markets
    "DataProvider": "nautilus_dsm.common",
    "MarketType": "nautilus_dsm.common",
    "Interval": "nautilus_dsm.common",
    "resolve_instrument": "nautilus_dsm.common",
    "Dataset": "nautilus_dsm.common.datasets",
    # errors
    "DSMError": "nautilus_dsm.errors",
    "InvalidInput": "nautilus_dsm.errors",
    "MarketTypeMismatch": "nautilus_dsm.errors",
    "UnknownSymbol": "nautilus_dsm.errors",
    "SourceError": "nautilus_dsm.errors",
    "RateLimited": "nautilus_dsm.errors",
    "ChecksumMismatch": "nautilus_dsm.errors",
    "DataUnavailable": "nautilus_dsm.errors",
    "QualityBelowThreshold": "nautilus_dsm.errors",
    # engine
    "DataSourceManager": "nautilus_dsm.dsm.manager",
    "FetchResult": "nautilus_dsm.dsm.manager",
    "QualityReport": "nautilus_dsm.dsm.quality",
    "SourceSettings": "nautilus_dsm.dsm.settings",
    "FundingResult": "nautilus_dsm.dsm.funding_fetch",
    "FundingQualityReport": "nautilus_dsm.dsm.funding_quality",
    # nautilus side
    "bar_type_for": "nautilus_dsm.bars",
    "interval_for": "nautilus_dsm.bars",
    "frame_to_bars": "nautilus_dsm.bars",
    "convert_frame": "nautilus_dsm.bars",
    "warm_up": "nautilus_dsm.bars",
    "mark_bar_type_for": "nautilus_dsm.perp_data",
    "frame_to_mark_bars": "nautilus_dsm.perp_data",
    "frame_to_index_prices": "nautilus_dsm.perp_data",
    "frame_to_funding_updates": "nautilus_dsm.perp_data",
    "DSMDataClientConfig": "nautilus_dsm.config",
    "DSMSourceConfig": "nautilus_dsm.config",
    "DSMInstrumentProviderConfig": "nautilus_dsm.config",
    "DSMInstrumentProvider": "nautilus_dsm.providers",
    "DSMDataClient": "nautilus_dsm.data",
    "DSMLiveDataClientFactory": "nautilus_dsm.factories",
    "ingest": "nautilus_dsm.catalog",
    "backtest_data_config": "nautilus_dsm.backtest.data_config",
}

__all__ = [*sorted(_EXPORTS), "__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nautilus_dsm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from nautilus_dsm.backtest.data_config import backtest_data_config
    from nautilus_dsm.bars import bar_type_for, convert_frame, frame_to_bars, interval_for, warm_up
    from nautilus_dsm.catalog import ingest
    from nautilus_dsm.common import DataProvider, Interval, MarketType, resolve_instrument
    from nautilus_dsm.common.datasets import Dataset
    from nautilus_dsm.config import (
        DSMDataClientConfig,
        DSMInstrumentProviderConfig,
        DSMSourceConfig,
    )
    from nautilus_dsm.data import DSMDataClient
    from nautilus_dsm.dsm.funding_fetch import FundingResult
    from nautilus_dsm.dsm.funding_quality import FundingQualityReport
    from nautilus_dsm.dsm.manager import DataSourceManager, FetchResult
    from nautilus_dsm.dsm.quality import QualityReport
    from nautilus_dsm.dsm.settings import SourceSettings
    from nautilus_dsm.errors import (
        ChecksumMismatch,
        DataUnavailable,
        DSMError,
        InvalidInput,
        MarketTypeMismatch,
        QualityBelowThreshold,
        RateLimited,
        SourceError,
        UnknownSymbol,
    )
    from nautilus_dsm.factories import DSMLiveDataClientFactory
    from nautilus_dsm.perp_data import (
        frame_to_funding_updates,
        frame_to_index_prices,
        frame_to_mark_bars,
        mark_bar_type_for,
    )
    from nautilus_dsm.providers import DSMInstrumentProvider
