"""Advisory locks per series: one writer at a time for a catalog bar type or a cache series.

Two flavours behind one API, :func:`series_lock`:

- **Local file systems** (``fs`` None, or an fsspec ``LocalFileSystem``): ``fcntl.flock`` on a
  lock file opened with ``O_CREAT``. The kernel releases the lock when its holder exits or is
  killed, so there are no stale locks to clean up; the file itself stays (empty locks are
  harmless and reusing the inode avoids a create/unlink race). The holder writes who it is into
  the file so a waiter can name it.
- **Object stores and other fsspec file systems** (``memory://``, ``s3://``...): create-if-absent
  of a small JSON lock object (``open(path, "xb")``) holding an owner id and a timestamp. A
  holder renews the timestamp every ``ttl_s / 3`` from a daemon thread; a lock not renewed for
  ``ttl_s`` belongs to a dead process and is taken over. Where the store cannot create
  exclusively, the lock is written and read back (last writer wins, the loser sees another
  owner and waits): advisory, good against our own writers, not against a hostile one.

A second writer waits, polling, up to ``timeout_s``; then :class:`SeriesLocked` names the
holder, the lock file and the fix. The engine uses no NautilusTrader import here, so the kline
cache can take the same locks as catalog ingestion.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from typing import Any

from nautilus_dsm.errors import SeriesLocked

try:
    import fcntl
except ImportError:  # not POSIX: local files take the create-if-absent flavour too
    fcntl = None  # type: ignore[assignment]

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

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._held

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
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
            self._renewer = None
        info = self.read_holder()
        if info is not None and info.get("owner") == self.owner:
            with contextlib.suppress(FileNotFoundError, OSError):
                self.fs.rm(self.path)

    def read_holder(self) -> dict[str, Any] | None:
        """Return what the lock file says about its holder, or None (absent, empty, unreadable)."""
        try:
            if _is_local(self.fs):
                with open(self._local_path(), "rb") as f:
                    raw = f.read()
            else:
                with self.fs.open(self.path, "rb") as f:
                    raw = f.read()
            info = json.loads(raw) if raw.strip() else None
        except (OSError, ValueError):
            return None
        return info if isinstance(info, dict) else None

    def __enter__(self) -> SeriesLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    async def __aenter__(self) -> SeriesLock:
        import asyncio

        # Waiting polls and sleeps: off the event loop, so other tasks keep running.
        return await asyncio.to_thread(self.acquire)

    async def __aexit__(self, *exc: object) -> None:
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
        os.ftruncate(fd, 0)
        os.pwrite(fd, self._payload(), 0)
        self._fd = fd
        return True

    # -- remote: create-if-absent with a TTL -------------------------------------------------

    def _try_remote(self) -> bool:
        fs = self.fs
        parent = self.path.rsplit("/", 1)[0]
        if parent:
            with contextlib.suppress(OSError):
                fs.mkdirs(parent, exist_ok=True)
        self._acquired = time.time()
        try:
            with fs.open(self.path, "xb") as f:
                f.write(self._payload())
        except FileExistsError:
            return self._take_over_if_stale()
        except (ValueError, NotImplementedError):
            # No exclusive create on this store: write, then read back who won.
            if fs.exists(self.path) and not self._take_over_if_stale():
                return False
            with fs.open(self.path, "wb") as f:
                f.write(self._payload())
        info = self.read_holder()
        return info is not None and info.get("owner") == self.owner

    def _take_over_if_stale(self) -> bool:
        info = self.read_holder()
        if info is None:
            # Being written right now (or garbage): stale only once it is old by mtime.
            try:
                modified = self.fs.modified(self.path).timestamp()
            except (OSError, NotImplementedError, AttributeError, ValueError):
                return False
            if time.time() - modified <= self.ttl_s:
                return False
        else:
            renewed = float(info.get("renewed", 0.0))
            ttl = float(info.get("ttl_s", self.ttl_s))
            if time.time() - renewed <= ttl:
                return False
        # Re-read right before removing, so a lock renewed meanwhile is left alone.
        if self.read_holder() != info:
            return False
        with contextlib.suppress(FileNotFoundError, OSError):
            self.fs.rm(self.path)
        try:
            with self.fs.open(self.path, "xb") as f:
                f.write(self._payload())
        except FileExistsError:
            return False
        except (ValueError, NotImplementedError):
            with self.fs.open(self.path, "wb") as f:
                f.write(self._payload())
        info = self.read_holder()
        return info is not None and info.get("owner") == self.owner

    def _start_renewer(self) -> None:
        self._stop.clear()

        def renew() -> None:
            while not self._stop.wait(self.ttl_s / 3):
                info = self.read_holder()
                if info is None or info.get("owner") != self.owner:
                    return  # taken over (we were presumed dead): nothing of ours to renew
                with contextlib.suppress(OSError), self.fs.open(self.path, "wb") as f:
                    f.write(self._payload())

        self._renewer = threading.Thread(target=renew, name=f"lock-renew {self.path}", daemon=True)
        self._renewer.start()


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
