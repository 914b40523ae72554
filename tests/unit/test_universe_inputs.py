"""``ingest_universe`` refuses bad arguments before any I/O (no cluster, no request)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from nautilus_dsm.distributed import UniverseSelection, ingest_universe
from nautilus_dsm.errors import InvalidInput

JAN = datetime(2024, 1, 1, tzinfo=UTC)
FEB = datetime(2024, 2, 1, tzinfo=UTC)
BTC = ["BTCUSDT-PERP.BINANCE"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"catalog": "memory:///cat", "workers": 2},
         "a memory:// catalog lives in one process; workers cannot share it. Pass a local path "
         "or an object-store URI such as s3://bucket/catalog"),
        ({"universe": ["BTCUSDT-PERP.BINANCE", "ETHUSDT.BINANCE"]},
         "instrument ids span markets ['futures_usdt', 'spot']; a universe is one market (one "
         "REST budget): run one ingest per market"),
        ({"universe": "BTCUSDT-PERP.BINANCE"},
         "universe is a UniverseSelection or a list of instrument ids; pass e.g. "
         "UniverseSelection('futures_usdt', quote='USDT')"),
        ({"universe": UniverseSelection("options")},
         "unknown market type 'options'; use one of: spot, futures_usdt, futures_coin"),
        ({"scheduler": "127.0.0.1:8786"},
         "scheduler '127.0.0.1:8786' is not a Dask address; pass e.g. tcp://10.0.0.5:8786"),
        ({"workers": 0}, "workers must be >= 1, was 0"),
        ({"retries": -1}, "retries must be >= 0, was -1"),
        ({"intervals": []}, "pass at least one interval, e.g. ['1m']"),
        ({"intervals": ["1x"]}, "unknown interval '1x'"),
        ({"start": FEB, "end": JAN}, "start 2024-02-01"),
        ({"dataset": "trades"}, "dataset 'trades' is not supported; use one of ['klines']"),
        ({"catalog": "/tmp/cat", "storage_options": {"key": "k"}},
         r"storage options ['key'] do not apply to the local catalog '/tmp/cat'"),
    ],
)  # fmt: skip
def test_refused_before_any_io(kwargs: dict, message: str) -> None:
    args = {"catalog": "/tmp/cat", "universe": BTC, "intervals": ["1m"], "start": JAN, "end": FEB}
    args.update(kwargs)
    with pytest.raises(InvalidInput) as caught:
        ingest_universe(**args)
    assert str(caught.value).startswith(message)
