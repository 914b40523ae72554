"""Pure parts of ``nautilus_dsm.perp_live``: the ``premiumIndex`` schema and the updates."""

from __future__ import annotations

from decimal import Decimal

import pytest
from nautilus_trader.model.data import FundingRateUpdate, IndexPriceUpdate, MarkPriceUpdate
from nautilus_trader.test_kit.providers import TestInstrumentProvider

from nautilus_dsm.errors import InvalidResponse
from nautilus_dsm.perp_live import PremiumIndex, parse_premium_index, premium_updates

ROW = (
    b'{"symbol":"BTCUSDT","markPrice":"42010.26000001","indexPrice":"42005.35",'
    b'"estimatedSettlePrice":"42001.1","lastFundingRate":"0.00012345","interestRate":"0.0001",'
    b'"nextFundingTime":1710489600000,"time":1710489599500}'
)
ALL = {"mark_prices", "index_prices", "funding_rates"}


@pytest.fixture
def perp():
    return TestInstrumentProvider.btcusdt_perp_binance()


def test_parse_object_and_coin_m_list() -> None:
    row = parse_premium_index(ROW, "BTCUSDT")
    assert (row.markPrice, row.lastFundingRate, row.nextFundingTime, row.time) == (
        "42010.26000001", "0.00012345", 1710489600000, 1710489599500,
    )  # fmt: skip
    other = ROW.replace(b"BTCUSDT", b"BTCUSD_PERP")
    listed = parse_premium_index(b"[" + ROW + b"," + other + b"]", "BTCUSD_PERP")
    assert listed.symbol == "BTCUSD_PERP"


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (b'{"symbol":"BTCUSDT"}', "Binance premiumIndex of BTCUSDT answered"),
        (b"[]", "Binance premiumIndex answered no row of BTCUSDT; check the symbol"),
    ],
)
def test_parse_refuses_a_bad_answer(body: bytes, text: str) -> None:
    with pytest.raises(InvalidResponse, match=text.replace("(", r"\(")):
        parse_premium_index(body, "BTCUSDT")


def test_updates_exact_at_the_instrument_precision(perp) -> None:
    row = parse_premium_index(ROW, "BTCUSDT")
    mark, index, funding = premium_updates(row, perp, ALL, None, 7)

    assert type(mark) is MarkPriceUpdate and type(index) is IndexPriceUpdate
    assert (str(mark.value), str(index.value)) == ("42010.3", "42005.4")  # tick 0.1, half-even
    assert (mark.ts_event, mark.ts_init) == (1710489599500_000_000, 7)
    assert type(funding) is FundingRateUpdate
    assert (funding.rate, funding.next_funding_ns, funding.interval) == (
        Decimal("0.00012345"), 1710489600000_000_000, None,
    )  # fmt: skip


def test_funding_only_on_change_and_no_invented_prices(perp) -> None:
    row = parse_premium_index(ROW, "BTCUSDT")
    same = premium_updates(row, perp, ALL, ("0.00012345", 1710489600000), 7)
    assert [type(u) for u in same] == [MarkPriceUpdate, IndexPriceUpdate]
    empty = PremiumIndex("BTCUSDT", "", "", "0.00012345", 1710489600000, 1)
    assert premium_updates(empty, perp, {"mark_prices", "index_prices"}, None, 7) == []
    moved = premium_updates(row, perp, {"funding_rates"}, ("0.00012345", 1710460800000), 7)
    assert [type(u) for u in moved] == [FundingRateUpdate]
