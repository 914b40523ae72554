"""Exchange "now" for one fetch: Binance's clock decides which bars and periods are closed.

A fetch whose decisions cannot depend on the clock (its range ended long before any plausible
"now") makes no ``GET /time`` (:func:`~nautilus_dsm.dsm.planner.decided_without_now`). A period
that closed in the last minutes would be cached final, for good, on an offset measured before
its close; a slewed local clock can make that offset stale, so the clock is measured again
first, once per period close.
"""

from __future__ import annotations

import logging

from nautilus_dsm.common import Interval, MarketType
from nautilus_dsm.constants import MINUTE_MS
from nautilus_dsm.dsm.exchange_clock import ExchangeClock
from nautilus_dsm.dsm.planner import (
    SETTLE_MS,
    closed_end_ms,
    decided_without_now,
    is_closed,
    period_close_ms,
    periods_for,
)

log = logging.getLogger(__name__)

# A period that closed less than this before exchange-now is decided closed (and cached final)
# only on a measurement of the exchange's clock taken after its close (see prove_recent).
RECENT_CLOSE_MS = 10 * MINUTE_MS


async def fetch_now_ms(clock: ExchangeClock, local_ms: int, interval: Interval, end_ms: int) -> int:
    """
    Return exchange "now" for a fetch ending at ``end_ms``.

    No ``GET /time`` is made when no decision depends on it.

    Parameters
    ----------
    clock : ExchangeClock
        The market's exchange clock.
    local_ms : int
        The local clock now (epoch ms).
    interval : Interval
        The fetch's interval.
    end_ms : int
        The fetch's requested end (exclusive, epoch ms).

    Returns
    -------
    int

    """
    # A local clock stepped ahead may make a range look long closed: decide without it.
    local = local_ms - max(0, clock.step_ms())
    if decided_without_now(interval, end_ms, local):
        return clock.now_ms()
    return await clock.ensure()


async def prove_recent(
    clock: ExchangeClock,
    market: MarketType,
    interval: Interval,
    start_ms: int,
    end_ms: int,
    now_ms: int,
) -> int:
    """
    Return exchange "now", re-measured when a recent close would be decided on a stale offset.

    It is re-measured when a period that closed in the last minutes would be decided closed
    (and cached as final, for good) on an offset measured before its close.

    A slewed local clock (NTP's gradual correction; ``time.monotonic()`` moves with it, so
    no step shows) can make the offset stale by more than the slew margin between two
    scheduled measurements. A fresh ``GET /time`` decides instead, once per period close:
    after it, the exchange's own reading proves the close and nothing is asked again.

    Parameters
    ----------
    clock : ExchangeClock
        The market's exchange clock.
    market : MarketType
        The market (named in the debug log).
    interval : Interval
        The fetch's interval.
    start_ms, end_ms : int
        The fetch's requested range (epoch ms).
    now_ms : int
        Exchange "now" as :func:`fetch_now_ms` decided it.

    Returns
    -------
    int

    """
    if not clock.can_force():
        return now_ms
    stop_ms = max(start_ms, closed_end_ms(interval, end_ms, now_ms))
    for period in periods_for(interval, start_ms, stop_ms):
        close_ms = period_close_ms(interval, period)
        if (
            is_closed(interval, period, now_ms)
            and close_ms > now_ms - RECENT_CLOSE_MS
            and not clock.proves_closed(close_ms + SETTLE_MS)
        ):
            log.debug(
                "%s %s: %s closed %d ms ago by an offset measured before; measuring again",
                market.name,
                interval.value,
                period.key,
                now_ms - close_ms,
            )
            return await clock.refresh()
    return now_ms
