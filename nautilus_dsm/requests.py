"""History requests of the data client: which bars answer a ``RequestBars``, and fetching them.

The pure parts (:func:`plan_bar_request`, :func:`steps_back_ms`, :func:`check_bar_type`,
:func:`timestamp_ns`) decide from a request's ``start``/``end``/``limit`` and "now" which
closed bars answer it; they do no I/O and are unit-tested alone. :func:`fetch_for_plan` fetches
a plan through the data-source manager (widening a ``limit``-narrowed window after a source
gap) and :func:`bars_to_serve` turns the result into the bars served; both log through the
client's logger what they changed or found (gaps, refused rows, synthetic fills).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nautilus_trader.common.enums import LogColor

from nautilus_dsm.bars import convert_frame, interval_for
from nautilus_dsm.common import (
    Interval,
    MarketType,
    ResolvedInstrument,
    from_ms,
    iso_ms,
    iso_ns,
    resolve_instrument,
    to_ms,
)
from nautilus_dsm.constants import DAY_MS, NS_PER_MS
from nautilus_dsm.errors import DSMError, InvalidInput, QualityBelowThreshold
from nautilus_dsm.gaps import describe_invalid, fill_synthetic, format_gaps
from nautilus_dsm.refusals import bar_type_refusal

if TYPE_CHECKING:
    from datetime import datetime

    from nautilus_trader.model.data import Bar, BarType
    from nautilus_trader.model.instruments import Instrument

    from nautilus_dsm.dsm.manager import DataSourceManager, FetchResult
    from nautilus_dsm.dsm.settings import SourceSettings

__all__ = [
    "DEFAULT_REQUEST_LIMIT",
    "BarRequestPlan",
    "bars_to_serve",
    "check_bar_type",
    "fetch_for_plan",
    "listed_from",
    "plan_bar_request",
    "request_now_ns",
    "steps_back_ms",
    "timestamp_ns",
]

# A request with neither start nor limit gets Binance's own default page: the last 500 bars.
DEFAULT_REQUEST_LIMIT = 500
# A request ending longer ago than this cannot depend on the exchange clock's offset.
_DAY_NS = DAY_MS * NS_PER_MS


# ---------------------------------------------------------------------------------------------
# Pure planning
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BarRequestPlan:
    """What a bar request resolves to: the open times to fetch and how many bars to keep.

    ``[start_ms, end_ms)`` are bar open times. Bars are events at their close (``ts_init``), so
    a request ``[start, end]`` is answered with the bars whose close lies in ``(start, end]``:
    the data engine's ``ts_init`` filter never drops one of ours silently, and adjacent requests
    ``[a, b]``, ``[b, c]`` (or the engine's continuation from ``b + 1ns``) neither repeat nor
    lose the bar closing at ``b``. ``notes`` are the changes made to the request, for the log.
    ``full_start_ms`` is the request's own first open time when a ``limit`` narrowed the fetch
    to the last ``limit`` intervals: source gaps there leave fewer than ``limit`` bars, and the
    missing ones are then the earlier bars from ``full_start_ms`` on (None when not narrowed).
    """

    start_ms: int
    end_ms: int
    limit: int
    notes: tuple[str, ...] = ()
    full_start_ms: int | None = None

    @property
    def is_empty(self) -> bool:
        """Return whether no closed bar lies in the planned window."""
        return self.start_ms >= self.end_ms


def steps_back_ms(interval: Interval, open_ms: int, n: int) -> int:
    """Return the open time ``n`` bars before the bar opening at ``open_ms`` (months for 1M)."""
    if not interval.is_month:
        return open_ms - n * interval.fixed_ms
    t = open_ms
    for _ in range(n):
        t = interval.floor_ms(t - 1)
    return t


def plan_bar_request(
    interval: Interval,
    start_ns: int | None,
    end_ns: int | None,
    limit: int,
    now_ns: int,
) -> BarRequestPlan:
    """Resolve a request's ``start``/``end``/``limit`` to the closed bars that answer it.

    The bars served are those closing in ``(start, end]`` (see :class:`BarRequestPlan`).
    ``end`` is clamped to now (only closed bars exist); a ``limit`` keeps the last ``limit``
    bars before ``end``, so with a ``start`` too the fetch starts no earlier than ``limit`` bars
    before ``end`` (nothing before is fetched only to be dropped), and with no ``start`` the
    start is derived as ``limit`` bars before ``end``; with neither, the last
    ``DEFAULT_REQUEST_LIMIT`` bars are served. A narrowed start keeps the request's own start
    in ``full_start_ms``. Raises ``InvalidInput`` for a negative limit.
    """
    if limit < 0:
        raise InvalidInput(f"limit {limit} is negative; pass 0 (no limit) or a positive count")
    notes: list[str] = []
    full_start_ms: int | None = None
    if end_ns is None:
        end_ns = now_ns
    elif end_ns > now_ns:
        notes.append(
            f"clamped end from {iso_ns(end_ns)} to now {iso_ns(now_ns)} (only closed bars exist)"
        )
        end_ns = now_ns
    # The last bar to serve must close at or before end: opens strictly before floor(end).
    end_ms = interval.floor_ms(end_ns // NS_PER_MS)
    if start_ns is None:
        if limit == 0:
            limit = DEFAULT_REQUEST_LIMIT
            notes.append(f"no start and no limit: serving the last {limit} bars")
        start_ms = steps_back_ms(interval, end_ms, limit)
        notes.append(f"start derived from limit={limit}: {iso_ms(start_ms)}")
    else:
        # The first bar closing after start is the one containing start (close > start).
        start_ms = interval.floor_ms(start_ns // NS_PER_MS)
        if limit:
            last_start_ms = steps_back_ms(interval, end_ms, limit)
            if last_start_ms > start_ms:
                notes.append(
                    f"limit={limit} keeps the last {limit} bars: fetching from "
                    f"{iso_ms(last_start_ms)} instead of {iso_ms(start_ms)}"
                )
                full_start_ms = start_ms
                start_ms = last_start_ms
    return BarRequestPlan(
        start_ms=start_ms,
        end_ms=end_ms,
        limit=limit,
        notes=tuple(notes),
        full_start_ms=full_start_ms,
    )


def timestamp_ns(value: datetime | None) -> int | None:
    """Return a request's ``start``/``end`` as exact epoch nanoseconds (None passes through).

    ``pandas.Timestamp`` keeps its nanoseconds; a naive datetime raises ``InvalidInput``.
    """
    if value is None:
        return None
    if hasattr(value, "value"):  # pandas.Timestamp: exact nanoseconds
        return int(value.value)
    if value.tzinfo is None:
        raise InvalidInput(f"naive datetime {value.isoformat()}; pass a UTC-aware datetime")
    delta = value - from_ms(0)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def check_bar_type(
    bar_type: BarType, market_type: MarketType | None
) -> tuple[Interval, ResolvedInstrument]:
    """
    Return the interval and instrument a bar type names, or raise before any I/O.

    Parameters
    ----------
    bar_type : BarType
        An ``EXTERNAL`` bar type of a Binance interval (``BTCUSDT.BINANCE-1-MINUTE-LAST-EXTERNAL``).
    market_type : MarketType, optional
        The client's market restriction (None: the market follows from the instrument id).

    Raises
    ------
    InvalidInput
        For a price type other than LAST or an ``INTERNAL`` bar type (the text of
        :func:`nautilus_dsm.refusals.bar_type_refusal`), a step no Binance interval has, an
        instrument of another market (``MarketTypeMismatch``), or an interval the market does
        not serve.

    """
    refusal = bar_type_refusal(bar_type)  # a price type other than LAST, or INTERNAL
    if refusal is not None:
        raise InvalidInput(refusal)
    interval = interval_for(bar_type)
    resolved = resolve_instrument(bar_type.instrument_id.value, market_type)
    interval.check_market(resolved.market_type)
    return interval, resolved


def listed_from(report: Any) -> int:
    """Return the first open time the source can have (its listing), or -1 when unknown."""
    listing_ms = ms_or_none(report.listing_time)
    return -1 if listing_ms is None else listing_ms


def ms_or_none(value: Any) -> int | None:
    """Return a report timestamp (epoch ms or aware datetime) as exact epoch ms."""
    if value is None:
        return None
    if isinstance(value, int):
        return value
    return to_ms(value)


# ---------------------------------------------------------------------------------------------
# Fetching and answering
# ---------------------------------------------------------------------------------------------


async def request_now_ns(
    dsm: DataSourceManager, market_type: MarketType, end_ns: int | None, local_ns: int
) -> int:
    """Return exchange "now" for planning a request, in epoch nanoseconds.

    It decides what is closed and where a limit counts back from. The exchange clock is
    measured first (when due) if the request reaches within a day of now (``local_ns``); a
    request wholly in the past needs no measurement (its plan cannot depend on the clock). A
    failed measurement never fails the request: the known offset stays.
    """
    if end_ns is None or end_ns > local_ns - _DAY_NS:
        with contextlib.suppress(DSMError):
            await dsm.exchange_now_ms(market_type)
    local_ms = local_ns // NS_PER_MS
    exchange_ms = dsm.exchange_clock(market_type).now_ms(local_ms)
    return exchange_ms * NS_PER_MS + (local_ns - local_ms * NS_PER_MS)


async def fetch_for_plan(
    dsm: DataSourceManager,
    bar_type: BarType,
    resolved: ResolvedInstrument,
    interval: Interval,
    plan: BarRequestPlan,
    *,
    source: SourceSettings,
    synthetic_fallback: bool,
    log: Any,
) -> tuple[int, FetchResult]:
    """
    Fetch the plan's window; widen a narrowed one to the request's own start if needed.

    A ``limit`` narrows the fetch to the last ``limit`` intervals, which is enough only when
    the source has every bar there. After a source gap the last ``limit`` bars reach further
    back, so the request is fetched again from its own start instead of serving fewer bars, or
    none when the small window alone falls below ``min_completeness``. The quality policy
    (``source.min_completeness`` / ``source.on_low_quality``) then judges what is served: the
    share of the ``limit`` bars asked for (or of all the range can hold, if fewer) that exist,
    not gaps long before them.

    Returns
    -------
    tuple[int, FetchResult]
        The first open time fetched and the result.

    Raises
    ------
    QualityBelowThreshold
        When the bars served fall below ``min_completeness`` under ``on_low_quality="raise"``.

    """

    async def fetch(start_ms: int, min_completeness: float) -> FetchResult:
        return await dsm.fetch(
            resolved.instrument_id,
            interval,
            from_ms(start_ms),
            from_ms(plan.end_ms),
            min_completeness=min_completeness,
            on_low_quality=source.on_low_quality,
        )

    if plan.full_start_ms is None:
        return plan.start_ms, await fetch(plan.start_ms, source.min_completeness)
    try:
        result = await fetch(plan.start_ms, source.min_completeness)
    except QualityBelowThreshold as e:
        narrowed = e.result
        reason = "is below min_completeness"
        if narrowed is None or listed_from(narrowed.report) >= plan.start_ms:
            raise  # nothing earlier exists (or nothing to judge by): the verdict stands
    else:
        short = result.frame.height < plan.limit and not synthetic_fallback
        if not short or listed_from(result.report) >= plan.start_ms:
            return plan.start_ms, result
        narrowed = result
        reason = "has gaps"
    gaps = narrowed.report.gaps
    log.info(
        f"{bar_type}: the last {plan.limit} intervals hold {narrowed.frame.height} bars "
        f"(window {reason}; gaps: {format_gaps(gaps) if gaps else 'none'}); fetching again "
        f"from the requested start {iso_ms(plan.full_start_ms)} to serve the "
        f"last {plan.limit} bars",
        LogColor.BLUE,
    )
    # Judged below on the bars served, not on gaps long before them.
    result = await fetch(plan.full_start_ms, 0.0)
    _judge_widened(result, plan, source, bar_type, log)
    return plan.full_start_ms, result


def _judge_widened(
    result: FetchResult, plan: BarRequestPlan, source: SourceSettings, bar_type: BarType, log: Any
) -> None:
    """Apply the quality policy to the last ``limit`` bars of a widened fetch."""
    assert plan.full_start_ms is not None  # only a narrowed plan is widened
    wanted = min(plan.limit, result.report.expected_bars)
    served = min(result.frame.height, plan.limit)
    completeness = served / wanted if wanted else 1.0
    min_completeness = source.min_completeness
    if completeness < min_completeness:
        message = (
            f"only {served} of the last {plan.limit} bars requested exist in "
            f"[{iso_ms(plan.full_start_ms)}, {iso_ms(plan.end_ms)}) "
            f"({completeness:.2%} < min_completeness {min_completeness:.2%}); pass "
            f"min_completeness={math.floor(completeness * 100) / 100:.2f} or "
            "on_low_quality='warn' to accept them"
        )
        if source.on_low_quality == "raise":
            raise QualityBelowThreshold(message, result=result)
        log.warning(f"{bar_type}: {message}")


def bars_to_serve(
    result: FetchResult,
    plan: BarRequestPlan,
    fetch_start_ms: int,
    bar_type: BarType,
    interval: Interval,
    instrument: Instrument,
    *,
    synthetic_fallback: bool,
    log: Any,
) -> list[Bar]:
    """
    Return the bars that answer the request, logging the gaps, fills and refused rows.

    The fetched frame is filled with SYNTHETIC bars when ``synthetic_fallback`` is on, cut to
    the plan's last ``limit`` bars, and converted with the instrument's precision; rows that
    cannot be bars are logged as an error and left out.
    """
    report = result.report
    if report.gaps:
        log.warning(
            f"{bar_type}: {report.bars}/{report.expected_bars} bars "
            f"({report.completeness:.4%}), gaps: {format_gaps(report.gaps)}"
        )
    frame = result.frame
    if synthetic_fallback:
        frame, _ = fill_synthetic(
            frame,
            bar_type,
            interval,
            fetch_start_ms,
            plan.end_ms,
            previous_close=None,
            first_open_ms=ms_or_none(report.listing_time),
            report=report,
            log=log,
        )
    if plan.limit and frame.height > plan.limit:
        frame = frame.tail(plan.limit)
    conversion = convert_frame(frame, bar_type, instrument)
    if conversion.invalid.height:
        log.error(
            f"{bar_type}: {conversion.invalid.height} of {conversion.rows} klines could not "
            f"be converted and are not served: {describe_invalid(conversion.invalid)}"
        )
    log.info(
        f"{bar_type}: serving {len(conversion.bars)} bars "
        f"[{iso_ms(fetch_start_ms)}, {iso_ms(plan.end_ms)}) sources={report.sources}",
        LogColor.BLUE,
    )
    return conversion.bars
