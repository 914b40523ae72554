"""Configuration of the DSM data client and instrument provider (frozen NautilusConfig)."""

from __future__ import annotations

import math
from typing import Literal

from msgspec.structs import force_setattr
from nautilus_trader.common.config import InstrumentProviderConfig, NautilusConfig
from nautilus_trader.live.config import LiveDataClientConfig

from nautilus_dsm.dsm.settings import SourceSettings
from nautilus_dsm.errors import InvalidInput

# The DSMDataClientConfig keywords that are engine settings (the rest configure the client).
_SOURCE_KEYWORDS = (
    "market_type",
    "base_url_http",
    "base_url_vision",
    "base_url_ws",
    "cache_dir",
    "min_completeness",
    "on_low_quality",
    "max_concurrency",
    "use_vision",
    "verify_tls",
    "max_retries",
    "timeout_s",
    "deadline_s",
)


class DSMSourceConfig(NautilusConfig, SourceSettings, frozen=True, kw_only=True):
    """
    The data-source manager's settings as a NautilusConfig (frozen, hashable, JSON-able).

    The fields are :class:`~nautilus_dsm.dsm.settings.SourceSettings`' (one definition: the
    engine, the CLI and this config share it): endpoints, cache dir, quality threshold and
    policy, concurrency, retries, timeouts, TLS, and sources on/off. Use it as
    ``DSMDataClientConfig(source=DSMSourceConfig(...))`` or
    ``DataSourceManager.from_config(DSMSourceConfig(...))``; equal configs share one engine in a
    node (it is the factory's cache key).
    """


class DSMInstrumentProviderConfig(InstrumentProviderConfig, frozen=True):
    """
    Configuration for ``DSMInstrumentProvider``.

    Parameters
    ----------
    load_all : bool, default False
        Load every instrument of ``market_types`` on connect (thousands on real Binance).
    load_ids : frozenset[str], optional
        The instrument ids to load on connect (e.g. ``frozenset({"BTCUSDT-PERP.BINANCE"})``);
        only their markets' exchangeInfo is read.
    filters : dict, optional
        Applied by ``load_all``/``load_ids``: ``market_types``, ``quote_assets``,
        ``base_assets``, ``symbols`` (Binance symbols, Nautilus symbols or instrument ids), each
        a string or a list; an unknown key is an error.
    filter_callable : str, optional
        ``"module:function"`` taking an instrument and returning whether to load it.
    log_warnings : bool, default True
        Log the exchangeInfo symbols that could not become instruments (and why).
    use_gamma_markets : bool, default False
        Inherited from NautilusTrader (Polymarket only); ignored.
    market_types : tuple[str, ...], optional
        The markets whose exchangeInfo ``load_all`` reads (``spot``, ``futures_usdt``,
        ``futures_coin``); all three when None. ``load_ids`` always reads only the markets of
        the ids asked for.

    """

    market_types: tuple[str, ...] | None = None


class DSMDataClientConfig(LiveDataClientConfig, frozen=True):
    """
    Configuration for ``DSMDataClient``.

    The engine settings (``market_type``, ``base_url_http``, ``base_url_vision``,
    ``base_url_ws``, ``cache_dir``, ``min_completeness``, ``on_low_quality``, ``max_concurrency``,
    ``use_vision``, ``verify_tls``, ``max_retries``, ``timeout_s``, ``deadline_s``; or all of
    them at once as ``source``) are checked by :class:`DSMSourceConfig`'s rules when the config
    is built, and :meth:`source_config` returns them resolved: the client, the factory's
    shared engine and the client's startup log line all read them there. The other fields
    (``live_source``, ``reconcile_grace_ms``, ``health_interval_s``, ``poll_delay_ms``,
    ``synthetic_fallback``, ``timeout_connection``, the instrument provider, and the inherited
    ``handle_revised_bars`` and ``routing``) configure the client.

    Parameters
    ----------
    market_type : str, optional
        Restrict the client to one market (``spot``, ``futures_usdt``, ``futures_coin``). When
        None the market of each instrument is inferred from its id; when set, an instrument of
        another market is refused at subscribe/request time with a clear error.
    base_url_http : str, optional
        REST host override for every market (testnets, mirrors, proxies, the local imitation);
        the market's path (``/api/v3``, ``/fapi/v1``, ``/dapi/v1``) is appended.
    base_url_vision : str, optional
        Binance Vision host override (``https://data.binance.vision`` when None).
    base_url_ws : str or dict, optional
        Websocket kline-stream endpoint override: one URL, a template with ``{market}``
        (``spot``, ``futures/um``, ``futures/cm``), or a dict market -> URL. None: Binance's.
    live_source : {"websocket", "rest"}, default "websocket"
        Where live bars come from: Binance's kline streams (closed klines only, ``x == true``)
        with REST reconciliation behind them, or ``"rest"``: REST polling at each close plus
        ``poll_delay_ms``.
    reconcile_grace_ms : int, optional
        Behind a stream: how long after a bar's close (exchange time) REST fetches it when the
        stream has not delivered it. None: 1500 ms on futures, 3000 ms on spot (Binance pushes
        spot klines every 2 s).
    health_interval_s : float, default 60.0
        Seconds between the client's health log lines (0 turns the line off; ``health()``
        always answers).
    cache_dir : str, optional
        Parquet cache directory; None: ``$NAUTILUS_DSM_CACHE_DIR`` if set, else the user cache
        dir.
    min_completeness : float, default 0.95
        Completeness below which a request is an error (logged, answered empty unless
        ``on_low_quality="warn"``) and a live backfill logs an error with the gaps.
    on_low_quality : str, default "raise"
        ``raise`` or ``warn``: what a request does below ``min_completeness``.
    poll_delay_ms : int, default 250
        Delay after a bar's close before polling REST for it (Binance needs a moment to close
        the kline).
    synthetic_fallback : bool, default False
        Generate labelled synthetic bars where no source has data. Never on by default.
    max_concurrency : int, default 4
        Concurrent Vision downloads / REST pages.
    use_vision : bool, default True
        Use Binance Vision bulk files for closed periods.
    verify_tls : bool, default True
        TLS certificate verification; turn off only explicitly.
    timeout_connection : float, default 60.0
        Seconds ``connect`` keeps retrying (with backoff, logged) when the instruments cannot
        be loaded because Binance is unreachable; set it to the node's
        ``TradingNodeConfig.timeout_connection`` (same default), which is how long the node
        waits for this client before giving up on starting its trader.
    instrument_provider : DSMInstrumentProviderConfig
        The instrument provider configuration (which instruments ``connect`` loads).
    handle_revised_bars : bool, default False
        Inherited from ``LiveDataClientConfig``; no effect: the client publishes closed bars
        only, each once.
    routing : RoutingConfig
        Inherited from ``LiveDataClientConfig``: how the node routes messages to this client.
    source : DSMSourceConfig, optional
        Every engine setting in one object (also ``use_cache``, ``use_rest``, ``time_sync``,
        ``exchange_info_ttl_s``, ``max_rows``); when given, the engine keywords above must keep
        their defaults (one place per setting).
    max_retries : int, optional
        Tries per request (the first included, >= 1); None keeps each source's default
        (REST 5, Vision 3).
    timeout_s : float, optional
        Inactivity timeout in seconds (> 0); None keeps the default (10 s).
    deadline_s : float, optional
        Total deadline in seconds of one request try, connect + headers + body (> 0); None
        keeps the default (REST 60 s, Vision 300 s).

    """

    market_type: str | None = None
    base_url_http: str | None = None
    base_url_vision: str | None = None
    base_url_ws: str | tuple[tuple[str, str], ...] | None = None
    live_source: Literal["websocket", "rest"] = "websocket"
    reconcile_grace_ms: int | None = None
    health_interval_s: float = 60.0
    cache_dir: str | None = None
    min_completeness: float = 0.95
    on_low_quality: str = "raise"
    poll_delay_ms: int = 250
    synthetic_fallback: bool = False
    max_concurrency: int = 4
    use_vision: bool = True
    verify_tls: bool = True
    timeout_connection: float = 60.0
    instrument_provider: DSMInstrumentProviderConfig = DSMInstrumentProviderConfig()
    # -- bounded time --
    max_retries: int | None = None
    timeout_s: float | None = None
    deadline_s: float | None = None
    source: DSMSourceConfig | None = None

    def __post_init__(self) -> None:
        # A node refuses a bad setting when its config is built, not at the first request.
        self._check_live()
        if self.source is not None:
            fields = type(self).__struct_defaults__
            names = type(self).__struct_fields__
            defaults = dict(zip(names[len(names) - len(fields) :], fields, strict=True))
            both = [k for k in _SOURCE_KEYWORDS if getattr(self, k) != defaults[k]]
            if both:
                raise InvalidInput(
                    f"DSMDataClientConfig sets {', '.join(both)} both as keywords and in "
                    "source=DSMSourceConfig(...); set each engine setting in one place, e.g. "
                    f"source=DSMSourceConfig({both[0]}=...)"
                )
        else:
            # Validated by the engine's rules, named as the user wrote them.
            try:
                resolved = self.source_config()
            except InvalidInput as e:
                text = str(e).replace("DSMSourceConfig.", "DSMDataClientConfig.")
                raise InvalidInput(text) from None
            # A dict of URLs becomes the engine's hashable (market, url) pairs.
            force_setattr(self, "base_url_ws", resolved.base_url_ws)

    def _check_live(self) -> None:
        if self.live_source not in ("websocket", "rest"):
            raise InvalidInput(
                f"DSMDataClientConfig.live_source {self.live_source!r} is not 'websocket' or "
                "'rest'; use 'websocket' (streams with REST reconciliation, the default) or "
                "'rest' (REST polling)"
            )
        grace = self.reconcile_grace_ms
        if grace is not None and (
            isinstance(grace, bool) or not isinstance(grace, int) or grace < 0
        ):
            raise InvalidInput(
                f"DSMDataClientConfig.reconcile_grace_ms must be a whole number of ms >= 0 or "
                f"None, was {grace!r}; e.g. 1500"
            )
        every = self.health_interval_s
        if (
            isinstance(every, bool)
            or not isinstance(every, int | float)
            or not 0 <= every < math.inf
        ):
            raise InvalidInput(
                f"DSMDataClientConfig.health_interval_s must be >= 0 seconds, was {every!r}; "
                "e.g. 60 (0 turns the periodic line off)"
            )

    def source_config(self) -> DSMSourceConfig:
        """
        Return the engine settings, validated: ``source`` when given, else the keywords.

        Returns
        -------
        DSMSourceConfig
            Frozen and hashable: equal settings share one engine in a node (the factory's
            cache key), ``market_type`` parsed to a :class:`MarketType`.

        """
        if self.source is not None:
            return self.source
        return DSMSourceConfig(**{k: getattr(self, k) for k in _SOURCE_KEYWORDS})
