"""Where the kline cache keeps its files: the default root, and the names under a root.

Root: an explicit ``cache_dir`` is used as given. Without one, ``$NAUTILUS_DSM_CACHE_DIR``
when it is set and non-empty, else the per-user cache dir
(``platformdirs.user_cache_dir("nautilus-dsm")``); overridden endpoints (a testnet, a mirror,
the local imitation) get a sub-folder of that root named after their hosts, so their bars never
mix with Binance's.

Under a root: ``binance/{market}/{SYMBOL}/{interval}/{YYYY-MM-DD | YYYY}.parquet`` (final) or
``{key}.provisional.parquet``, with ``{interval}.first_bar.json`` (the listing sidecar) and
``{interval}.lock`` (the series lock) beside each series folder, and ``quarantine/`` for files
that could not be trusted. The interval folder is :attr:`Interval.path_label` (``1mo`` for
``1M``, so it never shares a folder with ``1m`` on case-insensitive file systems).
"""

from __future__ import annotations

import hashlib
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import platformdirs

from nautilus_dsm.common.times import to_ms
from nautilus_dsm.constants import DAY_MS

# The environment variable naming the default cache root (used when cache_dir is None).
CACHE_DIR_ENV = "NAUTILUS_DSM_CACHE_DIR"
PROVIDER_DIR = "binance"
KEY_RE = re.compile(r"^[0-9]{4}(-[0-9]{2}-[0-9]{2})?$")
PERIOD_SUFFIX = ".parquet"
PROVISIONAL_SUFFIX = ".provisional.parquet"
# Sidecar beside a series folder ("1m" -> "1m.first_bar.json"): the open time of the series'
# first bar ever (its listing). Beside, not inside, so a series folder holds only periods.
FIRST_BAR_SUFFIX = ".first_bar.json"
# Beside a series folder ("1m" -> "1m.lock"): the advisory lock its writers take (flock).
LOCK_SUFFIX = ".lock"
QUARANTINE_DIR = "quarantine"


def default_cache_dir() -> Path:
    """
    Return the default cache root.

    ``$NAUTILUS_DSM_CACHE_DIR`` when set and non-empty (``~`` expanded), else the per-user
    cache directory (``platformdirs.user_cache_dir("nautilus-dsm")``).

    Returns
    -------
    Path

    """
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path(platformdirs.user_cache_dir("nautilus-dsm"))


def endpoint_cache_dir(base_url_http: str | None, base_url_vision: str | None) -> Path:
    """
    Return the default cache dir for these endpoints: Binance's own get the root itself.

    Overridden endpoints (a testnet, a mirror, the local imitation) get a sub-directory of
    :func:`default_cache_dir` named after their hosts, so their bars never mix with Binance's in
    the default cache. An explicit ``cache_dir`` is used as given: one directory should hold one
    source's data.

    Parameters
    ----------
    base_url_http, base_url_vision : str, optional
        The REST and Vision host overrides (None: Binance's).

    Returns
    -------
    Path

    """
    root = default_cache_dir()
    if base_url_http is None and base_url_vision is None:
        return root
    key = f"{base_url_http or '-'}|{base_url_vision or '-'}".rstrip("/")
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    hosts = "_".join(
        re.sub(r"[^A-Za-z0-9.-]+", "-", urlsplit(url).netloc or "default")
        for url in (base_url_http, base_url_vision)
        if url is not None
    )
    return root / "endpoints" / f"{hosts[:60]}-{digest}"


def period_key(name: str) -> str:
    """Return the period key of a period file name (final or provisional)."""
    if name.endswith(PROVISIONAL_SUFFIX):
        return name[: -len(PROVISIONAL_SUFFIX)]
    return name[: -len(PERIOD_SUFFIX)]


def sidecar_interval(name: str) -> str | None:
    """Return the interval folder a first-bar sidecar (or its temp file) belongs to, else None.

    ``1m.first_bar.json`` and its temp files ``.1m.first_bar.<random>.tmp`` -> ``1m``.
    """
    if name.endswith(FIRST_BAR_SUFFIX):
        return name[: -len(FIRST_BAR_SUFFIX)]
    stem = FIRST_BAR_SUFFIX[: -len(".json")] + "."
    if name.startswith(".") and name.endswith(".tmp") and stem in name:
        return name[1 : name.index(stem)]
    return None


def period_bounds(key: str) -> tuple[int, int]:
    """Return ``[start_ms, end_ms)`` of a cache key: a UTC day (``YYYY-MM-DD``), month or year."""
    if len(key) == 7:  # YYYY-MM: a funding month
        year, month = int(key[:4]), int(key[5:])
        nxt = (year + month // 12, month % 12 + 1)
        return (
            to_ms(datetime(year, month, 1, tzinfo=UTC)),
            to_ms(datetime(*nxt, 1, tzinfo=UTC)),
        )
    if len(key) == 4:
        year = int(key)
        return (
            to_ms(datetime(year, 1, 1, tzinfo=UTC)),
            to_ms(datetime(year + 1, 1, 1, tzinfo=UTC)),
        )
    day = datetime.strptime(key, "%Y-%m-%d").replace(tzinfo=UTC)
    start = to_ms(day)
    return start, start + DAY_MS
