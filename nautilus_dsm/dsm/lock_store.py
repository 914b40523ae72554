"""Where remote series locks live: small objects created, swapped and deleted conditionally.

:class:`~nautilus_dsm.dsm.locks.SeriesLock` keeps its object-store flavour's lock as one small
JSON object. A :class:`LockStore` is the four operations it needs, each answering whether it
won: ``create`` (only if absent), ``read`` (payload and a version token), ``replace`` (only if
the version is still the one read) and ``delete`` (likewise).

- :class:`S3LockStore` (``s3://`` through s3fs) uses S3's conditional writes: ``PutObject``
  with ``If-None-Match: *`` creates, ``If-Match: <etag>`` swaps and ``DeleteObject`` with
  ``If-Match`` deletes, so of two processes taking over one stale lock exactly one wins, and a
  holder that lost its lock cannot overwrite or delete its successor's.
- :class:`FsspecLockStore` (``memory://`` and any other fsspec file system) creates with
  ``open(path, "xb")`` where the store supports it and compares payloads before a swap: good
  against our own writers on one machine, not strictly atomic.

No NautilusTrader import: the engine's cache can take the same locks as catalog ingestion.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from typing import Any, Protocol

from nautilus_dsm.errors import ConditionalWritesUnsupported


class LockStore(Protocol):
    """The conditional operations a remote lock needs; see the module docstring."""

    def create(self, path: str, payload: bytes) -> str | None:
        """Write ``payload`` only if ``path`` is absent; return its version, None if present."""
        ...

    def read(self, path: str) -> tuple[bytes, str] | None:
        """Return ``(payload, version)``, None when absent."""
        ...

    def replace(self, path: str, payload: bytes, version: str) -> str | None:
        """Write ``payload`` only if ``path`` is still at ``version``; return the new one."""
        ...

    def delete(self, path: str, version: str) -> bool:
        """Delete ``path`` only if it is still at ``version``; True when deleted."""
        ...


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = getattr(fs, "protocol", None)
    return (protocol,) if isinstance(protocol, str) else tuple(protocol or ())


def lock_store_for(fs: Any) -> LockStore:
    """Return the lock store of an fsspec file system: S3's conditional writes where it has them."""
    if any(p in ("s3", "s3a") for p in _protocols(fs)) and hasattr(fs, "call_s3"):
        return S3LockStore(fs)
    return FsspecLockStore(fs)


def _precondition_failed(exc: BaseException) -> bool:
    # s3fs turns 412 PreconditionFailed into FileExistsError (create) or OSError(EINVAL).
    text = str(exc)
    return isinstance(exc, FileExistsError) or "pre-condition" in text or "Precondition" in text


# (endpoint, bucket) pairs whose conditional writes were verified by this process.
_verified: set[tuple[str, str]] = set()


class S3LockStore:
    """
    A :class:`LockStore` on S3 (or an S3-compatible store) through s3fs's botocore client.

    The first lock created in a bucket by a process checks that the store honours
    ``If-None-Match`` (an S3-compatible store that ignores it would let two writers hold one
    series): a probe key is created twice, and the second create must be refused.

    Parameters
    ----------
    fs : s3fs.S3FileSystem
        The catalog's file system.

    """

    def __init__(self, fs: Any) -> None:
        self.fs = fs

    def verify(self, path: str) -> None:
        """Refuse a store that ignores conditional creates (once per process and bucket)."""
        bucket, _ = self._split(path)
        where = (str(getattr(self.fs, "endpoint_url", None) or ""), bucket)
        if where in _verified:
            return
        probe = f"{bucket}/.nautilus-dsm-probe-{uuid.uuid4().hex}"
        first = self._put_if_absent(probe, b"1")
        second = self._put_if_absent(probe, b"2")
        honours_none_match = first is not None and second is None
        # A takeover swaps the stale lock with If-Match: a store that ignores it would let
        # two processes taking over one stale lock both win.
        honours_match = not honours_none_match or self.replace(probe, b"3", '"0"') is None
        with contextlib.suppress(OSError):
            self.fs.call_s3("delete_object", Bucket=bucket, Key=self._split(probe)[1])
        for honoured, header, what in (
            (honours_none_match, "If-None-Match", "a second exclusive create"),
            (honours_match, "If-Match", "a swap with a wrong ETag"),
        ):
            if not honoured:
                raise ConditionalWritesUnsupported(
                    f"the object store of bucket {bucket!r} ignores {header} ({what} "
                    "succeeded), so it cannot keep one writer per series; use a store with "
                    "conditional writes (AWS S3, MinIO, GCS and R2 have them) or run one "
                    "writer per catalog"
                )
        _verified.add(where)

    def _split(self, path: str) -> tuple[str, str]:
        bucket, key, _ = self.fs.split_path(path)
        return bucket, key

    def create(self, path: str, payload: bytes) -> str | None:
        """Create with ``If-None-Match: *``; None when the object exists."""
        self.verify(path)
        return self._put_if_absent(path, payload)

    def _put_if_absent(self, path: str, payload: bytes) -> str | None:
        bucket, key = self._split(path)
        try:
            out = self.fs.call_s3(
                "put_object", Bucket=bucket, Key=key, Body=payload, IfNoneMatch="*"
            )
        except OSError as exc:
            if _precondition_failed(exc):
                return None
            raise
        finally:
            self.fs.invalidate_cache(path)
        return str(out["ETag"])

    def read(self, path: str) -> tuple[bytes, str] | None:
        """``GetObject``: the payload and its ETag; None when absent."""
        bucket, key = self._split(path)
        try:
            out = self.fs.call_s3("get_object", Bucket=bucket, Key=key)
        except FileNotFoundError:
            return None
        return _read_body(self.fs, out["Body"]), str(out["ETag"])

    def replace(self, path: str, payload: bytes, version: str) -> str | None:
        """Swap with ``If-Match: <etag>``; None when the object changed or vanished."""
        bucket, key = self._split(path)
        try:
            out = self.fs.call_s3(
                "put_object", Bucket=bucket, Key=key, Body=payload, IfMatch=version
            )
        except FileNotFoundError:
            return None
        except OSError as exc:
            if _precondition_failed(exc):
                return None
            raise
        finally:
            self.fs.invalidate_cache(path)
        return str(out["ETag"])

    def delete(self, path: str, version: str) -> bool:
        """``DeleteObject`` with ``If-Match``; False when the object changed or vanished."""
        bucket, key = self._split(path)
        try:
            self.fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=version)
        except FileNotFoundError:
            return False
        except OSError as exc:
            if _precondition_failed(exc):
                return False
            raise
        finally:
            self.fs.invalidate_cache(path)
        return True


def _read_body(fs: Any, body: Any) -> bytes:
    # aiobotocore's streaming body is read on s3fs's own event loop.
    from fsspec.asyn import sync

    async def read() -> bytes:
        async with body as stream:
            return await stream.read()

    return sync(fs.loop, read)


class FsspecLockStore:
    """
    A :class:`LockStore` on any fsspec file system (``memory://``, local, others).

    ``create`` is exclusive where the store supports ``open(path, "xb")``; the version of an
    object is the SHA-256 of its bytes, compared before a swap or delete (not atomic).

    Parameters
    ----------
    fs : fsspec.AbstractFileSystem
        The file system.

    """

    def __init__(self, fs: Any) -> None:
        self.fs = fs

    def create(self, path: str, payload: bytes) -> str | None:
        """Create exclusively (``xb``), or write and read back where ``xb`` is unsupported."""
        parent = path.rsplit("/", 1)[0]
        if parent:
            with contextlib.suppress(OSError):
                self.fs.mkdirs(parent, exist_ok=True)
        try:
            with self.fs.open(path, "xb") as f:
                f.write(payload)
        except FileExistsError:
            return None
        except (ValueError, NotImplementedError):
            # No exclusive create on this store: write, then read back who won.
            if self.fs.exists(path):
                return None
            with self.fs.open(path, "wb") as f:
                f.write(payload)
        current = self.read(path)
        if current is None or current[0] != payload:
            return None
        return current[1]

    def read(self, path: str) -> tuple[bytes, str] | None:
        """Return the bytes and their SHA-256; None when absent or unreadable."""
        try:
            with self.fs.open(path, "rb") as f:
                data = f.read()
        except (FileNotFoundError, OSError):
            return None
        return data, hashlib.sha256(data).hexdigest()

    def replace(self, path: str, payload: bytes, version: str) -> str | None:
        """Write when the bytes still hash to ``version``; the new version, else None."""
        current = self.read(path)
        if current is None or current[1] != version:
            return None
        with self.fs.open(path, "wb") as f:
            f.write(payload)
        after = self.read(path)
        return after[1] if after is not None and after[0] == payload else None

    def delete(self, path: str, version: str) -> bool:
        """Remove when the bytes still hash to ``version``."""
        current = self.read(path)
        if current is None or current[1] != version:
            return False
        with contextlib.suppress(FileNotFoundError, OSError):
            self.fs.rm(path)
        return True
