"""Universe selection from exchangeInfo and series-month planning (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from nautilus_dsm.common import MarketType, to_ms
from nautilus_dsm.distributed.tasks import SeriesMonth, month_tasks
from nautilus_dsm.errors import InvalidInput, UnknownSymbol
from nautilus_dsm.testing.symbols import SymbolSpec, default_symbols, exchange_info
from nautilus_dsm.universe import SeriesSpan, UniverseMember, read_symbols_file, select_universe

UM = MarketType.FUTURES_USDT
FEB_10 = to_ms(datetime(2024, 2, 10, 12, tzinfo=UTC))


def um_info() -> dict:
    specs = [
        *default_symbols()[UM].values(),
        SymbolSpec("LUNAUSDT", "LUNA", "USDT", 1.2, "0.001", "1", status="BREAK"),
        SymbolSpec("BTCUSDC", "BTC", "USDC", 42005.0, "0.1", "0.001"),
        SymbolSpec("DOGEUSDT", "DOGE", "USDT", 0.08, "0.00001", "1", listed_ms=FEB_10),
    ]
    info = exchange_info(UM, specs, 0)
    # A quarterly delivery contract is not a perpetual: never part of the universe.
    delivery = dict(info["symbols"][0], symbol="BTCUSDT_240329", contractType="CURRENT_QUARTER")
    info["symbols"].append(delivery)
    return info


def symbols(members: list[UniverseMember]) -> list[str]:
    return [m.symbol for m in members]


def test_trading_perpetuals_of_one_quote() -> None:
    chosen = select_universe(um_info(), "futures_usdt", quote="USDT")
    assert symbols(chosen) == ["BTCUSDT", "DOGEUSDT", "ETHUSDT"]
    assert chosen[0] == UniverseMember(
        "BTCUSDT",
        "BTCUSDT-PERP.BINANCE",
        UM,
        "TRADING",
        "USDT",
        to_ms(datetime(2020, 1, 1, tzinfo=UTC)),
    )


def test_status_all_keeps_symbols_that_no_longer_trade() -> None:
    chosen = select_universe(um_info(), UM, quote="usdt", status="all")
    assert symbols(chosen) == ["BTCUSDT", "DOGEUSDT", "ETHUSDT", "LUNAUSDT"]
    assert [m.status for m in chosen] == ["TRADING", "TRADING", "TRADING", "BREAK"]


def test_one_status_and_every_quote() -> None:
    assert symbols(select_universe(um_info(), UM, status="break")) == ["LUNAUSDT"]
    assert symbols(select_universe(um_info(), UM)) == ["BTCUSDC", "BTCUSDT", "DOGEUSDT", "ETHUSDT"]


def test_symbols_and_exclusions_accept_binance_symbols_and_nautilus_ids() -> None:
    chosen = select_universe(
        um_info(), UM, status="all",
        symbols=["BTCUSDT-PERP.BINANCE", "ethusdt", "LUNAUSDT"], exclude=["ETHUSDT-PERP"],
    )  # fmt: skip
    assert symbols(chosen) == ["BTCUSDT", "LUNAUSDT"]


def test_an_unlisted_symbol_is_refused_naming_it() -> None:
    with pytest.raises(UnknownSymbol) as caught:
        select_universe(um_info(), UM, symbols=["BTCUSDT", "BTCUSDT_240329", "NOPEUSDT"])
    assert str(caught.value) == (
        "BTCUSDT_240329, NOPEUSDT not listed on Binance futures_usdt (futures universes are "
        "perpetuals); fix the symbols file or pick the market"
    )


def test_a_selection_of_nothing_is_refused() -> None:
    with pytest.raises(InvalidInput) as caught:
        select_universe(um_info(), UM, quote="EUR")
    assert str(caught.value) == (
        "the futures_usdt universe (quote EUR, status TRADING) selects no symbol; widen "
        "--quote / --status or check --symbols-file / --exclude"
    )


def test_a_bad_status_is_refused() -> None:
    with pytest.raises(InvalidInput, match="status 'TRADING!' is not TRADING, all"):
        select_universe(um_info(), UM, status="TRADING!")


def test_symbols_file_lines_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "s.txt"
    path.write_text("# majors\nBTCUSDT\n\n ETHUSDT # second\n")
    assert read_symbols_file(path) == ["BTCUSDT", "ETHUSDT"]
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(InvalidInput, match="names no symbol"):
        read_symbols_file(tmp_path / "empty.txt")
    with pytest.raises(InvalidInput, match="does not exist"):
        read_symbols_file(tmp_path / "missing.txt")


def span(symbol: str, start: datetime, end: datetime, listing: int | None = None) -> SeriesSpan:
    member = UniverseMember(symbol, f"{symbol}-PERP.BINANCE", UM, "TRADING", "USDT", listing)
    return SeriesSpan(member, listing, to_ms(start), to_ms(end))


def test_months_start_at_the_listing_and_stop_at_the_end() -> None:
    jan, mar_15 = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 3, 15, tzinfo=UTC)
    listed = datetime(2024, 2, 10, 12, tzinfo=UTC)
    tasks = month_tasks([span("BTCUSDT", jan, mar_15), span("DOGEUSDT", listed, mar_15)], "1m")
    assert [t.key for t in tasks] == [
        "klines-BTCUSDT-PERP.BINANCE-1m-2024-01",
        "klines-BTCUSDT-PERP.BINANCE-1m-2024-02",
        "klines-DOGEUSDT-PERP.BINANCE-1m-2024-02",
        "klines-BTCUSDT-PERP.BINANCE-1m-2024-03",
        "klines-DOGEUSDT-PERP.BINANCE-1m-2024-03",
    ]
    feb = to_ms(datetime(2024, 2, 1, tzinfo=UTC))
    assert tasks[2] == SeriesMonth(
        "DOGEUSDT-PERP.BINANCE",
        "klines",
        "1m",
        feb,
        to_ms(listed),
        to_ms(datetime(2024, 3, 1, tzinfo=UTC)),
    )
    assert tasks[3].end_ms == to_ms(mar_15)


def test_an_empty_span_plans_nothing_and_a_month_without_a_bar_open_is_skipped() -> None:
    jan, feb = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC)
    assert month_tasks([span("BTCUSDT", feb, feb)], "1m") == []
    # A weekly bar opens on Mondays: 2024-01-29 is the last of January; none opens Jan 30-31.
    late = span("BTCUSDT", datetime(2024, 1, 30, tzinfo=UTC), datetime(2024, 2, 6, tzinfo=UTC))
    assert [t.month for t in month_tasks([late], "1w")] == ["2024-02"]
    assert [t.month for t in month_tasks([span("BTCUSDT", jan, feb)], "1M")] == ["2024-01"]


def test_an_unknown_dataset_is_refused() -> None:
    with pytest.raises(InvalidInput) as caught:
        month_tasks([], "1m", dataset="trades")
    assert str(caught.value) == "dataset 'trades' is not supported; use one of ['klines']"
