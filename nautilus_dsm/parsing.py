"""Binance exchangeInfo -> Nautilus instruments (pure: no I/O, no clock).

The specs mirror NautilusTrader's own Binance instrument providers
(``adapters/binance/spot/providers.py`` and ``adapters/binance/futures/providers.py``), field by
field, so an instrument built here is interchangeable with the one a Binance execution client
loads: same id, precisions (from the ``tickSize``/``stepSize`` string exponent, so spot
``"0.01000000"`` gives 8), increments, limits, margins and fees. Two deliberate differences:

* COIN-M (``dapi``) contracts are **inverse**: ``is_inverse=True``, ``multiplier=contractSize``
  (100 USD for ``BTCUSD_PERP``), settled in the margin asset (BTC). NautilusTrader's adapter
  builds them linear with multiplier 1, which makes the notional of one contract
  ``1 * price`` USD instead of ``100 / price`` BTC, so every PnL, margin and position size of a
  COIN-M backtest would be wrong.
* Symbols Binance does not trade (status other than ``TRADING``) or whose contract type has no
  Nautilus instrument are never dropped silently: :func:`parse_exchange_info` returns them as
  :class:`SkippedSymbol` with the reason.

Fees: exchangeInfo carries none and the account fee endpoints need API keys, so we use what
NautilusTrader uses without keys: zero for spot, and the VIP 0 futures tier (maker 0.0002,
taker 0.0005) for USDT-M and COIN-M, as in its futures provider's fee table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import cached_property
from typing import Any

from nautilus_trader.model.enums import CurrencyType
from nautilus_trader.model.identifiers import InstrumentId, Symbol, Venue
from nautilus_trader.model.instruments import (
    CryptoFuture,
    CryptoPerpetual,
    CurrencyPair,
    Instrument,
)
from nautilus_trader.model.objects import (
    PRICE_MAX,
    QUANTITY_MAX,
    Currency,
    Money,
    Price,
    Quantity,
)

from nautilus_dsm.common import ENDPOINTS, MarketType, to_nautilus_symbol
from nautilus_dsm.constants import NS_PER_MS, VENUE
from nautilus_dsm.errors import InvalidInput, MarketTypeMismatch

TRADING = "TRADING"

PERPETUAL_CONTRACT_TYPES = frozenset({"PERPETUAL", "PERPETUAL_DELIVERING", "TRADIFI_PERPETUAL"})
DELIVERABLE_CONTRACT_TYPES = frozenset(
    {
        "CURRENT_MONTH",
        "NEXT_MONTH",
        "CURRENT_QUARTER",
        "NEXT_QUARTER",
        "CURRENT_QUARTER DELIVERING",  # Binance omits the underscore
    }
)

# NautilusTrader's defaults without API keys (see module docstring): (maker, taker).
DEFAULT_FEES: dict[MarketType, tuple[Decimal, Decimal]] = {
    MarketType.SPOT: (Decimal(0), Decimal(0)),
    MarketType.FUTURES_USDT: (Decimal("0.000200"), Decimal("0.000500")),
    MarketType.FUTURES_COIN: (Decimal("0.000200"), Decimal("0.000500")),
}

# NautilusTrader caps spot max price at 2**32 (spot providers.py); futures are not capped.
_SPOT_MAX_PRICE = Decimal(4294967296)
_BINANCE_VENUE = Venue(VENUE)


@dataclass(frozen=True)
class SkippedSymbol:
    """A symbol of an exchangeInfo that produced no instrument, and why."""

    symbol: str
    market_type: MarketType
    reason: str


@dataclass(frozen=True)
class ParsedExchangeInfo:
    """Every symbol of one exchangeInfo, either as an instrument or as a skipped symbol."""

    market_type: MarketType
    instruments: list[Instrument]
    skipped: list[SkippedSymbol]

    def find(self, instrument_id: InstrumentId | str) -> Instrument | SkippedSymbol | None:
        """
        Return the instrument with this Nautilus id, else its skipped symbol, else None.

        The skipped symbol it would have been lets a caller say why it is missing; None means
        the exchangeInfo does not list it.
        """
        return self._by_id.get(str(instrument_id))

    @cached_property
    def _by_id(self) -> dict[str, Instrument | SkippedSymbol]:
        index: dict[str, Instrument | SkippedSymbol] = {}
        for skipped in self.skipped:
            if skipped.symbol:  # a malformed definition may have none
                nautilus = to_nautilus_symbol(skipped.symbol, self.market_type)
                index.setdefault(f"{nautilus}.{VENUE}", skipped)
        # A symbol listed twice is both built and skipped: the instrument wins.
        index.update((instrument.id.value, instrument) for instrument in self.instruments)
        return index


def parse_instruments(
    market_type: MarketType,
    exchange_info: Mapping[str, Any],
    ts_init: int,
) -> list[Instrument]:
    """
    Parse the tradable instruments of one market's exchangeInfo.

    The parameters are those of :func:`parse_exchange_info`, which also says which symbols were
    skipped and why.
    """
    return parse_exchange_info(market_type, exchange_info, ts_init).instruments


def parse_exchange_info(
    market_type: MarketType,
    exchange_info: Mapping[str, Any],
    ts_init: int,
    *,
    include_non_trading: bool = False,
) -> ParsedExchangeInfo:
    """
    Parse one market's exchangeInfo into instruments and skipped symbols.

    Every symbol ends up in exactly one of the two lists, in the payload's order.

    Parameters
    ----------
    market_type : MarketType
        The market the exchangeInfo was fetched from.
    exchange_info : Mapping[str, Any]
        Binance's decoded ``exchangeInfo`` JSON.
    ts_init : int
        UNIX nanoseconds the instruments are initialised at.
    include_non_trading : bool, default False
        Also build instruments for symbols whose status is not ``TRADING`` (halted, settling...).

    Returns
    -------
    ParsedExchangeInfo

    Raises
    ------
    InvalidInput
        If the payload is not an exchangeInfo (no ``symbols`` list).
    MarketTypeMismatch
        If the payload belongs to another market (e.g. spot exchangeInfo parsed as futures).

    """
    symbols = _symbols_of(market_type, exchange_info)
    _check_payload_market(market_type, symbols)
    server_time = exchange_info.get("serverTime")
    ts_event = int(server_time) * NS_PER_MS if isinstance(server_time, int) else ts_init

    instruments: list[Instrument] = []
    skipped: list[SkippedSymbol] = []
    seen: set[str] = set()
    for symbol_info in symbols:
        name = str(symbol_info.get("symbol", "?")) if isinstance(symbol_info, Mapping) else "?"
        reason = "listed twice in exchangeInfo; the first listing is used" if name in seen else None
        seen.add(name)
        reason = reason or skip_reason(market_type, symbol_info)
        if reason is not None and not (include_non_trading and reason.startswith("status ")):
            skipped.append(SkippedSymbol(name, market_type, reason))
            continue
        try:
            instruments.append(parse_instrument(market_type, symbol_info, ts_init, ts_event))
        except InvalidInput as e:
            skipped.append(SkippedSymbol(name, market_type, str(e)))
    return ParsedExchangeInfo(market_type, instruments, skipped)


def skip_reason(market_type: MarketType, symbol_info: Mapping[str, Any]) -> str | None:
    """
    Return why a symbol yields no instrument (not trading, unsupported contract), or None.

    Malformed definitions are reported by :func:`parse_instrument` instead.
    """
    if not isinstance(symbol_info, Mapping):
        return f"symbol definition is a {type(symbol_info).__name__}, not an object"
    # USDT-M reports `status`, COIN-M `contractStatus`.
    status = symbol_info.get("status", symbol_info.get("contractStatus"))
    if market_type.is_futures:
        contract_type = symbol_info.get("contractType")
        if contract_type == "":
            return "contract type not yet defined (empty contractType)"
        if contract_type not in PERPETUAL_CONTRACT_TYPES | DELIVERABLE_CONTRACT_TYPES:
            return f"unsupported contract type {contract_type!r}"
    if status != TRADING:
        return f"status {status!r} is not {TRADING}"
    return None


def parse_instrument(
    market_type: MarketType,
    symbol_info: Mapping[str, Any],
    ts_init: int,
    ts_event: int | None = None,
    *,
    maker_fee: Decimal | None = None,
    taker_fee: Decimal | None = None,
) -> Instrument:
    """
    Parse one exchangeInfo symbol into a Nautilus instrument (whatever its status).

    Parameters
    ----------
    market_type : MarketType
        The market the symbol was listed on.
    symbol_info : Mapping[str, Any]
        One element of exchangeInfo's ``symbols``.
    ts_init : int
        UNIX nanoseconds the instrument is initialised at.
    ts_event : int, optional
        UNIX nanoseconds of the exchangeInfo (``serverTime``); ``ts_init`` when None.
    maker_fee, taker_fee : Decimal, optional
        Override the default fees (:data:`DEFAULT_FEES`), e.g. with your account's tier.

    Returns
    -------
    CurrencyPair | CryptoPerpetual | CryptoFuture

    Raises
    ------
    InvalidInput
        If the definition is malformed or its contract type has no Nautilus instrument; the
        message names the symbol and the field.

    """
    if not isinstance(symbol_info, Mapping):
        raise InvalidInput(f"{market_type.name} symbol definition must be an object")
    default_maker, default_taker = DEFAULT_FEES[market_type]
    fees = (
        default_maker if maker_fee is None else maker_fee,
        default_taker if taker_fee is None else taker_fee,
    )
    ts_event = ts_init if ts_event is None else ts_event
    spec = _Spec(market_type, symbol_info)
    try:
        if market_type is MarketType.SPOT:
            return _currency_pair(spec, fees, ts_event, ts_init)
        return _futures_instrument(spec, fees, ts_event, ts_init)
    except InvalidInput:
        raise
    except (ValueError, TypeError, OverflowError) as e:
        # Nautilus' own checks (currency precision, price ranges...) on a well-formed payload.
        raise spec.error(f"is rejected by Nautilus ({type(e).__name__}: {e})") from e


# --------------------------------------------------------------------------------------------
# Internals
# --------------------------------------------------------------------------------------------


class _Spec:
    """Field access on one symbol definition with errors naming the symbol and the field."""

    def __init__(self, market_type: MarketType, info: Mapping[str, Any]) -> None:
        self.market_type = market_type
        self.info = info
        symbol = info.get("symbol")
        if not isinstance(symbol, str) or not symbol:
            raise InvalidInput(
                f"{market_type.name} exchangeInfo symbol without a 'symbol' field: {dict(info)!r}"
            )
        self.symbol = symbol
        filters = info.get("filters")
        if not isinstance(filters, list):
            raise self.error("has no 'filters' list")
        self.filters = {f.get("filterType"): f for f in filters if isinstance(f, Mapping)}

    def error(self, what: str) -> InvalidInput:
        return InvalidInput(
            f"{self.market_type.name} symbol {self.symbol} {what}; the exchangeInfo definition "
            "is malformed, so no instrument is built for it (refetch exchangeInfo from Binance)"
        )

    def field(self, name: str) -> Any:
        if name not in self.info or self.info[name] is None:
            raise self.error(f"has no {name!r} field")
        return self.info[name]

    def text(self, name: str) -> str:
        value = self.field(name)
        if not isinstance(value, str) or not value:
            raise self.error(f"has a non-text {name!r}: {value!r}")
        return value

    def integer(self, name: str) -> int:
        value = self.field(name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(f"has a non-integer {name!r}: {value!r}")
        return value

    def filter(self, filter_type: str) -> Mapping[str, Any]:
        found = self.filters.get(filter_type)
        if found is None:
            raise self.error(f"has no {filter_type} filter")
        return found

    def decimal(self, filter_type: str, name: str) -> Decimal:
        raw = self.filter(filter_type).get(name)
        try:
            value = Decimal(str(raw)) if isinstance(raw, str | int) else None
        except InvalidOperation:
            value = None
        if value is None or not value.is_finite():
            raise self.error(f"has an invalid {filter_type}.{name}: {raw!r}")
        return value

    def currency(self, asset_field: str, precision_field: str) -> Currency:
        code = self.text(asset_field)
        return Currency(
            code=code,
            precision=self.integer(precision_field),
            iso4217=0,
            name=code,
            currency_type=CurrencyType.CRYPTO,
        )


def _symbols_of(market_type: MarketType, exchange_info: Mapping[str, Any]) -> list[Any]:
    symbols = exchange_info.get("symbols") if isinstance(exchange_info, Mapping) else None
    if not isinstance(symbols, list):
        raise InvalidInput(
            f"{market_type.name} exchangeInfo has no 'symbols' list; pass the decoded JSON of "
            "Binance's GET exchangeInfo response (/api/v3, /fapi/v1 or /dapi/v1)"
        )
    return symbols


def _payload_market(symbol_info: Mapping[str, Any]) -> MarketType:
    if "contractType" not in symbol_info:
        return MarketType.SPOT
    if "contractSize" in symbol_info:  # only COIN-M contracts have a size in USD
        return MarketType.FUTURES_COIN
    return MarketType.FUTURES_USDT


_ENDPOINT = {market: f"{e.rest_prefix}/exchangeInfo" for market, e in ENDPOINTS.items()}


def _check_payload_market(market_type: MarketType, symbols: list[Any]) -> None:
    first = next((s for s in symbols if isinstance(s, Mapping)), None)
    if first is None:
        return
    actual = _payload_market(first)
    if actual is not market_type:
        raise MarketTypeMismatch(
            f"exchangeInfo symbol {first.get('symbol')!r} is from {actual.name} "
            f"({_ENDPOINT[actual]}), but it was parsed as {market_type.name}; parse it with "
            f"MarketType.{actual.name} or fetch {_ENDPOINT[market_type]}"
        )


def _precision(step: Decimal) -> int:
    exponent = step.as_tuple().exponent
    assert isinstance(exponent, int)  # finite, checked by _Spec.decimal
    return -exponent if exponent < 0 else 0


def _quantize(value: Decimal, precision: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-precision), rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class _Common:
    price_precision: int
    size_precision: int
    price_increment: Price
    size_increment: Quantity
    max_quantity: Quantity
    min_quantity: Quantity
    max_price: Decimal
    min_price: Decimal


def _common(spec: _Spec) -> _Common:
    tick = spec.decimal("PRICE_FILTER", "tickSize")
    step = spec.decimal("LOT_SIZE", "stepSize")
    if not 0 < tick <= Decimal(PRICE_MAX):
        raise spec.error(f"has tickSize {tick} outside (0, {PRICE_MAX}]")
    if not 0 < step <= Decimal(QUANTITY_MAX):
        raise spec.error(f"has stepSize {step} outside (0, {QUANTITY_MAX}]")
    price_precision, size_precision = _precision(tick), _precision(step)
    max_qty = spec.decimal("LOT_SIZE", "maxQty")
    min_qty = spec.decimal("LOT_SIZE", "minQty")
    for name, qty in (("maxQty", max_qty), ("minQty", min_qty)):
        if not 0 <= qty <= Decimal(QUANTITY_MAX):
            raise spec.error(f"has LOT_SIZE.{name} {qty} outside [0, {QUANTITY_MAX}]")
    return _Common(
        price_precision=price_precision,
        size_precision=size_precision,
        price_increment=Price.from_decimal(tick),
        size_increment=Quantity.from_decimal(step),
        max_quantity=Quantity.from_decimal(_quantize(max_qty, size_precision)),
        min_quantity=Quantity.from_decimal(_quantize(min_qty, size_precision)),
        max_price=spec.decimal("PRICE_FILTER", "maxPrice"),
        min_price=spec.decimal("PRICE_FILTER", "minPrice"),
    )


def _price(value: Decimal, precision: int) -> Price:
    return Price.from_decimal(_quantize(value, precision))


def _currency_pair(
    spec: _Spec,
    fees: tuple[Decimal, Decimal],
    ts_event: int,
    ts_init: int,
) -> CurrencyPair:
    base = spec.currency("baseAsset", "baseAssetPrecision")
    quote = spec.currency("quoteAsset", "quoteAssetPrecision")
    common = _common(spec)
    # Older payloads carry MIN_NOTIONAL, newer ones NOTIONAL (which also has a maximum).
    max_notional = min_notional = None
    if "MIN_NOTIONAL" in spec.filters:
        min_notional = Money(spec.decimal("MIN_NOTIONAL", "minNotional"), quote)
    elif "NOTIONAL" in spec.filters:
        max_notional = Money(spec.decimal("NOTIONAL", "maxNotional"), quote)
        min_notional = Money(spec.decimal("NOTIONAL", "minNotional"), quote)
    symbol = Symbol(spec.symbol)
    return CurrencyPair(
        instrument_id=InstrumentId(symbol, _BINANCE_VENUE),
        raw_symbol=symbol,
        base_currency=base,
        quote_currency=quote,
        price_precision=common.price_precision,
        size_precision=common.size_precision,
        price_increment=common.price_increment,
        size_increment=common.size_increment,
        lot_size=common.size_increment,
        max_quantity=common.max_quantity,
        min_quantity=common.min_quantity,
        max_notional=max_notional,
        min_notional=min_notional,
        max_price=_price(min(common.max_price, _SPOT_MAX_PRICE), common.price_precision),
        min_price=_price(max(common.min_price, Decimal(0)), common.price_precision),
        margin_init=Decimal(0),
        margin_maint=Decimal(0),
        maker_fee=fees[0],
        taker_fee=fees[1],
        ts_event=min(ts_event, ts_init),
        ts_init=ts_init,
        info=dict(spec.info),
    )


def _settlement(spec: _Spec, base: Currency, quote: Currency) -> tuple[Currency, Quantity]:
    """Return the settlement currency (the margin asset) and the contract multiplier of a future."""
    margin_asset = spec.text("marginAsset")
    if margin_asset == base.code:
        settlement = base
    elif margin_asset == quote.code:
        settlement = quote
    else:
        raise spec.error(f"has margin asset {margin_asset} that is neither base nor quote")

    multiplier = Quantity.from_int(1)
    if spec.market_type is MarketType.FUTURES_COIN:  # inverse
        if settlement is not base:
            raise spec.error(f"is COIN-M but margined in {margin_asset}, not {base.code}")
        contract_size = spec.integer("contractSize")
        if contract_size <= 0:
            raise spec.error(f"has contractSize {contract_size}, which must be positive")
        multiplier = Quantity.from_int(contract_size)
    return settlement, multiplier


def _futures_instrument(
    spec: _Spec,
    fees: tuple[Decimal, Decimal],
    ts_event: int,
    ts_init: int,
) -> CryptoPerpetual | CryptoFuture:
    contract_type = spec.field("contractType")
    is_perpetual = contract_type in PERPETUAL_CONTRACT_TYPES
    if not is_perpetual and contract_type not in DELIVERABLE_CONTRACT_TYPES:
        raise InvalidInput(
            f"{spec.market_type.name} symbol {spec.symbol} has contract type {contract_type!r}, "
            "which has no Nautilus instrument; supported: "
            + ", ".join(sorted(PERPETUAL_CONTRACT_TYPES | DELIVERABLE_CONTRACT_TYPES))
        )
    base = spec.currency("baseAsset", "baseAssetPrecision")
    quote = spec.currency("quoteAsset", "quotePrecision")
    settlement, multiplier = _settlement(spec, base, quote)
    is_inverse = spec.market_type is MarketType.FUTURES_COIN
    common = _common(spec)
    min_notional = None
    if "MIN_NOTIONAL" in spec.filters:  # USDT-M only; COIN-M sizes are in contracts
        min_notional = Money(spec.decimal("MIN_NOTIONAL", "notional"), quote)
    raw_symbol = Symbol(spec.symbol)
    instrument_id = InstrumentId(
        Symbol(to_nautilus_symbol(spec.symbol, spec.market_type)), _BINANCE_VENUE
    )
    kwargs: dict[str, Any] = {
        "instrument_id": instrument_id,
        "raw_symbol": raw_symbol,
        "quote_currency": quote,
        "settlement_currency": settlement,
        "is_inverse": is_inverse,
        "price_precision": common.price_precision,
        "size_precision": common.size_precision,
        "price_increment": common.price_increment,
        "size_increment": common.size_increment,
        "multiplier": multiplier,
        "max_quantity": common.max_quantity,
        "min_quantity": common.min_quantity,
        "max_notional": None,  # NT takes it from the account's position risk (needs keys)
        "min_notional": min_notional,
        "max_price": _price(common.max_price, common.price_precision),
        "min_price": _price(common.min_price, common.price_precision),
        # NautilusTrader: "Binance docs: ignore API values" (margin comes from leverage).
        "margin_init": Decimal(1),
        "margin_maint": Decimal(1),
        "maker_fee": fees[0],
        "taker_fee": fees[1],
        "ts_event": ts_event,
        "ts_init": ts_init,
        "info": dict(spec.info),
    }
    if is_perpetual:
        return CryptoPerpetual(base_currency=base, **kwargs)
    return CryptoFuture(
        underlying=base,
        activation_ns=spec.integer("onboardDate") * NS_PER_MS,
        expiration_ns=spec.integer("deliveryDate") * NS_PER_MS,
        **kwargs,
    )
