"""A writer whose object-store lock goes unrenewed for its TTL stops before its next commit."""

from __future__ import annotations

import time
import uuid

import fsspec
import pyarrow as pa
import pytest
from nautilus_trader.persistence.catalog import ParquetDataCatalog

from nautilus_dsm.catalog.files import write_file_atomic
from nautilus_dsm.dsm.locks import series_lock
from nautilus_dsm.errors import SeriesLocked


def _failing_renewals(lock) -> None:
    store = lock._store()

    def replace(path: str, payload: bytes, version: str) -> str | None:
        raise OSError("503 SlowDown")  # the store is unreachable for this writer

    store.replace = replace


def test_unrenewed_lock_is_lost_at_its_ttl_and_a_new_holder_can_take_it() -> None:
    fs = fsspec.filesystem("memory")
    path = f"memory://locks-{uuid.uuid4().hex}/series.lock"
    a = series_lock(fs, path, timeout_s=0.1, ttl_s=0.6, what="A")
    a.acquire()
    _failing_renewals(a)
    assert not a.lost

    b = series_lock(fs, path, timeout_s=5, ttl_s=0.6, what="B")
    b.acquire()  # waits (the lock's own poll) until A's lock is stale, then takes it over

    assert b.held and a.held  # A has not noticed by itself...
    assert a.lost  # ...but knows it can no longer be sure it holds the series
    with pytest.raises(SeriesLocked, match="was lost while writing"):
        a.check_held()
    b.release()
    a.release()


def test_a_catalog_write_under_a_lost_lock_is_refused_and_leaves_no_file(tmp_path) -> None:
    catalog = ParquetDataCatalog(f"memory:///cat-{uuid.uuid4().hex}", fs_protocol="memory")
    directory = f"{catalog.path}/data/bar/X"
    lock = series_lock(catalog.fs, f"{directory}.lock", timeout_s=0.1, ttl_s=0.3, what="X")
    table = pa.table({"a": [1]})

    with lock:
        write_file_atomic(catalog, directory, "one.parquet", table)
        _failing_renewals(lock)
        deadline = time.monotonic() + 5
        while not lock.lost and time.monotonic() < deadline:  # the TTL passing, not a race
            time.sleep(0.05)
        with pytest.raises(SeriesLocked, match="stopped before the next write"):
            write_file_atomic(catalog, directory, "two.parquet", table)

    assert sorted(p.rsplit("/", 1)[1] for p in catalog.fs.ls(directory, detail=False)) == [
        "one.parquet"
    ]
