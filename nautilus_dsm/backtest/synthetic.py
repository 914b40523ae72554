"""A SYNTHETIC perpetuals catalog for funding backtests, offline and deterministic.

Everything here is made up (prices, volumes, funding rates); it exists so the funding module,
its tests and ``examples/funding_backtest.py --offline`` run without the network. The
instruments are parsed by nautilus-dsm itself from the Binance imitation's ``exchangeInfo``
(BTCUSDT-PERP: linear, tick 0.1, step 0.001; BTCUSD-PERP: inverse, 100 USD contracts).

The funding rows imitate Binance Vision's ``fundingRate`` files: ``calc_time`` a few
milliseconds after the boundary, floored to the boundary as an ingest must, every 8 h and then
every 4 h from ``interval_change_day`` on (Binance changes intervals per symbol over time).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from nautilus_trader.model.data import Bar, BarType, FundingRateUpdate
from nautilus_trader.model.identifiers import InstrumentId
from nautilus_trader.model.instruments import Instrument
from nautilus_trader.model.objects import FIXED_PRECISION, Price, Quantity
from nautilus_trader.persistence.catalog import ParquetDataCatalog

from nautilus_dsm.common import MarketType
from nautilus_dsm.parsing import parse_instruments
from nautilus_dsm.testing.symbols import default_symbols, exchange_info

SYNTHETIC_START = datetime(2024, 1, 1, tzinfo=UTC)
LINEAR_ID = "BTCUSDT-PERP.BINANCE"
INVERSE_ID = "BTCUSD-PERP.BINANCE"

_NS_PER_MIN = 60_000_000_000
_NS_PER_HOUR = 60 * _NS_PER_MIN
# SYNTHETIC funding rates (8 decimals, as Binance prints them), cycled per event.
_RATES = (
    "0.00010000",
    "0.00012345",
    "-0.00003750",
    "0.00025001",
    "0.00000000",
    "-0.00011111",
    "0.00037500",
    "0.00007777",
)
_MARKETS = {
    LINEAR_ID: (MarketType.FUTURES_USDT, "BTCUSDT"),
    INVERSE_ID: (MarketType.FUTURES_COIN, "BTCUSD_PERP"),
}


@dataclass(frozen=True)
class SyntheticPerpCatalog:
    """What :func:`write_synthetic_perp_catalog` wrote (all of it SYNTHETIC)."""

    path: str
    instruments: dict[str, Instrument]
    start_ns: int
    end_ns: int
    last_bar_types: dict[str, str]
    mark_bar_types: dict[str, str]  # only the instruments given MARK bars
    funding: dict[str, list[FundingRateUpdate]]
    calc_time_offsets_ms: dict[str, list[int]]


def synthetic_instruments(
    instrument_ids: Sequence[str] = (LINEAR_ID, INVERSE_ID),
) -> dict[str, Instrument]:
    """Parse the imitation's BTCUSDT-PERP / BTCUSD-PERP definitions with nautilus-dsm's parser."""
    symbols = default_symbols()
    ts = int(SYNTHETIC_START.timestamp()) * 1_000_000_000
    out: dict[str, Instrument] = {}
    for instrument_id in instrument_ids:
        market, symbol = _MARKETS[instrument_id]
        info = exchange_info(market, [symbols[market][symbol]], ts // 1_000_000)
        (instrument,) = parse_instruments(market, info, ts)
        out[instrument.id.value] = instrument
    return out


def synthetic_close_ticks(instrument_index: int, minute: int, base_ticks: int) -> int:
    """Return the SYNTHETIC close, in ticks, of minute ``minute`` (deterministic saw-tooth walk)."""
    return base_ticks + ((minute * 7919 + instrument_index * 104729) % 4001) - 2000


def write_synthetic_perp_catalog(
    path: str | os.PathLike[str],
    *,
    days: int = 4,
    interval_change_day: int | None = 2,
    instrument_ids: Sequence[str] = (LINEAR_ID, INVERSE_ID),
    mark_bars_for: Sequence[str] = (LINEAR_ID,),
    mark_missing_at_ns: Sequence[int] = (),
    mark_offset_ticks: int = 3,
    funding_for: Sequence[str] | None = None,
) -> SyntheticPerpCatalog:
    """
    Write a SYNTHETIC catalog: instruments, 1m LAST bars, MARK bars, funding rows.

    Parameters
    ----------
    path : str or PathLike
        The catalog directory (created).
    days : int, default 4
        Days of 1m bars from 2024-01-01T00:00Z; bars are stamped at their close.
    interval_change_day : int or None, default 2
        From this day on funding is every 4 h (8 h before); None keeps 8 h throughout.
    instrument_ids : sequence of str
        Which of BTCUSDT-PERP.BINANCE / BTCUSD-PERP.BINANCE to write.
    mark_bars_for : sequence of str
        The instruments given ``1-MINUTE-MARK-EXTERNAL`` bars (close = LAST close +
        ``mark_offset_ticks`` ticks, so a test can tell which price was used).
    mark_missing_at_ns : sequence of int
        MARK bars (by close time) left out, to exercise the fallback.
    mark_offset_ticks : int, default 3
        How far the mark closes sit above the last closes.
    funding_for : sequence of str, optional
        The instruments given funding rows (default: all of ``instrument_ids``).
    """
    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    catalog = ParquetDataCatalog(path)
    instruments = synthetic_instruments(instrument_ids)
    catalog.write_data(list(instruments.values()))
    start_ns = int(SYNTHETIC_START.timestamp()) * 1_000_000_000
    minutes = days * 24 * 60
    end_ns = start_ns + minutes * _NS_PER_MIN
    missing = set(mark_missing_at_ns)
    last_types: dict[str, str] = {}
    mark_types: dict[str, str] = {}
    funding: dict[str, list[FundingRateUpdate]] = {}
    offsets: dict[str, list[int]] = {}
    for index, (instrument_id, instrument) in enumerate(instruments.items()):
        precision = instrument.price_precision
        tick_raw = 10 ** (FIXED_PRECISION - precision)
        base_ticks = int(Decimal(42010) * 10**precision)
        closes = [synthetic_close_ticks(index, m, base_ticks) for m in range(minutes + 1)]
        volume = (
            Quantity(10, instrument.size_precision)
            if instrument.size_precision
            else Quantity(100, 0)
        )
        last_type = BarType.from_str(f"{instrument_id}-1-MINUTE-LAST-EXTERNAL")
        catalog.write_data(_bars(last_type, closes, 0, start_ns, tick_raw, precision, volume))
        last_types[instrument_id] = str(last_type)
        if instrument_id in mark_bars_for:
            mark_type = BarType.from_str(f"{instrument_id}-1-MINUTE-MARK-EXTERNAL")
            bars = _bars(
                mark_type, closes, mark_offset_ticks, start_ns, tick_raw, precision, volume
            )
            catalog.write_data([b for b in bars if b.ts_event not in missing])
            mark_types[instrument_id] = str(mark_type)
        if funding_for is None or instrument_id in funding_for:
            rows, offs = _funding_rows(instrument.id, index, start_ns, end_ns, interval_change_day)
            catalog.write_data(rows)
            funding[instrument_id] = rows
            offsets[instrument_id] = offs
    return SyntheticPerpCatalog(
        path, instruments, start_ns, end_ns, last_types, mark_types, funding, offsets
    )


def _bars(
    bar_type: BarType,
    closes: list[int],
    offset: int,
    start_ns: int,
    tick_raw: int,
    precision: int,
    volume: Quantity,
) -> list[Bar]:
    def price(ticks: int) -> Price:
        return Price.from_raw(ticks * tick_raw, precision)

    bars = []
    for minute in range(1, len(closes)):
        open_, close = closes[minute - 1] + offset, closes[minute] + offset
        ts = start_ns + minute * _NS_PER_MIN  # stamped at the close
        high, low = max(open_, close) + 2, min(open_, close) - 2
        bars.append(
            Bar(bar_type, price(open_), price(high), price(low), price(close), volume, ts, ts)
        )
    return bars


def _funding_rows(
    instrument_id: InstrumentId,
    index: int,
    start_ns: int,
    end_ns: int,
    interval_change_day: int | None,
) -> tuple[list[FundingRateUpdate], list[int]]:
    change_ns = (
        start_ns + interval_change_day * 24 * _NS_PER_HOUR
        if interval_change_day is not None
        else end_ns + 1
    )
    boundaries = []
    ts = start_ns
    while ts <= end_ns:
        hours = 8 if ts < change_ns else 4
        boundaries.append((ts, hours))
        ts += hours * _NS_PER_HOUR
    rows, offsets = [], []
    for k, (boundary, hours) in enumerate(boundaries):
        # Vision's calc_time lands a few ms after the boundary; floor it as an ingest must.
        offset_ms = (k * 7 + index * 3) % 13
        calc_ns = boundary + offset_ms * 1_000_000
        step = hours * _NS_PER_HOUR
        ts_event = calc_ns // step * step
        nxt = boundaries[k + 1][0] if k + 1 < len(boundaries) else ts_event + step
        rate = Decimal(_RATES[(k + index * 3) % len(_RATES)])
        rows.append(FundingRateUpdate(instrument_id, rate, ts_event, ts_event, hours * 60, nxt))
        offsets.append(offset_ms)
    return rows, offsets
