"""The kline frame: one polars schema for every source, and the pure parsers into it.

Prices and volumes are ``Decimal(38, 8)``: exactly Binance's decimal strings (Binance never
publishes more than 8 decimals), so nothing is lost between the wire and the instrument's
precision. Times are UTC milliseconds; Vision's microsecond files (spot, 2025 on) are floored
to milliseconds so every source yields identical rows.

Both parsers validate what they read (:mod:`.validate`): a payload that does not hold Binance's
klines raises :class:`~nautilus_dsm.errors.InvalidResponse`, never a polars or type error.
"""

from __future__ import annotations

import msgspec
import polars as pl

from nautilus_dsm.dsm.validate import Expect, check_complete_rows, check_times, check_values
from nautilus_dsm.dsm.wire import decode_klines, raw_frame
from nautilus_dsm.errors import InvalidResponse

DECIMAL = pl.Decimal(38, 8)
TIME = pl.Datetime("ms", "UTC")

FRAME_SCHEMA: dict[str, pl.DataType] = {
    "open_time": TIME,
    "close_time": TIME,
    "open": DECIMAL,
    "high": DECIMAL,
    "low": DECIMAL,
    "close": DECIMAL,
    "volume": DECIMAL,
    "quote_volume": DECIMAL,
    "trades": pl.Int64(),
    "taker_buy_base_volume": DECIMAL,
    "taker_buy_quote_volume": DECIMAL,
}
COLUMNS: list[str] = list(FRAME_SCHEMA)

# Binance's 12 kline fields, in wire order (the 12th, "ignore", is dropped).
_RAW_FIELDS = [
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "trades",
    "taker_buy_base_volume",
    "taker_buy_quote_volume",
    "ignore",
]
N_FIELDS = len(_RAW_FIELDS)
# A Vision CSV is read as text (every field), stripped, then cast: a stray space or "\r" is
# formatting, not a reason to lose a row; a value that still does not parse is refused.
_CSV_TEXT_SCHEMA: dict[str, pl.DataType] = {name: pl.String() for name in _RAW_FIELDS}
_CSV_FAST_SCHEMA: dict[str, pl.DataType] = {
    name: (pl.Int64() if name in ("open_time", "close_time", "trades") else pl.String())
    for name in _RAW_FIELDS
}
# Bytes whose presence sends a CSV to the tolerant reader (a BOM is removed before).
_BLANKS = (b" ", b"\t", b"\r")
# A header's first field: the names Binance's futures files (and common tools) use. Anything
# else on the first line is data, so a BOM or a space can never turn a bar into a "header".
HEADER_FIRST_FIELDS = frozenset({"open_time", "open time", "opentime", "timestamp"})
_BOM = b"\xef\xbb\xbf"
# Epoch ms stays below this until year 5138; µs timestamps are above it.
_US_THRESHOLD = 100_000_000_000_000


def empty_frame() -> pl.DataFrame:
    """Return a frame with the schema and no rows."""
    return pl.DataFrame(schema=FRAME_SCHEMA)


def _finish(raw: pl.DataFrame) -> pl.DataFrame:
    """Raw fields -> FRAME_SCHEMA, casting leniently (a value that does not parse is null).

    µs times (Vision spot from 2025) are floored to ms per value. The nulls are what
    :func:`~nautilus_dsm.dsm.validate.check_values` reports against ``raw``.
    """
    times = []
    for name in ("open_time", "close_time"):
        col = pl.col(name).cast(pl.Int64, strict=False)
        times.append(
            pl.when(col >= _US_THRESHOLD).then(col // 1000).otherwise(col).cast(TIME).alias(name)
        )
    decimals = [
        pl.col(name).cast(DECIMAL, strict=False)
        for name, dtype in FRAME_SCHEMA.items()
        if dtype == DECIMAL
    ]
    trades = pl.col("trades").cast(pl.Int64, strict=False)
    return raw.select(*times, *decimals, trades).select(COLUMNS)


def to_checked_frame(raw: pl.DataFrame, expect: Expect | None, what: str) -> pl.DataFrame:
    """
    Raw fields -> FRAME_SCHEMA, refusing what does not parse and, given ``expect``, bad times.

    Raises
    ------
    InvalidResponse
        A field null, empty or not a number; with ``expect``, rows off the grid, of another
        interval's length, or outside ``expect``'s period (see :mod:`.validate`).

    """
    frame = _finish(raw)
    check_values(raw, frame, expect.what if expect is not None else what)
    if expect is not None:
        check_times(frame, expect)
    return frame


def parse_rest_klines(
    payload: list[list[object]] | bytes, expect: Expect | None = None
) -> pl.DataFrame:
    """
    Parse a ``GET /klines`` answer (the body, or its decoded list of 12-field arrays).

    Decoded with the typed :data:`~nautilus_dsm.dsm.wire.KLINES_DECODER` and checked: a null,
    a wrong type, a non-numeric price or another field count raises :class:`InvalidResponse`
    (so do, given ``expect``, rows of another interval or period).
    """
    content = payload if isinstance(payload, bytes) else msgspec.json.encode(payload)
    what = expect.what if expect is not None else "klines payload"
    klines = decode_klines(content, what)
    if not klines:
        return empty_frame()
    return to_checked_frame(raw_frame(klines), expect, what)


def _first_line(data: bytes) -> bytes:
    end = data.find(b"\n")
    return data if end < 0 else data[:end]


def parse_vision_csv(data: bytes, expect: Expect | None = None) -> pl.DataFrame:
    """
    Parse a Vision kline CSV: ms or µs times, with or without the futures header row.

    A UTF-8 BOM, whitespace around the file or its fields, and CRLF line ends are formatting
    and read as the data they hold. The first line is a header only when its first field is a
    column name (:data:`HEADER_FIRST_FIELDS`), never because it fails to start with a digit,
    so no bar is ever skipped as a header. An empty input gives an empty frame (the Vision
    client refuses an empty *file*: Binance does not publish them).

    Raises
    ------
    InvalidResponse
        A row without Binance's 12 fields, a field null, empty or not a number, and, given
        ``expect``, rows of another interval or outside the file's period.

    """
    what = expect.what if expect is not None else "Vision CSV"
    body = data[len(_BOM) :] if data.startswith(_BOM) else data
    if body[:1].isspace() or body[-2:].isspace() or (body[-1:].isspace() and body[-1:] != b"\n"):
        body = body.strip()  # copies the file: only when there is more than the final newline
    if not body or body.isspace():  # isspace stops at the first other byte
        return empty_frame()
    first = _first_line(body)
    name = first.split(b",", 1)[0].strip().strip(b"\"'").strip()
    has_header = name.lower().decode("utf-8", "replace") in HEADER_FIRST_FIELDS
    if has_header:
        body = body[len(first) + 1 :].lstrip()
        if not body:
            return empty_frame()
        first = _first_line(body)
    n_fields = first.count(b",") + 1
    if n_fields != N_FIELDS:
        raise InvalidResponse(
            f"{what}: Vision CSV has {n_fields} columns, expected Binance's {N_FIELDS} kline "
            "fields; the file is not a kline file or its format changed"
        )
    if not any(blank in body for blank in _BLANKS):
        # The common case, read at full speed: integers parsed by the CSV reader itself. Any
        # refusal is re-derived below by the tolerant reader, whose message names the field.
        try:
            return _read_checked(body, _CSV_FAST_SCHEMA, expect, what, strip=False)
        except (pl.exceptions.PolarsError, InvalidResponse):
            pass
    return _read_checked(body, _CSV_TEXT_SCHEMA, expect, what, strip=True)


def _read_checked(
    body: bytes,
    schema: dict[str, pl.DataType],
    expect: Expect | None,
    what: str,
    *,
    strip: bool,
) -> pl.DataFrame:
    try:
        # Empty fields stay "" (reported as empty), not null.
        text = pl.read_csv(body, has_header=False, schema=schema, empty_string_is_null=False)
    except pl.exceptions.PolarsError as exc:
        if not strip:
            raise
        # Polars names the line: e.g. a row with more fields than the first.
        detail = str(exc).strip().splitlines()[0]
        raise InvalidResponse(
            f"{what}: a row does not have Binance's {N_FIELDS} fields ({detail}); the answer "
            "is refused"
        ) from None
    check_complete_rows(text, what, N_FIELDS)
    fields = pl.all().exclude("ignore")
    raw = text.select(fields.str.strip_chars() if strip else fields)
    return to_checked_frame(raw, expect, what)
