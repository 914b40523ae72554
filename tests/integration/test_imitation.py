"""The Binance imitation over real HTTP: REST semantics, Vision files, headers and faults."""

from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import msgspec
import polars as pl
import pytest
from nautilus_trader.adapters.binance.futures.schemas.market import BinanceFuturesExchangeInfo
from nautilus_trader.adapters.binance.spot.schemas.market import BinanceSpotExchangeInfo

from nautilus_dsm.common import MarketType
from nautilus_dsm.dsm.schema import FRAME_SCHEMA, parse_rest_klines, parse_vision_csv
from nautilus_dsm.errors import UnknownSymbol
from nautilus_dsm.testing import BinanceImitation, RequestRecord, SymbolSpec

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
JAN_1_2024 = 1_704_067_200_000
JAN_1_2025 = 1_735_689_600_000
# "now" for most tests: 2024-01-03 10:30:15.000 (a forming 1m/1h bar, 2 closed days).
NOW = JAN_1_2024 + 2 * DAY + 10 * HOUR + 30 * MINUTE + 15_000


@pytest.fixture
def srv() -> Iterator[BinanceImitation]:
    # A frozen rate clock too: weight windows never roll over in the middle of a test.
    with BinanceImitation(clock=lambda: NOW, rate_clock=lambda: 1_700_000_010.0) as server:
        yield server


@pytest.fixture
def client(srv: BinanceImitation) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.url, timeout=5) as http:
        yield http


def _klines(client: httpx.Client, prefix: str = "/api/v3", **params: object) -> httpx.Response:
    return client.get(f"{prefix}/klines", params={"symbol": "BTCUSDT", "interval": "1m", **params})


def _open_times(response: httpx.Response) -> list[int]:
    return [row[0] for row in response.json()]


def _csv(zip_bytes: bytes) -> tuple[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(zip_bytes)) as archive:
        (name,) = archive.namelist()
        return name, archive.read(name)


# --------------------------------------------------------------------------------------------
# Lifecycle
# --------------------------------------------------------------------------------------------


def test_serves_on_an_ephemeral_localhost_port_and_stops() -> None:
    server = BinanceImitation()
    server.start()
    url = server.url
    assert url.startswith("http://127.0.0.1:")
    assert httpx.get(f"{url}/api/v3/ping").json() == {}
    server.stop()

    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/api/v3/ping")
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.url


def test_keep_alive_connection_is_reused(srv: BinanceImitation, client: httpx.Client) -> None:
    first = client.get("/api/v3/ping")
    second = client.get("/fapi/v1/ping")

    assert first.http_version == "HTTP/1.1"
    assert (first.status_code, second.status_code) == (200, 200)
    assert [r.path for r in srv.requests] == ["/api/v3/ping", "/fapi/v1/ping"]


def test_ping_time_and_request_records(srv: BinanceImitation, client: httpx.Client) -> None:
    assert client.get("/dapi/v1/time").json() == {"serverTime": NOW}
    _klines(client, limit=2)

    assert srv.requests == [
        RequestRecord("GET", "/dapi/v1/time", {}, 200),
        RequestRecord(
            "GET", "/api/v3/klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": "2"}, 200
        ),
    ]
    srv.clear_requests()
    assert srv.requests == []


# --------------------------------------------------------------------------------------------
# exchangeInfo
# --------------------------------------------------------------------------------------------


def test_spot_exchange_info_decodes_with_nautilus_schema(client: httpx.Client) -> None:
    info = msgspec.json.decode(
        client.get("/api/v3/exchangeInfo").content, type=BinanceSpotExchangeInfo
    )

    assert info.serverTime == NOW
    assert [s.symbol for s in info.symbols] == ["BTCUSDT", "ETHUSDT"]
    btc = info.symbols[0]
    filters = {f.filterType.value: f for f in btc.filters}
    assert filters["PRICE_FILTER"].tickSize == "0.01000000"
    assert filters["LOT_SIZE"].stepSize == "0.00001000"
    assert (btc.baseAsset, btc.quoteAsset) == ("BTC", "USDT")
    assert info.rateLimits[0].limit == 6000


def test_usdt_futures_exchange_info_decodes_with_nautilus_schema(client: httpx.Client) -> None:
    info = msgspec.json.decode(
        client.get("/fapi/v1/exchangeInfo").content, type=BinanceFuturesExchangeInfo
    )

    btc = info.symbols[0]
    filters = {f.filterType.value: f for f in btc.filters}
    assert [s.symbol for s in info.symbols] == ["BTCUSDT", "ETHUSDT"]
    assert (btc.contractType, btc.pricePrecision, btc.quantityPrecision) == ("PERPETUAL", 2, 3)
    assert (filters["PRICE_FILTER"].tickSize, filters["LOT_SIZE"].stepSize) == ("0.10", "0.001")
    assert btc.onboardDate == 1_577_836_800_000
    assert info.rateLimits[0].limit == 2400


def test_coin_futures_exchange_info_decodes_with_nautilus_schema(client: httpx.Client) -> None:
    raw = client.get("/dapi/v1/exchangeInfo").json()
    info = msgspec.json.decode(json.dumps(raw), type=BinanceFuturesExchangeInfo)

    assert [s.symbol for s in info.symbols] == ["BTCUSD_PERP", "ETHUSD_PERP"]
    btc, eth = raw["symbols"]
    assert (btc["contractSize"], btc["contractStatus"], btc["quoteAsset"]) == (
        100,
        "TRADING",
        "USD",
    )
    assert (btc["pricePrecision"], btc["quantityPrecision"], btc["marginAsset"]) == (1, 0, "BTC")
    assert {f["filterType"] for f in btc["filters"]} == {
        "PRICE_FILTER",
        "LOT_SIZE",
        "MARKET_LOT_SIZE",
        "MAX_NUM_ORDERS",
        "PERCENT_PRICE",
    }
    assert btc["filters"][0]["tickSize"] == "0.1"
    assert (eth["contractSize"], eth["filters"][0]["tickSize"], eth["filters"][1]["stepSize"]) == (
        10,
        "0.01",
        "1",
    )


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/api/v3/exchangeInfo", "exchange_info_spot.json"),
        ("/fapi/v1/exchangeInfo", "exchange_info_futures_um.json"),
    ],
)
def test_exchange_info_has_every_field_of_the_recorded_binance_payload(
    client: httpx.Client, realdata: Path, path: str, template: str
) -> None:
    real = json.loads((realdata / template).read_text())
    ours = client.get(path).json()

    assert set(real) <= set(ours)
    assert set(real["symbols"][0]) <= set(ours["symbols"][0])
    real_filters = {f["filterType"]: set(f) for f in real["symbols"][0]["filters"]}
    our_filters = {f["filterType"]: set(f) for f in ours["symbols"][0]["filters"]}
    assert real_filters == our_filters


def test_exchange_info_symbol_filter_and_unknown_symbol(client: httpx.Client) -> None:
    one = client.get("/fapi/v1/exchangeInfo", params={"symbol": "ETHUSDT"})
    unknown = client.get("/api/v3/exchangeInfo", params={"symbol": "NOPEUSDT"})

    assert [s["symbol"] for s in one.json()["symbols"]] == ["ETHUSDT"]
    assert unknown.status_code == 400
    assert unknown.json() == {"code": -1121, "msg": "Invalid symbol."}


# --------------------------------------------------------------------------------------------
# REST klines semantics
# --------------------------------------------------------------------------------------------


def test_start_time_pages_ascending_from_the_first_open_at_or_after_it(
    client: httpx.Client,
) -> None:
    response = _klines(client, startTime=JAN_1_2024 + 1, limit=3)
    rows = response.json()

    assert _open_times(response) == [JAN_1_2024 + MINUTE * i for i in (1, 2, 3)]
    assert [row[6] for row in rows] == [JAN_1_2024 + MINUTE * i - 1 for i in (2, 3, 4)]
    assert len(rows[0]) == 12 and rows[0][11] == "0"


def test_start_and_end_time_include_the_bar_opening_at_end(client: httpx.Client) -> None:
    response = _klines(client, startTime=JAN_1_2024, endTime=JAN_1_2024 + 4 * MINUTE)

    assert _open_times(response) == [JAN_1_2024 + MINUTE * i for i in range(5)]


def test_only_end_time_returns_the_last_limit_bars(client: httpx.Client) -> None:
    response = _klines(client, endTime=JAN_1_2024 + 10 * MINUTE + 5, limit=3)

    assert _open_times(response) == [JAN_1_2024 + MINUTE * i for i in (8, 9, 10)]


def test_neither_returns_the_latest_bars_including_the_forming_one(
    srv: BinanceImitation, client: httpx.Client
) -> None:
    response = _klines(client, limit=2)
    forming_open = NOW - 15_000
    final = srv.expected(MarketType.SPOT, "BTCUSDT", "1m", forming_open - MINUTE, NOW)

    rows = response.json()
    assert _open_times(response) == [forming_open - MINUTE, forming_open]
    assert parse_rest_klines(rows[:1]).equals(final)  # the closed one is final
    assert len(final) == 1  # expected() holds closed bars only


def test_forming_bar_has_partial_values(client: httpx.Client) -> None:
    forming_hour = NOW - 30 * MINUTE - 15_000
    later = BinanceImitation(clock=lambda: forming_hour + HOUR)
    with later:
        final = parse_rest_klines(
            httpx.get(
                f"{later.url}/api/v3/klines",
                params={
                    "symbol": "BTCUSDT",
                    "interval": "1h",
                    "startTime": forming_hour,
                    "limit": 1,
                },
            ).json()
        )
    partial = parse_rest_klines(
        _klines(client, interval="1h", startTime=forming_hour, limit=5).json()
    )

    assert partial["open_time"].to_list() == final["open_time"].to_list()
    assert partial["open"][0] == final["open"][0]
    assert partial["close"][0] != final["close"][0]
    assert partial["volume"][0] < final["volume"][0]


def test_default_limit_is_500_and_paging_is_seamless(
    srv: BinanceImitation, client: httpx.Client
) -> None:
    first = _klines(client, startTime=JAN_1_2024)
    second = _klines(client, startTime=_open_times(first)[-1] + MINUTE, limit=1000)
    fetched = pl.concat([parse_rest_klines(first.json()), parse_rest_klines(second.json())])

    assert len(first.json()) == 500
    assert fetched.equals(
        srv.expected("spot", "BTCUSDT", "1m", JAN_1_2024, JAN_1_2024 + 1500 * MINUTE)
    )


@pytest.mark.parametrize(
    ("prefix", "symbol", "limit", "status"),
    [
        ("/api/v3", "BTCUSDT", 1000, 200),
        ("/api/v3", "BTCUSDT", 1001, 400),
        ("/fapi/v1", "BTCUSDT", 1500, 200),
        ("/fapi/v1", "BTCUSDT", 1501, 400),
        ("/dapi/v1", "BTCUSD_PERP", 1501, 400),
        ("/api/v3", "BTCUSDT", 0, 400),
    ],
)
def test_limit_bounds(
    client: httpx.Client, prefix: str, symbol: str, limit: int, status: int
) -> None:
    response = _klines(client, prefix, symbol=symbol, startTime=JAN_1_2024, limit=limit)

    assert response.status_code == status
    if status == 200:
        assert len(response.json()) == limit
    else:
        assert response.json() == {
            "code": -1130,
            "msg": "Data sent for parameter 'limit' is not valid.",
        }


@pytest.mark.parametrize(
    ("prefix", "params", "body"),
    [
        ("/api/v3", {"symbol": "NOPE"}, {"code": -1121, "msg": "Invalid symbol."}),
        ("/dapi/v1", {"symbol": "BTCUSDT"}, {"code": -1121, "msg": "Invalid symbol."}),
        ("/api/v3", {"interval": "2m"}, {"code": -1120, "msg": "Invalid interval."}),
        ("/fapi/v1", {"interval": "1s"}, {"code": -1120, "msg": "Invalid interval."}),
        (
            "/api/v3",
            {"startTime": "2", "endTime": "1"},
            {"code": -1023, "msg": "Start time is greater than end time."},
        ),
        (
            "/api/v3",
            {"symbol": ""},
            {
                "code": -1102,
                "msg": "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
            },
        ),
    ],
)
def test_kline_errors(
    client: httpx.Client, prefix: str, params: dict[str, str], body: dict[str, object]
) -> None:
    response = _klines(client, prefix, **params)

    assert response.status_code == 400
    assert response.json() == body


def test_one_second_bars_on_spot(client: httpx.Client) -> None:
    response = _klines(client, interval="1s", startTime=JAN_1_2024, limit=3)

    assert _open_times(response) == [JAN_1_2024, JAN_1_2024 + 1000, JAN_1_2024 + 2000]
    assert response.json()[0][6] == JAN_1_2024 + 999


def test_no_bars_before_the_listing_and_listing_day_starts_at_listing(
    srv: BinanceImitation, client: httpx.Client
) -> None:
    listed = JAN_1_2024 + 10 * HOUR + 30 * MINUTE
    srv.add_symbol(
        MarketType.FUTURES_USDT,
        SymbolSpec("SOLUSDT", "SOL", "USDT", 100.0, "0.010", "1", listed_ms=listed),
    )

    before = _klines(client, "/fapi/v1", symbol="SOLUSDT", endTime=listed - 1)
    from_listing = _klines(client, "/fapi/v1", symbol="SOLUSDT", startTime=JAN_1_2024, limit=2)
    daily = _klines(client, "/fapi/v1", symbol="SOLUSDT", interval="1d", startTime=0)

    assert before.json() == []
    assert _open_times(from_listing) == [listed, listed + MINUTE]
    assert _open_times(daily) == [JAN_1_2024, JAN_1_2024 + DAY, JAN_1_2024 + 2 * DAY]
    assert (
        from_listing.json()[0][1].count(".") == 1
        and len(from_listing.json()[0][1].split(".")[1]) == 3
    )
    assert len(srv.expected("um", "SOLUSDT", "1m", JAN_1_2024, listed + 5 * MINUTE)) == 5


def test_weekly_and_monthly_bars(client: httpx.Client) -> None:
    weeks = _klines(client, interval="1w", startTime=JAN_1_2024 - 7 * DAY)
    months = _klines(client, interval="1M", endTime=NOW, limit=2)

    # 2024-01-01 was a Monday.
    assert _open_times(weeks) == [JAN_1_2024 - 7 * DAY, JAN_1_2024]
    assert _open_times(months) == [1_701_388_800_000, JAN_1_2024]
    assert months.json()[0][6] == JAN_1_2024 - 1


def test_expected_equals_rest_for_every_market(srv: BinanceImitation, client: httpx.Client) -> None:
    for prefix, market, symbol in [
        ("/api/v3", MarketType.SPOT, "ETHUSDT"),
        ("/fapi/v1", MarketType.FUTURES_USDT, "ETHUSDT"),
        ("/dapi/v1", MarketType.FUTURES_COIN, "ETHUSD_PERP"),
    ]:
        rows = _klines(client, prefix, symbol=symbol, interval="5m", startTime=JAN_1_2024).json()
        expected = srv.expected(market, symbol, "5m", JAN_1_2024, JAN_1_2024 + 500 * 5 * MINUTE)
        assert parse_rest_klines(rows).equals(expected), symbol
        assert dict(expected.schema) == FRAME_SCHEMA


def test_expected_of_an_unknown_symbol_names_the_fix(srv: BinanceImitation) -> None:
    with pytest.raises(UnknownSymbol, match=r"add it with srv.add_symbol\(SPOT, SymbolSpec"):
        srv.expected(MarketType.SPOT, "NOPEUSDT", "1m", JAN_1_2024, NOW)


def test_set_klines_serves_recorded_bars(realdata: Path) -> None:
    golden = pl.read_parquet(realdata / "dsm_golden_btcusdt_spot_1h_2024w01.parquet")
    names = {"quote_asset_volume": "quote_volume", "count": "trades",
             "taker_buy_volume": "taker_buy_base_volume"}  # fmt: skip
    frame = (
        golden.rename(names)
        .select(
            pl.col("open_time", "close_time").dt.cast_time_unit("ms"),
            *[
                pl.col(name)
                .map_elements(
                    lambda x: str(Decimal(repr(x)).quantize(Decimal("1e-8"))),
                    return_dtype=pl.String,
                )
                .cast(FRAME_SCHEMA[name])
                for name, dtype in FRAME_SCHEMA.items()
                if dtype == FRAME_SCHEMA["open"]
            ],
            pl.col("trades"),
        )
        .select(list(FRAME_SCHEMA))
    )
    with (
        BinanceImitation(clock=lambda: JAN_1_2024 + 8 * DAY) as srv,
        httpx.Client(base_url=srv.url) as client,
    ):
        srv.set_klines(MarketType.SPOT, "BTCUSDT", "1h", frame)
        rows = _klines(client, interval="1h", startTime=0, limit=1000).json()
        zipped = client.get("/data/spot/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2024-01-02.zip")
        expected = srv.expected("spot", "BTCUSDT", "1h", 0, NOW + 7 * DAY)

    assert len(rows) == 168
    assert rows[0][:2] == [JAN_1_2024, "42283.58000000"]
    assert parse_rest_klines(rows).equals(frame)
    assert parse_vision_csv(_csv(zipped.content)[1]).equals(frame[24:48])
    assert expected.equals(frame)


# --------------------------------------------------------------------------------------------
# Weight, 429 and 418
# --------------------------------------------------------------------------------------------


def test_used_weight_header_counts_binance_weights(client: httpx.Client) -> None:
    spot = [
        _klines(client, limit=1).headers["X-MBX-USED-WEIGHT-1M"],
        client.get("/api/v3/exchangeInfo").headers["X-MBX-USED-WEIGHT-1M"],
    ]
    futures = [
        _klines(client, "/fapi/v1", limit=limit).headers["X-MBX-USED-WEIGHT-1M"]
        for limit in (99, 100, 500, 1001)
    ]
    coin = client.get("/dapi/v1/exchangeInfo").headers["X-MBX-USED-WEIGHT-1M"]

    assert spot == ["2", "22"]
    assert futures == ["1", "3", "8", "18"]  # USDT-M has its own window
    assert coin == "1"


def test_weight_limit_answers_429_then_bans_a_client_that_ignores_it() -> None:
    wall = [1_700_000_010.0]  # 30 s before the minute window resets
    server = BinanceImitation(clock=lambda: NOW, rate_clock=lambda: wall[0])
    server.faults.weight_limit = 4
    server.faults.ban_after_ignored = 2
    server.faults.ban_seconds = 300
    with server, httpx.Client(base_url=server.url) as client:
        responses = [_klines(client, limit=1) for _ in range(6)]
        futures = _klines(client, "/fapi/v1", limit=1)
        wall[0] += 299.5
        still_banned = _klines(client, limit=1)
        wall[0] += 1
        lifted = _klines(client, limit=1)

    assert [r.status_code for r in responses] == [200, 200, 429, 429, 429, 418]
    assert [r.headers["X-MBX-USED-WEIGHT-1M"] for r in responses] == ["2", "4", "4", "4", "4", "4"]
    assert [r.headers["Retry-After"] for r in responses[2:]] == ["30", "30", "30", "300"]
    assert responses[2].json() == {
        "code": -1003,
        "msg": "Too many requests; current limit of IP(127.0.0.1) is 4 requests per minute. "
        "Please use the websocket for live updates to avoid polling the API.",
    }
    assert responses[5].json() == {
        "code": -1003,
        "msg": "Way too many requests; IP(127.0.0.1) banned until 1700000310000. "
        "Please use the websocket for live updates to avoid bans.",
    }
    assert futures.status_code == 200  # each market has its own limit
    assert (still_banned.status_code, still_banned.headers["Retry-After"]) == (418, "1")
    assert lifted.status_code == 200


def test_a_client_that_waits_for_the_window_is_not_banned() -> None:
    wall = [1_700_000_010.0]
    server = BinanceImitation(clock=lambda: NOW, rate_clock=lambda: wall[0])
    server.faults.weight_limit = 2
    with server, httpx.Client(base_url=server.url) as client:
        first, limited = _klines(client, limit=1), _klines(client, limit=1)
        wall[0] += float(limited.headers["Retry-After"])
        after_wait = _klines(client, limit=1)

    assert [first.status_code, limited.status_code, after_wait.status_code] == [200, 429, 200]
    assert after_wait.headers["X-MBX-USED-WEIGHT-1M"] == "2"


# --------------------------------------------------------------------------------------------
# Vision
# --------------------------------------------------------------------------------------------


def test_vision_daily_zip_with_checksum_equals_rest(
    srv: BinanceImitation, client: httpx.Client
) -> None:
    base = "/data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-02.zip"
    zipped = client.get(base)
    checksum = client.get(base + ".CHECKSUM")

    name, csv = _csv(zipped.content)
    assert zipped.headers["Content-Type"] == "application/zip"
    assert name == "BTCUSDT-1m-2024-01-02.csv"
    assert (
        checksum.text
        == f"{hashlib.sha256(zipped.content).hexdigest()}  BTCUSDT-1m-2024-01-02.zip\n"
    )
    assert csv.startswith(b"open_time,open,high,low,close,volume,close_time,quote_volume,count,")
    frame = parse_vision_csv(csv)
    assert len(frame) == 1440
    assert frame.equals(srv.expected("um", "BTCUSDT", "1m", JAN_1_2024 + DAY, JAN_1_2024 + 2 * DAY))
    rest = _klines(client, "/fapi/v1", startTime=JAN_1_2024 + DAY, limit=1440).json()
    assert parse_rest_klines(rest).equals(frame)
    assert client.get(base).content == zipped.content  # deterministic (and cached)


def test_vision_monthly_zip_of_a_month_of_minutes_is_fast() -> None:
    with BinanceImitation(clock=lambda: JAN_1_2024) as server:
        started = time.perf_counter()
        zipped = httpx.get(
            f"{server.url}/data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2023-11.zip"
        )
        elapsed = time.perf_counter() - started
        frame = parse_vision_csv(_csv(zipped.content)[1])

    assert len(frame) == 43_200
    assert not _csv(zipped.content)[1].startswith(b"open_time")  # spot: no header
    assert elapsed < 1.0


def test_vision_spot_timestamps_are_microseconds_from_2025() -> None:
    with BinanceImitation(clock=lambda: JAN_1_2025 + 3 * DAY) as server:
        url = f"{server.url}/data/spot/daily/klines/BTCUSDT/1h/BTCUSDT-1h-"
        new = _csv(httpx.get(url + "2025-01-01.zip").content)[1]
        old = _csv(httpx.get(url + "2024-12-31.zip").content)[1]
        um = _csv(
            httpx.get(
                f"{server.url}/data/futures/um/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2025-01-01.zip"
            ).content
        )[1]

    assert new.split(b",")[0] == b"1735689600000000"
    assert new.split(b",")[6] == b"1735693199999999"
    assert old.split(b",")[0] == b"1735603200000"
    assert um.splitlines()[1].split(b",")[0] == b"1735689600000"


def test_vision_files_exist_only_for_closed_periods_after_listing(
    srv: BinanceImitation, client: httpx.Client
) -> None:
    root = "/data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-"
    today = client.get(root + "2024-01-03.zip")
    month = client.get("/data/spot/monthly/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01.zip")
    before_listing = client.get(root + "2019-12-31.zip")
    first_day = client.get(root + "2020-01-01.zip")

    assert today.status_code == 404
    assert today.headers["Content-Type"] == "application/xml"
    assert today.text.startswith(
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchKey</Code>'
    )
    assert "<Key>data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-03.zip</Key>" in today.text
    assert client.get(root + "2024-01-03.zip.CHECKSUM").status_code == 404
    assert (month.status_code, before_listing.status_code, first_day.status_code) == (404, 404, 200)


def test_vision_names_the_monthly_interval_1mo() -> None:
    with BinanceImitation(clock=lambda: JAN_1_2025) as server:
        root = f"{server.url}/data/spot/monthly/klines/BTCUSDT"
        good = httpx.get(f"{root}/1mo/BTCUSDT-1mo-2024-03.zip")
        rest_name = httpx.get(f"{root}/1M/BTCUSDT-1M-2024-03.zip")

    rows = _csv(good.content)[1].splitlines()
    assert len(rows) == 1
    assert rows[0].split(b",")[0] == b"1709251200000"
    assert rest_name.status_code == 404


def test_vision_unknown_symbol_interval_and_market(client: httpx.Client) -> None:
    for path in [
        "/data/spot/daily/klines/NOPEUSDT/1m/NOPEUSDT-1m-2024-01-01.zip",
        "/data/futures/um/daily/klines/BTCUSDT/1s/BTCUSDT-1s-2024-01-01.zip",
        "/data/futures/cm/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-01.zip",
        "/data/spot/daily/klines/BTCUSDT/1m/ETHUSDT-1m-2024-01-01.zip",
        "/data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01.zip",
    ]:
        assert client.get(path).status_code == 404, path


# --------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------


def test_gaps_are_absent_from_rest_vision_and_expected(
    srv: BinanceImitation, client: httpx.Client
) -> None:
    srv.faults.gaps.append(("BTCUSDT", JAN_1_2024 + 2 * MINUTE, JAN_1_2024 + 5 * MINUTE))

    rest = _klines(client, startTime=JAN_1_2024, limit=4)
    csv = _csv(client.get("/data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-01.zip").content)[
        1
    ]
    expected = srv.expected("spot", "BTCUSDT", "1m", JAN_1_2024, JAN_1_2024 + 10 * MINUTE)

    assert _open_times(rest) == [JAN_1_2024 + MINUTE * i for i in (0, 1, 5, 6)]
    assert len(csv.splitlines()) == 1437
    assert len(expected) == 7
    assert parse_vision_csv(csv)[:4].equals(parse_rest_klines(rest.json()))


def test_vision_missing(srv: BinanceImitation, client: httpx.Client) -> None:
    srv.faults.vision_missing.add("ETHUSDT-1m-2024-01-01.zip")
    root = "/data/spot/daily/klines/ETHUSDT/1m/ETHUSDT-1m-"

    assert client.get(root + "2024-01-01.zip").status_code == 404
    assert client.get(root + "2024-01-01.zip.CHECKSUM").status_code == 404
    assert client.get(root + "2024-01-02.zip").status_code == 200


def test_vision_bad_checksum(srv: BinanceImitation, client: httpx.Client) -> None:
    path = "/data/futures/cm/daily/klines/BTCUSD_PERP/1h/BTCUSD_PERP-1h-2024-01-01.zip"
    good = client.get(path + ".CHECKSUM").text
    srv.faults.vision_bad_checksum.add("BTCUSD_PERP-1h-2024-01-01.zip")
    bad = client.get(path + ".CHECKSUM").text
    data = client.get(path).content

    assert good.split()[0] == hashlib.sha256(data).hexdigest()
    assert bad.split()[0] != hashlib.sha256(data).hexdigest()
    assert bad.split()[1] == "BTCUSD_PERP-1h-2024-01-01.zip"
    assert len(bad.split()[0]) == 64


def test_vision_truncated(srv: BinanceImitation, client: httpx.Client) -> None:
    path = "/data/spot/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2024-01-01.zip"
    full = client.get(path).content
    srv.faults.vision_truncated.add("BTCUSDT-1h-2024-01-01.zip")
    cut = client.get(path)
    checksum = client.get(path + ".CHECKSUM").text

    assert cut.content == full[: len(full) // 2]
    assert checksum.split()[0] == hashlib.sha256(full).hexdigest()
    with pytest.raises(zipfile.BadZipFile):
        _csv(cut.content)


def test_vision_wrong_columns(srv: BinanceImitation, client: httpx.Client) -> None:
    srv.faults.vision_wrong_columns.add("BTCUSDT-1m-2024-01-01.zip")
    csv = _csv(
        client.get("/data/futures/um/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2024-01-01.zip").content
    )[1]

    assert csv.splitlines()[0] == (
        b"open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
        b"taker_buy_quote_volume"
    )
    assert csv.splitlines()[1].count(b",") == 10


@pytest.mark.parametrize(
    ("forced", "first"), [(True, b"1704067200000000"), (False, b"1704067200000")]
)
def test_vision_timestamps_forced(
    srv: BinanceImitation, client: httpx.Client, forced: bool, first: bytes
) -> None:
    srv.faults.vision_timestamps_us = forced
    csv = _csv(
        client.get("/data/futures/um/daily/klines/BTCUSDT/1h/BTCUSDT-1h-2024-01-01.zip").content
    )[1]

    assert csv.splitlines()[1].split(b",")[0] == first


def test_rest_5xx_then_success(srv: BinanceImitation, client: httpx.Client) -> None:
    srv.faults.rest_5xx = 3

    responses = [client.get("/fapi/v1/ping") for _ in range(4)]

    assert [r.status_code for r in responses] == [503, 503, 503, 200]
    assert responses[0].json()["code"] == -1008
    assert srv.faults.rest_5xx == 0
    # Vision is not REST: unaffected.
    srv.faults.rest_5xx = 1
    assert (
        client.get("/data/spot/daily/klines/BTCUSDT/1d/BTCUSDT-1d-2024-01-01.zip").status_code
        == 200
    )
    assert client.get("/api/v3/ping").status_code == 503


def test_rest_429_and_418_with_retry_after(srv: BinanceImitation, client: httpx.Client) -> None:
    srv.faults.rest_429 = 2
    srv.faults.rest_418 = 1
    srv.faults.retry_after_s = 7

    responses = [_klines(client, limit=1) for _ in range(4)]

    assert [r.status_code for r in responses] == [418, 429, 429, 200]
    assert [r.headers.get("Retry-After") for r in responses] == ["7", "7", "7", None]
    assert responses[1].json()["code"] == -1003
    assert "banned until" in responses[0].json()["msg"]
    assert all("X-MBX-USED-WEIGHT-1M" in r.headers for r in responses)


def test_latency(srv: BinanceImitation, client: httpx.Client) -> None:
    srv.faults.latency_s = 0.2

    started = time.perf_counter()
    client.get("/api/v3/ping")

    assert time.perf_counter() - started >= 0.2


def test_reset_mid_body(srv: BinanceImitation, client: httpx.Client) -> None:
    srv.faults.reset_mid_body = 1

    with pytest.raises(httpx.RemoteProtocolError):
        _klines(client, startTime=JAN_1_2024, limit=100)
    after = _klines(client, startTime=JAN_1_2024, limit=100)

    assert after.status_code == 200 and len(after.json()) == 100
    assert [r.status for r in srv.requests] == [200, 200]


def test_duplicate_and_out_of_order_rows(srv: BinanceImitation, client: httpx.Client) -> None:
    clean = _open_times(_klines(client, startTime=JAN_1_2024, limit=4))
    srv.faults.duplicate_rows = True
    duplicated = _open_times(_klines(client, startTime=JAN_1_2024, limit=4))
    srv.faults.duplicate_rows = False
    srv.faults.out_of_order_rows = True
    swapped = _open_times(_klines(client, startTime=JAN_1_2024, limit=4))

    assert duplicated == [clean[0], clean[1], clean[2], clean[2], clean[3]]
    assert swapped == [clean[1], clean[0], clean[2], clean[3]]


def test_down_closes_connections_unanswered_until_resumed(
    srv: BinanceImitation, client: httpx.Client
) -> None:
    srv.pause()
    with pytest.raises(httpx.RemoteProtocolError):
        client.get("/api/v3/ping")
    with pytest.raises(httpx.RemoteProtocolError):
        client.get("/data/spot/daily/klines/BTCUSDT/1d/BTCUSDT-1d-2024-01-01.zip")
    srv.resume()

    assert client.get("/api/v3/ping").status_code == 200
    assert [r.status for r in srv.requests] == [0, 0, 200]
    assert srv.faults.down is False
