"""Missing bars in what the data client serves: runs, their log text, the labelled fill.

Shared by history requests (:mod:`nautilus_dsm.requests`) and the live poller
(:mod:`nautilus_dsm.polling`): the runs of missing open times and how a log line names them, the
rows ``convert_frame`` refused, and the opt-in SYNTHETIC fill with its warnings. Everything but
:func:`fill_synthetic` (which logs through the logger it is given) is pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import polars as pl

from nautilus_dsm.common import Interval, iso, iso_ms
from nautilus_dsm.dsm.synthetic import SYNTHETIC, fill_gaps

__all__ = ["describe_invalid", "fill_synthetic", "format_gaps", "format_runs", "missing_runs"]

# How many gaps, runs or refused rows one log line names before "(+n more)".
_SHOWN = 5


def _more(shown: str, total: int, limit: int) -> str:
    return shown + (f" (+{total - limit} more)" if total > limit else "")


def format_gaps(gaps: list[Any], limit: int = _SHOWN) -> str:
    """Return the first ``limit`` of a report's gaps as text, with ``(+n more)`` after them."""
    return _more(", ".join(str(gap) for gap in gaps[:limit]), len(gaps), limit)


def missing_runs(open_times_ms: Iterable[int], interval: Interval) -> list[tuple[int, int, int]]:
    """Group ascending missing open times into ``(first, end_exclusive, count)`` runs."""
    runs: list[tuple[int, int, int]] = []
    for t in open_times_ms:
        if runs and runs[-1][1] == t:
            first, _, n = runs[-1]
            runs[-1] = (first, interval.next_open_ms(t), n + 1)
        else:
            runs.append((t, interval.next_open_ms(t), 1))
    return runs


def format_runs(runs: list[tuple[int, int, int]], limit: int = _SHOWN) -> str:
    """Return runs as ``[first, end) n missing`` text, the first ``limit`` of them."""
    text = ", ".join(f"[{iso_ms(a)}, {iso_ms(b)}) {n} missing" for a, b, n in runs[:limit])
    return _more(text, len(runs), limit)


def describe_invalid(invalid: pl.DataFrame, limit: int = _SHOWN) -> str:
    """Return ``open_time (reason)`` of the first rows ``convert_frame`` refused, for the log."""
    text = ", ".join(
        f"{iso(row['open_time'])} ({row['reason']})"
        for row in invalid.head(limit).iter_rows(named=True)
    )
    return _more(text, invalid.height, limit)


def fill_synthetic(
    frame: pl.DataFrame,
    label: object,
    interval: Interval,
    start_ms: int,
    end_ms: int,
    *,
    previous_close: Decimal | None,
    first_open_ms: int | None,
    report: Any | None,
    log: Any,
) -> tuple[pl.DataFrame, int]:
    """
    Fill the frame's missing open times in ``[start_ms, end_ms)`` with flat SYNTHETIC bars.

    Every generated run is logged as a warning under ``label`` (the bar type), each bar at
    debug level, and counted in ``report.sources["synthetic"]`` when a report is given; a gap
    before the first real bar with no ``previous_close`` stays empty and is logged too.

    Returns
    -------
    tuple[pl.DataFrame, int]
        The filled frame and the number of synthetic bars added.

    """
    fill = fill_gaps(
        frame,
        interval,
        start_ms,
        end_ms,
        previous_close=previous_close,
        first_open_ms=first_open_ms,
    )
    if fill.count:
        runs = missing_runs(fill.synthetic_open_ms, interval)
        log.warning(
            f"{label}: {fill.count} SYNTHETIC flat bars generated (no source has them): "
            f"{format_runs(runs)}"
        )
        for open_ms in fill.synthetic_open_ms:
            log.debug(f"{label}: SYNTHETIC bar open={iso_ms(open_ms)}")
        if report is not None:
            report.sources[SYNTHETIC] = report.sources.get(SYNTHETIC, 0) + fill.count
    if fill.unfilled_open_ms:
        log.warning(
            f"{label}: {len(fill.unfilled_open_ms)} missing bars before the first real "
            "bar stay empty (no earlier close to repeat): "
            f"{format_runs(missing_runs(fill.unfilled_open_ms, interval))}"
        )
    return fill.frame, fill.count
