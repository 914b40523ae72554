"""``nautilus-dsm demo``: fetch a week of 1m bars, report quality, ingest, backtest an EMA cross.

With internet access the bars come from Binance. Without it (a 2 s connect attempt to the REST
host fails) or with ``offline=True`` the bundled Binance imitation is started on 127.0.0.1, and
every section of the output says the prices are SYNTHETIC. Synthetic data is kept apart from
real data: it goes to its own ``catalog-synthetic`` / ``cache-synthetic`` directories, never to
the user's kline cache.
"""

from __future__ import annotations

import contextlib
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from nautilus_trader.backtest.config import (
    BacktestDataConfig,
    BacktestEngineConfig,
    BacktestRunConfig,
    BacktestVenueConfig,
)
from nautilus_trader.backtest.node import BacktestNode
from nautilus_trader.common.actor import Actor
from nautilus_trader.common.config import ActorConfig
from nautilus_trader.config import ImportableActorConfig, ImportableStrategyConfig, LoggingConfig
from nautilus_trader.model.currencies import Currency
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.model.identifiers import Venue
from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

from nautilus_dsm.cli import ProgressBar
from nautilus_dsm.common import ENDPOINTS, Interval, MarketType, from_ms, to_ms
from nautilus_dsm.errors import InvalidInput

DEMO_INSTRUMENT = "BTCUSDT-PERP.BINANCE"
DEMO_INTERVAL = "1m"
# The imitation's range is fixed so the offline demo prints the same numbers on every run.
OFFLINE_START = datetime(2024, 1, 1, tzinfo=UTC)
SYNTHETIC_LABEL = "SYNTHETIC (imitation) data, not real Binance prices"
REAL_LABEL = "real Binance data"
CONNECT_TIMEOUT_S = 2.0

Echo = Callable[[str], None]


# --------------------------------------------------------------------------------------------
# Actor: counts what the backtest really delivered
# --------------------------------------------------------------------------------------------


class BarCounterConfig(ActorConfig, frozen=True):
    """Configuration of :class:`BarCounter`: the bar type to subscribe to."""

    bar_type: str


class BarCounter(Actor):
    """Count the bars a backtest delivers, and those whose precision differs from the
    instrument's (a catalog re-quantising or a wrong conversion shows up here)."""

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
        instrument = self.cache.instrument(self.bar_type.instrument_id)
        if instrument is not None:
            self._price_precision = instrument.price_precision
            self._size_precision = instrument.size_precision
        self.subscribe_bars(self.bar_type)

    def on_bar(self, bar: Bar) -> None:
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


# --------------------------------------------------------------------------------------------
# Backtest
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BacktestSummary:
    """What the demo backtest did: bars seen, orders, positions, PnL, final balance."""

    bars: int
    wrong_precision_bars: int
    first_ts_init: int | None
    last_ts_init: int | None
    orders: int
    filled_orders: int
    positions: int
    pnl: float
    final_balance: str
    seconds: float


def ema_cross_run_config(
    data: BacktestDataConfig,
    *,
    strategy: bool = True,
    trade_size: str = "0.010",
    starting_balance: str = "100000 USDT",
    count_bars: bool = False,
) -> BacktestRunConfig:
    """
    Return the run config of NautilusTrader's EMA(10/30) cross on one bar type of a catalog.

    ``data`` selects the bar type (:func:`nautilus_dsm.catalog.backtest_data_config`). The
    venue is BINANCE, netting, with a margin account. ``dispose_on_completion=False`` keeps the
    engine so orders, positions and PnL can be read after the run (the default disposes it
    before the result is built). ``strategy=False`` leaves the EMA cross out; ``count_bars``
    adds a :class:`BarCounter`.
    """
    if data.instrument_id is None or not data.bar_types or len(data.bar_types) != 1:
        raise InvalidInput(
            f"the backtest data config selects bar types {data.bar_types} of instrument "
            f"{data.instrument_id}; pass exactly one, e.g. "
            "backtest_data_config(catalog, 'BTCUSDT-PERP.BINANCE', '1m')"
        )
    bar_type = str(data.bar_types[0])
    strategies = []
    if strategy:
        strategies.append(
            ImportableStrategyConfig(
                strategy_path="nautilus_trader.examples.strategies.ema_cross:EMACross",
                config_path="nautilus_trader.examples.strategies.ema_cross:EMACrossConfig",
                config={
                    "instrument_id": str(data.instrument_id),
                    "bar_type": bar_type,
                    "trade_size": trade_size,
                    "fast_ema_period": 10,
                    "slow_ema_period": 30,
                    "request_bars": False,
                    "subscribe_trade_ticks": False,
                },
            )
        )
    actors = []
    if count_bars:
        actors.append(
            ImportableActorConfig(
                actor_path="nautilus_dsm.demo:BarCounter",
                config_path="nautilus_dsm.demo:BarCounterConfig",
                config={"bar_type": bar_type},
            )
        )
    return BacktestRunConfig(
        engine=BacktestEngineConfig(
            strategies=strategies,
            actors=actors,
            logging=LoggingConfig(log_level="ERROR"),
        ),
        venues=[
            BacktestVenueConfig(
                name="BINANCE",
                oms_type="NETTING",
                account_type="MARGIN",
                starting_balances=[starting_balance],
            )
        ],
        data=[data],
        dispose_on_completion=False,
    )


def run_backtest(
    catalog: ParquetDataCatalog | str,
    instrument_id: str,
    interval: Interval | str,
    start: datetime,
    end: datetime,
    *,
    strategy: bool = True,
    trade_size: str = "0.010",
    starting_balance: str = "100000 USDT",
) -> BacktestSummary:
    """
    Run a ``BacktestNode`` over one bar type of a catalog, with an EMA cross and a bar counter.

    ``start``/``end`` are bar open times ``[start, end)``; ``strategy=False`` runs the bar
    counter alone. See :func:`ema_cross_run_config`.
    """
    from nautilus_dsm.catalog import backtest_data_config

    data = backtest_data_config(catalog, instrument_id, interval, start, end)
    run_config = ema_cross_run_config(
        data,
        strategy=strategy,
        trade_size=trade_size,
        starting_balance=starting_balance,
        count_bars=True,
    )
    started = time.perf_counter()
    node = BacktestNode(configs=[run_config])
    try:
        results = node.run()
        engine = node.get_engine(run_config.id)
        assert engine is not None  # dispose_on_completion=False keeps it
        counter = next(a for a in engine.trader.actors() if isinstance(a, BarCounter))
        orders = engine.cache.orders()
        result = results[0]
        currency = starting_balance.split()[-1]
        pnls = result.stats_pnls.get(currency, {})
        account = engine.cache.account_for_venue(Venue("BINANCE"))
        balance = account.balance_total(Currency.from_str(currency)) if account else None
        return BacktestSummary(
            bars=counter.count,
            wrong_precision_bars=counter.wrong_precision,
            first_ts_init=counter.first_ts_init,
            last_ts_init=counter.last_ts_init,
            orders=len(orders),
            filled_orders=sum(1 for o in orders if o.is_closed and o.filled_qty > 0),
            positions=result.total_positions,
            pnl=float(pnls.get("PnL (total)", 0.0) or 0.0),
            final_balance=str(balance) if balance is not None else "n/a",
            seconds=time.perf_counter() - started,
        )
    finally:
        node.dispose()


# --------------------------------------------------------------------------------------------
# Demo
# --------------------------------------------------------------------------------------------


def internet_reachable(timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """Whether Binance's USDT-M REST host accepts a TCP connection within ``timeout`` seconds.

    The attempt runs in a daemon thread so a hanging DNS lookup (which ignores socket
    timeouts) cannot hold the demo up either.
    """
    host = ENDPOINTS[MarketType.FUTURES_USDT].rest_host.removeprefix("https://")
    reachable = threading.Event()

    def attempt() -> None:
        with contextlib.suppress(OSError), socket.create_connection((host, 443), timeout=timeout):
            reachable.set()

    thread = threading.Thread(target=attempt, name="nautilus-dsm-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return reachable.is_set()


@contextlib.contextmanager
def _source(offline: bool) -> Iterator[tuple[str | None, str]]:
    """Yield ``(base_url, description)``: None for Binance itself, else the imitation's URL."""
    if not offline and internet_reachable():
        yield None, f"Binance ({ENDPOINTS[MarketType.FUTURES_USDT].rest_host})"
        return
    from nautilus_dsm.testing import BinanceImitation

    why = "--offline" if offline else "Binance is unreachable"
    with BinanceImitation() as srv:
        yield srv.url, f"the bundled Binance imitation at {srv.url} ({why})"


def run_demo(
    *,
    offline: bool = False,
    output: Path | None = None,
    days: int = 7,
    progress: bool = True,
    echo: Echo | None = None,
) -> BacktestSummary:
    """
    Fetch ``days`` of 1m ``BTCUSDT-PERP.BINANCE``, report quality, ingest into a catalog and run
    a ``BacktestNode`` with an EMA cross on it, printing each step.

    Returns the backtest summary (also printed).
    """
    import click

    from nautilus_dsm.catalog import ingest_async
    from nautilus_dsm.common import DataProvider
    from nautilus_dsm.dsm.manager import DataSourceManager

    out = echo or click.echo
    started = time.perf_counter()
    output = (
        Path(output) if output is not None else Path(tempfile.mkdtemp(prefix="nautilus-dsm-demo-"))
    )
    output.mkdir(parents=True, exist_ok=True)

    with _source(offline) as (base_url, source):
        synthetic = base_url is not None
        label = SYNTHETIC_LABEL if synthetic else REAL_LABEL
        if synthetic:
            start = OFFLINE_START
        else:
            today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            start = today - timedelta(days=days)
        end = start + timedelta(days=days)
        suffix = "-synthetic" if synthetic else ""
        catalog_dir = output / f"catalog{suffix}"
        catalog_dir.mkdir(parents=True, exist_ok=True)
        cache_dir = str(output / "cache-synthetic") if synthetic else None

        def section(title: str) -> None:
            if title != "nautilus-dsm demo":
                out("")
            out(f"== {title} [{label}] ==")

        section("nautilus-dsm demo")
        out(f"source: {source}")
        out(f"{DEMO_INSTRUMENT} {DEMO_INTERVAL}, {_iso(start)} .. {_iso(end)} ({days} day(s))")
        out(f"output directory: {output}")

        async def fetch_and_ingest() -> tuple[Any, Any]:
            dsm = DataSourceManager.create(
                DataProvider.BINANCE,
                None,
                base_url_http=base_url,
                base_url_vision=base_url,
                cache_dir=cache_dir,
            )
            bar = ProgressBar(progress, "fetch", "period")
            try:
                result = await dsm.fetch(DEMO_INSTRUMENT, DEMO_INTERVAL, start, end, progress=bar)
                bar.close()
                report = await ingest_async(
                    str(catalog_dir), [DEMO_INSTRUMENT], [DEMO_INTERVAL], start, end, dsm=dsm
                )
            finally:
                bar.close()
                await dsm.aclose()
            return result, report

        import asyncio

        result, ingest_report = asyncio.run(fetch_and_ingest())

        section("1. data quality")
        out(result.report.summary())
        out(f"bars fetched: {result.frame.height} of {result.report.expected_bars} expected")

        section("2. catalog ingest")
        out(f"catalog: {catalog_dir}")
        out(ingest_report.summary())

        section("3. backtest: EMA(10/30) cross on the catalog")
        summary = run_backtest(str(catalog_dir), DEMO_INSTRUMENT, DEMO_INTERVAL, start, end)
        out(f"bars: {summary.bars}")
        if summary.wrong_precision_bars:
            out(
                f"bars with a precision other than the instrument's: {summary.wrong_precision_bars}"
            )
        out(f"orders: {summary.orders} ({summary.filled_orders} filled)")
        out(f"positions: {summary.positions}")
        out(f"PnL: {summary.pnl:.8f} USDT")
        out(f"final balance: {summary.final_balance}")
        out(f"backtest time: {summary.seconds:.2f} s")

        section("done")
        out(f"demo time: {time.perf_counter() - started:.2f} s; catalog kept at {catalog_dir}")
        if synthetic:
            out("all prices above are SYNTHETIC (imitation); run with internet for real data")
        return summary


def _iso(dt: datetime) -> str:
    return from_ms(to_ms(dt)).isoformat().replace("+00:00", "Z")
