"""What a universe ingest did: per task (:class:`TaskResult`), per symbol and for the job."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nautilus_dsm.common import iso_ms
from nautilus_dsm.distributed.tasks import SeriesMonth


@dataclass(frozen=True)
class TaskResult:
    """
    One series-month as a worker left it (the catalog's files read back after the write).

    Parameters
    ----------
    task : SeriesMonth
        The task.
    bars_written : int
        Bars this task wrote (0 when another writer had written them).
    bars : int
        Bars of the month in the catalog afterwards.
    expected : int
        Closed bars the month can hold (from the listing, up to now).
    gaps : tuple[tuple[int, int], ...]
        Missing open-time ranges ``[a, b)`` (epoch ms).
    rest_requests : int
        REST leases this task took from the cluster budget.
    lease_times : tuple[float, ...]
        Wall-clock times of those leases.
    seconds : float
        Run time on the worker.
    worker : str
        Host and pid of the worker.

    """

    task: SeriesMonth
    bars_written: int
    bars: int
    expected: int
    gaps: tuple[tuple[int, int], ...]
    rest_requests: int
    lease_times: tuple[float, ...]
    seconds: float
    worker: str


@dataclass
class SymbolReport:
    """One series of the job: bars, completeness, gaps over the months this run ran."""

    instrument_id: str
    interval: str
    months_run: int = 0
    months_present: int = 0
    months_failed: list[str] = field(default_factory=list)
    bars_written: int = 0
    bars: int = 0
    expected: int = 0
    gaps: list[tuple[int, int]] = field(default_factory=list)

    @property
    def completeness(self) -> float:
        """Bars over expected bars of the months run (1.0 when none was expected)."""
        return 1.0 if self.expected == 0 else self.bars / self.expected

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "instrument_id": self.instrument_id,
            "interval": self.interval,
            "months_run": self.months_run,
            "months_present": self.months_present,
            "months_failed": list(self.months_failed),
            "bars_written": self.bars_written,
            "bars": self.bars,
            "expected": self.expected,
            "completeness": self.completeness,
            "gaps": [{"start": iso_ms(a), "end": iso_ms(b)} for a, b in self.gaps],
        }


@dataclass
class UniverseReport:
    """The whole job: per-symbol reports, task counts, throughput."""

    catalog: str
    tasks: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    failures: dict[str, str] = field(default_factory=dict)  # task key -> error text
    symbols: dict[str, SymbolReport] = field(default_factory=dict)
    results: list[TaskResult] = field(default_factory=list)
    workers: int = 0
    seconds: float = 0.0

    @property
    def bars_written(self) -> int:
        """Bars written by this run."""
        return sum(s.bars_written for s in self.symbols.values())

    @property
    def series_months_per_minute(self) -> float:
        """Series-months run per minute of wall time."""
        return 0.0 if self.seconds <= 0 else self.done * 60.0 / self.seconds

    @property
    def bars_per_second(self) -> float:
        """Bars written per second of wall time."""
        return 0.0 if self.seconds <= 0 else self.bars_written / self.seconds

    def symbol(self, task: SeriesMonth) -> SymbolReport:
        """Return the report of a task's series (created on first use)."""
        key = f"{task.instrument_id} {task.interval}"
        if key not in self.symbols:
            self.symbols[key] = SymbolReport(task.instrument_id, task.interval)
        return self.symbols[key]

    def add_present(self, task: SeriesMonth) -> None:
        """Count a month the catalog already held (not run)."""
        self.skipped += 1
        self.symbol(task).months_present += 1

    def add_result(self, result: TaskResult) -> None:
        """Fold one finished task in."""
        self.done += 1
        self.results.append(result)
        s = self.symbol(result.task)
        s.months_run += 1
        s.bars_written += result.bars_written
        s.bars += result.bars
        s.expected += result.expected
        s.gaps.extend(result.gaps)
        s.gaps.sort()

    def add_failure(self, task: SeriesMonth, error: str) -> None:
        """Count a task that failed after its retries."""
        self.failed += 1
        self.failures[task.key] = error
        self.symbol(task).months_failed.append(task.month)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "catalog": self.catalog,
            "tasks": self.tasks,
            "done": self.done,
            "skipped": self.skipped,
            "failed": self.failed,
            "failures": dict(self.failures),
            "workers": self.workers,
            "seconds": self.seconds,
            "bars_written": self.bars_written,
            "series_months_per_minute": self.series_months_per_minute,
            "bars_per_second": self.bars_per_second,
            "symbols": [s.to_dict() for _, s in sorted(self.symbols.items())],
        }

    def summary(self) -> str:
        """Return a text table: one line per series, then the totals."""
        lines = [f"{'series':<36} {'months':>6} {'bars':>10} {'expected':>10} {'complete':>9} gaps"]
        for key, s in sorted(self.symbols.items()):
            months = f"{s.months_run}+{s.months_present}"
            failed = f" FAILED {','.join(s.months_failed)}" if s.months_failed else ""
            lines.append(
                f"{key:<36} {months:>6} {s.bars:>10} {s.expected:>10} "
                f"{s.completeness:>9.2%} {len(s.gaps)}{failed}"
            )
        lines.append(
            f"{self.done} series-months run, {self.skipped} already in the catalog, "
            f"{self.failed} failed; {self.bars_written} bars written in {self.seconds:.1f} s "
            f"({self.series_months_per_minute:.1f} series-months/min, "
            f"{self.bars_per_second:,.0f} bars/s) on {self.workers} workers"
        )
        return "\n".join(lines)
