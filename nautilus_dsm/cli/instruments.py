"""``nautilus-dsm instruments``: Binance instruments with tick, step and precisions."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from nautilus_dsm.cli.exits import EXIT_OK, run
from nautilus_dsm.cli.formatters import format_table
from nautilus_dsm.cli.options import PROGRESS_OPTIONS, open_manager, source_options
from nautilus_dsm.common import MarketType

if TYPE_CHECKING:
    from nautilus_dsm.dsm.settings import SourceSettings

__all__ = ["instruments"]

HEADER = ("id", "market", "tick", "step", "price_prec", "size_prec")


@click.command()
@source_options(omit=PROGRESS_OPTIONS)  # one request per market: no progress bar
def instruments(settings: SourceSettings) -> None:
    """List Binance instruments with tick, step and precisions.

    Every market, or the one of --market-type.
    """

    async def main() -> int:
        import time

        from nautilus_dsm.parsing import parse_instruments

        markets = [settings.market_type] if settings.market_type else list(MarketType)
        rows: list[tuple[str, ...]] = []
        async with open_manager(settings) as dsm:
            for market in markets:
                info = await dsm.exchange_info(market)
                for inst in parse_instruments(market, info, time.time_ns()):
                    rows.append(
                        (
                            inst.id.value,
                            market.value,
                            str(inst.price_increment),
                            str(inst.size_increment),
                            str(inst.price_precision),
                            str(inst.size_precision),
                        )
                    )
        click.echo(format_table(HEADER, rows))
        return EXIT_OK

    run(main)
