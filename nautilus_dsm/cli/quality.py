"""``nautilus-dsm quality``: the quality table of one instrument's klines, alerts flagged."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from nautilus_dsm.cli.datasets import dataset_option, interval_for_dataset
from nautilus_dsm.cli.exits import EXIT_QUALITY, run
from nautilus_dsm.cli.fetch import fetch_with_progress
from nautilus_dsm.cli.formatters import (
    cache_is_cold,
    format_quality,
    quality_line,
    quality_rows,
)
from nautilus_dsm.cli.inputs import DATE_HELP, parse_range, resolve
from nautilus_dsm.cli.options import open_manager, source_options
from nautilus_dsm.common import resolve_instrument
from nautilus_dsm.common.datasets import Dataset
from nautilus_dsm.common.symbols import refuse_marketless_symbol

if TYPE_CHECKING:
    from nautilus_dsm.dsm.settings import SourceSettings

__all__ = ["quality"]


@click.command()
@click.argument("instrument_id")
@click.option(
    "--interval", default=None, help="Binance interval: 1s 1m 3m ... 1d 1w 1M (not for funding)."
)
@click.option("--start", required=True, help=f"First bar open time, {DATE_HELP}.")
@click.option("--end", required=True, help=f"End (exclusive), {DATE_HELP}.")
@source_options(min_completeness=True)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@dataset_option
def quality(
    instrument_id: str,
    interval: str | None,
    start: str,
    end: str,
    as_json: bool,
    settings: SourceSettings,
    show_progress: bool,
    dataset: str = "klines",
) -> None:
    """Report the data quality of INSTRUMENT_ID klines, alerts flagged.

    Alerts: completeness < 95%, bar success rate < 90%, cache hit rate < 60% (once the
    cache is warm: a first fetch of a range finds nothing cached by construction). The timings
    line gives the wall time and each source's seconds summed over its concurrent calls. With
    --dataset mark/index/premium the same report of those price klines (the bar success rate
    converts mark klines to MARK bars; index and premium klines are not bars, so it is n/a:
    100%); with --dataset funding the funding report (events, gaps, interval changes,
    off-boundary events).
    """

    async def main() -> int:
        if interval_for_dataset(dataset, interval) is None:
            return await _funding_quality(instrument_id, start, end, as_json, settings)
        assert interval is not None
        resolved, iv = resolve(instrument_id, settings.market_type, interval)
        start_dt, end_dt = parse_range(start, end)
        async with open_manager(settings) as dsm:
            result, code = await fetch_with_progress(
                dsm, resolved, iv, start_dt, end_dt, show_progress, dataset
            )
            # The bar success rate converts the klines to Nautilus bars: NautilusTrader is
            # imported here, once the fetch is done, not when the command starts.
            from nautilus_dsm.bars import convert_frame
            from nautilus_dsm.providers import DSMInstrumentProvider

            # History is wanted, so symbols listed but not trading count.
            instrument = await DSMInstrumentProvider(dsm.exchange_info).instrument_for(
                resolved.instrument_id, include_non_trading=True
            )
        success, invalid = 1.0, 0
        if Dataset.parse(dataset) in (Dataset.KLINES, Dataset.MARK_PRICE_KLINES):
            from nautilus_dsm.perp_data import bar_type_for_dataset

            bar_type = bar_type_for_dataset(resolved.instrument_id, iv, dataset)
            conversion = convert_frame(result.frame, bar_type, instrument)
            success, invalid = conversion.success_rate, conversion.invalid.height
        min_completeness = settings.min_completeness
        rows = quality_rows(result.report, success, min_completeness)
        if as_json:
            payload = result.report.to_dict()
            payload["bar_success_rate"] = success
            payload["invalid_bars"] = invalid
            payload["alerts"] = [name for name, _, _, alert in rows if alert]
            payload["cache_cold"] = cache_is_cold(result.report)
            click.echo(json.dumps(payload, indent=2))
        else:
            click.echo(format_quality(result.report, rows))
        if code == EXIT_QUALITY:
            click.echo(quality_line(result.report, min_completeness, None), err=True)
        return code

    run(main)


async def _funding_quality(
    instrument_id: str, start: str, end: str, as_json: bool, settings: SourceSettings
) -> int:
    from nautilus_dsm.cli.datasets import fetch_funding, funding_lines, funding_quality_line

    refuse_marketless_symbol(instrument_id, settings.market_type)
    resolved = resolve_instrument(instrument_id, settings.market_type)
    start_dt, end_dt = parse_range(start, end)
    async with open_manager(settings) as dsm:
        result, code = await fetch_funding(
            dsm, resolved, start_dt, end_dt, settings.min_completeness
        )
    if as_json:
        click.echo(json.dumps(result.report.to_dict(), indent=2))
    else:
        for line in funding_lines(result.report):
            click.echo(line)
    if code == EXIT_QUALITY:
        click.echo(funding_quality_line(result.report, settings.min_completeness), err=True)
    return code
