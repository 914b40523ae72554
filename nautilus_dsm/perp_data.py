"""Perpetual data -> NautilusTrader types: MARK bars, ``IndexPriceUpdate``, ``FundingRateUpdate``.

- Mark price klines become plain ``Bar`` objects of a ``MARK`` bar type
  (``BTCUSDT-PERP.BINANCE-1-MINUTE-MARK-EXTERNAL``), converted exactly like klines
  (:mod:`nautilus_dsm.bars`: prices rounded to the instrument's tick, its precisions, stamped at
  the close).
- Index price klines become one ``IndexPriceUpdate`` per kline, the close price stamped at the
  close (``ts_event = ts_init = open + interval``), at the instrument's price precision.
  NautilusTrader 1.231 has no ``INDEX`` price type, so index klines are not bars.
- Funding rows (:data:`~nautilus_dsm.dsm.funding_schema.FUNDING_SCHEMA`) become
  ``FundingRateUpdate(instrument_id, rate, ts_event, ts_init, interval, next_funding_ns)``:
  ``rate`` the exact ``Decimal`` of the wire string (trailing zeros of the frame's scale
  removed), ``ts_event = ts_init`` the boundary (``calc_time`` floored), ``interval`` the
  funding interval that ended at the event in minutes (``hours * 60``), ``next_funding_ns`` the
  next boundary: this one plus the interval of the next row (the period that starts here), or
  plus this row's interval for the last row.

Premium-index klines have no faithful Nautilus type in 1.231 and are engine-only.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

import polars as pl
from nautilus_trader.model.data import Bar, BarType, FundingRateUpdate, IndexPriceUpdate
from nautilus_trader.model.enums import PriceType
from nautilus_trader.model.identifiers import InstrumentId
from nautilus_trader.model.instruments import Instrument
from nautilus_trader.model.objects import Price

from nautilus_dsm.bars import bar_close_ns, bar_type_for, frame_to_bars, interval_for
from nautilus_dsm.common import Interval
from nautilus_dsm.common.datasets import Dataset
from nautilus_dsm.constants import NS_PER_MS
from nautilus_dsm.errors import InvalidInput

__all__ = [
    "BAR_DATASETS",
    "bar_type_for_dataset",
    "dataset_of_bar_type",
    "frame_to_funding_updates",
    "frame_to_index_prices",
    "frame_to_mark_bars",
    "mark_bar_type_for",
]

_NS_PER_HOUR = 3_600 * 1_000_000_000
# The datasets whose rows are Nautilus bars (and the price type of their bar type).
BAR_DATASETS = {Dataset.KLINES: "LAST", Dataset.MARK_PRICE_KLINES: "MARK"}


def mark_bar_type_for(instrument_id: InstrumentId | str, interval: Interval | str) -> BarType:
    """Return the MARK bar type of mark price klines (``...-1-MINUTE-MARK-EXTERNAL``)."""
    return bar_type_for_dataset(instrument_id, interval, Dataset.MARK_PRICE_KLINES)


def bar_type_for_dataset(
    instrument_id: InstrumentId | str, interval: Interval | str, dataset: Dataset | str
) -> BarType:
    """
    Return the bar type of a bar dataset: LAST for klines, MARK for mark price klines.

    Raises
    ------
    InvalidInput
        For a dataset that is not bars (index, premium, funding), naming what to use.

    """
    dataset = Dataset.parse(dataset)
    if dataset not in BAR_DATASETS:
        raise InvalidInput(
            f"dataset {dataset.value} has no Nautilus bar type (1.231 has no INDEX price "
            "type); index klines become IndexPriceUpdate (frame_to_index_prices), funding "
            "FundingRateUpdate (frame_to_funding_updates), premium-index klines stay in the engine"
        )
    last = str(bar_type_for(instrument_id, interval))
    return BarType.from_str(last.replace("-LAST-EXTERNAL", f"-{BAR_DATASETS[dataset]}-EXTERNAL"))


def dataset_of_bar_type(bar_type: BarType | str) -> Dataset:
    """Return the dataset serving a bar type: klines (LAST) or mark price klines (MARK)."""
    bar_type = bar_type if isinstance(bar_type, BarType) else BarType.from_str(str(bar_type))
    interval_for(bar_type, allow_mark=True)  # refuses what Binance has no kline for
    if bar_type.spec.price_type == PriceType.MARK:
        return Dataset.MARK_PRICE_KLINES
    return Dataset.KLINES


def frame_to_mark_bars(
    frame: pl.DataFrame, instrument: Instrument, interval: Interval | str
) -> list[Bar]:
    """Convert a mark price kline frame to ``MARK`` bars at the instrument's precision."""
    bar_type = mark_bar_type_for(instrument.id, interval)
    return frame_to_bars(frame, bar_type, instrument)


def _tick_rounded(value: Decimal, tick: Decimal) -> Decimal:
    return (value / tick).to_integral_value(ROUND_HALF_EVEN) * tick


def frame_to_index_prices(
    frame: pl.DataFrame, instrument: Instrument, interval: Interval | str
) -> list[IndexPriceUpdate]:
    """
    Convert an index price kline frame to one ``IndexPriceUpdate`` per kline, at its close.

    The value is the close rounded half-even to the instrument's tick, at its price precision;
    ``ts_event = ts_init`` is the kline's close (``open + interval``, exact integer ns).
    """
    iv = Interval.parse(interval)
    if frame.height == 0:
        return []
    opens = frame.get_column("open_time").dt.epoch("ms").to_numpy()
    closes_ns = bar_close_ns(opens, iv)
    precision = instrument.price_precision
    tick = instrument.price_increment.as_decimal()
    out: list[IndexPriceUpdate] = []
    for value, ts in zip(frame.get_column("close").to_list(), closes_ns.tolist(), strict=True):
        if value is None or value <= 0:
            raise InvalidInput(
                f"index price kline of {instrument.id} closing at {ts} has close {value!r}; "
                "an index price is positive, so the frame is refused"
            )
        price = Price.from_str(f"{_tick_rounded(value, tick):.{precision}f}")
        out.append(IndexPriceUpdate(instrument.id, price, int(ts), int(ts)))
    return out


def _exact_rate(value: Decimal) -> Decimal:
    # The frame holds rates at scale 12; the wire had (usually) 8 decimals: drop the padding
    # zeros only, never a significant digit.
    if value == 0:
        return Decimal("0")
    normal = value.normalize()
    exponent = normal.as_tuple().exponent
    return normal.quantize(Decimal(1)) if isinstance(exponent, int) and exponent > 0 else normal


def frame_to_funding_updates(
    frame: pl.DataFrame, instrument_id: InstrumentId | str
) -> list[FundingRateUpdate]:
    """
    Convert a funding frame (FUNDING_SCHEMA, sorted) to ``FundingRateUpdate`` objects.

    Raises
    ------
    InvalidInput
        For a row of unknown interval (a REST row no neighbour explains) or one whose
        boundary is not a multiple of its interval: such a row cannot be settled exactly.

    """
    iid = (
        instrument_id
        if isinstance(instrument_id, InstrumentId)
        else InstrumentId.from_str(str(instrument_id))
    )
    times = (frame.get_column("funding_time").dt.epoch("ms") * NS_PER_MS).to_list()
    hours = frame.get_column("funding_interval_hours").to_list()
    rates = frame.get_column("funding_rate").to_list()
    out: list[FundingRateUpdate] = []
    for k, (ts, h, rate) in enumerate(zip(times, hours, rates, strict=True)):
        if h is None or h <= 0 or ts % (h * _NS_PER_HOUR):
            raise InvalidInput(
                f"funding row of {iid} at {ts} ns has interval {h!r} h, unknown or not "
                "dividing its boundary; fetch it with its neighbours (the interval is inferred "
                "from their spacing) or from Vision, which states it"
            )
        following = hours[k + 1] if k + 1 < len(hours) and hours[k + 1] else h
        next_ns = ts + following * _NS_PER_HOUR
        out.append(FundingRateUpdate(iid, _exact_rate(rate), ts, ts, h * 60, next_ns))
    return out
