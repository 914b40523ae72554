"""Run the Binance imitation standalone: ``python -m nautilus_dsm.testing --port 0``.

Prints the REST/Vision URL (and with ``--ws`` the websocket URL on a second line), then serves
until interrupted. With ``--control`` it reads commands from stdin instead: ``stats`` prints one
JSON line (requests by HTTP status, REST weight per minute, websocket counters); end of input
stops it (benchmarks drive it this way).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import threading
from collections import Counter

import msgspec

from nautilus_dsm.common import MarketType
from nautilus_dsm.testing.server import BinanceImitation
from nautilus_dsm.testing.ws import WsConfig


def extra_symbols(srv: BinanceImitation, count: int) -> None:
    """List ``count`` more symbols on spot and USD-M (``S001USDT``...), cloned from BTCUSDT."""
    for market in (MarketType.SPOT, MarketType.FUTURES_USDT):
        template = srv.symbols(market)["BTCUSDT"]
        for i in range(1, count + 1):
            name = f"S{i:03d}USDT"
            spec = dataclasses.replace(template, symbol=name, base_asset=f"S{i:03d}")
            srv.add_symbol(market, spec)


def stats(srv: BinanceImitation) -> dict[str, object]:
    """Return what the imitation saw: requests by status, and the websocket counters."""
    by_status = Counter(str(r.status) for r in srv.requests)
    out: dict[str, object] = {"requests": len(srv.requests), "by_status": dict(by_status)}
    if srv._ws is not None:
        ws = srv.ws.stats
        out["ws"] = {
            "connections": ws.connections,
            "closed_sent": len(ws.closed_sent),
            "max_messages_per_s": ws.max_messages_per_s,
            "rate_disconnects": ws.rate_disconnects,
        }
    return out


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted (or, with ``--control``, until stdin ends)."""
    parser = argparse.ArgumentParser(
        prog="python -m nautilus_dsm.testing",
        description="Serve a local imitation of Binance REST and Binance Vision.",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port (0: any free port)")
    parser.add_argument(
        "--ws", action="store_true", help="also serve the kline websocket streams (2nd line)"
    )
    parser.add_argument(
        "--closed-on-cadence",
        action="store_true",
        help="send closed klines on the push cadence, as Binance (default: right at the close)",
    )
    parser.add_argument(
        "--symbols", type=int, default=0, help="list this many more symbols on spot and USD-M"
    )
    parser.add_argument(
        "--control", action="store_true", help="read commands from stdin (stats; EOF stops)"
    )
    args = parser.parse_args(argv)
    ws: bool | WsConfig = WsConfig(closed_on_cadence=True) if args.closed_on_cadence else args.ws
    with BinanceImitation(port=args.port, ws=ws) as srv:
        extra_symbols(srv, args.symbols)
        print(srv.url, flush=True)
        if ws:
            print(srv.ws_url, flush=True)
        if args.control:
            for line in sys.stdin:
                if line.strip() == "stats":
                    print(msgspec.json.encode(stats(srv)).decode(), flush=True)
            return
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
