"""The ``nautilus-dsm`` command line: fetch, ingest, quality, instruments, cache, demo.

Exit codes (:mod:`nautilus_dsm.cli.exits`): 0 success; 2 invalid input (one line on stderr
naming the problem and the fix, before any I/O; click usage errors are 2 as well); 3 data
quality below the threshold (the data and report are still written); 1 any other failure (one
line on stderr). Importing this package, ``--help`` and the ``fetch`` and ``cache`` commands
cost no NautilusTrader import; the commands that need it import it when they run.
"""

from __future__ import annotations

import click

from nautilus_dsm.cli.cache import cache
from nautilus_dsm.cli.demo import demo
from nautilus_dsm.cli.fetch import fetch
from nautilus_dsm.cli.ingest import ingest_command
from nautilus_dsm.cli.ingest_universe import ingest_universe_command
from nautilus_dsm.cli.instruments import instruments
from nautilus_dsm.cli.quality import quality

__all__ = ["cli", "main"]


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Exit codes: 0 ok, 1 failure, 2 invalid input, 3 quality below threshold.",
)
@click.version_option(package_name="nautilus-dsm")
def cli() -> None:
    """Binance klines for NautilusTrader: fetch, check quality, ingest into a catalog."""


for _command in (fetch, ingest_command, ingest_universe_command, quality, instruments, cache, demo):
    cli.add_command(_command)


def main() -> None:
    """Run the console script ``nautilus-dsm``."""
    cli(prog_name="nautilus-dsm")
