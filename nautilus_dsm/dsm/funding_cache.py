"""The funding cache: one parquet file per market / symbol / closed, complete month.

Layout: ``{root}/binance-funding_rates/{market}/{SYMBOL}/{YYYY-MM}.parquet`` beside the kline
cache (``{root}/binance/...``, unchanged). Only a closed month whose own quality report has no
gap and no unknown interval is written (such a month is what Vision and REST will serve again),
so the cache never freezes a partial month; any other month is fetched again by every later
fetch. Writes are atomic (temp file + fsync + ``os.replace``); a file that cannot be read back
or does not hold FUNDING_SCHEMA rows of its month is deleted and reported absent.
"""

from __future__ import annotations

import contextlib
import logging
import re
from pathlib import Path

import polars as pl

from nautilus_dsm.common import MarketType, check_binance_symbol
from nautilus_dsm.common.datasets import Dataset
from nautilus_dsm.dsm.cache_files import describe, write_atomic
from nautilus_dsm.dsm.funding_schema import FUNDING_COLUMNS, FUNDING_SCHEMA
from nautilus_dsm.errors import CacheUnwritable, InvalidInput

log = logging.getLogger(__name__)

_MONTH_RE = re.compile(r"^[0-9]{4}-[0-9]{2}$")


class FundingCache:
    """
    Parquet cache of closed, complete funding months.

    Parameters
    ----------
    root : Path
        The cache root shared with the kline cache.

    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser()
        self.corrupt = 0

    def path(self, market: MarketType, symbol: str, month: str) -> Path:
        """Return the file of one month (``month`` is ``YYYY-MM``)."""
        check_binance_symbol(symbol)
        if not _MONTH_RE.match(month):
            raise InvalidInput(f"invalid funding cache month {month!r}; use YYYY-MM")
        market = MarketType.parse(market)
        return (
            self.root / Dataset.FUNDING_RATES.cache_dir / market.value / symbol / f"{month}.parquet"
        )

    def read(
        self, market: MarketType, symbol: str, month: str, start_ms: int, end_ms: int
    ) -> pl.DataFrame | None:
        """Return the cached month, or None when absent or invalid (then deleted, fetched again)."""
        file = self.path(market, symbol, month)
        try:
            frame = pl.read_parquet(file)
        except FileNotFoundError:
            return None
        except Exception as exc:  # truncated / not parquet
            self._discard(file, f"unreadable ({type(exc).__name__})")
            return None
        if frame.schema != pl.Schema(FUNDING_SCHEMA):
            self._discard(file, "not FUNDING_SCHEMA")
            return None
        times = frame.get_column("funding_time").dt.epoch("ms")
        if frame.height == 0 or times.min() < start_ms or times.max() >= end_ms:  # type: ignore[operator]
            self._discard(file, "empty or holding rows outside its month")
            return None
        return frame

    def write(self, market: MarketType, symbol: str, month: str, frame: pl.DataFrame) -> Path:
        """
        Atomically write one month.

        Raises
        ------
        CacheUnwritable
            When the file cannot be written.

        """
        target = self.path(market, symbol, month)
        try:
            write_atomic(
                target,
                lambda handle: frame.select(FUNDING_COLUMNS).write_parquet(
                    handle, compression="zstd"
                ),
            )
        except (OSError, pl.exceptions.PolarsError) as exc:
            raise CacheUnwritable(
                f"could not write the funding cache file {target} ({describe(exc)}); the rows "
                "are served from memory but not cached"
            ) from exc
        return target

    def _discard(self, file: Path, why: str) -> None:
        self.corrupt += 1
        log.warning("funding cache file %s is %s; deleted, fetched again", file, why)
        with contextlib.suppress(FileNotFoundError):
            file.unlink()
