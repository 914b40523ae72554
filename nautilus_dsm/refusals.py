"""What ``DSMDataClient`` does not serve, refused with one error that names what to use instead.

The client serves EXTERNAL Binance kline bars (LAST price) and Binance instruments. Every other
subscription or request NautilusTrader may route to it (quotes, trades, order books,
instrument status and close, options, custom data) is refused here (mark, index and funding
prices of futures are served by :mod:`nautilus_dsm.perp_live`):

- a subscription logs exactly one error and records no subscription (so the data engine never
  sends an unsubscribe for it, and a later subscriber is told again);
- a request logs exactly one error and is answered once, empty: the requester never waits
  (``../shared/STYLE.md``, "Requests always answer");
- unsubscribing what was refused is a quiet no-op.

No ``NotImplementedError`` of the base class reaches the user. The texts are pure functions
(:func:`subscription_refusal`, :func:`request_refusal`, :func:`bar_type_refusal`) so the
routing guide (``docs/ROUTING.md``) and the tests can quote them; :class:`RefusalsMixin` wires
them into the ``LiveMarketDataClient`` hooks.
"""

from __future__ import annotations

from typing import Any

from nautilus_trader.model.data import BarType, DataType, OrderBookDeltas
from nautilus_trader.model.enums import AggregationSource, PriceType

SERVES_BARS = "DSMDataClient serves EXTERNAL Binance kline bars (LAST)"
SERVES = f"{SERVES_BARS} and Binance instruments"
BINANCE_CLIENT = 'NautilusTrader\'s BinanceDataClient (client_id=ClientId("BINANCE"))'
# Mark, index and funding prices are served live by PerpLiveMixin (nautilus_dsm/perp_live.py).
MARK_STREAM = "subscribe_mark_prices with this client (MarkPriceUpdate each second, futures)"
_NO_OPTIONS = "Binance options are not served (DSMDataClient covers spot, USD-M and COIN-M futures)"
_NO_BOOK_HISTORY = (
    f"Binance publishes no order book history; request a snapshot from {BINANCE_CLIENT} "
    "(request_order_book_snapshot)"
)

# kind -> what is refused, in the message
_WHAT = {
    "quote_ticks": "quote ticks",
    "trade_ticks": "trade ticks",
    "order_book_deltas": "order book deltas",
    "order_book_depth": "order book depth",
    "order_book_snapshot": "order book snapshot",
    "mark_prices": "mark prices",
    "index_prices": "index prices",
    "funding_rates": "funding rates",
    "instrument_status": "instrument status",
    "instrument_close": "instrument close prices",
    "option_greeks": "option greeks",
    "forward_prices": "forward prices",
}
# kind -> what to use instead, for a subscription
_SUBSCRIBE_INSTEAD = {
    "quote_ticks": f"subscribe to quote ticks with {BINANCE_CLIENT}",
    "trade_ticks": f"subscribe to trade ticks with {BINANCE_CLIENT}",
    "order_book_deltas": f"subscribe to order books with {BINANCE_CLIENT}",
    "order_book_depth": f"subscribe to order books with {BINANCE_CLIENT}",
    "instrument_status": (
        "NautilusTrader's BinanceDataClient does not publish instrument status either "
        "(instrument definitions: subscribe_instrument)"
    ),
    "instrument_close": (
        "Binance publishes no instrument close: use the close of {instrument}-1-DAY-LAST-EXTERNAL "
        "bars"
    ),
    "option_greeks": _NO_OPTIONS,
}
# kind -> what to use instead, for a request
_REQUEST_INSTEAD = {
    "quote_ticks": (
        f"Binance publishes no historical quotes; stream live ones with {BINANCE_CLIENT} "
        "(subscribe_quote_ticks)"
    ),
    "trade_ticks": f"request trade ticks from {BINANCE_CLIENT}",
    "order_book_deltas": _NO_BOOK_HISTORY,
    "order_book_depth": _NO_BOOK_HISTORY,
    "order_book_snapshot": f"request order book snapshots from {BINANCE_CLIENT}",
    "forward_prices": _NO_OPTIONS,
}
# Ticks feed INTERNAL bars: the data engine subscribes them when such a bar type reaches us.
_TICKS_NOTE = (
    "; INTERNAL bars are aggregated from ticks: route them there too, or aggregate DSM bars "
    "(e.g. {instrument}-5-MINUTE-LAST-INTERNAL@1-MINUTE-EXTERNAL with "
    'client_id=ClientId("{client_id}"))'
)


def subscription_refusal(kind: str, subject: Any, client_id: str = "DSM") -> str:
    """
    Return the one error for a subscription of ``kind`` (e.g. ``"quote_ticks"``).

    Parameters
    ----------
    kind : str
        A key of the refused kinds (``quote_ticks``, ``order_book_deltas``, ``mark_prices`` ...),
        or ``"custom"`` for custom data (``subject`` is then its ``DataType``).
    subject : InstrumentId or DataType
        What was subscribed.
    client_id : str, default "DSM"
        This client's id (named in the composite-bar example).

    Returns
    -------
    str

    """
    if kind == "custom":
        name = _type_name(subject)
        return (
            f"Cannot subscribe to {name}: {SERVES}, no custom data; subscribe to {name} with "
            "the client that publishes it (its client_id)"
        )
    instead = _SUBSCRIBE_INSTEAD[kind].format(instrument=subject)
    if kind in ("quote_ticks", "trade_ticks"):
        instead += _TICKS_NOTE.format(instrument=subject, client_id=client_id)
    return f"Cannot subscribe to {_WHAT[kind]} for {subject}: {SERVES}; {instead}"


def request_refusal(kind: str, subject: Any) -> str:
    """
    Return the one error for a request of ``kind``, which is then answered empty.

    Parameters
    ----------
    kind : str
        A key of the refused kinds (``quote_ticks``, ``order_book_snapshot``, ...), or
        ``"custom"`` for custom data (``subject`` is then its ``DataType``).
    subject : InstrumentId, DataType or str
        What was requested (the underlying for forward prices).

    Returns
    -------
    str

    """
    if kind == "custom":
        name = _type_name(subject)
        return (
            f"Cannot serve the {name} request: {SERVES}, no custom data; request {name} from "
            "the client that publishes it (its client_id); answering empty"
        )
    return (
        f"Cannot serve the {_WHAT[kind]} request for {subject}: {SERVES}; "
        f"{_REQUEST_INSTEAD[kind]}; answering empty"
    )


def bar_type_refusal(bar_type: BarType) -> str | None:
    """
    Return why this client does not serve ``bar_type``, or None when it does.

    It serves LAST prices aggregated EXTERNAL (by Binance) only: another price type or
    INTERNAL aggregation is refused.

    Parameters
    ----------
    bar_type : BarType
        The bar type of a subscription or request.

    Returns
    -------
    str or None

    """
    spec = bar_type.spec
    instrument = bar_type.instrument_id
    step = f"{instrument}-{str(spec).rsplit('-', 1)[0]}"  # e.g. BTCUSDT.BINANCE-1-MINUTE
    last = f"{step}-LAST-EXTERNAL"
    price = spec.price_type
    if price == PriceType.MARK:
        return (
            f"{bar_type} aggregates MARK prices; {SERVES_BARS}, not MARK bars (neither live "
            f"nor requested): use {last}; live mark prices: {MARK_STREAM}; MARK bar history: "
            "ingest it into a catalog (nautilus-dsm ingest --dataset mark)"
        )
    if price != PriceType.LAST:
        return (
            f"{bar_type} aggregates {price.name} prices; {SERVES_BARS}: use {last}; "
            f"{price.name} bars are aggregated from quote ticks, which Binance streams live "
            f"only: subscribe to {step}-{price.name}-INTERNAL with {BINANCE_CLIENT}"
        )
    if bar_type.aggregation_source != AggregationSource.EXTERNAL:
        return (
            f"{bar_type} is INTERNAL (aggregated by NautilusTrader); {SERVES_BARS}: use {last}, "
            f"or let NautilusTrader aggregate DSM bars "
            f"(e.g. {instrument}-5-MINUTE-LAST-INTERNAL@1-MINUTE-EXTERNAL)"
        )
    return None


def _type_name(data_type: DataType) -> str:
    return data_type.type.__name__


class RefusalsMixin:
    """
    The refusals wired into ``LiveMarketDataClient``'s hooks; put it before that base class.

    Subscriptions are refused in the public (synchronous) methods, before the base class
    records a subscription or schedules a task that would log "Subscribed ..."; requests in the
    coroutines, which answer empty through the base class's ``_handle_*``. The client provides
    ``_logger`` (its log seam), ``id`` and the ``_handle_*`` answers.
    """

    _logger: Any
    id: Any

    def _refuse_subscription(self, kind: str, subject: Any) -> None:
        self._logger.error(subscription_refusal(kind, subject, self.id.value))

    def _refuse_request(self, kind: str, subject: Any) -> None:
        self._logger.error(request_refusal(kind, subject))

    def _refuse_instrument_request(self, kind: str, handler: str, request: Any) -> None:
        # One error, then the base class's own empty answer for this kind of request.
        self._refuse_request(kind, request.instrument_id)
        getattr(self, handler)(
            request.instrument_id, [], request.id, request.start, request.end, request.params
        )

    def _ignore_unsubscribe(self, command: Any) -> None:
        self._logger.debug(f"Nothing to unsubscribe for {command}: never subscribed here")

    # -- subscriptions ----------------------------------------------------------------------------

    def subscribe(self, command: Any) -> None:
        """Refuse a custom-data subscription: subscribe with the client that publishes it."""
        self._refuse_subscription("custom", command.data_type)

    def subscribe_quote_ticks(self, command: Any) -> None:
        """Refuse a quote-tick subscription: stream quotes with ``BinanceDataClient``."""
        self._refuse_subscription("quote_ticks", command.instrument_id)

    def subscribe_trade_ticks(self, command: Any) -> None:
        """Refuse a trade-tick subscription: stream trades with ``BinanceDataClient``."""
        self._refuse_subscription("trade_ticks", command.instrument_id)

    def subscribe_order_book_deltas(self, command: Any) -> None:
        """Refuse an order book subscription: stream books with ``BinanceDataClient``."""
        self._refuse_subscription("order_book_deltas", command.instrument_id)

    def subscribe_order_book_depth(self, command: Any) -> None:
        """Refuse an order book depth subscription: use ``BinanceDataClient``."""
        self._refuse_subscription("order_book_depth", command.instrument_id)

    def subscribe_instrument_status(self, command: Any) -> None:
        """Refuse an instrument-status subscription: no Binance client publishes it."""
        self._refuse_subscription("instrument_status", command.instrument_id)

    def subscribe_instrument_close(self, command: Any) -> None:
        """Refuse an instrument-close subscription: use the close of 1-DAY EXTERNAL bars."""
        self._refuse_subscription("instrument_close", command.instrument_id)

    def subscribe_option_greeks(self, command: Any) -> None:
        """Refuse an option-greeks subscription: Binance options are not served."""
        self._refuse_subscription("option_greeks", command.instrument_id)

    def subscribe_bars(self, command: Any) -> None:
        """
        Subscribe to EXTERNAL bars; refuse an INTERNAL bar type with one error.

        Parameters
        ----------
        command : SubscribeBars
            The subscription. An INTERNAL bar type is aggregated by NautilusTrader's data
            engine, from ticks or from EXTERNAL DSM bars (e.g.
            ``BTCUSDT.BINANCE-5-MINUTE-LAST-INTERNAL@1-MINUTE-EXTERNAL``), not by this client.

        """
        # The base class raises on INTERNAL bar types before any hook runs; in a node the data
        # engine aggregates those itself (from ticks, refused above, or from EXTERNAL bars).
        if command.bar_type.aggregation_source != AggregationSource.EXTERNAL:
            self._logger.error(
                f"Cannot subscribe to {command.bar_type}: {bar_type_refusal(command.bar_type)}"
            )
            return
        super().subscribe_bars(command)  # type: ignore[misc]

    # -- unsubscriptions (nothing was ever recorded) -----------------------------------------------

    def unsubscribe(self, command: Any) -> None:
        """Do nothing (debug log): a custom-data subscription is refused, never recorded."""
        self._ignore_unsubscribe(command)

    def unsubscribe_quote_ticks(self, command: Any) -> None:
        """Do nothing (debug log): a quote-tick subscription is refused, never recorded."""
        self._ignore_unsubscribe(command)

    def unsubscribe_trade_ticks(self, command: Any) -> None:
        """Do nothing (debug log): a trade-tick subscription is refused, never recorded."""
        self._ignore_unsubscribe(command)

    def unsubscribe_order_book_deltas(self, command: Any) -> None:
        """Do nothing (debug log): an order book subscription is refused, never recorded."""
        self._ignore_unsubscribe(command)

    def unsubscribe_order_book_depth(self, command: Any) -> None:
        """Do nothing (debug log): an order book depth subscription is refused, never recorded."""
        self._ignore_unsubscribe(command)

    def unsubscribe_instrument_status(self, command: Any) -> None:
        """Do nothing (debug log): an instrument-status subscription is refused, never recorded."""
        self._ignore_unsubscribe(command)

    def unsubscribe_instrument_close(self, command: Any) -> None:
        """Do nothing (debug log): an instrument-close subscription is refused, never recorded."""
        self._ignore_unsubscribe(command)

    def unsubscribe_option_greeks(self, command: Any) -> None:
        """Do nothing (debug log): an option-greeks subscription is refused, never recorded."""
        self._ignore_unsubscribe(command)

    # -- requests: one error, then the empty answer ----------------------------------------------

    async def _request(self, request: Any) -> None:
        self._refuse_request("custom", request.data_type)
        self._handle_data_response(  # type: ignore[attr-defined]
            request.data_type, [], request.id, request.start, request.end, request.params
        )

    async def _request_quote_ticks(self, request: Any) -> None:
        self._refuse_instrument_request("quote_ticks", "_handle_quote_ticks", request)

    async def _request_trade_ticks(self, request: Any) -> None:
        self._refuse_instrument_request("trade_ticks", "_handle_trade_ticks", request)

    async def _request_order_book_deltas(self, request: Any) -> None:
        self._refuse_instrument_request("order_book_deltas", "_handle_order_book_deltas", request)

    async def _request_order_book_depth(self, request: Any) -> None:
        self._refuse_instrument_request("order_book_depth", "_handle_order_book_depths", request)

    async def _request_order_book_snapshot(self, request: Any) -> None:
        self._refuse_request("order_book_snapshot", request.instrument_id)
        # As NautilusTrader's Binance client answers a snapshot: OrderBookDeltas, no range.
        data_type = DataType(OrderBookDeltas, metadata={"instrument_id": request.instrument_id})
        self._handle_data_response(  # type: ignore[attr-defined]
            data_type, [], request.id, None, None, request.params
        )

    async def _request_forward_prices(self, request: Any) -> None:
        self._refuse_request("forward_prices", request.underlying)
        self._handle_forward_prices([], request.id, request.params)  # type: ignore[attr-defined]
