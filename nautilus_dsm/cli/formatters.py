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
    "cache_is_cold",
    "format_quality",
    "format_table",
    "invalid_line",
    "pct",
    "quality_line",
    "quality_rows",
    "timings_line",
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
    ``min_completeness`` when that is lower. A cold cache raises no cache hit rate alert.
    """
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
        _cache_row(report),
        (
            "sources",
            " ".join(f"{k}={v}" for k, v in report.sources.items() if v) or "none",
            "",
            False,
        ),
        ("ohlc violations", str(report.ohlc_violations), "", report.ohlc_violations > 0),
    ]
    return rows


def cache_is_cold(report: QualityReport) -> bool:
    """Tell whether the cache held none of the fetch's closed periods (a first fetch).

    A cold cache's hit rate is 0 by construction, so it raises no alert: the cache hit rate
    alert is about a warm cache that no longer serves what it held.
    """
    return report.cache_hits == 0 and report.cache_misses > 0


def _cache_row(report: QualityReport) -> QualityRow:
    checked = report.cache_hits + report.cache_misses
    if not checked:  # use_cache off, or nothing closed to look up
        return ("cache hit rate", "n/a", "", False)
    if cache_is_cold(report):
        return ("cache hit rate", pct(0.0), "", False)  # explained by a note line
    rate = report.cache_hit_rate
    return ("cache hit rate", pct(rate), f"< {CACHE_HIT_ALERT:.0%}", rate < CACHE_HIT_ALERT)


def timings_line(report: QualityReport) -> str:
    """Return the timings in words: wall time, and each source's summed (concurrent) seconds."""
    t = report.timings
    per_source = ", ".join(f"{k} {t[k]:.2f} s" for k in ("cache", "vision", "rest") if k in t)
    text = f"timings: {t.get('total', 0.0):.2f} s wall"
    if per_source:
        text += f"; summed over concurrent calls: {per_source} (one can exceed the wall time)"
    return text


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
    if cache_is_cold(report):
        periods = report.cache_misses
        lines.append(
            f"  note: cold cache (none of the {periods} closed period(s) was cached before this "
            f"fetch); the cache hit rate alert (< {CACHE_HIT_ALERT:.0%}) applies once it is warm"
        )
    lines.append(f"  {timings_line(report)}")
    for warning in report.warnings:
        lines.append(f"  warning: {warning}")
    return "\n".join(lines)
