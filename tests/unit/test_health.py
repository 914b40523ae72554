"""The live health figures, their alert thresholds and the log line (pure)."""

from __future__ import annotations

from types import SimpleNamespace

from nautilus_trader.model.data import BarType

from nautilus_dsm.common import Interval, resolve_instrument
from nautilus_dsm.health import (
    ALERT_THRESHOLDS,
    FetchTally,
    health_alerts,
    health_figures,
    health_line,
)
from nautilus_dsm.live_cursor import BarPoller

T0 = 1_704_153_600_000
SEC = 1_000
MB = 1024 * 1024


def _poller(published: int, owed: int, skipped: int = 0, **counts: int) -> BarPoller:
    p = BarPoller(
        bar_type=BarType.from_str("BTCUSDT.BINANCE-1-SECOND-LAST-EXTERNAL"),
        interval=Interval.SECOND_1,
        resolved=resolve_instrument("BTCUSDT.BINANCE"),
        instrument=None,
        next_open_ms=T0 + owed * SEC,
        expected_from_ms=T0,
    )
    p.published, p.skipped = published, skipped
    for name, value in counts.items():
        setattr(p, name, value)
    return p


def _figures(pollers: list[BarPoller], tally: FetchTally | None = None, rss_mb: int = 100):
    return health_figures(
        pollers,
        ws_reconnects=2,
        rest_weight_per_min=14,
        rest_requests=9,
        clock_offsets_ms={"spot": -3},
        tally=tally or FetchTally(),
        rss_bytes=rss_mb * MB,
        rss_start_bytes=100 * MB,
    )


def test_figures_sum_the_subscriptions() -> None:
    a = _poller(10, 10, streamed=8, reconciled=2, gaps_backfilled=1, duplicates=3)
    a.latencies_ms.extend([10.0, 20.0, 30.0, 40.0])
    b = _poller(5, 5, streamed=5)
    b.latencies_ms.append(50.0)

    f = _figures([a, b])

    assert f["subscriptions"] == 2
    assert f["bars_published"] == 15 and f["bars_streamed"] == 13
    assert f["bars_late_reconciled"] == 2 and f["gaps_backfilled"] == 1
    assert f["duplicates_dropped"] == 3
    assert f["completeness"] == 1.0 and f["bar_success"] == 1.0
    assert f["latency_p50_ms"] == 30.0 and f["latency_p99_ms"] == 49.6
    assert f["ws_reconnects"] == 2 and f["rest_weight_per_min"] == 14
    assert f["exchange_clock_offset_ms"] == {"spot": -3}
    assert f["cache_hit_rate"] is None and f["memory_growth_mb"] == 0.0
    assert health_alerts(f) == []


def test_synthetic_fills_do_not_count_as_complete() -> None:
    f = _figures([_poller(100, 100, synthetic=10)])

    assert f["bars_published"] == 100 and f["bars_synthetic"] == 10
    assert f["completeness"] == 0.9
    assert health_alerts(f) == ["completeness 90.0% < 95%"]


def test_every_threshold_has_its_alert() -> None:
    tally = FetchTally()
    for _ in range(20):  # warm
        tally.record(SimpleNamespace(cache_hits=1, cache_misses=1), 0.1)
    tally.record(None, 6.0)
    poller = _poller(published=9, owed=10, skipped=1)  # 90 % complete, 90 % success

    f = _figures([_poller(8, 10, skipped=2)], tally, rss_mb=301)

    assert ALERT_THRESHOLDS["completeness_min"] == 0.95
    assert _figures([poller])["completeness"] == 0.9
    assert health_alerts(f) == [
        "completeness 80.0% < 95%",
        "bar success 80.0% < 90%",
        "cache hit rate 50.0% < 60% (warm)",
        "memory grew 201 MB > 200 MB",
        "slowest source response 6.0s > 5s",
    ]


def test_a_cold_cache_raises_no_alert() -> None:
    tally = FetchTally()
    tally.record(SimpleNamespace(cache_hits=0, cache_misses=5), 0.1)

    assert health_alerts(_figures([], tally)) == []


def test_the_line_names_every_figure() -> None:
    p = _poller(3, 3, streamed=2, reconciled=1)
    p.latencies_ms.extend([100.0, 200.0])

    line = health_line(_figures([p]))

    assert line == (
        "health: 1 subscriptions, 3 bars published (2 streamed, 1 late and reconciled by REST, "
        "0 gaps backfilled, 0 duplicates dropped, 0 SYNTHETIC), completeness 100.0%, ws reconnects 2, "
        "REST "
        "weight/min 14, close->publish p50 150 ms p99 199 ms, exchange clock offset ms "
        "[spot -3], cache hit rate -, memory 100 MB (+0 MB)"
    )
