"""The shared "next bar due" cursor: what the stream holds, publishes and drops (pure)."""

from __future__ import annotations

from types import SimpleNamespace

from nautilus_trader.model.data import BarType

from nautilus_dsm.common import Interval, MarketType, resolve_instrument
from nautilus_dsm.live_cursor import BarPoller
from nautilus_dsm.live_stream import DEFAULT_GRACE_MS, grace_ms_for

SPOT_1S = BarType.from_str("BTCUSDT.BINANCE-1-SECOND-LAST-EXTERNAL")
T0 = 1_704_153_600_000  # 2024-01-02 00:00:00 UTC
SEC = 1_000


def _cursor(next_open_ms: int = T0) -> BarPoller:
    return BarPoller(
        bar_type=SPOT_1S,
        interval=Interval.SECOND_1,
        resolved=resolve_instrument("BTCUSDT.BINANCE"),
        instrument=None,
        next_open_ms=next_open_ms,
    )


def test_the_kline_at_the_cursor_is_ready_at_once() -> None:
    c = _cursor()
    c.take(T0, "a")

    assert c.ready() == ["a"]
    assert c.pending == {} and not c.gap_open and not c.due_now()


def test_klines_beyond_the_cursor_wait_and_make_rest_due_now() -> None:
    c = _cursor()
    c.take(T0 + 2 * SEC, "c")
    c.take(T0 + 3 * SEC, "d")

    assert c.ready() == []
    assert c.due_now() and c.gap_open  # the stream skipped T0 and T0+1s
    c.next_open_ms = T0 + 2 * SEC  # REST published the two missing bars
    assert c.ready() == ["c", "d"]
    assert not c.due_now()


def test_a_kline_before_the_cursor_or_twice_is_a_duplicate() -> None:
    c = _cursor(T0 + SEC)
    c.take(T0, "old")  # REST already published it
    c.take(T0 + 2 * SEC, "x")
    c.take(T0 + 2 * SEC, "x again")

    assert c.duplicates == 2
    assert c.pending == {T0 + 2 * SEC: "x"}


def test_held_klines_the_cursor_passed_are_dropped_as_duplicates() -> None:
    c = _cursor()
    c.take(T0 + SEC, "b")
    c.take(T0 + 2 * SEC, "c")
    c.next_open_ms = T0 + 2 * SEC  # REST published T0 and T0+1s itself

    assert c.ready() == ["c"]
    assert c.duplicates == 1


def test_rest_is_due_at_close_plus_grace() -> None:
    c = _cursor()

    assert c.due_ms(3_000) == T0 + SEC + 3_000


def test_grace_defaults_per_market_and_the_configured_one_wins() -> None:
    assert DEFAULT_GRACE_MS == {
        MarketType.SPOT: 3_000,
        MarketType.FUTURES_USDT: 1_500,
        MarketType.FUTURES_COIN: 1_500,
    }
    assert grace_ms_for(MarketType.FUTURES_COIN, None) == 1_500
    assert grace_ms_for(MarketType.SPOT, 0) == 0


class _Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def error(self, message: str, *_: object) -> None:
        self.lines.append(("error", message))

    def info(self, message: str, *_: object) -> None:
        self.lines.append(("info", message))

    def warning(self, message: str, *_: object) -> None:
        self.lines.append(("warning", message))


async def test_a_rest_answer_overtaken_by_the_stream_never_moves_the_cursor_back() -> None:
    import polars as pl

    from nautilus_dsm import polling

    log = _Log()
    host = SimpleNamespace(_logger=log, _now_ms=lambda *_: T0 + 10 * SEC)
    c = _cursor(T0 + 2 * SEC)
    c.narrow_until_ms = T0 + 5 * SEC  # isolating a bad kline: one bar per REST fetch
    end_ms, cut = c.window_end_ms(T0 + 10 * SEC)
    assert end_ms == T0 + 3 * SEC and cut
    c.next_open_ms = T0 + 4 * SEC  # meanwhile the stream published T0+2s and T0+3s
    frame = pl.DataFrame({"open_time": [T0 + 2 * SEC]}).with_columns(
        pl.from_epoch("open_time", time_unit="ms")
    )

    await polling._on_fetched(host, c, frame, None, end_ms, cut)  # type: ignore[arg-type]

    assert c.next_open_ms == T0 + 4 * SEC
    assert log.lines == []  # no "the source has no bars" for bars the stream published
