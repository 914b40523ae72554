"""``nautilus-dsm ingest-universe``: a market's symbols into one catalog, on a Dask cluster."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from nautilus_dsm.cli.exits import EXIT_FAILURE, exit_codes, one_line
from nautilus_dsm.cli.inputs import DATE_HELP, parse_range
from nautilus_dsm.cli.options import MARKET_CHOICES, source_options

if TYPE_CHECKING:
    from nautilus_dsm.dsm.settings import SourceSettings

__all__ = ["ingest_universe_command"]


def _names(values: tuple[str, ...]) -> tuple[str, ...]:
    # --exclude A --exclude B,C -> (A, B, C)
    return tuple(n.strip() for v in values for n in v.split(",") if n.strip())


@click.command(name="ingest-universe")
@click.option(
    "--universe",
    "market",
    type=click.Choice(MARKET_CHOICES),
    required=True,
    help="The market whose listed symbols make the universe (futures: perpetuals).",
)
@click.option("--quote", default=None, help="Keep only this quote asset (e.g. USDT).")
@click.option(
    "--status",
    default="TRADING",
    show_default=True,
    help="TRADING, all (symbols no longer trading too: their history exists), or a status.",
)
@click.option(
    "--symbols-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Keep only the symbols listed in this file (one a line, # comments).",
)
@click.option("--exclude", multiple=True, help="Drop these symbols (repeat, or comma-separated).")
@click.option(
    "--interval", "intervals", multiple=True, required=True, help="Repeat for several intervals."
)
@click.option("--start", required=True, help=f"First bar open time, {DATE_HELP}.")
@click.option("--end", required=True, help=f"End (exclusive), {DATE_HELP}.")
@click.option(
    "--catalog",
    "catalog_uri",
    required=True,
    help="Catalog path or URI every worker reaches (s3://bucket/prefix, gs://..., a shared path).",
)
@click.option(
    "--storage-option",
    "storage_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Object-store option (endpoint_url, key, secret, token, region); AWS_* env otherwise.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Start a local cluster of this many worker processes [default: one per core].",
)
@click.option(
    "--scheduler", default=None, help="Use the Dask cluster at this address (tcp://host:8786)."
)
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Re-runs of a series-month that failed (a dead worker's tasks are re-run anyway).",
)
@click.option(
    "--lock-timeout",
    "lock_timeout_s",
    type=click.FloatRange(min=0.0),
    default=600.0,
    show_default=True,
    help="Seconds a task waits for another writer of its series.",
)
@click.option(
    "--lock-ttl",
    "lock_ttl_s",
    type=click.FloatRange(min=1.0),
    default=30.0,
    show_default=True,
    help="Object stores: seconds after which a dead writer's series lock is taken over.",
)
@click.option(
    "--rest-requests-per-minute",
    "rest_requests",
    type=click.IntRange(min=1),
    default=None,
    help="REST requests a minute for the whole cluster [default: 80% of the market's weight].",
)
@source_options(omit=("--market-type",), min_completeness=True)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def ingest_universe_command(
    market: str,
    quote: str | None,
    status: str,
    symbols_file: str | None,
    exclude: tuple[str, ...],
    intervals: tuple[str, ...],
    start: str,
    end: str,
    catalog_uri: str,
    storage_options: tuple[str, ...],
    workers: int | None,
    scheduler: str | None,
    retries: int,
    lock_timeout_s: float,
    lock_ttl_s: float,
    rest_requests: int | None,
    as_json: bool,
    settings: SourceSettings,
    show_progress: bool,
) -> None:
    """Ingest every symbol of a Binance market into one catalog, a task per series and month.

    Months before a symbol's listing are not planned, months the catalog holds are skipped,
    and the rest run on Dask (--workers N local processes, or --scheduler). Tasks are
    idempotent: a dead worker's task is re-run, a re-run of the command resumes, concurrent
    runs write each bar once (one writer per series, also on object stores). REST weight is
    shared by the whole cluster; Vision downloads are not limited. Exit 1 when a series-month
    failed after its retries (the report names it).
    """  # fmt: skip
    with exit_codes():
        from nautilus_dsm.catalog.storage import catalog_location, parse_storage_options
        from nautilus_dsm.distributed import UniverseSelection, ingest_universe
        from nautilus_dsm.universe import read_symbols_file

        start_dt, end_dt = parse_range(start, end)
        location = catalog_location(catalog_uri, parse_storage_options(storage_options))
        selection = UniverseSelection(
            market,
            quote=quote,
            status=status,
            symbols=tuple(read_symbols_file(symbols_file)) if symbols_file else None,
            exclude=_names(exclude),
        )
        report = ingest_universe(
            location, selection, list(intervals), start_dt, end_dt,
            settings=settings, workers=workers, scheduler=scheduler, retries=retries,
            lock_timeout_s=lock_timeout_s, lock_ttl_s=lock_ttl_s, rest_requests=rest_requests,
            progress=show_progress,
        )  # fmt: skip
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.summary())
    if report.failed:
        failures = "; ".join(f"{k}: {v}" for k, v in sorted(report.failures.items()))
        click.echo(one_line(f"error: {report.failed} series-months failed: {failures}"), err=True)
        raise SystemExit(EXIT_FAILURE)
