"""What a cache file records beside its bars: a period's state and a series' first bar.

A period file (final or provisional) carries its :class:`PeriodState` as JSON in its parquet
key-value metadata (key ``nautilus_dsm``): final or provisional, and the gaps with the sources
that lacked them. Files written before states were recorded (no metadata) read as final with an
unrecorded state. The first-bar sidecar (``{interval}.first_bar.json``) records the open time
of the series' first bar ever and the REST endpoint that served it. Pure encoding and decoding,
plus reading one parquet footer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from nautilus_dsm.common import Interval, MarketType, iso_ms

# Parquet key-value metadata key holding a period's state (JSON, see PeriodState).
META_KEY = "nautilus_dsm"


@dataclass(frozen=True, slots=True)
class PeriodGap:
    """Bars missing from a cached period: open times in ``[start_ms, end_ms)``.

    ``missing_in`` holds the source tags whose answer for these bars lacked them
    (``vision_monthly``, ``vision``, ``rest``); empty when unknown (a file written before states
    were recorded).
    """

    start_ms: int
    end_ms: int
    missing_in: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PeriodState:
    """How far a cached period can be trusted: final or provisional, with its gaps.

    ``recorded`` is False for a file without state metadata (written before states existed):
    read as final, but its gaps are unknown.
    """

    final: bool
    gaps: tuple[PeriodGap, ...] = ()
    recorded: bool = True

    def to_json(self) -> str:
        """Return the state as the compact JSON kept in a period file's metadata."""
        return json.dumps(
            {
                "v": 1,
                "status": "final" if self.final else "provisional",
                "gaps": [[g.start_ms, g.end_ms, list(g.missing_in)] for g in self.gaps],
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | None, *, final_default: bool) -> PeriodState:
        """Return the state in a file's metadata (the text under :data:`META_KEY`).

        Absent or unreadable text gives an unrecorded state, final when ``final_default``.
        """
        if text is None:
            return cls(final=final_default, recorded=False)
        try:
            data = json.loads(text)
            status = data["status"]
            gaps = tuple(
                PeriodGap(int(lo), int(hi), tuple(str(t) for t in tags))
                for lo, hi, tags in data.get("gaps", [])
            )
        except (ValueError, KeyError, TypeError):
            return cls(final=final_default, recorded=False)
        if status not in ("final", "provisional"):
            return cls(final=final_default, recorded=False)
        return cls(final=status == "final", gaps=gaps)


def read_state_json(file: Path) -> str | None:
    """Return the state JSON in a parquet file's key-value metadata (None when absent).

    Raises ``FileNotFoundError`` when the file is absent; an unreadable footer reads as None
    (the frame read then decides whether the file is bad).
    """
    try:
        return pl.read_parquet_metadata(file).get(META_KEY)
    except FileNotFoundError:
        raise
    except Exception:  # unreadable footer: the frame read decides whether the file is bad
        return None


def first_bar_record(
    market: MarketType, symbol: str, interval: Interval, open_ms: int, endpoint: str
) -> bytes:
    """Return the first-bar sidecar's content (JSON, indented, newline-terminated)."""
    payload = {
        "market": market.value,
        "symbol": symbol,
        "interval": interval.value,
        "first_open_ms": open_ms,
        "first_open": iso_ms(open_ms),
        "endpoint": endpoint,
    }
    return json.dumps(payload, indent=2).encode() + b"\n"


def parse_first_bar(
    raw: bytes, market: MarketType, symbol: str, interval: Interval
) -> tuple[int | None, str]:
    """Parse a series' first-bar sidecar.

    Return ``(open_ms, "")`` when it is valid for this series, else ``(None, why)``.
    """
    try:
        data = json.loads(raw)
    except ValueError as exc:
        return None, f"unreadable ({type(exc).__name__}: {exc})"
    if not isinstance(data, dict):
        return None, f"not a JSON object ({type(data).__name__})"
    series = {"market": market.value, "symbol": symbol, "interval": interval.value}
    other = {k: data.get(k) for k in series if data.get(k) != series[k]}
    if other:
        return None, f"for another series {other}, not {series}"
    first = data.get("first_open_ms")
    if isinstance(first, bool) or not isinstance(first, int) or first < 0:
        return None, f"holding an invalid first_open_ms {first!r}"
    if interval.floor_ms(first) != first:
        return None, f"holding first_open_ms {first} off the {interval.value} grid"
    return first, ""


def sidecar_endpoint(raw: bytes) -> str | None:
    """Return the REST endpoint recorded in a valid sidecar, None when absent (older ones)."""
    endpoint = json.loads(raw).get("endpoint")
    return endpoint if isinstance(endpoint, str) else None
