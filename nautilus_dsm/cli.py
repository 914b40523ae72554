"""The ``nautilus-dsm`` command line: fetch, ingest, quality, instruments, cache, demo.

Exit codes: 0 success; 2 invalid input (one line on stderr naming the problem and the fix,
before any I/O; click usage errors are 2 as well); 3 data quality below the threshold (the data
and report are still written); 1 any other failure (one line on stderr).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from nautilus_dsm.common import (
    DataProvider,
    Interval,
    MarketType,
    ResolvedInstrument,
    check_not_future,
    check_range,
    resolve_instrument,
)
from nautilus_dsm.errors import DSMError, InvalidInput, QualityBelowThreshold

if TYPE_CHECKING:
    from nautilus_dsm.dsm.cache import KlineCache
    from nautilus_dsm.dsm.manager import DataSourceManager, FetchResult
    from nautilus_dsm.dsm.quality import QualityReport

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INVALID = 2
EXIT_QUALITY = 3

# The seed project's alert thresholds, flagged by `quality`.
COMPLETENESS_ALERT = 0.95
BAR_SUCCESS_ALERT = 0.90
CACHE_HIT_ALERT = 0.60

_MARKET_CHOICES = [m.value for m in MarketType]
_DATE_HELP = (
    "UTC: a date (2024-01-01) or an ISO datetime (2024-01-01T12:00:00Z); "
    "a datetime without offset is taken as UTC"
)


# --------------------------------------------------------------------------------------------
# Errors and exit codes
# --------------------------------------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _fail(code: int, message: str) -> NoReturn:
    click.echo(_one_line(message), err=True)
    raise SystemExit(code)


@contextlib.contextmanager
def _exit_codes() -> Iterator[None]:
    """Map our exceptions to the exit codes: invalid input 2, quality 3, anything else 1."""
    try:
        yield
    except (SystemExit, click.exceptions.Exit, click.ClickException, click.Abort):
        raise
    except InvalidInput as e:
        _fail(EXIT_INVALID, f"error: {e}")
    except QualityBelowThreshold as e:
        _fail(EXIT_QUALITY, f"quality below threshold: {e}")
    except DSMError as e:
        _fail(EXIT_FAILURE, f"error: {type(e).__name__}: {e}")
    except KeyboardInterrupt:
        _fail(EXIT_FAILURE, "error: interrupted")
    except Exception as e:
        _fail(EXIT_FAILURE, f"error: {type(e).__name__}: {e}")


def _run(coro_fn: Callable[[], Coroutine[Any, Any, int]]) -> None:
    with _exit_codes():
        code = asyncio.run(coro_fn())
    if code:
        raise SystemExit(code)


# --------------------------------------------------------------------------------------------
# Input parsing (pure, before any I/O)
# --------------------------------------------------------------------------------------------


def parse_utc(value: str, option: str) -> datetime:
    """Parse a CLI date/datetime as UTC (naive input is UTC; an offset is converted)."""
    text = value.strip()
    try:
        dt = datetime.fromisoformat(text)
        # An offset near year 1 or 9999 moves the time out of datetime's range.
        return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidInput(
            f"{option} {value!r} is not a date; use a UTC date like 2024-01-01 "
            "or an ISO datetime like 2024-01-01T12:00:00Z"
        ) from None


def _parse_range(start: str, end: str) -> tuple[datetime, datetime]:
    start_dt, end_dt = parse_utc(start, "--start"), parse_utc(end, "--end")
    start_ms, _ = check_range(start_dt, end_dt)
    # The local clock, before any I/O; fetch checks again against its own "now".
    check_not_future(start_ms, int(datetime.now(UTC).timestamp() * 1000))
    return start_dt, end_dt


def check_out_path(out: Path, option: str = "--out") -> Path:
    """Refuse an output file ``fetch`` cannot write as named, before any I/O.

    ``fetch`` writes Parquet only: a ``.csv`` (or any other) name would hold Parquet bytes
    under a misleading suffix, so it is refused rather than guessed at.
    """
    if out.suffix.lower() != ".parquet":
        suffix = f"suffix {out.suffix!r}" if out.suffix else "no suffix"
        raise InvalidInput(
            f"{option} {str(out)!r} has {suffix}; fetch writes Parquet, so name the file "
            f"*.parquet, e.g. {out.stem or 'bars'}.parquet"
        )
    _check_no_file_above(out, option)
    return out


def _check_no_file_above(path: Path, option: str) -> None:
    """Refuse a path whose nearest existing ancestor is a file: it could never be created."""
    parent = next((p for p in (path.parent, *path.parent.parents) if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise InvalidInput(f"{option} {str(path)!r}: {str(parent)!r} is a file, not a directory")


def check_dir_path(path: Path | None, option: str) -> Path | None:
    """Refuse a directory option (``--cache-dir``, ``--catalog``) that is, or lies under, a
    file, before any I/O (otherwise a raw OS error after the download)."""
    if path is None:
        return None
    path = path.expanduser()
    if path.exists() and not path.is_dir():
        raise InvalidInput(f"{option} {str(path)!r} is a file, not a directory; name a directory")
    _check_no_file_above(path, option)
    return path


def check_report_path(report: Path | None, out: Path) -> None:
    """Refuse a ``--report`` that cannot be written, or that is the ``--out`` file itself
    (the report would silently replace the bars), before any I/O."""
    if report is None:
        return
    if report.expanduser().resolve() == out.expanduser().resolve():
        raise InvalidInput(
            f"--report {str(report)!r} is the --out file; the report would replace the bars, "
            "so name another file, e.g. report.json"
        )
    _check_no_file_above(report, "--report")


def _resolve(
    instrument_id: str, market_type: str | None, interval: str
) -> tuple[ResolvedInstrument, Interval]:
    resolved = resolve_instrument(instrument_id, market_type)
    iv = Interval.parse(interval)
    iv.check_market(resolved.market_type)
    return resolved, iv


# --------------------------------------------------------------------------------------------
# Shared options and helpers
# --------------------------------------------------------------------------------------------


def _source_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--market-type",
            type=click.Choice(_MARKET_CHOICES, case_sensitive=False),
            default=None,
            help="Binance market; inferred from the instrument id when omitted.",
        ),
        click.option(
            "--base-url-http",
            default=None,
            help="REST host override (mirror, proxy, the local imitation).",
        ),
        click.option("--base-url-vision", default=None, help="Binance Vision host override."),
        click.option(
            "--cache-dir",
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            help="Kline cache directory (the per-user cache dir by default).",
        ),
        *_bound_options(),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


# The time bounds of every request. Validated when parsed (exit 2 before anything else runs)
# and kept on the click context for _dsm, so the commands' signatures need not carry them.
_BOUNDS_META = "nautilus_dsm.bounds"


def _store_bound(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    from nautilus_dsm.dsm.bounds import check_knobs

    if value is None:
        return value
    knob = {"max_retries": "max_retries", "timeout": "timeout_s", "deadline": "deadline_s"}
    name = knob[str(param.name)]
    try:
        checked = check_knobs(**{name: value})
    except InvalidInput as e:
        # One stderr line like every other bad input (not click's usage block), exit 2.
        flag = f"--{str(param.name).replace('_', '-')}"
        _fail(EXIT_INVALID, f"error: invalid value for {flag}: {e}")
    ctx.meta.setdefault(_BOUNDS_META, {}).update(checked)
    return value


def _bound_options() -> list[Callable[[Callable[..., Any]], Callable[..., Any]]]:
    common: dict[str, Any] = {"default": None, "expose_value": False, "callback": _store_bound}
    return [
        click.option(
            "--max-retries",
            type=int,
            help="Tries per request, the first included (default: REST 5, Vision 3).",
            **common,
        ),
        click.option(
            "--timeout",
            type=float,
            help="Seconds without a byte before a request fails (default 10).",
            **common,
        ),
        click.option(
            "--deadline",
            type=float,
            help="Total seconds per request try, connect to last byte (default: REST 60, "
            "Vision 300).",
            **common,
        ),
    ]


def _progress_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--no-progress", is_flag=True, default=False, help="Hide the progress bar (stderr)."
    )(fn)


def _min_completeness_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--min-completeness",
        type=click.FloatRange(0.0, 1.0),
        default=0.95,
        show_default=True,
        help="Completeness below which the command exits with code 3.",
    )(fn)


@contextlib.asynccontextmanager
async def _dsm(
    market_type: str | None,
    base_url_http: str | None,
    base_url_vision: str | None,
    cache_dir: Path | None,
    min_completeness: float = 0.95,
) -> AsyncIterator[DataSourceManager]:
    """A data-source manager for one command, closed when the command is done with it."""
    from nautilus_dsm.dsm.manager import DataSourceManager

    check_dir_path(cache_dir, "--cache-dir")
    ctx = click.get_current_context(silent=True)
    bounds = dict(ctx.meta.get(_BOUNDS_META, {})) if ctx is not None else {}
    dsm = DataSourceManager.create(
        DataProvider.BINANCE,
        MarketType.parse(market_type) if market_type else None,
        base_url_http=base_url_http,
        base_url_vision=base_url_vision,
        cache_dir=str(cache_dir) if cache_dir is not None else None,
        min_completeness=min_completeness,
        on_low_quality="raise",
        **bounds,
    )
    try:
        yield dsm
    finally:
        await dsm.aclose()


async def _fetch(
    dsm: DataSourceManager,
    resolved: ResolvedInstrument,
    iv: Interval,
    start: datetime,
    end: datetime,
    show_progress: bool,
) -> tuple[FetchResult, int]:
    """Fetch with a progress bar; below the threshold keep the result, with exit code 3."""
    progress = ProgressBar(show_progress, resolved.instrument_id, "period")
    try:
        result = await dsm.fetch(resolved.instrument_id, iv.value, start, end, progress=progress)
        return result, EXIT_OK
    except QualityBelowThreshold as e:
        if e.result is None:
            raise
        return e.result, EXIT_QUALITY
    finally:
        progress.close()


class ProgressBar:
    """``progress(done, total)`` callback drawing a tqdm bar on stderr (or nothing)."""

    def __init__(self, enabled: bool, desc: str, unit: str) -> None:
        self._bar: Any = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=0, desc=desc, unit=unit, file=sys.stderr, leave=False)

    def __call__(self, done: int, total: int) -> None:
        if self._bar is not None:
            self._bar.total = total
            self._bar.n = done
            self._bar.refresh()

    def close(self) -> None:
        """Remove the bar; closing again does nothing."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _pct(value: float) -> str:
    return f"{value:.2%}"


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Exit codes: 0 ok, 1 failure, 2 invalid input, 3 quality below threshold.",
)
@click.version_option(package_name="nautilus-dsm")
def cli() -> None:
    """Binance klines for NautilusTrader: fetch, check quality, ingest into a catalog."""


@cli.command()
@click.argument("instrument_id")
@click.option("--interval", required=True, help="Binance interval: 1s 1m 3m ... 1d 1w 1M.")
@click.option("--start", required=True, help=f"First bar open time, {_DATE_HELP}.")
@click.option("--end", required=True, help=f"End (exclusive), {_DATE_HELP}.")
@_source_options
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Parquet file for the klines (the name must end in .parquet).",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="JSON file for the quality report.",
)
@_min_completeness_option
@_progress_option
def fetch(
    instrument_id: str,
    interval: str,
    start: str,
    end: str,
    market_type: str | None,
    base_url_http: str | None,
    base_url_vision: str | None,
    cache_dir: Path | None,
    out: Path,
    report_path: Path | None,
    min_completeness: float,
    no_progress: bool,
) -> None:
    """Fetch the klines of INSTRUMENT_ID into a parquet file.

    INSTRUMENT_ID is a Nautilus id such as BTCUSDT-PERP.BINANCE, or a Binance symbol with
    --market-type. Bars are those with open time in [start, end), closed bars only.
    """

    async def main() -> int:
        resolved, iv = _resolve(instrument_id, market_type, interval)
        start_dt, end_dt = _parse_range(start, end)
        check_out_path(out)
        check_report_path(report_path, out)
        async with _dsm(
            market_type, base_url_http, base_url_vision, cache_dir, min_completeness
        ) as dsm:
            result, code = await _fetch(dsm, resolved, iv, start_dt, end_dt, not no_progress)
        out.parent.mkdir(parents=True, exist_ok=True)
        result.frame.write_parquet(out)
        report = result.report
        if report_path is not None:
            _write_json(report_path, report.to_dict())
        click.echo(report.summary())
        click.echo(f"wrote {result.frame.height} bars to {out}")
        if code == EXIT_QUALITY:
            written = f"{out}" + (f" and report to {report_path}" if report_path else "")
            click.echo(_quality_line(report, min_completeness, written), err=True)
        return code

    _run(main)


def _quality_line(report: QualityReport, min_completeness: float, written: str | None) -> str:
    """The one stderr line of exit code 3: how incomplete, where the data went, how to accept."""
    accept = int(report.completeness * 10_000) / 10_000
    where = f"data written to {written}; " if written else ""
    return (
        f"quality below threshold: {report.instrument_id} {report.interval.value} completeness "
        f"{_pct(report.completeness)} ({report.bars} of {report.expected_bars} bars, "
        f"{len(report.gaps)} gap(s)) < --min-completeness {_pct(min_completeness)}; "
        f"{where}pass --min-completeness {accept} to accept it"
    )


@cli.command(name="ingest")
@click.argument("instrument_ids", nargs=-1, required=True)
@click.option(
    "--interval", "intervals", multiple=True, required=True, help="Repeat for several intervals."
)
@click.option("--start", required=True, help=f"First bar open time, {_DATE_HELP}.")
@click.option("--end", required=True, help=f"End (exclusive), {_DATE_HELP}.")
@click.option(
    "--catalog",
    "catalog_path",
    required=True,
    help="ParquetDataCatalog path or URI (created if missing).",
)
@click.option(
    "--chunk-days",
    type=click.IntRange(min=1),
    default=7,
    show_default=True,
    help="Days fetched and written per file (bounds memory).",
)
@click.option(
    "--lock-timeout",
    "lock_timeout_s",
    type=click.FloatRange(min=0.0),
    default=60.0,
    show_default=True,
    help="Seconds to wait for another ingest writing the same bar type before giving up.",
)
@_source_options
@_min_completeness_option
@_progress_option
@click.option("--json", "as_json", is_flag=True, help="Print the ingest report as JSON.")
def ingest_command(
    instrument_ids: tuple[str, ...],
    intervals: tuple[str, ...],
    start: str,
    end: str,
    catalog_path: str,
    chunk_days: int,
    lock_timeout_s: float,
    market_type: str | None,
    base_url_http: str | None,
    base_url_vision: str | None,
    cache_dir: Path | None,
    min_completeness: float,
    no_progress: bool,
    as_json: bool,
) -> None:
    """Ingest bars of INSTRUMENT_IDS into a Nautilus catalog.

    Re-runs (and overlapping ranges) only fetch and write what the catalog does not hold yet; an
    interrupted run resumes. Concurrent runs into one catalog take turns per bar type (a lock
    file beside it), so no bar is ever written twice; files follow a fixed grid (UTC months for
    1m) whatever --chunk-days is. Chunks recorded with gaps are asked for again on a re-run and
    rewritten once the source has the bars. Klines that cannot be bars (e.g. high < low) are
    reported with their open times and skipped.
    """

    async def main() -> int:
        from nautilus_dsm.catalog import ingest_async

        ids = []
        for instrument_id in instrument_ids:
            for interval in intervals:
                resolved, _ = _resolve(instrument_id, market_type, interval)
            ids.append(resolved.instrument_id)
        start_dt, end_dt = _parse_range(start, end)
        check_dir_path(cache_dir, "--cache-dir")
        catalog = _catalog_for(catalog_path)
        progress = ProgressBar(not no_progress, "ingest", "chunk")
        try:
            async with _dsm(
                market_type, base_url_http, base_url_vision, cache_dir, min_completeness
            ) as dsm:
                report = await ingest_async(
                    catalog,
                    ids,
                    list(intervals),
                    start_dt,
                    end_dt,
                    dsm=dsm,
                    chunk=timedelta(days=chunk_days),
                    progress=progress,
                    lock_timeout_s=lock_timeout_s,
                )
        except QualityBelowThreshold as e:
            progress.close()
            line = f"quality below threshold: {e}"
            if e.result is not None:
                line = _quality_line(e.result.report, min_completeness, str(catalog_path))
                line += " (chunks before it are in the catalog; a re-run resumes there)"
            click.echo(_one_line(line), err=True)
            partial = getattr(e, "ingest_report", None)
            if partial is not None and partial.invalid:
                click.echo(_invalid_line(partial), err=True)
            return EXIT_QUALITY
        finally:
            progress.close()
        if as_json:
            click.echo(json.dumps(report.to_dict(), indent=2))
        else:
            click.echo(report.summary())
        if report.invalid:
            click.echo(_invalid_line(report), err=True)
        return EXIT_OK

    _run(main)


def _invalid_line(report: Any) -> str:
    """The stderr line naming the klines an ingest skipped because they cannot be bars."""
    shown = ", ".join(f"{b.open_time:%Y-%m-%dT%H:%M:%SZ} ({b.reason})" for b in report.invalid[:5])
    more = f" and {len(report.invalid) - 5} more" if len(report.invalid) > 5 else ""
    return (
        f"warning: skipped {len(report.invalid)} kline(s) that cannot be bars: {shown}{more}; "
        "the other bars are written"
    )


def _catalog_for(catalog_path: str) -> Any:
    from nautilus_trader.persistence.catalog.parquet import ParquetDataCatalog

    if "://" not in catalog_path:
        check_dir_path(Path(catalog_path), "--catalog")
        Path(catalog_path).expanduser().mkdir(parents=True, exist_ok=True)
        catalog_path = str(Path(catalog_path).expanduser())
    return ParquetDataCatalog.from_uri(catalog_path)


@cli.command()
@click.argument("instrument_id")
@click.option("--interval", required=True, help="Binance interval: 1s 1m 3m ... 1d 1w 1M.")
@click.option("--start", required=True, help=f"First bar open time, {_DATE_HELP}.")
@click.option("--end", required=True, help=f"End (exclusive), {_DATE_HELP}.")
@_source_options
@_min_completeness_option
@_progress_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def quality(
    instrument_id: str,
    interval: str,
    start: str,
    end: str,
    market_type: str | None,
    base_url_http: str | None,
    base_url_vision: str | None,
    cache_dir: Path | None,
    min_completeness: float,
    no_progress: bool,
    as_json: bool,
) -> None:
    """Report the data quality of INSTRUMENT_ID klines, alerts flagged.

    Alerts: completeness < 95%, bar success rate < 90%, cache hit rate < 60%.
    """

    async def main() -> int:
        from nautilus_dsm.bars import bar_type_for, convert_frame
        from nautilus_dsm.catalog.instruments import instrument_for

        resolved, iv = _resolve(instrument_id, market_type, interval)
        start_dt, end_dt = _parse_range(start, end)
        async with _dsm(
            market_type, base_url_http, base_url_vision, cache_dir, min_completeness
        ) as dsm:
            result, code = await _fetch(dsm, resolved, iv, start_dt, end_dt, not no_progress)
            instrument = await instrument_for(dsm, resolved.instrument_id, resolved.market_type)
        conversion = convert_frame(
            result.frame, bar_type_for(resolved.instrument_id, iv), instrument
        )
        rows = quality_rows(result.report, conversion.success_rate, min_completeness)
        if as_json:
            payload = result.report.to_dict()
            payload["bar_success_rate"] = conversion.success_rate
            payload["invalid_bars"] = conversion.invalid.height
            payload["alerts"] = [name for name, _, _, alert in rows if alert]
            click.echo(json.dumps(payload, indent=2))
        else:
            click.echo(format_quality(result.report, rows))
        if code == EXIT_QUALITY:
            click.echo(_quality_line(result.report, min_completeness, None), err=True)
        return code

    _run(main)


def quality_rows(
    report: QualityReport, bar_success_rate: float, min_completeness: float = COMPLETENESS_ALERT
) -> list[tuple[str, str, str, bool]]:
    """The quality table: ``(name, value, threshold, alert)`` rows with the seed's thresholds."""
    checked = report.cache_hits + report.cache_misses
    completeness_alert = min(COMPLETENESS_ALERT, min_completeness)
    rows: list[tuple[str, str, str, bool]] = [
        (
            "completeness",
            _pct(report.completeness),
            f"< {completeness_alert:.0%}",
            report.completeness < completeness_alert,
        ),
        ("bars / expected", f"{report.bars} / {report.expected_bars}", "", False),
        ("missing bars", str(report.missing_bars), "", False),
        ("gaps", str(len(report.gaps)), "", False),
        (
            "bar success rate",
            _pct(bar_success_rate),
            f"< {BAR_SUCCESS_ALERT:.0%}",
            bar_success_rate < BAR_SUCCESS_ALERT,
        ),
        (
            "cache hit rate",
            _pct(report.cache_hit_rate) if checked else "n/a",
            f"< {CACHE_HIT_ALERT:.0%}",
            bool(checked) and report.cache_hit_rate < CACHE_HIT_ALERT,
        ),
        (
            "sources",
            " ".join(f"{k}={v}" for k, v in report.sources.items() if v) or "none",
            "",
            False,
        ),
        ("ohlc violations", str(report.ohlc_violations), "", report.ohlc_violations > 0),
    ]
    return rows


def format_quality(report: QualityReport, rows: list[tuple[str, str, str, bool]]) -> str:
    """Render the quality table (alerts marked ``ALERT``) with the largest gaps listed."""
    from nautilus_dsm.dsm.quality import iso

    lines = [
        f"{report.instrument_id} {report.interval.value} {iso(report.start)}..{iso(report.end)}"
    ]
    width = max(len(r[0]) for r in rows)
    value_width = max(len(r[1]) for r in rows)
    for name, value, threshold, alert in rows:
        flag = "ALERT" if alert else ("ok" if threshold else "")
        note = f"(alert {threshold})" if threshold else ""
        lines.append(f"  {name:<{width}}  {value:>{value_width}}  {note:<14} {flag}".rstrip())
    for gap in report.largest_gaps(10):
        lines.append(f"  gap {gap}")
    if len(report.gaps) > 10:
        lines.append(f"  ... and {len(report.gaps) - 10} more gap(s)")
    for warning in report.warnings:
        lines.append(f"  warning: {warning}")
    return "\n".join(lines)


@cli.command()
@_source_options
def instruments(
    market_type: str | None,
    base_url_http: str | None,
    base_url_vision: str | None,
    cache_dir: Path | None,
) -> None:
    """List Binance instruments with tick, step and precisions."""

    async def main() -> int:
        import time

        from nautilus_dsm.parsing import parse_instruments

        markets = [MarketType.parse(market_type)] if market_type else list(MarketType)
        rows: list[tuple[str, ...]] = []
        async with _dsm(market_type, base_url_http, base_url_vision, cache_dir) as dsm:
            for market in markets:
                info = await dsm.exchange_info(market)
                for inst in parse_instruments(market, info, time.time_ns()):
                    rows.append(
                        (
                            inst.id.value,
                            market.value,
                            str(inst.price_increment),
                            str(inst.size_increment),
                            str(inst.price_precision),
                            str(inst.size_precision),
                        )
                    )
        header = ("id", "market", "tick", "step", "price_prec", "size_prec")
        click.echo(format_table(header, rows))
        return EXIT_OK

    _run(main)


def format_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """Left-aligned plain-text table."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(f"{c:<{w}}" for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


@cli.group()
def cache() -> None:
    """Inspect or clear the kline cache."""


def _endpoint_options(func: Any) -> Any:
    """--base-url-http/--base-url-vision: select the default cache of overridden endpoints."""
    func = click.option(
        "--base-url-vision", default=None, help="Vision host whose default cache to use."
    )(func)
    return click.option(
        "--base-url-http", default=None, help="REST host whose default cache to use."
    )(func)


def _kline_cache(
    cache_dir: Path | None, base_url_http: str | None, base_url_vision: str | None
) -> KlineCache:
    from nautilus_dsm.dsm.cache import KlineCache
    from nautilus_dsm.dsm.manager import endpoint_cache_dir

    check_dir_path(cache_dir, "--cache-dir")
    if cache_dir is None:
        cache_dir = endpoint_cache_dir(base_url_http, base_url_vision)
    return KlineCache(cache_dir)


@cache.command(name="info")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@_endpoint_options
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def cache_info(
    cache_dir: Path | None, base_url_http: str | None, base_url_vision: str | None, as_json: bool
) -> None:
    """Files and bytes per market / symbol / interval."""
    with _exit_codes():
        info = _kline_cache(cache_dir, base_url_http, base_url_vision).info()
        if as_json:
            click.echo(json.dumps(info, indent=2))
            return
        click.echo(f"cache {info['root']}: {info['files']} file(s), {info['bytes']:,} bytes")
        rows = [
            (
                e["market"],
                e["symbol"],
                e["interval"],
                str(e["files"]),
                f"{e['bytes']:,}",
                e["first"],
                e["last"],
            )
            for e in info["entries"]
        ]
        if rows:
            header = ("market", "symbol", "interval", "files", "bytes", "first", "last")
            click.echo(format_table(header, rows))


@cache.command(name="clear")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
@click.option(
    "--market-type", type=click.Choice(_MARKET_CHOICES, case_sensitive=False), default=None
)
@click.option(
    "--symbol", default=None, help="Binance symbol or Nautilus id (BTCUSDT-PERP.BINANCE)."
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_endpoint_options
def cache_clear(
    cache_dir: Path | None,
    market_type: str | None,
    symbol: str | None,
    yes: bool,
    base_url_http: str | None,
    base_url_vision: str | None,
) -> None:
    """Delete cached klines (all, or one market / symbol)."""
    with _exit_codes():
        market = market_type
        binance_symbol = None
        if symbol is not None:
            resolved = resolve_instrument(symbol, market_type)
            binance_symbol = resolved.symbol
            market = resolved.market_type.value if "." in symbol or market_type else market
        kline_cache = _kline_cache(cache_dir, base_url_http, base_url_vision)
        what = f"{market or 'every market'} / {binance_symbol or 'every symbol'}"
        if not yes:
            click.confirm(f"delete cached klines of {what} under {kline_cache.root}?", abort=True)
        removed = kline_cache.clear(market, binance_symbol)
        click.echo(f"removed {removed} cached file(s) of {what} from {kline_cache.root}")


@cli.command()
@click.option("--offline", is_flag=True, help="Use the bundled Binance imitation (synthetic).")
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory for the catalog and cache (a new temporary directory by default).",
)
@click.option("--days", type=click.IntRange(1, 31), default=7, show_default=True)
@_progress_option
def demo(offline: bool, output: Path | None, days: int, no_progress: bool) -> None:
    """Fetch, check, ingest and backtest a week of BTCUSDT-PERP 1m bars.

    Uses Binance when reachable, else (or with --offline) the bundled imitation, whose prices
    are SYNTHETIC and labelled so on every section of the output.
    """
    with _exit_codes():
        from nautilus_dsm.demo import run_demo

        run_demo(offline=offline, output=output, days=days, progress=not no_progress)


def main() -> None:
    """Console-script entry point (``nautilus-dsm``)."""
    cli(prog_name="nautilus-dsm")


if __name__ == "__main__":
    main()
