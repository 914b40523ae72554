"""The kline cache: one parquet file per market / symbol / interval / closed period.

Layout: ``{root}/binance/{market}/{SYMBOL}/{interval}/{YYYY-MM-DD | YYYY}.parquet`` (``1mo``
for ``1M``, so it never shares a folder with ``1m`` on case-insensitive file systems). Only
closed periods are written. A *final* file (``{key}.parquet``) is immutable: it holds every bar
the grid expects, or its missing bars were confirmed missing by two sources; its parquet
key-value metadata (``nautilus_dsm``) records those gaps and the sources that confirmed them.
Anything else is *provisional* (``{key}.provisional.parquet``, same metadata, status
``provisional``): served, and re-checked by every later fetch against every enabled source
(lacking ones too). Files written before states were recorded (no metadata) read as final with an
unrecorded state; the manager re-checks such a file when it is short. Writes are atomic (temp
file in the same directory, locked while written, fsync, ``os.replace``): a killed process never
leaves half a file, two processes writing the same period both succeed with identical content,
and ``clear`` skips a temp file another process is still writing. A file that cannot be read
back, or whose rows fail validation (schema, nulls, open times on the grid and inside the
period, unique, ``close_time``), is counted, moved to ``{root}/quarantine/`` and reported absent,
so it is fetched again instead of trusted. A failed write (read-only directory, disk full) is a
:class:`CacheUnwritable`, which the manager turns into a warning. ``clear`` and ``info`` never
follow a symbolic link.
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
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
import platformdirs
import polars as pl

from nautilus_dsm.common import Interval, MarketType, check_binance_symbol, from_ms, to_ms
from nautilus_dsm.dsm.locks import SeriesLock, series_lock
from nautilus_dsm.dsm.schema import COLUMNS, FRAME_SCHEMA
from nautilus_dsm.errors import CacheUnwritable, InvalidInput, SeriesLocked

try:  # advisory locks mark a temp file as being written (POSIX); elsewhere clear() ages them
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("nautilus_dsm.dsm")

PROVIDER_DIR = "binance"
_KEY_RE = re.compile(r"^[0-9]{4}(-[0-9]{2}-[0-9]{2})?$")
_SUFFIX = ".parquet"
# Sidecar beside a series folder ("1m" -> "1m.first_bar.json"): the open time of the series'
# first bar ever (its listing). Beside, not inside, so a series folder holds only periods.
FIRST_BAR_SUFFIX = ".first_bar.json"
PROVISIONAL_SUFFIX = ".provisional.parquet"
# Beside a series folder ("1m" -> "1m.lock"): the advisory lock its writers take (flock).
LOCK_SUFFIX = ".lock"
# A writer of one period holds the lock for milliseconds; waiting longer means a stuck peer.
LOCK_TIMEOUT_S = 30.0
# Parquet key-value metadata key holding a period's state (JSON, see PeriodState).
META_KEY = "nautilus_dsm"
QUARANTINE_DIR = "quarantine"
# Without advisory locks, a temp file younger than this may still be being written.
_TMP_STALE_S = 3600.0
_DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class PeriodGap:
    """Bars missing from a cached period: open times in ``[start_ms, end_ms)``.

    ``missing_in`` holds the source tags whose answer for these bars lacked them
    (``vision_monthly``, ``vision``, ``rest``); empty when unknown (a file written before states
    were recorded).
    """

    start_ms: int
    end_ms: int
    missing_in: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PeriodState:
    """How far a cached period can be trusted: final or provisional, with its gaps.

    ``recorded`` is False for a file without state metadata (written before states existed):
    read as final, but its gaps are unknown.
    """

    final: bool
    gaps: tuple[PeriodGap, ...] = ()
    recorded: bool = True

    def to_json(self) -> str:
        return json.dumps(
            {
                "v": 1,
                "status": "final" if self.final else "provisional",
                "gaps": [[g.start_ms, g.end_ms, list(g.missing_in)] for g in self.gaps],
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | None, *, final_default: bool) -> PeriodState:
        """The state in a file's metadata; unrecorded (final_default) when absent or unreadable."""
        if text is None:
            return cls(final=final_default, recorded=False)
        try:
            data = json.loads(text)
            status = data["status"]
            gaps = tuple(
                PeriodGap(int(lo), int(hi), tuple(str(t) for t in tags))
                for lo, hi, tags in data.get("gaps", [])
            )
        except (ValueError, KeyError, TypeError):
            return cls(final=final_default, recorded=False)
        if status not in ("final", "provisional"):
            return cls(final=final_default, recorded=False)
        return cls(final=status == "final", gaps=gaps)


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

    def __init__(
        self, root: Path | str | None = None, *, lock_timeout_s: float = LOCK_TIMEOUT_S
    ) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        self.lock_timeout_s = lock_timeout_s
        self.corrupt = 0  # files found unreadable / invalid and discarded
        self.quarantined = 0  # period files among them moved to {root}/quarantine/

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

    def provisional_path(
        self, market: MarketType, symbol: str, interval: Interval, key: str
    ) -> Path:
        """The provisional file of one period (``{key}.provisional.parquet``)."""
        final = self.path(market, symbol, interval, key)
        return final.with_name(key + PROVISIONAL_SUFFIX)

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
        """The cached final frame of one period, or None when absent or invalid (quarantined)."""
        interval = Interval.parse(interval)
        return self._read_file(self.path(market, symbol, interval, key), interval, key)

    def read_many(
        self, market: MarketType, symbol: str, interval: Interval, keys: list[str]
    ) -> tuple[pl.DataFrame | None, list[str]]:
        """Read many final periods at once: the concatenated frame and the keys that were cached.

        One ``pl.read_parquet`` over all present files (a warm year of 1m bars loads in a
        fraction of a second), validated as a whole; if that fails, each file is read and
        validated alone so one bad file only costs its own period. A file that vanishes between
        listing and reading (``cache clear``, another process) is a miss.
        """
        interval = Interval.parse(interval)
        directory = self.directory(market, symbol, interval)
        try:
            names = {e.name for e in os.scandir(directory) if e.name.endswith(_SUFFIX)}
        except (FileNotFoundError, NotADirectoryError):
            return None, []
        present = [k for k in keys if _KEY_RE.match(k) and f"{k}{_SUFFIX}" in names]
        if not present:
            return None, []
        files = [directory / f"{k}{_SUFFIX}" for k in present]
        try:
            frame = pl.read_parquet(files)
            if not _bulk_problem(frame, interval, present):
                return frame, present
        except Exception:  # any unreadable or vanished file: fall back to one by one
            pass
        frames: list[pl.DataFrame] = []
        hits: list[str] = []
        for key, file in zip(present, files, strict=True):
            one = self._read_file(file, interval, key)
            if one is not None:
                frames.append(one)
                hits.append(key)
        return (pl.concat(frames) if frames else None), hits

    def read_provisional(
        self, market: MarketType, symbol: str, interval: Interval, keys: list[str]
    ) -> dict[str, tuple[pl.DataFrame, PeriodState]]:
        """The provisional periods among ``keys``: frame and state per key (invalid ones are
        quarantined and left out)."""
        interval = Interval.parse(interval)
        directory = self.directory(market, symbol, interval)
        try:
            names = {e.name for e in os.scandir(directory) if e.name.endswith(PROVISIONAL_SUFFIX)}
        except (FileNotFoundError, NotADirectoryError):
            return {}
        out: dict[str, tuple[pl.DataFrame, PeriodState]] = {}
        for key in keys:
            if not _KEY_RE.match(key) or f"{key}{PROVISIONAL_SUFFIX}" not in names:
                continue
            file = directory / f"{key}{PROVISIONAL_SUFFIX}"
            frame = self._read_file(file, interval, key)
            if frame is None:
                continue
            state = PeriodState.from_json(_metadata(file), final_default=False)
            if state.final or not state.recorded:
                self._discard(file, "a provisional file without a provisional state")
                continue
            out[key] = (frame, state)
        return out

    def read_state(
        self, market: MarketType, symbol: str, interval: Interval, key: str
    ) -> PeriodState | None:
        """The recorded state of a final period file (None when the file is absent)."""
        file = self.path(market, symbol, interval, key)
        try:
            text = _metadata(file)
        except FileNotFoundError:
            return None
        return PeriodState.from_json(text, final_default=True)

    def _read_file(self, file: Path, interval: Interval, key: str) -> pl.DataFrame | None:
        try:
            frame = pl.read_parquet(file)
        except FileNotFoundError:
            return None
        except Exception as exc:  # truncated / not parquet: refetch
            self._discard(file, f"unreadable ({type(exc).__name__}: {exc})")
            return None
        problem = frame_problem(frame, interval, key)
        if problem:
            self._discard(file, problem)
            return None
        return frame

    def _discard(
        self, file: Path, why: str, then: str = "the period will be fetched again"
    ) -> None:
        """Count a file that cannot be trusted; move a period file to quarantine (evidence to
        inspect, out of every later read), delete a sidecar."""
        self.corrupt += 1
        if file.name.endswith(_SUFFIX):
            target = self._quarantine_target(file)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(file, target)
            except FileNotFoundError:
                return
            except OSError as exc:  # read-only cache: leave it, it is refused on every read
                log.warning("cache file %s is %s; could not quarantine it (%s)", file, why, exc)
                return
            self.quarantined += 1
            log.warning("cache file %s is %s; moved to %s, %s", file, why, target, then)
            return
        log.warning("cache file %s is %s; deleted, %s", file, why, then)
        with contextlib.suppress(FileNotFoundError):
            file.unlink()

    def _quarantine_target(self, file: Path) -> Path:
        try:
            relative = file.relative_to(self.root)
        except ValueError:
            relative = Path(file.name)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{time.time_ns() % 10**9:09d}"
        return self.root / QUARANTINE_DIR / relative.parent / f"{file.name}.{stamp}"

    # -- write ---------------------------------------------------------------------------

    def write(
        self,
        market: MarketType,
        symbol: str,
        interval: Interval,
        key: str,
        frame: pl.DataFrame,
        *,
        state: PeriodState | None = None,
    ) -> Path:
        """Atomically write one closed period (temp file + fsync + ``os.replace``).

        ``state`` None writes a final file without recorded state (as before states existed);
        a final state also removes the period's provisional file, a provisional state writes
        ``{key}.provisional.parquet``.

        Raises
        ------
        CacheUnwritable
            When the file cannot be written (read-only directory, disk full, permissions).

        """
        if frame.schema != pl.Schema(FRAME_SCHEMA):
            raise InvalidInput(
                f"refusing to cache {symbol} {key}: frame schema {dict(frame.schema)} is not "
                "FRAME_SCHEMA; build frames with nautilus_dsm.dsm.schema"
            )
        interval = Interval.parse(interval)
        problem = frame_problem(frame, interval, key)
        if problem:
            raise InvalidInput(f"refusing to cache {symbol} {interval.value} {key}: {problem}")
        final = state is None or state.final
        if final:
            target = self.path(market, symbol, interval, key)
        else:
            target = self.provisional_path(market, symbol, interval, key)
        metadata = {META_KEY: state.to_json()} if state is not None else None
        final_path = self.path(market, symbol, interval, key)
        try:
            # One writer per series at a time (another process may be settling the same
            # period): the final/provisional decision and the files it touches stay consistent.
            with self._series_lock(market, symbol, interval):
                if not final and final_path.exists():
                    return final_path  # another writer completed the period: final wins
                _write_atomic(
                    target,
                    lambda handle: frame.select(COLUMNS).write_parquet(
                        handle, compression="zstd", statistics=True, metadata=metadata
                    ),
                )
                if final:
                    with contextlib.suppress(FileNotFoundError):
                        target.with_name(key + PROVISIONAL_SUFFIX).unlink()
        except SeriesLocked as exc:
            raise CacheUnwritable(
                f"could not write the cache file {target}: {exc}; the bars are served from "
                "memory but not cached"
            ) from exc
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise CacheUnwritable(
                f"could not write the cache file {target} ({_describe(exc)}); the bars are "
                f"served from memory but not cached: free disk space or make {self.root} "
                "writable, or pass another cache_dir (or use_cache=False)"
            ) from exc
        return target

    def lock_path(self, market: MarketType, symbol: str, interval: Interval) -> Path:
        """The series' advisory lock file: ``{SYMBOL}/{interval}.lock`` beside its folder."""
        directory = self.directory(market, symbol, interval)
        return directory.with_name(directory.name + LOCK_SUFFIX)

    def _series_lock(self, market: MarketType, symbol: str, interval: Interval) -> SeriesLock:
        path = self.lock_path(market, symbol, interval)
        path.parent.mkdir(parents=True, exist_ok=True)
        return series_lock(
            None,
            str(path),
            timeout_s=self.lock_timeout_s,
            what=f"cache series {MarketType.parse(market).value} {symbol} {interval.value}",
        )

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
        try:
            _write_atomic(target, lambda handle: handle.write(body))
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise CacheUnwritable(
                f"could not write the first-bar sidecar {target} ({_describe(exc)})"
            ) from exc
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
        """Files, provisional files and bytes in total and per market / symbol / interval, and
        the files in quarantine (for the CLI). Symbolic links are not followed."""
        entries: list[dict[str, Any]] = []
        for market_dir, symbol_dir, interval_dir in self._interval_dirs():
            files = [
                f
                for f in _entries(interval_dir)
                if f.is_file(follow_symlinks=False) and f.name.endswith(_SUFFIX)
            ]
            if not files:
                continue
            keys = sorted(_period_key(f.name) for f in files)
            entries.append(
                {
                    "market": market_dir.name,
                    "symbol": symbol_dir.name,
                    "interval": interval_dir.name,
                    "files": len(files),
                    "provisional": sum(f.name.endswith(PROVISIONAL_SUFFIX) for f in files),
                    "bytes": sum(f.stat().st_size for f in files),
                    "first": keys[0],
                    "last": keys[-1],
                }
            )
        return {
            "root": str(self.root),
            "files": sum(e["files"] for e in entries),
            "provisional": sum(e["provisional"] for e in entries),
            "bytes": sum(e["bytes"] for e in entries),
            "quarantined": len(_walk_files(self.root / QUARANTINE_DIR, top=True)),
            "entries": entries,
        }

    def clear(
        self,
        market: MarketType | str | None = None,
        symbol: str | None = None,
        interval: Interval | str | None = None,
    ) -> int:
        """Delete cached periods (and first-bar sidecars) matching the filters (all when none
        given, the quarantine too); return how many period files were deleted.

        Never follows a symbolic link (a link is left in place, its target untouched), and
        skips temp files that a running fetch is still writing, so it cannot break that fetch.
        """
        market_name = MarketType.parse(market).value if market is not None else None
        symbol_name = symbol.upper() if symbol is not None else None
        interval_name = _dir_name(Interval.parse(interval)) if interval is not None else None
        removed = 0
        for market_dir, symbol_dir in self._symbol_dirs():
            if market_name is not None and market_dir.name != market_name:
                continue
            if symbol_name is not None and symbol_dir.name != symbol_name:
                continue
            for entry in sorted(_entries(symbol_dir), key=lambda e: e.name):
                if entry.is_symlink():
                    log.warning("cache clear: %s is a symbolic link; not followed", entry)
                elif entry.is_dir():
                    if interval_name is not None and entry.name != interval_name:
                        continue
                    removed += _clear_folder(Path(entry.path))
                elif (
                    _sidecar_interval(entry.name) is not None
                    and (interval_name is None or _sidecar_interval(entry.name) == interval_name)
                    and (not entry.name.endswith(".tmp") or _unlink_unless_busy(Path(entry.path)))
                ):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                elif (
                    entry.name.endswith(LOCK_SUFFIX)
                    and (interval_name is None or entry.name == interval_name + LOCK_SUFFIX)
                    and _unlink_unless_busy(Path(entry.path))
                ):
                    # An idle series lock goes with its series (a held one stays: its writer
                    # is running); the next writer creates it again.
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
            with contextlib.suppress(OSError):
                symbol_dir.rmdir()  # only when empty
        if market_name is None and symbol_name is None and interval_name is None:
            for file in _walk_files(self.root / QUARANTINE_DIR, top=True):
                with contextlib.suppress(FileNotFoundError):
                    file.unlink()
        return removed

    def _symbol_dirs(self) -> list[tuple[Path, Path]]:
        base = self.root / PROVIDER_DIR
        if _is_link(base) or not base.is_dir():
            return []
        return [
            (Path(market_dir.path), Path(symbol_dir.path))
            for market_dir in sorted(_dirs(base), key=lambda e: e.name)
            for symbol_dir in sorted(_dirs(Path(market_dir.path)), key=lambda e: e.name)
        ]

    def _interval_dirs(self) -> list[tuple[Path, Path, Path]]:
        return [
            (market_dir, symbol_dir, Path(interval_dir.path))
            for market_dir, symbol_dir in self._symbol_dirs()
            for interval_dir in sorted(_dirs(symbol_dir), key=lambda e: e.name)
        ]


def _entries(folder: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            return list(it)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _dirs(folder: Path) -> list[os.DirEntry[str]]:
    # Real directories only: a symlinked market / symbol / interval folder is never followed.
    entries = _entries(folder)
    for entry in entries:
        if entry.is_symlink():
            log.warning("cache: %s is a symbolic link; not followed", entry.path)
    return [e for e in entries if e.is_dir(follow_symlinks=False)]


def _is_link(path: Path) -> bool:
    """True (and logged) when a top-level cache folder is a symbolic link: clear/info never
    follow it, so files outside the cache root are neither deleted nor counted."""
    if path.is_symlink():
        log.warning("cache: %s is a symbolic link; not followed (its target is left alone)", path)
        return True
    return False


def _walk_files(folder: Path, *, top: bool = False) -> list[Path]:
    out: list[Path] = []
    if top and _is_link(folder):
        return out
    for entry in _entries(folder):
        if entry.is_dir(follow_symlinks=False):
            out.extend(_walk_files(Path(entry.path)))
        elif entry.is_file(follow_symlinks=False):
            out.append(Path(entry.path))
    return out


def _clear_folder(folder: Path) -> int:
    """Delete an interval folder's period files and stale temp files; the count of periods."""
    removed = 0
    for entry in _entries(folder):
        if not entry.is_file(follow_symlinks=False):
            continue  # links and folders are not ours to delete
        path = Path(entry.path)
        if entry.name.endswith(_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
        elif entry.name.endswith(".tmp") and _unlink_unless_busy(path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    with contextlib.suppress(OSError):
        folder.rmdir()  # only when empty (a temp file being written keeps it)
    return removed


def _unlink_unless_busy(path: Path) -> bool:
    """True when a temp file may be deleted: no writer holds its lock (or, without advisory
    locks, it is older than an hour)."""
    if fcntl is None:  # pragma: no cover - Windows
        try:
            return time.time() - path.stat().st_mtime > _TMP_STALE_S
        except FileNotFoundError:
            return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.info("cache clear: %s is being written; skipped", path)
        return False
    finally:
        os.close(fd)  # closing releases the probe's lock
    return True


def _write_atomic(target: Path, write: Callable[[IO[bytes]], object]) -> None:
    # Temp file in the target's folder, locked while written (so clear() skips it), fsync,
    # os.replace: readers see the old file or the whole new one, never half of it, and
    # concurrent writers of equal content both succeed. A folder or temp file removed under us
    # (clear() between mkdir and mkstemp) is retried rather than surfacing FileNotFoundError.
    for attempt in range(3):
        try:
            _write_once(target, write)
            return
        except FileNotFoundError:
            if attempt == 2:
                raise


def _write_once(target: Path, write: Callable[[IO[bytes]], object]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
            os.replace(tmp_name, target)  # still locked: clear() never deletes it mid-write
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} [errno {exc.errno}]"
    return f"{type(exc).__name__}: {exc}"


def _metadata(file: Path) -> str | None:
    """The state JSON in a parquet file's key-value metadata (None when absent)."""
    try:
        return pl.read_parquet_metadata(file).get(META_KEY)
    except FileNotFoundError:
        raise
    except Exception:  # unreadable footer: the frame read decides whether the file is bad
        return None


def _period_key(name: str) -> str:
    if name.endswith(PROVISIONAL_SUFFIX):
        return name[: -len(PROVISIONAL_SUFFIX)]
    return name[: -len(_SUFFIX)]


def period_bounds(key: str) -> tuple[int, int]:
    """``[start_ms, end_ms)`` of a cache key: a UTC day (``YYYY-MM-DD``) or year (``YYYY``)."""
    if len(key) == 4:
        year = int(key)
        return (
            to_ms(datetime(year, 1, 1, tzinfo=UTC)),
            to_ms(datetime(year + 1, 1, 1, tzinfo=UTC)),
        )
    day = datetime.strptime(key, "%Y-%m-%d").replace(tzinfo=UTC)
    start = to_ms(day)
    return start, start + _DAY_MS


def frame_problem(frame: pl.DataFrame, interval: Interval, key: str) -> str:
    """Why a frame cannot be the cache entry of period ``key``; "" when it can.

    Exactly the frame schema, no nulls, open times unique, ascending, on the interval's grid and
    inside the period, and ``close_time`` the open time of the next bar minus 1 ms.
    """
    if frame.schema != pl.Schema(FRAME_SCHEMA):
        return f"wrong schema {dict(frame.schema)}"
    if frame.height == 0:
        return ""
    nulls = int(frame.null_count().sum_horizontal().item())
    if nulls:
        return f"holding {nulls} null value(s)"
    opens = frame.get_column("open_time").dt.epoch("ms").to_numpy()
    closes = frame.get_column("close_time").dt.epoch("ms").to_numpy()
    lo, hi = period_bounds(key)
    if int(opens.min()) < lo or int(opens.max()) >= hi:
        return f"holding open times outside the period {key}"
    return _grid_problem(opens, closes, interval)


def _grid_problem(opens: np.ndarray, closes: np.ndarray, interval: Interval) -> str:
    if len(opens) > 1 and not bool(np.all(np.diff(opens) > 0)):
        return "holding repeated or unsorted open times"
    if not bool(interval.on_grid_mask(opens).all()):
        return f"holding open times off the {interval.value} grid"
    if interval.is_month:
        nexts = np.array([interval.next_open_ms(int(t)) for t in opens], dtype=np.int64)
    else:
        nexts = opens + interval.fixed_ms
    if not bool(np.all(closes == nexts - 1)):
        return f"holding close times that are not open time + {interval.value} - 1 ms"
    return ""


def _bulk_problem(frame: pl.DataFrame, interval: Interval, keys: list[str]) -> str:
    """:func:`frame_problem` for the concatenation of the files of ``keys`` (in key order)."""
    if frame.schema != pl.Schema(FRAME_SCHEMA):
        return "wrong schema"
    if frame.height == 0:
        return ""
    if any(len(k) == 4 for k in keys):
        return "yearly periods are checked file by file"  # few files: take the exact path
    if int(frame.null_count().sum_horizontal().item()):
        return "nulls"
    opens = frame.get_column("open_time").dt.epoch("ms").to_numpy()
    closes = frame.get_column("close_time").dt.epoch("ms").to_numpy()
    problem = _grid_problem(opens, closes, interval)
    if problem:
        return problem
    # Every row inside one of the files' days; with ascending unique times this leaves only a
    # bar filed under the wrong present day, which is still a correct bar. The times ascend,
    # so the distinct days are where the day number changes (O(n), no sort).
    days = opens // _DAY_MS
    distinct = {int(days[0]), *days[1:][np.diff(days) != 0].tolist()}
    if not distinct <= {period_bounds(k)[0] // _DAY_MS for k in keys}:
        return "outside"
    return ""


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
