"""The engine's settings: one frozen, hashable, typed object, validated when it is built.

``SourceSettings`` is what a :class:`~nautilus_dsm.dsm.manager.DataSourceManager` is made from
(:meth:`DataSourceManager.from_config`). It is a msgspec ``Struct`` so that it costs no
NautilusTrader import (the CLI's ``fetch`` and ``quality`` build one); the Nautilus side's
``DSMSourceConfig`` (``nautilus_dsm.config``) is the same struct *and* a ``NautilusConfig``, so a
node config, the factory's cache key, the CLI's shared options and the engine all carry one
definition of every field. A bad value raises :class:`InvalidInput` naming the field and a fix.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import msgspec
from msgspec.structs import force_setattr

from nautilus_dsm.common.markets import MarketType, check_base_url
from nautilus_dsm.common.times import check_max_rows
from nautilus_dsm.constants import DEFAULT_MAX_ROWS
from nautilus_dsm.dsm.bounds import check_knobs
from nautilus_dsm.errors import InvalidInput

__all__ = ["DEFAULT_EXCHANGE_INFO_TTL_S", "DEFAULT_TIME_SYNC_INTERVAL_S", "SourceSettings"]

DEFAULT_EXCHANGE_INFO_TTL_S = 3600.0
DEFAULT_TIME_SYNC_INTERVAL_S = 60.0


class SourceSettings(msgspec.Struct, frozen=True, kw_only=True):
    """
    Where the engine gets Binance data from, and how hard it tries.

    Parameters
    ----------
    market_type : MarketType, optional
        Restrict the engine to one market; an instrument of another market is refused with
        :class:`MarketTypeMismatch`. None infers the market per instrument id. A string
        (``"spot"``, ``"futures_usdt"``, ``"futures_coin"``) is accepted and normalised.
    base_url_http : str, optional
        REST host override for every market (testnets, mirrors, proxies, the local imitation);
        the market's path (``/api/v3``, ``/fapi/v1``, ``/dapi/v1``) is appended.
    base_url_vision : str, optional
        Binance Vision host override (``https://data.binance.vision`` when None).
    base_url_ws : str or mapping, optional
        Websocket kline-stream endpoint override (testnets, mirrors, the imitation): one URL
        for every market, a template with ``{market}`` (``spot``, ``futures/um``,
        ``futures/cm``), or a mapping market -> URL (stored as sorted ``(market, url)`` pairs;
        markets it omits keep Binance's). None: Binance's (``wss://stream.binance.com:9443/ws``,
        ``wss://fstream.binance.com/market/ws``, ``wss://dstream.binance.com/ws``).
    cache_dir : str, optional
        Parquet cache root; None: ``$NAUTILUS_DSM_CACHE_DIR`` if set, else the user cache dir
        (a folder per host set when a base URL is overridden).
    min_completeness : float, default 0.95
        Completeness (0..1) below which ``on_low_quality`` applies.
    on_low_quality : {"raise", "warn"}, default "raise"
        Raise :class:`QualityBelowThreshold` (result attached) or log a warning.
    max_concurrency : int, default 4
        Concurrent requests per source client (>= 1).
    use_cache, use_vision, use_rest : bool, default True
        Switch sources off (e.g. ``use_rest=False`` for bulk files only).
    verify_tls : bool, default True
        TLS certificate verification; turn it off only explicitly.
    exchange_info_ttl_s : float, default 3600
        Age after which a market's ``exchangeInfo`` is fetched again (>= 0).
    max_retries : int, optional
        Tries per request (the first included, >= 1); None keeps each source's default
        (REST 5, Vision 3).
    timeout_s : float, optional
        Inactivity timeout in seconds (> 0); None keeps the default (10 s).
    deadline_s : float, optional
        Total deadline of one try in seconds (> 0); None keeps the default (REST 60 s,
        Vision 300 s).
    time_sync : bool, optional
        Measure each market's offset to Binance's clock (``GET /time``) so "closed" is decided
        by exchange time. None: on with the system clock, off with an injected clock.
    time_sync_interval_s : float, default 60
        Age after which the offset is measured again (> 0).
    max_rows : int, default 50_000_000
        Most bars one fetch may return; a larger request is refused before any I/O.

    """

    market_type: MarketType | None = None
    base_url_http: str | None = None
    base_url_vision: str | None = None
    base_url_ws: str | tuple[tuple[str, str], ...] | None = None
    cache_dir: str | None = None
    min_completeness: float = 0.95
    on_low_quality: Literal["raise", "warn"] = "raise"
    max_concurrency: int = 4
    use_cache: bool = True
    use_vision: bool = True
    use_rest: bool = True
    verify_tls: bool = True
    exchange_info_ttl_s: float = DEFAULT_EXCHANGE_INFO_TTL_S
    max_retries: int | None = None
    timeout_s: float | None = None
    deadline_s: float | None = None
    time_sync: bool | None = None
    time_sync_interval_s: float = DEFAULT_TIME_SYNC_INTERVAL_S
    max_rows: int = DEFAULT_MAX_ROWS

    def __post_init__(self) -> None:
        # Refused when built (a node's config, a CLI option), not at the first request.
        owner = self._owner()
        if self.market_type is not None and not isinstance(self.market_type, MarketType):
            force_setattr(self, "market_type", MarketType.parse(self.market_type))
        check_base_url(self.base_url_http, "base_url_http")
        check_base_url(self.base_url_vision, "base_url_vision")
        force_setattr(self, "base_url_ws", _check_ws_urls(self.base_url_ws, owner))
        if self.cache_dir is not None:
            force_setattr(self, "cache_dir", _check_cache_dir(self.cache_dir, owner))
        force_setattr(self, "min_completeness", _check_fraction(self.min_completeness, owner))
        if self.on_low_quality not in ("raise", "warn"):
            raise InvalidInput(
                f"{owner}on_low_quality {self.on_low_quality!r} is not 'raise' or 'warn'; "
                "use one of them"
            )
        if _not_int(self.max_concurrency) or self.max_concurrency < 1:
            raise InvalidInput(
                f"{owner}max_concurrency must be a whole number >= 1, was "
                f"{self.max_concurrency!r}; e.g. 4"
            )
        for name in ("use_cache", "use_vision", "use_rest", "verify_tls"):
            if not isinstance(getattr(self, name), bool):
                value = getattr(self, name)
                raise InvalidInput(f"{owner}{name} must be True or False, was {value!r}")
        if self.time_sync is not None and not isinstance(self.time_sync, bool):
            raise InvalidInput(
                f"{owner}time_sync must be True, False or None (automatic), was {self.time_sync!r}"
            )
        ttl = self.exchange_info_ttl_s
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl >= 0:
            raise InvalidInput(  # `not >= 0` also refuses NaN
                f"{owner}exchange_info_ttl_s must be >= 0 seconds, was {ttl!r}; "
                "e.g. 3600 to refresh instrument metadata hourly"
            )
        force_setattr(self, "exchange_info_ttl_s", float(ttl))
        sync = self.time_sync_interval_s
        if isinstance(sync, bool) or not isinstance(sync, int | float) or not sync > 0:
            raise InvalidInput(
                f"{owner}time_sync_interval_s must be > 0 seconds, was {sync!r}; "
                "e.g. 60 to measure Binance's clock offset every minute"
            )
        force_setattr(self, "time_sync_interval_s", float(sync))
        check_knobs(self.max_retries, self.timeout_s, self.deadline_s, owner=owner)
        check_max_rows(self.max_rows, f"{owner}max_rows")

    def _owner(self) -> str:
        # Messages name the field as the user wrote it: ``DSMSourceConfig.max_retries``.
        return "" if type(self) is SourceSettings else f"{type(self).__name__}."

    @property
    def knobs(self) -> dict[str, int | float]:
        """The request bounds that are set, as keyword arguments of the source clients."""
        return check_knobs(self.max_retries, self.timeout_s, self.deadline_s)

    def replace(self, **changes: Any) -> SourceSettings:
        """Return a copy with ``changes`` applied (validated like a new instance)."""
        return msgspec.structs.replace(self, **changes)

    @property
    def ws_urls(self) -> str | dict[str, str] | None:
        """``base_url_ws`` as :func:`~nautilus_dsm.dsm.stream_connection.ws_base_url` takes it."""
        if isinstance(self.base_url_ws, tuple):
            return dict(self.base_url_ws)
        return self.base_url_ws

    def as_kwargs(self) -> dict[str, Any]:
        """Every field as a keyword argument (``market_type`` as the enum)."""
        return {name: getattr(self, name) for name in self.__struct_fields__}


def _check_ws_urls(value: object, owner: str) -> str | tuple[tuple[str, str], ...] | None:
    """Validate ``base_url_ws`` for every market; a mapping becomes hashable sorted pairs."""
    from collections.abc import Mapping

    from nautilus_dsm.dsm.stream_connection import ws_base_url

    if value is None:
        return None
    if isinstance(value, Mapping) or (
        isinstance(value, list | tuple) and not isinstance(value, str)
    ):
        try:
            pairs = dict(value.items() if isinstance(value, Mapping) else value)
            normalised = tuple(
                sorted((MarketType.parse(k).value, str(url)) for k, url in pairs.items())
            )
        except (TypeError, ValueError) as e:
            raise InvalidInput(
                f"{owner}base_url_ws {value!r} is not a mapping market -> URL ({e}); pass e.g. "
                "{'spot': 'wss://stream.binance.com:9443/ws'} or one URL / a '{market}' template"
            ) from None
        for market in MarketType:
            ws_base_url(market, dict(normalised))
        return normalised
    if not isinstance(value, str):
        raise InvalidInput(
            f"{owner}base_url_ws {value!r} is not a URL; pass e.g. 'ws://127.0.0.1:9000/{{market}}/ws'"
        )
    for market in MarketType:
        ws_base_url(market, value)
    return value


def _not_int(value: object) -> bool:
    return isinstance(value, bool) or not isinstance(value, int)


def _check_fraction(value: object, owner: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0.0 <= value <= 1.0
    ):
        raise InvalidInput(
            f"{owner}min_completeness {value!r} is not a fraction; pass a value in [0, 1], "
            "e.g. 0.95"
        )
    return float(value)


def _check_cache_dir(value: object, owner: str) -> str:
    import os

    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(
            f"{owner}cache_dir {value!r} is not a directory path; pass a folder such as "
            "'~/.cache/nautilus-dsm', or leave it unset for the default"
        )
    return str(value)
