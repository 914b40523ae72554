"""Symbols of the Binance imitation and their ``exchangeInfo`` payloads, in Binance's formats.

The payloads follow Binance's live responses field for field (spot ``/api/v3``, USDT-M
``/fapi/v1``, COIN-M ``/dapi/v1``), so NautilusTrader's own msgspec schemas decode them and an
instrument provider sees exactly what it would see in production.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from nautilus_dsm.common import ENDPOINTS, MarketType, to_ms

DEFAULT_LISTED_MS = to_ms(datetime(2020, 1, 1, tzinfo=UTC))
# Binance's "perpetual" delivery date (2100-12-25 08:00 UTC).
PERPETUAL_DELIVERY_MS = 4_133_404_800_000


def decimals_of(text: str) -> int:
    """Count the decimals a Binance decimal string carries (``"0.10"`` -> 2, ``"1"`` -> 0)."""
    exponent = Decimal(text).as_tuple().exponent
    return max(0, -int(exponent))


def _fmt(value: Decimal | float | int, decimals: int) -> str:
    return f"{Decimal(str(value)):.{decimals}f}"


@dataclass(frozen=True)
class SymbolSpec:
    """One listed symbol of the imitation.

    Parameters
    ----------
    symbol
        Binance's symbol (``BTCUSDT``, ``BTCUSD_PERP``).
    base_asset, quote_asset
        Assets (``BTC``/``USDT``; COIN-M quotes ``USD``).
    base_price
        Centre of the generated price path, in quote units.
    tick_size, step_size
        Binance's filter strings; spot carries 8 decimals (``"0.01000000"``), futures as
        Binance prints them (``"0.10"``, ``"0.001"``, ``"1"``). Their decimals give futures'
        ``pricePrecision`` / ``quantityPrecision``.
    listed_ms
        Listing time (epoch ms): the first bar of an interval is the one containing it.
    contract_size
        COIN-M contract size in USD (volume is then counted in contracts).
    volume_per_minute
        Typical volume of a 1m bar, in base units (contracts on COIN-M).
    trades_per_minute
        Typical number of trades of a 1m bar.
    status
        Binance's status in exchangeInfo (``BREAK`` for a symbol that no longer trades; its
        history is served all the same).
    """

    symbol: str
    base_asset: str
    quote_asset: str
    base_price: float
    tick_size: str
    step_size: str
    listed_ms: int = DEFAULT_LISTED_MS
    contract_size: int | None = None
    volume_per_minute: float = 10.0
    trades_per_minute: int = 500
    status: str = "TRADING"

    @property
    def price_precision(self) -> int:
        """The decimals of ``tick_size``."""
        return decimals_of(self.tick_size)

    @property
    def quantity_precision(self) -> int:
        """The decimals of ``step_size``."""
        return decimals_of(self.step_size)

    @property
    def pair(self) -> str:
        """The symbol without a delivery suffix (``BTCUSD`` for ``BTCUSD_PERP``)."""
        return self.symbol.split("_", 1)[0]

    def seed(self, market: MarketType) -> int:
        """Stable 32-bit seed of the price path (per market: spot and futures differ)."""
        return zlib.crc32(f"{market.value}:{self.symbol}".encode())


def default_symbols() -> dict[MarketType, dict[str, SymbolSpec]]:
    """Return the imitation's default listing: BTC and ETH on each market, listed 2020-01-01."""
    return {
        MarketType.SPOT: {
            "BTCUSDT": SymbolSpec(
                "BTCUSDT", "BTC", "USDT", 42000.0, "0.01000000", "0.00001000",
                volume_per_minute=20.0, trades_per_minute=800,
            ),
            "ETHUSDT": SymbolSpec(
                "ETHUSDT", "ETH", "USDT", 2300.0, "0.01000000", "0.00010000",
                volume_per_minute=300.0, trades_per_minute=600,
            ),
        },
        MarketType.FUTURES_USDT: {
            "BTCUSDT": SymbolSpec(
                "BTCUSDT", "BTC", "USDT", 42010.0, "0.10", "0.001",
                volume_per_minute=150.0, trades_per_minute=1500,
            ),
            "ETHUSDT": SymbolSpec(
                "ETHUSDT", "ETH", "USDT", 2301.0, "0.01", "0.001",
                volume_per_minute=2000.0, trades_per_minute=1200,
            ),
        },
        MarketType.FUTURES_COIN: {
            "BTCUSD_PERP": SymbolSpec(
                "BTCUSD_PERP", "BTC", "USD", 42020.0, "0.1", "1", contract_size=100,
                volume_per_minute=1500.0, trades_per_minute=200,
            ),
            "ETHUSD_PERP": SymbolSpec(
                "ETHUSD_PERP", "ETH", "USD", 2302.0, "0.01", "1", contract_size=10,
                volume_per_minute=5000.0, trades_per_minute=150,
            ),
        },
    }  # fmt: skip


# --------------------------------------------------------------------------------------------
# exchangeInfo payloads
# --------------------------------------------------------------------------------------------


def _rate_limit(kind: str, interval: str, num: int, limit: int) -> dict[str, object]:
    return {"rateLimitType": kind, "interval": interval, "intervalNum": num, "limit": limit}


def _spot_symbol(spec: SymbolSpec) -> dict[str, object]:
    tick = _fmt(spec.tick_size, 8)
    step = _fmt(spec.step_size, 8)
    return {
        "symbol": spec.symbol,
        "status": spec.status,
        "baseAsset": spec.base_asset,
        "baseAssetPrecision": 8,
        "quoteAsset": spec.quote_asset,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": True,
        "cancelReplaceAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": True,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": tick,
                "maxPrice": "1000000.00000000",
                "tickSize": tick,
            },
            {
                "filterType": "PERCENT_PRICE",
                "multiplierUp": "5",
                "multiplierDown": "0.2",
                "avgPriceMins": 5,
            },
            {"filterType": "LOT_SIZE", "minQty": step, "maxQty": "9000.00000000", "stepSize": step},
            {
                "filterType": "MIN_NOTIONAL",
                "minNotional": "10.00000000",
                "applyToMarket": True,
                "avgPriceMins": 5,
            },
            {"filterType": "ICEBERG_PARTS", "limit": 10},
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": "0.00000000",
                "maxQty": _fmt(round(spec.volume_per_minute * 5, 8), 8),
                "stepSize": "0.00000000",
            },
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
        ],
        "permissions": ["SPOT", "MARGIN"],
    }


def _futures_price_bounds(spec: SymbolSpec) -> tuple[str, str]:
    decimals = spec.price_precision
    return _fmt(round(spec.base_price / 100, decimals), decimals), _fmt(
        round(spec.base_price * 30, decimals), decimals
    )


# Shared by the USDT-M and COIN-M payloads, as on Binance.
_FUTURES_PERCENT_PRICE: dict[str, str] = {
    "multiplierDown": "0.9500",
    "multiplierUp": "1.0500",
    "multiplierDecimal": "4",
    "filterType": "PERCENT_PRICE",
}
_FUTURES_ORDER_TYPES = (
    "LIMIT",
    "MARKET",
    "STOP",
    "STOP_MARKET",
    "TAKE_PROFIT",
    "TAKE_PROFIT_MARKET",
    "TRAILING_STOP_MARKET",
)


def _um_symbol(spec: SymbolSpec) -> dict[str, object]:
    min_price, max_price = _futures_price_bounds(spec)
    return {
        "symbol": spec.symbol,
        "pair": spec.pair,
        "contractType": "PERPETUAL",
        "deliveryDate": PERPETUAL_DELIVERY_MS,
        "onboardDate": spec.listed_ms,
        "status": spec.status,
        "maintMarginPercent": "2.5000",
        "requiredMarginPercent": "5.0000",
        "baseAsset": spec.base_asset,
        "quoteAsset": spec.quote_asset,
        "marginAsset": spec.quote_asset,
        "pricePrecision": spec.price_precision,
        "quantityPrecision": spec.quantity_precision,
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "underlyingSubType": [],
        "settlePlan": 0,
        "triggerProtect": "0.0500",
        "liquidationFee": "0.012500",
        "marketTakeBound": "0.05",
        "filters": [
            {
                "minPrice": min_price,
                "maxPrice": max_price,
                "filterType": "PRICE_FILTER",
                "tickSize": spec.tick_size,
            },
            {
                "stepSize": spec.step_size,
                "filterType": "LOT_SIZE",
                "maxQty": "1000",
                "minQty": spec.step_size,
            },
            {
                "stepSize": spec.step_size,
                "filterType": "MARKET_LOT_SIZE",
                "maxQty": "120",
                "minQty": spec.step_size,
            },
            {"limit": 200, "filterType": "MAX_NUM_ORDERS"},
            {"limit": 10, "filterType": "MAX_NUM_ALGO_ORDERS"},
            {"notional": "100", "filterType": "MIN_NOTIONAL"},
            {**_FUTURES_PERCENT_PRICE},
        ],
        "orderTypes": list(_FUTURES_ORDER_TYPES),
        "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
    }


def _cm_symbol(spec: SymbolSpec) -> dict[str, object]:
    min_price, max_price = _futures_price_bounds(spec)
    return {
        "symbol": spec.symbol,
        "pair": spec.pair,
        "contractType": "PERPETUAL",
        "deliveryDate": PERPETUAL_DELIVERY_MS,
        "onboardDate": spec.listed_ms,
        "contractStatus": spec.status,
        "contractSize": spec.contract_size or 1,
        "marginAsset": spec.base_asset,
        "maintMarginPercent": "2.5000",
        "requiredMarginPercent": "5.0000",
        "baseAsset": spec.base_asset,
        "quoteAsset": spec.quote_asset,
        "pricePrecision": spec.price_precision,
        "quantityPrecision": spec.quantity_precision,
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "equalQtyPrecision": 4,
        "maxMoveOrderLimit": 10000,
        "triggerProtect": "0.0500",
        "liquidationFee": "0.015000",
        "marketTakeBound": "0.05",
        "underlyingType": "COIN",
        "underlyingSubType": [],
        "filters": [
            {
                "minPrice": min_price,
                "maxPrice": max_price,
                "filterType": "PRICE_FILTER",
                "tickSize": spec.tick_size,
            },
            {
                "stepSize": spec.step_size,
                "filterType": "LOT_SIZE",
                "maxQty": "1000000",
                "minQty": spec.step_size,
            },
            {
                "stepSize": spec.step_size,
                "filterType": "MARKET_LOT_SIZE",
                "maxQty": "60000",
                "minQty": spec.step_size,
            },
            {"limit": 200, "filterType": "MAX_NUM_ORDERS"},
            {**_FUTURES_PERCENT_PRICE},
        ],
        "orderTypes": list(_FUTURES_ORDER_TYPES),
        "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
    }


def exchange_info(
    market: MarketType,
    specs: list[SymbolSpec],
    server_time_ms: int,
    weight_limit: int | None = None,
) -> dict[str, object]:
    """Build the ``exchangeInfo`` payload of ``market`` listing ``specs``, in Binance's format."""
    weight = weight_limit if weight_limit is not None else ENDPOINTS[market].weight_per_minute
    if market is MarketType.SPOT:
        return {
            "timezone": "UTC",
            "serverTime": server_time_ms,
            "rateLimits": [
                _rate_limit("REQUEST_WEIGHT", "MINUTE", 1, weight),
                _rate_limit("ORDERS", "SECOND", 10, 100),
                _rate_limit("ORDERS", "DAY", 1, 200000),
                _rate_limit("RAW_REQUESTS", "MINUTE", 5, 61000),
            ],
            "exchangeFilters": [],
            "symbols": [_spot_symbol(spec) for spec in specs],
        }
    if market is MarketType.FUTURES_USDT:
        assets = sorted({spec.quote_asset for spec in specs} | {"USDT", "BTC", "BNB", "ETH"})
        return {
            "timezone": "UTC",
            "serverTime": server_time_ms,
            "futuresType": "U_MARGINED",
            "rateLimits": [
                _rate_limit("REQUEST_WEIGHT", "MINUTE", 1, weight),
                _rate_limit("ORDERS", "MINUTE", 1, 1200),
                _rate_limit("ORDERS", "SECOND", 10, 300),
            ],
            "exchangeFilters": [],
            "assets": [
                {
                    "asset": asset,
                    "marginAvailable": True,
                    "autoAssetExchange": "-10000" if asset.startswith("USD") else "0",
                }
                for asset in assets
            ],
            "symbols": [_um_symbol(spec) for spec in specs],
        }
    return {
        "timezone": "UTC",
        "serverTime": server_time_ms,
        "rateLimits": [
            _rate_limit("REQUEST_WEIGHT", "MINUTE", 1, weight),
            _rate_limit("ORDERS", "MINUTE", 1, 1200),
        ],
        "exchangeFilters": [],
        "symbols": [_cm_symbol(spec) for spec in specs],
    }
