"""The kline cache: one parquet file per market / symbol / interval / closed period.

Layout: ``{root}/binance/{market}/{SYMBOL}/{interval}/{YYYY-MM-DD | YYYY}.parquet`` (``1mo``
for ``1M``, so it never shares a folder with ``1m`` on case-insensitive file systems). Only
closed periods are written, and a written period is immutable, so a cached file is always the
whole truth for its period. Writes are atomic (temp file in the same directory, fsync,
``os.replace``): a killed process never leaves half a file, and two processes writing the same
period both succeed with identical content. A file that cannot be read back with the exact frame
schema is counted, deleted and reported absent, so it is fetched again instead of trusted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import platformdirs
import polars as pl

from nautilus_dsm.dsm.schema import COLUMNS, FRAME_SCHEMA
from nautilus_dsm.errors import InvalidInput
from nautilus_dsm.markets import Interval, MarketType

log = logging.getLogger("nautilus_dsm.dsm")

PROVIDER_DIR = "binance"
_SYMBOL_RE = re.compile(r"^[A-Z0-9_]{2,32}$")
_KEY_RE = re.compile(r"^[0-9]{4}(-[0-9]{2}-[0-9]{2})?$")
_SUFFIX = ".parquet"


def _dir_name(interval: Interval) -> str:
    # "1M" and "1m" are one folder on case-insensitive file systems; Vision's "1mo" is not.
    return "1mo" if interval is Interval.MONTH_1 else interval.value


def default_cache_dir() -> Path:
    """The per-user cache directory (``platformdirs.user_cache_dir("nautilus-dsm")``)."""
    return Path(platformdirs.user_cache_dir("nautilus-dsm"))


class KlineCache:
    """Parquet cache of closed kline periods.

    Parameters
    ----------
    root : Path, optional
        Cache root; the per-user cache directory when None.

    """

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        self.corrupt = 0  # files found unreadable / wrong-schema and deleted

    # -- paths ---------------------------------------------------------------------------

    def directory(self, market: MarketType, symbol: str, interval: Interval) -> Path:
        """The folder of one market / symbol / interval (validated to lie under the root)."""
        market = MarketType.parse(market)
        interval = Interval.parse(interval)
        if not _SYMBOL_RE.match(symbol):
            raise InvalidInput(
                f"invalid symbol {symbol!r} for the cache: Binance symbols are upper-case "
                "letters, digits and '_' (e.g. BTCUSDT, BTCUSD_PERP)"
            )
        path = self.root / PROVIDER_DIR / market.value / symbol / _dir_name(interval)
        self._check_under_root(path)
        return path

    def path(self, market: MarketType, symbol: str, interval: Interval, key: str) -> Path:
        """The file of one period (``key`` is ``YYYY-MM-DD`` or ``YYYY``)."""
        if not _KEY_RE.match(key):
            raise InvalidInput(f"invalid cache period {key!r}; use YYYY-MM-DD or YYYY")
        return self.directory(market, symbol, interval) / f"{key}{_SUFFIX}"

    def _check_under_root(self, path: Path) -> None:
        root = self.root.resolve()
        resolved = path.resolve()
        if resolved != root and root not in resolved.parents:
            raise InvalidInput(f"cache path {path} escapes the cache root {root}")

    # -- read ----------------------------------------------------------------------------

    def read(
        self, market: MarketType, symbol: str, interval: Interval, key: str
    ) -> pl.DataFrame | None:
        """The cached frame of one period, or None when absent or unreadable (then deleted)."""
        return self._read_file(self.path(market, symbol, interval, key))

    def read_many(
        self, market: MarketType, symbol: str, interval: Interval, keys: list[str]
    ) -> tuple[pl.DataFrame | None, list[str]]:
        """Read many periods at once: the concatenated frame and the keys that were cached.

        One ``pl.read_parquet`` over all present files (a warm year of 1m bars loads in a
        fraction of a second); if that fails, each file is read alone so one bad file only
        costs its own period.
        """
        directory = self.directory(market, symbol, interval)
        try:
            names = {e.name for e in os.scandir(directory) if e.name.endswith(_SUFFIX)}
        except FileNotFoundError:
            return None, []
        present = [k for k in keys if _KEY_RE.match(k) and f"{k}{_SUFFIX}" in names]
        if not present:
            return None, []
        files = [directory / f"{k}{_SUFFIX}" for k in present]
        try:
            frame = pl.read_parquet(files)
            if frame.schema == pl.Schema(FRAME_SCHEMA):
                return frame, present
        except Exception:  # any unreadable file: fall back to one by one
            pass
        frames: list[pl.DataFrame] = []
        hits: list[str] = []
        for key, file in zip(present, files, strict=True):
            one = self._read_file(file)
            if one is not None:
                frames.append(one)
                hits.append(key)
        return (pl.concat(frames) if frames else None), hits

    def _read_file(self, file: Path) -> pl.DataFrame | None:
        try:
            frame = pl.read_parquet(file)
        except FileNotFoundError:
            return None
        except Exception as exc:  # truncated / not parquet: refetch
            self._discard(file, f"unreadable ({type(exc).__name__}: {exc})")
            return None
        if frame.schema != pl.Schema(FRAME_SCHEMA):
            self._discard(file, f"wrong schema {dict(frame.schema)}")
            return None
        return frame

    def _discard(self, file: Path, why: str) -> None:
        self.corrupt += 1
        log.warning("cache file %s is %s; deleted, the period will be fetched again", file, why)
        with contextlib.suppress(FileNotFoundError):
            file.unlink()

    # -- write ---------------------------------------------------------------------------

    def write(
        self, market: MarketType, symbol: str, interval: Interval, key: str, frame: pl.DataFrame
    ) -> Path:
        """Atomically write one closed period (temp file + fsync + ``os.replace``)."""
        if frame.schema != pl.Schema(FRAME_SCHEMA):
            raise InvalidInput(
                f"refusing to cache {symbol} {key}: frame schema {dict(frame.schema)} is not "
                "FRAME_SCHEMA; build frames with nautilus_dsm.dsm.schema"
            )
        target = self.path(market, symbol, interval, key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                frame.select(COLUMNS).write_parquet(handle, compression="zstd", statistics=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        return target

    # -- maintenance ---------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """Files and bytes in total and per market / symbol / interval (for the CLI)."""
        entries: list[dict[str, Any]] = []
        for market_dir, symbol_dir, interval_dir in self._interval_dirs():
            files = [f for f in interval_dir.iterdir() if f.name.endswith(_SUFFIX)]
            if not files:
                continue
            keys = sorted(f.name[: -len(_SUFFIX)] for f in files)
            entries.append(
                {
                    "market": market_dir.name,
                    "symbol": symbol_dir.name,
                    "interval": interval_dir.name,
                    "files": len(files),
                    "bytes": sum(f.stat().st_size for f in files),
                    "first": keys[0],
                    "last": keys[-1],
                }
            )
        return {
            "root": str(self.root),
            "files": sum(e["files"] for e in entries),
            "bytes": sum(e["bytes"] for e in entries),
            "entries": entries,
        }

    def clear(
        self,
        market: MarketType | str | None = None,
        symbol: str | None = None,
        interval: Interval | str | None = None,
    ) -> int:
        """Delete cached files matching the filters (all when none given); return how many."""
        market_name = MarketType.parse(market).value if market is not None else None
        symbol_name = symbol.upper() if symbol is not None else None
        interval_name = _dir_name(Interval.parse(interval)) if interval is not None else None
        removed = 0
        for market_dir, symbol_dir, interval_dir in self._interval_dirs():
            if market_name is not None and market_dir.name != market_name:
                continue
            if symbol_name is not None and symbol_dir.name != symbol_name:
                continue
            if interval_name is not None and interval_dir.name != interval_name:
                continue
            for file in interval_dir.iterdir():
                if file.is_file() and (file.name.endswith((_SUFFIX, ".tmp"))):
                    file.unlink()
                    removed += file.name.endswith(_SUFFIX)
            for directory in (interval_dir, symbol_dir):
                with contextlib.suppress(OSError):
                    directory.rmdir()  # only when empty
        return removed

    def _interval_dirs(self) -> list[tuple[Path, Path, Path]]:
        base = self.root / PROVIDER_DIR
        if not base.is_dir():
            return []
        out = []
        for market_dir in sorted(p for p in base.iterdir() if p.is_dir()):
            for symbol_dir in sorted(p for p in market_dir.iterdir() if p.is_dir()):
                for interval_dir in sorted(p for p in symbol_dir.iterdir() if p.is_dir()):
                    out.append((market_dir, symbol_dir, interval_dir))
        return out
