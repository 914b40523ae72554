"""The cache's file system: atomic writes, temp files being written, ``info`` and ``clear``.

Writes are atomic: a temp file in the target's folder, locked while written (POSIX advisory
lock), fsync, ``os.replace``. A killed process never leaves half a file, two processes writing
the same file both succeed, and ``clear`` skips a temp file another process is still writing
(without advisory locks it skips temp files younger than an hour). ``info`` and ``clear`` walk
the cache without ever following a symbolic link: a link is logged and left in place, its
target untouched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from nautilus_dsm.common.datasets import Dataset
from nautilus_dsm.dsm.cache_paths import (
    LOCK_SUFFIX,
    PERIOD_SUFFIX,
    PROVIDER_DIR,
    PROVISIONAL_SUFFIX,
    QUARANTINE_DIR,
    period_key,
    sidecar_interval,
)
from nautilus_dsm.dsm.cache_selection import (
    CachedPeriod,
    CachePlan,
    CacheSelection,
    plan_selection,
)

try:  # advisory locks mark a temp file as being written (POSIX); elsewhere clear() ages them
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

# Without advisory locks, a temp file younger than this may still be being written.
_TMP_STALE_S = 3600.0


# -- writes -----------------------------------------------------------------------------------


def write_atomic(target: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write ``target`` atomically: ``write(handle)`` into a locked temp file, then replace.

    Readers see the old file or the whole new one, never half of it, and concurrent writers of
    equal content both succeed. A folder or temp file removed under us (``clear`` between mkdir
    and mkstemp) is retried rather than surfacing ``FileNotFoundError``.
    """
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


def describe(exc: BaseException) -> str:
    """Return an OS error as ``strerror [errno n]``, anything else as ``Type: message``."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} [errno {exc.errno}]"
    return f"{type(exc).__name__}: {exc}"


def unlink_unless_busy(path: Path) -> bool:
    """Return True when a temp file may be deleted (the caller deletes it).

    It may when no writer holds its lock (or, without advisory locks, it is older than an hour).
    """
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


# -- walking ----------------------------------------------------------------------------------


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
    """Return True (and log it) when a top-level cache folder is a symbolic link.

    clear/info never follow it, so files outside the cache root are neither deleted nor counted.
    """
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


def _symbol_dirs(root: Path, provider_dir: str = PROVIDER_DIR) -> list[tuple[Path, Path]]:
    base = root / provider_dir
    if _is_link(base) or not base.is_dir():
        return []
    return [
        (Path(market_dir.path), Path(symbol_dir.path))
        for market_dir in sorted(_dirs(base), key=lambda e: e.name)
        for symbol_dir in sorted(_dirs(Path(market_dir.path)), key=lambda e: e.name)
    ]


def _interval_dirs(root: Path, provider_dir: str = PROVIDER_DIR) -> list[tuple[Path, Path, Path]]:
    return [
        (market_dir, symbol_dir, Path(interval_dir.path))
        for market_dir, symbol_dir in _symbol_dirs(root, provider_dir)
        for interval_dir in sorted(_dirs(symbol_dir), key=lambda e: e.name)
    ]


# -- info and clear ---------------------------------------------------------------------------

#: The cache folders of the kline-shaped datasets: klines' ``binance`` first, then the mark,
#: index and premium-index price klines' ``binance-<dataset>`` beside it.
DATASET_DIRS: tuple[str, ...] = tuple(d.cache_dir for d in Dataset if d.is_kline)
#: The funding cache's folder, and the interval column its months show.
FUNDING_DIR, FUNDING_INTERVAL = Dataset.FUNDING_RATES.cache_dir, "-"


def list_periods(
    root: Path,
    selection: CacheSelection | None = None,
    provider_dirs: tuple[str, ...] | None = None,
) -> list[CachedPeriod]:
    """Return the period files under ``root`` of the series ``selection`` can pick.

    All series when None; with their recorded gap counts when it is ``gaps_only``. Links are
    not followed. ``provider_dirs`` are the dataset folders to list (``binance`` holds klines,
    ``binance-mark_price_klines`` and the like the other kline-shaped datasets).
    """
    selection = selection or CacheSelection()
    out: list[CachedPeriod] = []
    dirs = DATASET_DIRS if provider_dirs is None else provider_dirs
    for provider_dir in dirs:
        out += _list_provider(root, selection, provider_dir)
    if PROVIDER_DIR in dirs:  # the funding months go with the klines cache
        out += _list_funding(root, selection)
    return out


def _list_funding(root: Path, selection: CacheSelection) -> list[CachedPeriod]:
    # Funding months (<market>/<symbol>/YYYY-MM.parquet) have no interval ("-"); only complete
    # months are cached, so a gaps-only selection never picks one.
    out: list[CachedPeriod] = []
    for market_dir, symbol_dir in _symbol_dirs(root, FUNDING_DIR):
        if not selection.has_series(market_dir.name, symbol_dir.name, FUNDING_INTERVAL):
            continue
        for entry in _entries(symbol_dir):
            name = entry.name
            if not (entry.is_file(follow_symlinks=False) and name.endswith(".parquet")):
                continue
            try:
                size = entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                continue
            key = name.removesuffix(".parquet")
            if len(key) != 7:
                continue  # not a month file (a temporary)
            out.append(
                CachedPeriod(
                    market_dir.name,
                    symbol_dir.name,
                    FUNDING_INTERVAL,
                    key,
                    False,
                    size,
                    Path(entry.path),
                    None,
                    FUNDING_DIR,
                )
            )
    return out


def _list_provider(root: Path, selection: CacheSelection, provider_dir: str) -> list[CachedPeriod]:
    out: list[CachedPeriod] = []
    for market_dir, symbol_dir, interval_dir in _interval_dirs(root, provider_dir):
        if not selection.has_series(market_dir.name, symbol_dir.name, interval_dir.name):
            continue
        for entry in _entries(interval_dir):
            if not (entry.is_file(follow_symlinks=False) and entry.name.endswith(PERIOD_SUFFIX)):
                continue
            path = Path(entry.path)
            provisional = entry.name.endswith(PROVISIONAL_SUFFIX)
            try:
                size = entry.stat(follow_symlinks=False).st_size
                gaps = _recorded_gaps(path, provisional) if selection.gaps_only else None
            except FileNotFoundError:
                continue  # deleted meanwhile (a concurrent clear)
            out.append(
                CachedPeriod(
                    market_dir.name,
                    symbol_dir.name,
                    interval_dir.name,
                    period_key(entry.name),
                    provisional,
                    size,
                    path,
                    gaps,
                    provider_dir,
                )
            )
    return out


def _recorded_gaps(path: Path, provisional: bool) -> int:
    # Imported here: the state is in the parquet footer (polars), which info/clear need only
    # for --gaps-only; `nautilus-dsm cache` starts without polars otherwise.
    from nautilus_dsm.dsm.cache_state import PeriodState, read_state_json

    state = PeriodState.from_json(read_state_json(path), final_default=not provisional)
    return len(state.gaps)


def quarantined_files(root: Path) -> int:
    """Return how many files the quarantine holds."""
    return len(_walk_files(root / QUARANTINE_DIR, top=True))


def cache_info(
    root: Path,
    selection: CacheSelection | None = None,
    provider_dirs: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Return the size of the selected periods (all when None), in total and per series.

    Sizes are files, provisional files and bytes per market / symbol / interval, and the files
    in quarantine (for the CLI). Symbolic links are not followed. Entries of a dataset folder
    other than ``binance`` (klines) carry a ``dataset`` key naming it.
    """
    selection = selection or CacheSelection()
    plan = plan_selection(root, list_periods(root, selection, provider_dirs), selection)
    return plan.to_dict(quarantined_files(root))


def clear_selected(plan: CachePlan, provider_dirs: tuple[str, ...] | None = None) -> int:
    """
    Delete what a plan selected; return how many period files were deleted.

    A selection of whole series (no time range, not ``gaps_only``) clears them as
    :func:`clear_cache` does (first-bar sidecars, idle locks, the quarantine when nothing
    narrows it); otherwise only the planned period files go, so the next fetch gets exactly
    those periods again.

    Parameters
    ----------
    plan : CachePlan
        What :func:`list_periods` + :func:`plan_selection` selected.
    provider_dirs : tuple[str, ...], optional
        The dataset folders a whole-series selection clears (as listed for the plan); every
        kline-shaped dataset's by default, and then the funding months of the series too.

    Returns
    -------
    int

    """
    selection = plan.selection
    if selection.whole_series:
        names = (selection.market, selection.symbol, selection.interval)
        dirs = DATASET_DIRS if provider_dirs is None else provider_dirs
        removed = sum(clear_cache(plan.root, *names, provider_dir=d) for d in dirs)
        if PROVIDER_DIR in dirs:  # funding months are not plan periods: whole series only
            removed += clear_funding(plan.root, *names)
        return removed
    return delete_periods(plan)


def delete_periods(plan: CachePlan) -> int:
    """Delete the period files of ``plan``; return how many were deleted.

    A file gone meanwhile is skipped; series folders left empty go too. First-bar sidecars and
    locks stay.
    """
    removed = 0
    for period in plan.periods:
        with contextlib.suppress(FileNotFoundError):
            period.path.unlink()
            removed += 1
    for series in plan.series:
        folder = plan.root / series.provider / series.market / series.symbol / series.interval
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty
    return removed


def clear_cache(
    root: Path,
    market_name: str | None,
    symbol_name: str | None,
    interval_name: str | None,
    provider_dir: str = PROVIDER_DIR,
) -> int:
    """Delete the period files (and sidecars, idle locks) matching the folder names given.

    With no name given, everything is deleted, the quarantine too. Return how many period
    files were deleted.
    """
    removed = 0
    for market_dir, symbol_dir in _symbol_dirs(root, provider_dir):
        if market_name is not None and market_dir.name != market_name:
            continue
        if symbol_name is not None and symbol_dir.name != symbol_name:
            continue
        removed += _clear_symbol(symbol_dir, interval_name)
        with contextlib.suppress(OSError):
            symbol_dir.rmdir()  # only when empty
    if market_name is None and symbol_name is None and interval_name is None:
        for file in _walk_files(root / QUARANTINE_DIR, top=True):
            with contextlib.suppress(FileNotFoundError):
                file.unlink()
    return removed


def _clear_symbol(symbol_dir: Path, interval_name: str | None) -> int:
    """Clear a symbol folder's interval folders, first-bar sidecars and idle series locks."""
    removed = 0
    for entry in sorted(_entries(symbol_dir), key=lambda e: e.name):
        if entry.is_symlink():
            log.warning("cache clear: %s is a symbolic link; not followed", entry)
        elif entry.is_dir():
            if interval_name is not None and entry.name != interval_name:
                continue
            removed += _clear_folder(Path(entry.path))
        elif (
            sidecar_interval(entry.name) is not None
            and (interval_name is None or sidecar_interval(entry.name) == interval_name)
            and (not entry.name.endswith(".tmp") or unlink_unless_busy(Path(entry.path)))
        ):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
        elif (
            entry.name.endswith(LOCK_SUFFIX)
            and (interval_name is None or entry.name == interval_name + LOCK_SUFFIX)
            and unlink_unless_busy(Path(entry.path))
        ):
            # An idle series lock goes with its series (a held one stays: its writer is
            # running); the next writer creates it again.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
    return removed


def _clear_folder(folder: Path) -> int:
    """Delete an interval folder's period files and stale temp files; the count of periods."""
    removed = 0
    for entry in _entries(folder):
        if not entry.is_file(follow_symlinks=False):
            continue  # links and folders are not ours to delete
        path = Path(entry.path)
        if entry.name.endswith(PERIOD_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
        elif entry.name.endswith(".tmp") and unlink_unless_busy(path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    with contextlib.suppress(OSError):
        folder.rmdir()  # only when empty (a temp file being written keeps it)
    return removed


def clear_funding(
    root: Path, market_name: str | None, symbol_name: str | None, interval_name: str | None
) -> int:
    """
    Delete cached funding months matching the filters.

    Funding has no interval: an interval filter keeps them.
    """
    if interval_name is not None:
        return 0
    base = root / Dataset.FUNDING_RATES.cache_dir
    removed = 0
    if base.is_symlink() or not base.is_dir():
        return 0
    for file in sorted(base.glob("*/*/*.parquet")):
        market_dir, symbol_dir = file.parent.parent.name, file.parent.name
        if market_name not in (None, market_dir) or symbol_name not in (None, symbol_dir):
            continue
        if file.is_symlink() or file.parent.is_symlink() or file.parent.parent.is_symlink():
            continue
        with contextlib.suppress(FileNotFoundError):
            file.unlink()
            removed += 1
    return removed
