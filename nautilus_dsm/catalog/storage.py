"""Where a catalog lives: local paths, ``memory://`` and object stores (``s3://``, ``gs://``...).

A catalog URI and its storage options (``--storage-option KEY=VALUE`` on the command line, the
usual AWS environment variables for ``s3://``) become one :class:`CatalogLocation`: the
protocol, the path inside the store, the options for fsspec (what this package writes through)
and the options for NautilusTrader's Rust reader (what ``catalog.bars()`` reads through), which
spell the same credentials differently. :func:`open_catalog` builds the ``ParquetDataCatalog``
from it: NautilusTrader 1.231's ``ParquetDataCatalog.from_uri("s3://bucket/prefix")`` passes the
bucket as a ``host`` option that s3fs refuses, and it gives the Rust reader the fsspec options,
which it cannot parse (``client_kwargs`` is a dict), so we construct the catalog with
``fs_protocol`` / ``fs_storage_options`` / ``fs_rust_storage_options`` ourselves.

Writes are atomic per object: every catalog file is written under a temporary key
(``<name>.parquet.<id>.tmp``) and then copied to its final key (an S3 copy is atomic: a reader
sees the whole object or none), and readers ignore temporaries (NautilusTrader globs
``*.parquet``). Parsing and mapping here are pure; only :func:`open_catalog` touches a store.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nautilus_dsm.errors import InvalidInput

if TYPE_CHECKING:
    from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

# AWS's own environment variables -> our option names; earlier entries win.
AWS_ENVIRONMENT = (
    ("AWS_ACCESS_KEY_ID", "key"),
    ("AWS_SECRET_ACCESS_KEY", "secret"),
    ("AWS_SESSION_TOKEN", "token"),
    ("AWS_ENDPOINT_URL_S3", "endpoint_url"),
    ("AWS_ENDPOINT_URL", "endpoint_url"),
    ("AWS_REGION", "region"),
    ("AWS_DEFAULT_REGION", "region"),
)
# Our S3 option names -> the Rust object store's (NautilusTrader's reader).
_S3_RUST_NAMES = {
    "key": "access_key_id",
    "secret": "secret_access_key",
    "token": "session_token",
    "endpoint_url": "endpoint_url",
    "region": "region",
}
_OBJECT_STORES = ("s3", "s3a", "gs", "gcs", "abfs", "az", "azure")


@dataclass(frozen=True)
class CatalogLocation:
    """
    A catalog's store, path and options, ready for ``ParquetDataCatalog`` and backtests.

    Parameters
    ----------
    uri : str
        The catalog as given (``/data/cat``, ``memory:///cat``, ``s3://bucket/prefix``).
    protocol : str
        The fsspec protocol (``file``, ``memory``, ``s3``...).
    path : str
        The path inside the store (``bucket/prefix`` for S3).
    fs_options : dict
        fsspec storage options (s3fs: ``key``, ``secret``, ``endpoint_url``, ``client_kwargs``).
    rust_options : dict
        NautilusTrader's Rust reader options (``access_key_id``, ``endpoint_url``, ...).

    """

    uri: str
    protocol: str
    path: str
    fs_options: dict[str, Any] = field(default_factory=dict)
    rust_options: dict[str, str] = field(default_factory=dict)

    @property
    def is_object_store(self) -> bool:
        """True for ``s3://``, ``gs://``, ``abfs://`` and the like (not local, not memory)."""
        return self.protocol in _OBJECT_STORES

    def backtest_kwargs(self) -> dict[str, Any]:
        """``BacktestDataConfig`` keywords reading this catalog (``catalog_path`` and options)."""
        return {
            "catalog_path": self.path,
            "catalog_fs_protocol": self.protocol,
            "catalog_fs_storage_options": dict(self.fs_options) or None,
            "catalog_fs_rust_storage_options": dict(self.rust_options) or None,
        }


def parse_storage_options(pairs: Sequence[str]) -> dict[str, str]:
    """
    Parse ``KEY=VALUE`` strings (``--storage-option``) into a dict.

    Parameters
    ----------
    pairs : Sequence[str]
        E.g. ``["endpoint_url=http://127.0.0.1:9000", "region=eu-west-1"]``.

    Returns
    -------
    dict[str, str]

    Raises
    ------
    InvalidInput
        A pair without ``=`` or with an empty key, or a key given twice.

    """
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InvalidInput(
                f"storage option {pair!r} is not KEY=VALUE; pass e.g. "
                "--storage-option endpoint_url=http://127.0.0.1:9000"
            )
        if key in out:
            raise InvalidInput(f"storage option {key!r} is given twice; pass it once")
        out[key] = value
    return out


def storage_options_from_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the S3 options the usual AWS environment variables set (``AWS_ACCESS_KEY_ID``...)."""
    env = os.environ if environ is None else environ
    out: dict[str, str] = {}
    for variable, name in AWS_ENVIRONMENT:
        value = env.get(variable)
        if value and name not in out:
            out[name] = value
    return out


def split_uri(uri: str) -> tuple[str, str]:
    """Return ``(protocol, path)`` of a catalog URI; a plain path is ``file``. Pure."""
    if not isinstance(uri, str) or not uri.strip():
        raise InvalidInput(
            f"catalog {uri!r} is empty; pass a path or a URI such as s3://bucket/catalog"
        )
    protocol, sep, rest = uri.partition("://")
    if not sep:
        return "file", os.path.abspath(uri)
    protocol = protocol.lower()
    if protocol == "file":
        return "file", rest
    if protocol in _OBJECT_STORES:
        path = rest.strip("/")
        if not path or rest.startswith("/"):  # s3:// or s3:///key: no bucket
            raise InvalidInput(
                f"catalog {uri!r} names no bucket; pass e.g. {protocol}://bucket/prefix"
            )
        return ("s3" if protocol == "s3a" else protocol), path
    return protocol, rest if protocol != "memory" else "/" + rest.lstrip("/")


def catalog_location(
    uri: str,
    storage_options: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> CatalogLocation:
    """
    Resolve a catalog URI and its options into a :class:`CatalogLocation` (pure, no I/O).

    Parameters
    ----------
    uri : str
        A local path, ``memory:///cat``, ``s3://bucket/prefix``, ``gs://...``.
    storage_options : Mapping, optional
        Options for the store. For S3: ``endpoint_url``, ``key``, ``secret``, ``token``,
        ``region`` (mapped to s3fs's and the Rust reader's names); any other key is passed
        to fsspec as given. They override the AWS environment variables.
    environ : Mapping, optional
        The environment to read AWS variables from (``os.environ`` when None).

    Returns
    -------
    CatalogLocation

    Raises
    ------
    InvalidInput
        An empty URI, an object-store URI without a bucket, options for a local path.

    """
    protocol, path = split_uri(uri)
    given = dict(storage_options or {})
    if protocol == "s3":
        options = {**storage_options_from_env(environ), **given}
        fs_options, rust_options = _s3_options(options)
        return CatalogLocation(uri, protocol, path, fs_options, rust_options)
    if protocol == "file" and given:
        raise InvalidInput(
            f"storage options {sorted(given)} do not apply to the local catalog {uri!r}; "
            "drop them, or pass an object-store URI such as s3://bucket/catalog"
        )
    rust = {k: str(v) for k, v in given.items() if isinstance(v, str)}
    return CatalogLocation(uri, protocol, path, given, rust)


def _s3_options(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    fs: dict[str, Any] = {}
    rust: dict[str, str] = {}
    for name, value in options.items():
        if name == "region":
            fs.setdefault("client_kwargs", {})["region_name"] = value
        elif name in _S3_RUST_NAMES:
            fs[name] = value
        else:
            fs[name] = _typed(value)
        if name in _S3_RUST_NAMES:
            rust[_S3_RUST_NAMES[name]] = str(value)
    # Listings are cached per file system by default: other processes' writes would be missed
    # (a plan must see every file present when it takes the series lock).
    fs.setdefault("use_listings_cache", False)
    endpoint = str(options.get("endpoint_url", ""))
    if endpoint.startswith("http://"):
        rust["allow_http"] = "true"  # a local or private endpoint without TLS
    return fs, rust


def _typed(value: Any) -> Any:
    # KEY=VALUE strings from the command line: booleans and integers as fsspec expects them.
    if not isinstance(value, str):
        return value
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    return int(value) if value.isdigit() else value


def open_catalog(
    uri: str | CatalogLocation,
    storage_options: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> ParquetDataCatalog:
    """
    Open the ``ParquetDataCatalog`` at ``uri`` (local, ``memory://``, ``s3://``...).

    Parameters
    ----------
    uri : str | CatalogLocation
        The catalog; see :func:`catalog_location`.
    storage_options : Mapping, optional
        Store options (ignored when ``uri`` is a :class:`CatalogLocation`).
    environ : Mapping, optional
        The environment to read AWS variables from.

    Returns
    -------
    ParquetDataCatalog
        Writing through fsspec and reading through NautilusTrader's Rust reader with the
        options each expects.

    """
    from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

    location = uri
    if not isinstance(location, CatalogLocation):
        location = catalog_location(location, storage_options, environ=environ)
    return ParquetDataCatalog(
        location.path,
        fs_protocol=location.protocol,
        fs_storage_options=dict(location.fs_options) or None,
        fs_rust_storage_options=dict(location.rust_options) or None,
    )
