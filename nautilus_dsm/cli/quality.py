"""``nautilus-dsm quality``: the quality table of one instrument's klines, alerts flagged."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

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

if TYPE_CHECKING:
    from nautilus_dsm.dsm.settings import SourceSettings

__all__ = ["quality"]


@click.command()
@click.argument("instrument_id")
@click.option("--interval", required=True, help="Binance interval: 1s 1m 3m ... 1d 1w 1M.")
@click.option("--start", required=True, help=f"First bar open time, {DATE_HELP}.")
@click.option("--end", required=True, help=f"End (exclusive), {DATE_HELP}.")
@source_options(min_completeness=True)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def quality(
    instrument_id: str,
    interval: str,
    start: str,
    end: str,
    as_json: bool,
    settings: SourceSettings,
    show_progress: bool,
) -> None:
    """Report the data quality of INSTRUMENT_ID klines, alerts flagged.

    Alerts: completeness < 95%, bar success rate < 90%, cache hit rate < 60% (once the
    cache is warm: a first fetch of a range finds nothing cached by construction). The timings
    line gives the wall time and each source's seconds summed over its concurrent calls.
    """

    async def main() -> int:
        resolved, iv = resolve(instrument_id, settings.market_type, interval)
        start_dt, end_dt = parse_range(start, end)
        async with open_manager(settings) as dsm:
            result, code = await fetch_with_progress(
                dsm, resolved, iv, start_dt, end_dt, show_progress
            )
            # The bar success rate converts the klines to Nautilus bars: NautilusTrader is
            # imported here, once the fetch is done, not when the command starts.
            from nautilus_dsm.bars import bar_type_for, convert_frame
            from nautilus_dsm.providers import DSMInstrumentProvider

            # History is wanted, so symbols listed but not trading count.
            instrument = await DSMInstrumentProvider(dsm.exchange_info).instrument_for(
                resolved.instrument_id, include_non_trading=True
            )
        conversion = convert_frame(
            result.frame, bar_type_for(resolved.instrument_id, iv), instrument
        )
        min_completeness = settings.min_completeness
        rows = quality_rows(result.report, conversion.success_rate, min_completeness)
        if as_json:
            payload = result.report.to_dict()
            payload["bar_success_rate"] = conversion.success_rate
            payload["invalid_bars"] = conversion.invalid.height
            payload["alerts"] = [name for name, _, _, alert in rows if alert]
            payload["cache_cold"] = cache_is_cold(result.report)
            click.echo(json.dumps(payload, indent=2))
        else:
            click.echo(format_quality(result.report, rows))
        if code == EXIT_QUALITY:
            click.echo(quality_line(result.report, min_completeness, None), err=True)
        return code

    run(main)
