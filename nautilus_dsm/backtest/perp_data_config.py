"""Backtest inputs of perpetual data: MARK bars, ``FundingRateUpdate``, ``IndexPriceUpdate``.

What NautilusTrader 1.231 can and cannot replay (checked in the installed source):

- MARK bars load with :func:`mark_bars_data_config`, but a bar-execution venue aborts on them
  (``invalid PriceType, was 5`` in the matching engine): give them to a venue with
  ``bar_execution=False``, or let :class:`~nautilus_dsm.backtest.funding.FundingRateModule`
  read them from the catalog (it does by default).
- ``FundingRateUpdate`` loads with :func:`funding_data_config` (the catalog reads them back
  with ``rate`` as ``str``); replayed ones never reach a simulation module, so the funding
  module reads the catalog itself.
- ``IndexPriceUpdate`` files are written by the ingest in NautilusTrader's layout, but 1.231's
  catalog cannot read them back (its pyarrow path raises ``NotImplementedError`` for the type),
  so a ``BacktestDataConfig`` of them would fail: :func:`index_price_updates` reads the files
  and returns the objects for ``BacktestEngine.add_data``.
"""

from __future__ import annotations

from datetime import datetime

import pyarrow.parquet as pq
from nautilus_trader.backtest.config import BacktestDataConfig
from nautilus_trader.model.data import FundingRateUpdate, IndexPriceUpdate
from nautilus_trader.model.identifiers import InstrumentId
from nautilus_trader.model.objects import Price
from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

from nautilus_dsm.backtest.data_config import backtest_data_config
from nautilus_dsm.catalog.files import parquet_files
from nautilus_dsm.common import Interval, resolve_instrument, to_ms
from nautilus_dsm.constants import NS_PER_MS

__all__ = ["funding_data_config", "index_price_updates", "mark_bars_data_config"]


def mark_bars_data_config(
    catalog_path: ParquetDataCatalog | str,
    instrument_id: str,
    interval: Interval | str,
    start: datetime | None = None,
    end: datetime | None = None,
) -> BacktestDataConfig:
    """Return the ``BacktestDataConfig`` of one MARK bar type (``...-MARK-EXTERNAL``).

    ``start``/``end`` are bar open times ``[start, end)``, as in :func:`backtest_data_config`.
    """
    from nautilus_dsm.perp_data import mark_bar_type_for

    resolved = resolve_instrument(instrument_id)
    bar_type = mark_bar_type_for(resolved.instrument_id, interval)
    return backtest_data_config(catalog_path, resolved.instrument_id, bar_type, start, end)


def _catalog_parts(catalog_path: ParquetDataCatalog | str) -> tuple[str, str | None, dict | None]:
    if isinstance(catalog_path, ParquetDataCatalog):
        return (
            catalog_path.path,
            catalog_path.fs_protocol,
            catalog_path.fs_storage_options or None,
        )
    return catalog_path, None, None


def funding_data_config(
    catalog_path: ParquetDataCatalog | str,
    instrument_id: str,
    start: datetime | None = None,
    end: datetime | None = None,
) -> BacktestDataConfig:
    """Return the ``BacktestDataConfig`` of an instrument's ``FundingRateUpdate`` rows.

    ``start``/``end`` bound the funding boundaries ``[start, end)``.
    """
    resolved = resolve_instrument(instrument_id)
    path, protocol, options = _catalog_parts(catalog_path)
    return BacktestDataConfig(
        catalog_path=path,
        catalog_fs_protocol=protocol,
        catalog_fs_storage_options=options,
        data_cls=FundingRateUpdate,
        instrument_id=InstrumentId.from_str(resolved.instrument_id),
        start_time=None if start is None else to_ms(start) * NS_PER_MS,
        end_time=None if end is None else to_ms(end) * NS_PER_MS - 1,
    )


def index_price_updates(
    catalog_path: ParquetDataCatalog | str,
    instrument_id: str,
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[IndexPriceUpdate]:
    """
    Read an instrument's ``IndexPriceUpdate`` rows from the catalog, sorted by ``ts_init``.

    ``start``/``end`` bound ``ts_init`` (the kline closes) to ``(start, end]``, like bars.
    Hand the result to ``BacktestEngine.add_data``.
    """
    resolved = resolve_instrument(instrument_id)
    cat = (
        catalog_path
        if isinstance(catalog_path, ParquetDataCatalog)
        else ParquetDataCatalog.from_uri(catalog_path)
    )
    lo = 0 if start is None else to_ms(start) * NS_PER_MS + 1
    hi = 2**64 - 1 if end is None else to_ms(end) * NS_PER_MS
    directory = cat._make_path(IndexPriceUpdate, resolved.instrument_id)
    iid = InstrumentId.from_str(resolved.instrument_id)
    out: list[IndexPriceUpdate] = []
    for f_lo, f_hi, path in parquet_files(cat, directory):
        if f_hi < lo or f_lo > hi:
            continue
        table = pq.read_table(path, filesystem=cat.fs)
        precision = int(table.schema.metadata[b"price_precision"])
        values = table.column("value").to_pylist()
        events = table.column("ts_event").to_pylist()
        inits = table.column("ts_init").to_pylist()
        for raw, ts_event, ts_init in zip(values, events, inits, strict=True):
            if lo <= ts_init <= hi:
                price = Price.from_raw(int.from_bytes(raw, "little", signed=True), precision)
                out.append(IndexPriceUpdate(iid, price, ts_event, ts_init))
    out.sort(key=lambda u: u.ts_init)
    return out
