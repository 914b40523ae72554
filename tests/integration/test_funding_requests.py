"""``DSMDataClient.request_funding_rates``: funding history through the engine, answered once.

The harness of ``tests/integration/conftest.py`` (real LiveClock, MessageBus, Cache, the imitation over
HTTP). Funding subscriptions: ``tests/integration/test_perp_live.py``.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pandas as pd
import pytest
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.data.messages import DataResponse, RequestFundingRates
from nautilus_trader.model.identifiers import ClientId, InstrumentId

from nautilus_dsm.common import MarketType, to_ms
from nautilus_dsm.data import BINANCE_VENUE

pytestmark = pytest.mark.timeout(60)
PERP = InstrumentId.from_str("BTCUSDT-PERP.BINANCE")
INVERSE = InstrumentId.from_str("BTCUSD-PERP.BINANCE")
START, END = datetime(2024, 3, 14, tzinfo=UTC), datetime(2024, 3, 16, tzinfo=UTC)


def _request(instrument_id: InstrumentId, limit: int = 0) -> RequestFundingRates:
    return RequestFundingRates(
        instrument_id=instrument_id,
        start=pd.Timestamp(START),
        end=pd.Timestamp(END),
        limit=limit,
        client_id=ClientId("DSM"),
        venue=BINANCE_VENUE,
        callback=None,
        request_id=UUID4(),
        ts_init=0,
        params={},
    )


async def _answer(h: Any, request: RequestFundingRates) -> DataResponse:
    h.client.request_funding_rates(request)
    response = await asyncio.wait_for(h.responses.get(), timeout=20)
    await asyncio.gather(*list(h.client._tasks))
    assert h.responses.empty()  # answered exactly once
    assert response.correlation_id == request.id
    return response


async def test_request_funding_rates_exact_across_the_interval_change(make_harness) -> None:
    h = make_harness()

    response = await _answer(h, _request(PERP))

    expected = h.srv.datasets.expected_funding(
        MarketType.FUTURES_USDT, "BTCUSDT", to_ms(START), to_ms(END)
    )
    updates = response.data
    assert [u.ts_event for u in updates] == [b * 1_000_000 for b, *_ in expected]
    assert [u.rate for u in updates] == [Decimal(r) for *_, r, _ in expected]
    assert [u.interval for u in updates] == [480] * 4 + [240] * 5
    assert updates[3].next_funding_ns == updates[4].ts_event
    assert all(u.instrument_id == PERP for u in updates)


async def test_request_funding_rates_limit_keeps_the_latest(make_harness) -> None:
    h = make_harness()

    response = await _answer(h, _request(INVERSE, limit=2))

    assert [u.ts_event for u in response.data] == [
        to_ms(datetime(2024, 3, 15, 8, tzinfo=UTC)) * 1_000_000,
        to_ms(datetime(2024, 3, 15, 16, tzinfo=UTC)) * 1_000_000,
    ]


async def test_request_funding_rates_of_spot_answers_empty_with_one_error(make_harness) -> None:
    h = make_harness()

    response = await _answer(h, _request(InstrumentId.from_str("BTCUSDT.BINANCE")))

    assert response.data == []
    assert [level for level, _ in h.logs.records] == ["error"]
    assert "exists only on the futures markets" in h.logs.records[0][1]
    assert [r for r in h.srv.requests if "fundingRate" in r.path] == []
