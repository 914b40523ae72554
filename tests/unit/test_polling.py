"""The live poller's pure policy and state: backoff, waits, the next fetch window, skips."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pytest
from nautilus_trader.model.data import BarType

from nautilus_dsm.common import Interval, resolve_instrument, to_ms
from nautilus_dsm.polling import BarPoller, frame_end_ms, not_closed_wait_s, retry_delay_s

SPOT_1M = BarType.from_str("BTCUSDT.BINANCE-1-MINUTE-LAST-EXTERNAL")
DAY_MS = to_ms(datetime(2024, 1, 2, tzinfo=UTC))
MIN_MS = 60_000


def _poller(next_open_ms: int = DAY_MS) -> BarPoller:
    return BarPoller(
        bar_type=SPOT_1M,
        interval=Interval.MINUTE_1,
        resolved=resolve_instrument("BTCUSDT.BINANCE"),
        instrument=None,
        next_open_ms=next_open_ms,
    )


@pytest.mark.parametrize(
    ("failures", "delay_s"), [(1, 0.1), (2, 0.2), (3, 0.4), (6, 3.2), (7, 5.0), (50, 5.0)]
)
def test_retry_delay_doubles_then_caps(failures: int, delay_s: float) -> None:
    assert retry_delay_s(failures) == pytest.approx(delay_s)


@pytest.mark.parametrize(
    ("interval", "waits", "wait_s"),
    [
        (Interval.SECOND_1, 1, 0.05),
        (Interval.SECOND_1, 10, 0.25),  # a 1s bar is re-polled at least 4 times per second
        (Interval.MINUTE_1, 10, 0.5),
        (Interval.MINUTE_1, 100, 2.0),
        (Interval.MONTH_1, 100, 2.0),
    ],
)
def test_not_closed_wait_grows_capped(interval: Interval, waits: int, wait_s: float) -> None:
    assert not_closed_wait_s(interval, waits) == pytest.approx(wait_s)


def test_next_bar_is_due_at_its_close_plus_the_delay() -> None:
    assert _poller().due_ms(250) == DAY_MS + MIN_MS + 250


def test_window_reaches_the_last_closed_bar() -> None:
    poller = _poller()

    assert poller.window_end_ms(DAY_MS + 5 * MIN_MS + 30_000) == (DAY_MS + 5 * MIN_MS, False)


def test_window_holds_at_least_the_next_bar() -> None:
    assert _poller().window_end_ms(DAY_MS + 30_000) == (DAY_MS + MIN_MS, False)


def test_window_stops_short_of_a_known_bad_kline() -> None:
    poller = _poller()
    poller.skip_ms = {DAY_MS - MIN_MS: "old", DAY_MS + 3 * MIN_MS: "bad payload"}

    assert poller.window_end_ms(DAY_MS + 5 * MIN_MS) == (DAY_MS + 3 * MIN_MS, True)
    assert poller.skip_ms == {DAY_MS + 3 * MIN_MS: "bad payload"}  # the past one is dropped


def test_narrowed_window_is_one_bar_until_the_narrowed_end() -> None:
    poller = _poller()
    poller.narrow_until_ms = DAY_MS + 2 * MIN_MS

    assert poller.window_end_ms(DAY_MS + 5 * MIN_MS) == (DAY_MS + MIN_MS, True)
    poller.next_open_ms = DAY_MS + 2 * MIN_MS
    assert poller.window_end_ms(DAY_MS + 5 * MIN_MS) == (DAY_MS + 5 * MIN_MS, False)
    assert poller.narrow_until_ms is None


def test_skip_next_goes_on_from_the_following_bar() -> None:
    poller = _poller(DAY_MS + 3 * MIN_MS)
    poller.skip_ms = {DAY_MS + 3 * MIN_MS: "bad payload"}

    assert poller.skip_next() == DAY_MS + 3 * MIN_MS
    assert (poller.next_open_ms, poller.skipped, poller.skip_ms) == (DAY_MS + 4 * MIN_MS, 1, {})


def test_frame_end_counts_an_off_grid_row_as_its_grid_bar() -> None:
    frame = pl.DataFrame(
        {"open_time": [DAY_MS, DAY_MS + MIN_MS + 30_000]},
        schema={"open_time": pl.Int64},
    ).with_columns(pl.col("open_time").cast(pl.Datetime("ms", "UTC")))

    assert frame_end_ms(frame, Interval.MINUTE_1) == DAY_MS + 2 * MIN_MS
