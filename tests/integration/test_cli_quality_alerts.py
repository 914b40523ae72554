"""``quality``: the cache hit rate alert only once the cache is warm; the timings explained."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from nautilus_dsm.cli import cli
from nautilus_dsm.dsm.quality import TIMINGS_NOTE


def _quality(srv: object, cache_dir: Path, end: str, *extra: str) -> Result:
    url = srv.url  # type: ignore[attr-defined]
    args = [
        "quality",
        "BTCUSDT-PERP.BINANCE",
        "--interval",
        "1m",
        "--start",
        "2024-01-01",
        "--end",
        end,
        *["--base-url-http", url, "--base-url-vision", url, "--cache-dir", str(cache_dir)],
        "--json",
        *extra,
    ]
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def test_first_fetch_is_cold_and_raises_no_cache_alert(imitation: object, cache_dir: Path) -> None:
    payload = json.loads(_quality(imitation, cache_dir, "2024-01-03").stdout)

    assert (payload["cache_hits"], payload["cache_misses"]) == (0, 2)
    assert payload["cache_cold"] is True
    assert payload["alerts"] == []


def test_a_warm_cache_serving_little_of_the_range_raises_the_alert(
    imitation: object, cache_dir: Path
) -> None:
    _quality(imitation, cache_dir, "2024-01-03")

    wider = _quality(imitation, cache_dir, "2024-01-10")
    text = CliRunner().invoke(
        cli,
        [
            "quality",
            "BTCUSDT-PERP.BINANCE",
            "--interval",
            "1m",
            "--start",
            "2024-01-01",
            "--end",
            "2024-01-11",
            "--base-url-http",
            imitation.url,  # type: ignore[attr-defined]
            "--base-url-vision",
            imitation.url,  # type: ignore[attr-defined]
            "--cache-dir",
            str(cache_dir),
        ],
    )

    payload = json.loads(wider.stdout)
    assert (payload["cache_hits"], payload["cache_misses"]) == (2, 7)
    assert payload["cache_cold"] is False
    assert payload["alerts"] == ["cache hit rate"]
    # 9 of 10 days cached by now: 90% >= 60%.
    rows = [line.split() for line in text.stdout.splitlines()]
    assert ["cache", "hit", "rate", "90.00%", "(alert", "<", "60%)", "ok"] in rows


def test_the_json_report_says_what_the_timings_mean(imitation: object, cache_dir: Path) -> None:
    payload = json.loads(_quality(imitation, cache_dir, "2024-01-03").stdout)

    assert payload["timings_note"] == TIMINGS_NOTE
    assert TIMINGS_NOTE == (
        "total is the fetch's wall time in seconds; cache, vision and rest sum the seconds of "
        "that source's calls, which run concurrently (up to max_concurrency periods at once), "
        "so one of them can exceed total"
    )
    assert sorted(payload["timings"]) == ["cache", "rest", "total", "vision"]
