"""The funding frame: one polars schema for Vision and REST, and the pure parsers into it.

Columns (:data:`FUNDING_SCHEMA`):

- ``funding_time``: the funding boundary, ``calc_time`` floored to the hour (Vision's
  ``calc_time`` and REST's ``fundingTime`` land a few ms after it, e.g. ``…:00:00.007``);
- ``calc_time``: the time Binance recorded, exactly;
- ``funding_interval_hours``: the funding interval that *ended* at this event (the hours the
  rate accrued over). Vision states it; REST does not, so for REST rows it is inferred from the
  spacing of neighbouring events (:func:`infer_intervals`), null when nothing can tell;
- ``funding_rate``: ``Decimal(38, 12)``, exactly the wire string (Binance prints 8 decimals; a
  rate with more than 12 is refused, never rounded);
- ``mark_price``: ``Decimal(38, 8)`` where REST gives it (USD-M), else null.

Rows are sorted by ``funding_time`` and unique per boundary after :func:`normalise_funding`.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

import msgspec
import polars as pl

from nautilus_dsm.common.times import iso_ms
from nautilus_dsm.errors import InvalidResponse

__all__ = [
    "ALLOWED_INTERVAL_HOURS",
    "FUNDING_COLUMNS",
    "FUNDING_SCHEMA",
    "HOUR_MS",
    "RATE_DECIMAL",
    "empty_funding",
    "infer_intervals",
    "normalise_funding",
    "parse_rest_funding",
    "parse_vision_funding",
]

HOUR_MS = 3_600_000
RATE_SCALE = 12
RATE_DECIMAL = pl.Decimal(38, RATE_SCALE)
PRICE_DECIMAL = pl.Decimal(38, 8)
TIME = pl.Datetime("ms", "UTC")
# Funding intervals Binance uses (hours); an inferred spacing outside these is not an interval.
ALLOWED_INTERVAL_HOURS = (1, 2, 4, 8)

FUNDING_SCHEMA: dict[str, pl.DataType] = {
    "funding_time": TIME,
    "calc_time": TIME,
    "funding_interval_hours": pl.Int64(),
    "funding_rate": RATE_DECIMAL,
    "mark_price": PRICE_DECIMAL,
}
FUNDING_COLUMNS: list[str] = list(FUNDING_SCHEMA)
_VISION_HEADER = ("calc_time", "funding_interval_hours", "last_funding_rate")


class RestFunding(msgspec.Struct, frozen=True):
    """One ``GET /fapi/v1/fundingRate`` (or ``/dapi/v1``) row."""

    symbol: str
    fundingTime: int
    fundingRate: str
    markPrice: str | None = None


_REST_DECODER = msgspec.json.Decoder(list[RestFunding])


def empty_funding() -> pl.DataFrame:
    """Return a funding frame with the schema and no rows."""
    return pl.DataFrame(schema=FUNDING_SCHEMA)


def _rate(text: str, what: str, at_ms: int) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise InvalidResponse(
            f"{what}: funding rate {text!r} at {iso_ms(at_ms)} is not a decimal number; "
            "the payload is refused",
            (at_ms,),
        ) from None
    exponent = value.as_tuple().exponent
    if not value.is_finite() or (isinstance(exponent, int) and -exponent > RATE_SCALE):
        raise InvalidResponse(
            f"{what}: funding rate {text!r} at {iso_ms(at_ms)} has more than {RATE_SCALE} "
            "decimals or is not finite; it cannot be held exactly, so the payload is refused",
            (at_ms,),
        )
    return value


def _price(text: str | None, what: str, at_ms: int) -> Decimal | None:
    if text is None or not text.strip():
        return None
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise InvalidResponse(
            f"{what}: mark price {text!r} at {iso_ms(at_ms)} is not a decimal number",
            (at_ms,),
        ) from None
    return value


def _frame(rows: list[tuple[int, int | None, Decimal, Decimal | None]]) -> pl.DataFrame:
    """Rows ``(calc_ms, hours, rate, mark)`` -> FUNDING_SCHEMA (boundary = calc floored)."""
    if not rows:
        return empty_funding()
    calc = [r[0] for r in rows]
    return pl.DataFrame(
        {
            "funding_time": [c // HOUR_MS * HOUR_MS for c in calc],
            "calc_time": calc,
            "funding_interval_hours": [r[1] for r in rows],
            "funding_rate": [r[2] for r in rows],
            "mark_price": [r[3] for r in rows],
        },
        schema={
            "funding_time": pl.Int64(),
            "calc_time": pl.Int64(),
            "funding_interval_hours": pl.Int64(),
            "funding_rate": RATE_DECIMAL,
            "mark_price": PRICE_DECIMAL,
        },
    ).with_columns(pl.col("funding_time").cast(TIME), pl.col("calc_time").cast(TIME))


def parse_vision_funding(data: bytes, what: str, start_ms: int, end_ms: int) -> pl.DataFrame:
    """
    Parse a Vision ``fundingRate`` CSV (``calc_time,funding_interval_hours,last_funding_rate``).

    The header row is optional. Every row must hold an epoch-ms ``calc_time`` inside the file's
    month ``[start_ms, end_ms)``, a positive whole number of hours (at most 24) and a decimal
    rate; anything else refuses the file with :class:`InvalidResponse` naming the row.
    """
    text = data.decode("utf-8-sig", "replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines and lines[0].split(",")[0].strip().lower() == _VISION_HEADER[0]:
        lines = lines[1:]
    rows: list[tuple[int, int | None, Decimal, Decimal | None]] = []
    for number, line in enumerate(lines, start=1):
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 3 or not fields[0].isdigit() or not fields[1].isdigit():
            raise InvalidResponse(
                f"{what}: row {number} {line[:80]!r} is not "
                "'calc_time,funding_interval_hours,last_funding_rate'; the file is refused"
            )
        calc, hours = int(fields[0]), int(fields[1])
        if not start_ms <= calc < end_ms:
            raise InvalidResponse(
                f"{what}: row {number} calc_time {iso_ms(calc)} is outside the file's month "
                f"{iso_ms(start_ms)}..{iso_ms(end_ms)}; the file is refused",
                (calc,),
            )
        if not 1 <= hours <= 24:
            raise InvalidResponse(
                f"{what}: row {number} funding_interval_hours {hours} is not 1..24; the file "
                "is refused",
                (calc,),
            )
        rows.append((calc, hours, _rate(fields[2], what, calc), None))
    if not rows:
        raise InvalidResponse(
            f"{what} has no data rows; Binance Vision does not publish empty funding files, "
            "so the file is refused"
        )
    return _frame(rows)


def parse_rest_funding(
    content: bytes, what: str, symbol: str, start_ms: int, end_ms: int
) -> pl.DataFrame:
    """
    Parse a ``GET /fundingRate`` answer; intervals are left null (see :func:`infer_intervals`).

    Raises
    ------
    InvalidResponse
        For a payload that is not a list of funding rows, a row of another symbol, a
        ``fundingTime`` outside ``[start_ms, end_ms)`` or a rate that is not an exact decimal.

    """
    try:
        decoded = _REST_DECODER.decode(content)
    except msgspec.ValidationError as exc:
        raise InvalidResponse(f"{what}: not a list of funding rows ({exc})") from exc
    rows: list[tuple[int, int | None, Decimal, Decimal | None]] = []
    for row in decoded:
        at = row.fundingTime
        if row.symbol != symbol:
            raise InvalidResponse(f"{what}: a row of {row.symbol!r}, not {symbol!r}", (at,))
        if not start_ms <= at < end_ms:
            raise InvalidResponse(
                f"{what}: fundingTime {iso_ms(at)} is outside the requested "
                f"{iso_ms(start_ms)}..{iso_ms(end_ms)}",
                (at,),
            )
        rows.append((at, None, _rate(row.fundingRate, what, at), _price(row.markPrice, what, at)))
    return _frame(rows)


def infer_intervals(times_ms: list[int], known: list[int | None]) -> list[int | None]:
    """
    Fill unknown funding intervals from the spacing of neighbouring boundaries.

    An event's interval is the one that ended at it: the hours since the previous boundary,
    when that spacing is one of :data:`ALLOWED_INTERVAL_HOURS` (a longer one is a gap, not an
    interval) -- unless that spacing is a whole multiple of the spacing that follows and the
    one before agrees with it (or there is none): then events are missing between the two
    (4 h funding with 04:00 missing), which is reported as a gap rather than hidden as two
    interval changes. Without a previous boundary an event takes its successor's interval,
    then the nearest known one. ``known`` values (Vision's) are kept. Pure.
    """
    n = len(times_ms)
    out = list(known)

    def spacing(i: int, j: int) -> int | None:
        if not 0 <= j < n:
            return None
        hours, rest = divmod(abs(times_ms[i] - times_ms[j]), HOUR_MS)
        return hours if rest == 0 and hours in ALLOWED_INTERVAL_HOURS else None

    before = [spacing(i, i - 1) for i in range(n)]  # hours since the previous boundary
    for i in range(n):
        if out[i] is not None or before[i] is None:
            continue
        hours = before[i]
        left = (known[i - 1] or before[i - 1]) if i > 0 else None
        right = before[i + 1] if i + 1 < n else None
        missing = (
            right is not None and hours > right and hours % right == 0 and left in (None, right)
        )
        out[i] = right if missing else hours
    for i in reversed(range(n)):  # no previous boundary: the successor's interval
        if out[i] is None and i + 1 < n:
            out[i] = out[i + 1] if before[i + 1] is not None else spacing(i, i + 1)
    for i in range(n):  # still unknown (isolated by gaps): the nearest known interval
        if out[i] is None:
            near = [(abs(i - j), out[j]) for j in range(n) if out[j] is not None]
            out[i] = min(near)[1] if near else None
    return out


def normalise_funding(frame: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """
    Sort by boundary and keep one row per boundary (the first seen).

    Returns the frame and the count of repeated rows dropped (a repeat is the same boundary
    served twice, e.g. page overlap).
    """
    if frame.height == 0:
        return frame, 0
    unique = frame.unique(subset=["funding_time"], keep="first", maintain_order=True)
    return unique.sort("funding_time"), frame.height - unique.height
