"""The universe ingest under faults: a worker killed mid-run, two jobs into one bucket, and the
cluster-wide REST budget."""

from __future__ import annotations

import functools
import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import msgspec

from nautilus_dsm.catalog.storage import open_catalog
from nautilus_dsm.common import to_ms
from nautilus_dsm.distributed import SeriesMonth, UniverseSelection, ingest_universe
from nautilus_dsm.distributed.plan import series_directory
from nautilus_dsm.dsm.lock_store import S3LockStore
from nautilus_dsm.dsm.locks import series_lock
from tests.scale.conftest import BUCKET, FEB, JAN, MAR, catalog_rows, expected_rows

# SOLUSDT's January hangs; DOGEUSDT is listed in February; LUNAUSDT no longer trades.
KILLED = ("DOGEUSDT", "LUNAUSDT", "SOLUSDT")
SELECTION = UniverseSelection("futures_usdt", status="all", symbols=KILLED)
HUNG = "/data/futures/um/monthly/klines/SOLUSDT/1m/SOLUSDT-1m-2024-01"


def wait_until(condition: Any, what: str, timeout_s: float = 60.0) -> None:
    # Polls state the test cannot subscribe to (the imitation's request log, the scheduler).
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def assert_every_bar_exactly_once(uri: str, s3: Any, imitation: Any, symbols: list[str]) -> None:
    cat = open_catalog(uri, s3.storage_options)
    for symbol in symbols:
        bars = cat.bars([f"{symbol}-PERP.BINANCE-1-MINUTE-LAST-EXTERNAL"])
        assert catalog_rows(bars) == expected_rows(imitation, symbol, JAN, MAR), symbol


def test_a_worker_killed_mid_run_leaves_every_bar_exactly_once(
    s3: Any, universe_imitation: Any, dask_client: Any, scale_settings: Any
) -> None:
    uri = f"s3://{BUCKET}/killed"
    universe_imitation.faults.hang = {HUNG}
    try:
        with ThreadPoolExecutor(1) as pool:
            job = pool.submit(
                ingest_universe, uri, SELECTION, ["1m"], JAN, MAR,
                settings=scale_settings, storage_options=s3.storage_options, client=dask_client,
            )  # fmt: skip
            wait_until(
                lambda: any(r.path.startswith(HUNG) for r in universe_imitation.requests),
                "the hung Vision request",
            )
            holder = next(
                worker
                for worker, keys in dask_client.processing().items()
                if any("SOLUSDT-PERP.BINANCE-1m-2024-01" in str(k) for k in keys)
            )
            os.kill(dask_client.run(os.getpid, workers=[holder])[holder], signal.SIGKILL)
            universe_imitation.faults.hang = set()
            report = job.result(timeout=120)
    finally:
        universe_imitation.faults.hang = set()
        dask_client.wait_for_workers(2, timeout=60)
    # The scheduler re-ran the killed task elsewhere: nothing failed, nothing is missing.
    assert (report.tasks, report.done, report.failed) == (5, 5, 0)
    again = ingest_universe(
        uri, SELECTION, ["1m"], JAN, MAR,
        settings=scale_settings, storage_options=s3.storage_options, client=dask_client,
    )  # fmt: skip
    assert (again.skipped, again.done, again.bars_written) == (5, 0, 0)
    assert_every_bar_exactly_once(uri, s3, universe_imitation, list(KILLED))


def test_two_concurrent_universe_ingests_into_one_bucket_write_each_bar_once(
    s3: Any, universe_imitation: Any, dask_client: Any, scale_settings: Any
) -> None:
    uri = f"s3://{BUCKET}/concurrent"
    selection = UniverseSelection("futures_usdt", symbols=("BTCUSDT", "XRPUSDT"))
    with ThreadPoolExecutor(2) as pool:
        jobs = [
            pool.submit(
                ingest_universe,
                uri,
                selection,
                ["1m"],
                JAN,
                MAR,
                settings=scale_settings,
                storage_options=s3.storage_options,
                client=dask_client,
            )
            for _ in range(2)
        ]
        reports = [j.result(timeout=120) for j in jobs]
    assert [r.failed for r in reports] == [0, 0]
    # Between them the two jobs wrote every bar, and no bar twice.
    assert sum(r.bars_written for r in reports) == 2 * 86_400
    assert_every_bar_exactly_once(uri, s3, universe_imitation, ["BTCUSDT", "XRPUSDT"])


def test_the_rest_budget_is_shared_by_every_worker(
    s3: Any, universe_imitation: Any, dask_client: Any, scale_settings: Any
) -> None:
    uri = f"s3://{BUCKET}/rest-only"
    rest_only = msgspec.structs.replace(scale_settings, use_vision=False)
    selection = UniverseSelection("futures_usdt", symbols=("BTCUSDT", "ETHUSDT"))
    universe_imitation.clear_requests()
    report = ingest_universe(
        uri, selection, ["1m"], JAN, FEB, settings=rest_only,
        storage_options=s3.storage_options, client=dask_client, rest_requests=8, rest_window_s=0.5,
    )  # fmt: skip
    assert (report.done, report.failed) == (2, 0)
    rest = [r for r in universe_imitation.requests if r.path.startswith("/fapi/")]
    leases = sorted(t for r in report.results for t in r.lease_times)
    # Every REST request a worker sent took one lease (the client's exchangeInfo took none).
    assert len(leases) == len(rest) - 1
    assert {r.worker for r in report.results} != set() and len(leases) > 8
    # No window of 0.5 s holds more than 8 leases, across both workers.
    assert max(sum(1 for u in leases if t <= u < t + 0.5) for t in leases) <= 8
    cat = open_catalog(uri, s3.storage_options)
    for symbol in ("BTCUSDT", "ETHUSDT"):
        bars = cat.bars([f"{symbol}-PERP.BINANCE-1-MINUTE-LAST-EXTERNAL"])
        assert catalog_rows(bars) == expected_rows(universe_imitation, symbol, JAN, FEB)


GAP = (
    to_ms(datetime(2024, 1, 15, 10, tzinfo=UTC)),
    to_ms(datetime(2024, 1, 15, 11, 30, tzinfo=UTC)),
)


def test_a_source_gap_is_reported_per_symbol_and_never_filled(
    s3: Any, universe_imitation: Any, dask_client: Any, scale_settings: Any
) -> None:
    universe_imitation.faults.gaps = [("XRPUSDT", *GAP)]
    try:
        report = ingest_universe(
            f"s3://{BUCKET}/gap", ["XRPUSDT-PERP.BINANCE"], ["1m"], JAN, FEB,
            settings=scale_settings, storage_options=s3.storage_options, client=dask_client,
        )  # fmt: skip
    finally:
        universe_imitation.faults.gaps = []
    xrp = report.symbols["XRPUSDT-PERP.BINANCE 1m"]
    assert (xrp.bars, xrp.expected, xrp.gaps) == (44_640 - 90, 44_640, [GAP])
    assert xrp.completeness == (44_640 - 90) / 44_640
    assert report.to_dict()["symbols"][0]["gaps"] == [
        {"start": "2024-01-15T10:00:00Z", "end": "2024-01-15T11:30:00Z"}
    ]


def test_a_series_month_that_fails_is_reported_by_name_and_the_job_goes_on(
    s3: Any, universe_imitation: Any, dask_client: Any, scale_settings: Any
) -> None:
    seen: list[tuple[int, int, int]] = []
    universe_imitation.faults.gaps = [("XRPUSDT", *GAP)]
    try:
        report = ingest_universe(
            f"s3://{BUCKET}/fails", ["XRPUSDT-PERP.BINANCE", "BTCUSDT-PERP.BINANCE"], ["1m"],
            JAN, FEB, settings=scale_settings, storage_options=s3.storage_options,
            client=dask_client, retries=0, min_completeness=0.999, on_low_quality="raise",
            on_progress=lambda s: seen.append((s.done, s.failed, s.remaining)),
        )  # fmt: skip
    finally:
        universe_imitation.faults.gaps = []
    assert (report.done, report.failed) == (1, 1)
    assert list(report.failures) == ["klines-XRPUSDT-PERP.BINANCE-1m-2024-01"]
    assert report.failures["klines-XRPUSDT-PERP.BINANCE-1m-2024-01"].startswith(
        "SeriesMonthFailed: klines-XRPUSDT-PERP.BINANCE-1m-2024-01: QualityBelowThreshold: "
    )
    assert report.symbols["XRPUSDT-PERP.BINANCE 1m"].months_failed == ["2024-01"]
    assert report.symbols["BTCUSDT-PERP.BINANCE 1m"].bars == 44_640
    # The client's progress: (done, failed, remaining) at the start and after each task.
    assert seen[0] == (0, 0, 2) and seen[-1] == (1, 1, 0) and len(seen) == 3


def test_a_series_held_by_a_live_writer_waits_and_a_dead_writers_lock_is_taken_over(
    s3: Any, universe_imitation: Any, dask_client: Any, scale_settings: Any
) -> None:
    uri = f"s3://{BUCKET}/locked"
    cat = open_catalog(uri, s3.storage_options)
    btc = SeriesMonth("BTCUSDT-PERP.BINANCE", "klines", "1m", 0, 0, 0)
    lock_path = f"{series_directory(cat, btc)}.lock"
    fs = s3.filesystem()
    run = functools.partial(
        ingest_universe, uri, ["BTCUSDT-PERP.BINANCE"], ["1m"], JAN, FEB,
        settings=scale_settings, storage_options=s3.storage_options, client=dask_client,
        retries=0, lock_timeout_s=1.0,
    )  # fmt: skip
    with series_lock(fs, lock_path, owner="writer-elsewhere"):
        blocked = run()
    failure = blocked.failures["klines-BTCUSDT-PERP.BINANCE-1m-2024-01"]
    assert failure.startswith(
        "SeriesMonthFailed: klines-BTCUSDT-PERP.BINANCE-1m-2024-01: SeriesLocked: "
    )
    assert "owner writer-elsewhere" in failure
    # A writer that died holding the lock (not renewed for 100 s, TTL 30 s): taken over.
    dead = json.dumps({"owner": "dead-writer", "pid": 1, "acquired": time.time() - 100,
                       "renewed": time.time() - 100, "ttl_s": 30.0}).encode()  # fmt: skip
    assert S3LockStore(fs).create(lock_path, dead) is not None
    report = run()
    assert (report.done, report.failed, report.bars_written) == (1, 0, 44_640)
    assert S3LockStore(fs).read(lock_path) is None  # released by its new holder
    bars = cat.bars(["BTCUSDT-PERP.BINANCE-1-MINUTE-LAST-EXTERNAL"])
    assert catalog_rows(bars) == expected_rows(universe_imitation, "BTCUSDT", JAN, FEB)
