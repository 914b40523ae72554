"""A strategy that opens fixed positions at the first bar and holds them to the end.

What it costs to *hold* a perpetual (funding) is easiest to see without any trading noise: the
same positions with and without :class:`~nautilus_dsm.backtest.FundingRateModule` differ by the
funding payments alone. Used by the tests and ``examples/funding_backtest.py``.
"""

from __future__ import annotations

from decimal import Decimal

from nautilus_trader.config import StrategyConfig
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.model.enums import OrderSide
from nautilus_trader.model.identifiers import InstrumentId
from nautilus_trader.trading.strategy import Strategy


class HoldPositionsConfig(StrategyConfig, frozen=True):
    """
    Configuration of :class:`HoldPositions`.

    Parameters
    ----------
    bar_types : list[str]
        The bar types to subscribe to; the first bar of each instrument opens its position.
    quantities : dict[str, str]
        Signed quantity (contracts) per instrument id: ``"0.500"`` buys, ``"-1000"`` sells.
    open_at_ns : int, optional
        Open at this time (a clock alert, possibly between two bars) instead of the first bar.
    close_at_ns : int, optional
        Close every position at this time (a clock alert); hold to the end when unset.
    """

    bar_types: list[str]
    quantities: dict[str, str]
    open_at_ns: int | None = None
    close_at_ns: int | None = None


class HoldPositions(Strategy):
    """Open each configured position with a market order and hold it.

    A position opens at the instrument's first bar (or at ``open_at_ns``) and is held to the
    end (or to ``close_at_ns``).
    """

    def __init__(self, config: HoldPositionsConfig) -> None:
        super().__init__(config)
        self._quantities = {
            InstrumentId.from_str(k): Decimal(v) for k, v in config.quantities.items()
        }
        self._opened: set[InstrumentId] = set()

    def on_start(self) -> None:
        """Subscribe to the bars and set the open and close time alerts that are configured."""
        for text in self.config.bar_types:
            self.subscribe_bars(BarType.from_str(text))
        if self.config.open_at_ns is not None:
            self.clock.set_time_alert_ns("hold-open", self.config.open_at_ns, self._open_all)
        if self.config.close_at_ns is not None:
            self.clock.set_time_alert_ns("hold-close", self.config.close_at_ns, self._close_all)

    def on_bar(self, bar: Bar) -> None:
        """Open the position of ``bar``'s instrument (once), unless ``open_at_ns`` sets the time."""
        if self.config.open_at_ns is None:
            self._open(bar.bar_type.instrument_id)

    def _open_all(self, event: object) -> None:
        for instrument_id in self._quantities:
            self._open(instrument_id)

    def _close_all(self, event: object) -> None:
        for instrument_id in self._quantities:
            self.close_all_positions(instrument_id)

    def _open(self, instrument_id: InstrumentId) -> None:
        signed = self._quantities.get(instrument_id)
        if signed is None or not signed or instrument_id in self._opened:
            return
        instrument = self.cache.instrument(instrument_id)
        side = OrderSide.BUY if signed > 0 else OrderSide.SELL
        order = self.order_factory.market(instrument_id, side, instrument.make_qty(abs(signed)))
        self.submit_order(order)
        self._opened.add(instrument_id)
