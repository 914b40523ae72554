"""``nautilus-dsm cache info|clear`` by market, interval, range and --gaps-only (imitation)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner, Result

from nautilus_dsm.cli import cli
from nautilus_dsm.common import to_ms

D0 = to_ms(datetime(2024, 1, 1, tzinfo=UTC))
HOUR = 3_600_000
RANGE = ["--start", "2024-01-01", "--end", "2024-01-03"]


def _invoke(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def _fetch(srv: object, cache_dir: Path, out: Path, instrument: str, interval: str) -> Result:
    url = srv.url  # type: ignore[attr-defined]
    return _invoke(
        "fetch",
        instrument,
        "--interval",
        interval,
        *RANGE,
        *["--base-url-http", url, "--base-url-vision", url, "--cache-dir", str(cache_dir)],
        "--out",
        str(out),
        "--min-completeness",
        "0.5",
        "--no-progress",
    )


@pytest.fixture
def filled(imitation: object, cache_dir: Path, tmp_path: Path) -> Path:
    """Spot 1h complete; USDT-M 1m with 6 h missing on 2024-01-02 (a final file with a gap)."""
    assert (
        _fetch(imitation, cache_dir, tmp_path / "s.parquet", "BTCUSDT.BINANCE", "1h").exit_code == 0
    )
    imitation.faults.gaps.append(("BTCUSDT", D0 + 30 * HOUR, D0 + 36 * HOUR))  # type: ignore[attr-defined]
    perp = _fetch(imitation, cache_dir, tmp_path / "p.parquet", "BTCUSDT-PERP.BINANCE", "1m")
    assert perp.exit_code == 0, perp.output
    return cache_dir


def _entries(cache_dir: Path, *args: str) -> list[tuple[str, str, str, int, str, str]]:
    result = _invoke("cache", "info", "--cache-dir", str(cache_dir), "--json", *args)
    assert result.exit_code == 0, result.output
    return [
        (e["market"], e["symbol"], e["interval"], e["files"], e["first"], e["last"])
        for e in json.loads(result.stdout)["entries"]
    ]


def test_info_selects_by_market_interval_range_and_gaps(filled: Path) -> None:
    assert _entries(filled) == [
        ("futures_usdt", "BTCUSDT", "1m", 2, "2024-01-01", "2024-01-02"),
        ("spot", "BTCUSDT", "1h", 2, "2024-01-01", "2024-01-02"),
    ]
    assert _entries(filled, "--market-type", "spot") == [
        ("spot", "BTCUSDT", "1h", 2, "2024-01-01", "2024-01-02")
    ]
    assert _entries(filled, "--interval", "1m", "--start", "2024-01-02") == [
        ("futures_usdt", "BTCUSDT", "1m", 1, "2024-01-02", "2024-01-02")
    ]
    assert _entries(filled, "--end", "2024-01-01T00:00:01Z", "--symbol", "BTCUSDT") == [
        ("futures_usdt", "BTCUSDT", "1m", 1, "2024-01-01", "2024-01-01"),
        ("spot", "BTCUSDT", "1h", 1, "2024-01-01", "2024-01-01"),
    ]
    assert _entries(filled, "--gaps-only") == [
        ("futures_usdt", "BTCUSDT", "1m", 1, "2024-01-02", "2024-01-02")
    ]


def test_clear_gaps_only_drops_the_gap_day_and_the_next_fetch_refetches_only_it(
    imitation: object, filled: Path, tmp_path: Path
) -> None:
    cleared = _invoke("cache", "clear", "--cache-dir", str(filled), "--gaps-only", "--yes")
    imitation.faults.gaps.clear()  # type: ignore[attr-defined]
    imitation.clear_requests()  # type: ignore[attr-defined]
    again = _fetch(imitation, filled, tmp_path / "p2.parquet", "BTCUSDT-PERP.BINANCE", "1m")

    assert cleared.exit_code == 0
    assert cleared.stdout.splitlines()[-1] == (
        "removed 1 cached file(s) of every market / every symbol / every interval, provisional "
        f"periods and periods with gaps only from {filled}"
    )
    assert again.exit_code == 0
    assert again.stdout.splitlines()[0].endswith(
        "2880/2880 bars (100.00%); sources cache=1440 vision=1440; cache hits 1/2"
    )
    assert [r.path for r in imitation.requests] == [  # type: ignore[attr-defined]
        "/data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-02.zip",
        "/data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-02.zip.CHECKSUM",
    ]
    assert pl.read_parquet(tmp_path / "p2.parquet").height == 2880
    assert _entries(filled, "--gaps-only") == []
    assert _entries(filled, "--market-type", "spot")[0][3] == 2  # spot untouched


def test_clear_shows_the_plan_before_asking_and_declining_exits_0(filled: Path) -> None:
    result = _invoke("cache", "clear", "--cache-dir", str(filled), "--interval", "1h", input="n\n")

    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "will delete 2 cached file(s), "
        f"{_bytes(filled, 'spot')} bytes, of every market / every symbol / 1h under {filled}:"
    )
    assert lines[1].split() == [
        "dataset",
        "market",
        "symbol",
        "interval",
        "files",
        "provisional",
        "bytes",
        "first",
        "last",
    ]
    assert lines[2].split()[:6] == ["klines", "spot", "BTCUSDT", "1h", "2", "0"]
    assert lines[3:] == ["delete them? [y/N]: n", "nothing deleted"]
    assert _entries(filled, "--interval", "1h")[0][3] == 2


def _bytes(cache_dir: Path, market: str) -> str:
    files = (cache_dir / "binance" / market).rglob("*.parquet")
    return f"{sum(f.stat().st_size for f in files):,}"


def test_clear_a_range_keeps_the_rest_of_the_series_and_its_listing(filled: Path) -> None:
    result = _invoke(
        "cache",
        "clear",
        "--cache-dir",
        str(filled),
        "--symbol",
        "BTCUSDT-PERP.BINANCE",
        "--start",
        "2024-01-01",
        "--end",
        "2024-01-02",
        input="y\n",
    )

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == (
        "removed 1 cached file(s) of futures_usdt / BTCUSDT / every interval, periods "
        f"overlapping 2024-01-01T00:00:00Z..2024-01-02T00:00:00Z from {filled}"
    )
    assert _entries(filled) == [
        ("futures_usdt", "BTCUSDT", "1m", 1, "2024-01-02", "2024-01-02"),
        ("spot", "BTCUSDT", "1h", 2, "2024-01-01", "2024-01-02"),
    ]
    series = filled / "binance" / "futures_usdt" / "BTCUSDT"
    assert sorted(p.name for p in series.iterdir() if p.suffix == ".json") == ["1m.first_bar.json"]


def test_clear_with_nothing_selected_says_so_and_exits_0(filled: Path) -> None:
    result = _invoke("cache", "clear", "--cache-dir", str(filled), "--market-type", "futures_coin")

    assert result.exit_code == 0
    assert result.stdout == (
        "nothing to delete: no cached file of futures_coin / every symbol / every interval "
        f"under {filled}\n"
    )


def test_bad_range_exits_2_with_one_line(filled: Path) -> None:
    result = _invoke(
        "cache", "clear", "--cache-dir", str(filled), "--start", "2024-01-03", "--end", "2024-01-01"
    )

    assert result.exit_code == 2
    assert (
        result.stderr == "error: --end '2024-01-01' is not after --start '2024-01-03'; swap them\n"
    )
    assert len(_entries(filled)) == 2


def test_the_engine_api_plans_and_clears_the_same_selection(filled: Path, tmp_path: Path) -> None:
    from nautilus_dsm.dsm.cache import KlineCache
    from nautilus_dsm.dsm.cache_selection import CacheSelection
    from nautilus_dsm.errors import InvalidInput

    cache = KlineCache(filled)
    plan = cache.plan(CacheSelection(market="spot", start_ms=D0 + 24 * HOUR))

    assert [(p.market, p.interval, p.key) for p in plan.periods] == [("spot", "1h", "2024-01-02")]
    with pytest.raises(InvalidInput, match="the plan is of the cache"):
        KlineCache(tmp_path / "other").clear_plan(plan)
    assert cache.clear_plan(plan) == 1
    assert cache.info(CacheSelection(market="spot"))["files"] == 1


def test_clearing_everything_counts_and_empties_the_quarantine(filled: Path) -> None:
    quarantine = filled / "quarantine" / "binance" / "spot"
    quarantine.mkdir(parents=True)
    (quarantine / "2024-01-05.parquet").write_bytes(b"bad")

    result = _invoke("cache", "clear", "--cache-dir", str(filled), "--yes")

    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].startswith("will delete 4 cached file(s), ")
    assert lines[0].endswith(
        f" bytes, of every market / every symbol / every interval and 1 quarantined file(s) "
        f"under {filled}:"
    )
    assert lines[-1] == (
        "removed 4 cached file(s) of every market / every symbol / every interval and 1 "
        f"quarantined file(s) from {filled}"
    )
    assert list((filled / "quarantine").rglob("*.parquet")) == []


def test_no_answer_at_all_deletes_nothing_and_fails(filled: Path) -> None:
    # stdin closed without an answer (a script that forgot --yes): not a "no", not a "yes".
    result = _invoke("cache", "clear", "--cache-dir", str(filled), input="")

    assert result.exit_code == 1
    assert result.stderr == "cache clear: no answer, nothing deleted; pass --yes in scripts\n"
    assert len(_entries(filled)) == 2


def test_gaps_only_picks_a_provisional_period_beside_final_ones(
    imitation: object, filled: Path
) -> None:
    from nautilus_dsm.common import Interval, MarketType
    from nautilus_dsm.dsm.cache import KlineCache
    from nautilus_dsm.dsm.cache_state import PeriodGap, PeriodState

    day3 = D0 + 48 * HOUR
    frame = imitation.expected(MarketType.SPOT, "BTCUSDT", "1h", day3, day3 + 20 * HOUR)  # type: ignore[attr-defined]
    state = PeriodState(final=False, gaps=(PeriodGap(day3 + 20 * HOUR, day3 + 24 * HOUR),))
    KlineCache(filled).write(
        MarketType.SPOT, "BTCUSDT", Interval.parse("1h"), "2024-01-03", frame, state=state
    )

    listed = _invoke("cache", "info", "--cache-dir", str(filled), "--gaps-only", "--json")
    cleared = _invoke(
        "cache",
        "clear",
        "--cache-dir",
        str(filled),
        "--gaps-only",
        "--market-type",
        "spot",
        "--yes",
    )

    entries = json.loads(listed.stdout)["entries"]
    assert [
        (e["market"], e["interval"], e["files"], e["provisional"], e["first"]) for e in entries
    ] == [
        ("futures_usdt", "1m", 1, 0, "2024-01-02"),
        ("spot", "1h", 1, 1, "2024-01-03"),
    ]
    assert cleared.exit_code == 0
    assert cleared.stdout.splitlines()[-1].startswith("removed 1 cached file(s) of spot / ")
    spot = filled / "binance" / "spot" / "BTCUSDT" / "1h"
    assert sorted(p.name for p in spot.iterdir()) == ["2024-01-01.parquet", "2024-01-02.parquet"]


def test_selection_covers_the_mark_price_cache_beside_the_klines_cache(
    imitation: object, cache_dir: Path, tmp_path: Path
) -> None:
    url = imitation.url  # type: ignore[attr-defined]
    source = ["--base-url-http", url, "--base-url-vision", url, "--cache-dir", str(cache_dir)]
    for dataset in ("klines", "mark"):
        result = _invoke(
            "fetch", "BTCUSDT-PERP.BINANCE", "--interval", "1h", *RANGE, *source,
            "--out", str(tmp_path / f"{dataset}.parquet"), "--dataset", dataset, "--no-progress",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
    info = _invoke("cache", "info", "--cache-dir", str(cache_dir), "--json", "--interval", "1h")
    entries = [
        (e.get("dataset"), e["symbol"], e["files"]) for e in json.loads(info.stdout)["entries"]
    ]
    assert entries == [(None, "BTCUSDT", 2), ("mark_price_klines", "BTCUSDT", 2)]

    cleared = _invoke(
        "cache", "clear", "--cache-dir", str(cache_dir), "--symbol", "BTCUSDT-PERP.BINANCE",
        "--start", "2024-01-02", "--end", "2024-01-03", "--yes",
    )  # fmt: skip

    assert cleared.exit_code == 0, cleared.output
    assert cleared.stdout.splitlines()[-1].startswith("removed 2 cached file(s) of futures_usdt")
    mark = cache_dir / "binance-mark_price_klines" / "futures_usdt" / "BTCUSDT" / "1h"
    assert sorted(p.name for p in mark.iterdir()) == ["2024-01-01.parquet"]
    assert (
        _entries(cache_dir)
        == [("futures_usdt", "BTCUSDT", "1h", 1, "2024-01-01", "2024-01-01")] * 2
    )


def test_funding_months_are_listed_and_cleared_like_any_cached_period(
    imitation: object, cache_dir: Path, tmp_path: Path
) -> None:
    url = imitation.url  # type: ignore[attr-defined]
    source = ["--base-url-http", url, "--base-url-vision", url, "--cache-dir", str(cache_dir)]
    result = _invoke(
        "fetch", "BTCUSDT-PERP.BINANCE", "--dataset", "funding", "--start", "2024-01-01",
        "--end", "2024-03-01", *source, "--out", str(tmp_path / "f.parquet"), "--no-progress",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    info = json.loads(_invoke("cache", "info", "--cache-dir", str(cache_dir), "--json").stdout)
    assert [(e["dataset"], e["interval"], e["files"], e["first"], e["last"]) for e in info["entries"]] == [
        ("funding_rates", "-", 2, "2024-01", "2024-02")
    ]  # fmt: skip
    assert _entries(cache_dir, "--interval", "1m") == []  # funding has no interval

    cleared = _invoke(
        "cache", "clear", "--cache-dir", str(cache_dir), "--start", "2024-02-01", "--end",
        "2024-02-02", "--yes",
    )  # fmt: skip

    assert cleared.exit_code == 0, cleared.output
    assert cleared.stdout.splitlines()[0].startswith("will delete 1 cached file(s)")
    assert cleared.stdout.splitlines()[-1].startswith("removed 1 cached file(s)")
    funding = cache_dir / "binance-funding_rates" / "futures_usdt" / "BTCUSDT"
    assert sorted(p.name for p in funding.iterdir()) == ["2024-01.parquet"]
