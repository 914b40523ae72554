"""The unit of distributed work: one series and one UTC calendar month (pure).

A :class:`SeriesMonth` is (instrument, dataset, interval, month). Months are independent and
each maps onto catalog files of its own (1m-30m files are UTC months, see
:func:`nautilus_dsm.catalog.grid_cell`), so tasks are idempotent: running one twice writes
nothing the second time, and a task interrupted anywhere is resumed by running it again.
``dataset`` names what the series holds: ``klines`` (bars) today; other datasets (funding
rates, mark-price klines) plug in as further names with their own worker function.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from nautilus_dsm.common import Interval, iso_ms
from nautilus_dsm.errors import InvalidInput
from nautilus_dsm.universe import SeriesSpan

KLINES = "klines"
DATASETS = (KLINES,)
_MONTH = Interval.parse("1M")


@dataclass(frozen=True, order=True)
class SeriesMonth:
    """
    One series over one UTC month: bar open times ``[start_ms, end_ms)``.

    Parameters
    ----------
    instrument_id : str
        Nautilus instrument id (``BTCUSDT-PERP.BINANCE``).
    dataset : str
        ``klines``.
    interval : str
        Binance interval (``1m``).
    month_ms : int
        The month's first instant (epoch ms, UTC).
    start_ms, end_ms : int
        The part of the month to ingest (a listing mid-month, the range's ends).

    """

    instrument_id: str
    dataset: str
    interval: str
    month_ms: int
    start_ms: int
    end_ms: int

    @property
    def series(self) -> tuple[str, str, str]:
        """``(instrument_id, dataset, interval)``: one writer at a time per series."""
        return (self.instrument_id, self.dataset, self.interval)

    @property
    def month(self) -> str:
        """``YYYY-MM``."""
        return iso_ms(self.month_ms)[:7]

    @property
    def key(self) -> str:
        """A unique, readable key (Dask task key): ``klines-BTCUSDT-PERP.BINANCE-1m-2024-01``."""
        return f"{self.dataset}-{self.instrument_id}-{self.interval}-{self.month}"


def check_dataset(dataset: str) -> str:
    """Return ``dataset`` when supported, else raise :class:`InvalidInput` naming the choices."""
    if dataset not in DATASETS:
        raise InvalidInput(f"dataset {dataset!r} is not supported; use one of {list(DATASETS)}")
    return dataset


def month_tasks(
    spans: Iterable[SeriesSpan], interval: Interval | str, dataset: str = KLINES
) -> list[SeriesMonth]:
    """
    Cut each span into :class:`SeriesMonth` tasks (none before a listing, none when empty).

    Returns
    -------
    list[SeriesMonth]
        Ordered by month, then instrument, so a universe advances month by month.

    """
    iv = Interval.parse(interval)
    check_dataset(dataset)
    out: list[SeriesMonth] = []
    for span in spans:
        if span.empty:
            continue
        month = _MONTH.floor_ms(span.start_ms)
        while month < span.end_ms:
            following = _MONTH.next_open_ms(month)
            lo, hi = max(month, span.start_ms), min(following, span.end_ms)
            if iv.ceil_ms(lo) < hi:  # at least one bar opens in it
                out.append(SeriesMonth(span.member.instrument_id, dataset, iv.value, month, lo, hi))
            month = following
    out.sort(key=lambda t: (t.month_ms, t.instrument_id))
    return out
