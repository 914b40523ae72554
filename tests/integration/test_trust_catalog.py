"""Trust, one writer per series: concurrent ingests, repair, gap re-checks, invalid klines.

Every bar of a series is in the catalog exactly once, whatever runs concurrently, whatever
``--chunk-days`` each used, and whatever an older version left behind; a chunk recorded with
gaps is asked for again and rewritten once the source has the bars; a kline that cannot be a bar
is reported by open time and skipped, the rest is written.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner
from nautilus_trader.model.data import Bar
from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

from nautilus_dsm.bars import bar_type_for, frame_to_catalog_table
from nautilus_dsm.catalog import RecheckedFile, backtest_data_config, grid_cell, ingest
from nautilus_dsm.catalog.files import write_file_atomic
from nautilus_dsm.cli import cli
from nautilus_dsm.common import DataProvider, MarketType, to_ms
from nautilus_dsm.dsm.locks import series_lock
from nautilus_dsm.dsm.manager import DataSourceManager
from nautilus_dsm.errors import SeriesLocked
from nautilus_dsm.parsing import parse_instruments
from nautilus_dsm.testing.symbols import exchange_info

pytestmark = pytest.mark.timeout(120)

PERP = "BTCUSDT-PERP.BINANCE"
BAR_TYPE = "BTCUSDT-PERP.BINANCE-1-MINUTE-LAST-EXTERNAL"
MARKET = MarketType.FUTURES_USDT
START = datetime(2024, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
MIN_MS = 60_000
DAY_MS = 86_400_000
NS = 1_000_000
D0 = to_ms(START)


def _name(first: datetime, end: datetime) -> str:
    a = first.strftime("%Y-%m-%dT%H-%M-%S")
    b = end.strftime("%Y-%m-%dT%H-%M-%S")
    return f"{a}-000000001Z_{b}-000000000Z.parquet"


def _dsm(imitation: Any, cache_dir: Path | None = None, **kwargs: Any) -> DataSourceManager:
    return DataSourceManager.create(
        DataProvider.BINANCE,
        base_url_http=imitation.url,
        base_url_vision=imitation.url,
        cache_dir=cache_dir,
        use_cache=cache_dir is not None,
        **kwargs,
    )


def _catalog(tmp_path: Path, name: str = "catalog") -> ParquetDataCatalog:
    path = tmp_path / name
    path.mkdir(parents=True, exist_ok=True)
    return ParquetDataCatalog(str(path))


def _bar_dir(catalog: ParquetDataCatalog) -> Path:
    return Path(catalog.path) / "data" / "bar" / BAR_TYPE


def _files(catalog: ParquetDataCatalog) -> list[str]:
    return sorted(p.name for p in _bar_dir(catalog).glob("*.parquet"))


def _ts(catalog: ParquetDataCatalog) -> list[int]:
    return [b.ts_init for b in catalog.bars([BAR_TYPE])]


def _closes(first_open_ms: int, n: int) -> list[int]:
    return [(first_open_ms + (i + 1) * MIN_MS) * NS for i in range(n)]


# -- the fixed grid ----------------------------------------------------------------------------


def test_grid_cells_are_utc_months_days_or_years_whatever_the_chunk() -> None:
    feb = to_ms(datetime(2024, 2, 1, tzinfo=UTC))
    assert grid_cell("1m", D0 + 17 * DAY_MS + 5 * MIN_MS) == (D0, feb)
    assert grid_cell("15m", feb - 15 * MIN_MS) == (D0, feb)
    assert grid_cell("1s", D0 + DAY_MS + 1000) == (D0 + DAY_MS, D0 + 2 * DAY_MS)
    y2025 = to_ms(datetime(2025, 1, 1, tzinfo=UTC))
    assert grid_cell("1h", D0 + 100 * 3_600_000) == (D0, y2025)
    # Weekly bars open on Mondays: the year boundary snaps down to the Monday before it, and
    # the week opening Monday 2024-12-30 belongs to the next cell.
    dec30 = to_ms(datetime(2024, 12, 30, tzinfo=UTC))
    assert grid_cell("1w", D0) == (D0, dec30)  # 2024-01-01 is a Monday
    assert grid_cell("1w", dec30) == (dec30, to_ms(datetime(2025, 12, 29, tzinfo=UTC)))
    assert grid_cell("1M", feb) == (D0, y2025)


def test_a_chunk_never_straddles_a_grid_cell() -> None:
    from nautilus_dsm.catalog import ChunkPlan, plan_chunks

    jan29, feb1 = D0 + 28 * DAY_MS, D0 + 31 * DAY_MS
    chunks, _ = plan_chunks("1m", jan29, feb1 + 2 * DAY_MS, [], 7 * DAY_MS, feb1 + 100 * DAY_MS)

    assert chunks == [
        ChunkPlan(jan29, feb1, jan29 * NS + 1, feb1 * NS),
        ChunkPlan(feb1, feb1 + 2 * DAY_MS, feb1 * NS + 1, (feb1 + 2 * DAY_MS) * NS),
    ]


# -- concurrent writers ------------------------------------------------------------------------


def _ingest_cli(
    imitation: Any, catalog: Path, cache: Path, start: str, end: str, chunk_days: int
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nautilus_dsm.cli",
            "ingest",
            PERP,
            "--interval",
            "1m",
            "--start",
            start,
            "--end",
            end,
            "--catalog",
            str(catalog),
            "--chunk-days",
            str(chunk_days),
            "--base-url-http",
            imitation.url,
            "--base-url-vision",
            imitation.url,
            "--cache-dir",
            str(cache),
            "--no-progress",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_concurrent_cli_ingests_with_other_chunks_and_overlapping_ranges_write_each_bar_once(
    imitation: Any, tmp_path: Path
) -> None:
    catalog_dir = tmp_path / "catalog"
    days = 6  # the previous version left up to 1.7x the bars (76,320 for 44,640 over a month)
    # Slow answers keep both runs busy at once: each plans before the other has written.
    imitation.faults.latency_s = 0.01
    a = _ingest_cli(imitation, catalog_dir, tmp_path / "cache-a", "2024-01-01", "2024-01-07", 3)
    b = _ingest_cli(imitation, catalog_dir, tmp_path / "cache-b", "2024-01-03", "2024-01-07", 2)
    out_a, err_a = a.communicate(timeout=100)
    out_b, err_b = b.communicate(timeout=100)

    assert (a.returncode, b.returncode) == (0, 0), err_a + err_b
    catalog = ParquetDataCatalog(str(catalog_dir))
    ts = _ts(catalog)
    assert len(ts) == len(set(ts)) == days * 1440
    assert ts == _closes(D0, days * 1440)
    assert _files(catalog) == [_name(START, START + days * DAY)]
    written = json.loads(out_a)["total_bars"] + json.loads(out_b)["total_bars"]
    assert written == days * 1440
    assert len(catalog.instruments()) == 1


async def test_two_concurrent_ingests_into_one_memory_catalog_write_each_bar_once(
    imitation: Any, tmp_path: Path
) -> None:
    import asyncio

    from nautilus_dsm.catalog import ingest_async

    catalog = ParquetDataCatalog.from_uri("memory:///trust-concurrent")
    imitation.faults.latency_s = 0.02
    try:
        first, second = await asyncio.gather(
            ingest_async(catalog, [PERP], ["1m"], START, START + 6 * DAY,
                         dsm=_dsm(imitation), chunk=2 * DAY),
            ingest_async(catalog, [PERP], ["1m"], START + 2 * DAY, START + 9 * DAY,
                         dsm=_dsm(imitation), chunk=3 * DAY),
        )  # fmt: skip
        files = catalog.fs.glob(f"{catalog.path}/data/bar/{BAR_TYPE}/*.parquet")
        bars = catalog.query(Bar, identifiers=[BAR_TYPE], files=files)
        leftover = catalog.fs.glob(f"{catalog.path}/data/bar/*.lock")
    finally:
        catalog.fs.rm(catalog.path, recursive=True)

    ts = [b.ts_init for b in bars]
    assert ts == _closes(D0, 9 * 1440)
    assert first.total_bars + second.total_bars == 9 * 1440
    assert [Path(f).name for f in files] == [_name(START, START + 9 * DAY)]
    assert leftover == []  # object-store locks are removed on release


def test_a_writer_holding_the_series_lock_makes_the_next_wait_then_fail_naming_it(
    imitation: Any, cache_dir: Path, tmp_path: Path
) -> None:
    catalog = _catalog(tmp_path)
    ingest(catalog, [PERP], ["1m"], START, START + DAY, dsm=_dsm(imitation, cache_dir))
    lock_path = f"{_bar_dir(catalog)}.lock"
    imitation.clear_requests()

    with series_lock(None, lock_path, owner="ingest-elsewhere"):
        with pytest.raises(SeriesLocked) as caught:
            ingest(catalog, [PERP], ["1m"], START, START + 2 * DAY,
                   dsm=_dsm(imitation, cache_dir), lock_timeout_s=0.2)  # fmt: skip
        result = CliRunner().invoke(
            cli,
            ["ingest", PERP, "--interval", "1m", "--start", "2024-01-01", "--end", "2024-01-03",
             "--catalog", catalog.path, "--base-url-http", imitation.url, "--base-url-vision",
             imitation.url, "--cache-dir", str(cache_dir), "--no-progress",
             "--lock-timeout", "0.2"],
        )  # fmt: skip

    message = str(caught.value)
    assert message.startswith(f"{BAR_TYPE} is being written by another process: lock {lock_path}")
    assert "owner ingest-elsewhere" in message and "waited 0.2 s" in message
    assert imitation.requests == []  # refused before any request
    assert result.exit_code == 1
    assert "SeriesLocked" in result.stderr and "owner ingest-elsewhere" in result.stderr
    assert _ts(catalog) == _closes(D0, 1440)


# -- repair of what an older version (or two unlocked writers) left ----------------------------


def _old_style_files(
    catalog: ParquetDataCatalog, imitation: Any, spans: list[tuple[int, int]]
) -> None:
    """Write files as the previous version did: one per chunk, at the chunk's own boundaries."""
    info = exchange_info(MARKET, list(imitation.symbols(MARKET).values()), imitation.now_ms())
    [instrument] = [i for i in parse_instruments(MARKET, info, 0) if i.id.value == PERP]
    catalog.write_data([instrument])
    bar_type = bar_type_for(PERP, "1m")
    for first_day, end_day in spans:
        a, b = D0 + first_day * DAY_MS, D0 + end_day * DAY_MS
        frame = imitation.expected(MARKET, "BTCUSDT", "1m", a, b)
        table = frame_to_catalog_table(frame, bar_type, instrument)
        name = _name(START + first_day * DAY, START + end_day * DAY)
        write_file_atomic(catalog, str(_bar_dir(catalog)), name, table)


def test_rerun_repairs_a_catalog_holding_bars_twice_and_moves_old_boundaries_onto_the_grid(
    imitation: Any, cache_dir: Path, tmp_path: Path
) -> None:
    catalog = _catalog(tmp_path)
    # Two unlocked runs of the old code: 7-day chunks over Jan 1-Feb 5 (the last straddles the
    # month boundary) and 3-day chunks over Jan 10-Jan 19, both written: 9 days held twice.
    _old_style_files(catalog, imitation, [(0, 7), (7, 14), (14, 21), (21, 28), (28, 35)])
    _old_style_files(catalog, imitation, [(9, 12), (12, 15), (15, 18)])
    before = _ts(catalog)
    imitation.clear_requests()

    report = ingest(catalog, [PERP], ["1m"], START, START + 35 * DAY,
                    dsm=_dsm(imitation, cache_dir))  # fmt: skip
    again = ingest(catalog, [PERP], ["1m"], START, START + 35 * DAY,
                   dsm=_dsm(imitation, cache_dir))  # fmt: skip

    assert len(before) == 35 * 1440 + 9 * 1440  # the duplicates were real
    ts = _ts(catalog)
    assert ts == _closes(D0, 35 * 1440)
    assert _files(catalog) == [
        _name(START, START + 31 * DAY),
        _name(START + 31 * DAY, START + 35 * DAY),
    ]
    assert [(r.files_merged, r.files_written, r.duplicates_removed) for r in report.repaired] == [
        (8, 2, 9 * 1440)
    ]
    assert "repaired 8 overlapping file(s)" in report.summary()
    assert "12960 duplicate bar(s) removed" in report.summary()
    assert report.total_bars == 0 and again.total_bars == 0 and again.repaired == []
    assert [r.path for r in imitation.requests] == []  # the repair needs no source
    assert len(catalog.bars([BAR_TYPE])) == 35 * 1440


# -- gap records and re-checks -----------------------------------------------------------------


def test_a_chunk_written_with_a_source_gap_is_rewritten_once_the_source_has_the_bars(
    imitation: Any, tmp_path: Path
) -> None:
    catalog = _catalog(tmp_path)
    gap = ("BTCUSDT", D0 + 10 * 3_600_000, D0 + 11 * 3_600_000)  # 60 bars on Jan 1
    imitation.faults.gaps.append(gap)
    # No kline cache: whether the cache keeps an incomplete day provisional is its own topic;
    # here the sources are asked directly.
    first = ingest(catalog, [PERP], ["1m"], START, START + 2 * DAY, dsm=_dsm(imitation))
    sidecar = _bar_dir(catalog) / f"{_name(START, START + 2 * DAY)}.gaps.json"
    record = json.loads(sidecar.read_text())
    gappy = _ts(catalog)
    config = backtest_data_config(catalog, PERP, "1m", START, START + 2 * DAY)
    loaded = catalog.query(**config.query)

    still = ingest(catalog, [PERP], ["1m"], START, START + 2 * DAY, dsm=_dsm(imitation))
    imitation.faults.gaps.remove(gap)
    fixed = ingest(catalog, [PERP], ["1m"], START, START + 2 * DAY, dsm=_dsm(imitation))
    final = ingest(catalog, [PERP], ["1m"], START, START + 2 * DAY, dsm=_dsm(imitation))

    assert first.total_bars == 2880 - 60
    assert record["gaps"] == [[gap[1], gap[2]]] and record["bars"] == 2820
    # The record is invisible to NautilusTrader: the catalog and a backtest config read bars.
    assert len(gappy) == 2820 and len(loaded) == 2820
    assert catalog.get_intervals(Bar, BAR_TYPE) == [(D0 * NS + 1, (D0 + 2 * DAY_MS) * NS)]
    file = str(_bar_dir(catalog) / _name(START, START + 2 * DAY))
    assert still.rechecked == [RecheckedFile(BAR_TYPE, file, 2820, 2820, False, 1)]
    assert still.total_bars == 0
    assert fixed.rechecked == [RecheckedFile(BAR_TYPE, file, 2820, 2880, True, 0)]
    assert fixed.total_bars == 60
    assert "2820 -> 2880 bars, rewritten, 0 gap(s) left" in fixed.summary()
    assert not sidecar.exists()
    assert final.rechecked == [] and final.total_bars == 0
    assert _ts(catalog) == _closes(D0, 2880)
    assert _files(catalog) == [_name(START, START + 2 * DAY)]


# -- klines that cannot be bars ----------------------------------------------------------------


def _serve_one_insane_bar(imitation: Any, days: int) -> datetime:
    bad = START + timedelta(hours=10)
    frame = imitation.expected(MARKET, "BTCUSDT", "1m", D0, D0 + days * DAY_MS)
    frame = frame.with_columns(
        pl.when(pl.col("open_time") == bad)
        .then(pl.col("low") - 1)
        .otherwise(pl.col("high"))
        .alias("high")
    )
    imitation.set_klines(MARKET, "BTCUSDT", "1m", frame)
    return bad


def test_one_high_below_low_kline_is_reported_and_skipped_and_ingest_exits_0(
    imitation: Any, cache_dir: Path, tmp_path: Path
) -> None:
    bad = _serve_one_insane_bar(imitation, 2)
    catalog_dir = tmp_path / "catalog"
    args = ["ingest", PERP, "--interval", "1m", "--start", "2024-01-01", "--end", "2024-01-03",
            "--catalog", str(catalog_dir), "--base-url-http", imitation.url,
            "--base-url-vision", imitation.url, "--cache-dir", str(cache_dir), "--no-progress"]  # fmt: skip

    text = CliRunner().invoke(cli, args)
    as_json = CliRunner().invoke(cli, [*args, "--json"])

    assert text.exit_code == 0, text.stderr
    assert (
        "skipped 1 kline(s) that cannot be bars: 2024-01-01T10:00:00Z (high < low)" in text.stdout
    )
    assert "BTCUSDT-PERP.BINANCE-1-MINUTE-LAST-EXTERNAL: 2879 bars" in text.stdout
    assert as_json.exit_code == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    assert report["invalid"] == [
        {"bar_type": BAR_TYPE, "open_time": bad.isoformat(), "reason": "high < low"}
    ]
    assert report["rechecked"][0]["bars_after"] == 2879
    catalog = ParquetDataCatalog(str(catalog_dir))
    bad_close = (to_ms(bad) + MIN_MS) * NS
    assert _ts(catalog) == [t for t in _closes(D0, 2880) if t != bad_close]


def test_an_insane_kline_in_a_chunk_below_the_threshold_exits_3_after_writing_the_others(
    imitation: Any, cache_dir: Path, tmp_path: Path
) -> None:
    _serve_one_insane_bar(imitation, 2)  # the recorded series ends on Jan 3: day 3 is empty
    catalog_dir = tmp_path / "catalog"
    args = ["ingest", PERP, "--interval", "1m", "--start", "2024-01-01", "--end", "2024-01-04",
            "--catalog", str(catalog_dir), "--chunk-days", "1", "--base-url-http",
            imitation.url, "--base-url-vision", imitation.url, "--cache-dir", str(cache_dir),
            "--no-progress"]  # fmt: skip

    result = CliRunner().invoke(cli, args)

    assert result.exit_code == 3
    assert "quality below threshold" in result.stderr
    assert "2024-01-01T10:00:00Z (high < low)" in result.stderr
    catalog = ParquetDataCatalog(str(catalog_dir))
    assert len(_ts(catalog)) == 2879
