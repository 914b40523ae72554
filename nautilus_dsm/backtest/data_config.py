"""``backtest_data_config``: the ``BacktestDataConfig`` that loads exactly one bar type."""

from __future__ import annotations

from datetime import datetime

from nautilus_trader.backtest.config import BacktestDataConfig
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.model.identifiers import InstrumentId
from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

from nautilus_dsm.common import Interval, resolve_instrument, to_ms
from nautilus_dsm.constants import NS_PER_MS
from nautilus_dsm.errors import InvalidInput


def backtest_data_config(
    catalog_path: ParquetDataCatalog | str,
    instrument_id: str,
    interval_or_bar_type: Interval | str | BarType,
    start: datetime | None = None,
    end: datetime | None = None,
) -> BacktestDataConfig:
    """
    Return the ``BacktestDataConfig`` loading exactly one bar type from the catalog.

    ``data_cls`` is the ``Bar`` class, not a string: as a string NautilusTrader ignores
    ``bar_types`` and loads every bar type of the instrument. ``start``/``end`` are bar open
    times ``[start, end)``, translated to the ``ts_init`` (close) bounds ``(start, end]``.

    JSON: NautilusTrader 1.231's ``BacktestRunConfig.parse(run.json())`` turns ``data_cls``
    back into a string, and its one-shot loader then ignores ``bar_types`` (no field of
    ``BacktestDataConfig`` survives that). Parse with
    :func:`nautilus_dsm.run_config.parse_run_config`, or give the run a ``chunk_size`` (the
    streaming loader honours ``bar_types`` after the round trip).
    """
    resolved = resolve_instrument(instrument_id)
    bar_type = _bar_type(resolved.instrument_id, interval_or_bar_type)
    if bar_type.instrument_id.value != resolved.instrument_id:
        raise InvalidInput(
            f"bar type {bar_type} is not for instrument {resolved.instrument_id}; "
            "pass a bar type of the same instrument, or an interval such as '1m'"
        )
    protocol: str | None = None
    options: dict | None = None
    rust_options: dict | None = None
    if isinstance(catalog_path, ParquetDataCatalog):
        protocol = catalog_path.fs_protocol
        options = catalog_path.fs_storage_options or None
        # The Rust reader spells object-store credentials its own way (catalog/storage.py).
        rust_options = catalog_path.fs_rust_storage_options or None
        path = catalog_path.path
    else:
        path = catalog_path
    start_time = None
    end_time = None
    if start is not None:
        start_time = _to_ns(start) + 1
    if end is not None:
        end_time = _to_ns(end)
    return BacktestDataConfig(
        catalog_path=path,
        catalog_fs_protocol=protocol,
        catalog_fs_storage_options=options,
        catalog_fs_rust_storage_options=rust_options,
        data_cls=Bar,
        instrument_id=InstrumentId.from_str(resolved.instrument_id),
        bar_types=[str(bar_type)],
        start_time=start_time,
        end_time=end_time,
    )


def _bar_type(instrument_id: str, interval_or_bar_type: Interval | str | BarType) -> BarType:
    if isinstance(interval_or_bar_type, BarType):
        return interval_or_bar_type
    if isinstance(interval_or_bar_type, str) and "-" in interval_or_bar_type:
        return BarType.from_str(interval_or_bar_type)
    from nautilus_dsm.bars import bar_type_for

    return bar_type_for(instrument_id, Interval.parse(interval_or_bar_type))


def _to_ns(dt: datetime) -> int:
    # Exact, through milliseconds (bar times are whole ms); naive datetimes are refused.
    return to_ms(dt) * NS_PER_MS
