"""The first bar of a series (its listing): from memory, the cache's sidecar, or one REST probe.

Bars before a listing never existed, so a fetch counts expected bars from it and requests no
period that ends before it (no search through years of 404s). The probe asks REST from epoch 0
rather than from the requested start, so an outage at the start of a range stays a gap instead
of passing for a listing; it also turns an unknown symbol into one :class:`UnknownSymbol`
before any Vision request. The answer is kept in memory (it never changes once known, so live
polls do not repeat the probe) and in the cache's sidecar per REST endpoint, so a warm fetch
counts a listing day exactly as the cold one did, offline too. A sidecar is a shortcut, never
evidence on its own: cached bars before it discard it, and a range it puts wholly before the
listing (zero bars expected) is confirmed with the probe when REST is reachable.
"""

from __future__ import annotations

import logging
import time

from nautilus_dsm.common import Interval, MarketType, iso_ms, rest_base_url
from nautilus_dsm.common.datasets import Dataset
from nautilus_dsm.dsm.fetch_run import FetchRun
from nautilus_dsm.dsm.planner import Period
from nautilus_dsm.dsm.sources import MarketSources
from nautilus_dsm.errors import InvalidInput, SourceError

log = logging.getLogger(__name__)

_SeriesKey = tuple[MarketType, str, Interval, Dataset]


class ListingLookup:
    """
    Find and remember the first bar of each series a manager fetches.

    Parameters
    ----------
    sources : MarketSources
        The manager: its cache, source switches and REST clients.

    """

    def __init__(self, sources: MarketSources) -> None:
        self._sources = sources
        # First bar ever per (market, symbol, interval). Keys in _probed came from this
        # lookup's own REST probe; the others from the cache's sidecar, which a range wholly
        # before it must confirm (see find).
        self._first_bar: dict[_SeriesKey, int] = {}
        self._probed: set[_SeriesKey] = set()

    def remembered(self, run: FetchRun) -> int | None:
        """Return the first bar of the run's series when known (in memory), else None."""
        return self._first_bar.get(_key(run))

    async def find(self, run: FetchRun, periods: list[Period]) -> tuple[int | None, int | None]:
        """
        Return ``(listing_ms, not_before_ms)`` for a fetch.

        ``listing_ms`` is the first bar when it is after the requested start (reported);
        ``not_before_ms`` the time before which no period needs requesting. Warnings (listing
        after the start, nothing in the range, an unconfirmed sidecar) go to ``run.warnings``.
        """
        if not periods:
            return None, None
        first, probed = self._known_first_bar(run)
        cached_first = run.cached_first_ms
        if first is not None and not probed and cached_first is not None and cached_first < first:
            self._forget_first_bar(
                run,
                f"contradicted by a cached bar at {iso_ms(cached_first)} before its first bar "
                f"{iso_ms(first)}",
            )
            first = None
        if first is None:
            checked, first = await self._look_up(run)
            if not checked:
                return None, None
        elif not probed and first >= run.stop_ms:
            # Zero bars would be expected on the sidecar's word alone: confirm with one probe.
            first = await self._confirm_first_bar(run, first)
        return _bounds(run, first)

    async def _look_up(self, run: FetchRun) -> tuple[bool, int | None]:
        """Return ``(checked, first)`` from the REST probe.

        Not checked when a cached bar at or before the start makes it moot, REST is disabled
        or the probe failed (with a warning).
        """
        if run.cached_first_ms is not None and run.cached_first_ms <= run.interval.ceil_ms(
            run.start_ms
        ):
            return False, None  # a bar at or before the start exists: no listing to find
        if not self._sources.use_rest:
            return False, None
        try:
            first = await self._probe_first_bar(run)
        except SourceError as exc:
            run.warnings.append(f"could not look up the first bar ({exc}); listing not checked")
            return False, None
        if first is not None:
            self._remember_first_bar(run, first)
        return True, first

    async def _confirm_first_bar(self, run: FetchRun, cached: int) -> int | None:
        """Return the REST probe's first bar in place of the sidecar's.

        The sidecar's is returned (with a warning) when REST is disabled or unreachable, so
        offline fetches still count as before.
        """
        unconfirmed = (
            f"{run.instrument.instrument_id} first bar {iso_ms(cached)} is taken from the cache "
            "unconfirmed: "
        )
        if not self._sources.use_rest:
            run.warnings.append(unconfirmed + "REST is disabled")
            return cached
        try:
            first = await self._probe_first_bar(run)
        except SourceError as exc:
            run.warnings.append(unconfirmed + f"REST could not be asked ({exc})")
            return cached
        if first != cached:
            served = "no bars" if first is None else f"first bar {iso_ms(first)}"
            self._forget_first_bar(run, f"contradicted by REST ({served})")
            if first is not None:
                self._remember_first_bar(run, first)
        return first

    async def _probe_first_bar(self, run: FetchRun) -> int | None:
        """One REST request for the first bar ever (from epoch 0), marked as probed."""
        inst = run.instrument
        t0 = time.perf_counter()
        try:
            first = await self._sources.rest_client(inst.market_type).first_open_time(
                inst.symbol, run.interval, 0, dataset=run.dataset
            )
        finally:
            run.timings["rest"] += time.perf_counter() - t0
        self._probed.add(_key(run))
        return first

    def _known_first_bar(self, run: FetchRun) -> tuple[int | None, bool]:
        """``(first, probed)``: the remembered first bar and whether this lookup probed it."""
        inst, key = run.instrument, _key(run)
        first = self._first_bar.get(key)
        if first is None and self._sources.use_cache:
            t0 = time.perf_counter()
            first = self._sources.cache_for(run.dataset).read_first_bar(
                inst.market_type, inst.symbol, run.interval, endpoint=self._rest_endpoint(run)
            )
            run.timings["cache"] += time.perf_counter() - t0
            if first is not None:
                self._first_bar[key] = first
        return first, first is not None and key in self._probed

    def _remember_first_bar(self, run: FetchRun, first: int) -> None:
        inst = run.instrument
        self._first_bar[_key(run)] = first
        if not self._sources.use_cache:
            return
        try:
            self._sources.cache_for(run.dataset).write_first_bar(
                inst.market_type,
                inst.symbol,
                run.interval,
                first,
                endpoint=self._rest_endpoint(run),
            )
        except (OSError, InvalidInput) as exc:  # a lost shortcut: the next fetch asks again
            log.warning("could not record the first bar of %s in the cache: %s", inst.symbol, exc)

    def _forget_first_bar(self, run: FetchRun, why: str) -> None:
        """Drop a first bar that evidence contradicts: from memory and (counted) the cache."""
        inst = run.instrument
        self._first_bar.pop(_key(run), None)
        if self._sources.use_cache:
            self._sources.cache_for(run.dataset).discard_first_bar(
                inst.market_type, inst.symbol, run.interval, why
            )

    def _rest_endpoint(self, run: FetchRun) -> str:
        # The listing is per server: a testnet or mirror may list a symbol later than mainnet.
        return rest_base_url(run.instrument.market_type, self._sources.base_url_http)


def _key(run: FetchRun) -> _SeriesKey:
    return (run.instrument.market_type, run.instrument.symbol, run.interval, run.dataset)


def _bounds(run: FetchRun, first: int | None) -> tuple[int | None, int | None]:
    """``(listing_ms, not_before_ms)`` for a known first bar (None: the series has none)."""
    inst, interval = run.instrument, run.interval
    if first is None or first >= run.stop_ms:
        # Nothing at all in the range: request nothing rather than search period by period.
        what = (
            "has no bars at or after"
            if first is None
            else f"has its first bar at {iso_ms(first)}, after"
        )
        run.warnings.append(
            f"{inst.instrument_id} {what} the requested range "
            f"{iso_ms(run.start_ms)}..{iso_ms(run.stop_ms)}; nothing was requested"
        )
        if first is None:
            return None, run.stop_ms
        return first, run.stop_ms
    if first <= interval.ceil_ms(run.start_ms):
        return None, None
    before = interval.count(run.start_ms, first)
    run.warnings.append(
        f"{inst.instrument_id} has no data before {iso_ms(first)} (first bar); {before} bars "
        "requested before it are not counted as missing"
    )
    return first, first
