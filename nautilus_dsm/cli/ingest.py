"""``nautilus-dsm ingest``: bars of instruments into a NautilusTrader ``ParquetDataCatalog``."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from nautilus_dsm.cli.datasets import ingest_datasets_option
from nautilus_dsm.cli.exits import EXIT_OK, EXIT_QUALITY, one_line, run
from nautilus_dsm.cli.formatters import invalid_line, quality_line
from nautilus_dsm.cli.inputs import DATE_HELP, check_dir_path, parse_range, resolve
from nautilus_dsm.cli.options import open_manager, source_options
from nautilus_dsm.cli.progress import ProgressBar
from nautilus_dsm.errors import QualityBelowThreshold

if TYPE_CHECKING:
    from nautilus_dsm.dsm.settings import SourceSettings

__all__ = ["ingest_command"]


def _catalog_for(catalog_path: str) -> Any:
    from nautilus_dsm.catalog.storage import open_catalog

    if "://" not in catalog_path:
        check_dir_path(Path(catalog_path), "--catalog")
        Path(catalog_path).expanduser().mkdir(parents=True, exist_ok=True)
        catalog_path = str(Path(catalog_path).expanduser())
    # Not ParquetDataCatalog.from_uri, which breaks s3:// (credentials: AWS_* variables).
    return open_catalog(catalog_path)


def _below_threshold(e: QualityBelowThreshold, min_completeness: float, catalog_path: str) -> int:
    """Print the exit-3 lines of an ingest stopped by a chunk below the threshold."""
    line = f"quality below threshold: {e}"
    if e.result is not None:
        line = quality_line(e.result.report, min_completeness, catalog_path)
        line += " (chunks before it are in the catalog; a re-run resumes there)"
    click.echo(one_line(line), err=True)
    partial = getattr(e, "ingest_report", None)
    if partial is not None and partial.invalid:
        click.echo(invalid_line(partial), err=True)
    return EXIT_QUALITY


@click.command(name="ingest")
@click.argument("instrument_ids", nargs=-1, required=True)
@click.option(
    "--interval", "intervals", multiple=True, required=True, help="Repeat for several intervals."
)
@click.option("--start", required=True, help=f"First bar open time, {DATE_HELP}.")
@click.option("--end", required=True, help=f"End (exclusive), {DATE_HELP}.")
@click.option(
    "--catalog",
    "catalog_path",
    required=True,
    help="ParquetDataCatalog path or URI (created if missing).",
)
@click.option(
    "--chunk-days",
    type=click.IntRange(min=1),
    default=7,
    show_default=True,
    help="Days fetched and written per file (bounds memory).",
)
@click.option(
    "--lock-timeout",
    "lock_timeout_s",
    type=click.FloatRange(min=0.0),
    default=60.0,
    show_default=True,
    help="Seconds to wait for another ingest writing the same bar type before giving up.",
)
@source_options(min_completeness=True)
@click.option("--json", "as_json", is_flag=True, help="Print the ingest report as JSON.")
@ingest_datasets_option
def ingest_command(
    instrument_ids: tuple[str, ...],
    intervals: tuple[str, ...],
    start: str,
    end: str,
    catalog_path: str,
    chunk_days: int,
    lock_timeout_s: float,
    as_json: bool,
    settings: SourceSettings,
    show_progress: bool,
    datasets: tuple[str, ...] = ("klines",),
) -> None:
    """Ingest bars of INSTRUMENT_IDS into a Nautilus catalog.

    Re-runs (and overlapping ranges) only fetch and write what the catalog does not hold yet; an
    interrupted run resumes. Concurrent runs into one catalog take turns per bar type (a lock
    file beside it), so no bar is ever written twice; files follow a fixed grid (UTC months for
    1m) whatever --chunk-days is. Chunks recorded with gaps are asked for again on a re-run and
    rewritten once the source has the bars. Klines that cannot be bars (e.g. high < low) are
    reported with their open times and skipped. --dataset (repeatable) adds MARK bars (mark),
    IndexPriceUpdate (index) and FundingRateUpdate (funding) of perpetuals, written per month
    as exactly once and as resumably.
    """

    async def main() -> int:
        from nautilus_dsm.catalog import ingest_async

        ids = []
        for instrument_id in instrument_ids:
            for interval in intervals:
                resolved, _ = resolve(instrument_id, settings.market_type, interval)
            ids.append(resolved.instrument_id)
        start_dt, end_dt = parse_range(start, end)
        catalog = _catalog_for(catalog_path)
        progress = ProgressBar(show_progress, "ingest", "chunk")
        try:
            async with open_manager(settings) as dsm:
                report = await ingest_async(
                    catalog,
                    ids,
                    list(intervals),
                    start_dt,
                    end_dt,
                    dsm=dsm,
                    chunk=timedelta(days=chunk_days),
                    progress=progress,
                    lock_timeout_s=lock_timeout_s,
                    datasets=list(datasets),
                )
        except QualityBelowThreshold as e:
            progress.close()
            return _below_threshold(e, settings.min_completeness, str(catalog_path))
        finally:
            progress.close()
        if as_json:
            click.echo(json.dumps(report.to_dict(), indent=2))
        else:
            click.echo(report.summary())
        if report.invalid:
            click.echo(invalid_line(report), err=True)
        return EXIT_OK

    run(main)
