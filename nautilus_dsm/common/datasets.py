"""Binance datasets beyond klines: mark, index and premium-index klines, funding rates.

One :class:`Dataset` names what a fetch reads; the engine is the same for every dataset (cache
-> Vision -> REST, trust rules, quality report), parameterised by the facts here: the Vision
folder, the REST path and its symbol parameter, the markets that publish it. Pure: no I/O.
"""

from __future__ import annotations

from enum import Enum

from nautilus_dsm.common.markets import MarketType
from nautilus_dsm.errors import InvalidInput

__all__ = ["DAPI_KLINE_WINDOW_MS", "Dataset", "pair_of"]

# COIN-M REST kline endpoints (klines, markPriceKlines, indexPriceKlines, premiumIndexKlines)
# refuse a startTime..endTime window wider than 200 days; pages are planned inside it.
DAPI_KLINE_WINDOW_MS = 200 * 86_400_000

# Short names (CLI ``--dataset``) -> members.
_ALIASES = {
    "mark": "mark_price_klines",
    "index": "index_price_klines",
    "premium": "premium_index_klines",
    "funding": "funding_rates",
    "markpriceklines": "mark_price_klines",
    "indexpriceklines": "index_price_klines",
    "premiumindexklines": "premium_index_klines",
    "fundingrate": "funding_rates",
}


class Dataset(Enum):
    """A Binance market-data dataset that nautilus-dsm fetches."""

    KLINES = "klines"
    MARK_PRICE_KLINES = "mark_price_klines"
    INDEX_PRICE_KLINES = "index_price_klines"
    PREMIUM_INDEX_KLINES = "premium_index_klines"
    FUNDING_RATES = "funding_rates"

    @classmethod
    def parse(cls, value: Dataset | str) -> Dataset:
        """
        Parse a dataset name or short name (``mark``, ``index``, ``premium``, ``funding``).

        Raises
        ------
        InvalidInput
            For an unknown name (the message lists the accepted ones).

        """
        if isinstance(value, Dataset):
            return value
        text = str(value).strip().lower().replace("-", "_")
        text = _ALIASES.get(text.replace("_", ""), _ALIASES.get(text, text))
        for member in cls:
            if member.value == text:
                return member
        choices = ", ".join(m.value for m in cls)
        raise InvalidInput(
            f"unknown dataset {value!r}; use one of: {choices} (or klines, mark, index, "
            "premium, funding)"
        )

    @property
    def short(self) -> str:
        """The CLI name: ``klines``, ``mark``, ``index``, ``premium``, ``funding``."""
        return _SHORT[self]

    @property
    def is_kline(self) -> bool:
        """True for the datasets shaped like klines (one bar per interval)."""
        return self is not Dataset.FUNDING_RATES

    @property
    def vision_folder(self) -> str:
        """The dataset's folder on Binance Vision (``klines``, ``markPriceKlines``...)."""
        return _VISION[self]

    @property
    def rest_path(self) -> str:
        """The REST resource under the market prefix (``klines``, ``markPriceKlines``...)."""
        return _REST[self]

    @property
    def symbol_param(self) -> str:
        """The REST query parameter naming the series: ``pair`` for index klines."""
        return "pair" if self is Dataset.INDEX_PRICE_KLINES else "symbol"

    @property
    def cache_dir(self) -> str:
        """The cache folder: ``binance`` for klines (unchanged), else ``binance-{name}``."""
        return "binance" if self is Dataset.KLINES else f"binance-{self.value}"

    def rest_symbol(self, symbol: str) -> str:
        """Return the value of :attr:`symbol_param` for a Binance symbol."""
        return pair_of(symbol) if self is Dataset.INDEX_PRICE_KLINES else symbol

    def check_market(self, market_type: MarketType) -> None:
        """
        Refuse a market that does not publish the dataset (every one but klines is futures only).

        Raises
        ------
        InvalidInput
            For SPOT with a futures-only dataset, before any I/O.

        """
        if self is Dataset.KLINES or market_type.is_futures:
            return
        raise InvalidInput(
            f"dataset {self.value} exists only on the futures markets (USDT-M, COIN-M), not "
            f"{market_type.name}; use a perpetual such as BTCUSDT-PERP.BINANCE or "
            "BTCUSD-PERP.BINANCE, or dataset klines for spot"
        )


_SHORT = {
    Dataset.KLINES: "klines",
    Dataset.MARK_PRICE_KLINES: "mark",
    Dataset.INDEX_PRICE_KLINES: "index",
    Dataset.PREMIUM_INDEX_KLINES: "premium",
    Dataset.FUNDING_RATES: "funding",
}
_VISION = {
    Dataset.KLINES: "klines",
    Dataset.MARK_PRICE_KLINES: "markPriceKlines",
    Dataset.INDEX_PRICE_KLINES: "indexPriceKlines",
    Dataset.PREMIUM_INDEX_KLINES: "premiumIndexKlines",
    Dataset.FUNDING_RATES: "fundingRate",
}
_REST = {
    Dataset.KLINES: "klines",
    Dataset.MARK_PRICE_KLINES: "markPriceKlines",
    Dataset.INDEX_PRICE_KLINES: "indexPriceKlines",
    Dataset.PREMIUM_INDEX_KLINES: "premiumIndexKlines",
    Dataset.FUNDING_RATES: "fundingRate",
}


def pair_of(symbol: str) -> str:
    """
    Return the underlying pair of a futures symbol (index klines are published per pair).

    ``BTCUSDT`` -> ``BTCUSDT``; ``BTCUSD_PERP`` / ``BTCUSD_240628`` -> ``BTCUSD``.
    """
    return symbol.split("_", 1)[0]
