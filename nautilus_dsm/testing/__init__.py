"""A local Binance imitation (REST + Vision over real HTTP) for offline tests.

Shipped with the package so users test their own pipelines without the network::

    from nautilus_dsm.testing import BinanceImitation

    with BinanceImitation() as srv:
        srv.url  # base_url_http and base_url_vision

    with BinanceImitation(ws=True) as srv:
        srv.ws_base_url("spot")  # kline websocket streams (nautilus_dsm.testing.ws)
"""

from __future__ import annotations

from nautilus_dsm.testing.faults import Faults
from nautilus_dsm.testing.server import BinanceImitation, RequestRecord
from nautilus_dsm.testing.symbols import DEFAULT_LISTED_MS, SymbolSpec, default_symbols
from nautilus_dsm.testing.ws import WsConfig, WsFaults

__all__ = [
    "DEFAULT_LISTED_MS",
    "BinanceImitation",
    "Faults",
    "RequestRecord",
    "SymbolSpec",
    "WsConfig",
    "WsFaults",
    "default_symbols",
]
