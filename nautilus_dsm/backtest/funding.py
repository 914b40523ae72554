"""Funding settlement for perpetuals in NautilusTrader 1.231 backtests.

NautilusTrader 1.231's backtest engine settles no funding; its extension point is the
``SimulationModule`` (an ``Actor`` the simulated exchange calls with every datum it processes,
``pre_process``, and once per timestamp after orders have settled, ``process``).
:class:`FundingRateModule` is such a module. It reads the funding events
(``FundingRateUpdate`` rows) and, when present, the MARK bars of each perpetual from a
``ParquetDataCatalog`` named in its config, and at every funding boundary books, for every
position open at that boundary::

    linear  : -signed_quantity x multiplier x mark x rate     (settlement currency, e.g. USDT)
    inverse : -signed_quantity x multiplier / mark x rate     (base currency, e.g. BTC)

so longs pay positive rates and shorts receive them. Amounts are exact rationals rounded once,
half-even, to the currency's precision (see :func:`funding_payment`).

Why read the catalog rather than the replayed data: in 1.231 a bar-execution venue aborts on
replayed MARK bars (``RuntimeError: invalid PriceType, was 5`` in the matching engine), and a
``FundingRateUpdate`` replayed through ``BacktestDataConfig`` never reaches a module's
``pre_process``. Reading the catalog gives the module every boundary up front, with nothing
for the venue to choke on.

When an event is settled
------------------------
An event at boundary ``B`` of instrument ``X`` settles at the first of:

- ``process(ts_now)`` with ``ts_now == B`` once data of ``X`` stamped ``B`` has been processed
  (fills at ``B`` have then happened: a position opened at ``B`` pays at ``B``);
- ``pre_process(data)`` / ``process(ts_now)`` with a time after ``B`` (data of ``X`` at ``B`` is
  missing).

Either way the positions charged are those *held at* ``B``: open at ``B`` or closed after it,
each with its signed quantity rebuilt from its fills stamped at or before ``B`` (a strategy timer
or a latency model can trade between ``B`` and a late settlement; those fills don't count).

The mark price is the close of the MARK bar stamped ``B`` (the bar whose close is the boundary)
when the catalog holds that bar type, otherwise (policy ``"last"``) the last traded price: the
close of the last LAST bar (or the last trade tick) of ``X`` processed at or before ``B``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

from nautilus_trader.backtest.config import SimulationModuleConfig
from nautilus_trader.backtest.modules import SimulationModule
from nautilus_trader.cache.cache import Cache
from nautilus_trader.config import ImportableActorConfig
from nautilus_trader.core.data import Data
from nautilus_trader.model.data import Bar, BarType, FundingRateUpdate, TradeTick
from nautilus_trader.model.enums import OrderSide, PositionSide, PriceType
from nautilus_trader.model.identifiers import InstrumentId, Venue
from nautilus_trader.model.instruments import CryptoPerpetual
from nautilus_trader.model.objects import FIXED_PRECISION, Money, Price
from nautilus_trader.persistence.catalog import ParquetDataCatalog

from nautilus_dsm.errors import FundingSettlementError

DEFAULT_MARK_BAR_SPEC = "1-MINUTE-MARK-EXTERNAL"
"""The MARK bar specification the module reads by default (Binance ``markPriceKlines`` 1m)."""

MARK_FALLBACKS = ("last", "raise")
"""``"last"``: use the last traded price where no MARK bar closes at a boundary;
``"raise"``: raise :class:`~nautilus_dsm.errors.FundingSettlementError` instead."""

CACHE_KEY_PREFIX = "nautilus_dsm.funding"
"""The module stores its report in the engine's cache under ``f"{CACHE_KEY_PREFIX}.{venue}"``."""

_NS_PER_MINUTE = 60_000_000_000
_NS_PER_HOUR = 60 * _NS_PER_MINUTE


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
                f"funding row of {instrument_id} at {_iso(ts)} in {where} has rate={row.rate!r}, "
                "not a finite decimal; re-ingest the funding rates"
            )
        interval = int(row.interval) if row.interval else None
        step = interval * _NS_PER_MINUTE if interval else _NS_PER_HOUR
        if ts % step:
            raise FundingSettlementError(
                f"funding row of {instrument_id} at {_iso(ts)} in {where} is off its funding "
                f"boundary (interval {interval or 60} min); floor calc_time to the boundary "
                "when ingesting (nautilus-dsm's funding ingest does)"
            )
        if ts in events:
            raise FundingSettlementError(
                f"{where} holds two funding rows of {instrument_id} at {_iso(ts)}; ingest each "
                "funding event exactly once (remove the duplicate file)"
            )
        next_ns = int(row.next_funding_ns) if row.next_funding_ns else None
        events[ts] = FundingEvent(ts, rate, interval, next_ns)
    return [events[ts] for ts in sorted(events)]


def _iso(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / 1e9, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _signed_quantity_at(position: Any, ts: int) -> Decimal:
    """The position's signed quantity after its fills stamped at or before ``ts``."""
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


def funding_report(cache: Cache, venue: str | Venue = "BINANCE") -> FundingReport | None:
    """
    Return the report a :class:`FundingRateModule` stored in an engine's cache, if any.

    The module stores it when the engine logs its post-run diagnostics (``engine.run()`` /
    ``BacktestNode.run()``), so this works with a ``BacktestNode`` too, where the module object
    itself is out of reach: ``funding_report(node.get_engine(run_id).cache)``.
    """
    data = cache.get(f"{CACHE_KEY_PREFIX}.{venue}")
    return FundingReport.from_json(data) if data else None


# --------------------------------------------------------------------------------------------
# The simulation module
# --------------------------------------------------------------------------------------------


class FundingRateModuleConfig(SimulationModuleConfig, frozen=True):
    """
    Configuration of :class:`FundingRateModule`.

    Parameters
    ----------
    catalog_path : str
        The ``ParquetDataCatalog`` holding the ``FundingRateUpdate`` rows (and, optionally, the
        MARK bars) of the perpetuals to settle.
    fs_protocol : str, optional
        The catalog's fsspec protocol (default: local files).
    fs_storage_options : dict, optional
        The catalog's fsspec storage options.
    instrument_ids : list[str], optional
        The perpetuals to settle. Default: every ``CryptoPerpetual`` of the venue the module is
        added to that the catalog defines. Each must have funding rows in the catalog.
    mark_bar_spec : str, default "1-MINUTE-MARK-EXTERNAL"
        The MARK bar specification whose close at a boundary is the mark price.
    mark_fallback : str, default "last"
        Where no MARK bar closes at a boundary: ``"last"`` uses the last traded price (logged,
        counted per instrument), ``"raise"`` raises ``FundingSettlementError``.
    """

    catalog_path: str
    fs_protocol: str | None = None
    fs_storage_options: dict | None = None
    instrument_ids: list[str] | None = None
    mark_bar_spec: str = DEFAULT_MARK_BAR_SPEC
    mark_fallback: str = "last"


def funding_module_config(
    catalog_path: str | os.PathLike[str],
    instrument_ids: list[str] | None = None,
    *,
    mark_bar_spec: str = DEFAULT_MARK_BAR_SPEC,
    mark_fallback: str = "last",
    fs_protocol: str | None = None,
    fs_storage_options: dict | None = None,
) -> ImportableActorConfig:
    """
    Return the ``ImportableActorConfig`` of a :class:`FundingRateModule` for
    ``BacktestVenueConfig(modules=[...])`` (1.231 builds modules with ``ActorFactory.create``).

    The parameters are those of :class:`FundingRateModuleConfig`; they are validated here, so a
    typo fails before the node starts.
    """
    config: dict[str, Any] = {
        "catalog_path": os.fspath(catalog_path),
        "mark_bar_spec": mark_bar_spec,
        "mark_fallback": mark_fallback,
    }
    if instrument_ids is not None:
        config["instrument_ids"] = [str(i) for i in instrument_ids]
    if fs_protocol is not None:
        config["fs_protocol"] = fs_protocol
    if fs_storage_options is not None:
        config["fs_storage_options"] = dict(fs_storage_options)
    _check_config(FundingRateModuleConfig(**config))
    return ImportableActorConfig(
        actor_path=f"{__name__}:FundingRateModule",
        config_path=f"{__name__}:FundingRateModuleConfig",
        config=config,
    )


def _check_config(config: FundingRateModuleConfig) -> None:
    if config.mark_fallback not in MARK_FALLBACKS:
        raise FundingSettlementError(
            f"mark_fallback={config.mark_fallback!r} is not one of {MARK_FALLBACKS}"
        )
    mark_bar_type("BTCUSDT-PERP.BINANCE", config.mark_bar_spec)  # spec check only
    if config.instrument_ids is not None and not config.instrument_ids:
        raise FundingSettlementError(
            "instrument_ids=[] settles nothing; leave it unset to settle every perpetual of the "
            "venue in the catalog"
        )
    for text in config.instrument_ids or ():
        try:
            InstrumentId.from_str(text)
        except ValueError:
            raise FundingSettlementError(
                f"instrument_ids holds {text!r}, not an instrument id; use e.g. "
                "'BTCUSDT-PERP.BINANCE'"
            ) from None


@dataclass
class _State:
    instrument_id: InstrumentId
    events: list[FundingEvent]
    marks: dict[int, Decimal]
    mark_bar_type: BarType
    index: int = 0
    seen_ts: int = -1  # ts_init of the last datum of the instrument processed
    last_price: Price | None = None  # of the last LAST bar / trade tick processed
    source_logged: bool = False
    totals: FundingTotals = field(init=False)

    def __post_init__(self) -> None:
        self.totals = FundingTotals(self.instrument_id.value)

    @property
    def next_ts(self) -> int | None:
        return self.events[self.index].ts_event if self.index < len(self.events) else None


class FundingRateModule(SimulationModule):
    """
    Settle perpetual funding in a NautilusTrader 1.231 backtest (a ``SimulationModule``).

    Add it to the venue of the perpetuals, either with a node::

        BacktestVenueConfig(..., modules=[funding_module_config(catalog_path)])

    or with an engine::

        engine.add_venue(..., modules=[FundingRateModule(FundingRateModuleConfig(...))])

    The catalog is read when the module is registered with the venue (``add_venue``), so a
    missing funding dataset fails there, before the run. After the run, ``payments`` /
    ``totals()`` / ``report()`` (or :func:`funding_report` on the engine's cache) say what was
    booked; ``log_diagnostics`` logs the totals per instrument.

    Parameters
    ----------
    config : FundingRateModuleConfig
        The configuration.

    Raises
    ------
    FundingSettlementError
        On registration, if the catalog holds no perpetual of the venue (default ids), no or
        invalid funding rows for an instrument, or an instrument of another venue; during the
        run, if no price exists at a boundary with open positions, or if the account has no
        balance in the settlement currency.
    """

    def __init__(self, config: FundingRateModuleConfig) -> None:
        super().__init__(config)
        _check_config(config)
        self._fconfig = config
        self._states: dict[InstrumentId, _State] = {}
        self._payments: list[FundingPayment] = []
        self._next_due = -1  # smallest pending boundary; -1 = nothing pending
        self._venue: Venue | None = None

    # -- registration ------------------------------------------------------------------------

    def register_venue(self, exchange: Any) -> None:
        """Register the simulated exchange and load the funding events from the catalog."""
        SimulationModule.register_venue(self, exchange)
        self._venue = exchange.id
        self._load(exchange.id)

    def _load(self, venue: Venue) -> None:
        config = self._fconfig
        path = config.catalog_path
        protocol = config.fs_protocol or "file"
        if protocol == "file" and not os.path.isdir(path):
            raise FundingSettlementError(
                f"catalog_path={path!r} is not a directory; point the funding module at the "
                "ParquetDataCatalog holding the funding rates"
            )
        catalog = ParquetDataCatalog(
            path, fs_protocol=config.fs_protocol, fs_storage_options=config.fs_storage_options
        )
        where = f"the catalog at {path}"
        ids = self._instrument_ids(catalog, venue, where)
        self._states = {}
        for instrument_id in ids:
            rows = self._read(
                lambda i=instrument_id: catalog.funding_rates(instrument_ids=[i.value])
            )
            if not rows:
                raise FundingSettlementError(
                    f"{where} holds no FundingRateUpdate rows for {instrument_id}; ingest its "
                    "funding rates into the catalog, or leave it out of the module's "
                    "instrument_ids"
                )
            events = funding_events(instrument_id.value, rows, where)
            bar_type = mark_bar_type(instrument_id.value, config.mark_bar_spec)
            bars = self._read(lambda bt=bar_type: catalog.bars(bar_types=[str(bt)]))
            marks = {int(bar.ts_event): bar.close.as_decimal() for bar in bars}
            if not marks and config.mark_fallback == "raise":
                # Fail before the run, not at the first boundary with a position.
                raise FundingSettlementError(
                    f"{where} holds no {bar_type} bars and mark_fallback='raise'; ingest the "
                    f"mark price klines of {instrument_id}, or set mark_fallback='last' to use "
                    "the last traded price"
                )
            self._states[instrument_id] = _State(instrument_id, events, marks, bar_type)
        self._update_next_due()

    def _instrument_ids(
        self,
        catalog: ParquetDataCatalog,
        venue: Venue,
        where: str,
    ) -> list[InstrumentId]:
        if self._fconfig.instrument_ids is not None:
            ids = [InstrumentId.from_str(text) for text in self._fconfig.instrument_ids]
            for instrument_id in ids:
                if instrument_id.venue != venue:
                    raise FundingSettlementError(
                        f"instrument_ids holds {instrument_id}, which is not on venue {venue} "
                        f"the funding module is added to; add a module to the {instrument_id.venue}"
                        " venue for it"
                    )
            return ids
        instruments = self._read(catalog.instruments)
        ids = sorted(
            (i.id for i in instruments if isinstance(i, CryptoPerpetual) and i.id.venue == venue),
            key=lambda i: i.value,
        )
        if not ids:
            raise FundingSettlementError(
                f"{where} defines no perpetual of venue {venue}; ingest the instruments, or set "
                "instrument_ids in the funding module's config"
            )
        return ids

    def _read(self, query: Any) -> list[Any]:
        try:
            return list(query())
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise FundingSettlementError(
                f"cannot read the catalog at {self._fconfig.catalog_path}: {exc}; check "
                "catalog_path, fs_protocol and fs_storage_options"
            ) from exc

    # -- simulation --------------------------------------------------------------------------

    def pre_process(self, data: Data) -> None:
        """Settle the events before ``data``'s time, then note the instrument's last price."""
        ts = data.ts_init
        if 0 <= self._next_due < ts:
            self._settle(ts, strictly_before=True)
        if isinstance(data, Bar):
            bar_type = data.bar_type
            state = self._states.get(bar_type.instrument_id)
            if state is not None:
                state.seen_ts = max(state.seen_ts, ts)
                if bar_type.spec.price_type == PriceType.LAST:
                    state.last_price = data.close  # a Price; as a Decimal only when used
            return
        instrument_id = getattr(data, "instrument_id", None)
        state = self._states.get(instrument_id) if instrument_id is not None else None
        if state is None:
            return
        state.seen_ts = max(state.seen_ts, ts)
        if isinstance(data, TradeTick):
            state.last_price = data.price

    def process(self, ts_now: int) -> None:
        """Settle the events due at ``ts_now`` (after the orders of ``ts_now`` have filled)."""
        if 0 <= self._next_due <= ts_now:
            self._settle(ts_now, strictly_before=False)

    def _settle(self, ts_now: int, strictly_before: bool) -> None:
        for state in self._states.values():
            while (due := state.next_ts) is not None:
                if due > ts_now or (due == ts_now and (strictly_before or state.seen_ts < due)):
                    break
                self._settle_event(state, state.events[state.index], ts_now)
                state.index += 1
        self._update_next_due()

    def _update_next_due(self) -> None:
        pending = [ts for state in self._states.values() if (ts := state.next_ts) is not None]
        self._next_due = min(pending) if pending else -1

    def _settle_event(self, state: _State, event: FundingEvent, ts_now: int) -> None:
        exchange = self.exchange
        instrument_id = state.instrument_id
        totals = state.totals
        totals.events += 1
        positions = self._held_at(instrument_id, event.ts_event)
        if not positions:
            totals.events_without_position += 1
            return
        instrument = exchange.instruments.get(instrument_id) or exchange.cache.instrument(
            instrument_id
        )
        mark, source = self._mark(state, event)
        currency = instrument.get_settlement_currency()
        self._check_balance(instrument_id, currency)
        totals.currency = currency.code
        if source == "mark":
            totals.mark_price_events += 1
        else:
            totals.last_price_events += 1
        for position, signed in positions:
            amount = funding_payment(
                signed,
                mark,
                event.rate,
                precision=currency.precision,
                inverse=instrument.is_inverse,
                multiplier=instrument.multiplier.as_decimal(),
            )
            self._payments.append(
                FundingPayment(
                    instrument_id=instrument_id.value,
                    ts_event=event.ts_event,
                    ts_settled=ts_now,
                    rate=event.rate,
                    mark=mark,
                    mark_source=source,
                    position_id=position.id.value,
                    signed_quantity=signed,
                    amount=amount,
                    currency=currency.code,
                )
            )
            totals.payments += 1
            totals.total += amount
            if amount:
                raw = int(amount.scaleb(FIXED_PRECISION))
                exchange.adjust_account(Money.from_raw(raw, currency))

    def _held_at(self, instrument_id: InstrumentId, boundary: int) -> list[tuple[Any, Decimal]]:
        # The positions held *at the boundary* and their signed quantities then, rebuilt from
        # their fills: an event is settled at the boundary in the normal case, but after it
        # when the instrument has no datum there, and by then a timer or a latency model may
        # have opened, changed or closed positions. Fills stamped after the boundary don't count.
        cache = self.exchange.cache
        candidates = cache.positions_open(venue=self._venue, instrument_id=instrument_id)
        closed = cache.positions_closed(venue=self._venue, instrument_id=instrument_id)
        candidates += [p for p in closed if p.ts_closed > boundary]
        held = []
        for position in candidates:
            if position.ts_opened > boundary:
                continue
            if position.is_open and position.ts_last <= boundary:
                quantity = position.quantity.as_decimal()
                signed = quantity if position.side == PositionSide.LONG else -quantity
            else:
                signed = _signed_quantity_at(position, boundary)
            if signed:
                held.append((position, signed))
        return held

    def _mark(self, state: _State, event: FundingEvent) -> tuple[Decimal, str]:
        boundary = _iso(event.ts_event)
        mark = state.marks.get(event.ts_event)
        if mark is not None:
            if not state.source_logged:
                self.log.info(
                    f"Funding {state.instrument_id}: mark price from {state.mark_bar_type} "
                    "closes in the catalog"
                )
                state.source_logged = True
            return mark, "mark"
        if state.marks:
            why = f"no {state.mark_bar_type} bar closes at {boundary}"
        else:
            why = f"the catalog holds no {state.mark_bar_type} bars"
        if self._fconfig.mark_fallback == "raise":
            raise FundingSettlementError(
                f"cannot settle funding of {state.instrument_id} at {boundary}: {why}; ingest "
                "the mark price klines, or set mark_fallback='last' to use the last traded price"
            )
        if state.last_price is None:
            raise FundingSettlementError(
                f"cannot settle funding of {state.instrument_id} at {boundary}: {why}, and no "
                "LAST bar or trade of it was processed before the boundary; add its bars to the "
                "backtest data"
            )
        if state.marks:
            self.log.warning(
                f"Funding {state.instrument_id} at {boundary}: {why}; "
                f"using the last traded price {state.last_price}"
            )
        elif not state.source_logged:
            self.log.info(f"Funding {state.instrument_id}: mark price = last traded price ({why})")
            state.source_logged = True
        return state.last_price.as_decimal(), "last"

    def _check_balance(self, instrument_id: InstrumentId, currency: Any) -> None:
        if self.exchange.is_frozen_account:
            return
        account = self.exchange.cache.account_for_venue(self._venue)
        if account is not None and account.balance(currency) is None:
            raise FundingSettlementError(
                f"funding of {instrument_id} is settled in {currency.code}, but the {self._venue} "
                f"account holds no {currency.code} balance; add one to the venue's "
                f"starting_balances (e.g. '1 {currency.code}')"
            )

    # -- results -----------------------------------------------------------------------------

    @property
    def payments(self) -> list[FundingPayment]:
        """Every payment booked so far, in settlement order."""
        return list(self._payments)

    def totals(self) -> dict[str, FundingTotals]:
        """The totals per instrument id (a copy)."""
        return {k.value: FundingTotals(**asdict(s.totals)) for k, s in self._states.items()}

    def report(self) -> FundingReport:
        """The totals and payments of this module's venue."""
        return FundingReport(str(self._venue), self.totals(), self.payments)

    def log_diagnostics(self, logger: Any) -> None:
        """Log the totals per instrument and store the report in the engine's cache."""
        for totals in self.totals().values():
            logger.info(totals.summary())
        if self._venue is not None:
            self.exchange.cache.add(f"{CACHE_KEY_PREFIX}.{self._venue}", self.report().to_json())

    def reset(self) -> None:
        """Forget what was settled (the events read from the catalog are kept)."""
        for state in self._states.values():
            state.index = 0
            state.seen_ts = -1
            state.last_price = None
            state.source_logged = False
            state.totals = FundingTotals(state.instrument_id.value)
        self._payments = []
        self._update_next_due()
