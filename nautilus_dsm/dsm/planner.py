"""Planning a fetch: which periods a request covers, which are closed, and which source serves each.

Pure functions over integers (epoch milliseconds) and sets: no clock, no disk, no network, so
the failover rules are unit-tested exactly. A *period* is the unit of caching and of source
selection: the UTC day for intervals shorter than ``1d`` (one Vision daily zip, one cache file),
the UTC year for ``1d`` and longer (Vision is skipped: REST serves a year in one request).
A bar belongs to the period that contains its open time.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from nautilus_dsm.common import Interval, from_ms, to_ms
from nautilus_dsm.constants import DAY_MS

# A bar is final on Binance a moment after its close; a period is cached only once its last bar
# closed at least this long ago.
SETTLE_MS = 5_000
# A machine clock further than this from the exchange's is broken, not drifting: ranges that
# ended longer ago than this are closed on any clock (see decided_without_now).
MAX_CLOCK_SKEW_MS = DAY_MS
_FAR_END_MS = 2 * 366 * DAY_MS  # past every period close the clock can decide
_YEARLY = frozenset({Interval.DAY_1, Interval.DAY_3, Interval.WEEK_1, Interval.MONTH_1})


@dataclass(frozen=True, slots=True)
class Period:
    """Bars whose open time lies in ``[start_ms, end_ms)``: one UTC day or one UTC year."""

    start_ms: int
    end_ms: int
    yearly: bool

    @property
    def key(self) -> str:
        """Cache / display key: ``YYYY-MM-DD`` for a day, ``YYYY`` for a year."""
        dt = from_ms(self.start_ms)
        return f"{dt.year:04d}" if self.yearly else f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}"

    @property
    def day(self) -> date:
        """The UTC calendar date the period starts on."""
        return from_ms(self.start_ms).date()

    def __str__(self) -> str:
        return self.key


@dataclass(frozen=True, slots=True)
class MonthGroup:
    """A whole calendar month of daily periods, served by one Vision monthly zip."""

    year: int
    month: int
    days: tuple[Period, ...]

    @property
    def key(self) -> str:
        """The month as ``YYYY-MM``."""
        return f"{self.year:04d}-{self.month:02d}"


@dataclass(frozen=True, slots=True)
class FetchPlan:
    """Which source serves each period of a request (see :func:`plan_fetch`)."""

    cached: tuple[Period, ...] = ()
    skipped: tuple[Period, ...] = ()  # entirely before the first bar: never requested
    vision_months: tuple[MonthGroup, ...] = ()
    vision_days: tuple[Period, ...] = ()
    rest_closed: tuple[Period, ...] = ()  # whole period from REST, then cached
    open: tuple[Period, ...] = ()  # contains now: REST for the requested part, never cached
    total: int = field(default=0)
    # Closed periods cached provisionally: served from the cache, their gaps re-checked against
    # the sources that did not confirm them.
    recheck: tuple[Period, ...] = ()

    @property
    def to_fetch(self) -> int:
        """Periods that need a remote source."""
        return (
            sum(len(m.days) for m in self.vision_months)
            + len(self.vision_days)
            + len(self.rest_closed)
            + len(self.open)
            + len(self.recheck)
        )


def is_yearly(interval: Interval) -> bool:
    """Tell whether ``interval`` is ``1d`` or longer, whose period is the UTC year.

    Vision is not used for those.
    """
    return interval in _YEARLY


def period_of(interval: Interval, ts_ms: int) -> Period:
    """Return the period containing ``ts_ms``."""
    dt = from_ms(ts_ms)
    if is_yearly(interval):
        start = to_ms(datetime(dt.year, 1, 1, tzinfo=UTC))
        # The end as Dec 31 + one day: year 9999 has an end although datetime has no year 10000.
        end = to_ms(datetime(dt.year, 12, 31, tzinfo=UTC)) + DAY_MS
        return Period(start, end, yearly=True)
    start = ts_ms - ts_ms % DAY_MS
    return Period(start, start + DAY_MS, yearly=False)


def periods_for(interval: Interval, start_ms: int, end_ms: int) -> list[Period]:
    """Every period that holds a bar open time in ``[start_ms, end_ms)``, in time order."""
    out: list[Period] = []
    first = interval.ceil_ms(start_ms)
    if first >= end_ms:
        return out
    period = period_of(interval, first)
    while True:
        out.append(period)
        if period.end_ms >= end_ms:
            return out  # stop before asking for the period after year 9999's
        period = period_of(interval, period.end_ms)


def period_close_ms(interval: Interval, period: Period) -> int:
    """Close time (exclusive) of the last bar that opens in the period.

    Equal to the period end for intervals that divide a day; later for a weekly or 3-day bar
    that opens near the end of a year and closes in the next.
    """
    return interval.next_open_ms(interval.floor_ms(period.end_ms - 1))


def is_closed(interval: Interval, period: Period, now_ms: int, settle_ms: int = SETTLE_MS) -> bool:
    """Tell whether every bar of the period closed at least ``settle_ms`` before ``now_ms``."""
    return period_close_ms(interval, period) + settle_ms <= now_ms


def decided_without_now(
    interval: Interval, end_ms: int, local_now_ms: int, skew_ms: int = MAX_CLOCK_SKEW_MS
) -> bool:
    """Tell whether no "closed" decision of a request ending at ``end_ms`` depends on the clock.

    The end cap and every period's closed/open call compare a close (at most the close of the
    period holding ``end_ms - 1``, plus ``SETTLE_MS``) with "now". When that lies more than
    ``skew_ms`` before the local clock, any exchange clock within ``skew_ms`` of it decides
    the same, so a historical fetch needs no ``GET /time``.
    """
    # An end beyond any close the clock could still reach (e.g. in year 9999) decides like an
    # end two years after now: "not decided" either way, with no calendar past year 9999.
    end_ms = min(end_ms, local_now_ms + _FAR_END_MS)
    last = period_of(interval, end_ms - 1)
    return period_close_ms(interval, last) + SETTLE_MS + skew_ms <= local_now_ms


def closed_end_ms(interval: Interval, end_ms: int, now_ms: int) -> int:
    """``end_ms`` capped so only closed bars (open + interval <= now) are requested."""
    return min(end_ms, interval.floor_ms(now_ms))


def group_months(days: list[Period] | tuple[Period, ...]) -> tuple[list[MonthGroup], list[Period]]:
    """Split daily periods into whole calendar months (monthly zip) and the remaining days."""
    by_month: dict[tuple[int, int], list[Period]] = {}
    for day in days:
        d = day.day
        by_month.setdefault((d.year, d.month), []).append(day)
    months: list[MonthGroup] = []
    rest: list[Period] = []
    for (year, month), members in by_month.items():
        n_days = calendar.monthrange(year, month)[1]
        if not members[0].yearly and len({p.start_ms for p in members}) == n_days:
            months.append(MonthGroup(year, month, tuple(sorted(members, key=_start))))
        else:
            rest.extend(members)
    months.sort(key=lambda m: (m.year, m.month))
    rest.sort(key=_start)
    return months, rest


def plan_fetch(
    interval: Interval,
    periods: list[Period],
    now_ms: int,
    cached_keys: set[str] | frozenset[str],
    *,
    not_before_ms: int | None = None,
    use_vision: bool = True,
    settle_ms: int = SETTLE_MS,
    provisional_keys: set[str] | frozenset[str] = frozenset(),
) -> FetchPlan:
    """Assign each period to one source.

    Parameters
    ----------
    interval : Interval
        The kline interval.
    periods : list[Period]
        The request's periods (:func:`periods_for` over the request capped at now).
    now_ms : int
        The current time; decides which periods are closed (cacheable).
    cached_keys : set[str]
        Keys of closed periods already in the cache.
    not_before_ms : int, optional
        The first bar's open time: periods that end at or before it hold no data and are not
        requested (no search through years of 404s before a listing).
    use_vision : bool, default True
        Serve uncached closed days from Vision (a whole month from its monthly zip).
    settle_ms : int
        Margin after the last close before a period counts as closed.
    provisional_keys : set[str]
        Keys of closed periods cached provisionally (not in ``cached_keys``): planned as
        ``recheck`` (their cached bars are served, their gaps asked again).

    """
    recheck: list[Period] = []
    cached: list[Period] = []
    skipped: list[Period] = []
    closed_uncached: list[Period] = []
    open_: list[Period] = []
    for period in periods:
        closed = is_closed(interval, period, now_ms, settle_ms)
        if closed and period.key in cached_keys:
            cached.append(period)
        elif not_before_ms is not None and period.end_ms <= not_before_ms:
            skipped.append(period)
        elif closed and period.key in provisional_keys:
            recheck.append(period)
        elif closed:
            closed_uncached.append(period)
        else:
            open_.append(period)
    months: list[MonthGroup] = []
    days: list[Period] = []
    rest: list[Period] = []
    if use_vision and not is_yearly(interval):
        months, days = group_months(closed_uncached)
    else:
        rest = closed_uncached
    return FetchPlan(
        cached=tuple(cached),
        skipped=tuple(skipped),
        vision_months=tuple(months),
        vision_days=tuple(days),
        rest_closed=tuple(rest),
        open=tuple(open_),
        total=len(periods),
        recheck=tuple(recheck),
    )


def _start(period: Period) -> int:
    return period.start_ms
