"""Funding settlement for perpetuals in NautilusTrader 1.231 backtests.

NautilusTrader 1.231's backtest engine settles no funding; its extension point is the
``SimulationModule`` (an ``Actor`` the simulated exchange calls with every datum it processes,
``pre_process``, and once per timestamp after orders have settled, ``process``).
:class:`FundingRateModule` is such a module. It reads the funding events
(``FundingRateUpdate`` rows) and, when present, the MARK bars of each perpetual from a
``ParquetDataCatalog`` named in its config, and at every funding boundary books, for every
position open at that boundary, :func:`~nautilus_dsm.backtest.funding.payments.funding_payment`
(``-signed_quantity x multiplier x mark x rate`` linear, ``/ mark`` inverse).

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

import os
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

from nautilus_trader.backtest.config import SimulationModuleConfig
from nautilus_trader.backtest.modules import SimulationModule
from nautilus_trader.config import ImportableActorConfig
from nautilus_trader.core.data import Data
from nautilus_trader.model.data import Bar, BarType, TradeTick
from nautilus_trader.model.enums import PositionSide, PriceType
from nautilus_trader.model.identifiers import InstrumentId, Venue
from nautilus_trader.model.instruments import CryptoPerpetual
from nautilus_trader.model.objects import FIXED_PRECISION, Money, Price
from nautilus_trader.persistence.catalog import ParquetDataCatalog

from nautilus_dsm.backtest.funding.payments import (
    CACHE_KEY_PREFIX,
    DEFAULT_MARK_BAR_SPEC,
    MARK_FALLBACKS,
    FundingEvent,
    FundingPayment,
    FundingReport,
    FundingTotals,
    funding_events,
    funding_payment,
    mark_bar_type,
    signed_quantity_at,
)
from nautilus_dsm.common.times import iso_ns
from nautilus_dsm.errors import FundingSettlementError

__all__ = ["FundingRateModule", "FundingRateModuleConfig", "funding_module_config"]

# The public path of the module and its config (the package re-exports both), so an
# ImportableActorConfig names the path users see and saved configs keep working.
_IMPORT_PATH = "nautilus_dsm.backtest.funding"


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
    Return the ``ImportableActorConfig`` of a :class:`FundingRateModule`.

    It goes in ``BacktestVenueConfig(modules=[...])`` (1.231 builds modules with
    ``ActorFactory.create``).

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
        actor_path=f"{_IMPORT_PATH}:FundingRateModule",
        config_path=f"{_IMPORT_PATH}:FundingRateModuleConfig",
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
                signed = signed_quantity_at(position, boundary)
            if signed:
                held.append((position, signed))
        return held

    def _mark(self, state: _State, event: FundingEvent) -> tuple[Decimal, str]:
        boundary = iso_ns(event.ts_event)
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
        """Return the totals per instrument id (a copy)."""
        return {k.value: FundingTotals(**asdict(s.totals)) for k, s in self._states.items()}

    def report(self) -> FundingReport:
        """Return the totals and payments of this module's venue."""
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
