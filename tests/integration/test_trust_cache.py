"""Trust (issue 9, points 2 and 6): a period is immutable only when it is complete, and the
machine's own faults (full or read-only cache, ``cache clear`` races, symlinks, bad entries)
never lose downloaded bars nor reach the user as raw exceptions.

Every test runs the manager over real HTTP against the local imitation and asserts exact bars
(``srv.expected``), source counts, request lists and cache file states.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from nautilus_dsm.common import Interval, MarketType, to_ms
from nautilus_dsm.dsm import cache as cache_module
from nautilus_dsm.dsm import cache_files
from nautilus_dsm.dsm.cache import KlineCache
from nautilus_dsm.dsm.cache_state import PeriodGap, PeriodState
from nautilus_dsm.dsm.manager import DataSourceManager
from nautilus_dsm.errors import QualityBelowThreshold
from tests.conftest import dsm_messages

UM = MarketType.FUTURES_USDT
M1 = Interval.MINUTE_1
H1 = Interval.HOUR_1
MIN = 60_000
HOUR = 3_600_000
DAY = 86_400_000
T0 = to_ms(datetime(2024, 1, 1, tzinfo=UTC))
PERP = "BTCUSDT-PERP.BINANCE"
VISION_UM = "/data/futures/um/{kind}/klines/BTCUSDT/{interval}/BTCUSDT-{interval}-{stamp}.zip"

pytestmark = pytest.mark.timeout(60)


def at(day: int, hour: int = 0, minute: int = 0, month: int = 1) -> datetime:
    return datetime(2024, month, day, hour, minute, tzinfo=UTC)


def dsm_for(srv: Any, cache_dir: Path, **kwargs: Any) -> DataSourceManager:
    return DataSourceManager.create(
        "binance", base_url_http=srv.url, base_url_vision=srv.url, cache_dir=cache_dir, **kwargs
    )


def src(cache: int = 0, vision: int = 0, rest: int = 0) -> dict[str, int]:
    return {"cache": cache, "vision": vision, "rest": rest, "synthetic": 0}


def files(cache_dir: Path, interval: str = "1m") -> list[str]:
    folder = cache_dir / "binance" / "futures_usdt" / "BTCUSDT" / interval
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def klines(srv: Any) -> list[tuple[int, int]]:
    """``(startTime, endTime)`` of every REST klines request, sorted."""
    return sorted(
        (int(r.query["startTime"]), int(r.query.get("endTime", -1)))
        for r in srv.requests
        if r.path == "/fapi/v1/klines"
    )


def vision(srv: Any) -> list[str]:
    return sorted(r.path for r in srv.requests if r.path.startswith("/data/"))


def daily(stamp: str, interval: str = "1m") -> list[str]:
    path = VISION_UM.format(kind="daily", interval=interval, stamp=stamp)
    return [path, path + ".CHECKSUM"]


def monthly(stamp: str, interval: str = "1h") -> list[str]:
    path = VISION_UM.format(kind="monthly", interval=interval, stamp=stamp)
    return [path, path + ".CHECKSUM"]


def gaps(report: Any) -> list[tuple[datetime, datetime, int, tuple[str, ...]]]:
    return [(g.start, g.end, g.missing, g.confirmed_by) for g in report.gaps]


def state(cache_dir: Path, name: str, interval: str = "1m") -> PeriodState:
    path = cache_dir / "binance" / "futures_usdt" / "BTCUSDT" / interval / name
    return PeriodState.from_json(
        pl.read_parquet_metadata(path).get("nautilus_dsm"),
        final_default=not name.endswith(".provisional.parquet"),
    )


# --------------------------------------------------------------------------------------------
# A period is immutable only when it is complete
# --------------------------------------------------------------------------------------------


async def test_short_monthly_zip_falls_through_to_the_daily_zip_in_the_same_fetch(
    imitation: Any, cache_dir: Path
) -> None:
    # The mirror's monthly zip lacks all of Jan 15; its daily zip and REST have it.
    imitation.faults.vision_file_gaps.append(
        ("BTCUSDT-1h-2024-01.zip", T0 + 14 * DAY, T0 + 15 * DAY)
    )
    expected = imitation.expected(UM, "BTCUSDT", H1, T0, T0 + 31 * DAY)

    async with dsm_for(imitation, cache_dir) as dsm:
        cold = await dsm.fetch(PERP, "1h", at(1), at(1, month=2))
        imitation.clear_requests()
        warm = await dsm.fetch(PERP, "1h", at(1), at(1, month=2))

    assert cold.frame.equals(expected)
    assert cold.frame.height == 744
    assert cold.report.sources == src(vision=744)
    assert (cold.report.completeness, cold.report.gaps, cold.report.warnings) == (1.0, [], [])
    assert cold.report.provisional_periods == 0
    assert files(cache_dir, "1h") == [f"2024-01-{d:02d}.parquet" for d in range(1, 32)]
    assert state(cache_dir, "2024-01-15.parquet", "1h") == PeriodState(final=True)
    assert warm.frame.equals(expected)
    assert warm.report.sources == src(cache=744)
    assert imitation.requests == []


@pytest.mark.parametrize(
    "daily_fault", ["vision_missing", "vision_bad_checksum", "vision_wrong_columns"]
)
async def test_short_monthly_zip_without_a_daily_zip_asks_rest_for_the_missing_bars_only(
    imitation: Any, cache_dir: Path, daily_fault: str
) -> None:
    # The daily zip is absent (404) or fails (checksum, columns: a SourceError of that file).
    lo, hi = T0 + 14 * DAY + 10 * HOUR, T0 + 14 * DAY + 14 * HOUR
    imitation.faults.vision_file_gaps.append(("BTCUSDT-1h-2024-01.zip", lo, hi))
    getattr(imitation.faults, daily_fault).add("BTCUSDT-1h-2024-01-15.zip")
    expected = imitation.expected(UM, "BTCUSDT", H1, T0, T0 + 31 * DAY)

    async with dsm_for(imitation, cache_dir) as dsm:
        result = await dsm.fetch(PERP, "1h", at(1), at(1, month=2))

    assert result.frame.equals(expected)
    assert result.report.sources == src(vision=740, rest=4)
    assert result.report.gaps == []
    # The listing probe, then exactly the 4 missing hours: not the whole day, not the month.
    assert klines(imitation) == [(0, -1), (lo, hi - 1)]
    asked = {p for p in vision(imitation) if "daily" in p}
    assert asked <= set(daily("2024-01-15", "1h"))  # that one day's daily zip, nothing else
    assert set(monthly("2024-01")) <= set(vision(imitation))
    assert "2024-01-15.parquet" in files(cache_dir, "1h")
    assert not [f for f in files(cache_dir, "1h") if "provisional" in f]


async def test_gap_both_sources_lack_is_confirmed_cached_final_and_never_filled(
    imitation: Any, cache_dir: Path
) -> None:
    lo, hi = T0 + DAY + 600 * MIN, T0 + DAY + 630 * MIN
    imitation.faults.gaps.append(("BTCUSDT", lo, hi))
    expected = imitation.expected(UM, "BTCUSDT", M1, T0, T0 + 2 * DAY)
    confirmed = [(at(2, 10), at(2, 10, 30), 30, ("rest", "vision"))]

    async with dsm_for(imitation, cache_dir, min_completeness=0.9) as dsm:
        cold = await dsm.fetch(PERP, "1m", at(1), at(3))
        assert klines(imitation) == [(0, -1), (lo, hi - 1)]  # the gap asked of REST once
        imitation.clear_requests()
        warm = await dsm.fetch(PERP, "1m", at(1), at(3))

    for result in (cold, warm):
        assert result.frame.equals(expected)
        assert result.frame.height == 2850
        assert gaps(result.report) == confirmed
        assert (result.report.confirmed_gaps, result.report.unconfirmed_gaps) == (1, 0)
        data = result.report.to_dict()
        assert data["gaps"][0]["confirmed_by"] == ["rest", "vision"]
        assert (data["confirmed_gaps"], data["provisional_periods"]) == (1, 0)
    assert cold.report.sources == src(vision=2850)
    assert warm.report.sources == src(cache=2850)
    assert imitation.requests == []  # final: nothing is asked again
    assert files(cache_dir) == ["2024-01-01.parquet", "2024-01-02.parquet"]
    assert state(cache_dir, "2024-01-02.parquet") == PeriodState(
        final=True, gaps=(PeriodGap(lo, hi, ("rest", "vision")),)
    )


async def test_short_rest_page_is_provisional_and_upgraded_once_vision_has_the_day(
    imitation: Any, cache_dir: Path
) -> None:
    lo, hi = T0 + DAY + 600 * MIN, T0 + DAY + 630 * MIN
    imitation.faults.rest_gaps.append(("BTCUSDT", lo, hi))  # a short REST page
    imitation.faults.vision_missing.add("BTCUSDT-1m-2024-01-02.zip")  # not published yet
    expected = imitation.expected(UM, "BTCUSDT", M1, T0, T0 + 2 * DAY)
    short = expected.filter(
        (pl.col("open_time").dt.epoch("ms") < lo) | (pl.col("open_time").dt.epoch("ms") >= hi)
    )

    async with dsm_for(imitation, cache_dir, min_completeness=0.9) as dsm:
        cold = await dsm.fetch(PERP, "1m", at(1), at(3))
        cold_files = files(cache_dir)
        cold_state = state(cache_dir, "2024-01-02.provisional.parquet")
        info = KlineCache(cache_dir).info()
        imitation.clear_requests()
        again = await dsm.fetch(PERP, "1m", at(1), at(3))
        again_requests = (klines(imitation), vision(imitation))
        imitation.faults.vision_missing.clear()  # Vision publishes the day
        imitation.clear_requests()
        fixed = await dsm.fetch(PERP, "1m", at(1), at(3))
        fixed_requests = (klines(imitation), vision(imitation))
        imitation.clear_requests()
        warm = await dsm.fetch(PERP, "1m", at(1), at(3))

    assert cold.frame.equals(short)
    assert cold.report.sources == src(vision=1440, rest=1410)
    assert gaps(cold.report) == [(at(2, 10), at(2, 10, 30), 30, ("rest",))]
    assert (cold.report.confirmed_gaps, cold.report.unconfirmed_gaps) == (0, 1)
    assert cold.report.provisional_periods == 1
    assert any(
        w.startswith("1 period(s) cached as provisional (2024-01-02)") for w in cold.report.warnings
    )
    assert cold_files == ["2024-01-01.parquet", "2024-01-02.provisional.parquet"]
    assert cold_state == PeriodState(final=False, gaps=(PeriodGap(lo, hi, ("rest",)),))
    assert (info["files"], info["provisional"]) == (2, 1)
    assert info["entries"][0]["last"] == "2024-01-02"

    # Still unpublished: the provisional bars are served, Vision is asked again, and so is REST
    # for the 30 missing bars only (one source's lack is no evidence), once in this fetch.
    assert again.frame.equals(short)
    assert again.report.sources == src(cache=2850)
    assert again.report.provisional_periods == 1
    assert again_requests == ([(lo, hi - 1)], [daily("2024-01-02")[0]])

    # Published: the daily zip fills the 30 bars and the day becomes final.
    assert fixed.frame.equals(expected)
    assert fixed.report.sources == src(cache=2850, vision=30)
    assert (fixed.report.gaps, fixed.report.provisional_periods) == ([], 0)
    assert fixed_requests == ([], daily("2024-01-02"))
    assert files(cache_dir) == ["2024-01-01.parquet", "2024-01-02.parquet"]
    assert warm.frame.equals(expected)
    assert warm.report.sources == src(cache=2880)
    assert imitation.requests == []


async def test_short_period_under_raise_is_cached_provisional_not_final(
    imitation: Any, cache_dir: Path
) -> None:
    lo, hi = T0 + DAY, T0 + DAY + 720 * MIN  # half of Jan 2 missing from REST
    imitation.faults.rest_gaps.append(("BTCUSDT", lo, hi))
    imitation.faults.vision_missing.add("BTCUSDT-1m-2024-01-02.zip")
    expected = imitation.expected(UM, "BTCUSDT", M1, T0, T0 + 2 * DAY)

    async with dsm_for(imitation, cache_dir, on_low_quality="raise") as dsm:
        with pytest.raises(QualityBelowThreshold, match=r"completeness 75\.00%") as caught:
            await dsm.fetch(PERP, "1m", at(1), at(3))
        assert files(cache_dir) == ["2024-01-01.parquet", "2024-01-02.provisional.parquet"]
        imitation.faults.reset()
        repaired = await dsm.fetch(PERP, "1m", at(1), at(3))

    assert caught.value.result.frame.height == 2160
    assert repaired.frame.equals(expected)
    assert repaired.report.sources == src(cache=2160, vision=720)
    assert files(cache_dir) == ["2024-01-01.parquet", "2024-01-02.parquet"]


async def test_short_legacy_cache_file_is_rechecked_and_a_whole_one_kept(
    imitation: Any, cache_dir: Path
) -> None:
    # Files written before states were recorded: one whole day, one the old code cached short.
    expected = imitation.expected(UM, "BTCUSDT", M1, T0, T0 + 2 * DAY)
    old = KlineCache(cache_dir)
    opens = pl.col("open_time").dt.epoch("ms")
    old.write(UM, "BTCUSDT", M1, "2024-01-01", expected.filter(opens < T0 + DAY))
    old.write(UM, "BTCUSDT", M1, "2024-01-02", expected.filter(opens >= T0 + DAY + 60 * MIN))
    assert old.read_state(UM, "BTCUSDT", M1, "2024-01-02") == PeriodState(True, recorded=False)

    async with dsm_for(imitation, cache_dir) as dsm:
        result = await dsm.fetch(PERP, "1m", at(1), at(3))

    assert result.frame.equals(expected)
    assert result.report.sources == src(cache=2820, vision=60)
    assert (result.report.cache_hits, result.report.cache_misses) == (1, 1)
    assert vision(imitation) == daily("2024-01-02")
    assert klines(imitation) == []  # a cached bar at the start: no listing probe either
    assert state(cache_dir, "2024-01-02.parquet") == PeriodState(final=True)


async def test_rest_only_yearly_gap_stays_provisional_and_is_asked_again_once_per_fetch(
    imitation: Any, cache_dir: Path
) -> None:
    lo, hi = to_ms(datetime(2023, 3, 1, tzinfo=UTC)), to_ms(datetime(2023, 3, 3, tzinfo=UTC))
    imitation.faults.gaps.append(("BTCUSDT", lo, hi))
    first, stop = datetime(2022, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC)
    expected = imitation.expected(UM, "BTCUSDT", Interval.DAY_1, to_ms(first), to_ms(stop))

    async with dsm_for(imitation, cache_dir) as dsm:
        cold = await dsm.fetch(PERP, "1d", first, stop)
        imitation.clear_requests()
        warm = await dsm.fetch(PERP, "1d", first, stop)

    for result in (cold, warm):
        assert result.frame.equals(expected)
        assert gaps(result.report) == [
            (datetime(2023, 3, 1, tzinfo=UTC), datetime(2023, 3, 3, tzinfo=UTC), 2, ("rest",))
        ]
        assert result.report.provisional_periods == 1
        assert result.report.warnings == [
            "1 period(s) cached as provisional (2023): their missing bars are not confirmed "
            "missing by both Vision and REST; every later fetch asks the enabled sources again "
            "for them (no second enabled source can confirm them: a REST-only period, or a "
            "source is disabled)"
        ]
    assert (cold.report.sources, warm.report.sources) == (src(rest=728), src(cache=728))
    # REST lacked them, but it is the only source: asked again for the 2 missing days only.
    assert klines(imitation) == [(lo, hi - 1)]
    assert len(imitation.requests) == 1
    assert files(cache_dir, "1d") == ["2022.parquet", "2023.provisional.parquet"]


# --------------------------------------------------------------------------------------------
# The machine's faults
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "No space left on device [errno 28]"),
        (OSError(errno.EROFS, "Read-only file system"), "Read-only file system [errno 30]"),
        (pl.exceptions.ComputeError("failed to write parquet"), "ComputeError: failed to write"),
    ],
    ids=["full", "read-only", "polars"],
)
async def test_cache_that_cannot_write_serves_the_bars_from_memory_with_a_warning(
    imitation: Any, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, error: Exception, shown: str
) -> None:
    def refuse(target: Path, write: Any) -> None:
        raise error

    monkeypatch.setattr(cache_files, "_write_once", refuse)
    expected = imitation.expected(UM, "BTCUSDT", M1, T0, T0 + 2 * DAY)

    async with dsm_for(imitation, cache_dir) as dsm:
        result = await dsm.fetch(PERP, "1m", at(1), at(3))

    assert result.frame.equals(expected)
    assert result.report.sources == src(vision=2880)
    [warning] = result.report.warnings
    assert warning.startswith("2 period(s) could not be cached (2024-01-01, 2024-01-02): ")
    assert shown in warning
    assert "the bars are served from memory but not cached" in warning
    assert files(cache_dir) == []


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[None]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.parametrize(
    ("options", "shown"),
    [("size=4k", "No space left on device"), ("ro,size=64k", "Read-only file system")],
    ids=["full-disk", "read-only-mount"],
)
async def test_real_full_or_read_only_file_system_loses_no_downloaded_bar(
    imitation: Any, tmp_path: Path, options: str, shown: str
) -> None:
    root = tmp_path / "tiny"
    expected = imitation.expected(UM, "BTCUSDT", M1, T0, T0 + 2 * DAY)
    with tmpfs(root, options):
        async with dsm_for(imitation, root) as dsm:
            result = await dsm.fetch(PERP, "1m", at(1), at(3))
        leftovers = sorted(p.name for p in root.rglob("*") if p.is_file())

    assert result.frame.equals(expected)
    assert result.report.sources == src(vision=2880)
    [warning] = [w for w in result.report.warnings if "could not be cached" in w]
    assert warning.startswith("2 period(s) could not be cached (2024-01-01, 2024-01-02): ")
    assert shown in warning
    assert not [name for name in leftovers if name.endswith((".parquet", ".tmp"))]


def test_clear_never_follows_a_symlink_out_of_the_root(cache_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "1m").mkdir(parents=True)
    (outside / "1m" / "2024-01-01.parquet").write_bytes(b"not the cache's")
    (outside / "2024-01-02.parquet").write_bytes(b"not the cache's either")
    (outside / ".x.first_bar.abc.tmp").write_bytes(b"nor this")
    series = cache_dir / "binance" / "futures_usdt"
    (series / "BTCUSDT" / "1m").mkdir(parents=True)
    (series / "BTCUSDT" / "1m" / "2024-01-03.parquet").write_bytes(b"ours")
    (series / "BTCUSDT" / "1h").symlink_to(outside)  # an interval folder pointing outside
    (series / "ETHUSDT").symlink_to(outside)  # a symbol folder pointing outside
    (series / "BTCUSDT" / "1m" / "link.parquet").symlink_to(outside / "2024-01-02.parquet")
    (cache_dir / "binance" / "spot").symlink_to(outside, target_is_directory=True)

    cache = KlineCache(cache_dir)
    assert cache.info()["files"] == 1  # links are not counted either
    removed = cache.clear()

    assert removed == 1
    assert sorted(str(p.relative_to(outside)) for p in outside.rglob("*") if p.is_file()) == [
        ".x.first_bar.abc.tmp",
        "1m/2024-01-01.parquet",
        "2024-01-02.parquet",
    ]
    assert (outside / "2024-01-02.parquet").read_bytes() == b"not the cache's either"
    assert (series / "BTCUSDT" / "1h").is_symlink() and (series / "ETHUSDT").is_symlink()


async def test_clear_during_a_write_skips_the_temp_file_and_the_fetch_completes(
    imitation: Any, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    real_fsync = os.fsync
    cleared: list[int] = []

    def fsync_then_clear(fd: int) -> None:
        if not cleared:  # another process runs `cache clear` while this write is in flight
            cleared.append(KlineCache(cache_dir).clear())
        real_fsync(fd)

    monkeypatch.setattr(cache_files.os, "fsync", fsync_then_clear)
    expected = imitation.expected(UM, "BTCUSDT", M1, T0, T0 + 2 * DAY)
    async with dsm_for(imitation, cache_dir) as dsm:
        with caplog.at_level(logging.INFO, logger="nautilus_dsm.dsm"):
            result = await dsm.fetch(PERP, "1m", at(1), at(3))

    assert cleared == [0]
    assert any("is being written; skipped" in r.getMessage() for r in caplog.records)
    assert result.frame.equals(expected)
    assert result.report.warnings == []
    assert files(cache_dir) == ["2024-01-01.parquet", "2024-01-02.parquet"]


async def test_cache_file_vanishing_between_listing_and_reading_is_a_miss(
    imitation: Any, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = imitation.expected(UM, "BTCUSDT", M1, T0, T0 + 2 * DAY)
    async with dsm_for(imitation, cache_dir) as dsm:
        await dsm.fetch(PERP, "1m", at(1), at(3))
    victim = cache_dir / "binance" / "futures_usdt" / "BTCUSDT" / "1m" / "2024-01-02.parquet"
    real_read = pl.read_parquet

    def read_after_clear(source: Any, *args: Any, **kwargs: Any) -> pl.DataFrame:
        victim.unlink(missing_ok=True)  # `cache clear` strikes after the directory listing
        return real_read(source, *args, **kwargs)

    monkeypatch.setattr(cache_module.pl, "read_parquet", read_after_clear)
    imitation.clear_requests()
    async with dsm_for(imitation, cache_dir) as dsm:
        result = await dsm.fetch(PERP, "1m", at(1), at(3))

    assert result.frame.equals(expected)
    assert result.report.sources == src(cache=1440, vision=1440)
    assert vision(imitation) == daily("2024-01-02")
    assert dsm.cache.corrupt == 0


def _null_price(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 7).then(None).otherwise(pl.col("open")).alias("open")
    )


def _off_grid(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(pl.col("open_time") + pl.duration(seconds=1))


def _long_close(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(pl.col("close_time") + pl.duration(hours=1))


@pytest.mark.parametrize(
    ("poison", "why"),
    [
        (_null_price, "holding 1 null value(s)"),
        (_off_grid, "holding open times off the 1m grid"),
        (_long_close, "holding close times that are not open time + 1m - 1 ms"),
    ],
    ids=["null-price", "off-grid", "wrong-close-time"],
)
async def test_cache_entry_failing_validation_is_quarantined_and_refetched(
    imitation: Any, cache_dir: Path, caplog: Any, poison: Any, why: str
) -> None:
    expected = imitation.expected(UM, "BTCUSDT", M1, T0, T0 + 2 * DAY)
    async with dsm_for(imitation, cache_dir) as dsm:
        await dsm.fetch(PERP, "1m", at(1), at(3))
    victim = cache_dir / "binance" / "futures_usdt" / "BTCUSDT" / "1m" / "2024-01-02.parquet"
    poison(pl.read_parquet(victim)).write_parquet(victim)  # valid parquet, untrustworthy rows
    imitation.clear_requests()

    async with dsm_for(imitation, cache_dir) as dsm:
        with caplog.at_level(logging.WARNING, logger="nautilus_dsm.dsm"):
            result = await dsm.fetch(PERP, "1m", at(1), at(3))

    assert result.frame.equals(expected)
    assert result.report.sources == src(cache=1440, vision=1440)
    assert (dsm.cache.corrupt, dsm.cache.quarantined) == (1, 1)
    [moved] = list((cache_dir / "quarantine").rglob("2024-01-02.parquet.*"))
    assert moved.parent == cache_dir / "quarantine" / "binance" / "futures_usdt" / "BTCUSDT" / "1m"
    assert dsm_messages(caplog.records) == [
        f"cache file {victim} is {why}; moved to {moved}, the period will be fetched again"
    ]
    assert vision(imitation) == daily("2024-01-02")
    assert files(cache_dir) == ["2024-01-01.parquet", "2024-01-02.parquet"]
    assert KlineCache(cache_dir).info()["quarantined"] == 1


async def test_without_a_cache_gaps_are_still_asked_of_the_next_source(
    imitation: Any, cache_dir: Path
) -> None:
    lo, hi = T0 + DAY + 600 * MIN, T0 + DAY + 630 * MIN
    imitation.faults.vision_file_gaps.append(("BTCUSDT-1m-2024-01-02.zip", lo, hi))
    expected = imitation.expected(UM, "BTCUSDT", M1, T0, T0 + 2 * DAY)

    async with dsm_for(imitation, cache_dir, use_cache=False) as dsm:
        result = await dsm.fetch(PERP, "1m", at(1), at(3))

    assert result.frame.equals(expected)
    assert result.report.sources == src(vision=2850, rest=30)
    assert (result.report.provisional_periods, result.report.warnings) == (0, [])
    assert klines(imitation) == [(0, -1), (lo, hi - 1)]
    assert list(cache_dir.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# One writer per series (point 5, the cache side)
# ---------------------------------------------------------------------------------------------


async def test_a_cache_series_locked_by_another_writer_serves_the_bars_and_caches_later(
    imitation: Any, cache_dir: Path
) -> None:
    from nautilus_dsm.dsm.locks import series_lock

    expected = imitation.expected(UM, "BTCUSDT", M1, T0, T0 + DAY)
    lock = KlineCache(cache_dir).lock_path(UM, "BTCUSDT", M1)
    lock.parent.mkdir(parents=True)

    async with dsm_for(imitation, cache_dir) as dsm:
        dsm.cache.lock_timeout_s = 0.2
        # Another writer (its own open file description: flock conflicts in-process too).
        with series_lock(None, str(lock), timeout_s=1, owner="other-writer"):
            held = await dsm.fetch(PERP, "1m", at(1), at(2))
        held_files = files(cache_dir)
        imitation.clear_requests()
        free = await dsm.fetch(PERP, "1m", at(1), at(2))
        free_vision = vision(imitation)

    assert held.frame.equals(expected)
    assert held.report.sources == src(vision=1440)
    [warning] = held.report.warnings
    assert warning.startswith("1 period(s) could not be cached (2024-01-01): ")
    assert "other-writer" in warning  # the holder is named
    assert held_files == []
    assert free.frame.equals(expected)
    assert free.report.sources == src(vision=1440)
    assert free_vision == daily("2024-01-01")
    assert files(cache_dir) == ["2024-01-01.parquet"]


def test_a_provisional_write_never_shadows_a_final_written_meanwhile(cache_dir: Path) -> None:
    from nautilus_dsm.testing import BinanceImitation

    cache = KlineCache(cache_dir)

    with BinanceImitation() as srv:
        whole = srv.expected(UM, "BTCUSDT", M1, T0, T0 + DAY)
    short = whole.filter(pl.col("open_time").dt.epoch("ms") >= T0 + 30 * MIN)
    final = cache.write(UM, "BTCUSDT", M1, "2024-01-01", whole, state=PeriodState(final=True))
    later = cache.write(
        UM,
        "BTCUSDT",
        M1,
        "2024-01-01",
        short,
        state=PeriodState(final=False, gaps=(PeriodGap(T0, T0 + 30 * MIN, ("rest",)),)),
    )

    assert later == final
    assert files(cache_dir) == ["2024-01-01.parquet"]
    assert cache.read(UM, "BTCUSDT", M1, "2024-01-01").equals(whole)
