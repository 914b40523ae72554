"""Series locks on S3 (moto): conditional create, swap and delete; one writer at a time."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import pytest

from nautilus_dsm.dsm.lock_store import S3LockStore, lock_store_for
from nautilus_dsm.dsm.locks import series_lock
from nautilus_dsm.errors import SeriesLocked
from tests.scale.conftest import BUCKET


@pytest.fixture
def fs(s3: Any) -> Any:
    return s3.filesystem()


@pytest.fixture
def lock_path() -> str:
    return f"{BUCKET}/locks/{uuid.uuid4().hex}/BTCUSDT-PERP.BINANCE-1-MINUTE-LAST-EXTERNAL.lock"


def stale_payload(owner: str) -> bytes:
    # What a writer that died 100 s ago left behind (it renewed with a 30 s TTL).
    return json.dumps({"owner": owner, "pid": 1, "acquired": time.time() - 100,
                       "renewed": time.time() - 100, "ttl_s": 30.0}).encode()  # fmt: skip


def test_an_s3_file_system_gets_the_conditional_write_store(fs: Any) -> None:
    assert isinstance(lock_store_for(fs), S3LockStore)


def test_create_is_refused_when_the_object_exists(fs: Any, lock_path: str) -> None:
    store = S3LockStore(fs)
    first = store.create(lock_path, b"a")
    assert first is not None
    assert store.create(lock_path, b"b") is None
    assert store.read(lock_path) == (b"a", first)


def test_of_two_swaps_of_one_version_exactly_one_wins(fs: Any, lock_path: str) -> None:
    store = S3LockStore(fs)
    version = store.create(lock_path, b"stale")
    assert version is not None
    won_a = store.replace(lock_path, b"a", version)
    won_b = store.replace(lock_path, b"b", version)
    assert won_a is not None and won_b is None
    assert store.read(lock_path) == (b"a", won_a)


def test_delete_of_an_older_version_leaves_the_successor(fs: Any, lock_path: str) -> None:
    store = S3LockStore(fs)
    old = store.create(lock_path, b"old")
    assert old is not None
    new = store.replace(lock_path, b"new", old)
    assert store.delete(lock_path, old) is False
    assert store.read(lock_path) == (b"new", new)
    assert store.delete(lock_path, new) is True
    assert store.read(lock_path) is None


def test_a_second_writer_waits_then_fails_naming_the_holder(fs: Any, lock_path: str) -> None:
    with (
        series_lock(fs, lock_path, owner="worker-a", what="BTC 1m"),
        pytest.raises(SeriesLocked) as caught,
    ):
        series_lock(fs, lock_path, owner="worker-b", timeout_s=0.3, what="BTC 1m").acquire()
    message = str(caught.value)
    assert "lock " + lock_path in message and "owner worker-a" in message
    assert "released on its own once it is 30 s old" in message


def test_the_lock_is_free_again_after_release(fs: Any, lock_path: str) -> None:
    with series_lock(fs, lock_path, owner="worker-a"):
        pass
    with series_lock(fs, lock_path, owner="worker-b", timeout_s=0.3) as lock:
        assert lock.read_holder()["owner"] == "worker-b"


def test_a_dead_writers_lock_is_taken_over_and_its_release_cannot_free_the_successor(
    fs: Any, lock_path: str
) -> None:
    dead = series_lock(fs, lock_path, owner="dead", ttl_s=30)
    dead.acquire()
    # The holder stops renewing (a paused or dead process): its object ages past the TTL.
    dead._stop.set()
    dead._renewer.join()
    version = S3LockStore(fs).read(lock_path)[1]
    assert S3LockStore(fs).replace(lock_path, stale_payload("dead"), version) is not None
    with series_lock(fs, lock_path, owner="successor", timeout_s=1) as successor:
        assert dead._renew_once() is False and dead.lost is True
        dead.release()  # logs the takeover; must not delete the successor's lock
        assert successor.read_holder()["owner"] == "successor"


def test_racing_takeovers_of_one_stale_lock_leave_exactly_one_holder(
    fs: Any, lock_path: str
) -> None:
    assert S3LockStore(fs).create(lock_path, stale_payload("dead")) is not None
    locks = [series_lock(fs, lock_path, owner=f"w{i}", timeout_s=0.5) for i in range(4)]
    barrier = threading.Barrier(len(locks))
    won: list[str] = []

    def take(lock: Any) -> None:
        barrier.wait()
        try:
            lock.acquire()
            won.append(lock.owner)
        except SeriesLocked:
            pass

    threads = [threading.Thread(target=take, args=(lock,)) for lock in locks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert len(won) == 1
        assert S3LockStore(fs).read(lock_path) is not None
        assert json.loads(S3LockStore(fs).read(lock_path)[0])["owner"] == won[0]
    finally:
        for lock in locks:
            lock.release()
