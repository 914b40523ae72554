"""``nautilus-dsm cache info|clear``: inspect or clear the kline cache, or a part of it.

The cache is ``--cache-dir``, else the default cache of the endpoints ``--base-url-http`` /
``--base-url-vision`` name (Binance's own: ``$NAUTILUS_DSM_CACHE_DIR`` or the per-user cache
dir). Both commands select by ``--market-type``, ``--symbol``, ``--interval``, ``--start`` /
``--end`` (whole period files: UTC days, years for 1d and longer) and ``--gaps-only``
(provisional periods and periods recording missing bars: clear them and fetch again to repair a
cached gap). ``clear`` prints its plan before it asks; declining deletes nothing and exits 0.
Neither makes a request nor draws a progress bar, so the request bounds and the progress
options are not theirs.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from nautilus_dsm.cli.exits import EXIT_FAILURE, exit_codes, fail
from nautilus_dsm.cli.formatters import format_table
from nautilus_dsm.cli.inputs import DATE_HELP, parse_utc
from nautilus_dsm.cli.options import PROGRESS_OPTIONS, REQUEST_BOUNDS, source_options
from nautilus_dsm.common import Interval, resolve_instrument, to_ms
from nautilus_dsm.errors import InvalidInput

if TYPE_CHECKING:
    from nautilus_dsm.dsm.cache_selection import CachePlan, CacheSelection
    from nautilus_dsm.dsm.settings import SourceSettings

__all__ = ["cache", "selection_of"]

_NO_REQUESTS = (*REQUEST_BOUNDS, *PROGRESS_OPTIONS)
_MARKET_HELP = "Only this market (default: every market)."
INFO_HEADER = (
    "dataset", "market", "symbol", "interval", "files", "provisional", "bytes", "first", "last",
)  # fmt: skip


@click.group()
def cache() -> None:
    """Inspect or clear the kline cache (all of it, or a selection)."""


def _cache_root(settings: SourceSettings) -> Path:
    # The file-level helpers, not KlineCache: listing and deleting need no polars, so
    # `nautilus-dsm cache` starts in about half a second.
    from nautilus_dsm.dsm.cache_paths import endpoint_cache_dir

    if settings.cache_dir is not None:
        return Path(settings.cache_dir)
    return endpoint_cache_dir(settings.base_url_http, settings.base_url_vision)


def _plan(root: Path, selection: CacheSelection) -> CachePlan:
    from nautilus_dsm.dsm.cache_files import list_periods
    from nautilus_dsm.dsm.cache_selection import plan_selection

    return plan_selection(root, list_periods(root, selection), selection)


def selection_of(
    market_type: Any,
    symbol: str | None,
    interval: str | None,
    start: str | None,
    end: str | None,
    gaps_only: bool,
) -> CacheSelection:
    """
    Return the cache selection of the command's options (pure; bad input: InvalidInput).

    A Nautilus id in ``--symbol`` selects its market; a raw Binance symbol selects that
    symbol folder in every market unless ``--market-type`` names one.
    """
    from nautilus_dsm.dsm.cache_selection import CacheSelection

    market = market_type.value if market_type is not None else None
    binance_symbol = None
    if symbol is not None:
        resolved = resolve_instrument(symbol, market_type)
        binance_symbol = resolved.symbol
        if "." in symbol or "_" in symbol or symbol.upper().endswith("-PERP"):
            market = resolved.market_type.value
    start_ms = to_ms(parse_utc(start, "--start")) if start is not None else None
    end_ms = to_ms(parse_utc(end, "--end")) if end is not None else None
    if start_ms is not None and end_ms is not None and end_ms <= start_ms:
        raise InvalidInput(f"--end {end!r} is not after --start {start!r}; swap them")
    return CacheSelection(
        market=market,
        symbol=binance_symbol,
        interval=Interval.parse(interval).path_label if interval is not None else None,
        start_ms=start_ms,
        end_ms=end_ms,
        gaps_only=gaps_only,
    )


def _selection_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add --symbol, --interval, --start, --end, --gaps-only; hand ``selection=`` over."""

    @functools.wraps(fn)
    def command(**kwargs: Any) -> Any:
        settings = kwargs["settings"]
        with exit_codes():
            kwargs["selection"] = selection_of(
                settings.market_type,
                kwargs.pop("symbol"),
                kwargs.pop("interval"),
                kwargs.pop("start"),
                kwargs.pop("end"),
                kwargs.pop("gaps_only"),
            )
        return fn(**kwargs)

    options = [
        click.option(
            "--symbol",
            default=None,
            help="Binance symbol (every market unless --market-type) or Nautilus id "
            "(BTCUSDT-PERP.BINANCE: its market only).",
        ),
        click.option("--interval", default=None, help="Only this interval (1m, 1h, 1M...)."),
        click.option(
            "--start",
            default=None,
            help=f"Only periods ending after this time, {DATE_HELP}.",
        ),
        click.option(
            "--end", default=None, help="Only periods starting before this time (exclusive)."
        ),
        click.option(
            "--gaps-only",
            is_flag=True,
            help="Only provisional periods and periods recording missing bars (clear them, "
            "then fetch again to repair a gap).",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _plan_rows(plan: CachePlan) -> list[tuple[str, ...]]:
    return [
        (
            e.get("dataset", "klines"),
            e["market"],
            e["symbol"],
            e["interval"],
            str(e["files"]),
            str(e["provisional"]),
            f"{e['bytes']:,}",
            e["first"],
            e["last"],
        )
        for e in (s.to_dict() for s in plan.series)
    ]


@cache.command(name="info")
@source_options(omit=_NO_REQUESTS, market_help=_MARKET_HELP)
@_selection_options
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def cache_info(as_json: bool, settings: SourceSettings, selection: CacheSelection) -> None:
    """Files, provisional files and bytes per market / symbol / interval."""
    with exit_codes():
        from nautilus_dsm.dsm.cache_files import quarantined_files

        root = _cache_root(settings)
        plan = _plan(root, selection)
        info = plan.to_dict(quarantined_files(root))
        if as_json:
            click.echo(json.dumps(info, indent=2))
            return
        click.echo(
            f"cache {info['root']}: {info['files']} file(s), {info['bytes']:,} bytes"
            + ("" if selection.everything else f" of {selection.describe()}")
        )
        rows = _plan_rows(plan)
        if rows:
            click.echo(format_table(INFO_HEADER, rows))


def _confirmed() -> bool:
    """Ask; no answer at all (stdin closed, Ctrl-C) deletes nothing and fails (exit 1)."""
    try:
        return click.confirm("delete them?", default=False)
    except click.Abort:
        fail(EXIT_FAILURE, "cache clear: no answer, nothing deleted; pass --yes in scripts")


@cache.command(name="clear")
@source_options(omit=_NO_REQUESTS, market_help=_MARKET_HELP)
@_selection_options
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (for scripts).")
def cache_clear(yes: bool, settings: SourceSettings, selection: CacheSelection) -> None:
    """Delete cached klines: all, or the selected periods.

    Prints what it will delete, then asks (unless --yes); answering no deletes nothing and
    exits 0. A fetch after a clear gets the deleted periods again from Vision or REST.
    """
    with exit_codes():
        from nautilus_dsm.dsm.cache_files import clear_selected, quarantined_files

        root = _cache_root(settings)
        plan = _plan(root, selection)
        what = selection.describe()
        # Clearing everything empties the quarantine too: count it in the plan.
        quarantined = quarantined_files(root) if selection.everything else 0
        if plan.files == 0 and quarantined == 0:
            click.echo(f"nothing to delete: no cached file of {what} under {root}")
            return
        also = f" and {quarantined} quarantined file(s)" if quarantined else ""
        click.echo(
            f"will delete {plan.files} cached file(s), {plan.bytes:,} bytes, of {what}{also} "
            f"under {root}:"
        )
        if plan.files:
            click.echo(format_table(INFO_HEADER, _plan_rows(plan)))
        if not yes and not _confirmed():
            click.echo("nothing deleted")
            return
        removed = clear_selected(plan)
        click.echo(f"removed {removed} cached file(s) of {what}{also} from {root}")
