"""The live client's health: the figures, the alert thresholds, and the periodic log line.

``DSMDataClient.health()`` returns :func:`health_figures` as a dict; the client logs
:func:`health_line` every ``health_interval_s`` (default 60 s) and one warning per alert
(:func:`health_alerts`). The thresholds are the seed checklist's: completeness < 95 %, bar
success < 90 %, cache hit rate < 60 % once warm, process memory grown by > 200 MB, a source
response slower than 5 s. Pure apart from :func:`process_rss_bytes` (reads ``/proc``).
"""

from __future__ import annotations

import asyncio
import resource
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nautilus_trader.common.enums import LogColor

from nautilus_dsm.live_cursor import BarPoller

if TYPE_CHECKING:
    from nautilus_trader.model.data import BarType

    from nautilus_dsm.dsm.manager import DataSourceManager
    from nautilus_dsm.live_stream import StreamFeed

__all__ = [
    "ALERT_THRESHOLDS",
    "FetchTally",
    "HealthMixin",
    "health_alerts",
    "health_figures",
    "health_line",
    "process_rss_bytes",
]

ALERT_THRESHOLDS: dict[str, float] = {
    "completeness_min": 0.95,
    "bar_success_min": 0.90,
    "cache_hit_rate_min": 0.60,
    "memory_growth_mb_max": 200.0,
    "api_response_s_max": 5.0,
}
# The cache hit rate is judged only once this many fetches went through the engine ("warm").
WARM_FETCHES = 20
_MB = 1024 * 1024


@dataclass
class FetchTally:
    """What the client's engine fetches did: cache hits and misses, the slowest response."""

    fetches: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    slowest_s: float = 0.0  # since the last health line (reset by it)

    def record(self, report: Any, seconds: float) -> None:
        """Count one fetch from its quality report (doubles without one count no cache use)."""
        self.fetches += 1
        self.cache_hits += int(getattr(report, "cache_hits", 0) or 0)
        self.cache_misses += int(getattr(report, "cache_misses", 0) or 0)
        self.slowest_s = max(self.slowest_s, seconds)


def process_rss_bytes() -> int:
    """Return this process's resident memory now (Linux ``/proc``), else its peak."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            pages = int(f.read().split()[1])
        return pages * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _percentile(values: list[float], q: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def health_figures(
    pollers: Iterable[BarPoller],
    *,
    ws_reconnects: int,
    rest_weight_per_min: int | None,
    rest_requests: int,
    clock_offsets_ms: dict[str, int],
    tally: FetchTally,
    rss_bytes: int,
    rss_start_bytes: int,
) -> dict[str, Any]:
    """Return the client's health figures (plain numbers, JSON-able).

    Completeness is the share of the bars owed since each subscription started (up to its
    cursor) that were published from the source (SYNTHETIC fills, ``synthetic_fallback``, do
    not count: they are counted apart, as ``bars_synthetic``); bar success the share of bars
    taken up that became bars (not skipped as bad klines).
    """
    pollers = list(pollers)
    published = sum(p.published for p in pollers)
    synthetic = sum(p.synthetic for p in pollers)
    skipped = sum(p.skipped for p in pollers)
    owed = sum(
        p.interval.count(p.expected_from_ms, p.next_open_ms)
        for p in pollers
        if p.expected_from_ms is not None and p.next_open_ms > p.expected_from_ms
    )
    latencies = sorted(x for p in pollers for x in p.latencies_ms)
    lookups = tally.cache_hits + tally.cache_misses
    p50, p99 = _percentile(latencies, 50), _percentile(latencies, 99)
    return {
        "subscriptions": len(pollers),
        "bars_published": published,
        "bars_synthetic": synthetic,
        "bars_streamed": sum(p.streamed for p in pollers),
        "bars_late_reconciled": sum(p.reconciled for p in pollers),
        "gaps_backfilled": sum(p.gaps_backfilled for p in pollers),
        "duplicates_dropped": sum(p.duplicates for p in pollers),
        "bad_klines_skipped": skipped,
        "completeness": (published - synthetic) / owed if owed else 1.0,
        "bar_success": published / (published + skipped) if published + skipped else 1.0,
        "ws_reconnects": ws_reconnects,
        "rest_weight_per_min": rest_weight_per_min,
        "rest_requests": rest_requests,
        "latency_p50_ms": None if p50 is None else round(p50, 1),
        "latency_p99_ms": None if p99 is None else round(p99, 1),
        "exchange_clock_offset_ms": dict(clock_offsets_ms),
        "cache_hit_rate": tally.cache_hits / lookups if lookups else None,
        "fetches": tally.fetches,
        "slowest_response_s": round(tally.slowest_s, 3),
        "memory_mb": round(rss_bytes / _MB, 1),
        "memory_growth_mb": round((rss_bytes - rss_start_bytes) / _MB, 1),
    }


def health_alerts(figures: dict[str, Any]) -> list[str]:
    """Return one line per figure beyond its threshold (:data:`ALERT_THRESHOLDS`)."""
    t = ALERT_THRESHOLDS
    out = []
    if figures["completeness"] < t["completeness_min"]:
        out.append(f"completeness {figures['completeness']:.1%} < {t['completeness_min']:.0%}")
    if figures["bar_success"] < t["bar_success_min"]:
        out.append(f"bar success {figures['bar_success']:.1%} < {t['bar_success_min']:.0%}")
    rate = figures["cache_hit_rate"]
    if rate is not None and figures["fetches"] >= WARM_FETCHES and rate < t["cache_hit_rate_min"]:
        out.append(f"cache hit rate {rate:.1%} < {t['cache_hit_rate_min']:.0%} (warm)")
    if figures["memory_growth_mb"] > t["memory_growth_mb_max"]:
        out.append(
            f"memory grew {figures['memory_growth_mb']:.0f} MB > {t['memory_growth_mb_max']:.0f} MB"
        )
    if figures["slowest_response_s"] > t["api_response_s_max"]:
        out.append(
            f"slowest source response {figures['slowest_response_s']:.1f}s > "
            f"{t['api_response_s_max']:.0f}s"
        )
    return out


def health_line(figures: dict[str, Any]) -> str:
    """Return the one-line summary the client logs periodically."""
    f = figures

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:g}"

    offsets = ", ".join(f"{m} {o:+d}" for m, o in sorted(f["exchange_clock_offset_ms"].items()))
    rate = "-" if f["cache_hit_rate"] is None else f"{f['cache_hit_rate']:.0%}"
    weight = "-" if f["rest_weight_per_min"] is None else str(f["rest_weight_per_min"])
    return (
        f"health: {f['subscriptions']} subscriptions, {f['bars_published']} bars published "
        f"({f['bars_streamed']} streamed, {f['bars_late_reconciled']} late and reconciled by "
        f"REST, {f['gaps_backfilled']} gaps backfilled, {f['duplicates_dropped']} duplicates "
        f"dropped, {f['bars_synthetic']} SYNTHETIC), completeness {f['completeness']:.1%}, "
        f"ws reconnects {f['ws_reconnects']}, "
        f"REST weight/min {weight}, close->publish p50 {ms(f['latency_p50_ms'])} ms p99 "
        f"{ms(f['latency_p99_ms'])} ms, exchange clock offset ms [{offsets or '-'}], cache hit "
        f"rate {rate}, memory {f['memory_mb']:g} MB ({f['memory_growth_mb']:+g} MB)"
    )


class HealthMixin:
    """``health()``, the fetch tally and the periodic health line of ``DSMDataClient``."""

    _pollers: dict[BarType, BarPoller]
    _feed: StreamFeed | None
    _dsm: DataSourceManager
    _tally: FetchTally
    _rss_start: int
    _logger: Any

    def health(self) -> dict[str, Any]:
        """
        Return the live health figures (the periodic log line's, as numbers).

        Returns
        -------
        dict[str, Any]
            ``bars_published``, ``bars_streamed``, ``bars_late_reconciled``,
            ``gaps_backfilled``, ``duplicates_dropped``, ``completeness``, ``bar_success``,
            ``ws_reconnects``, ``rest_weight_per_min`` (Binance's ``X-MBX-USED-WEIGHT-1M``,
            the highest of the markets in use), ``rest_requests``, ``latency_p50_ms`` /
            ``latency_p99_ms`` (close -> publish, exchange clock), ``exchange_clock_offset_ms``
            (per market), ``cache_hit_rate``, ``slowest_response_s``, ``memory_mb``,
            ``memory_growth_mb``, and ``alerts`` (the thresholds crossed, see
            :data:`nautilus_dsm.health.ALERT_THRESHOLDS`).

        """
        pollers = list(self._pollers.values())
        markets = sorted({p.resolved.market_type for p in pollers}, key=lambda m: m.value)
        weights, requests = [], 0
        for market in markets:
            stats = self._dsm.rest_client(market).stats
            requests += stats.requests
            if stats.last_used_weight is not None:
                weights.append(stats.last_used_weight)
        figures = health_figures(
            pollers,
            ws_reconnects=0 if self._feed is None else self._feed.stats.reconnects,
            rest_weight_per_min=max(weights) if weights else None,
            rest_requests=requests,
            clock_offsets_ms={m.value: self._dsm.exchange_clock(m).offset_ms for m in markets},
            tally=self._tally,
            rss_bytes=process_rss_bytes(),
            rss_start_bytes=self._rss_start,
        )
        figures["alerts"] = health_alerts(figures)
        return figures

    def _record_fetch(self, report: Any, seconds: float) -> None:
        self._tally.record(report, seconds)

    async def _log_health(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                figures = self.health()
            except Exception as e:  # the health line must never take the client down
                self._logger.warning(f"health: could not be measured ({type(e).__name__}: {e})")
                continue
            self._tally.slowest_s = 0.0  # the slowest response of each interval
            self._logger.info(health_line(figures), LogColor.BLUE)
            for alert in figures["alerts"]:
                self._logger.warning(f"health alert: {alert}")
