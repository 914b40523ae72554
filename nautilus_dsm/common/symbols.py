"""Nautilus instrument id <-> Binance symbol, and the market each id belongs to.

The mapping is identical to NautilusTrader's own Binance adapter
(``adapters/binance/common/symbol.py``) so that DSM bars and Binance execution share one
instrument id. The market type is always inferred from the instrument id: perpetual data from the
SPOT endpoint is silently wrong data, so a contradiction is an error, never a guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nautilus_dsm.common.markets import MarketType
from nautilus_dsm.constants import VENUE
from nautilus_dsm.errors import InvalidInput, MarketTypeMismatch

_LINEAR_QUOTES = ("USDT", "BUSD", "TUSD", "FDUSD", "USDC", "DAI")
# Binance's public symbol alphabet; anything else (dots, slashes, spaces) could escape a path.
# The one definition: the cache and Vision validate with it too (check_binance_symbol).
BINANCE_SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,24}(_(PERP|[0-9]{6}))?$")
_NAUTILUS_SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,24}(-PERP|_[0-9]{6})?$")


def _is_linear(base_symbol: str) -> bool:
    # Same guard as NautilusTrader: COIN-M {BASE}USD can overlap a linear quote (BNBUSD / BUSD).
    return any(
        base_symbol.endswith(q) and (not q.endswith("USD") or len(base_symbol) > len(q) + 2)
        for q in _LINEAR_QUOTES
    )


@dataclass(frozen=True)
class ResolvedInstrument:
    """An instrument resolved to its market: the Nautilus id and the Binance symbol."""

    instrument_id: str  # "BTCUSDT-PERP.BINANCE"
    symbol: str  # Binance's symbol: "BTCUSDT", "BTCUSD_PERP"
    market_type: MarketType

    @property
    def nautilus_symbol(self) -> str:
        """The instrument id without its venue (``BTCUSDT-PERP``)."""
        return self.instrument_id.rsplit(".", 1)[0]


def market_type_of(nautilus_symbol: str) -> MarketType:
    """Infer the market from a Nautilus Binance symbol (``BTCUSDT-PERP`` -> FUTURES_USDT)."""
    if nautilus_symbol.endswith("-PERP"):
        base = nautilus_symbol[: -len("-PERP")]
        return MarketType.FUTURES_USDT if _is_linear(base) else MarketType.FUTURES_COIN
    if "_" in nautilus_symbol:  # deliverable: BTCUSDT_240628 (UM) / BTCUSD_240628 (CM)
        base = nautilus_symbol.split("_", 1)[0]
        return MarketType.FUTURES_USDT if _is_linear(base) else MarketType.FUTURES_COIN
    return MarketType.SPOT


def to_binance_symbol(nautilus_symbol: str) -> str:
    """``BTCUSDT-PERP`` -> ``BTCUSDT``; ``BTCUSD-PERP`` -> ``BTCUSD_PERP``; others unchanged."""
    if nautilus_symbol.endswith("-PERP"):
        base = nautilus_symbol[: -len("-PERP")]
        return base if _is_linear(base) else base + "_PERP"
    return nautilus_symbol


def to_nautilus_symbol(binance_symbol: str, market_type: MarketType) -> str:
    """``BTCUSDT`` on FUTURES_USDT -> ``BTCUSDT-PERP``; ``BTCUSD_PERP`` -> ``BTCUSD-PERP``."""
    if market_type is MarketType.SPOT or binance_symbol[-1].isdigit():
        return binance_symbol
    if binance_symbol.endswith("_PERP"):
        return binance_symbol.replace("_", "-")
    return binance_symbol + "-PERP"


_DESCRIBE = {
    MarketType.SPOT: "a SPOT instrument",
    MarketType.FUTURES_USDT: "a USDT-margined futures instrument",
    MarketType.FUTURES_COIN: "a coin-margined futures instrument",
}


def _mismatch(instrument_id: str, inferred: MarketType, given: MarketType) -> MarketTypeMismatch:
    hint = {
        MarketType.SPOT: "the spot instrument id (e.g. BTCUSDT.BINANCE)",
        MarketType.FUTURES_USDT: "the USDT-M perpetual id (e.g. BTCUSDT-PERP.BINANCE)",
        MarketType.FUTURES_COIN: "the COIN-M perpetual id (e.g. BTCUSD-PERP.BINANCE)",
    }[given]
    return MarketTypeMismatch(
        f"{instrument_id} is {_DESCRIBE[inferred]}, but market type {given.name} was requested; "
        f"use MarketType.{inferred.name} (--market-type {inferred.value}) or leave it unset, "
        f"or use {hint}"
    )


def resolve_instrument(
    instrument_id_or_symbol: str,
    market_type: MarketType | str | None = None,
) -> ResolvedInstrument:
    """Resolve a Nautilus instrument id or a raw Binance symbol to its market.

    A Nautilus id (``BTCUSDT-PERP.BINANCE``) carries its market; an explicit ``market_type``
    that contradicts it raises :class:`MarketTypeMismatch`. A raw Binance symbol (no venue,
    e.g. ``BTCUSDT``) takes the explicit market type, spot when none is given.
    """
    given = MarketType.parse(market_type) if market_type is not None else None
    text = str(instrument_id_or_symbol).strip()
    if "." in text:
        symbol_part, venue = text.rsplit(".", 1)
        if not venue.isalnum():  # "../x", "BTC.USDT/": a path, not a venue
            _check_symbol(text, BINANCE_SYMBOL_RE, text)
        if venue != VENUE:
            raise InvalidInput(
                f"instrument id {text!r} has venue {venue!r}; nautilus-dsm serves Binance data, "
                f"so use the {VENUE} venue, e.g. BTCUSDT-PERP.{VENUE}"
            )
        _check_symbol(symbol_part, _NAUTILUS_SYMBOL_RE, text)
        inferred = market_type_of(symbol_part)
        if given is not None and given is not inferred:
            raise _mismatch(text, inferred, given)
        return ResolvedInstrument(text, to_binance_symbol(symbol_part), inferred)

    raw = text.upper()
    if raw.endswith("-PERP"):  # a Nautilus symbol without the venue
        return resolve_instrument(f"{raw}.{VENUE}", given)
    _check_symbol(raw, BINANCE_SYMBOL_RE, text)
    if raw.endswith("_PERP") or "_" in raw:
        inferred = market_type_of(raw if not raw.endswith("_PERP") else raw[:-5] + "-PERP")
        if given is not None and given is not inferred:
            raise _mismatch(raw, inferred, given)
        market = inferred
    else:
        market = given or MarketType.SPOT
    return ResolvedInstrument(f"{to_nautilus_symbol(raw, market)}.{VENUE}", raw, market)


_MARKET_WORDS = {
    MarketType.SPOT: "spot",
    MarketType.FUTURES_USDT: "USDT-M perpetual",
    MarketType.FUTURES_COIN: "COIN-M perpetual",
}


def candidate_ids(symbol: str) -> list[tuple[str, MarketType]]:
    """
    Return the instrument ids a raw Binance symbol could mean, one per market (pure).

    ``BTCUSDT`` -> ``BTCUSDT.BINANCE`` (spot), ``BTCUSDT-PERP.BINANCE`` (USDT-M) and
    ``BTCUSD-PERP.BINANCE`` (COIN-M, the same base against USD); a market's form is left out
    when the symbol cannot have one (``ETHBTC`` has no USDT-M or COIN-M perpetual form). Only
    the shape of the symbol is looked at: whether Binance lists each id is not checked.

    Parameters
    ----------
    symbol : str
        A raw Binance symbol without venue, e.g. ``BTCUSDT``.

    Returns
    -------
    list[tuple[str, MarketType]]

    """
    raw = symbol.strip().upper()
    found = [(f"{raw}.{VENUE}", MarketType.SPOT)]
    if _is_linear(raw):
        found.append((f"{raw}-PERP.{VENUE}", MarketType.FUTURES_USDT))
    quotes = sorted(_LINEAR_QUOTES, key=len, reverse=True) if _is_linear(raw) else ["USD"]
    quote = next((q for q in quotes if raw.endswith(q)), "")
    base = raw[: -len(quote)] if quote else ""
    if base and market_type_of(f"{base}USD-PERP") is MarketType.FUTURES_COIN:
        found.append((f"{base}USD-PERP.{VENUE}", MarketType.FUTURES_COIN))
    return found


def refuse_marketless_symbol(instrument_id_or_symbol: str, market_type: object) -> None:
    """
    Refuse a raw Binance symbol that names no market when no market type is given.

    ``BTCUSDT`` is spot, a USDT-M perpetual and (as ``BTCUSD_PERP``) a COIN-M perpetual at
    once; guessing one would serve another market's data under the user's name for it. An
    instrument id (``BTCUSDT-PERP.BINANCE``), a symbol carrying its market (``BTCUSD_PERP``,
    ``BTCUSDT_240628``) or an explicit ``market_type`` passes.

    Parameters
    ----------
    instrument_id_or_symbol : str
        What the user typed.
    market_type : object
        The explicit market type, or None.

    Raises
    ------
    InvalidInput
        Naming the ids the symbol could mean and ``--market-type``.

    """
    text = str(instrument_id_or_symbol).strip()
    raw = text.upper()
    if market_type is not None or "." in text or "_" in raw or raw.endswith("-PERP"):
        return
    _check_symbol(raw, BINANCE_SYMBOL_RE, text)
    meanings = ", ".join(f"{i} ({_MARKET_WORDS[m]})" for i, m in candidate_ids(raw))
    raise InvalidInput(
        f"{text!r} is a Binance symbol without a market; use the instrument id you mean: "
        f"{meanings}, or pass --market-type (spot, futures_usdt, futures_coin)"
    )


def check_binance_symbol(symbol: str) -> str:
    """Return ``symbol`` when it is a Binance symbol (``BTCUSDT``, ``BTCUSD_PERP``), else raise.

    Symbols become file and URL path segments (cache folders, Vision file names), so anything
    outside Binance's alphabet is refused with :class:`InvalidInput` before it reaches a path.
    """
    _check_symbol(symbol, BINANCE_SYMBOL_RE, symbol)
    return symbol


def _check_symbol(symbol: str, pattern: re.Pattern[str], original: str) -> None:
    if not pattern.fullmatch(symbol):  # fullmatch: "$" would accept a trailing newline
        raise InvalidInput(
            f"invalid symbol {original!r}: Binance symbols are upper-case letters and digits "
            "(e.g. BTCUSDT, BTCUSD_PERP, or the Nautilus id BTCUSDT-PERP.BINANCE)"
        )
