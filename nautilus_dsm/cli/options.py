"""The options every command that talks to Binance or the cache shares, as one decorator.

:func:`source_options` adds ``--market-type``, ``--base-url-http``, ``--base-url-vision``,
``--cache-dir``, the request bounds ``--max-retries``/``--timeout``/``--deadline`` and
``--no-progress/--progress`` (default: a bar only when stderr is a terminal;
``--min-completeness`` on request), and hands the command one
:class:`~nautilus_dsm.dsm.settings.SourceSettings` built from them (``settings=``) plus
``show_progress=``. A command leaves out the options that mean nothing to it (``omit``).
Nothing here imports NautilusTrader.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from nautilus_dsm.cli.exits import EXIT_INVALID, exit_codes, fail
from nautilus_dsm.cli.inputs import check_dir_path
from nautilus_dsm.cli.progress import progress_enabled
from nautilus_dsm.common import MarketType
from nautilus_dsm.dsm.settings import SourceSettings
from nautilus_dsm.errors import InvalidInput

if TYPE_CHECKING:
    from nautilus_dsm.dsm.manager import DataSourceManager

__all__ = [
    "MARKET_CHOICES",
    "PROGRESS_OPTIONS",
    "REQUEST_BOUNDS",
    "SHARED_OPTIONS",
    "SOURCE_OPTIONS",
    "open_manager",
    "source_options",
]

F = TypeVar("F", bound=Callable[..., Any])
Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

MARKET_CHOICES = [m.value for m in MarketType]

# Where the data comes from and where it is cached.
SOURCE_OPTIONS = ("--market-type", "--base-url-http", "--base-url-vision", "--cache-dir")
# How long and how often one request may try (no use to a command that makes no request).
REQUEST_BOUNDS = ("--max-retries", "--timeout", "--deadline")
# The stderr progress bar (no use to a command that draws none).
PROGRESS_OPTIONS = ("--no-progress",)
SHARED_OPTIONS = (*SOURCE_OPTIONS, *REQUEST_BOUNDS, *PROGRESS_OPTIONS)

# A request bound's option -> the SourceSettings field it sets.
_BOUND_FIELDS = {"max_retries": "max_retries", "timeout": "timeout_s", "deadline": "deadline_s"}


def source_options(
    *, omit: Iterable[str] = (), min_completeness: bool = False, market_help: str | None = None
) -> Decorator:
    """
    Return a decorator adding the shared options to a click command.

    The command is called with ``settings`` (a validated :class:`SourceSettings`) instead of
    the options' values, and with ``show_progress`` (not ``--no-progress``) unless that option
    is omitted. A bad value exits 2 with one line on stderr before the command runs.

    Parameters
    ----------
    omit : Iterable[str]
        Flags of :data:`SHARED_OPTIONS` the command does not take, e.g. :data:`REQUEST_BOUNDS`
        for a command that makes no request.
    min_completeness : bool, default False
        Also add ``--min-completeness`` (``SourceSettings.min_completeness``).
    market_help : str, optional
        The help of ``--market-type`` when it means something else than the market of the
        command's instrument id (e.g. a filter of a listing).

    """
    omitted = set(omit)
    unknown = omitted - set(SHARED_OPTIONS)
    if unknown:
        raise ValueError(f"unknown shared options {sorted(unknown)}; use {SHARED_OPTIONS}")
    progress = "--no-progress" not in omitted
    options = [o for flag, o in _OPTIONS.items() if flag not in omitted]
    if market_help is not None and "--market-type" not in omitted:
        options[0] = _market_option(market_help)
    if min_completeness:  # listed just before --no-progress
        options.insert(len(options) - 1 if progress else len(options), _MIN_COMPLETENESS)

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            with exit_codes():
                kwargs["settings"] = _settings(kwargs)
            if progress:
                kwargs["show_progress"] = progress_enabled(kwargs.pop("no_progress"))
            return fn(**kwargs)

        for option in reversed(options):
            command = option(command)
        return command  # type: ignore[return-value]

    return decorate


def _settings(values: dict[str, Any]) -> SourceSettings:
    """Pop the shared options' values from ``values``; return them as SourceSettings."""
    cache_dir: Path | None = values.pop("cache_dir", None)
    check_dir_path(cache_dir, "--cache-dir")
    fields: dict[str, Any] = {
        "market_type": values.pop("market_type", None),
        "base_url_http": values.pop("base_url_http", None),
        "base_url_vision": values.pop("base_url_vision", None),
        "cache_dir": None if cache_dir is None else str(cache_dir),
        "on_low_quality": "raise",
    }
    if "min_completeness" in values:
        fields["min_completeness"] = values.pop("min_completeness")
    for option, field in _BOUND_FIELDS.items():
        fields[field] = values.pop(option, None)
    return SourceSettings(**fields)


@contextlib.asynccontextmanager
async def open_manager(settings: SourceSettings) -> AsyncIterator[DataSourceManager]:
    """Yield a data-source manager for one command, closed when the command is done with it."""
    from nautilus_dsm.dsm.manager import DataSourceManager

    dsm = DataSourceManager.from_config(settings)
    try:
        yield dsm
    finally:
        await dsm.aclose()


# -- the options ------------------------------------------------------------------------------


def _check_bound(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    # Validated when parsed: one stderr line like every other bad input (not click's usage
    # block), exit 2, before anything else runs.
    from nautilus_dsm.dsm.bounds import check_knobs

    if value is None:
        return value
    name = _BOUND_FIELDS[str(param.name)]
    try:
        return check_knobs(**{name: value})[name]
    except InvalidInput as e:
        flag = f"--{str(param.name).replace('_', '-')}"
        fail(EXIT_INVALID, f"error: invalid value for {flag}: {e}")


_BOUND: dict[str, Any] = {"default": None, "callback": _check_bound}


def _market_option(help_text: str) -> Decorator:
    return click.option(
        "--market-type",
        type=click.Choice(MARKET_CHOICES, case_sensitive=False),
        default=None,
        help=help_text,
    )


# Flag -> its click option, in the order a command's help lists them.
_OPTIONS: dict[str, Decorator] = {
    "--market-type": _market_option(
        "Binance market; inferred from the instrument id when omitted (a raw Binance "
        "symbol needs it)."
    ),
    "--base-url-http": click.option(
        "--base-url-http",
        default=None,
        help="REST host override (mirror, proxy, the local imitation).",
    ),
    "--base-url-vision": click.option(
        "--base-url-vision", default=None, help="Binance Vision host override."
    ),
    "--cache-dir": click.option(
        "--cache-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Kline cache directory (default: $NAUTILUS_DSM_CACHE_DIR, else the per-user "
        "cache dir).",
    ),
    "--max-retries": click.option(
        "--max-retries",
        type=int,
        help="Tries per request, the first included (default: REST 5, Vision 3).",
        **_BOUND,
    ),
    "--timeout": click.option(
        "--timeout",
        type=float,
        help="Seconds without a byte before a request fails (default 10).",
        **_BOUND,
    ),
    "--deadline": click.option(
        "--deadline",
        type=float,
        help="Total seconds per request try, connect to last byte (default: REST 60, Vision 300).",
        **_BOUND,
    ),
    # Keyed "--no-progress" (the name commands omit it by); None: draw only on a terminal.
    "--no-progress": click.option(
        "--no-progress/--progress",
        "no_progress",
        default=None,
        help="Hide / draw the progress bar on stderr (default: drawn only when stderr is a "
        "terminal, so CI logs stay clean).",
    ),
}
_MIN_COMPLETENESS = click.option(
    "--min-completeness",
    type=click.FloatRange(0.0, 1.0),
    default=0.95,
    show_default=True,
    help="Completeness below which the command exits with code 3.",
)
