"""The kline cache: one parquet file per market / symbol / interval / closed period.

Layout: ``{root}/binance/{market}/{SYMBOL}/{interval}/{YYYY-MM-DD | YYYY}.parquet`` (``1mo``
for ``1M``, so it never shares a folder with ``1m`` on case-insensitive file systems). Only
closed periods are written, and a written period is immutable, so a cached file is always the
whole truth for its period. Writes are atomic (temp file in the same directory, fsync,
``os.replace``): a killed process never leaves half a file, and two processes writing the same
period both succeed with identical content. A file that cannot be read back with the exact frame
schema is counted, deleted and reported absent, so it is fetched again instead of trusted.
Beside each series folder, ``{interval}.first_bar.json`` records the open time of the series'
first bar ever (its listing) and the REST endpoint that served it, so a warm fetch knows the
listing without asking Binance; a sidecar written by another endpoint (a testnet, a mirror, the
imitation sharing the cache dir) is ignored, since its listing need not be this endpoint's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import platformdirs
import polars as pl

from nautilus_dsm.dsm.schema import COLUMNS, FRAME_SCHEMA
from nautilus_dsm.errors import InvalidInput
from nautilus_dsm.markets import Interval, MarketType, check_binance_symbol, from_ms

log = logging.getLogger("nautilus_dsm.dsm")

PROVIDER_DIR = "binance"
_KEY_RE = re.compile(r"^[0-9]{4}(-[0-9]{2}-[0-9]{2})?$")
_SUFFIX = ".parquet"
# Sidecar beside a series folder ("1m" -> "1m.first_bar.json"): the open time of the series'
# first bar ever (its listing). Beside, not inside, so a series folder holds only periods.
FIRST_BAR_SUFFIX = ".first_bar.json"


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
        check_binance_symbol(symbol)
        path = self.root / PROVIDER_DIR / market.value / symbol / _dir_name(interval)
        self._check_under_root(path)
        return path

    def path(self, market: MarketType, symbol: str, interval: Interval, key: str) -> Path:
        """The file of one period (``key`` is ``YYYY-MM-DD`` or ``YYYY``)."""
        if not _KEY_RE.match(key):
            raise InvalidInput(f"invalid cache period {key!r}; use YYYY-MM-DD or YYYY")
        return self.directory(market, symbol, interval) / f"{key}{_SUFFIX}"

    def first_bar_path(self, market: MarketType, symbol: str, interval: Interval) -> Path:
        """The first-bar sidecar of a series: ``{SYMBOL}/{interval}.first_bar.json``."""
        directory = self.directory(market, symbol, interval)
        return directory.with_name(directory.name + FIRST_BAR_SUFFIX)

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

    def _discard(
        self, file: Path, why: str, then: str = "the period will be fetched again"
    ) -> None:
        self.corrupt += 1
        log.warning("cache file %s is %s; deleted, %s", file, why, then)
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
        _write_atomic(
            target,
            lambda handle: frame.select(COLUMNS).write_parquet(
                handle, compression="zstd", statistics=True
            ),
        )
        return target

    # -- first bar (listing) ---------------------------------------------------------------

    def read_first_bar(
        self, market: MarketType, symbol: str, interval: Interval, *, endpoint: str
    ) -> int | None:
        """Open time (epoch ms) of the series' first bar ever as ``endpoint`` served it.

        The first bar never moves once a symbol trades, so a warm fetch learns the listing from
        here without asking Binance. None when not recorded, or recorded from another REST
        endpoint (or before endpoints were recorded): another server's listing is no evidence
        about this one, so that sidecar is left alone and the manager asks again. A sidecar
        that is unreadable or describes another series is counted, deleted and reported absent.
        """
        market, interval = MarketType.parse(market), Interval.parse(interval)
        file = self.first_bar_path(market, symbol, interval)
        try:
            raw = file.read_bytes()
        except FileNotFoundError:
            return None
        first, problem = _parse_first_bar(raw, market, symbol, interval)
        if problem:
            self._discard(file, problem, "the first bar will be looked up again")
            return None
        recorded = _sidecar_endpoint(raw)
        if recorded != endpoint:
            log.info(
                "first-bar sidecar %s was recorded from %s, not %s; ignored",
                file,
                recorded or "an unrecorded endpoint",
                endpoint,
            )
            return None
        return first

    def write_first_bar(
        self, market: MarketType, symbol: str, interval: Interval, open_ms: int, *, endpoint: str
    ) -> Path:
        """Atomically record the first bar ever and the REST ``endpoint`` that served it."""
        market, interval = MarketType.parse(market), Interval.parse(interval)
        if isinstance(open_ms, bool) or not isinstance(open_ms, int) or open_ms < 0:
            raise InvalidInput(
                f"first bar of {symbol} {interval.value} must be epoch ms >= 0, was {open_ms!r}"
            )
        if interval.floor_ms(open_ms) != open_ms:
            raise InvalidInput(
                f"first bar {open_ms} of {symbol} is not on the {interval.value} grid; "
                "pass the open time Binance served"
            )
        if not isinstance(endpoint, str) or not endpoint:
            raise InvalidInput(
                f"first bar of {symbol} {interval.value} needs the REST endpoint that served it, "
                f"was {endpoint!r}; pass markets.rest_base_url(market, base_url_http)"
            )
        payload = {
            "market": market.value,
            "symbol": symbol,
            "interval": interval.value,
            "first_open_ms": open_ms,
            "first_open": from_ms(open_ms).isoformat().replace("+00:00", "Z"),
            "endpoint": endpoint,
        }
        body = json.dumps(payload, indent=2).encode() + b"\n"
        target = self.first_bar_path(market, symbol, interval)
        _write_atomic(target, lambda handle: handle.write(body))
        return target

    def discard_first_bar(
        self, market: MarketType, symbol: str, interval: Interval, why: str
    ) -> None:
        """Count and delete a sidecar that evidence contradicts (cached bars, a REST probe)."""
        market, interval = MarketType.parse(market), Interval.parse(interval)
        file = self.first_bar_path(market, symbol, interval)
        if file.exists():
            self._discard(file, why, "the first bar will be looked up again")

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
        """Delete cached periods (and first-bar sidecars) matching the filters (all when none
        given); return how many period files were deleted."""
        market_name = MarketType.parse(market).value if market is not None else None
        symbol_name = symbol.upper() if symbol is not None else None
        interval_name = _dir_name(Interval.parse(interval)) if interval is not None else None
        removed = 0
        for market_dir, symbol_dir in self._symbol_dirs():
            if market_name is not None and market_dir.name != market_name:
                continue
            if symbol_name is not None and symbol_dir.name != symbol_name:
                continue
            for entry in sorted(symbol_dir.iterdir()):
                if entry.is_dir():
                    if interval_name is not None and entry.name != interval_name:
                        continue
                    for file in entry.iterdir():
                        if file.is_file() and file.name.endswith((_SUFFIX, ".tmp")):
                            file.unlink()
                            removed += file.name.endswith(_SUFFIX)
                    with contextlib.suppress(OSError):
                        entry.rmdir()  # only when empty
                elif _sidecar_interval(entry.name) is not None and (
                    interval_name is None or _sidecar_interval(entry.name) == interval_name
                ):
                    entry.unlink()
            with contextlib.suppress(OSError):
                symbol_dir.rmdir()  # only when empty
        return removed

    def _symbol_dirs(self) -> list[tuple[Path, Path]]:
        base = self.root / PROVIDER_DIR
        if not base.is_dir():
            return []
        return [
            (market_dir, symbol_dir)
            for market_dir in sorted(p for p in base.iterdir() if p.is_dir())
            for symbol_dir in sorted(p for p in market_dir.iterdir() if p.is_dir())
        ]

    def _interval_dirs(self) -> list[tuple[Path, Path, Path]]:
        return [
            (market_dir, symbol_dir, interval_dir)
            for market_dir, symbol_dir in self._symbol_dirs()
            for interval_dir in sorted(p for p in symbol_dir.iterdir() if p.is_dir())
        ]


def _write_atomic(target: Path, write: Callable[[IO[bytes]], object]) -> None:
    # Temp file in the target's folder, fsync, os.replace: readers see the old file or the
    # whole new one, never half of it, and concurrent writers of equal content both succeed.
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def _parse_first_bar(
    raw: bytes, market: MarketType, symbol: str, interval: Interval
) -> tuple[int | None, str]:
    """``(open_ms, "")`` for a valid first-bar sidecar of this series, else ``(None, why)``."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        return None, f"unreadable ({type(exc).__name__}: {exc})"
    if not isinstance(data, dict):
        return None, f"not a JSON object ({type(data).__name__})"
    series = {"market": market.value, "symbol": symbol, "interval": interval.value}
    other = {k: data.get(k) for k in series if data.get(k) != series[k]}
    if other:
        return None, f"for another series {other}, not {series}"
    first = data.get("first_open_ms")
    if isinstance(first, bool) or not isinstance(first, int) or first < 0:
        return None, f"holding an invalid first_open_ms {first!r}"
    if interval.floor_ms(first) != first:
        return None, f"holding first_open_ms {first} off the {interval.value} grid"
    return first, ""


def _sidecar_endpoint(raw: bytes) -> str | None:
    """The REST endpoint recorded in a valid sidecar, None when absent (older sidecars)."""
    endpoint = json.loads(raw).get("endpoint")
    return endpoint if isinstance(endpoint, str) else None


def _sidecar_interval(name: str) -> str | None:
    # "1m.first_bar.json" and its temp files ".1m.first_bar.<random>.tmp" -> "1m"; else None.
    if name.endswith(FIRST_BAR_SUFFIX):
        return name[: -len(FIRST_BAR_SUFFIX)]
    stem = FIRST_BAR_SUFFIX[: -len(".json")] + "."
    if name.startswith(".") and name.endswith(".tmp") and stem in name:
        return name[1 : name.index(stem)]
    return None
