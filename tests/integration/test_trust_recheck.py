"""Trust: a gap only one source lacked is asked again, of every enabled source, by later fetches.

One source's lack of closed bars is no evidence they do not exist (a transiently short REST
page), so a provisional period's unconfirmed gap is asked again of REST too (for the missing
open times only, at most once per fetch), not only of the sources that have not lacked it yet.
Without that, a day Vision never publishes, or a yearly 1d period (Vision is not used), keeps a
transient hole for good, and so does a catalog chunk re-checked through the cache. A gap two
sources lacked is confirmed and never asked again
(``test_trust_cache.py::test_gap_both_sources_lack_is_confirmed_cached_final_and_never_filled``).

Every test runs over real HTTP against the local imitation and asserts exact bars
(``srv.expected``), request lists and cache files.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

from nautilus_dsm.catalog import RecheckedFile, ingest
from nautilus_dsm.common import Interval, MarketType, from_ms, to_ms
from nautilus_dsm.dsm.cache_state import PeriodGap, PeriodState
from nautilus_dsm.dsm.manager import DataSourceManager

pytestmark = pytest.mark.timeout(60)

UM = MarketType.FUTURES_USDT
M1 = Interval.MINUTE_1
D1 = Interval.DAY_1
MIN = 60_000
HOUR = 3_600_000
DAY = 86_400_000
NS = 1_000_000
JAN2 = to_ms(datetime(2024, 1, 2, tzinfo=UTC))
PERP = "BTCUSDT-PERP.BINANCE"
BAR_TYPE = "BTCUSDT-PERP.BINANCE-1-MINUTE-LAST-EXTERNAL"
ZIP = "/data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-02.zip"


def dsm_for(srv: Any, cache_dir: Path, **kwargs: Any) -> DataSourceManager:
    return DataSourceManager.create(
        "binance", base_url_http=srv.url, base_url_vision=srv.url, cache_dir=cache_dir, **kwargs
    )


def requests(srv: Any) -> list[tuple[str, int, int] | str]:
    """REST klines as ``("klines", startTime, endTime)`` and Vision files by path, in order
    (exchangeInfo and server-time requests left out)."""
    out: list[tuple[str, int, int] | str] = []
    for r in srv.requests:
        if r.path == "/fapi/v1/klines":
            out.append(("klines", int(r.query["startTime"]), int(r.query.get("endTime", -1))))
        elif r.path.startswith("/data/"):
            out.append(r.path)
    return out


def files(cache_dir: Path, interval: str) -> list[str]:
    folder = cache_dir / "binance" / "futures_usdt" / "BTCUSDT" / interval
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def state(cache_dir: Path, interval: str, name: str) -> PeriodState:
    path = cache_dir / "binance" / "futures_usdt" / "BTCUSDT" / interval / name
    return PeriodState.from_json(
        pl.read_parquet_metadata(path).get("nautilus_dsm"),
        final_default=not name.endswith(".provisional.parquet"),
    )


async def test_short_rest_page_of_a_day_vision_never_publishes_is_filled_by_rest_later(
    imitation: Any, cache_dir: Path
) -> None:
    lo, hi = JAN2 + 6 * HOUR, JAN2 + 7 * HOUR
    imitation.faults.rest_gaps.append(("BTCUSDT", lo, hi))  # a transiently short REST page
    imitation.faults.vision_missing.add("BTCUSDT-1m-2024-01-02.zip")  # never published
    expected = imitation.expected(UM, "BTCUSDT", M1, JAN2, JAN2 + DAY)
    opens = pl.col("open_time").dt.epoch("ms")
    short = expected.filter((opens < lo) | (opens >= hi))
    start, end = from_ms(JAN2), from_ms(JAN2 + DAY)
    results, asked, cached = [], [], []

    async with dsm_for(imitation, cache_dir, on_low_quality="warn") as dsm:
        for fix_rest_after in (False, True, False, False):
            imitation.clear_requests()
            results.append(await dsm.fetch(PERP, "1m", start, end))
            asked.append(requests(imitation))
            cached.append(files(cache_dir, "1m"))
            if fix_rest_after:
                imitation.faults.rest_gaps.clear()  # REST has the hour again

    cold, still, fixed, warm = results
    assert cold.frame.equals(short)
    assert asked[0] == [("klines", 0, -1), ZIP, ("klines", JAN2, JAN2 + DAY - 1)]
    assert [(g.missing, g.confirmed_by) for g in cold.report.gaps] == [(60, ("rest",))]
    assert cold.report.provisional_periods == 1
    assert cached[0] == ["2024-01-02.provisional.parquet"]
    assert state(cache_dir, "1m", "2024-01-02.parquet") == PeriodState(final=True)
    # Still short: the zip and REST (the 60 missing bars only) are each asked exactly once.
    assert still.frame.equals(short)
    assert asked[1] == [ZIP, ("klines", lo, hi - 1)]
    assert still.report.sources["cache"] == 1380 and still.report.provisional_periods == 1
    # REST has them again: the next fetch gets them and the day becomes final.
    assert fixed.frame.equals(expected)
    assert asked[2] == [ZIP, ("klines", lo, hi - 1)]
    assert fixed.report.sources == {"cache": 1380, "vision": 0, "rest": 60, "synthetic": 0}
    assert (fixed.report.gaps, fixed.report.provisional_periods, fixed.report.warnings) == (
        [],
        0,
        [],
    )
    assert cached[2] == ["2024-01-02.parquet"]
    assert warm.frame.equals(expected)
    assert asked[3] == []


async def test_short_rest_page_of_a_yearly_1d_period_is_filled_by_the_next_fetch(
    imitation: Any, cache_dir: Path
) -> None:
    lo, hi = to_ms(datetime(2023, 3, 1, tzinfo=UTC)), to_ms(datetime(2023, 3, 3, tzinfo=UTC))
    imitation.faults.rest_gaps.append(("BTCUSDT", lo, hi))  # transient: 2 daily bars
    start, end = datetime(2023, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC)
    expected = imitation.expected(UM, "BTCUSDT", D1, to_ms(start), to_ms(end))
    results, asked = [], []

    async with dsm_for(imitation, cache_dir, on_low_quality="warn") as dsm:
        for _ in range(3):
            imitation.clear_requests()
            results.append(await dsm.fetch(PERP, "1d", start, end))
            asked.append(requests(imitation))
            imitation.faults.rest_gaps.clear()

    cold, fixed, warm = results
    assert cold.frame.height == 363 and expected.height == 365
    assert [(g.start, g.missing, g.confirmed_by) for g in cold.report.gaps] == [
        (datetime(2023, 3, 1, tzinfo=UTC), 2, ("rest",))
    ]
    assert len(asked[0]) == 2  # the listing probe and the year
    assert fixed.frame.equals(expected)
    assert asked[1] == [("klines", lo, hi - 1)]  # the 2 missing days only, Vision not used
    assert fixed.report.sources == {"cache": 363, "vision": 0, "rest": 2, "synthetic": 0}
    assert (fixed.report.gaps, fixed.report.provisional_periods) == ([], 0)
    assert files(cache_dir, "1d") == ["2023.parquet"]
    assert state(cache_dir, "1d", "2023.parquet") == PeriodState(final=True)
    assert warm.frame.equals(expected) and asked[2] == []


async def test_a_gap_rest_lacks_again_keeps_its_provisional_file_unchanged(
    imitation: Any, cache_dir: Path
) -> None:
    lo, hi = JAN2 + 6 * HOUR, JAN2 + 7 * HOUR
    imitation.faults.gaps.append(("BTCUSDT", lo, hi))  # REST lacks it for real
    imitation.faults.vision_missing.add("BTCUSDT-1m-2024-01-02.zip")
    start, end = from_ms(JAN2), from_ms(JAN2 + DAY)
    path = cache_dir / "binance" / "futures_usdt" / "BTCUSDT" / "1m"
    path = path / "2024-01-02.provisional.parquet"

    async with dsm_for(imitation, cache_dir, on_low_quality="warn") as dsm:
        await dsm.fetch(PERP, "1m", start, end)
        written = path.stat().st_mtime_ns
        imitation.clear_requests()
        again = await dsm.fetch(PERP, "1m", start, end)

    assert requests(imitation) == [ZIP, ("klines", lo, hi - 1)]
    assert again.frame.height == 1380
    # Lacked again by the same source: nothing new, so the file is not rewritten.
    assert path.stat().st_mtime_ns == written
    assert state(cache_dir, "1m", path.name) == PeriodState(
        final=False, gaps=(PeriodGap(lo, hi, ("rest",)),)
    )


def test_ingest_rerun_through_the_cache_gets_the_bars_a_short_rest_page_lacked(
    imitation: Any, tmp_path: Path
) -> None:
    lo, hi = JAN2 + 6 * HOUR, JAN2 + 7 * HOUR
    imitation.faults.rest_gaps.append(("BTCUSDT", lo, hi))
    imitation.faults.vision_missing.add("BTCUSDT-1m-2024-01-02.zip")
    catalog_dir = tmp_path / "catalog"
    catalog_dir.mkdir()
    start, end = from_ms(JAN2), from_ms(JAN2) + timedelta(days=1)
    file = str(
        catalog_dir
        / "data"
        / "bar"
        / BAR_TYPE
        / "2024-01-02T00-00-00-000000001Z_2024-01-03T00-00-00-000000000Z.parquet"
    )
    reports, asked, bars = [], [], []
    for _ in range(3):
        imitation.clear_requests()
        dsm = dsm_for(imitation, tmp_path / "cache", on_low_quality="warn")
        reports.append(ingest(str(catalog_dir), [PERP], ["1m"], start, end, dsm=dsm))
        asked.append(requests(imitation))
        bars.append([b.ts_init for b in ParquetDataCatalog(str(catalog_dir)).bars([BAR_TYPE])])
        imitation.faults.rest_gaps.clear()  # REST has the hour again

    first, fixed, final = reports
    closes = [(JAN2 + (i + 1) * MIN) * NS for i in range(1440)]
    assert first.total_bars == 1380 and len(bars[0]) == 1380
    assert fixed.rechecked == [RecheckedFile(BAR_TYPE, file, 1380, 1440, True, 0)]
    assert fixed.total_bars == 60
    assert asked[1] == [ZIP, ("klines", lo, hi - 1)]
    assert bars[1] == closes
    assert not Path(file + ".gaps.json").exists()
    assert final.rechecked == [] and final.total_bars == 0
    assert asked[2] == [] and bars[2] == closes


async def test_a_gap_only_vision_lacked_asks_rest_first_and_the_zip_again_only_if_rest_fails(
    imitation: Any, cache_dir: Path
) -> None:
    lo, hi = JAN2 + 6 * HOUR, JAN2 + 6 * HOUR + 30 * MIN
    imitation.faults.vision_file_gaps.append(("BTCUSDT-1m-2024-01-02.zip", lo, hi))
    refuse = [True]

    def bad_gap_page(path: str, query: dict[str, str], rows: list[list[object]]) -> object:
        if refuse[0] and query.get("startTime") == str(lo):
            return [[*row[:2], "abc", *row[3:]] for row in rows]  # fails validation
        return rows

    imitation.faults.rest_rewrite = bad_gap_page
    expected = imitation.expected(UM, "BTCUSDT", M1, JAN2, JAN2 + DAY)
    start, end = from_ms(JAN2), from_ms(JAN2 + DAY)
    gap_page = ("klines", lo, hi - 1)
    results, asked = [], []

    async with dsm_for(imitation, cache_dir, on_low_quality="warn", max_retries=1) as dsm:
        for fix_rest_after in (False, True, False, False):
            imitation.clear_requests()
            results.append(await dsm.fetch(PERP, "1m", start, end))
            asked.append(requests(imitation))
            if fix_rest_after:
                refuse[0] = False

    cold, still, fixed, warm = results
    assert asked[0] == [("klines", 0, -1), ZIP, ZIP + ".CHECKSUM", gap_page]
    assert [(g.missing, g.confirmed_by) for g in cold.report.gaps] == [(30, ("vision",))]
    # REST, which has not lacked the gap, is asked first; it fails again, so the zip that
    # lacked it is asked once more in the same fetch.
    assert still.frame.height == 1410
    assert asked[1] == [gap_page, ZIP, ZIP + ".CHECKSUM"]
    # REST answers: the zip is not downloaded again, the day becomes final.
    assert fixed.frame.equals(expected)
    assert asked[2] == [gap_page]
    assert fixed.report.sources == {"cache": 1410, "vision": 0, "rest": 30, "synthetic": 0}
    assert files(cache_dir, "1m") == ["2024-01-02.parquet"]
    assert warm.frame.equals(expected) and asked[3] == []
