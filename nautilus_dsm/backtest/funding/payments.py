"""Funding of perpetuals, the pure part: events from catalog rows, the payment, the records.

At every funding boundary a position pays or receives::

    linear  : -signed_quantity x multiplier x mark x rate     (settlement currency, e.g. USDT)
    inverse : -signed_quantity x multiplier / mark x rate     (base currency, e.g. BTC)

so longs pay positive rates and shorts receive them. Amounts are exact rationals rounded once,
half-even, to the currency's precision (see :func:`funding_payment`). ``FundingRateUpdate``
rows are validated into :class:`FundingEvent` by :func:`funding_events`; what was booked is kept
as :class:`FundingPayment`, :class:`FundingTotals` and :class:`FundingReport` (JSON in the
engine's cache, read back by :func:`funding_report`). The simulation module that settles them
is :mod:`nautilus_dsm.backtest.funding.module`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

from nautilus_trader.cache.cache import Cache
from nautilus_trader.model.data import BarType, FundingRateUpdate
from nautilus_trader.model.enums import OrderSide, PriceType
from nautilus_trader.model.identifiers import Venue

from nautilus_dsm.common.times import iso_ns
from nautilus_dsm.constants import HOUR_MS, MINUTE_MS, NS_PER_MS, VENUE
from nautilus_dsm.errors import FundingSettlementError

__all__ = [
    "CACHE_KEY_PREFIX",
    "DEFAULT_MARK_BAR_SPEC",
    "MARK_FALLBACKS",
    "FundingEvent",
    "FundingPayment",
    "FundingReport",
    "FundingTotals",
    "funding_events",
    "funding_payment",
    "funding_report",
    "mark_bar_type",
    "signed_quantity_at",
]

DEFAULT_MARK_BAR_SPEC = "1-MINUTE-MARK-EXTERNAL"
"""The MARK bar specification the module reads by default (Binance ``markPriceKlines`` 1m)."""

MARK_FALLBACKS = ("last", "raise")
"""``"last"``: use the last traded price where no MARK bar closes at a boundary;
``"raise"``: raise :class:`~nautilus_dsm.errors.FundingSettlementError` instead."""

CACHE_KEY_PREFIX = "nautilus_dsm.funding"
"""The module stores its report in the engine's cache under ``f"{CACHE_KEY_PREFIX}.{venue}"``."""

_NS_PER_MINUTE = MINUTE_MS * NS_PER_MS
_NS_PER_HOUR = HOUR_MS * NS_PER_MS


# --------------------------------------------------------------------------------------------
# Pure arithmetic and validation
# --------------------------------------------------------------------------------------------


def funding_payment(
    signed_quantity: Decimal,
    mark: Decimal,
    rate: Decimal,
    *,
    precision: int,
    inverse: bool = False,
    multiplier: Decimal = Decimal(1),
) -> Decimal:
    """
    Return the account adjustment of one position at one funding event.

    Parameters
    ----------
    signed_quantity : Decimal
        The position quantity in contracts, positive long, negative short.
    mark : Decimal
        The mark price at the funding boundary (must be positive).
    rate : Decimal
        The funding rate of the event (e.g. ``Decimal("0.00010000")``).
    precision : int
        The settlement currency's precision (decimals) to round the amount to.
    inverse : bool, default False
        True for inverse (COIN-M) contracts: the notional is ``quantity x multiplier / mark`` in
        the base currency; False for linear ones: ``quantity x multiplier x mark`` in the quote
        (settlement) currency.
    multiplier : Decimal, default 1
        The contract multiplier (1 for Binance USD-M, 100 USD for BTCUSD_PERP).

    Returns
    -------
    Decimal
        The amount to add to the account: negative when the position pays. Exact: computed on
        rationals and rounded once, **half-even**, to ``precision`` decimals. Half-even (banker's
        rounding) because over the thousands of payments of a long backtest it has no bias,
        whereas half-up would drift the sum by up to half a unit per tie; ties are rare with
        8-decimal currencies, but the sum then stays reproducible and unbiased either way.

    Raises
    ------
    FundingSettlementError
        If ``mark`` is not positive, a value is not finite, or ``precision`` is negative.
    """
    if precision < 0:
        raise FundingSettlementError(f"precision={precision} must be >= 0")
    values = {"signed_quantity": signed_quantity, "mark": mark, "rate": rate}
    values["multiplier"] = multiplier
    for name, value in values.items():
        if not isinstance(value, Decimal) or not value.is_finite():
            raise FundingSettlementError(f"{name}={value!r} must be a finite Decimal")
    if mark <= 0:
        raise FundingSettlementError(f"mark={mark} must be positive to settle funding")
    quantity = Fraction(signed_quantity) * Fraction(multiplier)
    notional = quantity / Fraction(mark) if inverse else quantity * Fraction(mark)
    amount = -notional * Fraction(rate)
    # round() of a Fraction rounds half to even, exactly.
    units = round(amount * 10**precision)
    return Decimal(units).scaleb(-precision)


@dataclass(frozen=True)
class FundingEvent:
    """One funding event of an instrument, validated: exact rate, ``ts_event`` on a boundary."""

    ts_event: int
    rate: Decimal
    interval_minutes: int | None = None
    next_funding_ns: int | None = None


def funding_events(
    instrument_id: str,
    rows: Iterable[FundingRateUpdate],
    where: str = "the catalog",
) -> list[FundingEvent]:
    """
    Validate ``FundingRateUpdate`` rows of one instrument into sorted funding events.

    Parameters
    ----------
    instrument_id : str
        The instrument the rows belong to (named in errors).
    rows : Iterable[FundingRateUpdate]
        The rows, in any order. ``rate`` may be a ``Decimal`` or, as the 1.231 catalog reads it
        back, a ``str``; it is taken exactly (never through a float).
    where : str
        Where the rows come from (named in errors).

    Returns
    -------
    list[FundingEvent]
        The events sorted by ``ts_event``.

    Raises
    ------
    FundingSettlementError
        If a rate is not a finite decimal, an event lies off its funding boundary (a multiple of
        its interval since the epoch, or of one hour when the interval is unknown), or two rows
        share a boundary.
    """
    events: dict[int, FundingEvent] = {}
    for row in rows:
        ts = int(row.ts_event)
        try:
            rate = Decimal(str(row.rate))
        except InvalidOperation:
            rate = Decimal("NaN")
        if not rate.is_finite():
            raise FundingSettlementError(
                f"funding row of {instrument_id} at {iso_ns(ts)} in {where} has rate={row.rate!r}, "
                "not a finite decimal; re-ingest the funding rates"
            )
        interval = int(row.interval) if row.interval else None
        step = interval * _NS_PER_MINUTE if interval else _NS_PER_HOUR
        if ts % step:
            raise FundingSettlementError(
                f"funding row of {instrument_id} at {iso_ns(ts)} in {where} is off its funding "
                f"boundary (interval {interval or 60} min); floor calc_time to the boundary "
                "when ingesting (nautilus-dsm's funding ingest does)"
            )
        if ts in events:
            raise FundingSettlementError(
                f"{where} holds two funding rows of {instrument_id} at {iso_ns(ts)}; ingest each "
                "funding event exactly once (remove the duplicate file)"
            )
        next_ns = int(row.next_funding_ns) if row.next_funding_ns else None
        events[ts] = FundingEvent(ts, rate, interval, next_ns)
    return [events[ts] for ts in sorted(events)]


def signed_quantity_at(position: Any, ts: int) -> Decimal:
    """Return a position's signed quantity after its fills stamped at or before ``ts``.

    Positive long, negative short: each fill adds its ``last_qty`` when it buys and subtracts
    it when it sells; fills stamped after ``ts`` do not count.
    """
    signed = Decimal(0)
    for fill in position.events:
        if fill.ts_event > ts:
            break
        quantity = fill.last_qty.as_decimal()
        signed += quantity if fill.order_side == OrderSide.BUY else -quantity
    return signed


def mark_bar_type(instrument_id: str, mark_bar_spec: str = DEFAULT_MARK_BAR_SPEC) -> BarType:
    """
    Return the MARK bar type the module reads for ``instrument_id``.

    Raises
    ------
    FundingSettlementError
        If the spec does not parse or its price type is not ``MARK``.
    """
    text = f"{instrument_id}-{mark_bar_spec}"
    try:
        bar_type = BarType.from_str(text)
    except ValueError as exc:
        raise FundingSettlementError(
            f"mark_bar_spec={mark_bar_spec!r} does not form a bar type ({text}): {exc}; use a "
            f"spec like {DEFAULT_MARK_BAR_SPEC!r}"
        ) from None
    if bar_type.spec.price_type != PriceType.MARK:
        raise FundingSettlementError(
            f"mark_bar_spec={mark_bar_spec!r} is not a MARK price spec; use a spec like "
            f"{DEFAULT_MARK_BAR_SPEC!r}"
        )
    return bar_type


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FundingPayment:
    """One funding payment booked on the account (``amount`` < 0: the position paid)."""

    instrument_id: str
    ts_event: int
    ts_settled: int
    rate: Decimal
    mark: Decimal
    mark_source: str  # "mark" (MARK bar close at the boundary) or "last" (last traded price)
    position_id: str
    signed_quantity: Decimal
    amount: Decimal
    currency: str


@dataclass
class FundingTotals:
    """The funding of one instrument over a run."""

    instrument_id: str
    currency: str | None = None
    payments: int = 0
    total: Decimal = Decimal(0)
    events: int = 0
    events_without_position: int = 0
    mark_price_events: int = 0
    last_price_events: int = 0

    def summary(self) -> str:
        """One line: payments, total (negative: paid) and where the mark prices came from."""
        total = f"{self.total} {self.currency}" if self.currency else "0"
        return (
            f"Funding {self.instrument_id}: {self.payments} payments, total {total} over "
            f"{self.events} events ({self.events_without_position} without position); mark "
            f"price from MARK bars {self.mark_price_events}x, last traded price "
            f"{self.last_price_events}x"
        )


@dataclass
class FundingReport:
    """What a :class:`FundingRateModule` booked on one venue: totals and every payment."""

    venue: str
    totals: dict[str, FundingTotals] = field(default_factory=dict)
    payments: list[FundingPayment] = field(default_factory=list)

    def to_json(self) -> bytes:
        """Return the report as JSON (decimals as strings, exactly)."""

        def encode(value: Any) -> Any:
            if isinstance(value, Decimal):
                return str(value)
            raise TypeError(type(value))

        body = {
            "venue": self.venue,
            "totals": {k: asdict(v) for k, v in self.totals.items()},
            "payments": [asdict(p) for p in self.payments],
        }
        return json.dumps(body, default=encode).encode()

    @classmethod
    def from_json(cls, data: bytes) -> FundingReport:
        """Rebuild a report written by :meth:`to_json`."""
        body = json.loads(data)
        totals = {}
        for key, raw in body["totals"].items():
            raw["total"] = Decimal(raw["total"])
            totals[key] = FundingTotals(**raw)
        payments = []
        for raw in body["payments"]:
            for name in ("rate", "mark", "signed_quantity", "amount"):
                raw[name] = Decimal(raw[name])
            payments.append(FundingPayment(**raw))
        return cls(body["venue"], totals, payments)


def funding_report(cache: Cache, venue: str | Venue = VENUE) -> FundingReport | None:
    """
    Return the report a :class:`FundingRateModule` stored in an engine's cache, if any.

    The module stores it when the engine logs its post-run diagnostics (``engine.run()`` /
    ``BacktestNode.run()``), so this works with a ``BacktestNode`` too, where the module object
    itself is out of reach: ``funding_report(node.get_engine(run_id).cache)``.
    """
    data = cache.get(f"{CACHE_KEY_PREFIX}.{venue}")
    return FundingReport.from_json(data) if data else None
