"""``nautilus-dsm instruments``: Binance instruments with tick, step and precisions.

Real Binance lists thousands of symbols, so the list takes filters (``--symbol`` patterns,
``--quote`` assets) and ``--json`` for scripts. Symbols Binance does not trade now (settling,
delivered, halted) are left out unless ``--include-non-trading`` (their history can still be
fetched).
"""

from __future__ import annotations

import fnmatch
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import click

from nautilus_dsm.cli.exits import EXIT_OK, run
from nautilus_dsm.cli.formatters import format_table
from nautilus_dsm.cli.options import PROGRESS_OPTIONS, open_manager, source_options
from nautilus_dsm.common import MarketType

if TYPE_CHECKING:
    from nautilus_dsm.dsm.settings import SourceSettings

__all__ = ["InstrumentRow", "instrument_rows", "instruments"]

HEADER = ("id", "market", "tick", "step", "price_prec", "size_prec")


@dataclass(frozen=True, slots=True)
class InstrumentRow:
    """One listed instrument as ``instruments`` prints it (``--json``: one object each)."""

    id: str
    symbol: str  # Binance's symbol: BTCUSDT, BTCUSD_PERP
    market: str
    kind: str  # spot, perpetual, future
    base: str
    quote: str
    settlement: str
    status: str  # Binance's status: TRADING, SETTLING, BREAK...
    tick: str
    step: str
    price_precision: int
    size_precision: int
    multiplier: str
    is_inverse: bool

    def cells(self, with_status: bool) -> tuple[str, ...]:
        """Return the text table's cells (the status column only when asked for)."""
        cells = (
            self.id,
            self.market,
            self.tick,
            self.step,
            str(self.price_precision),
            str(self.size_precision),
        )
        return (*cells, self.status) if with_status else cells


def _matches(row: InstrumentRow, symbols: tuple[str, ...], quotes: tuple[str, ...]) -> bool:
    names = (row.id, row.id.rsplit(".", 1)[0], row.symbol)
    if symbols and not any(fnmatch.fnmatchcase(n, p) for p in symbols for n in names):
        return False
    return not quotes or row.quote in quotes


def instrument_rows(
    market: MarketType,
    exchange_info: Mapping[str, Any],
    *,
    symbols: Iterable[str] = (),
    quotes: Iterable[str] = (),
    include_non_trading: bool = False,
) -> list[InstrumentRow]:
    """
    Return the instruments of one market's exchangeInfo that match the filters (pure).

    Parameters
    ----------
    market : MarketType
        The market the exchangeInfo came from.
    exchange_info : Mapping[str, Any]
        Binance's decoded ``exchangeInfo``.
    symbols : Iterable[str]
        Patterns (``fnmatch``, case-insensitive: ``BTC*``), each matched against the instrument
        id, its Nautilus symbol and the Binance symbol; none: every symbol.
    quotes : Iterable[str]
        Quote assets (``USDT``; COIN-M contracts quote ``USD``); none: every quote.
    include_non_trading : bool, default False
        Also list symbols whose status is not ``TRADING``.

    Returns
    -------
    list[InstrumentRow]
        In the payload's order.

    """
    from nautilus_dsm.parsing import parse_exchange_info

    status = {
        str(s.get("symbol")): str(s.get("status", s.get("contractStatus", "?")))
        for s in exchange_info.get("symbols", [])
        if isinstance(s, Mapping)
    }
    parsed = parse_exchange_info(
        market, exchange_info, time.time_ns(), include_non_trading=include_non_trading
    )
    wanted_symbols = tuple(s.upper() for s in symbols)
    wanted_quotes = tuple(q.upper() for q in quotes)
    rows = [_row(market, inst, status) for inst in parsed.instruments]
    return [r for r in rows if _matches(r, wanted_symbols, wanted_quotes)]


def _row(market: MarketType, inst: Any, status: Mapping[str, str]) -> InstrumentRow:
    symbol = inst.raw_symbol.value
    kind = type(inst).__name__
    kind = {"CurrencyPair": "spot", "CryptoPerpetual": "perpetual"}.get(kind, "future")
    settlement = getattr(inst, "settlement_currency", None) or inst.quote_currency
    return InstrumentRow(
        id=inst.id.value,
        symbol=symbol,
        market=market.value,
        kind=kind,
        base=inst.get_base_currency().code,
        quote=inst.quote_currency.code,
        settlement=settlement.code,
        status=status.get(symbol, "?"),
        tick=str(inst.price_increment),
        step=str(inst.size_increment),
        price_precision=inst.price_precision,
        size_precision=inst.size_precision,
        multiplier=str(inst.multiplier),
        is_inverse=bool(inst.is_inverse),
    )


@click.command()
# One request per market: no progress bar.
@source_options(omit=PROGRESS_OPTIONS, market_help="List this market only (default: every market).")
@click.option(
    "--symbol",
    "symbols",
    multiple=True,
    help="Only ids or Binance symbols matching this pattern (BTCUSDT, 'BTC*'); repeatable.",
)
@click.option(
    "--quote",
    "quotes",
    multiple=True,
    help="Only this quote asset (USDT; COIN-M contracts quote USD); repeatable.",
)
@click.option(
    "--include-non-trading",
    is_flag=True,
    help="Also list symbols Binance does not trade now (settling, delivered, halted).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object each.")
def instruments(
    symbols: tuple[str, ...],
    quotes: tuple[str, ...],
    include_non_trading: bool,
    as_json: bool,
    settings: SourceSettings,
) -> None:
    """List Binance instruments with tick, step and precisions.

    Every market, or the one of --market-type; trading symbols only unless
    --include-non-trading.
    """

    async def main() -> int:
        markets = [settings.market_type] if settings.market_type else list(MarketType)
        rows: list[InstrumentRow] = []
        async with open_manager(settings) as dsm:
            for market in markets:
                info = await dsm.exchange_info(market)
                rows += instrument_rows(
                    market,
                    info,
                    symbols=symbols,
                    quotes=quotes,
                    include_non_trading=include_non_trading,
                )
        if as_json:
            click.echo(json.dumps([asdict(r) for r in rows], indent=2))
            return EXIT_OK
        header = (*HEADER, "status") if include_non_trading else HEADER
        click.echo(format_table(header, [r.cells(include_non_trading) for r in rows]))
        if not rows:
            click.echo("no instrument matches the filters", err=True)
        return EXIT_OK

    run(main)
