"""``DSMLiveDataClientFactory`` and the cached getters of the shared engine and provider.

Like NautilusTrader's adapters (``adapters/tardis/factories.py``), the HTTP-owning object (here
the ``DataSourceManager``) and the instrument provider are created once per distinct
configuration and shared by every client built from it, so two clients on the same node never
double the request weight or the instrument loading.
"""

from __future__ import annotations

import asyncio
from functools import lru_cache
from typing import TYPE_CHECKING

from nautilus_trader.cache.cache import Cache
from nautilus_trader.common.component import LiveClock, MessageBus
from nautilus_trader.live.factories import LiveDataClientFactory

from nautilus_dsm.config import DSMDataClientConfig, DSMInstrumentProviderConfig, DSMSourceConfig
from nautilus_dsm.dsm.holders import dsm_holders

if TYPE_CHECKING:
    from nautilus_dsm.data import DSMDataClient
    from nautilus_dsm.dsm.manager import DataSourceManager
    from nautilus_dsm.providers import DSMInstrumentProvider

# The engine, provider and client (polars, httpx) are imported when a client is built, not when
# a node config imports this factory: a TradingNode script pays for them only if it uses them.

__all__ = [
    "DSMLiveDataClientFactory",
    "dsm_for_config",
    "dsm_holders",  # how many clients hold a shared engine (nautilus_dsm.dsm.holders)
    "get_cached_dsm",
    "get_cached_dsm_instrument_provider",
]


@lru_cache
def get_cached_dsm(config: DSMSourceConfig) -> DataSourceManager:
    """
    Cache and return the data-source manager for these settings.

    Parameters
    ----------
    config : DSMSourceConfig
        The engine settings (frozen and hashable: equal settings share one engine).

    Returns
    -------
    DataSourceManager

    """
    from nautilus_dsm.dsm.manager import DataSourceManager

    return DataSourceManager.from_config(config)


@lru_cache
def get_cached_dsm_instrument_provider(
    dsm: DataSourceManager,
    config: DSMInstrumentProviderConfig,
    clock: LiveClock,
) -> DSMInstrumentProvider:
    """
    Cache and return the instrument provider reading ``dsm``'s (memoised) exchangeInfo.

    Parameters
    ----------
    dsm : DataSourceManager
        The engine whose ``exchange_info`` feeds the provider.
    config : DSMInstrumentProviderConfig
        The provider configuration.
    clock : LiveClock
        The clock stamping instruments' ``ts_init``.

    Returns
    -------
    DSMInstrumentProvider

    """
    from nautilus_dsm.providers import DSMInstrumentProvider

    return DSMInstrumentProvider(dsm.exchange_info, config, clock)


def dsm_for_config(config: DSMDataClientConfig) -> DataSourceManager:
    """Return the shared engine for a client configuration.

    Its resolved engine settings (``config.source_config()``) are the cache key: equal settings
    share one engine, whether given as keywords or as ``source=DSMSourceConfig(...)``.
    """
    return get_cached_dsm(config.source_config())


class DSMLiveDataClientFactory(LiveDataClientFactory):
    """Provides the nautilus-dsm live data client (Binance klines through the DSM engine)."""

    @staticmethod
    def create(  # type: ignore[override]
        loop: asyncio.AbstractEventLoop,
        name: str,
        config: DSMDataClientConfig,
        msgbus: MessageBus,
        cache: Cache,
        clock: LiveClock,
    ) -> DSMDataClient:
        """
        Create a new DSM data client.

        Parameters
        ----------
        loop : asyncio.AbstractEventLoop
            The event loop for the client.
        name : str
            The client id (the key under ``data_clients``, e.g. ``"DSM"``).
        config : DSMDataClientConfig
            The client configuration.
        msgbus : MessageBus
            The message bus for the client.
        cache : Cache
            The cache for the client.
        clock : LiveClock
            The clock for the client and the instrument provider.

        Returns
        -------
        DSMDataClient

        """
        from nautilus_dsm.data import DSMDataClient
        from nautilus_dsm.logs import install_log_bridge
        from nautilus_dsm.providers import DSMInstrumentProvider

        install_log_bridge()  # the engine's records into this node's log
        dsm = dsm_for_config(config)
        try:
            provider = get_cached_dsm_instrument_provider(dsm, config.instrument_provider, clock)
        except TypeError:  # unhashable provider config (e.g. a ``filters`` dict): not shared
            provider = DSMInstrumentProvider(dsm.exchange_info, config.instrument_provider, clock)
        return DSMDataClient(
            loop=loop,
            dsm=dsm,
            msgbus=msgbus,
            cache=cache,
            clock=clock,
            instrument_provider=provider,
            config=config,
            name=name,
        )
