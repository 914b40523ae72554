"""The progress bar of the commands: a ``progress(done, total)`` callback drawn on stderr."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["ProgressBar"]


class ProgressBar:
    """
    A ``progress(done, total)`` callback drawing a tqdm bar on stderr (or nothing).

    Parameters
    ----------
    enabled : bool
        Draw the bar; False makes every call a no-op (``--no-progress``).
    desc : str
        The bar's label (an instrument id, ``"ingest"``).
    unit : str
        What is counted (``"period"``, ``"chunk"``).

    """

    def __init__(self, enabled: bool, desc: str, unit: str) -> None:
        self._bar: Any = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=0, desc=desc, unit=unit, file=sys.stderr, leave=False)

    def __call__(self, done: int, total: int) -> None:
        """Draw ``done`` of ``total`` (which may change between calls); nothing when disabled."""
        if self._bar is not None:
            self._bar.total = total
            self._bar.n = done
            self._bar.refresh()

    def close(self) -> None:
        """Remove the bar; closing again does nothing."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
