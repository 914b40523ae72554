"""``nautilus-dsm instruments`` (--json, --symbol / --quote, --include-non-trading), and ids: a raw
symbol without --market-type is refused by fetch, quality and ingest."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from nautilus_dsm.cli import cli
from nautilus_dsm.cli.instruments import InstrumentRow, instrument_rows
from nautilus_dsm.common import MarketType
from tests.unit.test_parsing import coin_m_exchange_info


def _invoke(srv: object, cache_dir: Path, *args: str) -> Result:
    url = srv.url  # type: ignore[attr-defined]
    sources = ["--base-url-http", url, "--base-url-vision", url, "--cache-dir", str(cache_dir)]
    return CliRunner().invoke(cli, ["instruments", *sources, *args], catch_exceptions=False)


def test_json_lists_one_object_per_instrument(imitation: object, cache_dir: Path) -> None:
    result = _invoke(imitation, cache_dir, "--market-type", "futures_coin", "--json")

    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert rows[0] == {
        "id": "BTCUSD-PERP.BINANCE",
        "symbol": "BTCUSD_PERP",
        "market": "futures_coin",
        "kind": "perpetual",
        "base": "BTC",
        "quote": "USD",
        "settlement": "BTC",
        "status": "TRADING",
        "tick": "0.1",
        "step": "1",
        "price_precision": 1,
        "size_precision": 0,
        "multiplier": "100",
        "is_inverse": True,
    }
    assert [r["id"] for r in rows] == ["BTCUSD-PERP.BINANCE", "ETHUSD-PERP.BINANCE"]


def test_symbol_filter_matches_ids_and_binance_symbols_across_markets(
    imitation: object, cache_dir: Path
) -> None:
    exact = _invoke(imitation, cache_dir, "--symbol", "btcusdt", "--json")
    pattern = _invoke(imitation, cache_dir, "--symbol", "ETH*", "--json")
    by_id = _invoke(imitation, cache_dir, "--symbol", "BTCUSD-PERP.BINANCE", "--json")

    assert [(r["id"], r["market"]) for r in json.loads(exact.stdout)] == [
        ("BTCUSDT.BINANCE", "spot"),
        ("BTCUSDT-PERP.BINANCE", "futures_usdt"),
    ]
    assert [r["id"] for r in json.loads(pattern.stdout)] == [
        "ETHUSDT.BINANCE",
        "ETHUSDT-PERP.BINANCE",
        "ETHUSD-PERP.BINANCE",
    ]
    assert [r["symbol"] for r in json.loads(by_id.stdout)] == ["BTCUSD_PERP"]


def test_quote_filter_and_the_text_table(imitation: object, cache_dir: Path) -> None:
    result = _invoke(imitation, cache_dir, "--quote", "usd", "--symbol", "BTC*")

    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "id                   market        tick  step  price_prec  size_prec",
        "BTCUSD-PERP.BINANCE  futures_coin  0.1   1     1           0",
    ]


def test_no_match_prints_the_header_and_says_so(imitation: object, cache_dir: Path) -> None:
    text = _invoke(imitation, cache_dir, "--quote", "EUR")
    as_json = _invoke(imitation, cache_dir, "--quote", "EUR", "--json")

    assert (text.exit_code, as_json.exit_code) == (0, 0)
    assert text.stdout == "id  market  tick  step  price_prec  size_prec\n"
    assert text.stderr == "no instrument matches the filters\n"
    assert json.loads(as_json.stdout) == []


def test_market_type_help_says_it_filters_the_list() -> None:
    result = CliRunner().invoke(cli, ["instruments", "--help"], terminal_width=200)

    assert "List this market only (default: every market)." in " ".join(result.stdout.split())
    assert "inferred from the instrument id" not in result.stdout


def test_non_trading_symbols_only_on_request() -> None:
    info = coin_m_exchange_info()

    trading = instrument_rows(MarketType.FUTURES_COIN, info)
    every = instrument_rows(MarketType.FUTURES_COIN, info, include_non_trading=True)

    assert [r.id for r in trading] == [
        "BTCUSD-PERP.BINANCE",
        "ETHUSD-PERP.BINANCE",
        "BTCUSD_240329.BINANCE",
    ]
    settling = [r for r in every if r.status != "TRADING"]
    assert settling == [
        InstrumentRow(
            id="BTCUSD_231229.BINANCE",
            symbol="BTCUSD_231229",
            market="futures_coin",
            kind="future",
            base="BTC",
            quote="USD",
            settlement="BTC",
            status="SETTLING",
            tick="0.1",
            step="1",
            price_precision=1,
            size_precision=0,
            multiplier="100",
            is_inverse=True,
        )
    ]
    assert settling[0].cells(True)[-1] == "SETTLING"


# -- a raw symbol without --market-type (issue 14) ----------------------------------------------


def test_fetch_of_a_raw_symbol_is_refused_with_exit_2_before_any_request(
    imitation: object, cache_dir: Path, tmp_path: Path
) -> None:
    url = imitation.url  # type: ignore[attr-defined]
    base = ["--interval", "1m", "--start", "2024-01-01", "--end", "2024-01-02"]
    sources = ["--base-url-http", url, "--base-url-vision", url, "--cache-dir", str(cache_dir)]
    out = ["--out", str(tmp_path / "x.parquet")]
    runs = {
        "fetch": ["fetch", "BTCUSDT", *base, *sources, *out],
        "quality": ["quality", "BTCUSDT", *base, *sources],
        "ingest": ["ingest", "BTCUSDT", *base, *sources, "--catalog", str(tmp_path / "cat")],
    }

    results = {name: CliRunner().invoke(cli, args) for name, args in runs.items()}

    for result in results.values():
        assert result.exit_code == 2
        assert result.stderr == (
            "error: 'BTCUSDT' is a Binance symbol without a market; use the instrument id you "
            "mean: BTCUSDT.BINANCE (spot), BTCUSDT-PERP.BINANCE (USDT-M perpetual), "
            "BTCUSD-PERP.BINANCE (COIN-M perpetual), or pass --market-type (spot, "
            "futures_usdt, futures_coin)\n"
        )
    assert imitation.requests == []  # type: ignore[attr-defined]
    assert not (tmp_path / "cat").exists()


def test_fetch_of_a_raw_symbol_with_market_type_runs(
    imitation: object, cache_dir: Path, tmp_path: Path
) -> None:
    url = imitation.url  # type: ignore[attr-defined]
    result = CliRunner().invoke(
        cli,
        [
            "fetch",
            "BTCUSDT",
            "--market-type",
            "futures_usdt",
            *["--interval", "1h", "--start", "2024-01-01", "--end", "2024-01-02"],
            *["--base-url-http", url, "--base-url-vision", url, "--cache-dir", str(cache_dir)],
            *["--out", str(tmp_path / "x.parquet")],
        ],
    )

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("BTCUSDT-PERP.BINANCE 1h ")


def test_rows_of_recorded_binance_exchange_info(realdata: Path) -> None:
    info = json.loads((realdata / "exchange_info_futures_um.json").read_text())

    rows = instrument_rows(MarketType.FUTURES_USDT, info, symbols=["BTC*"])

    assert [(r.id, r.symbol, r.kind, r.tick, r.price_precision) for r in rows] == [
        ("BTCUSDT-PERP.BINANCE", "BTCUSDT", "perpetual", "0.10", 2),
        ("BTCUSDT_220325.BINANCE", "BTCUSDT_220325", "future", "0.1", 1),
    ]
