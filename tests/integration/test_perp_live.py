"""Live mark prices, index prices and funding rates of perpetuals: ``premiumIndex`` polled.

A ``DSMDataClient`` (the harness of ``tests/integration/conftest.py``) against an imitation on a
clock the test moves: every update is compared with the imitation's own ``premiumIndex``
answer at that clock, funding is published once per change (rate or next funding time).
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.data.messages import (
    SubscribeFundingRates,
    SubscribeIndexPrices,
    SubscribeMarkPrices,
    UnsubscribeFundingRates,
    UnsubscribeIndexPrices,
    UnsubscribeMarkPrices,
)
from nautilus_trader.model.data import FundingRateUpdate, IndexPriceUpdate, MarkPriceUpdate
from nautilus_trader.model.identifiers import ClientId, InstrumentId

from nautilus_dsm.common import to_ms
from nautilus_dsm.data import BINANCE_VENUE
from nautilus_dsm.testing import BinanceImitation
from tests.integration.conftest import Harness, build_harness

pytestmark = pytest.mark.timeout(60)
PERP = InstrumentId.from_str("BTCUSDT-PERP.BINANCE")
INVERSE = InstrumentId.from_str("BTCUSD-PERP.BINANCE")
SPOT = InstrumentId.from_str("BTCUSDT.BINANCE")
BEFORE = to_ms(datetime(2024, 3, 15, 7, 59, 59, 500_000, tzinfo=UTC))
AFTER = to_ms(datetime(2024, 3, 15, 8, 0, 0, 500_000, tzinfo=UTC))
SUBSCRIBE = {
    "mark_prices": SubscribeMarkPrices,
    "index_prices": SubscribeIndexPrices,
    "funding_rates": SubscribeFundingRates,
}
UNSUBSCRIBE = {
    "mark_prices": UnsubscribeMarkPrices,
    "index_prices": UnsubscribeIndexPrices,
    "funding_rates": UnsubscribeFundingRates,
}


@pytest.fixture
def clocked() -> Iterator[tuple[Any, list[int]]]:
    now = [BEFORE]
    with BinanceImitation(clock=lambda: now[0]) as srv:
        yield srv, now


def _harness(clocked: tuple[Any, list[int]], cache_dir: Path) -> Harness:
    h = build_harness(clocked[0], cache_dir)
    h.client.PERP_POLL_S = 0.02  # the poll period (1 s live) shortened for the test
    return h


def _send(h: Harness, kind: str, instrument_id: InstrumentId, *, unsubscribe: bool = False) -> None:
    cls = (UNSUBSCRIBE if unsubscribe else SUBSCRIBE)[kind]
    command = cls(
        instrument_id=instrument_id,
        client_id=ClientId("DSM"),
        venue=BINANCE_VENUE,
        command_id=UUID4(),
        ts_init=h.clock.timestamp_ns(),
    )
    getattr(h.client, f"{'un' if unsubscribe else ''}subscribe_{kind}")(command)


def _premium(srv: Any, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{srv.url}{path}") as reply:  # the imitation's own answer
        return json.loads(reply.read())


async def _collect(h: Harness, want: type, count: int) -> list[Any]:
    got: list[Any] = []
    seen: list[Any] = []
    while len(got) < count:
        item = await asyncio.wait_for(h.published.get(), timeout=10)
        seen.append(item)
        if type(item) is want:
            got.append(item)
    h.seen = getattr(h, "seen", []) + seen  # type: ignore[attr-defined]
    return got


async def test_mark_index_and_funding_exact_funding_once_per_change(clocked, cache_dir) -> None:
    srv, now = clocked
    h = _harness(clocked, cache_dir)
    before = _premium(srv, "/fapi/v1/premiumIndex?symbol=BTCUSDT")
    for kind in SUBSCRIBE:
        _send(h, kind, PERP)

    marks = await _collect(h, MarkPriceUpdate, 5)
    now[0] = AFTER
    after = _premium(srv, "/fapi/v1/premiumIndex?symbol=BTCUSDT")
    # Drain to the first mark of the new clock, then a few more polls.
    late = await _collect(h, MarkPriceUpdate, 1)
    while late[-1].ts_event != AFTER * 1_000_000:
        late += await _collect(h, MarkPriceUpdate, 1)
    late += await _collect(h, MarkPriceUpdate, 4)
    seen = h.seen  # type: ignore[attr-defined]

    instrument = h.cache.instrument(PERP)
    tick = instrument.price_increment.as_decimal()
    mark = (Decimal(before["markPrice"]) / tick).to_integral_value() * tick
    assert {(m.value.as_decimal(), m.ts_event) for m in marks} == {(mark, BEFORE * 1_000_000)}
    assert all(m.value.precision == instrument.price_precision for m in marks + late)
    assert all(m.ts_event <= m.ts_init <= h.clock.timestamp_ns() for m in marks + late)
    index = [u for u in seen if type(u) is IndexPriceUpdate]
    assert (
        index[0].value.as_decimal()
        == (Decimal(before["indexPrice"]) / tick).to_integral_value() * tick
    )
    funding = [u for u in seen if type(u) is FundingRateUpdate]
    assert [(f.rate, f.next_funding_ns, f.ts_event, f.interval) for f in funding] == [
        (Decimal(before["lastFundingRate"]), before["nextFundingTime"] * 1_000_000,
         BEFORE * 1_000_000, None),
        (Decimal(after["lastFundingRate"]), after["nextFundingTime"] * 1_000_000,
         AFTER * 1_000_000, None),
    ]  # fmt: skip
    assert before["nextFundingTime"] == to_ms(datetime(2024, 3, 15, 8, tzinfo=UTC))
    assert after["nextFundingTime"] == to_ms(datetime(2024, 3, 15, 12, tzinfo=UTC))  # 4 h now
    assert h.logs.at("error") == []


async def test_one_request_per_poll_serves_all_three(clocked, cache_dir) -> None:
    srv, _ = clocked
    h = _harness(clocked, cache_dir)
    for kind in SUBSCRIBE:
        _send(h, kind, PERP)

    await _collect(h, MarkPriceUpdate, 6)
    polls = len([r for r in srv.requests if r.path.endswith("/premiumIndex")])
    seen = h.seen  # type: ignore[attr-defined]
    index = len([u for u in seen if type(u) is IndexPriceUpdate])

    assert polls in (6, 7)  # one per mark (the seventh may be in flight)
    assert index in (5, 6)  # each poll's index follows its mark
    assert len([u for u in seen if type(u) is FundingRateUpdate]) == 1


async def test_coin_m_perpetual_from_dapi(clocked, cache_dir) -> None:
    srv, _ = clocked
    h = _harness(clocked, cache_dir)
    before = _premium(srv, "/dapi/v1/premiumIndex?symbol=BTCUSD_PERP")
    _send(h, "funding_rates", INVERSE)

    (funding,) = await _collect(h, FundingRateUpdate, 1)

    assert funding.instrument_id == INVERSE
    assert funding.rate == Decimal(before["lastFundingRate"])
    assert funding.next_funding_ns == to_ms(datetime(2024, 3, 15, 8, tzinfo=UTC)) * 1_000_000
    assert {r.path for r in srv.requests if "premiumIndex" in r.path} == {"/dapi/v1/premiumIndex"}


async def test_unsubscribing_all_three_stops_the_poll(clocked, cache_dir) -> None:
    srv, _ = clocked
    h = _harness(clocked, cache_dir)
    for kind in SUBSCRIBE:
        _send(h, kind, PERP)
    await _collect(h, MarkPriceUpdate, 2)

    for kind in ("mark_prices", "index_prices"):
        _send(h, kind, PERP, unsubscribe=True)
    await asyncio.gather(*list(h.client._tasks))
    assert list(h.client._perp_polls()[PERP].kinds) == ["funding_rates"]
    _send(h, "funding_rates", PERP, unsubscribe=True)
    await asyncio.gather(*list(h.client._tasks))
    polls = len([r for r in srv.requests if r.path.endswith("/premiumIndex")])
    await asyncio.sleep(0.1)  # five poll periods: no request may follow (absence of events)

    assert h.client._perp_polls() == {}
    assert len([r for r in srv.requests if r.path.endswith("/premiumIndex")]) == polls
    assert h.client.subscribed_mark_prices() == []
    assert h.client.subscribed_funding_rates() == []


@pytest.mark.parametrize("kind", list(SUBSCRIBE))
async def test_spot_is_refused_with_one_error_before_any_request(
    clocked, cache_dir, kind: str
) -> None:
    srv, _ = clocked
    h = _harness(clocked, cache_dir)
    what = {"mark_prices": "mark prices", "index_prices": "index prices"}.get(kind, "funding")

    _send(h, kind, SPOT)
    await asyncio.gather(*list(h.client._tasks))
    _send(h, kind, SPOT, unsubscribe=True)
    await asyncio.gather(*list(h.client._tasks))

    assert [(lv, m) for lv, m in h.logs.records if lv != "debug"] == [
        (
            "error",
            f"Cannot subscribe to {what} for BTCUSDT.BINANCE: Binance publishes mark prices, "
            "index prices and funding rates for USD-M and COIN-M futures only, not SPOT; "
            "subscribe to the perpetual (e.g. BTCUSDT-PERP.BINANCE) with this client",
        )
    ]
    assert getattr(h.client, f"subscribed_{kind}")() == []
    assert [r for r in srv.requests if "premiumIndex" in r.path] == []


async def test_unlisted_perpetual_ends_the_subscription_with_one_error(clocked, cache_dir) -> None:
    srv, _ = clocked
    h = _harness(clocked, cache_dir)
    nope = InstrumentId.from_str("NOPEUSDT-PERP.BINANCE")

    _send(h, "mark_prices", nope)
    await asyncio.gather(*list(h.client._tasks))

    errors = h.logs.at("error")
    assert len(errors) == 1
    assert errors[0].startswith("Cannot subscribe to mark prices for NOPEUSDT-PERP.BINANCE: ")
    assert "NOPEUSDT" in errors[0]
    assert h.client.subscribed_mark_prices() == []
    assert h.client._perp_polls() == {}
    assert [r for r in srv.requests if "premiumIndex" in r.path] == []


async def test_a_failing_poll_warns_once_per_streak_and_recovers(clocked, cache_dir) -> None:
    srv, _ = clocked
    h = build_harness(srv, cache_dir, max_retries=1)  # one try a poll: each 503 fails it
    h.client.PERP_POLL_S = 0.02
    await h.client._instrument(PERP)  # exchangeInfo before the faults
    srv.faults.rest_5xx = 3
    _send(h, "mark_prices", PERP)

    (mark,) = await _collect(h, MarkPriceUpdate, 1)

    warnings = h.logs.at("warning")
    assert len(warnings) == 1
    assert warnings[0].startswith("BTCUSDT-PERP.BINANCE premiumIndex poll failed: ")
    assert "BTCUSDT-PERP.BINANCE premiumIndex poll recovered" in h.logs.at("info")
    assert len([r for r in srv.requests if r.path.endswith("/premiumIndex")]) == 4
    assert mark.ts_event == BEFORE * 1_000_000
