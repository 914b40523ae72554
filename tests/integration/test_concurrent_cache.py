"""Two processes fetch the same range into one cache directory at the same time.

Each child builds its own ``DataSourceManager`` on the shared cache, reports ``ready`` once its
imports are done, and starts fetching when the parent writes ``go`` to every child's stdin, so
both really race on the same periods (an imitation latency keeps their downloads overlapping).
Both must succeed with identical frames equal to the source, and the cache must hold exactly one
whole file per period and no temporary file.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from nautilus_dsm.common import Interval, MarketType, to_ms
from nautilus_dsm.dsm.cache import KlineCache

UM = MarketType.FUTURES_USDT
T0 = to_ms(datetime(2024, 1, 1, tzinfo=UTC))
DAY = 86_400_000

_CHILD = textwrap.dedent(
    """
    import json, sys
    from datetime import UTC, datetime
    from nautilus_dsm.dsm.manager import DataSourceManager

    url, cache_dir, out = sys.argv[1:4]
    dsm = DataSourceManager.create(
        "binance", base_url_http=url, base_url_vision=url, cache_dir=cache_dir
    )
    print("ready", flush=True)
    assert sys.stdin.readline() == "go\\n"
    result = dsm.fetch_sync(
        "BTCUSDT-PERP.BINANCE",
        "1m",
        datetime(2024, 1, 1, tzinfo=UTC),
        datetime(2024, 1, 4, tzinfo=UTC),
    )
    result.frame.write_parquet(out)
    print(json.dumps(result.report.to_dict()), flush=True)
    """
)


def test_two_processes_fetching_one_range_into_one_cache_both_succeed_identically(
    imitation: Any, cache_dir: Path, tmp_path: Path
) -> None:
    imitation.faults.latency_s = 0.05  # both downloads of each file are in flight together
    outs = [tmp_path / f"out{i}.parquet" for i in range(2)]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, imitation.url, str(cache_dir), str(out)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for out in outs
    ]
    try:
        for child in children:
            assert child.stdout.readline() == "ready\n"
        for child in children:
            child.stdin.write("go\n")
            child.stdin.flush()
        finished = [child.communicate(timeout=60) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()

    for child, (stdout, stderr) in zip(children, finished, strict=True):
        assert child.returncode == 0, stderr
        report = json.loads(stdout)
        assert (report["bars"], report["expected_bars"], report["gaps"]) == (4320, 4320, [])
        assert sum(report["sources"].values()) == 4320
    expected = imitation.expected(UM, "BTCUSDT", Interval.MINUTE_1, T0, T0 + 3 * DAY)
    first, second = (pl.read_parquet(out) for out in outs)
    assert first.equals(expected)
    assert second.equals(first)
    folder = cache_dir / "binance" / "futures_usdt" / "BTCUSDT" / "1m"
    assert sorted(p.name for p in folder.iterdir()) == [
        "2024-01-01.parquet",
        "2024-01-02.parquet",
        "2024-01-03.parquet",
    ]
    cache = KlineCache(cache_dir)
    for day in range(3):
        key = f"2024-01-0{day + 1}"
        start = T0 + day * DAY
        assert cache.read(UM, "BTCUSDT", Interval.MINUTE_1, key).equals(
            imitation.expected(UM, "BTCUSDT", Interval.MINUTE_1, start, start + DAY)
        )
    assert cache.corrupt == 0
    # Both children really fetched from the sources (neither was served by the other's cache):
    # each sent its own listing probe, and every Vision file was downloaded twice.
    probes = [r for r in imitation.requests if r.path == "/fapi/v1/klines"]
    assert len(probes) == 2
    zips = sorted(r.path.rsplit("/", 1)[1] for r in imitation.requests if r.path.endswith(".zip"))
    assert zips == sorted(2 * [f"BTCUSDT-1m-2024-01-0{d}.zip" for d in (1, 2, 3)])
