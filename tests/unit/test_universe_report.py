"""The universe job's report and progress line (pure)."""

from __future__ import annotations

from nautilus_dsm.distributed.progress import JobStatus
from nautilus_dsm.distributed.report import TaskResult, UniverseReport
from nautilus_dsm.distributed.tasks import SeriesMonth

JAN, FEB, MAR = 1_704_067_200_000, 1_706_745_600_000, 1_709_251_200_000


def task(symbol: str, month: int, end: int) -> SeriesMonth:
    return SeriesMonth(f"{symbol}-PERP.BINANCE", "klines", "1m", month, month, end)


def result(t: SeriesMonth, bars: int, expected: int, gaps: tuple = ()) -> TaskResult:
    return TaskResult(t, bars, bars, expected, gaps, 0, (), 1.0, "host:1")


def test_the_report_folds_results_present_months_and_failures_per_series() -> None:
    report = UniverseReport(catalog="s3://b/c", tasks=4, workers=2, seconds=30.0)
    report.add_result(result(task("BTCUSDT", JAN, FEB), 44_640, 44_640))
    report.add_result(result(task("XRPUSDT", FEB, MAR), 41_670, 41_760, ((FEB, FEB + 5_400_000),)))
    report.add_present(task("BTCUSDT", FEB, MAR))
    report.add_failure(task("XRPUSDT", JAN, FEB), "SeriesMonthFailed: boom")
    assert (report.done, report.skipped, report.failed, report.bars_written) == (2, 1, 1, 86_310)
    assert report.series_months_per_minute == 4.0
    assert report.bars_per_second == 2_877.0
    assert report.summary().splitlines() == [
        "series                               months       bars   expected  complete gaps",
        "BTCUSDT-PERP.BINANCE 1m                 1+1      44640      44640   100.00% 0",
        "XRPUSDT-PERP.BINANCE 1m                 1+0      41670      41760    99.78% 1 FAILED 2024-01",
        "2 series-months run, 1 already in the catalog, 1 failed; 86310 bars written in 30.0 s "
        "(4.0 series-months/min, 2,877 bars/s) on 2 workers",
    ]
    xrp = report.to_dict()["symbols"][1]
    assert xrp["gaps"] == [{"start": "2024-02-01T00:00:00Z", "end": "2024-02-01T01:30:00Z"}]
    assert xrp["months_failed"] == ["2024-01"]


def test_the_progress_line() -> None:
    status = JobStatus(total=10, done=6, failed=1, rows=300_000, started=0.0)
    assert status.remaining == 3
    assert status.rows_per_second(now=10.0) == 30_000.0
    assert status.line().startswith("done 6 · failed 1 · remaining 3 series-months · ")
