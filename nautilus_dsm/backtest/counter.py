"""``BarCounter``: an actor counting the bars a backtest really delivered."""

from __future__ import annotations

from nautilus_trader.common.actor import Actor
from nautilus_trader.common.config import ActorConfig
from nautilus_trader.model.data import Bar, BarType

__all__ = ["BAR_COUNTER_CONFIG_PATH", "BAR_COUNTER_PATH", "BarCounter", "BarCounterConfig"]

# The import paths of an ``ImportableActorConfig`` adding a BarCounter to a run config.
BAR_COUNTER_PATH = "nautilus_dsm.backtest.counter:BarCounter"
BAR_COUNTER_CONFIG_PATH = "nautilus_dsm.backtest.counter:BarCounterConfig"


class BarCounterConfig(ActorConfig, frozen=True):
    """Configuration of :class:`BarCounter`: the bar type to subscribe to."""

    bar_type: str


class BarCounter(Actor):
    """Count the bars a backtest delivers, and those of the wrong precision.

    A bar whose precision differs from the instrument's is counted apart (a catalog
    re-quantising or a wrong conversion shows up here).
    """

    def __init__(self, config: BarCounterConfig) -> None:
        super().__init__(config)
        self.bar_type = BarType.from_str(config.bar_type)
        self.count = 0
        self.wrong_precision = 0
        self.first_ts_init: int | None = None
        self.last_ts_init: int | None = None
        self._price_precision: int | None = None
        self._size_precision: int | None = None

    def on_start(self) -> None:
        """Note the instrument's precisions (when cached) and subscribe to the bars."""
        instrument = self.cache.instrument(self.bar_type.instrument_id)
        if instrument is not None:
            self._price_precision = instrument.price_precision
            self._size_precision = instrument.size_precision
        self.subscribe_bars(self.bar_type)

    def on_bar(self, bar: Bar) -> None:
        """Count ``bar`` (and apart when its precision is wrong); note its ``ts_init``."""
        self.count += 1
        if self.first_ts_init is None:
            self.first_ts_init = bar.ts_init
        self.last_ts_init = bar.ts_init
        if (
            bar.open.precision != self._price_precision
            or bar.close.precision != self._price_precision
            or bar.volume.precision != self._size_precision
        ):
            self.wrong_precision += 1
