"""Catalog ingestion against the local Binance imitation: exact bars, resume, no overlap."""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from nautilus_trader.model.data import Bar
from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

from nautilus_dsm.backtest.demo import run_backtest
from nautilus_dsm.bars import bar_type_for, frame_to_bars, frame_to_catalog_table
from nautilus_dsm.catalog import IngestReport, SkippedRange, backtest_data_config, ingest
from nautilus_dsm.common import DataProvider, MarketType, to_ms
from nautilus_dsm.dsm.manager import DataSourceManager
from nautilus_dsm.errors import InvalidInput, QualityBelowThreshold, UnknownSymbol
from nautilus_dsm.parsing import parse_instruments

INSTRUMENT = "BTCUSDT-PERP.BINANCE"
BAR_TYPE = "BTCUSDT-PERP.BINANCE-1-MINUTE-LAST-EXTERNAL"
START = datetime(2024, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
NS = 1_000_000
D0 = to_ms(START)
DAY_MS = 86_400_000


@pytest.fixture
def dsm(imitation: Any, cache_dir: Path) -> Iterator[DataSourceManager]:
    yield DataSourceManager.create(
        DataProvider.BINANCE,
        base_url_http=imitation.url,
        base_url_vision=imitation.url,
        cache_dir=cache_dir,
    )


def _catalog(tmp_path: Path) -> ParquetDataCatalog:
    path = tmp_path / "catalog"
    path.mkdir(parents=True)
    return ParquetDataCatalog(str(path))


def _files(catalog: ParquetDataCatalog, bar_type: str = BAR_TYPE) -> list[str]:
    return sorted(Path(p).name for p in catalog.fs.glob(f"{catalog.path}/data/bar/{bar_type}/*"))


def _day_file(day: int) -> str:
    start = (START + day * DAY).strftime("%Y-%m-%d")
    end = (START + (day + 1) * DAY).strftime("%Y-%m-%d")
    return f"{start}T00-00-00-000000001Z_{end}T00-00-00-000000000Z.parquet"


def _span_file(first_day: int, end_day: int) -> str:
    # One file per fixed grid cell (a UTC month for 1m), or the part of it ingested.
    start = (START + first_day * DAY).strftime("%Y-%m-%d")
    end = (START + end_day * DAY).strftime("%Y-%m-%d")
    return f"{start}T00-00-00-000000001Z_{end}T00-00-00-000000000Z.parquet"


def _ts_init(catalog: ParquetDataCatalog) -> list[int]:
    return [b.ts_init for b in catalog.bars([BAR_TYPE])]


def _disjoint(intervals: list[tuple[int, int]]) -> bool:
    ordered = sorted(intervals)
    return all(a[1] < b[0] for a, b in itertools.pairwise(ordered))


def test_ingest_writes_every_bar_and_a_backtest_sees_them_at_the_instrument_precision(
    imitation: Any, dsm: DataSourceManager, tmp_path: Path
) -> None:
    catalog = _catalog(tmp_path)

    report = ingest(catalog, [INSTRUMENT], ["1m"], START, START + 3 * DAY, dsm=dsm, chunk=DAY)

    assert report.bars_written == {BAR_TYPE: 4320}
    assert report.instruments_written == [INSTRUMENT]
    assert report.skipped == []
    assert [(c.start, c.end, c.bars) for c in report.chunks] == [
        (START + i * DAY, START + (i + 1) * DAY, 1440) for i in range(3)
    ]
    assert [c.report.completeness for c in report.chunks] == [1.0, 1.0, 1.0]
    # Files follow the fixed grid (UTC months for 1m), not the chunk: one file for the 3 days.
    assert _files(catalog) == [_span_file(0, 3)]
    bars = catalog.bars([BAR_TYPE])
    expected = imitation.expected(MarketType.FUTURES_USDT, "BTCUSDT", "1m", D0, D0 + 3 * DAY_MS)
    assert [b.ts_init for b in bars] == [(D0 + (i + 1) * 60_000) * NS for i in range(4320)]
    assert [str(b.close) for b in bars] == [f"{c:.2f}" for c in expected["close"].to_list()]
    assert [str(b.volume) for b in bars] == [f"{v:.3f}" for v in expected["volume"].to_list()]

    summary = run_backtest(catalog, INSTRUMENT, "1m", START, START + 3 * DAY, strategy=False)

    assert summary.bars == 4320
    assert summary.wrong_precision_bars == 0
    assert summary.first_ts_init == (D0 + 60_000) * NS
    assert summary.last_ts_init == (D0 + 3 * DAY_MS) * NS


def test_rerun_and_overlapping_range_neither_duplicate_nor_overlap(
    dsm: DataSourceManager, tmp_path: Path
) -> None:
    catalog = _catalog(tmp_path)
    ingest(catalog, [INSTRUMENT], ["1m"], START, START + 3 * DAY, dsm=dsm, chunk=DAY)

    again = ingest(catalog, [INSTRUMENT], ["1m"], START, START + 3 * DAY, dsm=dsm, chunk=DAY)
    overlap = ingest(
        catalog, [INSTRUMENT], ["1m"], START + DAY / 2, START + 5 * DAY, dsm=dsm, chunk=DAY
    )

    assert again.bars_written == {BAR_TYPE: 0}
    assert again.chunks == []
    assert again.instruments_written == []
    assert again.skipped == [SkippedRange(BAR_TYPE, START, START + 3 * DAY)]
    assert overlap.bars_written == {BAR_TYPE: 2880}
    assert overlap.skipped == [SkippedRange(BAR_TYPE, START + DAY / 2, START + 3 * DAY)]
    assert _files(catalog) == [_span_file(0, 5)]
    ts = _ts_init(catalog)
    assert ts == [(D0 + (i + 1) * 60_000) * NS for i in range(7200)]
    assert _disjoint(catalog.get_intervals(Bar, BAR_TYPE))
    assert len(catalog.instruments()) == 1


class _Wrapped:
    """A manager passing everything to ``dsm`` but what a subclass overrides."""

    def __init__(self, dsm: DataSourceManager) -> None:
        self._dsm = dsm

    def __getattr__(self, name: str) -> Any:
        return getattr(self._dsm, name)


class _FailAfter(_Wrapped):
    """A manager whose fetch fails after ``n`` successful chunks (an interrupted run)."""

    def __init__(self, dsm: DataSourceManager, n: int) -> None:
        super().__init__(dsm)
        self._left = n

    async def fetch(self, *args: Any, **kwargs: Any) -> Any:
        if self._left == 0:
            raise RuntimeError("injected interruption")
        self._left -= 1
        return await self._dsm.fetch(*args, **kwargs)


def test_interrupted_run_resumes_to_a_complete_catalog(
    dsm: DataSourceManager, tmp_path: Path
) -> None:
    catalog = _catalog(tmp_path)
    directory = f"{catalog.path}/data/bar/{BAR_TYPE}"

    with pytest.raises(RuntimeError, match="injected interruption"):
        ingest(
            catalog, [INSTRUMENT], ["1m"], START, START + 3 * DAY, dsm=_FailAfter(dsm, 1), chunk=DAY
        )
    after_interrupt = _files(catalog)
    # A run killed in the middle of a write leaves only a temporary file behind.
    stale = f"{directory}/{_day_file(1)}.0123abcd.tmp"
    catalog.fs.pipe(stale, b"half a parquet file")
    resumed = ingest(catalog, [INSTRUMENT], ["1m"], START, START + 3 * DAY, dsm=dsm, chunk=DAY)

    assert after_interrupt == [_day_file(0)]
    assert resumed.skipped == [SkippedRange(BAR_TYPE, START, START + DAY)]
    assert resumed.bars_written == {BAR_TYPE: 2880}
    assert _files(catalog) == [_span_file(0, 3)]
    assert _ts_init(catalog) == [(D0 + (i + 1) * 60_000) * NS for i in range(4320)]


def test_chunk_below_threshold_raises_after_keeping_the_complete_chunks(
    imitation: Any, dsm: DataSourceManager, tmp_path: Path
) -> None:
    imitation.faults.gaps.append(("BTCUSDT", D0 + DAY_MS, D0 + DAY_MS + 12 * 3_600_000))
    catalog = _catalog(tmp_path)

    with pytest.raises(QualityBelowThreshold) as caught:
        ingest(catalog, [INSTRUMENT], ["1m"], START, START + 3 * DAY, dsm=dsm, chunk=DAY)
    accepted = ingest(
        catalog,
        [INSTRUMENT],
        ["1m"],
        START,
        START + 3 * DAY,
        dsm=dsm,
        chunk=DAY,
        min_completeness=0.5,
    )

    assert caught.value.result.report.bars == 720
    assert accepted.bars_written == {BAR_TYPE: 720 + 1440}
    assert [c.report.completeness for c in accepted.chunks] == [0.5, 1.0]
    assert len(_ts_init(catalog)) == 1440 + 720 + 1440


def test_memory_catalog(dsm: DataSourceManager) -> None:
    catalog = ParquetDataCatalog.from_uri("memory:///nautilus-dsm-test-catalog")

    try:
        report = ingest(catalog, [INSTRUMENT], ["1m"], START, START + 2 * DAY, dsm=dsm, chunk=DAY)
        again = ingest(catalog, [INSTRUMENT], ["1m"], START, START + 2 * DAY, dsm=dsm, chunk=DAY)
        files = catalog.fs.glob(f"{catalog.path}/data/bar/{BAR_TYPE}/*.parquet")
        # NautilusTrader's Rust reader resolves paths on the local disk only; an explicit file
        # list makes the catalog read through its fsspec (memory) filesystem.
        bars = catalog.query(Bar, identifiers=[BAR_TYPE], files=files)
        instruments = catalog.instruments()
    finally:
        catalog.fs.rm(catalog.path, recursive=True)

    assert report.bars_written == {BAR_TYPE: 2880}
    assert again.bars_written == {BAR_TYPE: 0}
    assert [Path(f).name for f in sorted(files)] == [_span_file(0, 2)]
    assert [b.ts_init for b in bars] == [(D0 + (i + 1) * 60_000) * NS for i in range(2880)]
    assert [i.id.value for i in instruments] == [INSTRUMENT]


def test_catalog_given_as_path_string_and_several_instruments_and_intervals(
    dsm: DataSourceManager, tmp_path: Path
) -> None:
    path = tmp_path / "cat"
    path.mkdir()

    report = ingest(
        str(path), [INSTRUMENT, "ETHUSDT.BINANCE"], ["1m", "1h"], START, START + DAY, dsm=dsm
    )

    assert report.bars_written == {
        BAR_TYPE: 1440,
        "BTCUSDT-PERP.BINANCE-1-HOUR-LAST-EXTERNAL": 24,
        "ETHUSDT.BINANCE-1-MINUTE-LAST-EXTERNAL": 1440,
        "ETHUSDT.BINANCE-1-HOUR-LAST-EXTERNAL": 24,
    }
    catalog = ParquetDataCatalog(str(path))
    assert sorted(i.id.value for i in catalog.instruments()) == [
        "BTCUSDT-PERP.BINANCE",
        "ETHUSDT.BINANCE",
    ]
    eth = catalog.bars(["ETHUSDT.BINANCE-1-HOUR-LAST-EXTERNAL"])
    assert len(eth) == 24
    assert {b.close.precision for b in eth} == {8}


async def test_direct_writer_equals_write_data(dsm: DataSourceManager, tmp_path: Path) -> None:
    result = await dsm.fetch(INSTRUMENT, "1m", START, START + DAY)
    info = await dsm.exchange_info(MarketType.FUTURES_USDT)
    await dsm.aclose()
    instrument = next(
        i for i in parse_instruments(MarketType.FUTURES_USDT, info, 0) if i.id.value == INSTRUMENT
    )
    bar_type = bar_type_for(INSTRUMENT, "1m")
    ours = _catalog(tmp_path / "ours")
    theirs = _catalog(tmp_path / "theirs")
    theirs.write_data([instrument])
    theirs.write_data(
        frame_to_bars(result.frame, bar_type, instrument), start=D0 * NS + 1, end=(D0 + DAY_MS) * NS
    )

    report = await _ingest_async(ours, dsm)

    assert report.bars_written == {BAR_TYPE: 1440}
    assert _files(ours) == _files(theirs) == [_day_file(0)]
    ours_table = pq.read_table(f"{ours.path}/data/bar/{BAR_TYPE}/{_day_file(0)}")
    theirs_table = pq.read_table(f"{theirs.path}/data/bar/{BAR_TYPE}/{_day_file(0)}")
    assert ours_table.schema.equals(theirs_table.schema, check_metadata=True)
    assert ours_table.equals(theirs_table)
    assert frame_to_catalog_table(result.frame, bar_type, instrument).equals(theirs_table)
    assert ours.bars([BAR_TYPE]) == theirs.bars([BAR_TYPE])


async def _ingest_async(catalog: ParquetDataCatalog, dsm: DataSourceManager) -> IngestReport:
    from nautilus_dsm.catalog import ingest_async

    return await ingest_async(catalog, [INSTRUMENT], ["1m"], START, START + DAY, dsm=dsm)


def test_invalid_input_is_refused_before_any_io(
    imitation: Any, dsm: DataSourceManager, tmp_path: Path
) -> None:
    catalog = _catalog(tmp_path)
    naive = datetime(2024, 1, 1)

    with pytest.raises(InvalidInput, match="naive datetime 2024-01-01T00:00:00 is ambiguous"):
        ingest(catalog, [INSTRUMENT], ["1m"], naive, START + DAY, dsm=dsm)
    with pytest.raises(InvalidInput, match="interval 1s is served on SPOT only"):
        ingest(catalog, [INSTRUMENT], ["1s"], START, START + DAY, dsm=dsm)
    with pytest.raises(InvalidInput, match="instrument_ids and intervals are sequences"):
        ingest(catalog, INSTRUMENT, ["1m"], START, START + DAY, dsm=dsm)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="chunk 0:00:00 is not positive"):
        ingest(catalog, [INSTRUMENT], ["1m"], START, START + DAY, dsm=dsm, chunk=timedelta(0))

    assert imitation.requests == []
    assert catalog.fs.glob(f"{catalog.path}/data/*") == []


def test_backtest_data_config_selects_one_bar_type_by_close_time(tmp_path: Path) -> None:
    config = backtest_data_config(str(tmp_path), INSTRUMENT, "1m", START, START + DAY)

    assert config.data_cls is Bar
    assert config.bar_types == [BAR_TYPE]
    assert str(config.instrument_id) == INSTRUMENT
    assert config.start_time == D0 * NS + 1
    assert config.end_time == (D0 + DAY_MS) * NS
    assert config.catalog_path == str(tmp_path)


def test_backtest_data_config_refuses_a_bar_type_of_another_instrument(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"is not for instrument BTCUSDT-PERP\.BINANCE"):
        backtest_data_config(str(tmp_path), INSTRUMENT, "ETHUSDT.BINANCE-1-MINUTE-LAST-EXTERNAL")


def test_ingest_rate_of_a_week_of_1m(
    dsm: DataSourceManager, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    catalog = _catalog(tmp_path)
    started = time.perf_counter()

    report = ingest(catalog, [INSTRUMENT], ["1m"], START, START + 7 * DAY, dsm=dsm)

    assert report.bars_written == {BAR_TYPE: 10080}
    assert len(report.chunks) == 1
    with capsys.disabled():
        print(
            f"\ningest a week of 1m from the imitation: {report.bars_per_second:,.0f} bars/s "
            f"({time.perf_counter() - started:.2f} s, network + Vision parsing included)"
        )


def test_range_before_listing_is_recorded_empty_and_not_fetched_again(
    imitation: Any, dsm: DataSourceManager, tmp_path: Path
) -> None:
    catalog = _catalog(tmp_path)
    listed = datetime(2020, 1, 1, tzinfo=UTC)

    first = ingest(
        catalog, [INSTRUMENT], ["1h"], listed - 2 * DAY, listed + DAY, dsm=dsm, chunk=DAY
    )
    imitation.clear_requests()
    again = ingest(
        catalog, [INSTRUMENT], ["1h"], listed - 2 * DAY, listed + DAY, dsm=dsm, chunk=DAY
    )

    bar_type = "BTCUSDT-PERP.BINANCE-1-HOUR-LAST-EXTERNAL"
    assert [c.bars for c in first.chunks] == [0, 0, 24]
    assert again.bars_written == {bar_type: 0}
    assert [r.path for r in imitation.requests if "klines" in r.path] == []
    bars = catalog.bars([bar_type])
    assert [b.ts_init for b in bars] == [
        (to_ms(listed) + (i + 1) * 3_600_000) * NS for i in range(24)
    ]
    summary = run_backtest(
        catalog, INSTRUMENT, "1h", listed - 2 * DAY, listed + DAY, strategy=False
    )
    assert summary.bars == 24


def test_end_in_the_future_writes_closed_bars_only_and_a_rerun_adds_nothing(
    dsm: DataSourceManager, tmp_path: Path
) -> None:
    catalog = _catalog(tmp_path)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    bar_type = "BTCUSDT-PERP.BINANCE-1-DAY-LAST-EXTERNAL"

    first = ingest(catalog, [INSTRUMENT], ["1d"], today - 3 * DAY, today + 3 * DAY, dsm=dsm)
    again = ingest(catalog, [INSTRUMENT], ["1d"], today - 3 * DAY, today + 3 * DAY, dsm=dsm)

    assert first.bars_written == {bar_type: 3}
    assert again.bars_written == {bar_type: 0}
    assert again.skipped == [SkippedRange(bar_type, today - 3 * DAY, today)]
    assert catalog.get_intervals(Bar, bar_type) == [
        (to_ms(today - 3 * DAY) * NS + 1, to_ms(today) * NS)
    ]


HOUR_BAR_TYPE = "BTCUSDT-PERP.BINANCE-1-HOUR-LAST-EXTERNAL"


def _new_tick(imitation: Any, tick_size: str, cache_dir: Path) -> DataSourceManager:
    """Binance changes BTCUSDT-PERP's tick; a new manager (exchangeInfo is memoised) sees it."""
    spec = imitation.symbols("futures_usdt")["BTCUSDT"]
    imitation.add_symbol("futures_usdt", replace(spec, tick_size=tick_size))
    return DataSourceManager.create(
        base_url_http=imitation.url, base_url_vision=imitation.url, cache_dir=cache_dir
    )


def test_precision_change_since_the_first_ingest_is_refused_before_fetching(
    imitation: Any, dsm: DataSourceManager, cache_dir: Path, tmp_path: Path
) -> None:
    catalog = _catalog(tmp_path)
    ingest(catalog, [INSTRUMENT], ["1h"], START, START + 7 * DAY, dsm=dsm)
    finer = _new_tick(imitation, "0.001", cache_dir)
    imitation.clear_requests()

    with pytest.raises(InvalidInput) as caught:
        ingest(catalog, [INSTRUMENT], ["1h"], START, START + 14 * DAY, dsm=finer)

    assert str(caught.value) == (
        f"BTCUSDT-PERP.BINANCE: the catalog {catalog.path} holds it with price precision 2 and "
        "size precision 3, but Binance exchangeInfo now gives price precision 3 (tick 0.001) "
        "and size precision 3 (step 0.001); all bars of a bar type must share one precision, "
        "so nothing was fetched; ingest into a new catalog, or delete its bars "
        f"({catalog.path}/data/bar/BTCUSDT-PERP.BINANCE-*) and its instrument "
        f"({catalog.path}/data/crypto_perpetual/BTCUSDT-PERP.BINANCE) and re-ingest"
    )
    assert [r.path for r in imitation.requests] == ["/fapi/v1/exchangeInfo"]
    assert len(_files(catalog, HOUR_BAR_TYPE)) == 1
    bars = catalog.bars([HOUR_BAR_TYPE])
    assert len(bars) == 168
    assert {b.open.precision for b in bars} == {2}


def test_tick_change_at_the_same_precision_converts_with_the_catalog_instrument(
    imitation: Any, dsm: DataSourceManager, cache_dir: Path, tmp_path: Path
) -> None:
    catalog = _catalog(tmp_path)
    ingest(catalog, [INSTRUMENT], ["1h"], START, START + 7 * DAY, dsm=dsm)
    coarser = _new_tick(imitation, "0.20", cache_dir)

    report = ingest(catalog, [INSTRUMENT], ["1h"], START, START + 14 * DAY, dsm=coarser)

    assert report.bars_written == {HOUR_BAR_TYPE: 168}
    assert report.instruments_written == []
    [instrument] = catalog.instruments()
    assert str(instrument.price_increment) == "0.10"
    bars = catalog.bars([HOUR_BAR_TYPE])
    assert [b.ts_init for b in bars] == [(D0 + (i + 1) * 3_600_000) * NS for i in range(336)]
    assert {(b.open.precision, b.volume.precision) for b in bars} == {(2, 3)}


class _EditedExchangeInfo(_Wrapped):
    """A manager whose USDT-M exchangeInfo lists BTCUSDT with edited fields (bars unchanged)."""

    def __init__(self, dsm: DataSourceManager, **fields: str) -> None:
        super().__init__(dsm)
        self._fields = fields

    async def exchange_info(self, market_type: MarketType) -> dict[str, Any]:
        info = copy.deepcopy(await self._dsm.exchange_info(market_type))
        for symbol in info["symbols"]:
            if symbol["symbol"] == "BTCUSDT":
                symbol.update(self._fields)
        return info


def test_a_listed_symbol_that_no_longer_trades_is_ingested(
    dsm: DataSourceManager, tmp_path: Path
) -> None:
    catalog = _catalog(tmp_path)
    settling = _EditedExchangeInfo(dsm, status="SETTLING")

    report = ingest(catalog, [INSTRUMENT], ["1h"], START, START + DAY, dsm=settling)

    assert report.bars_written == {HOUR_BAR_TYPE: 24}
    assert report.instruments_written == [INSTRUMENT]
    [instrument] = catalog.instruments()
    assert (instrument.id.value, instrument.info["status"]) == (INSTRUMENT, "SETTLING")
    assert len(catalog.bars([HOUR_BAR_TYPE])) == 24


def test_a_listed_symbol_without_nautilus_instrument_names_the_reason(
    imitation: Any, dsm: DataSourceManager, tmp_path: Path
) -> None:
    catalog = _catalog(tmp_path)
    odd = _EditedExchangeInfo(dsm, contractType="TRADIFI_OPTION")

    with pytest.raises(InvalidInput) as caught:
        ingest(catalog, [INSTRUMENT], ["1h"], START, START + DAY, dsm=odd)

    assert not isinstance(caught.value, UnknownSymbol)
    assert str(caught.value) == (
        "BTCUSDT-PERP.BINANCE is listed in Binance FUTURES_USDT exchangeInfo but has no "
        "Nautilus instrument: unsupported contract type 'TRADIFI_OPTION'"
    )
    assert [r.path for r in imitation.requests] == ["/fapi/v1/exchangeInfo"]
    # Only the bar type's advisory lock file (empty once released) was created.
    assert [p for p in catalog.fs.glob(f"{catalog.path}/data/*/*") if not p.endswith(".lock")] == []
