"""Epoch milliseconds <-> UTC datetimes, exactly; request ranges; the one ISO-8601 formatter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from nautilus_dsm.constants import DEFAULT_MAX_ROWS, NS_PER_MS
from nautilus_dsm.errors import InvalidInput

if TYPE_CHECKING:
    from nautilus_dsm.common.intervals import Interval

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_ms(dt: datetime) -> int:
    """Any aware datetime -> epoch milliseconds, exactly (sub-millisecond part floored)."""
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


_ms = epoch_ms

# The forms ``fetch`` accepts for start/end, named by every message that refuses one.
ACCEPTED_TIMES = (
    "a timezone-aware datetime, e.g. datetime(2024, 1, 1, tzinfo=UTC), or an ISO-8601 string "
    "with an offset, e.g. '2024-01-01T00:00:00Z' or '2024-01-01T00:00:00+02:00'"
)


def to_ms(dt: datetime) -> int:
    """UTC datetime -> epoch milliseconds, exactly; naive datetimes are refused."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise InvalidInput(
            f"naive datetime {dt.isoformat()} is ambiguous; pass a timezone-aware UTC datetime, "
            "e.g. datetime(2024, 1, 1, tzinfo=UTC), or an ISO-8601 string with an offset, "
            "e.g. '2024-01-01T00:00:00Z'"
        )
    return _ms(dt)


def parse_instant(value: object, name: str = "time") -> datetime:
    """
    Return ``value`` as a timezone-aware datetime, or raise :class:`InvalidInput`.

    Accepted: an aware ``datetime`` (``pandas.Timestamp`` included) and an ISO-8601 string with
    an offset or ``Z``. Refused, naming the accepted forms: naive datetimes and strings (whose
    zone is a guess), dates, numbers (seconds or milliseconds? another guess) and anything else.
    """
    if isinstance(value, datetime):
        to_ms(value)  # refuses a naive one with the shared message
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidInput(
                f"{name} {value!r} is not an ISO-8601 datetime; pass {ACCEPTED_TIMES}"
            ) from None
        if parsed.tzinfo is None or parsed.utcoffset() is None:
            raise InvalidInput(
                f"{name} {value!r} has no UTC offset, so its time zone is ambiguous; "
                f"pass {ACCEPTED_TIMES}"
            )
        return parsed
    kind = type(value).__name__
    raise InvalidInput(f"{name} {value!r} ({kind}) is not a datetime; pass {ACCEPTED_TIMES}")


def from_ms(ms: int) -> datetime:
    """Epoch milliseconds -> UTC datetime, exactly."""
    return _EPOCH + timedelta(milliseconds=ms)


def check_range(start: datetime, end: datetime) -> tuple[int, int]:
    """Validate a ``[start, end)`` request of aware datetimes; return it in epoch milliseconds.

    Strings are parsed by the caller that accepts them (``fetch``: :func:`parse_instant`), so
    a caller that keeps ``start``/``end`` as datetimes (``ingest``'s report) never holds one.
    """
    for name, value in (("start", start), ("end", end)):
        if not isinstance(value, datetime):
            raise InvalidInput(
                f"{name} {value!r} ({type(value).__name__}) is not a datetime; pass a "
                "timezone-aware datetime, e.g. datetime(2024, 1, 1, tzinfo=UTC)"
            )
    start_ms, end_ms = to_ms(start), to_ms(end)
    if start_ms >= end_ms:
        raise InvalidInput(
            f"start {start.isoformat()} is not before end {end.isoformat()}; "
            "the range is [start, end), so pass an end after the start"
        )
    return start_ms, end_ms


def check_not_future(start_ms: int, now_ms: int) -> None:
    """Refuse a start after "now": no bar of it exists yet, so the request is a mistake.

    Pure, so the caller decides which clock is "now" (the exchange's, once it is known).
    """
    if start_ms > now_ms:
        raise InvalidInput(
            f"start {_iso(start_ms)} is in the future (now is {_iso(now_ms)}); only closed "
            "bars exist, so pass a start before now"
        )


def check_max_rows(value: object, name: str = "max_rows") -> int:
    """Return a valid row cap (an int >= 1), or raise :class:`InvalidInput`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(
            f"{name}={value!r} is not a positive whole number of rows; pass e.g. "
            f"{DEFAULT_MAX_ROWS:_} (the default)"
        )
    return value


def check_row_cap(
    interval: Interval, start_ms: int, stop_ms: int, max_rows: int, what: str = "the request"
) -> int:
    """Refuse a ``[start_ms, stop_ms)`` request whose frame would hold more than ``max_rows``.

    Returns the number of bars the range can hold. One frame is held in memory whole;
    ``ingest`` streams a range of any size in chunks, so it is the advice.
    """
    rows = interval.count(start_ms, stop_ms) if stop_ms > start_ms else 0
    if rows > max_rows:
        raise InvalidInput(
            f"{what} {interval.value} {_iso(start_ms)}..{_iso(stop_ms)} would be {rows:,} bars "
            f"in one frame, more than max_rows={max_rows:,} (~{rows * 100 / 1e9:.1f} GB); use "
            "ingest (`nautilus-dsm ingest` or nautilus_dsm.catalog.ingest), which streams the "
            "range in chunks, or narrow the range, or raise max_rows"
        )
    return rows


def iso_ms(ms: int) -> str:
    """``2024-01-03T00:05:00Z`` (``.001Z`` when the time has milliseconds): every message's form."""
    text = from_ms(ms).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{ms % 1000:03d}Z" if ms % 1000 else f"{text}Z"


def iso_ns(ns: int) -> str:
    """Epoch nanoseconds (a Nautilus timestamp) in :func:`iso_ms`'s form."""
    return iso_ms(ns // NS_PER_MS)


def iso(dt: datetime | None) -> str | None:
    """Format an aware datetime in :func:`iso_ms`'s form; None passes through."""
    return None if dt is None else iso_ms(epoch_ms(dt))


_iso = iso_ms


# --------------------------------------------------------------------------------------------
# Symbols
