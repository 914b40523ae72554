"""Advisory locks per series: one writer at a time for a catalog bar type or a cache series.

Two flavours behind one API, :func:`series_lock`:

- **Local file systems** (``fs`` None, or an fsspec ``LocalFileSystem``): ``fcntl.flock`` on a
  lock file opened with ``O_CREAT``. The kernel releases the lock when its holder exits or is
  killed, so there are no stale locks to clean up; the file itself stays (empty locks are
  harmless and reusing the inode avoids a create/unlink race). The holder writes who it is into
  the file so a waiter can name it.
- **Object stores and other fsspec file systems** (``memory://``, ``s3://``...): a small JSON
  lock object holding an owner id and a timestamp, created only if absent. A holder renews the
  timestamp every ``ttl_s / 3`` from a daemon thread, each renewal a swap of the version it
  wrote last; a lock not renewed for ``ttl_s`` belongs to a dead process and is taken over by
  a swap of the version judged stale. On S3 these are conditional writes (``If-None-Match`` /
  ``If-Match``, :mod:`.lock_store`), so exactly one process holds a series at a time, a
  takeover race has one winner, and a holder presumed dead cannot delete its successor's
  lock (:attr:`SeriesLock.lost` tells it so). On other stores the swap compares bytes first:
  advisory, good against our own writers, not against a hostile one.

A second writer waits, polling, up to ``timeout_s``; then :class:`SeriesLocked` names the
holder, the lock file and the fix. The engine uses no NautilusTrader import here, so the kline
cache can take the same locks as catalog ingestion.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from nautilus_dsm.dsm.lock_store import LockStore, lock_store_for
from nautilus_dsm.errors import SeriesLocked

try:
    import fcntl
except ImportError:  # not POSIX: local files take the create-if-absent flavour too
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_TTL_S = 30.0
_POLL_S = 0.05


def default_owner() -> str:
    """``host:pid:random`` — unique per lock taken, readable in error messages."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _is_local(fs: Any) -> bool:
    if fcntl is None:
        return False
    if fs is None:
        return True
    protocol = getattr(fs, "protocol", None)
    protocols = (protocol,) if isinstance(protocol, str) else tuple(protocol or ())
    return any(p in ("file", "local") for p in protocols)


def _describe(info: dict[str, Any] | None) -> str:
    if not info:
        return "an unknown holder (the lock file names no owner yet)"
    since = info.get("acquired")
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since)) if since else "?"
    return f"owner {info.get('owner', '?')} (pid {info.get('pid', '?')}) since {when}"


class SeriesLock:
    """An advisory, exclusive lock on one series; see :func:`series_lock`.

    Use it as a (sync or async) context manager, or call :meth:`acquire` / :meth:`release`.
    Not re-entrant: a second acquire from the same process waits like any other writer.
    """

    def __init__(
        self,
        path: str,
        *,
        fs: Any = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        owner: str | None = None,
        ttl_s: float = DEFAULT_TTL_S,
        what: str = "series",
    ) -> None:
        self.path = path
        if fs is None and fcntl is None:
            import fsspec

            fs = fsspec.filesystem("file")
        self.fs = fs
        self.timeout_s = float(timeout_s)
        self.owner = owner or default_owner()
        self.ttl_s = float(ttl_s)
        self.what = what
        self._fd: int | None = None
        self._held = False
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        # Remote flavour: the version of the lock object we wrote last, and whether another
        # process has taken the lock over since (we were not renewing it in time).
        self._lock_store: LockStore | None = None
        self._version: str | None = None
        self._lost = False
        self._version_lock = threading.Lock()
        self._renewed_mono = 0.0  # monotonic time of the last write of our lock object
        self._tokens: list[contextvars.Token[SeriesLock | None]] = []

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._held

    @property
    def lost(self) -> bool:
        """Object stores: True once the lock may belong to another process.

        That is when another process took it over, or when it went unrenewed for its TTL
        (renewals failing: another process may take it over at any moment, so a writer must
        stop before that can happen rather than find out after).
        """
        if self._lost:
            return True
        remote = self._held and self._fd is None
        return remote and time.monotonic() - self._renewed_mono >= self.ttl_s

    def check_held(self) -> None:
        """Raise :class:`SeriesLocked` when this lock was lost (see :attr:`lost`)."""
        if self.lost:
            raise SeriesLocked(
                f"{self.what} lock {self.path} was lost while writing (not renewed within "
                f"{self.ttl_s:g} s, or taken over): stopped before the next write so two "
                "writers never commit to one series. Re-run: the ingest resumes",
                path=self.path,
            )

    # -- public ------------------------------------------------------------------------------

    def acquire(self) -> SeriesLock:
        """Take the lock, waiting up to ``timeout_s``; raise :class:`SeriesLocked` after."""
        if self._held:
            raise SeriesLocked(f"{self.what} lock {self.path} is already held by this object")
        deadline = time.monotonic() + self.timeout_s
        local = _is_local(self.fs)
        while True:
            if self._try_local() if local else self._try_remote():
                self._held = True
                if not local:
                    self._start_renewer()
                return self
            if time.monotonic() >= deadline:
                holder = _describe(self.read_holder())
                raise SeriesLocked(
                    f"{self.what} is being written by another process: lock {self.path} held "
                    f"by {holder}; waited {self.timeout_s:g} s. Wait for that run to finish "
                    "and re-run (it resumes), or raise the lock timeout; if no such process "
                    "is alive, the lock is released on its own"
                    + ("" if local else f" once it is {self.ttl_s:g} s old"),
                    path=self.path,
                    holder=holder,
                )
            time.sleep(_POLL_S)

    def release(self) -> None:
        """Give the lock up (idempotent)."""
        if not self._held:
            return
        self._held = False
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            return
        self._release_remote()

    def read_holder(self) -> dict[str, Any] | None:
        """Return what the lock file says about its holder; None if absent, empty, unreadable."""
        if not _is_local(self.fs):
            current = self._store().read(self.path)
            return None if current is None else _parse_holder(current[0])
        try:
            with open(self._local_path(), "rb") as f:
                raw = f.read()
        except OSError:
            return None
        return _parse_holder(raw)

    def __enter__(self) -> SeriesLock:
        self.acquire()
        self._tokens.append(_CURRENT.set(self))
        return self

    def __exit__(self, *exc: object) -> None:
        self._exit()

    async def __aenter__(self) -> SeriesLock:
        import asyncio

        # Waiting polls and sleeps: off the event loop, so other tasks keep running.
        await asyncio.to_thread(self.acquire)
        # Set here, in the caller's task: writes in the `async with` body can check it.
        self._tokens.append(_CURRENT.set(self))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._exit()

    def _exit(self) -> None:
        if self._tokens:
            with contextlib.suppress(ValueError):  # reset from another context: leave it
                _CURRENT.reset(self._tokens.pop())
        self.release()

    # -- local: flock ------------------------------------------------------------------------

    def _local_path(self) -> str:
        path = self.path
        if self.fs is not None:
            path = self.fs._strip_protocol(path)
        return str(path)

    def _payload(self) -> bytes:
        now = time.time()
        return json.dumps(
            {
                "owner": self.owner,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "acquired": getattr(self, "_acquired", now),
                "renewed": now,
                "ttl_s": self.ttl_s,
            }
        ).encode()

    def _try_local(self) -> bool:
        path = self._local_path()
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError:
            os.close(fd)
            raise
        self._acquired = time.time()
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, self._payload(), 0)
        except OSError:
            # A full disk or a read-only remount: give the flock back with the descriptor, or
            # it stays held by nobody and the series' next writer here waits out its timeout.
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise
        self._fd = fd
        return True

    # -- remote: conditional create / swap / delete with a TTL (dsm/lock_store.py) -------

    def _store(self) -> LockStore:
        if self._lock_store is None:
            self._lock_store = lock_store_for(self.fs)
        return self._lock_store

    def _try_remote(self) -> bool:
        store = self._store()
        self._acquired = time.time()
        version = store.create(self.path, self._payload())
        if version is None:
            version = self._take_over_if_stale(store)
        if version is None:
            return False
        with self._version_lock:
            self._version = version
            self._lost = False
            self._renewed_mono = time.monotonic()
        return True

    def _take_over_if_stale(self, store: LockStore) -> str | None:
        current = store.read(self.path)
        if current is None:
            return None  # released meanwhile: the next poll creates it
        raw, version = current
        info = _parse_holder(raw)
        if info is None:
            # Garbage (or being written on a store without atomic writes): stale by mtime.
            try:
                renewed = self.fs.modified(self.path).timestamp()
            except (OSError, NotImplementedError, AttributeError, ValueError):
                return None
            ttl = self.ttl_s
        else:
            renewed = float(info.get("renewed", 0.0))
            ttl = float(info.get("ttl_s", self.ttl_s))
        if time.time() - renewed <= ttl:
            return None
        # Swap only the version judged stale: of two processes taking one stale lock over,
        # exactly one wins (S3 If-Match), and a lock renewed meanwhile is left alone.
        return store.replace(self.path, self._payload(), version)

    def _renew_once(self) -> bool:
        with self._version_lock:
            if self._version is None or self._lost:
                return False
            new = self._store().replace(self.path, self._payload(), self._version)
            if new is None:
                # Taken over (we were presumed dead): nothing of ours to renew or delete.
                self._lost = True
                return False
            self._version = new
            self._renewed_mono = time.monotonic()
            return True

    def _start_renewer(self) -> None:
        self._stop.clear()

        def renew() -> None:
            while not self._stop.wait(self.ttl_s / 3):
                with contextlib.suppress(OSError):
                    if not self._renew_once() and self._lost:
                        return

        self._renewer = threading.Thread(target=renew, name=f"lock-renew {self.path}", daemon=True)
        self._renewer.start()

    def _release_remote(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
            self._renewer = None
        with self._version_lock:
            version, self._version = self._version, None
            lost = self._lost
        if lost or version is None:
            log.warning(
                "%s lock %s was taken over while held (not renewed within %g s)",
                self.what,
                self.path,
                self.ttl_s,
            )
            return
        with contextlib.suppress(FileNotFoundError, OSError):
            self._store().delete(self.path, version)


_CURRENT: contextvars.ContextVar[SeriesLock | None] = contextvars.ContextVar(
    "nautilus_dsm_series_lock", default=None
)


def check_current_lock() -> None:
    """Raise :class:`SeriesLocked` when the series lock held by this context was lost.

    Writers call it before each commit (a catalog file's rename): a writer whose object-store
    lock went unrenewed for its TTL or was taken over stops instead of writing beside the new
    holder. Without a lock in this context it does nothing.
    """
    lock = _CURRENT.get()
    if lock is not None:
        lock.check_held()


def _parse_holder(raw: bytes) -> dict[str, Any] | None:
    try:
        info = json.loads(raw) if raw.strip() else None
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


def series_lock(
    fs: Any,
    path: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    owner: str | None = None,
    ttl_s: float = DEFAULT_TTL_S,
    what: str = "series",
) -> SeriesLock:
    """
    Return the advisory lock of one series, to use as ``with`` / ``async with``.

    Parameters
    ----------
    fs : fsspec.AbstractFileSystem | None
        The file system holding the series; None (or a local one) uses ``fcntl.flock``, any
        other create-if-absent lock objects with a TTL.
    path : str
        The lock file, beside the series (e.g. ``<catalog>/data/bar/<bar_type>.lock``).
    timeout_s : float, default 60
        How long a second writer waits before :class:`SeriesLocked`.
    owner : str, optional
        Owner id written into the lock (``host:pid:random`` by default).
    ttl_s : float, default 30
        Object stores only: a lock not renewed for this long is stale and taken over.
    what : str
        What the series is, for messages (e.g. the bar type).

    Examples
    --------
    >>> with series_lock(None, "/data/cache/BTCUSDT-1m.lock", timeout_s=10):  # doctest: +SKIP
    ...     write_the_series()
    """
    return SeriesLock(path, fs=fs, timeout_s=timeout_s, owner=owner, ttl_s=ttl_s, what=what)
