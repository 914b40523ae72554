"""``nautilus-dsm cache info|clear``: inspect or clear the kline cache.

The cache is ``--cache-dir``, else the default cache of the endpoints ``--base-url-http`` /
``--base-url-vision`` name (Binance's own: the per-user cache dir). Neither command makes a
request nor draws a progress bar, so the request bounds and ``--no-progress`` are not theirs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from nautilus_dsm.cli.exits import exit_codes
from nautilus_dsm.cli.formatters import format_table
from nautilus_dsm.cli.options import PROGRESS_OPTIONS, REQUEST_BOUNDS, source_options
from nautilus_dsm.common import resolve_instrument

if TYPE_CHECKING:
    from nautilus_dsm.dsm.cache import KlineCache
    from nautilus_dsm.dsm.settings import SourceSettings

__all__ = ["cache"]

_NO_REQUESTS = (*REQUEST_BOUNDS, *PROGRESS_OPTIONS)
INFO_HEADER = ("market", "symbol", "interval", "files", "bytes", "first", "last")


@click.group()
def cache() -> None:
    """Inspect or clear the kline cache."""


def _kline_cache(settings: SourceSettings) -> KlineCache:
    from nautilus_dsm.dsm.cache import KlineCache
    from nautilus_dsm.dsm.cache_paths import endpoint_cache_dir

    if settings.cache_dir is not None:
        return KlineCache(Path(settings.cache_dir))
    return KlineCache(endpoint_cache_dir(settings.base_url_http, settings.base_url_vision))


@cache.command(name="info")
# Lists every market: --market-type is no filter of it.
@source_options(omit=(*_NO_REQUESTS, "--market-type"))
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def cache_info(as_json: bool, settings: SourceSettings) -> None:
    """Files and bytes per market / symbol / interval."""
    with exit_codes():
        info = _kline_cache(settings).info()
        if as_json:
            click.echo(json.dumps(info, indent=2))
            return
        click.echo(f"cache {info['root']}: {info['files']} file(s), {info['bytes']:,} bytes")
        rows = [
            (
                e["market"],
                e["symbol"],
                e["interval"],
                str(e["files"]),
                f"{e['bytes']:,}",
                e["first"],
                e["last"],
            )
            for e in info["entries"]
        ]
        if rows:
            click.echo(format_table(INFO_HEADER, rows))


@cache.command(name="clear")
@source_options(omit=_NO_REQUESTS)
@click.option(
    "--symbol", default=None, help="Binance symbol or Nautilus id (BTCUSDT-PERP.BINANCE)."
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def cache_clear(symbol: str | None, yes: bool, settings: SourceSettings) -> None:
    """Delete cached klines (all, or one market / symbol)."""
    with exit_codes():
        market_type = settings.market_type
        market = market_type.value if market_type is not None else None
        binance_symbol = None
        if symbol is not None:
            resolved = resolve_instrument(symbol, market_type)
            binance_symbol = resolved.symbol
            if "." in symbol or market_type is not None:
                market = resolved.market_type.value
        kline_cache = _kline_cache(settings)
        what = f"{market or 'every market'} / {binance_symbol or 'every symbol'}"
        if not yes:
            click.confirm(f"delete cached klines of {what} under {kline_cache.root}?", abort=True)
        removed = kline_cache.clear(market, binance_symbol)
        click.echo(f"removed {removed} cached file(s) of {what} from {kline_cache.root}")
