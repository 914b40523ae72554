"""The instruments an ingest writes: Binance's current definition, or the catalog's own copy.

Bars are converted at the catalog instrument's precision, as a backtest reads them, so an
instrument the catalog already holds is kept; one Binance now lists at another price or size
precision is refused before any bar is fetched. Every instrument is checked before any is
written.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

from nautilus_trader.model.data import Bar
from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

from nautilus_dsm.catalog.files import series_lock_for
from nautilus_dsm.common import MarketType, ResolvedInstrument
from nautilus_dsm.errors import InvalidInput, UnknownSymbol

if TYPE_CHECKING:
    from nautilus_trader.model.instruments import Instrument

    from nautilus_dsm.catalog.report import IngestReport
    from nautilus_dsm.dsm.manager import DataSourceManager


async def instrument_for(
    dsm: DataSourceManager, instrument_id: str, market_type: MarketType
) -> Instrument:
    """Return Binance's instrument ``instrument_id`` (trading or not), from ``dsm``'s exchangeInfo.

    Raises
    ------
    InvalidInput
        Binance lists the symbol, but it makes no Nautilus instrument (the reason is named).
    UnknownSymbol
        Binance's exchangeInfo of ``market_type`` does not list it.

    """
    # Not DSMInstrumentProvider.instrument_for: importing it loads NautilusTrader's
    # InstrumentProvider (nautilus_trader.common.providers, 83 modules, +26 MB RSS measured), so
    # every ingest would peak ~21 MB higher (benchmarks/catalog_ingest.py). Both use the same
    # pure parsing (nautilus_dsm.parsing); the provider adds caching and Nautilus registration,
    # which an ingest does not need.
    from nautilus_dsm.parsing import SkippedSymbol, parse_exchange_info

    # History is wanted, so symbols listed but not trading (halted, settled, delisted) count.
    info = await dsm.exchange_info(market_type)
    parsed = parse_exchange_info(market_type, info, time.time_ns(), include_non_trading=True)
    found = parsed.find(instrument_id)
    if isinstance(found, SkippedSymbol):
        raise InvalidInput(
            f"{instrument_id} is listed in Binance {market_type.name} exchangeInfo but has no "
            f"Nautilus instrument: {found.reason}"
        )
    if found is None:
        raise UnknownSymbol(
            f"{instrument_id} is not listed in Binance {market_type.name} exchangeInfo; "
            "check the symbol (e.g. BTCUSDT-PERP.BINANCE) and its market"
        )
    return found


def catalog_instrument(
    catalog: ParquetDataCatalog, instrument_id: str, instrument_type: type | None = None
) -> Instrument | None:
    """Return the catalog's copy of the instrument, None when it holds none.

    With ``instrument_type`` only that class's directory is read: without it NautilusTrader
    lists every instrument class's directory, ~40 requests on an object store.
    """
    try:
        if instrument_type is not None:
            found = catalog.query(data_cls=instrument_type, identifiers=[instrument_id])
        else:
            found = catalog.instruments(instrument_ids=[instrument_id])
    except (FileNotFoundError, OSError, ValueError):
        return None
    return found[0] if found else None


def check_same_precision(
    catalog: ParquetDataCatalog, stored: Instrument, current: Instrument
) -> None:
    """Refuse an instrument whose precisions changed since the catalog stored it."""
    # Bars are written at the catalog instrument's precision. A file at another precision
    # makes the whole bar type unreadable ("Fail to merge schema ... price_precision"), so a
    # tick or step size change since the first ingest is refused before anything is fetched.
    if (stored.price_precision, stored.size_precision) == (
        current.price_precision,
        current.size_precision,
    ):
        return
    instrument_id = stored.id.value
    bars = f"{catalog._make_path(Bar)}/{instrument_id}-*"
    raise InvalidInput(
        f"{instrument_id}: the catalog {catalog.path} holds it with price precision "
        f"{stored.price_precision} and size precision {stored.size_precision}, but Binance "
        f"exchangeInfo now gives price precision {current.price_precision} (tick "
        f"{current.price_increment}) and size precision {current.size_precision} (step "
        f"{current.size_increment}); all bars of a bar type must share one precision, so "
        f"nothing was fetched; ingest into a new catalog, or delete its bars ({bars}) and "
        f"its instrument ({catalog._make_path(type(stored), instrument_id)}) and re-ingest"
    )


async def load_instruments(
    cat: ParquetDataCatalog,
    dsm: DataSourceManager,
    resolved: Sequence[ResolvedInstrument],
    with_bars_to_write: Collection[str],
    lock_timeout_s: float,
    report: IngestReport,
) -> dict[str, Instrument]:
    """Return the instrument each bar of ``with_bars_to_write`` is converted with.

    The ones the catalog lacks are written (under each instrument's lock). Every instrument is
    checked before any is written or any bar fetched.
    """
    instruments: dict[str, Instrument] = {}
    new: list[Instrument] = []
    for r in resolved:
        needed = r.instrument_id in with_bars_to_write
        current = await instrument_for(dsm, r.instrument_id, r.market_type) if needed else None
        stored = catalog_instrument(cat, r.instrument_id, type(current) if current else None)
        if stored is not None and not needed:
            continue
        if current is None:
            current = await instrument_for(dsm, r.instrument_id, r.market_type)
        if stored is None:
            new.append(current)
        else:  # bars are converted with the catalog's copy, as a backtest reads them
            check_same_precision(cat, stored, current)
        instruments[r.instrument_id] = current if stored is None else stored
    for instrument in new:
        # Under the instrument's lock, re-read: a concurrent ingest may have written it.
        path = cat._make_path(type(instrument), instrument.id.value)
        async with series_lock_for(cat, path, instrument.id.value, lock_timeout_s):
            stored = catalog_instrument(cat, instrument.id.value, type(instrument))
            if stored is None:
                cat.write_data([instrument])
                report.instruments_written.append(instrument.id.value)
            else:
                check_same_precision(cat, stored, instrument)
                instruments[instrument.id.value] = stored
    return instruments
