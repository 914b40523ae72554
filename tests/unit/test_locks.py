"""Advisory series locks: two processes contend, a killed holder's lock is taken over."""

from __future__ import annotations

import itertools
import json
import multiprocessing as mp
import os
import signal
import time
from pathlib import Path
from typing import Any

import fsspec
import pytest

from nautilus_dsm.dsm.locks import series_lock
from nautilus_dsm.errors import SeriesLocked

pytestmark = pytest.mark.timeout(30)

_CTX = mp.get_context("spawn")


def _hold(path: str, owner: str, held: Any, release: Any) -> None:
    with series_lock(None, path, timeout_s=10, owner=owner, what="BTCUSDT 1m"):
        held.set()
        release.wait(20)


def _hold_and_count(path: str, counter: str, n: int) -> None:
    # Each writer appends its pid n times under the lock, one line at a time, re-reading the
    # file in between: without mutual exclusion the two writers' blocks would interleave.
    with series_lock(None, path, timeout_s=20):
        for _ in range(n):
            with open(counter, "a") as f:
                f.write(f"{os.getpid()}\n")
                f.flush()
            os.sched_yield()


def _start_holder(path: str, owner: str) -> tuple[Any, Any, Any]:
    held, release = _CTX.Event(), _CTX.Event()
    proc = _CTX.Process(target=_hold, args=(path, owner, held, release))
    proc.start()
    assert held.wait(20), "holder did not take the lock"
    return proc, held, release


def test_second_process_waits_then_fails_naming_the_holder_and_the_fix(tmp_path: Path) -> None:
    path = str(tmp_path / "BTCUSDT-1m.lock")
    proc, _, release = _start_holder(path, "ingest-A")
    try:
        with pytest.raises(SeriesLocked) as info:
            series_lock(None, path, timeout_s=0.2, what="BTCUSDT 1m").acquire()
    finally:
        release.set()
        proc.join(20)
    message = str(info.value)
    assert "BTCUSDT 1m is being written by another process" in message
    assert f"owner ingest-A (pid {proc.pid})" in message
    assert path in message
    assert "waited 0.2 s" in message
    assert "re-run (it resumes)" in message
    assert info.value.path == path


def test_lock_is_taken_once_the_holder_releases(tmp_path: Path) -> None:
    path = str(tmp_path / "series.lock")
    proc, _, release = _start_holder(path, "ingest-A")
    release.set()
    with series_lock(None, path, timeout_s=20, owner="ingest-B") as lock:
        holder = lock.read_holder()
    proc.join(20)
    assert proc.exitcode == 0
    assert holder is not None and holder["owner"] == "ingest-B"


def test_a_killed_holders_lock_is_taken_over(tmp_path: Path) -> None:
    path = str(tmp_path / "series.lock")
    proc, _, _ = _start_holder(path, "doomed")
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(20)

    with series_lock(None, path, timeout_s=5, owner="survivor") as lock:
        holder = lock.read_holder()

    assert proc.exitcode == -signal.SIGKILL
    assert holder is not None and holder["owner"] == "survivor"


def test_two_processes_contending_never_interleave(tmp_path: Path) -> None:
    path = str(tmp_path / "series.lock")
    counter = str(tmp_path / "lines.txt")
    procs = [_CTX.Process(target=_hold_and_count, args=(path, counter, 200)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(25)

    lines = Path(counter).read_text().split()
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(lines) == 400
    # Exactly one switch of writer: each block of 200 lines belongs to one process.
    switches = sum(1 for a, b in itertools.pairwise(lines) if a != b)
    assert switches == 1
    assert {lines[0], lines[-1]} == {str(p.pid) for p in procs}


def test_object_store_lock_is_exclusive_and_released() -> None:
    fs = fsspec.filesystem("memory")
    path = "/locks-a/series.lock"
    with series_lock(fs, path, timeout_s=1, owner="A") as lock:
        with pytest.raises(SeriesLocked, match="owner A"):
            series_lock(fs, path, timeout_s=0.1, owner="B").acquire()
        assert lock.read_holder()["owner"] == "A"
    assert not fs.exists(path)
    with series_lock(fs, path, timeout_s=0.1, owner="B") as lock:
        assert lock.read_holder()["owner"] == "B"


def test_object_store_lock_of_a_dead_owner_is_stale_after_its_ttl() -> None:
    fs = fsspec.filesystem("memory")
    path = "/locks-b/series.lock"
    dead = {"owner": "dead", "pid": 1, "acquired": 0.0, "renewed": time.time() - 60, "ttl_s": 30}
    fs.pipe(path, json.dumps(dead).encode())

    with series_lock(fs, path, timeout_s=0.5, owner="C") as lock:
        assert lock.read_holder()["owner"] == "C"


def test_object_store_lock_renewed_while_held_is_not_stale() -> None:
    fs = fsspec.filesystem("memory")
    path = "/locks-c/series.lock"
    with series_lock(fs, path, timeout_s=1, owner="A", ttl_s=0.3) as lock:
        first = lock.read_holder()["renewed"]
        deadline = time.monotonic() + 10
        while lock.read_holder()["renewed"] == first and time.monotonic() < deadline:
            time.sleep(0.02)  # waiting for the renewal thread's write, not timing it
        renewed = lock.read_holder()["renewed"]
        with pytest.raises(SeriesLocked):
            series_lock(fs, path, timeout_s=0, owner="B", ttl_s=0.3).acquire()
    assert renewed > first


def test_a_holder_record_that_cannot_be_written_leaves_the_lock_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A full disk fails the holder record after flock succeeded: the lock must not stay held by
    # an orphan descriptor (the next writer of the series in this process would wait it out).
    real_pwrite = os.pwrite

    def full(fd: int, data: bytes, offset: int) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    lock = series_lock(None, tmp_path / "s.lock", timeout_s=0.0)
    with pytest.raises(OSError, match="No space left on device"):
        lock.acquire()
    monkeypatch.setattr(os, "pwrite", real_pwrite)

    with series_lock(None, tmp_path / "s.lock", timeout_s=0.0) as again:
        assert again.read_holder()["pid"] == os.getpid()
