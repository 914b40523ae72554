"""The sources a manager fetches from.

They are the cache, and per market a REST client, a Vision client and an exchange clock.

Clients are created on first use (one of each per market, sharing the settings' bounds and
concurrency) and closed together; a closed manager re-creates them when used again. The
exchange clock measures Binance's time lazily through the market's current REST client (when
time sync is on and REST enabled). ``exchangeInfo`` is kept per market for
``exchange_info_ttl_s``; a failed refresh serves the previous copy. The switches
(``use_cache``, ``use_vision``, ``use_rest``) are plain attributes, read on every use by the
listing lookup and the per-period chain.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Self

from nautilus_dsm.common import MarketType
from nautilus_dsm.common.datasets import Dataset
from nautilus_dsm.dsm.cache import KlineCache
from nautilus_dsm.dsm.cache_paths import endpoint_cache_dir
from nautilus_dsm.dsm.exchange_clock import ExchangeClock
from nautilus_dsm.dsm.http import wall_clock_ms
from nautilus_dsm.dsm.rest import BinanceRestClient
from nautilus_dsm.dsm.settings import SourceSettings
from nautilus_dsm.dsm.vision import VisionClient
from nautilus_dsm.dsm.weight_gate import RequestLimiter
from nautilus_dsm.errors import SourceError

log = logging.getLogger(__name__)


class MarketSources:
    """
    The cache and, per market, one REST client, one Vision client and one exchange clock.

    The base of :class:`~nautilus_dsm.dsm.manager.DataSourceManager`. Use ``async with`` or
    call :meth:`aclose` to release the connections.

    Parameters
    ----------
    settings : SourceSettings
        Hosts, switches, bounds and concurrency.
    cache : KlineCache, optional
        The cache; one at ``settings.cache_dir`` (or the default root for the endpoints) when
        None.
    clock : Callable[[], int], optional
        The local clock in epoch ms; the system clock when None.

    """

    def __init__(
        self,
        settings: SourceSettings,
        *,
        cache: KlineCache | None = None,
        clock: Callable[[], int] | None = None,
    ) -> None:
        self.settings = settings
        # The time bounds every client gets (None keeps each source's default).
        self._knobs = settings.knobs
        self.base_url_http = settings.base_url_http
        self.base_url_vision = settings.base_url_vision
        self.cache = (
            cache
            if cache is not None
            else KlineCache(
                settings.cache_dir
                if settings.cache_dir is not None
                else endpoint_cache_dir(settings.base_url_http, settings.base_url_vision)
            )
        )
        # One cache per kline-shaped dataset under the same root (klines: self.cache).
        self._dataset_caches: dict[Dataset, KlineCache] = {}
        self.max_concurrency = settings.max_concurrency
        self.use_cache = settings.use_cache
        self.use_vision = settings.use_vision
        self.use_rest = settings.use_rest
        self.verify_tls = settings.verify_tls
        self.exchange_info_ttl_s = settings.exchange_info_ttl_s
        self._clock = clock or wall_clock_ms
        # Exchange time decides what is closed. An injected clock is the caller's "now" (tests,
        # replays): measured against it only when asked, since a real server would disagree.
        self.time_sync = (clock is None) if settings.time_sync is None else settings.time_sync
        self.time_sync_interval_s = settings.time_sync_interval_s
        self._exchange_clocks: dict[MarketType, ExchangeClock] = {}
        self._rest: dict[MarketType, BinanceRestClient] = {}
        self._vision: dict[MarketType, VisionClient] = {}
        # Decoded exchangeInfo per market and the clock time (ms) it was fetched at.
        self._exchange_info: dict[MarketType, tuple[dict, int]] = {}
        # A REST budget shared with other processes (distributed ingestion sets it before
        # the first request; REST clients take it when created). Vision takes none.
        self.rest_limiter: RequestLimiter | None = None
        self._info_inflight: dict[MarketType, asyncio.Future[dict]] = {}

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every client's connections (clients are re-created if used again)."""
        clients: list[BinanceRestClient | VisionClient] = [
            *self._rest.values(),
            *self._vision.values(),
        ]
        self._rest.clear()
        self._vision.clear()
        for client in clients:
            await client.aclose()

    def cache_for(self, dataset: Dataset) -> KlineCache:
        """Return the cache of a kline-shaped dataset (``self.cache`` for klines)."""
        if dataset is Dataset.KLINES:
            return self.cache
        cache = self._dataset_caches.get(dataset)
        if cache is None or cache.root != self.cache.root:
            cache = self.cache.for_dataset(dataset)
            self._dataset_caches[dataset] = cache
        return cache

    def rest_client(self, market_type: MarketType) -> BinanceRestClient:
        """Return the market's REST client, created on first use."""
        client = self._rest.get(market_type)
        if client is None:
            client = BinanceRestClient(
                market_type,
                self.base_url_http,
                concurrency=self.max_concurrency,
                verify_tls=self.verify_tls,
                clock=self._clock,
                limiter=self.rest_limiter,
                **self._knobs,
            )
            self._rest[market_type] = client
        return client

    def vision_client(self, market_type: MarketType) -> VisionClient:
        """Return the market's Vision client, created on first use."""
        client = self._vision.get(market_type)
        if client is None:
            client = VisionClient(
                market_type,
                self.base_url_vision,
                concurrency=self.max_concurrency,
                verify_tls=self.verify_tls,
                **self._knobs,
            )
            self._vision[market_type] = client
        return client

    def exchange_clock(self, market_type: MarketType | str) -> ExchangeClock:
        """Return the market's exchange clock (``.now_ms()``, ``.offset_ms``), created on first use.

        It is measured lazily (see :meth:`exchange_now_ms`); until then, or with time sync
        off, its offset is 0 and exchange time is the local clock.
        """
        market = MarketType.parse(market_type)
        clock = self._exchange_clocks.get(market)
        if clock is None:
            server_time = None
            if self.time_sync and self.use_rest:

                async def server_time() -> int:
                    # Through the current REST client: aclose() may have replaced it.
                    return await self.rest_client(market).server_time()

            clock = ExchangeClock(
                market.name,
                server_time,
                local=self._clock,
                resync_s=self.time_sync_interval_s,
            )
            self._exchange_clocks[market] = clock
        return clock

    async def exchange_now_ms(self, market_type: MarketType | str) -> int:
        """Binance's time now on the market (measuring the offset first when due), epoch ms.

        A lower bound of the exchange's clock; never fails (the local clock when Binance's
        time cannot be read, with a warning).
        """
        return await self.exchange_clock(market_type).ensure()

    async def exchange_info(self, market_type: MarketType | str) -> dict:
        """Return the market's decoded ``exchangeInfo``, refetched once ``exchange_info_ttl_s`` old.

        When the refresh fails, the previous copy is served (with a warning) rather than
        failing a running node over metadata that is merely older than the TTL. Concurrent
        callers share one request (200 subscriptions starting together cost one exchangeInfo,
        not 200: on spot it weighs 20).
        """
        # Any market: instrument metadata is not bars, and providers may load several markets.
        market = MarketType.parse(market_type)
        cached = self._exchange_info.get(market)
        now_ms = self._clock()  # an age: the local clock measures it (an offset cancels out)
        if cached is not None and now_ms - cached[1] < self.exchange_info_ttl_s * 1000:
            return cached[0]
        inflight = self._info_inflight.get(market)
        if inflight is None or inflight.done():
            inflight = asyncio.ensure_future(self._refresh_exchange_info(market, cached, now_ms))
            self._info_inflight[market] = inflight
        # Shielded: one caller cancelled does not cancel the request the others wait for.
        return await asyncio.shield(inflight)

    async def _refresh_exchange_info(
        self, market: MarketType, cached: tuple[dict, int] | None, now_ms: int
    ) -> dict:
        try:
            info = await self.rest_client(market).exchange_info()
        except SourceError as exc:
            if cached is None:
                raise
            log.warning(
                "exchangeInfo of %s could not be refreshed (%s); serving the copy fetched "
                "%.0f s ago, the next call tries again",
                market.name,
                exc,
                (now_ms - cached[1]) / 1000,
            )
            return cached[0]
        self._exchange_info[market] = (info, now_ms)
        return info
