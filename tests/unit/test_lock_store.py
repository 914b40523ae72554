"""The S3 lock store refuses a store that ignores conditional writes (a fake botocore seam)."""

from __future__ import annotations

from typing import Any

import pytest

from nautilus_dsm.dsm.lock_store import S3LockStore
from nautilus_dsm.errors import ConditionalWritesUnsupported


class IgnoresConditions:
    """The slice of s3fs the store uses, over a dict, ignoring If-None-Match and If-Match."""

    endpoint_url = "http://old-s3-compatible.invalid"

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.calls: list[tuple[str, str]] = []

    def split_path(self, path: str) -> tuple[str, str, None]:
        bucket, key = path.split("/", 1)
        return bucket, key, None

    def invalidate_cache(self, path: str) -> None:
        pass

    def call_s3(self, method: str, **kw: Any) -> dict[str, Any]:
        self.calls.append((method, kw["Key"]))
        if method == "put_object":
            self.objects[kw["Key"]] = kw["Body"]
            return {"ETag": '"e"'}
        self.objects.pop(kw["Key"], None)
        return {}


def test_a_store_ignoring_if_none_match_is_refused_before_any_lock_is_written() -> None:
    fs = IgnoresConditions()
    with pytest.raises(ConditionalWritesUnsupported) as caught:
        S3LockStore(fs).create("catalogs/data/bar/X.lock", b"owner")
    assert str(caught.value) == (
        "the object store of bucket 'catalogs' ignores If-None-Match (a second exclusive create "
        "succeeded), so it cannot keep one writer per series; use a store with conditional "
        "writes (AWS S3, MinIO, GCS and R2 have them) or run one writer per catalog"
    )
    assert "data/bar/X.lock" not in fs.objects  # the probe is removed, no lock was written
    assert fs.objects == {}
    assert [m for m, _ in fs.calls] == ["put_object", "put_object", "delete_object"]


class HonoursOnlyNoneMatch(IgnoresConditions):
    """Exclusive creates work; If-Match is ignored (the takeover swap would race)."""

    endpoint_url = "http://half-conditional-s3.invalid"

    def call_s3(self, method: str, **kw: Any) -> dict[str, Any]:
        if method == "put_object" and kw.get("IfNoneMatch") == "*" and kw["Key"] in self.objects:
            self.calls.append((method, kw["Key"]))
            raise OSError("PreconditionFailed: At least one of the pre-conditions failed (412)")
        return super().call_s3(method, **kw)


def test_a_store_ignoring_if_match_is_refused_before_any_lock_is_written() -> None:
    fs = HonoursOnlyNoneMatch()
    with pytest.raises(ConditionalWritesUnsupported) as caught:
        S3LockStore(fs).create("catalogs/data/bar/X.lock", b"owner")
    assert str(caught.value) == (
        "the object store of bucket 'catalogs' ignores If-Match (a swap with a wrong ETag "
        "succeeded), so it cannot keep one writer per series; use a store with conditional "
        "writes (AWS S3, MinIO, GCS and R2 have them) or run one writer per catalog"
    )
    assert fs.objects == {}
    assert [m for m, _ in fs.calls] == ["put_object", "put_object", "put_object", "delete_object"]
