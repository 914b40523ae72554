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

Apart: the root and names (``cache_paths``), the state and sidecar records (``cache_state``), the
checks of a cached frame (``cache_checks``), atomic writes, ``info`` and ``clear``
(``cache_files``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import polars as pl

from nautilus_dsm.common import Interval, MarketType, check_binance_symbol
from nautilus_dsm.dsm.cache_checks import bulk_problem, frame_problem
from nautilus_dsm.dsm.cache_files import cache_info, clear_cache, describe, write_atomic
from nautilus_dsm.dsm.cache_paths import (
    FIRST_BAR_SUFFIX,
    KEY_RE,
    LOCK_SUFFIX,
    PERIOD_SUFFIX,
    PROVIDER_DIR,
    PROVISIONAL_SUFFIX,
    QUARANTINE_DIR,
    default_cache_dir,
)
from nautilus_dsm.dsm.cache_state import (
    META_KEY,
    PeriodState,
    first_bar_record,
    parse_first_bar,
    read_state_json,
    sidecar_endpoint,
)
from nautilus_dsm.dsm.locks import SeriesLock, series_lock
from nautilus_dsm.dsm.schema import COLUMNS, FRAME_SCHEMA
from nautilus_dsm.errors import CacheUnwritable, InvalidInput, SeriesLocked

log = logging.getLogger(__name__)

# A writer of one period holds the lock for milliseconds; waiting longer means a stuck peer.
LOCK_TIMEOUT_S = 30.0


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
        """Return the folder of one market / symbol / interval (checked to lie under the root)."""
        market = MarketType.parse(market)
        interval = Interval.parse(interval)
        check_binance_symbol(symbol)
        path = self.root / PROVIDER_DIR / market.value / symbol / interval.path_label
        self._check_under_root(path)
        return path

    def path(self, market: MarketType, symbol: str, interval: Interval, key: str) -> Path:
        """Return the file of one period (``key`` is ``YYYY-MM-DD`` or ``YYYY``)."""
        if not KEY_RE.match(key):
            raise InvalidInput(f"invalid cache period {key!r}; use YYYY-MM-DD or YYYY")
        return self.directory(market, symbol, interval) / f"{key}{PERIOD_SUFFIX}"

    def provisional_path(
        self, market: MarketType, symbol: str, interval: Interval, key: str
    ) -> Path:
        """Return the provisional file of one period (``{key}.provisional.parquet``)."""
        final = self.path(market, symbol, interval, key)
        return final.with_name(key + PROVISIONAL_SUFFIX)

    def first_bar_path(self, market: MarketType, symbol: str, interval: Interval) -> Path:
        """Return the first-bar sidecar of a series: ``{SYMBOL}/{interval}.first_bar.json``."""
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
        """Return a period's cached final frame; None when absent or invalid (then quarantined)."""
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
            names = {e.name for e in os.scandir(directory) if e.name.endswith(PERIOD_SUFFIX)}
        except (FileNotFoundError, NotADirectoryError):
            return None, []
        present = [k for k in keys if KEY_RE.match(k) and f"{k}{PERIOD_SUFFIX}" in names]
        if not present:
            return None, []
        files = [directory / f"{k}{PERIOD_SUFFIX}" for k in present]
        try:
            frame = pl.read_parquet(files)
            if not bulk_problem(frame, interval, present):
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
        """Return the provisional periods among ``keys``: frame and state per key.

        Invalid ones are quarantined and left out.
        """
        interval = Interval.parse(interval)
        directory = self.directory(market, symbol, interval)
        try:
            names = {e.name for e in os.scandir(directory) if e.name.endswith(PROVISIONAL_SUFFIX)}
        except (FileNotFoundError, NotADirectoryError):
            return {}
        out: dict[str, tuple[pl.DataFrame, PeriodState]] = {}
        for key in keys:
            if not KEY_RE.match(key) or f"{key}{PROVISIONAL_SUFFIX}" not in names:
                continue
            file = directory / f"{key}{PROVISIONAL_SUFFIX}"
            frame = self._read_file(file, interval, key)
            if frame is None:
                continue
            state = PeriodState.from_json(read_state_json(file), final_default=False)
            if state.final or not state.recorded:
                self._discard(file, "a provisional file without a provisional state")
                continue
            out[key] = (frame, state)
        return out

    def read_state(
        self, market: MarketType, symbol: str, interval: Interval, key: str
    ) -> PeriodState | None:
        """Return the recorded state of a final period file (None when the file is absent)."""
        file = self.path(market, symbol, interval, key)
        try:
            text = read_state_json(file)
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
        """Count a file that cannot be trusted; quarantine it if a period file, else delete it.

        Quarantine keeps the evidence to inspect, out of every later read; a sidecar is deleted.
        """
        self.corrupt += 1
        if file.name.endswith(PERIOD_SUFFIX):
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
        interval = _refuse_invalid(frame, symbol, interval, key)
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
                write_atomic(
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
                f"could not write the cache file {target} ({describe(exc)}); the bars are "
                f"served from memory but not cached: free disk space or make {self.root} "
                "writable, or pass another cache_dir (or use_cache=False)"
            ) from exc
        return target

    def lock_path(self, market: MarketType, symbol: str, interval: Interval) -> Path:
        """Return the series' advisory lock file: ``{SYMBOL}/{interval}.lock`` by its folder."""
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
        first, problem = parse_first_bar(raw, market, symbol, interval)
        if problem:
            self._discard(file, problem, "the first bar will be looked up again")
            return None
        recorded = sidecar_endpoint(raw)
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
        body = first_bar_record(market, symbol, interval, open_ms, endpoint)
        target = self.first_bar_path(market, symbol, interval)
        try:
            write_atomic(target, lambda handle: handle.write(body))
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise CacheUnwritable(
                f"could not write the first-bar sidecar {target} ({describe(exc)})"
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
        """Return the cache's size: files, provisional files and bytes, in total and per series.

        A series is one market / symbol / interval; the files in quarantine are listed too (for
        the CLI). Symbolic links are not followed.
        """
        return cache_info(self.root)

    def clear(
        self,
        market: MarketType | str | None = None,
        symbol: str | None = None,
        interval: Interval | str | None = None,
    ) -> int:
        """Delete cached periods (and first-bar sidecars) matching the filters.

        With no filter given, everything is deleted, the quarantine too. Return how many period
        files were deleted.

        Never follows a symbolic link (a link is left in place, its target untouched), and
        skips temp files that a running fetch is still writing, so it cannot break that fetch.
        """
        return clear_cache(
            self.root,
            MarketType.parse(market).value if market is not None else None,
            symbol.upper() if symbol is not None else None,
            Interval.parse(interval).path_label if interval is not None else None,
        )


def _refuse_invalid(
    frame: pl.DataFrame, symbol: str, interval: Interval | str, key: str
) -> Interval:
    """Return the parsed interval; raise :class:`InvalidInput` for an invalid frame.

    Invalid: its schema is not ``FRAME_SCHEMA``, or it cannot be the cache entry of ``key``.
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
    return interval
