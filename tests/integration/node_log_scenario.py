"""A TradingNode whose Vision source fails, run in its own process (Nautilus logging is global).

``python -m tests.integration.node_log_scenario LOG_DIR``: starts the imitation with a bad
checksum on BTCUSDT's 1h Vision files of January 2024, requests that day's 1h bars through the
DSM client, and exits 0 once the request answered (24 bars expected). The node logs to
``LOG_DIR/node.log`` at INFO; test_log_bridge.py reads it.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pandas as pd
from nautilus_trader.common.actor import Actor
from nautilus_trader.common.component import flush_logger
from nautilus_trader.config import LoggingConfig, TradingNodeConfig
from nautilus_trader.live.node import TradingNode
from nautilus_trader.model.data import Bar, BarType
from nautilus_trader.model.identifiers import ClientId

from nautilus_dsm import DSMDataClientConfig, DSMInstrumentProviderConfig, DSMLiveDataClientFactory
from nautilus_dsm.testing import BinanceImitation

BAR_TYPE = BarType.from_str("BTCUSDT.BINANCE-1-HOUR-LAST-EXTERNAL")


class RequestOnce(Actor):
    def __init__(self) -> None:
        super().__init__()
        self.bars: list[Bar] = []
        self.done = asyncio.Event()

    def on_start(self) -> None:
        self.request_bars(
            BAR_TYPE,
            start=pd.Timestamp("2024-01-01T00:00:00+00:00"),
            end=pd.Timestamp("2024-01-02T00:00:00+00:00"),
            client_id=ClientId("DSM"),
            callback=lambda _request_id: self.done.set(),
        )

    def on_historical_data(self, data: object) -> None:
        if isinstance(data, Bar):
            self.bars.append(data)


def main(log_dir: Path) -> int:
    with BinanceImitation() as srv:
        srv.faults.vision_bad_checksum |= {"BTCUSDT-1h-2024-01.zip", "BTCUSDT-1h-2024-01-01.zip"}
        loop = asyncio.new_event_loop()
        node = TradingNode(
            config=TradingNodeConfig(
                trader_id="LOGGER-001",
                logging=LoggingConfig(
                    log_level="INFO",
                    log_level_file="INFO",
                    log_directory=str(log_dir),
                    log_file_name="node",
                    log_colors=False,
                ),
                data_clients={
                    "DSM": DSMDataClientConfig(
                        base_url_http=srv.url,
                        base_url_vision=srv.url,
                        cache_dir=str(log_dir / "cache"),
                        live_source="rest",
                        instrument_provider=DSMInstrumentProviderConfig(
                            load_ids=frozenset({"BTCUSDT.BINANCE"})
                        ),
                    )
                },
                timeout_connection=20.0,
                timeout_disconnection=5.0,
                timeout_post_stop=0.1,
            ),
            loop=loop,
        )
        node.add_data_client_factory("DSM", DSMLiveDataClientFactory)
        node.build()
        actor = RequestOnce()
        node.trader.add_actor(actor)

        async def scenario() -> None:
            run = asyncio.ensure_future(node.run_async())
            try:
                await asyncio.wait_for(actor.done.wait(), timeout=60)
            finally:
                await node.stop_async()
                run.cancel()
                await asyncio.gather(run, return_exceptions=True)

        try:
            loop.run_until_complete(scenario())
        finally:
            # dispose() closes a stopped loop with the actors' executor tasks still pending
            node.kernel.cancel_all_tasks()
            node.dispose()
            loop.close()
            # The file writer is buffered; a process ending right after a node keeps the tail
            # only once flushed (the log guard would, at interpreter exit, too late for us).
            flush_logger()
        print(f"bars={len(actor.bars)}")
        return 0 if len(actor.bars) == 24 else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
