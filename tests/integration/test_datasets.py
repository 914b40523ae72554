"""Datasets beyond klines against the imitation: mark/index/premium klines and funding rates.

Every dataset exact through Vision and through REST, per market; funding with the 8 h -> 4 h
change, ms calc_time offsets floored, the missing Vision month served by REST; refusals before
I/O; the cache layout per dataset (klines' unchanged); COIN-M's 200-day REST window.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from nautilus_dsm.common import Interval, MarketType, to_ms
from nautilus_dsm.common.datasets import Dataset
from nautilus_dsm.dsm.manager import DataSourceManager
from nautilus_dsm.errors import InvalidInput
from nautilus_dsm.testing import BinanceImitation

UM, CM = MarketType.FUTURES_USDT, MarketType.FUTURES_COIN
NOW = to_ms(datetime(2024, 6, 1, tzinfo=UTC))
H = 3_600_000
KLINE_SETS = [
    Dataset.MARK_PRICE_KLINES,
    Dataset.INDEX_PRICE_KLINES,
    Dataset.PREMIUM_INDEX_KLINES,
]
INSTRUMENTS = [("BTCUSDT-PERP.BINANCE", UM, "BTCUSDT"), ("BTCUSD-PERP.BINANCE", CM, "BTCUSD_PERP")]


@pytest.fixture
def srv():
    with BinanceImitation(clock=lambda: NOW) as server:
        yield server


def make(srv, cache_dir: Path, **kw) -> DataSourceManager:
    return DataSourceManager.create(
        base_url_http=srv.url, base_url_vision=srv.url, cache_dir=cache_dir, clock=lambda: NOW, **kw
    )


def ms(text: str) -> int:
    return to_ms(datetime.fromisoformat(text.replace("Z", "+00:00")))


@pytest.mark.parametrize("dataset", KLINE_SETS, ids=lambda d: d.short)
@pytest.mark.parametrize("inst", INSTRUMENTS, ids=lambda i: i[2])
@pytest.mark.parametrize("use_vision", [True, False], ids=["vision", "rest"])
def test_kline_dataset_exact(srv, cache_dir, dataset, inst, use_vision):
    instrument_id, market, symbol = inst
    dsm = make(srv, cache_dir, use_vision=use_vision)
    start, end = "2024-01-30T00:00:00Z", "2024-02-02T00:00:00Z"

    result = dsm.fetch_sync(instrument_id, "1h", start, end, dataset=dataset.value)

    expected = srv.datasets.expected(market, symbol, dataset, Interval.HOUR_1, ms(start), ms(end))
    assert result.frame.height == 72
    assert result.frame.equals(expected)
    assert result.report.dataset == dataset.value
    assert result.report.completeness == 1.0
    source = "vision" if use_vision else "rest"
    assert result.report.sources[source] == 72
    folder = dataset.vision_folder if use_vision else dataset.rest_path
    assert any(folder in r.path for r in srv.requests)


def test_mark_klines_values_are_the_klines_three_ticks_up(srv, cache_dir):
    dsm = make(srv, cache_dir)
    start, end = "2024-01-02T00:00:00Z", "2024-01-02T00:03:00Z"
    klines = dsm.fetch_sync("BTCUSDT-PERP.BINANCE", "1m", start, end).frame
    mark = dsm.fetch_sync("BTCUSDT-PERP.BINANCE", "1m", start, end, dataset="mark").frame

    assert mark.get_column("close").to_list() == [
        c + Decimal("0.3") for c in klines.get_column("close").to_list()
    ]
    assert set(mark.get_column("volume").to_list()) == {Decimal(0)}


def test_index_klines_ask_rest_by_pair(srv, cache_dir):
    dsm = make(srv, cache_dir, use_vision=False)
    dsm.fetch_sync(
        "BTCUSD-PERP.BINANCE", "1h", "2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z", dataset="index"
    )

    queries = [r.query for r in srv.requests if r.path == "/dapi/v1/indexPriceKlines"]
    assert queries and all(q["pair"] == "BTCUSD" and "symbol" not in q for q in queries)


def test_dataset_caches_live_beside_the_klines_cache(srv, cache_dir):
    dsm = make(srv, cache_dir)
    args = ("BTCUSDT-PERP.BINANCE", "1h", "2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z")
    dsm.fetch_sync(*args)
    dsm.fetch_sync(*args, dataset="mark_price_klines")
    srv.clear_requests()

    warm = dsm.fetch_sync(*args, dataset="mark_price_klines")

    assert (cache_dir / "binance/futures_usdt/BTCUSDT/1h/2024-01-01.parquet").is_file()
    mark_file = cache_dir / "binance-mark_price_klines/futures_usdt/BTCUSDT/1h/2024-01-01.parquet"
    assert mark_file.is_file()
    assert warm.report.sources["cache"] == 24
    assert [r.path for r in srv.requests] == []


@pytest.mark.parametrize("dataset", ["mark", "index", "premium", "funding"])
def test_spot_is_refused_before_io(srv, cache_dir, dataset):
    dsm = make(srv, cache_dir)
    with pytest.raises(InvalidInput, match="exists only on the futures markets"):
        if dataset == "funding":
            dsm.fetch_funding_rates_sync(
                "BTCUSDT.BINANCE", "2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"
            )
        else:
            dsm.fetch_sync(
                "BTCUSDT.BINANCE",
                "1h",
                "2024-01-01T00:00:00Z",
                "2024-01-02T00:00:00Z",
                dataset=dataset,
            )
    assert srv.requests == []


def test_fetch_refuses_funding_as_a_kline_dataset(srv, cache_dir):
    dsm = make(srv, cache_dir)
    with pytest.raises(InvalidInput, match="fetch_funding_rates"):
        dsm.fetch_sync(
            "BTCUSDT-PERP.BINANCE",
            "1h",
            "2024-01-01T00:00:00Z",
            "2024-01-02T00:00:00Z",
            dataset="funding",
        )
    assert srv.requests == []


def test_coin_m_rest_pages_stay_inside_the_200_day_window(srv, cache_dir):
    dsm = make(srv, cache_dir, use_vision=False)

    result = dsm.fetch_sync(
        "BTCUSD-PERP.BINANCE", "1d", "2023-01-01T00:00:00Z", "2024-05-01T00:00:00Z"
    )

    assert result.frame.height == 486
    windows = [
        int(r.query["endTime"]) - int(r.query["startTime"])
        for r in srv.requests
        if r.path == "/dapi/v1/klines" and "endTime" in r.query
    ]
    assert windows and max(windows) <= 200 * 86_400_000
    assert all(r.status == 200 for r in srv.requests)


def test_imitation_refuses_a_coin_m_window_over_200_days(srv):
    import httpx

    answer = httpx.get(
        f"{srv.url}/dapi/v1/markPriceKlines",
        params={
            "symbol": "BTCUSD_PERP",
            "interval": "1d",
            "startTime": 0,
            "endTime": 201 * 86_400_000,
        },
    )
    assert answer.status_code == 400
    assert answer.json() == {
        "code": -1127,
        "msg": "More than 200 days between startTime and endTime.",
    }


# -- funding ---------------------------------------------------------------------------------


def _expected_funding(srv, market, symbol, start, end) -> list[tuple]:
    return srv.datasets.expected_funding(market, symbol, ms(start), ms(end))


def _rows(frame: pl.DataFrame) -> list[tuple]:
    return [
        (
            to_ms(ft),
            to_ms(ct),
            hours,
            rate,
        )
        for ft, ct, hours, rate in frame.select(
            "funding_time", "calc_time", "funding_interval_hours", "funding_rate"
        ).iter_rows()
    ]


@pytest.mark.parametrize("inst", INSTRUMENTS, ids=lambda i: i[2])
@pytest.mark.parametrize("use_vision", [True, False], ids=["vision", "rest"])
def test_funding_exact(srv, cache_dir, inst, use_vision):
    instrument_id, market, symbol = inst
    start, end = "2024-03-01T00:00:00Z", "2024-04-01T00:00:00Z"
    dsm = make(srv, cache_dir, use_vision=use_vision)

    result = dsm.fetch_funding_rates_sync(instrument_id, start, end)

    expected = _expected_funding(srv, market, symbol, start, end)
    assert _rows(result.frame) == [(b, c, h, Decimal(r)) for b, c, h, r, _ in expected]
    report = result.report
    assert report.events == len(expected) == report.expected_events
    assert report.gaps == [] and report.off_boundary == []
    assert report.sources["vision" if use_vision else "rest"] == len(expected)
    marks = result.frame.get_column("mark_price").to_list()
    if market is UM and not use_vision:
        assert marks == [Decimal(m) for *_, m in expected]
    else:
        assert set(marks) == {None}


def test_funding_interval_change_and_calc_time_offsets(srv, cache_dir):
    dsm = make(srv, cache_dir)

    result = dsm.fetch_funding_rates_sync(
        "BTCUSDT-PERP.BINANCE", "2024-03-14T00:00:00Z", "2024-03-16T00:00:00Z"
    )

    frame = result.frame
    times = [to_ms(t) for t in frame.get_column("funding_time")]
    hours = frame.get_column("funding_interval_hours").to_list()
    change = ms("2024-03-15T00:00:00Z")
    assert times == [change - 24 * H + k * 8 * H for k in range(4)] + [
        change + k * 4 * H for k in range(1, 6)
    ]
    assert hours == [8, 8, 8, 8, 4, 4, 4, 4, 4]
    calc = [to_ms(t) for t in frame.get_column("calc_time")]
    assert [c - t for c, t in zip(calc, times, strict=True)] == [(t // H * 7) % 13 for t in times]
    assert result.report.interval_changes == [(datetime(2024, 3, 15, 4, tzinfo=UTC), 8, 4)]
    assert result.report.events == result.report.expected_events == 9


def test_missing_vision_funding_month_comes_from_rest(srv, cache_dir):
    dsm = make(srv, cache_dir)

    result = dsm.fetch_funding_rates_sync(
        "BTCUSDT-PERP.BINANCE", "2024-01-01T00:00:00Z", "2024-04-01T00:00:00Z"
    )

    statuses = {
        r.path.rsplit("/", 1)[-1]: r.status for r in srv.requests if "fundingRate" in r.path
    }
    assert statuses["BTCUSDT-fundingRate-2024-02.zip"] == 404
    assert statuses["fundingRate"] == 200
    assert result.report.sources == {"cache": 0, "vision": 93 + 144, "rest": 87}
    assert result.report.gaps == []
    feb = result.frame.filter(pl.col("funding_time").dt.month() == 2)
    assert feb.height == 87 and set(feb.get_column("funding_interval_hours").to_list()) == {8}


def test_funding_gap_is_reported_never_invented(srv, cache_dir):
    dsm = make(srv, cache_dir, use_vision=False)
    srv.datasets.funding.set_schedule(UM, "ETHUSDT", ((0, 8),))
    # Vision off, and REST answers without the event at 2024-01-02T08:00.
    original = srv.datasets.funding.events

    def events(market, spec, lo, hi, *, marks=True):
        return [
            e
            for e in original(market, spec, lo, hi, marks=marks)
            if e.boundary_ms != ms("2024-01-02T08:00:00Z")
        ]

    srv.datasets.funding.events = events
    result = dsm.fetch_funding_rates_sync(
        "ETHUSDT-PERP.BINANCE", "2024-01-01T00:00:00Z", "2024-01-04T00:00:00Z"
    )

    report = result.report
    assert report.events == 8 and report.expected_events == 9
    assert [(str(g), g.interval_hours) for g in report.gaps] == [
        ("2024-01-02T08:00:00Z..2024-01-02T16:00:00Z (1 events)", 8)
    ]
    assert not (cache_dir / "binance-funding_rates/futures_usdt/ETHUSDT/2024-01.parquet").exists()


def test_funding_months_are_cached_and_served_warm(srv, cache_dir):
    dsm = make(srv, cache_dir)
    args = ("BTCUSD-PERP.BINANCE", "2024-01-01T00:00:00Z", "2024-03-01T00:00:00Z")
    cold = dsm.fetch_funding_rates_sync(*args)
    srv.clear_requests()

    warm = dsm.fetch_funding_rates_sync(*args)

    assert srv.requests == []
    assert warm.frame.equals(cold.frame)
    assert warm.report.sources == {"cache": 93 + 87, "vision": 0, "rest": 0}


def test_funding_rest_pages_by_time(srv, cache_dir):
    dsm = make(srv, cache_dir, use_vision=False)

    async def run():  # the async API, its connections closed in the loop that opened them
        async with dsm:
            return await dsm.fetch_funding_rates(
                "BTCUSD-PERP.BINANCE", "2023-01-01T00:00:00Z", "2023-02-01T00:00:00Z"
            )

    result = asyncio.run(run())

    assert result.frame.height == 93
    (query,) = [r.query for r in srv.requests if r.path == "/dapi/v1/fundingRate"]
    assert query["limit"] == "1000"
    assert query["startTime"] == str(ms("2023-01-01T00:00:00Z"))


def test_funding_rest_pager_continues_after_full_pages(srv):
    from nautilus_dsm.dsm.funding_rest import FundingRest
    from nautilus_dsm.dsm.rest import BinanceRestClient

    async def run() -> pl.DataFrame:
        client = BinanceRestClient(CM, srv.url, clock=lambda: NOW)
        try:
            return await FundingRest(client).funding(
                "BTCUSD_PERP", ms("2021-01-01T00:00:00Z"), ms("2023-01-01T00:00:00Z")
            )
        finally:
            await client.aclose()

    frame = asyncio.run(run())

    assert frame.height == 730 * 3
    starts = [int(r.query["startTime"]) for r in srv.requests if r.path == "/dapi/v1/fundingRate"]
    assert len(starts) == 3
    assert frame.get_column("funding_time").is_unique().all()


def test_funding_file_failing_its_checksum_comes_from_rest(srv, cache_dir):
    srv.faults.vision_bad_checksum.add("BTCUSD_PERP-fundingRate-2024-01.zip")
    dsm = make(srv, cache_dir)

    result = dsm.fetch_funding_rates_sync(
        "BTCUSD-PERP.BINANCE", "2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z"
    )

    assert result.report.sources == {"cache": 0, "vision": 0, "rest": 93}
    expected = _expected_funding(
        srv, CM, "BTCUSD_PERP", "2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z"
    )
    assert _rows(result.frame) == [(b, c, h, Decimal(r)) for b, c, h, r, _ in expected]


def test_cache_info_and_clear_cover_the_dataset_caches(srv, cache_dir):
    dsm = make(srv, cache_dir)
    dsm.fetch_sync("BTCUSDT-PERP.BINANCE", "1h", "2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z")
    dsm.fetch_sync(
        "BTCUSDT-PERP.BINANCE", "1h", "2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z", dataset="mark"
    )
    dsm.fetch_funding_rates_sync(
        "BTCUSDT-PERP.BINANCE", "2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z"
    )

    info = dsm.cache.info()
    assert [(e["interval"], e.get("dataset")) for e in info["entries"]] == [
        ("-", "funding_rates"),  # a funding month has no interval
        ("1h", None),
        ("1h", "mark_price_klines"),
    ]
    assert (cache_dir / "binance-funding_rates/futures_usdt/BTCUSDT/2024-01.parquet").is_file()
    assert dsm.cache.clear() == 3
    assert dsm.cache.info()["files"] == 0
    assert list((cache_dir / "binance-funding_rates").rglob("*.parquet")) == []


def test_imitation_premium_index_gives_mark_index_and_next_funding(srv):
    import httpx

    body = httpx.get(f"{srv.url}/fapi/v1/premiumIndex", params={"symbol": "BTCUSDT"}).json()

    assert sorted(body) == sorted(
        [
            "symbol",
            "markPrice",
            "indexPrice",
            "estimatedSettlePrice",
            "lastFundingRate",
            "interestRate",
            "nextFundingTime",
            "time",
        ]
    )
    assert body["time"] == NOW
    assert body["nextFundingTime"] == NOW + 4 * H  # 4 h funding after 2024-03-15
    assert Decimal(body["markPrice"]) - Decimal(body["indexPrice"]) == Decimal("0.5")
    last = srv.datasets.expected_funding(UM, "BTCUSDT", NOW - 4 * H, NOW + 1)
    assert body["lastFundingRate"] == last[-1][3]


def test_truncated_funding_file_comes_from_rest(srv, cache_dir):
    srv.faults.vision_truncated.add("BTCUSD_PERP-fundingRate-2024-01.zip")
    dsm = make(srv, cache_dir, max_retries=2)

    result = dsm.fetch_funding_rates_sync(
        "BTCUSD-PERP.BINANCE", "2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z"
    )

    assert result.report.sources == {"cache": 0, "vision": 0, "rest": 93}
    assert result.report.gaps == []


def test_corrupt_funding_cache_file_is_discarded_and_fetched_again(srv, cache_dir):
    dsm = make(srv, cache_dir)
    args = ("BTCUSD-PERP.BINANCE", "2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z")
    cold = dsm.fetch_funding_rates_sync(*args)
    file = cache_dir / "binance-funding_rates/futures_coin/BTCUSD_PERP/2024-01.parquet"
    file.write_bytes(b"not parquet")

    again = dsm.fetch_funding_rates_sync(*args)

    assert again.frame.equals(cold.frame)
    assert again.report.sources == {"cache": 0, "vision": 93, "rest": 0}
    assert file.is_file()  # rewritten from Vision


def test_imitation_funding_request_window_answers_429_past_its_limit(srv):
    import httpx

    srv.datasets.funding_limit = (2, 300.0)
    params = {"symbol": "BTCUSDT", "startTime": 0, "limit": 10}

    statuses = [
        httpx.get(f"{srv.url}/fapi/v1/fundingRate", params=params).status_code for _ in range(3)
    ]

    assert statuses == [200, 200, 429]


def test_imitated_mark_rows_have_the_recorded_binance_kline_shape(srv, realdata):
    # Binance documents markPriceKlines / indexPriceKlines / premiumIndexKlines as the klines'
    # 12-field arrays; the recorded /fapi/v1/klines answer is that shape.
    import json

    import httpx

    recorded = json.loads((realdata / "klines_futures_um.json").read_text())[0]
    rows = httpx.get(
        f"{srv.url}/fapi/v1/markPriceKlines",
        params={"symbol": "BTCUSDT", "interval": "1m", "startTime": 1_704_067_200_000, "limit": 2},
    ).json()

    assert [type(v) for v in rows[0]] == [type(v) for v in recorded]
    from nautilus_dsm.dsm.schema import parse_rest_klines

    assert parse_rest_klines(json.dumps(rows).encode()).height == 2


def test_funding_listing_inside_the_range_is_not_a_gap(srv, cache_dir):
    from dataclasses import replace

    listed = ms("2024-01-10T00:00:00Z")
    spec = srv.symbols(UM)["ETHUSDT"]
    srv.add_symbol(UM, replace(spec, listed_ms=listed))
    dsm = make(srv, cache_dir)

    result = dsm.fetch_funding_rates_sync(
        "ETHUSDT-PERP.BINANCE", "2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z"
    )

    report = result.report
    assert report.events == report.expected_events == 22 * 3
    assert report.gaps == []
    assert report.listing_time == datetime(2024, 1, 10, tzinfo=UTC)
    assert report.warnings == [
        "ETHUSDT-PERP.BINANCE has no funding before 2024-01-10T00:00:00Z (its first event); "
        "the time before it is not counted as missing"
    ]
