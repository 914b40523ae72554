"""Input parsing of the command line: pure checks that refuse bad input before any I/O."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from nautilus_dsm.common import (
    Interval,
    ResolvedInstrument,
    check_not_future,
    check_range,
    resolve_instrument,
)
from nautilus_dsm.errors import InvalidInput

__all__ = [
    "DATE_HELP",
    "check_dir_path",
    "check_out_path",
    "check_report_path",
    "parse_range",
    "parse_utc",
    "resolve",
]

DATE_HELP = (
    "UTC: a date (2024-01-01) or an ISO datetime (2024-01-01T12:00:00Z); "
    "a datetime without offset is taken as UTC"
)


def parse_utc(value: str, option: str) -> datetime:
    """Parse a CLI date/datetime as UTC (naive input is UTC; an offset is converted)."""
    text = value.strip()
    try:
        dt = datetime.fromisoformat(text)
        # An offset near year 1 or 9999 moves the time out of datetime's range.
        return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidInput(
            f"{option} {value!r} is not a date; use a UTC date like 2024-01-01 "
            "or an ISO datetime like 2024-01-01T12:00:00Z"
        ) from None


def parse_range(start: str, end: str) -> tuple[datetime, datetime]:
    """Return ``--start``/``--end`` as UTC datetimes: a ``[start, end)`` range not in the future."""
    start_dt, end_dt = parse_utc(start, "--start"), parse_utc(end, "--end")
    start_ms, _ = check_range(start_dt, end_dt)
    # The local clock, before any I/O; fetch checks again against its own "now".
    check_not_future(start_ms, int(datetime.now(UTC).timestamp() * 1000))
    return start_dt, end_dt


def resolve(
    instrument_id: str, market_type: str | None, interval: str
) -> tuple[ResolvedInstrument, Interval]:
    """Return the instrument and interval of a command, the interval checked against its market."""
    resolved = resolve_instrument(instrument_id, market_type)
    iv = Interval.parse(interval)
    iv.check_market(resolved.market_type)
    return resolved, iv


def check_out_path(out: Path, option: str = "--out") -> Path:
    """Refuse an output file ``fetch`` cannot write as named, before any I/O.

    ``fetch`` writes Parquet only: a ``.csv`` (or any other) name would hold Parquet bytes
    under a misleading suffix, so it is refused rather than guessed at.
    """
    if out.suffix.lower() != ".parquet":
        suffix = f"suffix {out.suffix!r}" if out.suffix else "no suffix"
        raise InvalidInput(
            f"{option} {str(out)!r} has {suffix}; fetch writes Parquet, so name the file "
            f"*.parquet, e.g. {out.stem or 'bars'}.parquet"
        )
    _check_no_file_above(out, option)
    return out


def _check_no_file_above(path: Path, option: str) -> None:
    """Refuse a path whose nearest existing ancestor is a file: it could never be created."""
    parent = next((p for p in (path.parent, *path.parent.parents) if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise InvalidInput(f"{option} {str(path)!r}: {str(parent)!r} is a file, not a directory")


def check_dir_path(path: Path | None, option: str) -> Path | None:
    """Refuse a directory option (``--cache-dir``, ``--catalog``) that is or lies under a file.

    Checked before any I/O (otherwise a raw OS error after the download).
    """
    if path is None:
        return None
    path = path.expanduser()
    if path.exists() and not path.is_dir():
        raise InvalidInput(f"{option} {str(path)!r} is a file, not a directory; name a directory")
    _check_no_file_above(path, option)
    return path


def check_report_path(report: Path | None, out: Path) -> None:
    """Refuse a ``--report`` that cannot be written, or that is the ``--out`` file itself.

    Checked before any I/O; a report at ``--out`` would silently replace the bars.
    """
    if report is None:
        return
    if report.expanduser().resolve() == out.expanduser().resolve():
        raise InvalidInput(
            f"--report {str(report)!r} is the --out file; the report would replace the bars, "
            "so name another file, e.g. report.json"
        )
    _check_no_file_above(report, "--report")
