"""Checks every kline response passes before it is trusted (pure, vectorised).

A response is a *source failure* when its structure is wrong: a field that is missing, null,
empty or not a number; an open time off the interval's grid; a ``close_time`` that does not
close the bar one interval later (1h rows answered to a 1m request); a row outside the period
that was asked for (a CSV of another day). Such a response raises :class:`InvalidResponse`
naming the field, the value and the open time, so the transport retries it and the manager asks
the next source; it is never cached.

What is *not* a failure here: repeated or disordered rows (the manager counts and fixes them)
and OHLC-insane rows such as ``high < low`` (the exchange's own data: the quality report counts
them and conversion skips them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl

from nautilus_dsm.common import Interval, iso_ms
from nautilus_dsm.errors import InvalidResponse

# At most this many open times travel on one InvalidResponse (a refused month of 1s bars would
# otherwise carry millions); the message states the total.
MAX_OPEN_TIMES = 1000
# Examples of each kind of problem named in a message.
_EXAMPLES = 3
# Offending rows described per kind of problem (the rest are counted).
_SCAN = 200


# Epoch ms in every message's ISO form: the common formatter, under the name rest.py and
# wire.py import from here.
iso = iso_ms


@dataclass(frozen=True)
class Expect:
    """
    What a response must be: bars of ``interval`` opening in ``[start_ms, end_ms)``.

    ``what`` names the response in messages (source, path or file, symbol, interval, period);
    ``end_ms`` None means open-ended (the first-bar probe).
    """

    interval: Interval
    start_ms: int
    end_ms: int | None
    what: str
    period_word: str = "the requested period"

    @property
    def period(self) -> str:
        """The expected open times as ``START..END`` in ISO form (END empty when open-ended)."""
        end = "" if self.end_ms is None else iso(self.end_ms)
        return f"{iso(self.start_ms)}..{end}"


class _Problems:
    """Collects problems by kind (a phrase, a few examples, a count) and the offending rows."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.kinds: dict[str, list[str]] = {}
        self.counts: dict[str, int] = {}
        self.bad_rows = np.zeros(rows, dtype=bool)
        self.unscanned = 0

    def add(self, mask: np.ndarray, describe: Callable[[int], tuple[str, str]]) -> None:
        """Record the rows of ``mask``; ``describe(i)`` gives ``(kind phrase, example)``."""
        index = np.flatnonzero(mask)
        if not len(index):
            return
        self.bad_rows |= mask
        # Rows are described one by one (in Python), so a refused file of a million rows is
        # itemised for its first rows only; the total is in the message's head.
        self.unscanned += max(0, len(index) - _SCAN)
        for i in index[:_SCAN]:
            kind, example = describe(int(i))
            examples = self.kinds.setdefault(kind, [])
            self.counts[kind] = self.counts.get(kind, 0) + 1
            if len(examples) < _EXAMPLES:
                examples.append(example)

    def raise_if_any(self, what: str, opens: np.ndarray, known: np.ndarray) -> None:
        if not self.bad_rows.any():
            return
        n = int(self.bad_rows.sum())
        parts = []
        for kind, examples in self.kinds.items():
            more = self.counts[kind] - len(examples)
            parts.append(f"{kind} {', '.join(examples)}" + (f" and {more} more" if more else ""))
        if self.unscanned:
            parts.append(f"{self.unscanned} more problem(s) not itemised")
        times = opens[self.bad_rows & known]
        message = (
            f"{what}: {n} of {self.rows} rows fail validation: {'; '.join(parts)}; "
            "the answer is refused"
        )
        raise InvalidResponse(message, tuple(int(t) for t in times[:MAX_OPEN_TIMES]))


def _at(opens: np.ndarray, known: np.ndarray, i: int) -> str:
    return iso(int(opens[i])) if known[i] else f"row {i + 1} (no open time)"


def check_values(raw: pl.DataFrame, frame: pl.DataFrame, what: str) -> None:
    """
    Refuse a response with a missing, null, empty or non-numeric field.

    ``raw`` holds the fields as they came (strings, or integers the decoder typed), ``frame``
    the same rows cast with ``strict=False``: a null in ``frame`` is a field that is absent,
    empty or not a number in ``raw``, and the message says which, with its open time. ``what``
    names the response.
    """
    if frame.height == 0:
        return
    opens_col = frame.get_column("open_time").dt.epoch("ms")
    known = opens_col.is_not_null().to_numpy()
    opens = opens_col.fill_null(0).to_numpy()
    problems = _Problems(frame.height)
    nulls = frame.null_count()  # O(1) per column: polars keeps the count
    if not any(nulls.row(0)):
        return
    for name in raw.columns:
        if name not in frame.columns or not nulls.get_column(name)[0]:
            continue
        parsed_null = frame.get_column(name).is_null().to_numpy()
        source = raw.get_column(name)

        def describe(i: int, name: str = name, source: pl.Series = source) -> tuple[str, str]:
            value = source[i]
            where = _at(opens, known, i)
            if value is None:
                return f"field '{name}' is null at", where
            text = str(value)
            if not text.strip():
                return f"field '{name}' is empty at", where
            shown = text if len(text) <= 40 else f"{text[:40]}..."
            return f"field '{name}' is not a number:", f"{shown!r} at {where}"

        problems.add(parsed_null, describe)
    problems.raise_if_any(what, opens, known)


def check_complete_rows(text: pl.DataFrame, what: str, n_fields: int) -> None:
    """Refuse CSV rows with fewer than ``n_fields`` fields.

    ``text`` is the CSV read as strings. Polars reads the missing tail of a short row as
    empty, so a row is short when its last field (``ignore``, always ``0`` at Binance) is empty:
    a row missing a middle field would otherwise shift its values into the wrong columns.
    """
    if text.height == 0:
        return
    last = text.get_column(text.columns[-1])
    empty = last.str.len_bytes() == 0
    if not last.null_count() and not empty.any():
        return
    short = (last.is_null() | empty).to_numpy()
    opens_col = text.get_column("open_time")
    if opens_col.dtype == pl.String:
        opens_col = opens_col.str.strip_chars().cast(pl.Int64, strict=False)
    known = opens_col.is_not_null().to_numpy()
    opens = opens_col.fill_null(0).to_numpy()
    problems = _Problems(text.height)
    problems.add(
        short, lambda i: (f"the row has fewer than {n_fields} fields at", _at(opens, known, i))
    )
    problems.raise_if_any(what, opens, known)


def interval_lengths_ms(interval: Interval, opens: np.ndarray) -> np.ndarray | int:
    """Return the length of each bar opening at ``opens`` (calendar months for ``1M``)."""
    if not interval.is_month:
        return interval.fixed_ms
    months = opens.astype("datetime64[ms]").astype("datetime64[M]")
    ends = (months + np.timedelta64(1, "M")).astype("datetime64[ms]")
    return ends.astype(np.int64) - opens


def check_times(frame: pl.DataFrame, expect: Expect) -> None:
    """
    Refuse rows off the interval's grid, of another interval's length, or outside the period.

    ``close_time - open_time + 1`` must equal the interval (a calendar month for ``1M``), so
    rows of another interval cannot pass as these; ``open_time`` must lie in
    ``[start_ms, end_ms)`` of the request or file.
    """
    if frame.height == 0:
        return
    interval = expect.interval
    opens = frame.get_column("open_time").dt.epoch("ms").to_numpy()
    closes = frame.get_column("close_time").dt.epoch("ms").to_numpy()
    known = np.ones(len(opens), dtype=bool)
    problems = _Problems(frame.height)
    off_grid = ~interval.on_grid_mask(opens)
    problems.add(
        off_grid,
        lambda i: (f"open time is not on the {interval.value} grid at", iso(int(opens[i]))),
    )
    lengths = closes - opens + 1
    wanted = interval_lengths_ms(interval, opens)
    wrong_length = ~off_grid & (lengths != wanted)

    def length_of(i: int) -> tuple[str, str]:
        want = wanted if isinstance(wanted, int) else int(wanted[i])
        return (
            f"close_time - open_time + 1 is {int(lengths[i])} ms, not the {interval.value} "
            f"interval's {want} ms at",
            iso(int(opens[i])),
        )

    problems.add(wrong_length, length_of)
    outside = opens < expect.start_ms
    if expect.end_ms is not None:
        outside |= opens >= expect.end_ms
    problems.add(
        outside,
        lambda i: (
            f"opens outside {expect.period_word} {expect.period} at",
            iso(int(opens[i])),
        ),
    )
    problems.raise_if_any(expect.what, opens, known)


def check_klines(raw: pl.DataFrame, frame: pl.DataFrame, expect: Expect) -> None:
    """:func:`check_values` then :func:`check_times` (times are only read once values pass)."""
    check_values(raw, frame, expect.what)
    check_times(frame, expect)
