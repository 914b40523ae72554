"""What an ingest did: :class:`IngestReport` and the records it lists."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from nautilus_dsm.common import iso

if TYPE_CHECKING:
    from nautilus_dsm.dsm.quality import QualityReport


@dataclass(frozen=True)
class IngestedChunk:
    """One chunk written: its bar type, open-time range ``[start, end)``, bars, file, quality."""

    bar_type: str
    start: datetime
    end: datetime
    bars: int
    file: str
    report: QualityReport


@dataclass(frozen=True)
class SkippedRange:
    """An open-time range ``[start, end)`` of a bar type already in the catalog, not fetched."""

    bar_type: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class InvalidBar:
    """A kline the source served that cannot be a bar (e.g. high < low): reported, not written."""

    bar_type: str
    open_time: datetime
    reason: str


@dataclass(frozen=True)
class RepairedRange:
    """Overlapping files of a bar type (two writers, or an older version) merged into one copy.

    ``start``/``end`` are the bar open times ``[start, end)`` the merged files covered.
    """

    bar_type: str
    start: datetime
    end: datetime
    files_merged: int
    files_written: int
    duplicates_removed: int


@dataclass(frozen=True)
class RecheckedFile:
    """A file whose gap record made this run ask the sources again.

    It is rewritten when the sources now have more bars.
    """

    bar_type: str
    file: str
    bars_before: int
    bars_after: int
    rewritten: bool
    gaps_left: int


@dataclass
class IngestReport:
    """What ``ingest`` did: bars written per bar type, chunk quality, skipped ranges, speed."""

    catalog_path: str
    start: datetime
    end: datetime
    bars_written: dict[str, int] = field(default_factory=dict)
    instruments_written: list[str] = field(default_factory=list)
    chunks: list[IngestedChunk] = field(default_factory=list)
    skipped: list[SkippedRange] = field(default_factory=list)
    invalid: list[InvalidBar] = field(default_factory=list)
    repaired: list[RepairedRange] = field(default_factory=list)
    rechecked: list[RecheckedFile] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total_bars(self) -> int:
        """Bars written, summed over every bar type."""
        return sum(self.bars_written.values())

    @property
    def bars_per_second(self) -> float:
        """Bars written per second of the run (0.0 when no time was measured)."""
        return self.total_bars / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "catalog_path": self.catalog_path,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "bars_written": dict(self.bars_written),
            "total_bars": self.total_bars,
            "instruments_written": list(self.instruments_written),
            "chunks": [_chunk_dict(c) for c in self.chunks],
            "skipped": [
                {"bar_type": s.bar_type, "start": s.start.isoformat(), "end": s.end.isoformat()}
                for s in self.skipped
            ],
            "invalid": [
                {"bar_type": b.bar_type, "open_time": b.open_time.isoformat(), "reason": b.reason}
                for b in self.invalid
            ],
            "repaired": [_repaired_dict(r) for r in self.repaired],
            "rechecked": [_rechecked_dict(r) for r in self.rechecked],
            "seconds": round(self.seconds, 3),
            "bars_per_second": round(self.bars_per_second, 1),
        }

    def summary(self) -> str:
        """Return a short human-readable summary (one line per bar type)."""
        lines = [
            f"catalog {self.catalog_path}: {self.total_bars} bars written in "
            f"{self.seconds:.2f} s ({self.bars_per_second:,.0f} bars/s), "
            f"{len(self.chunks)} chunk(s), {len(self.skipped)} range(s) already present"
        ]
        if self.instruments_written:
            lines.append(f"  instruments written: {', '.join(self.instruments_written)}")
        bar_types = dict.fromkeys([*self.bars_written, *(s.bar_type for s in self.skipped)])
        lines.extend(self._bar_type_line(bar_type) for bar_type in bar_types)
        for r in self.repaired:
            lines.append(
                f"  {r.bar_type}: repaired {r.files_merged} overlapping file(s) covering "
                f"{r.start:%Y-%m-%d %H:%M}..{r.end:%Y-%m-%d %H:%M} into {r.files_written}, "
                f"{r.duplicates_removed} duplicate bar(s) removed"
            )
        for c in self.rechecked:
            what = "rewritten" if c.rewritten else "unchanged"
            lines.append(
                f"  {c.bar_type}: re-checked {c.file.rsplit('/', 1)[-1]} (recorded gaps): "
                f"{c.bars_before} -> {c.bars_after} bars, {what}, {c.gaps_left} gap(s) left"
            )
        if self.invalid:
            shown = ", ".join(f"{iso(b.open_time)} ({b.reason})" for b in self.invalid[:5])
            more = f" and {len(self.invalid) - 5} more" if len(self.invalid) > 5 else ""
            lines.append(
                f"  skipped {len(self.invalid)} kline(s) that cannot be bars: {shown}{more}; "
                "they are not in the catalog and are re-checked on the next run"
            )
        return "\n".join(lines)

    def _bar_type_line(self, bar_type: str) -> str:
        chunks = [c for c in self.chunks if c.bar_type == bar_type]
        expected = sum(c.report.expected_bars for c in chunks)
        gaps = sum(len(c.report.gaps) for c in chunks)
        skipped = [s for s in self.skipped if s.bar_type == bar_type]
        line = f"  {bar_type}: {self.bars_written.get(bar_type, 0)} bars"
        if chunks:
            line += f" (expected {expected}, gaps {gaps})"
        if skipped:
            ranges = ", ".join(f"{s.start:%Y-%m-%d %H:%M}..{s.end:%Y-%m-%d %H:%M}" for s in skipped)
            line += f"; already present: {ranges}"
        return line


def _chunk_dict(c: IngestedChunk) -> dict[str, Any]:
    return {
        "bar_type": c.bar_type,
        "start": c.start.isoformat(),
        "end": c.end.isoformat(),
        "bars": c.bars,
        "file": c.file,
        "completeness": c.report.completeness,
        "expected_bars": c.report.expected_bars,
        "gaps": len(c.report.gaps),
    }


def _repaired_dict(r: RepairedRange) -> dict[str, Any]:
    return {
        "bar_type": r.bar_type,
        "start": r.start.isoformat(),
        "end": r.end.isoformat(),
        "files_merged": r.files_merged,
        "files_written": r.files_written,
        "duplicates_removed": r.duplicates_removed,
    }


def _rechecked_dict(r: RecheckedFile) -> dict[str, Any]:
    return {
        "bar_type": r.bar_type,
        "file": r.file,
        "bars_before": r.bars_before,
        "bars_after": r.bars_after,
        "rewritten": r.rewritten,
        "gaps_left": r.gaps_left,
    }
