"""``--dataset`` of ``fetch``, ``quality`` and ``ingest``: klines, mark, index, premium, funding.

``klines`` (the default) keeps every command as it was. ``mark``, ``index`` and ``premium`` are
the futures' mark, index and premium-index price klines (same engine, same report); ``funding``
the funding rates (no ``--interval``; its report counts events, gaps and interval changes).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from nautilus_dsm.cli.exits import EXIT_OK, EXIT_QUALITY
from nautilus_dsm.cli.formatters import pct
from nautilus_dsm.common.datasets import Dataset
from nautilus_dsm.errors import InvalidInput

if TYPE_CHECKING:
    from nautilus_dsm.common import ResolvedInstrument
    from nautilus_dsm.dsm.funding_fetch import FundingResult
    from nautilus_dsm.dsm.funding_quality import FundingQualityReport
    from nautilus_dsm.dsm.manager import DataSourceManager

__all__ = [
    "DATASET_CHOICES",
    "dataset_option",
    "fetch_funding",
    "funding_lines",
    "ingest_datasets_option",
    "interval_for_dataset",
]

DATASET_CHOICES = [d.short for d in Dataset]
_HELP = (
    "Dataset: klines (default), mark / index / premium (futures mark, index and premium-index "
    "price klines), funding (funding rates, no --interval)."
)


def dataset_option[F: Callable[..., Any]](fn: F) -> F:
    """Add ``--dataset`` (one of :data:`DATASET_CHOICES`, default ``klines``) to a command."""
    return click.option(
        "--dataset",
        type=click.Choice(DATASET_CHOICES, case_sensitive=False),
        default="klines",
        show_default=True,
        help=_HELP,
    )(fn)


def ingest_datasets_option[F: Callable[..., Any]](fn: F) -> F:
    """Add ``--dataset`` (repeatable; default ``klines``) to ``ingest``."""
    return click.option(
        "--dataset",
        "datasets",
        type=click.Choice(DATASET_CHOICES, case_sensitive=False),
        multiple=True,
        default=("klines",),
        show_default=True,
        help="Repeat for several: klines (LAST bars), mark (MARK bars), index "
        "(IndexPriceUpdate), funding (FundingRateUpdate).",
    )(fn)


def interval_for_dataset(dataset: str, interval: str | None) -> str | None:
    """Return the interval a dataset needs (None for funding); refuse a missing or stray one."""
    if Dataset.parse(dataset) is Dataset.FUNDING_RATES:
        if interval is not None:
            raise InvalidInput(
                "--interval does not apply to --dataset funding (funding events fall on the "
                "funding boundaries); drop --interval"
            )
        return None
    if interval is None:
        raise InvalidInput(f"--interval is required for --dataset {dataset}, e.g. --interval 1m")
    return interval


async def fetch_funding(
    dsm: DataSourceManager,
    resolved: ResolvedInstrument,
    start: datetime,
    end: datetime,
    min_completeness: float,
) -> tuple[FundingResult, int]:
    """Fetch funding rates; below ``min_completeness`` keep the result, with exit code 3."""
    result = await dsm.fetch_funding_rates(resolved.instrument_id, start, end)
    code = EXIT_QUALITY if result.report.completeness < min_completeness else EXIT_OK
    return result, code


def funding_lines(report: FundingQualityReport) -> list[str]:
    """Return the human report of a funding fetch: summary, gaps, interval changes, warnings."""
    lines = [report.summary()]
    lines.append(
        f"  sources: cache {report.sources.get('cache', 0)}, vision "
        f"{report.sources.get('vision', 0)}, rest {report.sources.get('rest', 0)}; "
        f"max calc_time offset {report.max_calc_offset_ms} ms"
    )
    lines.extend(f"  gap: {g} every {g.interval_hours} h" for g in report.gaps)
    lines.extend(
        f"  interval change at {t:%Y-%m-%dT%H:%M}Z: {a} h -> {b} h"
        for t, a, b in report.interval_changes
    )
    lines.extend(f"  warning: {w}" for w in report.warnings)
    return lines


def funding_quality_line(report: FundingQualityReport, min_completeness: float) -> str:
    """Return the stderr line of exit code 3 for funding."""
    return (
        f"quality below threshold: {report.instrument_id} funding completeness "
        f"{pct(report.completeness)} ({report.events} of {report.expected_events} events, "
        f"{len(report.gaps)} gap(s)) < --min-completeness {pct(min_completeness)}"
    )
