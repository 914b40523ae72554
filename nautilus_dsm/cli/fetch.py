"""``nautilus-dsm fetch``: the klines of one instrument into a parquet file, with the report."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from nautilus_dsm.cli.datasets import dataset_option, interval_for_dataset
from nautilus_dsm.cli.exits import EXIT_OK, EXIT_QUALITY, run
from nautilus_dsm.cli.formatters import quality_line, write_json
from nautilus_dsm.cli.inputs import (
    DATE_HELP,
    check_out_path,
    check_report_path,
    parse_range,
    resolve,
)
from nautilus_dsm.cli.options import open_manager, source_options
from nautilus_dsm.cli.progress import ProgressBar
from nautilus_dsm.common import resolve_instrument
from nautilus_dsm.common.symbols import refuse_marketless_symbol
from nautilus_dsm.errors import QualityBelowThreshold

if TYPE_CHECKING:
    from nautilus_dsm.common import Interval, ResolvedInstrument
    from nautilus_dsm.dsm.manager import DataSourceManager, FetchResult
    from nautilus_dsm.dsm.settings import SourceSettings

__all__ = ["fetch", "fetch_with_progress"]


async def fetch_with_progress(
    dsm: DataSourceManager,
    resolved: ResolvedInstrument,
    iv: Interval,
    start: datetime,
    end: datetime,
    show_progress: bool,
    dataset: str = "klines",
) -> tuple[FetchResult, int]:
    """Fetch with a progress bar; below the threshold keep the result, with exit code 3."""
    progress = ProgressBar(show_progress, resolved.instrument_id, "period")
    try:
        result = await dsm.fetch(
            resolved.instrument_id, iv.value, start, end, progress=progress, dataset=dataset
        )
        return result, EXIT_OK
    except QualityBelowThreshold as e:
        if e.result is None:
            raise
        return e.result, EXIT_QUALITY
    finally:
        progress.close()


@click.command()
@click.argument("instrument_id")
@click.option(
    "--interval", default=None, help="Binance interval: 1s 1m 3m ... 1d 1w 1M (not for funding)."
)
@click.option("--start", required=True, help=f"First bar open time, {DATE_HELP}.")
@click.option("--end", required=True, help=f"End (exclusive), {DATE_HELP}.")
@source_options(min_completeness=True)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Parquet file for the klines (the name must end in .parquet).",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="JSON file for the quality report.",
)
@dataset_option
def fetch(
    instrument_id: str,
    interval: str | None,
    start: str,
    end: str,
    out: Path,
    report_path: Path | None,
    settings: SourceSettings,
    show_progress: bool,
    dataset: str = "klines",
) -> None:
    """Fetch the klines of INSTRUMENT_ID into a parquet file.

    INSTRUMENT_ID is a Nautilus id such as BTCUSDT-PERP.BINANCE, or a Binance symbol with
    --market-type. Bars are those with open time in [start, end), closed bars only. With
    --dataset mark/index/premium the futures' mark, index or premium-index price klines;
    with --dataset funding the funding rates (boundaries in [start, end), no --interval).
    """

    async def main() -> int:
        if interval_for_dataset(dataset, interval) is None:
            return await _fetch_funding(instrument_id, start, end, out, report_path, settings)
        assert interval is not None
        resolved, iv = resolve(instrument_id, settings.market_type, interval)
        start_dt, end_dt = parse_range(start, end)
        check_out_path(out)
        check_report_path(report_path, out)
        async with open_manager(settings) as dsm:
            result, code = await fetch_with_progress(
                dsm, resolved, iv, start_dt, end_dt, show_progress, dataset
            )
        out.parent.mkdir(parents=True, exist_ok=True)
        result.frame.write_parquet(out)
        report = result.report
        if report_path is not None:
            write_json(report_path, report.to_dict())
        click.echo(report.summary())
        click.echo(f"wrote {result.frame.height} bars to {out}")
        if code == EXIT_QUALITY:
            written = f"{out}" + (f" and report to {report_path}" if report_path else "")
            click.echo(quality_line(report, settings.min_completeness, written), err=True)
        return code

    run(main)


async def _fetch_funding(
    instrument_id: str,
    start: str,
    end: str,
    out: Path,
    report_path: Path | None,
    settings: SourceSettings,
) -> int:
    from nautilus_dsm.cli.datasets import fetch_funding, funding_lines, funding_quality_line

    refuse_marketless_symbol(instrument_id, settings.market_type)
    resolved = resolve_instrument(instrument_id, settings.market_type)
    start_dt, end_dt = parse_range(start, end)
    check_out_path(out)
    check_report_path(report_path, out)
    async with open_manager(settings) as dsm:
        result, code = await fetch_funding(
            dsm, resolved, start_dt, end_dt, settings.min_completeness
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    result.frame.write_parquet(out)
    if report_path is not None:
        write_json(report_path, result.report.to_dict())
    for line in funding_lines(result.report):
        click.echo(line)
    click.echo(f"wrote {result.frame.height} funding events to {out}")
    if code == EXIT_QUALITY:
        click.echo(funding_quality_line(result.report, settings.min_completeness), err=True)
    return code
