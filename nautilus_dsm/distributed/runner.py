"""``ingest_universe``: a universe's series-months on a Dask cluster, into one catalog.

The client plans: the universe (exchangeInfo, or the ids given), each series' listing, the
months (:func:`~.tasks.month_tasks`), minus what the catalog already holds
(:func:`~.plan.plan_tasks`). The workers ingest, one series-month per task
(:func:`~.worker.run_series_month`), with the single-process ingest's locks and atomic writes:
concurrent tasks of one series, a second job on the same catalog, and a task re-run after its
worker died all write each bar exactly once. The scheduler re-runs a task whose worker died
and retries one that raised (``retries``); the REST budget is the cluster's
(:class:`~.limiter.ClusterWeightLimiter`). The client shows progress and folds the results into
a :class:`~.report.UniverseReport`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from nautilus_dsm.catalog.storage import CatalogLocation, catalog_location, open_catalog
from nautilus_dsm.common import Interval, MarketType, check_range, resolve_instrument
from nautilus_dsm.constants import NS_PER_MS
from nautilus_dsm.distributed.limiter import ClusterWeightLimiter, requests_per_minute
from nautilus_dsm.distributed.plan import plan_tasks
from nautilus_dsm.distributed.progress import JobProgress, ProgressCallback
from nautilus_dsm.distributed.report import UniverseReport
from nautilus_dsm.distributed.tasks import KLINES, SeriesMonth, check_dataset, month_tasks
from nautilus_dsm.distributed.worker import WorkerJob, run_series_month
from nautilus_dsm.dsm.locks import DEFAULT_TTL_S
from nautilus_dsm.dsm.settings import SourceSettings
from nautilus_dsm.errors import InvalidInput
from nautilus_dsm.universe import SeriesSpan, UniverseMember, lookup_universe, series_spans

DEFAULT_RETRIES = 2
DEFAULT_LOCK_TIMEOUT_S = 600.0  # tasks of one series queue for its lock: wait long


@dataclass(frozen=True)
class UniverseSelection:
    """
    Which symbols of a market (see :func:`nautilus_dsm.universe.select_universe`).

    Parameters
    ----------
    market : MarketType | str
        ``spot``, ``futures_usdt`` or ``futures_coin``.
    quote : str, optional
        Quote asset to keep.
    status : str, default "TRADING"
        ``TRADING``, ``all`` or a Binance status.
    symbols : tuple[str, ...], optional
        Keep only these.
    exclude : tuple[str, ...]
        Drop these.

    """

    market: MarketType | str
    quote: str | None = None
    status: str = "TRADING"
    symbols: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()


def ingest_universe(
    catalog: str | CatalogLocation,
    universe: UniverseSelection | Sequence[str],
    intervals: Sequence[Interval | str],
    start: datetime,
    end: datetime,
    *,
    settings: SourceSettings | None = None,
    storage_options: Mapping[str, Any] | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    client: Any = None,
    retries: int = DEFAULT_RETRIES,
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
    lock_ttl_s: float = DEFAULT_TTL_S,
    rest_requests: int | None = None,
    rest_window_s: float = 60.0,
    on_low_quality: str | None = "warn",
    min_completeness: float | None = None,
    chunk: timedelta | None = None,
    progress: bool = False,
    on_progress: ProgressCallback | None = None,
    dataset: str = KLINES,
) -> UniverseReport:
    """
    Ingest a universe into one catalog on a Dask cluster, a task per series and month.

    Parameters
    ----------
    catalog : str | CatalogLocation
        Local path, ``memory://`` (one process only) or ``s3://bucket/prefix`` (any fsspec
        store every worker reaches).
    universe : UniverseSelection | Sequence[str]
        A selection from exchangeInfo, or Nautilus instrument ids.
    intervals : Sequence[Interval | str]
        Binance intervals, e.g. ``["1m"]``.
    start, end : datetime
        UTC bar open times ``[start, end)``; months before a symbol's listing are not planned.
    settings : SourceSettings, optional
        The engine's settings for the client's planning and every worker (endpoints, cache).
    storage_options : Mapping, optional
        Catalog store options (``endpoint_url``, ``key``, ``secret``, ``region``; AWS
        environment variables otherwise).
    workers : int, optional
        Start a ``LocalCluster`` of this many worker processes (one thread each).
    scheduler : str, optional
        Use the cluster at this address (``tcp://host:8786``).
    client : distributed.Client, optional
        Use this client's cluster. At most one of ``workers``, ``scheduler``, ``client``;
        none starts one local worker per core.
    retries : int, default 2
        Re-runs of a task that raised; a task whose worker died is re-run by the scheduler.
    lock_timeout_s, lock_ttl_s : float
        Series lock wait, and (object stores) how long an unrenewed lock stays its holder's.
    rest_requests : int, optional
        REST tries allowed in any ``rest_window_s`` across the cluster; default 80% of the
        market's weight per minute in klines pages.
    rest_window_s : float, default 60
        The REST budget's window.
    on_low_quality, min_completeness : optional
        Quality policy per fetch (``warn`` by default: gaps are reported, not fatal).
    chunk : timedelta, optional
        Range fetched at a time inside a month; None: the month (a day for ``1s``).
    progress : bool, default False
        Draw a progress bar on stderr.
    on_progress : callable, optional
        Called with a :class:`~.progress.JobStatus` after each task.
    dataset : str, default "klines"
        What to ingest.

    Returns
    -------
    UniverseReport

    Raises
    ------
    InvalidInput
        Bad range, intervals, ids, selection, options or cluster arguments (before any I/O).

    """
    started = time.perf_counter()
    check_dataset(dataset)
    start_ms, end_ms = check_range(start, end)
    ivs = [Interval.parse(i) for i in intervals]
    if not ivs:
        raise InvalidInput("pass at least one interval, e.g. ['1m']")
    ids = _checked_universe(universe)
    _check_cluster_args(workers, scheduler, client, retries)
    _require_dask()
    location = catalog if isinstance(catalog, CatalogLocation) else None
    if location is None:
        location = catalog_location(catalog, storage_options)
    if location.protocol == "memory" and client is None and scheduler is None:
        raise InvalidInput(
            "a memory:// catalog lives in one process; workers cannot share it. "
            "Pass a local path or an object-store URI such as s3://bucket/catalog"
        )
    settings = settings or SourceSettings()
    cat = open_catalog(location)
    _check_bucket(cat, location)
    members, spans = asyncio.run(_plan_universe(settings, universe, ids, ivs, start_ms, end_ms))
    tasks = [t for iv in ivs for t in month_tasks(spans[iv], iv, dataset)]
    now_ms = time.time_ns() // NS_PER_MS
    plan = plan_tasks(cat, tasks, now_ms)
    report = UniverseReport(catalog=location.uri, tasks=len(tasks))
    for task in plan.done:
        report.add_present(task)
    market = members[0].market_type
    requests = rest_requests if rest_requests is not None else requests_per_minute(market)
    limiter = ClusterWeightLimiter(
        # One semaphore per market and budget: jobs sharing a cluster share it.
        name=f"nautilus-dsm-rest-{market.value}-{requests}-{rest_window_s:g}",
        requests=requests,
        window_s=rest_window_s,
    )
    job = WorkerJob(
        catalog=location,
        settings=settings,
        limiter=limiter,
        lock_timeout_s=lock_timeout_s,
        lock_ttl_s=lock_ttl_s,
        min_completeness=min_completeness,
        on_low_quality=on_low_quality,
        chunk=chunk,
    )
    with _cluster(workers, scheduler, client) as dask_client:
        report.workers = len(dask_client.scheduler_info().get("workers", {}))
        _run(dask_client, plan.pending, job, retries, report, progress, on_progress)
    report.seconds = time.perf_counter() - started
    return report


def _check_bucket(cat: Any, location: CatalogLocation) -> None:
    # A missing bucket would fail every task the same way: say so once, before any work.
    if not location.is_object_store:
        return
    bucket = location.path.split("/", 1)[0]
    try:
        found = cat.fs.exists(bucket)
    except (OSError, ValueError) as exc:
        found, why = False, f" ({type(exc).__name__}: {exc})"
    else:
        why = ""
    if not found:
        raise InvalidInput(
            f"bucket {bucket!r} of catalog {location.uri} does not exist or these credentials "
            f"cannot see it{why}; create it, or fix --storage-option / the AWS_* variables"
        )


def _checked_universe(universe: UniverseSelection | Sequence[str]) -> list[str] | None:
    if isinstance(universe, UniverseSelection):
        MarketType.parse(universe.market)
        return None
    if isinstance(universe, str) or not universe:
        raise InvalidInput(
            "universe is a UniverseSelection or a list of instrument ids; "
            "pass e.g. UniverseSelection('futures_usdt', quote='USDT')"
        )
    resolved = [resolve_instrument(i) for i in universe]
    markets = {r.market_type for r in resolved}
    if len(markets) > 1:
        raise InvalidInput(
            f"instrument ids span markets {sorted(m.value for m in markets)}; a universe is "
            "one market (one REST budget): run one ingest per market"
        )
    return [r.instrument_id for r in resolved]


def _check_cluster_args(
    workers: int | None, scheduler: str | None, client: Any, retries: int
) -> None:
    pairs = (("workers", workers), ("scheduler", scheduler), ("client", client))
    given = [name for name, value in pairs if value is not None]
    if len(given) > 1:
        raise InvalidInput(f"pass one of workers, scheduler, client; got {', '.join(given)}")
    if workers is not None and (isinstance(workers, bool) or workers < 1):
        raise InvalidInput(f"workers must be >= 1, was {workers!r}")
    if scheduler is not None and not str(scheduler).startswith(("tcp://", "tls://", "inproc://")):
        raise InvalidInput(
            f"scheduler {scheduler!r} is not a Dask address; pass e.g. tcp://10.0.0.5:8786"
        )
    if isinstance(retries, bool) or retries < 0:
        raise InvalidInput(f"retries must be >= 0, was {retries!r}")


async def _plan_universe(
    settings: SourceSettings,
    universe: UniverseSelection | Sequence[str],
    ids: list[str] | None,
    ivs: list[Interval],
    start_ms: int,
    end_ms: int,
) -> tuple[list[UniverseMember], dict[Interval, list[SeriesSpan]]]:
    from nautilus_dsm.dsm.manager import DataSourceManager

    dsm = DataSourceManager.from_config(settings)
    try:
        if isinstance(universe, UniverseSelection):
            members = await lookup_universe(
                dsm,
                universe.market,
                quote=universe.quote,
                status=universe.status,
                symbols=universe.symbols,
                exclude=universe.exclude,
            )
        else:
            members = await _members_of(dsm, ids or [])
        spans = {iv: await series_spans(dsm, members, iv, start_ms, end_ms) for iv in ivs}
    finally:
        await dsm.aclose()
    return members, spans


async def _members_of(dsm: Any, ids: list[str]) -> list[UniverseMember]:
    # Ids given: their exchangeInfo entries (status, onboardDate), all statuses accepted.
    market = resolve_instrument(ids[0]).market_type
    return await lookup_universe(dsm, market, status="all", symbols=ids)


def _require_dask() -> None:
    try:
        import distributed  # noqa: F401
    except ImportError as exc:
        raise InvalidInput(
            "distributed ingestion needs Dask: install the extra, "
            "pip install 'nautilus-dsm[distributed]' (uv sync --extra distributed)"
        ) from exc


@contextlib.contextmanager
def _cluster(workers: int | None, scheduler: str | None, client: Any) -> Iterator[Any]:
    if client is not None:
        yield client
        return
    from distributed import Client, LocalCluster

    if scheduler is not None:
        with Client(scheduler) as own:
            yield own
        return
    n = workers or os.cpu_count() or 1
    # Processes, one thread each: the ingest is CPU-bound in places (Parquet, conversion)
    # and each worker then owns its engine and catalog connections.
    with (
        LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as own,
    ):
        yield own


def _run(
    dask_client: Any,
    tasks: list[SeriesMonth],
    job: WorkerJob,
    retries: int,
    report: UniverseReport,
    show: bool,
    on_progress: ProgressCallback | None,
) -> None:
    from distributed import as_completed

    token = uuid.uuid4().hex[:8]  # task keys unique per job: two jobs may share a cluster
    futures = {
        dask_client.submit(
            run_series_month, t, job, key=f"{t.key}-{token}", retries=retries, pure=False
        ): t
        for t in tasks
    }
    progress = JobProgress(len(futures), show, on_progress)
    try:
        for future in as_completed(futures):
            task = futures[future]
            try:
                result = future.result()
            except Exception as exc:  # a task's failure is reported, the job goes on
                report.add_failure(task, f"{type(exc).__name__}: {exc}")
                progress.failed()
                continue
            report.add_result(result)
            progress.finished(result.bars_written)
    finally:
        progress.close()
        for future in futures:
            future.release()
