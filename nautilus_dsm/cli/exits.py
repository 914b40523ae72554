"""Exit codes of ``nautilus-dsm`` and the mapping of our exceptions to them.

0 success; 2 invalid input (one line on stderr naming the problem and the fix, before any I/O;
click usage errors are 2 as well); 3 data quality below the threshold (the data and report are
still written); 1 any other failure (one line on stderr).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, NoReturn

import click

from nautilus_dsm.errors import DSMError, InvalidInput, QualityBelowThreshold

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INVALID",
    "EXIT_OK",
    "EXIT_QUALITY",
    "exit_codes",
    "fail",
    "one_line",
    "run",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INVALID = 2
EXIT_QUALITY = 3


def one_line(text: str) -> str:
    """Return ``text`` with every run of whitespace (newlines included) as one space."""
    return " ".join(str(text).split())


def fail(code: int, message: str) -> NoReturn:
    """Print ``message`` as one line on stderr and exit with ``code``."""
    click.echo(one_line(message), err=True)
    raise SystemExit(code)


@contextlib.contextmanager
def exit_codes() -> Iterator[None]:
    """Map our exceptions to the exit codes: invalid input 2, quality 3, anything else 1."""
    try:
        yield
    except (SystemExit, click.exceptions.Exit, click.ClickException, click.Abort):
        raise
    except InvalidInput as e:
        fail(EXIT_INVALID, f"error: {e}")
    except QualityBelowThreshold as e:
        fail(EXIT_QUALITY, f"quality below threshold: {e}")
    except DSMError as e:
        fail(EXIT_FAILURE, f"error: {type(e).__name__}: {e}")
    except KeyboardInterrupt:
        fail(EXIT_FAILURE, "error: interrupted")
    except Exception as e:
        fail(EXIT_FAILURE, f"error: {type(e).__name__}: {e}")


def run(coro_fn: Callable[[], Coroutine[Any, Any, int]]) -> None:
    """Run a command's coroutine under :func:`exit_codes`; exit with the code it returns."""
    with exit_codes():
        code = asyncio.run(coro_fn())
    if code:
        raise SystemExit(code)
