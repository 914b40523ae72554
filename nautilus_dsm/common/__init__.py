"""What both sides share: markets, intervals, times, symbols (no Nautilus, no I/O)."""

from nautilus_dsm.common.intervals import Interval
from nautilus_dsm.common.markets import (
    DEFAULT_VISION_URL,
    ENDPOINTS,
    DataProvider,
    Endpoints,
    MarketType,
    check_base_url,
    rest_base_url,
)
from nautilus_dsm.common.symbols import (
    BINANCE_SYMBOL_RE,
    ResolvedInstrument,
    check_binance_symbol,
    market_type_of,
    resolve_instrument,
    to_binance_symbol,
    to_nautilus_symbol,
)
from nautilus_dsm.common.times import (
    ACCEPTED_TIMES,
    check_max_rows,
    check_not_future,
    check_range,
    check_row_cap,
    epoch_ms,
    from_ms,
    iso,
    iso_ms,
    iso_ns,
    parse_instant,
    to_ms,
)
from nautilus_dsm.constants import DEFAULT_MAX_ROWS, VENUE

__all__ = [
    "ACCEPTED_TIMES",
    "BINANCE_SYMBOL_RE",
    "DEFAULT_MAX_ROWS",
    "DEFAULT_VISION_URL",
    "ENDPOINTS",
    "VENUE",
    "DataProvider",
    "Endpoints",
    "Interval",
    "MarketType",
    "ResolvedInstrument",
    "check_base_url",
    "check_binance_symbol",
    "check_max_rows",
    "check_not_future",
    "check_range",
    "check_row_cap",
    "epoch_ms",
    "from_ms",
    "iso",
    "iso_ms",
    "iso_ns",
    "market_type_of",
    "parse_instant",
    "resolve_instrument",
    "rest_base_url",
    "to_binance_symbol",
    "to_ms",
    "to_nautilus_symbol",
]
