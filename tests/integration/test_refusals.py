"""What DSMDataClient does not serve: one error naming what it serves and what to use instead.

Every unsupported subscription logs exactly one error and records no subscription; every
unsupported request logs exactly one error and is answered once, empty (the requester never
waits forever); unsubscribing what was refused is a quiet no-op. No ``NotImplementedError``
reaches the user. The client is the harness of ``conftest`` (real LiveClock,
MessageBus, Cache; the client's log recorded).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest
from nautilus_trader.core.data import Data
from nautilus_trader.core.uuid import UUID4
from nautilus_trader.data.messages import (
    DataResponse,
    RequestBars,
    RequestData,
    RequestForwardPrices,
    RequestOrderBookDeltas,
    RequestOrderBookDepth,
    RequestOrderBookSnapshot,
    RequestQuoteTicks,
    RequestTradeTicks,
    SubscribeBars,
    SubscribeData,
    SubscribeInstrumentClose,
    SubscribeInstrumentStatus,
    SubscribeOptionGreeks,
    SubscribeOrderBook,
    SubscribeQuoteTicks,
    SubscribeTradeTicks,
    UnsubscribeData,
    UnsubscribeFundingRates,
    UnsubscribeIndexPrices,
    UnsubscribeInstrumentClose,
    UnsubscribeInstrumentStatus,
    UnsubscribeMarkPrices,
    UnsubscribeOptionGreeks,
    UnsubscribeOrderBook,
    UnsubscribeQuoteTicks,
    UnsubscribeTradeTicks,
)
from nautilus_trader.model.data import BarType, DataType, OrderBookDelta, OrderBookDepth10
from nautilus_trader.model.enums import BookType
from nautilus_trader.model.identifiers import ClientId, InstrumentId

from nautilus_dsm.data import BINANCE_VENUE

pytestmark = pytest.mark.timeout(60)

CLIENT_ID = ClientId("DSM")
SPOT = InstrumentId.from_str("BTCUSDT.BINANCE")
PERP = InstrumentId.from_str("BTCUSDT-PERP.BINANCE")
START = pd.Timestamp(datetime(2024, 1, 2, tzinfo=UTC))
END = pd.Timestamp(datetime(2024, 1, 2, 1, tzinfo=UTC))

SERVES = "DSMDataClient serves EXTERNAL Binance kline bars (LAST) and Binance instruments"
BINANCE = 'NautilusTrader\'s BinanceDataClient (client_id=ClientId("BINANCE"))'
MARK_STREAM = "subscribe_mark_prices with this client (MarkPriceUpdate each second, futures)"
TICKS_NOTE = (
    "; INTERNAL bars are aggregated from ticks: route them there too, or aggregate DSM bars "
    '(e.g. BTCUSDT.BINANCE-5-MINUTE-LAST-INTERNAL@1-MINUTE-EXTERNAL with client_id=ClientId("DSM"))'
)
NO_OPTIONS = "Binance options are not served (DSMDataClient covers spot, USD-M and COIN-M futures)"


class ExampleData(Data):
    """A custom data type nobody in this client publishes."""


CUSTOM = DataType(ExampleData)


def _cmd(cls: type, instrument_id: InstrumentId = SPOT, **extra: Any) -> Any:
    return cls(
        instrument_id=instrument_id,
        client_id=CLIENT_ID,
        venue=BINANCE_VENUE,
        command_id=UUID4(),
        ts_init=0,
        **extra,
    )


def _book(cls: type, data_type: type) -> Any:
    return _cmd(cls, book_data_type=data_type, book_type=BookType.L2_MBP)


def _custom(cls: type) -> Any:
    return cls(
        data_type=CUSTOM,
        instrument_id=None,
        client_id=CLIENT_ID,
        venue=None,
        command_id=UUID4(),
        ts_init=0,
    )


def _req(cls: type, instrument_id: InstrumentId = SPOT, **extra: Any) -> Any:
    return cls(
        instrument_id=instrument_id,
        start=START,
        end=END,
        limit=0,
        client_id=CLIENT_ID,
        venue=BINANCE_VENUE,
        callback=None,
        request_id=UUID4(),
        ts_init=0,
        params={},
        **extra,
    )


# (subscribe method, command factory, the one error, the client's subscription list)
SUBSCRIPTIONS: dict[str, tuple[str, Callable[[], Any], str, str]] = {
    "quote_ticks": (
        "subscribe_quote_ticks",
        lambda: _cmd(SubscribeQuoteTicks),
        f"Cannot subscribe to quote ticks for BTCUSDT.BINANCE: {SERVES}; subscribe to quote "
        f"ticks with {BINANCE}{TICKS_NOTE}",
        "subscribed_quote_ticks",
    ),
    "trade_ticks": (
        "subscribe_trade_ticks",
        lambda: _cmd(SubscribeTradeTicks),
        f"Cannot subscribe to trade ticks for BTCUSDT.BINANCE: {SERVES}; subscribe to trade "
        f"ticks with {BINANCE}{TICKS_NOTE}",
        "subscribed_trade_ticks",
    ),
    "order_book_deltas": (
        "subscribe_order_book_deltas",
        lambda: _book(SubscribeOrderBook, OrderBookDelta),
        f"Cannot subscribe to order book deltas for BTCUSDT.BINANCE: {SERVES}; subscribe to "
        f"order books with {BINANCE}",
        "subscribed_order_book_deltas",
    ),
    "order_book_depth": (
        "subscribe_order_book_depth",
        lambda: _book(SubscribeOrderBook, OrderBookDepth10),
        f"Cannot subscribe to order book depth for BTCUSDT.BINANCE: {SERVES}; subscribe to "
        f"order books with {BINANCE}",
        "subscribed_order_book_depth",
    ),
    "instrument_status": (
        "subscribe_instrument_status",
        lambda: _cmd(SubscribeInstrumentStatus),
        f"Cannot subscribe to instrument status for BTCUSDT.BINANCE: {SERVES}; "
        "NautilusTrader's BinanceDataClient does not publish instrument status either "
        "(instrument definitions: subscribe_instrument)",
        "subscribed_instrument_status",
    ),
    "instrument_close": (
        "subscribe_instrument_close",
        lambda: _cmd(SubscribeInstrumentClose),
        f"Cannot subscribe to instrument close prices for BTCUSDT.BINANCE: {SERVES}; Binance "
        "publishes no instrument close: use the close of "
        "BTCUSDT.BINANCE-1-DAY-LAST-EXTERNAL bars",
        "subscribed_instrument_close",
    ),
    "option_greeks": (
        "subscribe_option_greeks",
        lambda: _cmd(SubscribeOptionGreeks),
        f"Cannot subscribe to option greeks for BTCUSDT.BINANCE: {SERVES}; {NO_OPTIONS}",
        "subscribed_option_greeks",
    ),
    "custom_data": (
        "subscribe",
        lambda: _custom(SubscribeData),
        f"Cannot subscribe to ExampleData: {SERVES}, no custom data; subscribe to ExampleData "
        "with the client that publishes it (its client_id)",
        "subscribed_custom_data",
    ),
}


@pytest.mark.parametrize("case", list(SUBSCRIPTIONS))
async def test_unsupported_subscription_logs_one_error_and_records_nothing(
    make_harness, case: str
) -> None:
    method, command, message, subscribed = SUBSCRIPTIONS[case]
    h = make_harness()

    getattr(h.client, method)(command())
    await asyncio.gather(*list(h.client._tasks))

    assert h.logs.records == [("error", message)]
    assert getattr(h.client, subscribed)() == []
    assert h.published.empty()


UNSUBSCRIPTIONS: dict[str, tuple[str, Callable[[], Any]]] = {
    "quote_ticks": ("unsubscribe_quote_ticks", lambda: _cmd(UnsubscribeQuoteTicks)),
    "trade_ticks": ("unsubscribe_trade_ticks", lambda: _cmd(UnsubscribeTradeTicks)),
    "order_book_deltas": (
        "unsubscribe_order_book_deltas",
        lambda: _cmd(UnsubscribeOrderBook, book_data_type=OrderBookDelta),
    ),
    "order_book_depth": (
        "unsubscribe_order_book_depth",
        lambda: _cmd(UnsubscribeOrderBook, book_data_type=OrderBookDepth10),
    ),
    "mark_prices": ("unsubscribe_mark_prices", lambda: _cmd(UnsubscribeMarkPrices, PERP)),
    "index_prices": ("unsubscribe_index_prices", lambda: _cmd(UnsubscribeIndexPrices, PERP)),
    "funding_rates": ("unsubscribe_funding_rates", lambda: _cmd(UnsubscribeFundingRates, PERP)),
    "instrument_status": (
        "unsubscribe_instrument_status",
        lambda: _cmd(UnsubscribeInstrumentStatus),
    ),
    "instrument_close": ("unsubscribe_instrument_close", lambda: _cmd(UnsubscribeInstrumentClose)),
    "option_greeks": ("unsubscribe_option_greeks", lambda: _cmd(UnsubscribeOptionGreeks)),
    "custom_data": ("unsubscribe", lambda: _custom(UnsubscribeData)),
}


@pytest.mark.parametrize("case", list(UNSUBSCRIPTIONS))
async def test_unsubscribing_what_was_refused_is_a_quiet_no_op(make_harness, case: str) -> None:
    method, command = UNSUBSCRIPTIONS[case]
    h = make_harness()

    getattr(h.client, method)(command())
    await asyncio.gather(*list(h.client._tasks))  # no task raising NotImplementedError

    assert [lv for lv, _ in h.logs.records if lv != "debug"] == []


# (request method, request factory, the one error)
REQUESTS: dict[str, tuple[str, Callable[[], Any], str]] = {
    "quote_ticks": (
        "request_quote_ticks",
        lambda: _req(RequestQuoteTicks),
        f"Cannot serve the quote ticks request for BTCUSDT.BINANCE: {SERVES}; Binance "
        f"publishes no historical quotes; stream live ones with {BINANCE} "
        "(subscribe_quote_ticks); answering empty",
    ),
    "trade_ticks": (
        "request_trade_ticks",
        lambda: _req(RequestTradeTicks),
        f"Cannot serve the trade ticks request for BTCUSDT.BINANCE: {SERVES}; request trade "
        f"ticks from {BINANCE}; answering empty",
    ),
    "order_book_deltas": (
        "request_order_book_deltas",
        lambda: _req(RequestOrderBookDeltas),
        f"Cannot serve the order book deltas request for BTCUSDT.BINANCE: {SERVES}; Binance "
        f"publishes no order book history; request a snapshot from {BINANCE} "
        "(request_order_book_snapshot); answering empty",
    ),
    "order_book_depth": (
        "request_order_book_depth",
        lambda: _req(RequestOrderBookDepth, depth=10),
        f"Cannot serve the order book depth request for BTCUSDT.BINANCE: {SERVES}; Binance "
        f"publishes no order book history; request a snapshot from {BINANCE} "
        "(request_order_book_snapshot); answering empty",
    ),
    "order_book_snapshot": (
        "request_order_book_snapshot",
        lambda: RequestOrderBookSnapshot(
            instrument_id=SPOT,
            limit=10,
            client_id=CLIENT_ID,
            venue=BINANCE_VENUE,
            callback=None,
            request_id=UUID4(),
            ts_init=0,
            params={},
        ),
        f"Cannot serve the order book snapshot request for BTCUSDT.BINANCE: {SERVES}; request "
        f"order book snapshots from {BINANCE}; answering empty",
    ),
    "forward_prices": (
        "request_forward_prices",
        lambda: RequestForwardPrices(
            underlying="BTC",
            client_id=CLIENT_ID,
            venue=BINANCE_VENUE,
            callback=None,
            request_id=UUID4(),
            ts_init=0,
            params={},
        ),
        f"Cannot serve the forward prices request for BTC: {SERVES}; {NO_OPTIONS}; answering empty",
    ),
    "custom_data": (
        "request",
        lambda: RequestData(
            data_type=CUSTOM,
            instrument_id=None,
            start=START,
            end=END,
            limit=0,
            client_id=CLIENT_ID,
            venue=None,
            callback=None,
            request_id=UUID4(),
            ts_init=0,
            params={},
        ),
        f"Cannot serve the ExampleData request: {SERVES}, no custom data; request ExampleData "
        "from the client that publishes it (its client_id); answering empty",
    ),
}


async def _answer(h: Any, method: str, request: Any) -> DataResponse:
    getattr(h.client, method)(request)
    response = await asyncio.wait_for(h.responses.get(), timeout=10)
    await asyncio.gather(*list(h.client._tasks))
    assert h.responses.empty()  # answered exactly once
    assert response.correlation_id == request.id
    return response


@pytest.mark.parametrize("case", list(REQUESTS))
async def test_unsupported_request_logs_one_error_and_answers_empty(
    make_harness, case: str
) -> None:
    method, request, message = REQUESTS[case]
    h = make_harness()

    response = await _answer(h, method, request())

    assert response.data == []
    assert h.logs.records == [("error", message)]


# ---------------------------------------------------------------------------------------------
# Bar types the client does not serve
# ---------------------------------------------------------------------------------------------

MID = BarType.from_str("BTCUSDT.BINANCE-1-MINUTE-MID-EXTERNAL")
MARK = BarType.from_str("BTCUSDT-PERP.BINANCE-1-MINUTE-MARK-EXTERNAL")
INTERNAL = BarType.from_str("BTCUSDT.BINANCE-1-MINUTE-LAST-INTERNAL")
BAR_REFUSALS = {
    MID: (
        "BTCUSDT.BINANCE-1-MINUTE-MID-EXTERNAL aggregates MID prices; DSMDataClient serves "
        "EXTERNAL Binance kline bars (LAST): use BTCUSDT.BINANCE-1-MINUTE-LAST-EXTERNAL; MID "
        "bars are aggregated from quote ticks, which Binance streams live only: subscribe to "
        f"BTCUSDT.BINANCE-1-MINUTE-MID-INTERNAL with {BINANCE}"
    ),
    MARK: (
        "BTCUSDT-PERP.BINANCE-1-MINUTE-MARK-EXTERNAL aggregates MARK prices; DSMDataClient "
        "serves EXTERNAL Binance kline bars (LAST), not MARK bars (neither live nor requested): "
        f"use BTCUSDT-PERP.BINANCE-1-MINUTE-LAST-EXTERNAL; live mark prices: {MARK_STREAM}; "
        "MARK bar history: ingest it into a catalog (nautilus-dsm ingest --dataset mark)"
    ),
    INTERNAL: (
        "BTCUSDT.BINANCE-1-MINUTE-LAST-INTERNAL is INTERNAL (aggregated by NautilusTrader); "
        "DSMDataClient serves EXTERNAL Binance kline bars (LAST): use "
        "BTCUSDT.BINANCE-1-MINUTE-LAST-EXTERNAL, or let NautilusTrader aggregate DSM bars "
        "(e.g. BTCUSDT.BINANCE-5-MINUTE-LAST-INTERNAL@1-MINUTE-EXTERNAL)"
    ),
}


@pytest.mark.parametrize("bar_type", list(BAR_REFUSALS), ids=str)
async def test_request_of_an_unserved_bar_type_answers_empty_with_one_error(
    make_harness, bar_type: BarType
) -> None:
    h = make_harness()
    request = RequestBars(
        bar_type=bar_type,
        start=START,
        end=END,
        limit=0,
        client_id=CLIENT_ID,
        venue=BINANCE_VENUE,
        callback=None,
        request_id=UUID4(),
        ts_init=0,
        params={},
    )

    response = await _answer(h, "request_bars", request)

    assert response.data == []
    assert h.logs.at("error") == [f"Cannot serve {bar_type} bars: {BAR_REFUSALS[bar_type]}"]
    assert h.logs.at("warning") == h.logs.at("exception") == []
    assert h.srv.requests == []  # refused before any I/O


@pytest.mark.parametrize("bar_type", list(BAR_REFUSALS), ids=str)
async def test_subscription_to_an_unserved_bar_type_logs_one_error(
    make_harness, bar_type: BarType
) -> None:
    h = make_harness()
    command = SubscribeBars(
        bar_type=bar_type,
        client_id=CLIENT_ID,
        venue=BINANCE_VENUE,
        command_id=UUID4(),
        ts_init=0,
    )

    h.client.subscribe_bars(command)
    await asyncio.gather(*list(h.client._tasks))

    assert h.logs.at("error") == [f"Cannot subscribe to {bar_type}: {BAR_REFUSALS[bar_type]}"]
    assert h.logs.at("warning") == h.logs.at("exception") == []
    assert h.client.subscribed_bars() == []
    assert h.srv.requests == []
