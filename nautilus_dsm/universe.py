"""A universe: the symbols of one Binance market chosen from its exchangeInfo, and their spans.

:func:`select_universe` is pure (an exchangeInfo payload in, :class:`UniverseMember` out):
market, quote asset, status (``TRADING``, ``all`` for every listed symbol including those that
no longer trade, whose history still exists, or one Binance status such as ``BREAK``), an
optional list of symbols to keep and a list to exclude. Futures universes are perpetuals.
:func:`lookup_universe` fetches the exchangeInfo through a data-source manager.
:func:`series_spans` gives each member its listing time (the futures ``onboardDate``, else one
REST probe for the first bar, the engine's listing rule) so no month before it is planned.
No NautilusTrader import.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nautilus_dsm.common import Interval, MarketType, resolve_instrument
from nautilus_dsm.common.symbols import to_binance_symbol, to_nautilus_symbol
from nautilus_dsm.constants import VENUE
from nautilus_dsm.errors import InvalidInput, UnknownSymbol

if TYPE_CHECKING:
    from nautilus_dsm.dsm.manager import DataSourceManager

STATUS_ALL = "all"
_FUTURES_CONTRACT = "PERPETUAL"


@dataclass(frozen=True)
class UniverseMember:
    """
    One symbol of a universe.

    Parameters
    ----------
    symbol : str
        Binance's symbol (``BTCUSDT``, ``BTCUSD_PERP``).
    instrument_id : str
        The Nautilus instrument id (``BTCUSDT-PERP.BINANCE``).
    market_type : MarketType
        Its market.
    status : str
        Binance's status (``TRADING``, ``BREAK``, ``SETTLING``...).
    quote_asset : str
        The quote asset (``USDT``; COIN-M quotes ``USD``).
    onboard_ms : int | None
        Futures ``onboardDate`` (epoch ms); None on spot, which lists none.

    """

    symbol: str
    instrument_id: str
    market_type: MarketType
    status: str
    quote_asset: str
    onboard_ms: int | None = None


@dataclass(frozen=True)
class SeriesSpan:
    """A member's bars to ingest: open times ``[start_ms, end_ms)``, never before its listing."""

    member: UniverseMember
    listing_ms: int | None
    start_ms: int
    end_ms: int

    @property
    def empty(self) -> bool:
        """True when nothing is left to ingest (listed after the range, or no bars at all)."""
        return self.start_ms >= self.end_ms


def read_symbols_file(path: str | Path) -> list[str]:
    """
    Read a symbols file: one Binance symbol or Nautilus id a line; ``#`` starts a comment.

    Raises
    ------
    InvalidInput
        The file does not exist or names no symbol.

    """
    file = Path(path)
    if not file.is_file():
        raise InvalidInput(f"symbols file {str(file)!r} does not exist; pass an existing file")
    names = [
        line.split("#", 1)[0].strip() for line in file.read_text(encoding="utf-8").splitlines()
    ]
    names = [n for n in names if n]
    if not names:
        raise InvalidInput(f"symbols file {str(file)!r} names no symbol; one symbol a line")
    return names


def _binance_name(name: str) -> str:
    # "BTCUSDT-PERP.BINANCE", "BTCUSDT-PERP", "btcusdt" -> Binance's symbol.
    text = name.strip().upper()
    if text.endswith(f".{VENUE}"):
        text = text[: -len(VENUE) - 1]
    return to_binance_symbol(text)


def _status_filter(status: str) -> str:
    text = str(status).strip()
    if text.lower() == STATUS_ALL:
        return STATUS_ALL
    if not text.isalpha() and "_" not in text:
        raise InvalidInput(f"status {status!r} is not TRADING, all, or a Binance status")
    return text.upper()


def select_universe(
    exchange_info: dict[str, Any],
    market: MarketType | str,
    *,
    quote: str | None = None,
    status: str = "TRADING",
    symbols: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
) -> list[UniverseMember]:
    """
    Choose a universe from a market's exchangeInfo (pure).

    Parameters
    ----------
    exchange_info : dict
        The decoded ``exchangeInfo`` of ``market``.
    market : MarketType | str
        ``spot``, ``futures_usdt`` or ``futures_coin``.
    quote : str, optional
        Keep only this quote asset (``USDT``).
    status : str, default "TRADING"
        ``TRADING``, ``all`` (every listed symbol, those that no longer trade too), or one
        Binance status (``BREAK``).
    symbols : Iterable[str], optional
        Keep only these (Binance symbols or Nautilus ids); each must be listed.
    exclude : Iterable[str]
        Drop these (Binance symbols or Nautilus ids).

    Returns
    -------
    list[UniverseMember]
        Sorted by symbol.

    Raises
    ------
    InvalidInput
        A bad market or status, or a universe that selects nothing.
    UnknownSymbol
        A name of ``symbols`` the market does not list.

    """
    market_type = MarketType.parse(market)
    wanted_status = _status_filter(status)
    wanted = None if symbols is None else {_binance_name(s) for s in symbols}
    dropped = {_binance_name(s) for s in exclude}
    listed = [_member(raw, market_type) for raw in exchange_info.get("symbols", [])]
    members = {m.symbol: m for m in listed if m is not None}
    if wanted is not None:
        unknown = sorted(wanted - members.keys())
        if unknown:
            raise UnknownSymbol(
                f"{', '.join(unknown)} not listed on Binance {market_type.value} "
                f"(futures universes are perpetuals); fix the symbols file or pick the market"
            )
    chosen = [
        m
        for m in members.values()
        if (wanted is None or m.symbol in wanted)
        and m.symbol not in dropped
        and (quote is None or m.quote_asset == quote.upper())
        and (wanted_status == STATUS_ALL or m.status == wanted_status)
    ]
    if not chosen:
        raise InvalidInput(
            f"the {market_type.value} universe (quote {quote or 'any'}, status {status}) "
            "selects no symbol; widen --quote / --status or check --symbols-file / --exclude"
        )
    return sorted(chosen, key=lambda m: m.symbol)


def _member(raw: dict[str, Any], market: MarketType) -> UniverseMember | None:
    symbol = str(raw.get("symbol", ""))
    if market.is_futures and raw.get("contractType", _FUTURES_CONTRACT) != _FUTURES_CONTRACT:
        return None  # delivery contracts are not part of a perpetual universe
    status = str(raw.get("status") or raw.get("contractStatus") or "")
    try:
        resolved = resolve_instrument(f"{to_nautilus_symbol(symbol, market)}.{VENUE}", market)
    except InvalidInput:
        return None  # a symbol outside Binance's public alphabet, or of another market
    onboard = raw.get("onboardDate")
    return UniverseMember(
        symbol=resolved.symbol,
        instrument_id=resolved.instrument_id,
        market_type=market,
        status=status,
        quote_asset=str(raw.get("quoteAsset", "")),
        onboard_ms=int(onboard) if isinstance(onboard, int | float) else None,
    )


async def lookup_universe(
    dsm: DataSourceManager,
    market: MarketType | str,
    *,
    quote: str | None = None,
    status: str = "TRADING",
    symbols: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
) -> list[UniverseMember]:
    """Fetch the market's exchangeInfo through ``dsm`` and :func:`select_universe` from it."""
    market_type = MarketType.parse(market)
    _status_filter(status)  # refused before any I/O
    info = await dsm.exchange_info(market_type)
    return select_universe(
        info, market_type, quote=quote, status=status, symbols=symbols, exclude=exclude
    )


async def series_spans(
    dsm: DataSourceManager,
    members: Sequence[UniverseMember],
    interval: Interval | str,
    start_ms: int,
    end_ms: int,
    *,
    concurrency: int = 4,
) -> list[SeriesSpan]:
    """
    Return each member's span ``[max(start, listing), end)`` of bar open times.

    The listing is the futures ``onboardDate`` when exchangeInfo has one, else the first bar
    REST serves from epoch 0 (one request per symbol, ``concurrency`` at a time; a symbol with
    no bar at all gets an empty span).
    """
    iv = Interval.parse(interval)
    gate = asyncio.Semaphore(concurrency)

    async def span(member: UniverseMember) -> SeriesSpan:
        listing = member.onboard_ms
        if listing is None:
            async with gate:
                client = dsm.rest_client(member.market_type)
                listing = await client.first_open_time(member.symbol, iv, 0)
            if listing is None:
                return SeriesSpan(member, None, end_ms, end_ms)
        first = max(start_ms, iv.floor_ms(listing))
        return SeriesSpan(member, listing, min(first, end_ms), end_ms)

    return list(await asyncio.gather(*(span(m) for m in members)))
