"""Binance's kline wire format as msgspec structs, decoded once at the edge.

``GET /klines`` answers a JSON array of 12-field arrays. :class:`BinanceKline` types them as
NautilusTrader's Binance adapter does (``adapters/binance/common/schemas/market.py``): times and
the trade count are integers, prices and volumes Binance's decimal strings (never floats, so
nothing is rounded on the way in). The decoder is built once per process; a payload that does not
match (a ``null``, a number where Binance sends a string, 11 or 13 fields, an object instead of
an array) raises :class:`InvalidResponse` naming the row's open time and the field.
"""

from __future__ import annotations

import re
from operator import attrgetter
from typing import Annotated, Any

import msgspec
import polars as pl

from nautilus_dsm.common.times import iso_ms
from nautilus_dsm.errors import InvalidResponse

N_FIELDS = 12
# Times and counts are non-negative and fit the frame's Int64 (msgspec alone accepts up to
# 2**64 - 1, which polars would refuse with a raw TypeError).
Count = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


class BinanceKline(msgspec.Struct, array_like=True, forbid_unknown_fields=True, frozen=True):
    """One Binance kline: ``[open_time, open, high, low, close, volume, close_time, ...]``."""

    open_time: Count
    open: str
    high: str
    low: str
    close: str
    volume: str
    close_time: Count
    quote_volume: str
    trades: Count
    taker_buy_base_volume: str
    taker_buy_quote_volume: str
    ignore: Any  # unused by Binance ("0"); not worth refusing a page over


FIELDS: tuple[str, ...] = BinanceKline.__struct_fields__
_INT_FIELDS = frozenset({"open_time", "close_time", "trades"})
RAW_SCHEMA: dict[str, pl.DataType] = {
    name: (pl.Int64() if name in _INT_FIELDS else pl.String()) for name in FIELDS[:-1]
}
KLINES_DECODER = msgspec.json.Decoder(list[BinanceKline])
_GETTERS = [(name, attrgetter(name)) for name in RAW_SCHEMA]
_PATH_RE = re.compile(r"^(?P<detail>.*?)(?: - at `\$\[(?P<row>\d+)\](?:\[(?P<col>\d+)\])?`)?$")


def decode_klines(content: bytes, what: str) -> list[BinanceKline]:
    """
    Decode a ``GET /klines`` body into typed klines.

    Raises
    ------
    InvalidResponse
        When the body is JSON but not Binance's kline arrays; the message names ``what``, the
        row's open time (when the row has one) and the field.
    msgspec.DecodeError
        When the body is not JSON at all (a cut or garbled body: the caller retries it).

    """
    try:
        return KLINES_DECODER.decode(content)
    except msgspec.ValidationError as exc:
        raise _explain(content, str(exc), what) from None


def raw_frame(klines: list[BinanceKline]) -> pl.DataFrame:
    """Typed klines -> a frame of their fields as sent (int times, decimal strings)."""
    return pl.DataFrame(
        [pl.Series(name, list(map(get, klines)), dtype=RAW_SCHEMA[name]) for name, get in _GETTERS]
    )


def _explain(content: bytes, detail: str, what: str) -> InvalidResponse:
    """Return the InvalidResponse of a body the typed decoder refused, located in the payload."""
    match = _PATH_RE.match(detail)
    text = match["detail"] if match else detail
    text = text[:1].lower() + text[1:]
    try:
        payload = msgspec.json.decode(content)
    except msgspec.DecodeError:  # pragma: no cover - the typed decoder parsed it as JSON
        payload = None
    if not isinstance(payload, list):
        shown = type(payload).__name__ if payload is not None else "null"
        return InvalidResponse(
            f"{what}: the answer is a JSON {shown}, not a list of klines ({text}); refused"
        )
    index = int(match["row"]) if match and match["row"] is not None else None
    if index is None:  # msgspec names no row for a too-long array: find it
        index = next(
            (i for i, row in enumerate(payload) if not isinstance(row, list) or len(row) != 12),
            None,
        )
    if index is None or index >= len(payload):
        return InvalidResponse(f"{what}: the answer is not Binance's kline arrays ({text})")
    row = payload[index]
    first = row[0] if isinstance(row, list) and row else None
    open_ms = first if type(first) is int and 0 <= first < 2**63 else None
    where = f"at {iso_ms(open_ms)}" if open_ms is not None else f"in row {index + 1} (no open time)"
    times = (open_ms,) if open_ms is not None else ()
    if not isinstance(row, list):
        problem = f"row {index + 1} is a JSON {type(row).__name__}, not a kline array"
    elif len(row) != N_FIELDS:
        problem = f"the row {where} has {len(row)} fields; Binance sends {N_FIELDS}"
    else:
        col = int(match["col"]) if match and match["col"] is not None else None
        name = FIELDS[col] if col is not None and col < len(FIELDS) else "?"
        value = row[col if col is not None else 0]
        if value is None:
            problem = f"field '{name}' is null {where}"
        elif type(value) is int:
            problem = f"field '{name}' is out of range ({value}: {text}) {where}"
        else:
            problem = f"field '{name}' has the wrong type ({text}) {where}"
    return InvalidResponse(f"{what}: {problem}; the answer is refused", times)
