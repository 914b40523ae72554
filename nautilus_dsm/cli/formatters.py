"""What the commands print: tables, the quality table and its alerts, the exit-3 line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nautilus_dsm.common.times import iso

if TYPE_CHECKING:
    from nautilus_dsm.dsm.quality import QualityReport

__all__ = [
    "BAR_SUCCESS_ALERT",
    "CACHE_HIT_ALERT",
    "COMPLETENESS_ALERT",
    "QualityRow",
    "format_quality",
    "format_table",
    "invalid_line",
    "pct",
    "quality_line",
    "quality_rows",
    "write_json",
]

# The seed project's alert thresholds, flagged by `quality`.
COMPLETENESS_ALERT = 0.95
BAR_SUCCESS_ALERT = 0.90
CACHE_HIT_ALERT = 0.60

# (name, value, threshold, alert): one row of the quality table.
QualityRow = tuple[str, str, str, bool]


def pct(value: float) -> str:
    """Return a fraction as a percentage with two decimals (``0.875`` -> ``87.50%``)."""
    return f"{value:.2%}"


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as indented JSON to ``path``, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


def format_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """Return a left-aligned plain-text table."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(f"{c:<{w}}" for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


def quality_line(report: QualityReport, min_completeness: float, written: str | None) -> str:
    """Return the one stderr line of exit code 3 (completeness below ``--min-completeness``).

    It says how incomplete the bars are, where the data went and how to accept it.
    """
    accept = int(report.completeness * 10_000) / 10_000
    where = f"data written to {written}; " if written else ""
    return (
        f"quality below threshold: {report.instrument_id} {report.interval.value} completeness "
        f"{pct(report.completeness)} ({report.bars} of {report.expected_bars} bars, "
        f"{len(report.gaps)} gap(s)) < --min-completeness {pct(min_completeness)}; "
        f"{where}pass --min-completeness {accept} to accept it"
    )


def invalid_line(report: Any) -> str:
    """Return the stderr line naming the klines an ingest skipped because they cannot be bars."""
    shown = ", ".join(f"{b.open_time:%Y-%m-%dT%H:%M:%SZ} ({b.reason})" for b in report.invalid[:5])
    more = f" and {len(report.invalid) - 5} more" if len(report.invalid) > 5 else ""
    return (
        f"warning: skipped {len(report.invalid)} kline(s) that cannot be bars: {shown}{more}; "
        "the other bars are written"
    )


def quality_rows(
    report: QualityReport, bar_success_rate: float, min_completeness: float = COMPLETENESS_ALERT
) -> list[QualityRow]:
    """Return the quality table as ``(name, value, threshold, alert)`` rows.

    The thresholds are the seed's alert levels; the completeness one is lowered to
    ``min_completeness`` when that is lower.
    """
    checked = report.cache_hits + report.cache_misses
    completeness_alert = min(COMPLETENESS_ALERT, min_completeness)
    rows: list[QualityRow] = [
        (
            "completeness",
            pct(report.completeness),
            f"< {completeness_alert:.0%}",
            report.completeness < completeness_alert,
        ),
        ("bars / expected", f"{report.bars} / {report.expected_bars}", "", False),
        ("missing bars", str(report.missing_bars), "", False),
        ("gaps", str(len(report.gaps)), "", False),
        (
            "bar success rate",
            pct(bar_success_rate),
            f"< {BAR_SUCCESS_ALERT:.0%}",
            bar_success_rate < BAR_SUCCESS_ALERT,
        ),
        (
            "cache hit rate",
            pct(report.cache_hit_rate) if checked else "n/a",
            f"< {CACHE_HIT_ALERT:.0%}",
            bool(checked) and report.cache_hit_rate < CACHE_HIT_ALERT,
        ),
        (
            "sources",
            " ".join(f"{k}={v}" for k, v in report.sources.items() if v) or "none",
            "",
            False,
        ),
        ("ohlc violations", str(report.ohlc_violations), "", report.ohlc_violations > 0),
    ]
    return rows


def format_quality(report: QualityReport, rows: list[QualityRow]) -> str:
    """Render the quality table (alerts marked ``ALERT``) with the largest gaps listed."""
    lines = [
        f"{report.instrument_id} {report.interval.value} {iso(report.start)}..{iso(report.end)}"
    ]
    width = max(len(r[0]) for r in rows)
    value_width = max(len(r[1]) for r in rows)
    for name, value, threshold, alert in rows:
        flag = "ALERT" if alert else ("ok" if threshold else "")
        note = f"(alert {threshold})" if threshold else ""
        lines.append(f"  {name:<{width}}  {value:>{value_width}}  {note:<14} {flag}".rstrip())
    for gap in report.largest_gaps(10):
        lines.append(f"  gap {gap}")
    if len(report.gaps) > 10:
        lines.append(f"  ... and {len(report.gaps) - 10} more gap(s)")
    for warning in report.warnings:
        lines.append(f"  warning: {warning}")
    return "\n".join(lines)
