"""The client's view of a running job: done / failed / remaining series-months and rows/s."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class JobStatus:
    """Counts of one job, updated as tasks finish."""

    total: int
    done: int = 0
    failed: int = 0
    rows: int = 0
    started: float = 0.0

    @property
    def remaining(self) -> int:
        """Tasks neither done nor failed."""
        return self.total - self.done - self.failed

    def rows_per_second(self, now: float | None = None) -> float:
        """Rows written per second since the job started."""
        elapsed = (time.perf_counter() if now is None else now) - self.started
        return 0.0 if elapsed <= 0 else self.rows / elapsed

    def line(self) -> str:
        """``done 12 · failed 0 · remaining 4 series-months · 81,234 rows/s``."""
        return (
            f"done {self.done} · failed {self.failed} · remaining {self.remaining} "
            f"series-months · {self.rows_per_second():,.0f} rows/s"
        )


ProgressCallback = Callable[[JobStatus], None]


class JobProgress:
    """
    Track a job and show it: a tqdm bar on stderr, a callback, both or neither.

    Parameters
    ----------
    total : int
        Tasks of the job.
    show : bool
        Draw a progress bar on stderr.
    callback : callable, optional
        Called with the :class:`JobStatus` after each task (and once at the start).

    """

    def __init__(self, total: int, show: bool, callback: ProgressCallback | None = None) -> None:
        self.status = JobStatus(total=total, started=time.perf_counter())
        self._callback = callback
        self._bar: Any = None
        if show:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="series-month", file=sys.stderr, dynamic_ncols=True)
        self._notify()

    def finished(self, rows: int) -> None:
        """Count a finished task that wrote ``rows`` rows."""
        self.status.done += 1
        self.status.rows += rows
        self._step()

    def failed(self) -> None:
        """Count a task that failed after its retries."""
        self.status.failed += 1
        self._step()

    def close(self) -> None:
        """Close the bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _step(self) -> None:
        if self._bar is not None:
            s = self.status
            self._bar.set_postfix_str(
                f"failed {s.failed} · {s.rows_per_second():,.0f} rows/s", refresh=False
            )
            self._bar.update(1)
        self._notify()

    def _notify(self) -> None:
        if self._callback is not None:
            self._callback(self.status)
