"""The kline frame: one polars schema for every source, and the pure parsers into it.

Prices and volumes are ``Decimal(38, 8)``: exactly Binance's decimal strings (Binance never
publishes more than 8 decimals), so nothing is lost between the wire and the instrument's
precision. Times are UTC milliseconds; Vision's microsecond files (spot, 2025 on) are floored
to milliseconds so every source yields identical rows.
"""

from __future__ import annotations

import io

import polars as pl

from nautilus_dsm.errors import SourceError

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
_RAW_CSV_SCHEMA: dict[str, pl.DataType] = {
    name: (pl.Int64() if name in ("open_time", "close_time", "trades") else pl.String())
    for name in _RAW_FIELDS
}
# Epoch ms stays below this until year 5138; µs timestamps are above it.
_US_THRESHOLD = 100_000_000_000_000


def empty_frame() -> pl.DataFrame:
    """A frame with the schema and no rows."""
    return pl.DataFrame(schema=FRAME_SCHEMA)


def _finish(raw: pl.DataFrame) -> pl.DataFrame:
    """Raw (int times, string numbers) -> FRAME_SCHEMA, with µs -> ms detection per column."""
    times = []
    for name in ("open_time", "close_time"):
        col = pl.col(name)
        times.append(
            pl.when(col >= _US_THRESHOLD).then(col // 1000).otherwise(col).cast(TIME).alias(name)
        )
    decimals = [
        pl.col(name).cast(DECIMAL) for name, dtype in FRAME_SCHEMA.items() if dtype == DECIMAL
    ]
    return raw.select(*times, *decimals, pl.col("trades").cast(pl.Int64)).select(COLUMNS)


def parse_rest_klines(payload: list[list[object]]) -> pl.DataFrame:
    """Parse a decoded ``GET /klines`` JSON payload (a list of 12-field arrays)."""
    if not payload:
        return empty_frame()
    width = len(payload[0])
    if width < 11 or any(len(row) != width for row in payload):
        raise SourceError(f"klines payload rows have {width} fields; Binance sends 12")
    columns = list(zip(*payload, strict=True))
    raw = pl.DataFrame(
        {
            name: pl.Series(name, columns[i], dtype=_RAW_CSV_SCHEMA[name], strict=False)
            for i, name in enumerate(_RAW_FIELDS[:width])
        }
    )
    return _finish(raw)


def parse_vision_csv(data: bytes) -> pl.DataFrame:
    """Parse a Vision kline CSV (with or without the futures header row; ms or µs times)."""
    if not data.strip():
        return empty_frame()
    first_line = data[: data.find(b"\n")] if b"\n" in data else data
    has_header = not first_line[:1].isdigit()
    n_fields = first_line.count(b",") + 1
    if n_fields != 12:
        raise SourceError(
            f"Vision CSV has {n_fields} columns, expected Binance's 12 kline fields; "
            "the file is not a kline file or its format changed"
        )
    try:
        raw = pl.read_csv(
            io.BytesIO(data),
            has_header=False,
            skip_rows=1 if has_header else 0,
            schema=_RAW_CSV_SCHEMA,
        )
    except pl.exceptions.PolarsError as exc:
        raise SourceError(f"Vision CSV could not be parsed: {exc}") from exc
    return _finish(raw)
