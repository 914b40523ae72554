"""``nautilus-dsm demo``: fetch, check, ingest and backtest a week of BTCUSDT-PERP 1m bars.

The work is :func:`nautilus_dsm.backtest.demo.run_demo` (imported when the command runs, so
``--help`` costs no NautilusTrader); this module adds the options and the progress bar. The
demo picks its source itself (Binance, else the bundled imitation) and keeps synthetic data in
``--output``, so it takes the request bounds and ``--no-progress`` of the shared options but
not ``--market-type`` (the instrument is fixed), the base URLs (they would decide whether the
output is labelled SYNTHETIC) nor ``--cache-dir`` (synthetic bars never go to a user's cache).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from nautilus_dsm.cli.exits import exit_codes
from nautilus_dsm.cli.options import SOURCE_OPTIONS, source_options
from nautilus_dsm.cli.progress import ProgressBar

if TYPE_CHECKING:
    from nautilus_dsm.dsm.settings import SourceSettings

__all__ = ["demo"]


class _FetchBar:
    """The demo fetch's progress bar, drawn from the first call on.

    That call comes after the header lines the demo prints once its source is up (a bar drawn
    earlier would share their line).
    """

    def __init__(self) -> None:
        self._bar: ProgressBar | None = None

    def __call__(self, done: int, total: int) -> None:
        if self._bar is None:
            self._bar = ProgressBar(True, "fetch", "period")
        self._bar(done, total)

    def close(self) -> None:
        """Remove the bar; closing again does nothing."""
        if self._bar is not None:
            self._bar.close()


@click.command()
@click.option("--offline", is_flag=True, help="Use the bundled Binance imitation (synthetic).")
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory for the catalog and cache (a new temporary directory by default).",
)
@click.option(
    "--days",
    type=click.IntRange(1, 31),
    default=7,
    show_default=True,
    help="Days of 1m bars to fetch and backtest.",
)
@source_options(omit=SOURCE_OPTIONS)
def demo(
    offline: bool, output: Path | None, days: int, settings: SourceSettings, show_progress: bool
) -> None:
    """Fetch, check, ingest and backtest a week of BTCUSDT-PERP 1m bars.

    Uses Binance when reachable, else (or with --offline) the bundled imitation, whose prices
    are SYNTHETIC and labelled so on every section of the output.
    """
    with exit_codes():
        from nautilus_dsm.backtest.demo import run_demo

        progress = _FetchBar() if show_progress else None
        try:
            run_demo(
                offline=offline,
                output=output,
                days=days,
                progress=progress,
                echo=click.echo,
                settings=settings,
            )
        finally:
            if progress is not None:
                progress.close()
