"""Run the Binance imitation standalone: ``python -m nautilus_dsm.testing --port 0``."""

from __future__ import annotations

import argparse
import contextlib
import threading

from nautilus_dsm.testing.server import BinanceImitation


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted, printing the URL to use as REST and Vision base."""
    parser = argparse.ArgumentParser(
        prog="python -m nautilus_dsm.testing",
        description="Serve a local imitation of Binance REST and Binance Vision.",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port (0: any free port)")
    parser.add_argument(
        "--ws", action="store_true", help="also serve the kline websocket streams (2nd line)"
    )
    args = parser.parse_args(argv)
    with BinanceImitation(port=args.port, ws=args.ws) as srv:
        print(srv.url, flush=True)
        if args.ws:
            print(srv.ws_url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
