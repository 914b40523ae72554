"""``DSMInstrumentProvider``: Binance instruments from exchangeInfo, for every market.

The provider does no HTTP itself: it awaits an ``exchange_info(market_type) -> dict`` callable
(``DataSourceManager.exchange_info`` in production, memoised there), so instruments, bars and
their cache share one source and tests can feed it anything. Parsing is
:mod:`nautilus_dsm.parsing` (pure).

:func:`instrument_for` is the one way to get the instrument of an id (the client, the catalog
and the CLI use it): ``await instrument_for(dsm.exchange_info, "BTCUSDT-PERP.BINANCE")``, or
:meth:`DSMInstrumentProvider.instrument_for` on a provider that keeps what it loaded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from nautilus_trader.common.component import Clock, LiveClock
from nautilus_trader.common.providers import InstrumentProvider
from nautilus_trader.config import resolve_path
from nautilus_trader.model.identifiers import InstrumentId
from nautilus_trader.model.instruments import Instrument

from nautilus_dsm.common import (
    VENUE,
    MarketType,
    market_type_of,
    resolve_instrument,
)
from nautilus_dsm.config import DSMInstrumentProviderConfig
from nautilus_dsm.errors import InvalidInput, UnknownSymbol
from nautilus_dsm.parsing import ParsedExchangeInfo, SkippedSymbol, parse_exchange_info

__all__ = ["FILTER_KEYS", "DSMInstrumentProvider", "ExchangeInfoFn", "instrument_for"]

# What feeds the provider: a market's decoded exchangeInfo (``DataSourceManager.exchange_info``).
ExchangeInfoFn = Callable[[MarketType], Awaitable[Mapping[str, Any]]]

FILTER_KEYS = ("market_types", "quote_assets", "base_assets", "symbols")


class DSMInstrumentProvider(InstrumentProvider):
    """
    Provides Binance SPOT, USDT-M and COIN-M instruments parsed from exchangeInfo.

    Parameters
    ----------
    exchange_info : Callable[[MarketType], Awaitable[Mapping[str, Any]]]
        Returns the decoded exchangeInfo of a market (``DataSourceManager.exchange_info``).
    config : DSMInstrumentProviderConfig, optional
        ``load_all``/``load_ids``/``filters``/``filter_callable`` as for every Nautilus
        provider (applied by ``initialize()``); ``market_types`` limits ``load_all``.
    clock : Clock, optional
        Stamps ``ts_init``; a ``LiveClock`` when None.

    Notes
    -----
    Filters (``load_all_async``/``load_ids_async`` ``filters``, or ``config.filters``) accept
    ``market_types``, ``quote_assets``, ``base_assets`` and ``symbols`` (Binance symbols such as
    ``BTCUSD_PERP``, Nautilus symbols such as ``BTCUSD-PERP``, or full instrument ids), each a
    string or a list of strings. COIN-M instruments are inverse with multiplier =
    ``contractSize``; see :mod:`nautilus_dsm.parsing` for why this differs from
    NautilusTrader's Binance adapter.

    """

    def __init__(
        self,
        exchange_info: ExchangeInfoFn,
        config: DSMInstrumentProviderConfig | None = None,
        clock: Clock | None = None,
    ) -> None:
        config = config or DSMInstrumentProviderConfig()
        super().__init__(config=config)
        self._exchange_info = exchange_info
        self._clock = clock if clock is not None else LiveClock()
        self._log_warnings = config.log_warnings
        self._market_types: tuple[MarketType, ...] = (
            _parse_markets(config.market_types, "config.market_types")
            if config.market_types is not None
            else tuple(MarketType)
        )
        self._filter_callable: Callable[[Instrument], bool] | None = (
            resolve_path(config.filter_callable) if config.filter_callable else None
        )
        self._skipped: dict[str, SkippedSymbol] = {}
        # The last parse of each (market, include_non_trading), kept with the exchangeInfo it
        # came from: while the manager serves the same (TTL-cached) copy, it is not parsed
        # again (200 subscriptions resolving their instruments would parse it 200 times).
        self._parsed: dict[tuple[MarketType, bool], tuple[Any, ParsedExchangeInfo]] = {}

    @property
    def skipped(self) -> list[SkippedSymbol]:
        """Symbols of the exchangeInfos read so far that produced no instrument, with reasons."""
        return list(self._skipped.values())

    async def load_all_async(self, filters: dict | None = None) -> None:
        """Load every instrument of the configured markets (or ``filters["market_types"]``)."""
        checked = _check_filters(filters)
        markets = checked.get("market_types") or self._market_types
        filters_str = "" if not filters else f" with filters {filters}"
        names = ", ".join(m.name for m in markets)
        self._log.info(f"Loading all instruments of {names}{filters_str}")
        for parsed in await self._parse_markets(markets):
            for instrument in parsed.instruments:
                if _matches(instrument, parsed.market_type, checked) and self._accepts(instrument):
                    self._add(instrument)

    async def load_ids_async(
        self,
        instrument_ids: list[InstrumentId],
        filters: dict | None = None,
    ) -> None:
        """Load the given instruments, reading only the exchangeInfo of their markets."""
        if not instrument_ids:
            self._log.warning("No instrument IDs given for loading")
            return
        checked = _check_filters(filters)
        wanted: dict[MarketType, list[InstrumentId]] = {}
        for instrument_id in instrument_ids:
            if instrument_id.venue.value != VENUE:
                self._log.error(
                    f"Cannot load {instrument_id}: venue {instrument_id.venue} is not {VENUE}; "
                    f"use a Binance id such as BTCUSDT-PERP.{VENUE}"
                )
                continue
            market = market_type_of(instrument_id.symbol.value)
            wanted.setdefault(market, []).append(instrument_id)

        parsed_all = await self._parse_markets(tuple(wanted))
        for parsed in parsed_all:
            for instrument_id in wanted[parsed.market_type]:
                instrument = parsed.find(instrument_id)
                if not isinstance(instrument, Instrument):
                    self._log.error(_not_found(instrument_id, parsed, instrument))
                    continue
                if not _matches(instrument, parsed.market_type, checked) or not self._accepts(
                    instrument
                ):
                    self._log.warning(
                        f"Not loading {instrument_id}: excluded by the filters {filters} "
                        "or the filter_callable"
                    )
                    continue
                self._add(instrument)

    async def load_async(self, instrument_id: InstrumentId, filters: dict | None = None) -> None:
        """Load one instrument (reads only its market's exchangeInfo)."""
        await self.load_ids_async([instrument_id], filters)

    async def instrument_for(
        self, instrument_id: InstrumentId | str, *, include_non_trading: bool = False
    ) -> Instrument:
        """
        Return the instrument, loading its market's exchangeInfo when not loaded yet.

        The instrument is added to the provider (with its currencies), so asking again costs
        no exchangeInfo read. Without a provider, use the module's :func:`instrument_for`.

        Parameters
        ----------
        instrument_id : InstrumentId | str
            A Nautilus id (``BTCUSD-PERP.BINANCE``) or a Binance symbol of a market
            (``BTCUSDT`` is spot; use the Nautilus id for futures).
        include_non_trading : bool, default False
            Also return symbols listed but not trading (halted, settling, delivered), whose
            history can still be requested.

        Raises
        ------
        InvalidInput
            If the id is malformed or not a Binance id.
        UnknownSymbol
            If Binance's exchangeInfo does not list a tradable instrument with that id (or,
            with ``include_non_trading``, any instrument with that id).

        """
        resolved = resolve_instrument(str(instrument_id))
        iid = InstrumentId.from_str(resolved.instrument_id)
        found = self.find(iid)
        if found is not None:
            return found
        parsed = (await self._parse_markets((resolved.market_type,), include_non_trading))[0]
        instrument = parsed.find(iid)
        if not isinstance(instrument, Instrument):
            raise UnknownSymbol(_not_found(iid, parsed, instrument))
        self._add(instrument)
        return instrument

    # ----------------------------------------------------------------------------------------

    async def _parse_markets(
        self, markets: Iterable[MarketType], include_non_trading: bool = False
    ) -> list[ParsedExchangeInfo]:
        markets = tuple(markets)
        infos = await asyncio.gather(*(self._exchange_info(m) for m in markets))
        ts_init = self._clock.timestamp_ns()
        results = []
        for market, info in zip(markets, infos, strict=True):
            key = (market, include_non_trading)
            memo = self._parsed.get(key)
            if memo is not None and memo[0] is info:
                results.append(memo[1])
                continue
            parsed = parse_exchange_info(
                market, info, ts_init, include_non_trading=include_non_trading
            )
            self._parsed[key] = (info, parsed)
            self._record_skipped(parsed)
            results.append(parsed)
        return results

    def _record_skipped(self, parsed: ParsedExchangeInfo) -> None:
        if not parsed.skipped:
            return
        reasons: dict[str, int] = {}
        for skipped in parsed.skipped:
            self._skipped[f"{skipped.market_type.name}:{skipped.symbol}"] = skipped
            self._log.debug(
                f"Skipped {skipped.market_type.name} {skipped.symbol}: {skipped.reason}"
            )
            # Group "status 'BREAK' is not TRADING"-style reasons; malformed ones stay whole.
            reasons[skipped.reason] = reasons.get(skipped.reason, 0) + 1
        summary = "; ".join(f"{n} x {reason}" for reason, n in sorted(reasons.items()))
        message = (
            f"{parsed.market_type.name} exchangeInfo: {len(parsed.instruments)} instruments, "
            f"{len(parsed.skipped)} symbols skipped ({summary})"
        )
        if self._log_warnings and any(not s.reason.startswith("status") for s in parsed.skipped):
            self._log.warning(message)
        else:
            self._log.info(message)

    def _accepts(self, instrument: Instrument) -> bool:
        return self._filter_callable is None or bool(self._filter_callable(instrument))

    def _add(self, instrument: Instrument) -> None:
        base = getattr(instrument, "base_currency", None) or getattr(instrument, "underlying", None)
        if base is not None:
            self.add_currency(base)
        self.add_currency(instrument.quote_currency)
        self.add(instrument)
        self._log.debug(f"Added instrument {instrument.id}")


async def instrument_for(
    exchange_info: ExchangeInfoFn,
    instrument_id: InstrumentId | str,
    *,
    include_non_trading: bool = False,
    clock: Clock | None = None,
) -> Instrument:
    """
    Return the Nautilus instrument of ``instrument_id`` from its market's exchangeInfo.

    The one way to get an instrument for an id without keeping a provider: it reads only the
    id's market (one ``exchange_info(market_type)`` call, memoised by the manager) and parses
    it as :class:`DSMInstrumentProvider` does, with the same errors.

    Parameters
    ----------
    exchange_info : Callable[[MarketType], Awaitable[Mapping[str, Any]]]
        Returns the decoded exchangeInfo of a market: ``dsm.exchange_info`` of a
        ``DataSourceManager``.
    instrument_id : InstrumentId | str
        A Nautilus id (``BTCUSDT-PERP.BINANCE``) or a Binance symbol of a market (``BTCUSDT``
        is spot; use the Nautilus id for futures).
    include_non_trading : bool, default False
        Also return symbols listed but not trading (halted, settling, delivered), whose history
        can still be requested: pass True when the instrument is wanted for history (ingest,
        quality reports, requests).
    clock : Clock, optional
        Stamps the instrument's ``ts_init``; a ``LiveClock`` (real time) when None.

    Returns
    -------
    Instrument

    Raises
    ------
    InvalidInput
        If the id is malformed or not a Binance id.
    UnknownSymbol
        If the exchangeInfo does not list a tradable instrument with that id (or, with
        ``include_non_trading``, any instrument with that id); the message says why (not
        listed, or listed but skipped, and for which reason).

    Examples
    --------
    In async code, with a ``DataSourceManager`` ``dsm``::

        instrument = await instrument_for(dsm.exchange_info, "BTCUSDT-PERP.BINANCE")

    """
    provider = DSMInstrumentProvider(exchange_info, clock=clock)
    return await provider.instrument_for(instrument_id, include_non_trading=include_non_trading)


def _parse_markets(values: Iterable[Any], where: str) -> tuple[MarketType, ...]:
    if isinstance(values, str | MarketType):
        values = [values]
    try:
        markets = tuple(dict.fromkeys(MarketType.parse(v) for v in values))
    except InvalidInput as e:
        raise InvalidInput(f"{where}: {e}") from e
    return markets


def _as_set(value: Any, where: str, upper: bool = True) -> frozenset[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, Iterable) or not all(isinstance(v, str) for v in items):
        raise InvalidInput(f"filter {where} must be a string or a list of strings, was {value!r}")
    return frozenset(v.strip().upper() if upper else v.strip() for v in items)


def _check_filters(filters: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate and normalise the filters once, so a typo fails loudly instead of matching all."""
    if not filters:
        return {}
    unknown = sorted(set(filters) - set(FILTER_KEYS))
    if unknown:
        raise InvalidInput(
            f"unknown instrument filter(s) {', '.join(unknown)}; "
            f"supported filters: {', '.join(FILTER_KEYS)}"
        )
    checked: dict[str, Any] = {}
    if filters.get("market_types") is not None:
        checked["market_types"] = _parse_markets(filters["market_types"], "filters['market_types']")
    for key in ("quote_assets", "base_assets", "symbols"):
        if filters.get(key) is not None:
            checked[key] = _as_set(filters[key], f"{key!r}")
    return checked


def _matches(instrument: Instrument, market: MarketType, checked: Mapping[str, Any]) -> bool:
    if "market_types" in checked and market not in checked["market_types"]:
        return False
    if "quote_assets" in checked and instrument.quote_currency.code not in checked["quote_assets"]:
        return False
    if "base_assets" in checked:
        base = getattr(instrument, "base_currency", None) or getattr(instrument, "underlying", None)
        if base is None or base.code not in checked["base_assets"]:
            return False
    if "symbols" in checked:
        names = {instrument.raw_symbol.value, instrument.id.symbol.value, instrument.id.value}
        if not names & checked["symbols"]:
            return False
    return True


def _not_found(
    instrument_id: InstrumentId, parsed: ParsedExchangeInfo, skipped: SkippedSymbol | None
) -> str:
    market = parsed.market_type.name
    if skipped is not None:
        message = (
            f"{instrument_id} is listed in the {market} exchangeInfo but was not loaded: "
            f"{skipped.reason}"
        )
        if skipped.reason.startswith("status "):
            message += (
                "; its history can still be requested: pass include_non_trading=True to "
                "instrument_for (nautilus_dsm.ingest and the CLI include non-trading symbols)"
            )
        return message
    return (
        f"{instrument_id} is not listed in the {market} exchangeInfo "
        f"({len(parsed.instruments)} instruments); check the symbol, and that a "
        f"{market} instrument id is meant (e.g. BTCUSDT.BINANCE spot, BTCUSDT-PERP.BINANCE "
        "USDT-M, BTCUSD-PERP.BINANCE COIN-M)"
    )
