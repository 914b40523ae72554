"""The demo: fetch a week of 1m bars, report quality, ingest, backtest an EMA cross.

With internet access the bars come from Binance. Without it (a 2 s connect attempt to the REST
host fails) or with ``offline=True`` the bundled Binance imitation is started on 127.0.0.1, and
every section of the output says the prices are SYNTHETIC. Synthetic data is kept apart from
real data: it goes to its own ``catalog-synthetic`` / ``cache-synthetic`` directories, never to
the user's kline cache. ``nautilus-dsm demo`` (:mod:`nautilus_dsm.cli.demo`) runs
:func:`run_demo` with a progress bar; nothing here imports click.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nautilus_trader.backtest.config import (
    BacktestDataConfig,
    BacktestEngineConfig,
    BacktestRunConfig,
    BacktestVenueConfig,
)
from nautilus_trader.backtest.node import BacktestNode
from nautilus_trader.config import ImportableActorConfig, ImportableStrategyConfig, LoggingConfig
from nautilus_trader.model.currencies import Currency
from nautilus_trader.model.identifiers import Venue
from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

from nautilus_dsm.backtest.counter import BAR_COUNTER_CONFIG_PATH, BAR_COUNTER_PATH, BarCounter
from nautilus_dsm.common import ENDPOINTS, Interval, MarketType
from nautilus_dsm.common.times import iso
from nautilus_dsm.dsm.settings import SourceSettings
from nautilus_dsm.errors import InvalidInput

if TYPE_CHECKING:
    from nautilus_dsm.catalog import IngestReport
    from nautilus_dsm.dsm.manager import FetchResult

__all__ = [
    "CONNECT_TIMEOUT_S",
    "DEMO_INSTRUMENT",
    "DEMO_INTERVAL",
    "OFFLINE_START",
    "REAL_LABEL",
    "SYNTHETIC_LABEL",
    "BacktestSummary",
    "demo_source",
    "ema_cross_run_config",
    "internet_reachable",
    "run_backtest",
    "run_demo",
]

DEMO_INSTRUMENT = "BTCUSDT-PERP.BINANCE"
DEMO_INTERVAL = "1m"
# The imitation's range is fixed so the offline demo prints the same numbers on every run.
OFFLINE_START = datetime(2024, 1, 1, tzinfo=UTC)
SYNTHETIC_LABEL = "SYNTHETIC (imitation) data, not real Binance prices"
REAL_LABEL = "real Binance data"
CONNECT_TIMEOUT_S = 2.0

Echo = Callable[[str], None]
Progress = Callable[[int, int], None]


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
    adds a :class:`~nautilus_dsm.backtest.counter.BarCounter`.
    """
    if data.instrument_id is None or not data.bar_types or len(data.bar_types) != 1:
        raise InvalidInput(
            f"the backtest data config selects bar types {data.bar_types} of instrument "
            f"{data.instrument_id}; pass exactly one, e.g. "
            "backtest_data_config(catalog, 'BTCUSDT-PERP.BINANCE', '1m')"
        )
    bar_type = str(data.bar_types[0])
    strategies = [_ema_cross(str(data.instrument_id), bar_type, trade_size)] if strategy else []
    actors = []
    if count_bars:
        actors.append(
            ImportableActorConfig(
                actor_path=BAR_COUNTER_PATH,
                config_path=BAR_COUNTER_CONFIG_PATH,
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


def _ema_cross(instrument_id: str, bar_type: str, trade_size: str) -> ImportableStrategyConfig:
    return ImportableStrategyConfig(
        strategy_path="nautilus_trader.examples.strategies.ema_cross:EMACross",
        config_path="nautilus_trader.examples.strategies.ema_cross:EMACrossConfig",
        config={
            "instrument_id": instrument_id,
            "bar_type": bar_type,
            "trade_size": trade_size,
            "fast_ema_period": 10,
            "slow_ema_period": 30,
            "request_bars": False,
            "subscribe_trade_ticks": False,
        },
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
        return _summary(engine, results[0], starting_balance, started)
    finally:
        node.dispose()


def _summary(engine: Any, result: Any, starting_balance: str, started: float) -> BacktestSummary:
    counter = next(a for a in engine.trader.actors() if isinstance(a, BarCounter))
    orders = engine.cache.orders()
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


# --------------------------------------------------------------------------------------------
# Demo
# --------------------------------------------------------------------------------------------


def internet_reachable(timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """Return whether Binance's USDT-M REST host accepts a TCP connection within ``timeout`` s.

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
def demo_source(offline: bool) -> Iterator[tuple[str | None, str]]:
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
    progress: Progress | None = None,
    echo: Echo | None = None,
    settings: SourceSettings | None = None,
) -> BacktestSummary:
    """
    Run the demo end to end: fetch, check, ingest and backtest an EMA cross, printing each step.

    Fetches ``days`` of 1m ``BTCUSDT-PERP.BINANCE``, reports their quality, ingests them into a
    catalog and runs a ``BacktestNode`` with an EMA cross on it.

    Parameters
    ----------
    offline : bool, default False
        Use the bundled imitation (SYNTHETIC prices) even when Binance is reachable.
    output : Path, optional
        Directory for the catalog and the synthetic cache; a new temporary one when None.
    days : int, default 7
        Days of 1m bars.
    progress : Callable[[int, int], None], optional
        ``progress(done, total)`` over the fetch's periods; its ``close()``, if it has one, is
        called when the fetch is done (a progress bar goes before the next section prints).
    echo : Callable[[str], None], optional
        Prints one line of the output; ``print`` when None.
    settings : SourceSettings, optional
        Request bounds and other engine settings; the base URLs and cache dir are the demo's
        own (Binance and the user cache, or the imitation and ``output/cache-synthetic``).

    Returns
    -------
    BacktestSummary
        The backtest summary (also printed).

    """
    out = echo or print
    started = time.perf_counter()
    output = (
        Path(output) if output is not None else Path(tempfile.mkdtemp(prefix="nautilus-dsm-demo-"))
    )
    output.mkdir(parents=True, exist_ok=True)

    with demo_source(offline) as (base_url, source):
        synthetic = base_url is not None
        section = _sections(out, SYNTHETIC_LABEL if synthetic else REAL_LABEL)
        start, end = _demo_range(synthetic, days)
        catalog_dir = output / ("catalog-synthetic" if synthetic else "catalog")
        catalog_dir.mkdir(parents=True, exist_ok=True)
        source_settings = (settings or SourceSettings()).replace(
            base_url_http=base_url,
            base_url_vision=base_url,
            cache_dir=str(output / "cache-synthetic") if synthetic else None,
        )

        section("nautilus-dsm demo")
        out(f"source: {source}")
        out(f"{DEMO_INSTRUMENT} {DEMO_INTERVAL}, {iso(start)} .. {iso(end)} ({days} day(s))")
        out(f"output directory: {output}")
        result, ingest_report = asyncio.run(
            _fetch_and_ingest(source_settings, catalog_dir, start, end, progress)
        )
        _print_data(out, section, result, ingest_report, catalog_dir)

        section("3. backtest: EMA(10/30) cross on the catalog")
        summary = run_backtest(str(catalog_dir), DEMO_INSTRUMENT, DEMO_INTERVAL, start, end)
        _print_backtest(out, summary)

        section("done")
        out(f"demo time: {time.perf_counter() - started:.2f} s; catalog kept at {catalog_dir}")
        if synthetic:
            out("all prices above are SYNTHETIC (imitation); run with internet for real data")
        return summary


def _demo_range(synthetic: bool, days: int) -> tuple[datetime, datetime]:
    """Return the demo's ``[start, end)``: fixed for the imitation, the last days otherwise."""
    if synthetic:
        start = OFFLINE_START
    else:
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        start = today - timedelta(days=days)
    return start, start + timedelta(days=days)


def _sections(out: Echo, label: str) -> Echo:
    """Return ``section(title)``, which prints ``== title [label] ==``.

    A blank line goes before every section but the first.
    """

    def section(title: str) -> None:
        if title != "nautilus-dsm demo":
            out("")
        out(f"== {title} [{label}] ==")

    return section


async def _fetch_and_ingest(
    settings: SourceSettings,
    catalog_dir: Path,
    start: datetime,
    end: datetime,
    progress: Progress | None,
) -> tuple[FetchResult, IngestReport]:
    from nautilus_dsm.catalog import ingest_async
    from nautilus_dsm.dsm.manager import DataSourceManager

    dsm = DataSourceManager.from_config(settings)
    try:
        try:
            result = await dsm.fetch(DEMO_INSTRUMENT, DEMO_INTERVAL, start, end, progress=progress)
        finally:
            close = getattr(progress, "close", None)
            if callable(close):
                close()
        report = await ingest_async(
            str(catalog_dir), [DEMO_INSTRUMENT], [DEMO_INTERVAL], start, end, dsm=dsm
        )
    finally:
        await dsm.aclose()
    return result, report


def _print_data(
    out: Echo, section: Echo, result: FetchResult, report: IngestReport, catalog_dir: Path
) -> None:
    section("1. data quality")
    out(result.report.summary())
    out(f"bars fetched: {result.frame.height} of {result.report.expected_bars} expected")

    section("2. catalog ingest")
    out(f"catalog: {catalog_dir}")
    out(report.summary())


def _print_backtest(out: Echo, summary: BacktestSummary) -> None:
    out(f"bars: {summary.bars}")
    if summary.wrong_precision_bars:
        out(f"bars with a precision other than the instrument's: {summary.wrong_precision_bars}")
    out(f"orders: {summary.orders} ({summary.filled_orders} filled)")
    out(f"positions: {summary.positions}")
    out(f"PnL: {summary.pnl:.8f} USDT")
    out(f"final balance: {summary.final_balance}")
    out(f"backtest time: {summary.seconds:.2f} s")
