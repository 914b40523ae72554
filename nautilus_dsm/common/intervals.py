"""Binance kline intervals on their grid (1s on spot only; 1M a calendar month; 1w on Mondays)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING

from nautilus_dsm.common.times import epoch_ms as _ms
from nautilus_dsm.constants import DAY_MS as _DAY_MS
from nautilus_dsm.constants import HOUR_MS as _HOUR_MS
from nautilus_dsm.constants import MINUTE_MS as _MINUTE_MS
from nautilus_dsm.constants import MONTH_PATH_LABEL
from nautilus_dsm.constants import SECOND_MS as _SECOND_MS
from nautilus_dsm.errors import InvalidInput

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from nautilus_dsm.common.markets import MarketType

# 1970-01-01 was a Thursday; Binance weekly klines open on Mondays 00:00 UTC.
_WEEK_OFFSET_MS = 4 * _DAY_MS


class Interval(Enum):
    """Binance kline intervals. ``1s`` exists on spot only; ``1M`` is a calendar month."""

    SECOND_1 = "1s"
    MINUTE_1 = "1m"
    MINUTE_3 = "3m"
    MINUTE_5 = "5m"
    MINUTE_15 = "15m"
    MINUTE_30 = "30m"
    HOUR_1 = "1h"
    HOUR_2 = "2h"
    HOUR_4 = "4h"
    HOUR_6 = "6h"
    HOUR_8 = "8h"
    HOUR_12 = "12h"
    DAY_1 = "1d"
    DAY_3 = "3d"
    WEEK_1 = "1w"
    MONTH_1 = "1M"

    @classmethod
    def parse(cls, value: Interval | str) -> Interval:
        """Parse Binance's interval string (``1m``, ``1h``, ``1M``...); case matters for m/M."""
        if isinstance(value, Interval):
            return value
        for member in cls:
            if member.value == value:
                return member
        choices = " ".join(m.value for m in cls)
        raise InvalidInput(f"unknown interval {value!r}; Binance supports: {choices}")

    @property
    def is_month(self) -> bool:
        """True for ``1M``, the only interval of calendar length."""
        return self is Interval.MONTH_1

    @property
    def fixed_ms(self) -> int:
        """Length in milliseconds; undefined for ``1M`` (calendar months differ)."""
        if self.is_month:
            raise ValueError("1M has no fixed length; use open_times()/next_open()")
        return _INTERVAL_MS[self]

    @property
    def step(self) -> int:
        """Number of units (``15`` for ``15m``)."""
        return int(self.value[:-1])

    @property
    def unit(self) -> str:
        """The unit letter (``m`` for ``15m``)."""
        return self.value[-1]

    @property
    def path_label(self) -> str:
        """The interval in Vision URLs and cache paths: ``1mo`` for ``1M``, else its value."""
        return MONTH_PATH_LABEL if self.is_month else self.value

    def check_market(self, market_type: MarketType) -> None:
        """Raise when Binance does not serve this interval on the market (1s is spot only)."""
        from nautilus_dsm.common.markets import MarketType

        if self is Interval.SECOND_1 and market_type is not MarketType.SPOT:
            raise InvalidInput(
                f"interval 1s is served on SPOT only, not {market_type.name}; "
                "use 1m or a longer interval for futures"
            )

    def floor_ms(self, ts_ms: int) -> int:
        """Open time (ms) of the bar containing ``ts_ms``."""
        if self.is_month:
            dt = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
            return _ms(datetime(dt.year, dt.month, 1, tzinfo=UTC))
        size = _INTERVAL_MS[self]
        offset = _WEEK_OFFSET_MS if self is Interval.WEEK_1 else 0
        return (ts_ms - offset) // size * size + offset

    def ceil_ms(self, ts_ms: int) -> int:
        """First bar open time at or after ``ts_ms``."""
        floor = self.floor_ms(ts_ms)
        return floor if floor == ts_ms else self.next_open_ms(floor)

    def next_open_ms(self, open_ms: int) -> int:
        """Open time of the bar after the one opening at ``open_ms`` (= its close, exclusive)."""
        if self.is_month:
            dt = datetime.fromtimestamp(open_ms / 1000, tz=UTC)
            year, month = (dt.year + 1, 1) if dt.month == 12 else (dt.year, dt.month + 1)
            return _ms(datetime(year, month, 1, tzinfo=UTC))
        return open_ms + _INTERVAL_MS[self]

    def open_times_ms(self, start_ms: int, end_ms: int) -> list[int]:
        """Every bar open time in ``[start_ms, end_ms)`` on the interval's grid."""
        if not self.is_month:
            size = _INTERVAL_MS[self]
            first = self.ceil_ms(start_ms)
            return list(range(first, end_ms, size)) if first < end_ms else []
        out: list[int] = []
        t = self.ceil_ms(start_ms)
        while t < end_ms:
            out.append(t)
            t = self.next_open_ms(t)
        return out

    def count(self, start_ms: int, end_ms: int) -> int:
        """Count the bar open times in ``[start_ms, end_ms)``."""
        if self.is_month:
            return len(self.open_times_ms(start_ms, end_ms))
        first = self.ceil_ms(start_ms)
        if first >= end_ms:
            return 0
        return (end_ms - 1 - first) // _INTERVAL_MS[self] + 1

    def on_grid_mask(self, open_ms: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """Mark (True) the epoch-ms open times that lie on this interval's grid.

        The grid is where Binance opens bars: multiples of the length from the epoch, Mondays
        00:00 UTC for ``1w``, the first of a month 00:00 UTC for ``1M``. An off-grid open time
        means the data is of another interval (or corrupt). Vectorised: a year of 1s bars is
        one pass.
        """
        import numpy as np  # markets is imported by light entry points; numpy only when used

        times = np.asarray(open_ms, dtype=np.int64)
        if self.is_month:
            months = times.astype("datetime64[ms]").astype("datetime64[M]")
            return months.astype("datetime64[ms]").astype(np.int64) == times
        size = _INTERVAL_MS[self]
        offset = _WEEK_OFFSET_MS if self is Interval.WEEK_1 else 0
        return (times - offset) % size == 0


_INTERVAL_MS: dict[Interval, int] = {
    Interval.SECOND_1: _SECOND_MS,
    Interval.MINUTE_1: _MINUTE_MS,
    Interval.MINUTE_3: 3 * _MINUTE_MS,
    Interval.MINUTE_5: 5 * _MINUTE_MS,
    Interval.MINUTE_15: 15 * _MINUTE_MS,
    Interval.MINUTE_30: 30 * _MINUTE_MS,
    Interval.HOUR_1: _HOUR_MS,
    Interval.HOUR_2: 2 * _HOUR_MS,
    Interval.HOUR_4: 4 * _HOUR_MS,
    Interval.HOUR_6: 6 * _HOUR_MS,
    Interval.HOUR_8: 8 * _HOUR_MS,
    Interval.HOUR_12: 12 * _HOUR_MS,
    Interval.DAY_1: _DAY_MS,
    Interval.DAY_3: 3 * _DAY_MS,
    Interval.WEEK_1: 7 * _DAY_MS,
}
