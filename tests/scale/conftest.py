"""Real parts for the scale-out tests, started once for the package: an S3 server, a universe on
the Binance imitation, and a Dask cluster of two worker processes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from nautilus_dsm.common import MarketType, to_ms
from nautilus_dsm.testing import BinanceImitation
from nautilus_dsm.testing.s3 import LocalS3
from nautilus_dsm.testing.symbols import SymbolSpec

UM = MarketType.FUTURES_USDT
JAN = datetime(2024, 1, 1, tzinfo=UTC)
FEB = datetime(2024, 2, 1, tzinfo=UTC)
MAR = datetime(2024, 3, 1, tzinfo=UTC)
LATE_LISTING = datetime(2024, 2, 10, 12, 0, tzinfo=UTC)
BUCKET = "universe"

# Four more USDT-M perpetuals beside the imitation's BTCUSDT and ETHUSDT: one listed in the
# second month (no January task may be planned for it), one no longer trading (BREAK, its
# history still served) and one in another quote (filtered out by --quote USDT).
EXTRA = (
    SymbolSpec("SOLUSDT", "SOL", "USDT", 101.0, "0.010", "1"),
    SymbolSpec("XRPUSDT", "XRP", "USDT", 0.61, "0.0001", "0.1"),
    SymbolSpec("DOGEUSDT", "DOGE", "USDT", 0.08, "0.00001", "1", listed_ms=to_ms(LATE_LISTING)),
    SymbolSpec("LUNAUSDT", "LUNA", "USDT", 1.2, "0.001", "1", status="BREAK"),
    SymbolSpec("BTCUSDC", "BTC", "USDC", 42005.0, "0.1", "0.001"),
)
UNIVERSE = ["BTCUSDT", "DOGEUSDT", "ETHUSDT", "LUNAUSDT", "SOLUSDT", "XRPUSDT"]


@pytest.fixture(scope="package")
def s3() -> Iterator[LocalS3]:
    """A moto S3 server on 127.0.0.1 (child process) with the bucket ``universe``."""
    with LocalS3() as server:
        server.create_bucket(BUCKET)
        yield server


@pytest.fixture(scope="package")
def universe_imitation() -> Iterator[BinanceImitation]:
    """The imitation listing the test universe on USDT-M."""
    with BinanceImitation() as server:
        for spec in EXTRA:
            server.add_symbol(UM, spec)
        yield server


@pytest.fixture(scope="package")
def dask_client() -> Iterator[Any]:
    """A ``LocalCluster`` of two worker processes (one thread each) and its client."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


@pytest.fixture(scope="package")
def scale_settings(
    universe_imitation: BinanceImitation, tmp_path_factory: pytest.TempPathFactory
) -> Any:
    """Engine settings pointing every worker at the imitation (no kline cache: the catalog is
    the only store the jobs share)."""
    from nautilus_dsm.dsm.settings import SourceSettings

    cache: Path = tmp_path_factory.mktemp("scale-cache")
    return SourceSettings(
        base_url_http=universe_imitation.url,
        base_url_vision=universe_imitation.url,
        cache_dir=str(cache),
        use_cache=False,
    )


def expected_rows(
    imitation: BinanceImitation, symbol: str, start: datetime, end: datetime
) -> list[tuple]:
    """``(ts_init, open, high, low, close, volume)`` of the source truth, as Nautilus raws
    (value x 10**16, exact: the frame's Decimal(38, 8) integers x 10**8)."""
    frame = imitation.expected(UM, symbol, "1m", to_ms(start), to_ms(end))
    opens = frame.get_column("open_time").dt.epoch("ms").to_list()
    cols = [
        [v * 10**8 for v in frame.get_column(c).to_physical().to_list()]
        for c in ("open", "high", "low", "close", "volume")
    ]
    return [((o + 60_000) * 1_000_000, *(c[i] for c in cols)) for i, o in enumerate(opens)]


def catalog_rows(bars: list) -> list[tuple]:
    """The same tuples from Nautilus bars."""
    return [(b.ts_init, b.open.raw, b.high.raw, b.low.raw, b.close.raw, b.volume.raw) for b in bars]
