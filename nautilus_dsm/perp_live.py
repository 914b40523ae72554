"""Live mark prices, index prices and funding rates of Binance perpetuals, polled over REST.

``subscribe_mark_prices`` (``MarkPriceUpdate``), ``subscribe_index_prices``
(``IndexPriceUpdate``) and ``subscribe_funding_rates`` (``FundingRateUpdate``) of USD-M and
COIN-M futures are served from ``GET /fapi/v1/premiumIndex`` / ``/dapi/v1/premiumIndex``: one
request per second per subscribed symbol serves all three types of that symbol, through the
market's REST client (its weight gate, retries and circuit: weight 1 a request). The
``<symbol>@markPrice@1s`` websocket stream is not used (yet): the websocket imitation and the
kline stream connections carry klines only.

- ``ts_event`` is the answer's ``time`` (Binance's clock), ``ts_init`` the node clock at receipt;
- mark and index prices are rounded half-even to the instrument's tick, at its precision;
- a ``FundingRateUpdate`` is published when the rate or the next funding time changes, not every
  second (the first answer after subscribing publishes once); its rate is the wire string as a
  ``Decimal``, ``next_funding_ns`` the answer's ``nextFundingTime``, ``interval`` None (the
  answer does not state it; ``request_funding_rates`` does);
- an answer without a mark or index price (empty string) publishes nothing for it, never a
  made-up value; a failed poll logs one warning per failure streak and the next second retries.

Spot instruments are refused with one error (Binance publishes these for futures only) and
record no subscription; unsubscribing what was never subscribed is a quiet no-op.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import msgspec
from nautilus_trader.model.data import FundingRateUpdate, IndexPriceUpdate, MarkPriceUpdate
from nautilus_trader.model.identifiers import InstrumentId
from nautilus_trader.model.instruments import Instrument
from nautilus_trader.model.objects import Price

from nautilus_dsm.common import resolve_instrument
from nautilus_dsm.errors import DSMError, InvalidResponse
from nautilus_dsm.perp_data import _tick_rounded

__all__ = ["PERP_KINDS", "PerpLiveMixin", "PremiumIndex", "perp_refusal", "premium_updates"]

PERP_KINDS = ("mark_prices", "index_prices", "funding_rates")
_WHAT = {"mark_prices": "mark prices", "index_prices": "index prices", "funding_rates": "funding"}
NS_PER_MS = 1_000_000


class PremiumIndex(msgspec.Struct):
    """One ``GET /fapi/v1/premiumIndex`` (or ``/dapi/v1``) answer for a symbol."""

    symbol: str
    markPrice: str
    indexPrice: str
    lastFundingRate: str
    nextFundingTime: int
    time: int


_DECODER = msgspec.json.Decoder(PremiumIndex | list[PremiumIndex])


def parse_premium_index(body: bytes, symbol: str) -> PremiumIndex:
    """
    Decode a ``premiumIndex`` answer (an object, or COIN-M's list) and pick ``symbol``'s row.

    Raises
    ------
    InvalidResponse
        When the body is not the schema or holds no row of ``symbol``.

    """
    try:
        value = _DECODER.decode(body)
    except msgspec.DecodeError as e:
        raise InvalidResponse(
            f"Binance premiumIndex of {symbol} answered {body[:120]!r}: {e}; check base_url_http"
        ) from e
    rows = value if isinstance(value, list) else [value]
    for row in rows:
        if row.symbol == symbol:
            return row
    raise InvalidResponse(f"Binance premiumIndex answered no row of {symbol}; check the symbol")


def perp_refusal(kind: str, instrument_id: InstrumentId, market_type: Any) -> str | None:
    """
    Return the one error for subscribing ``kind`` of ``instrument_id``, or None when served.

    Parameters
    ----------
    kind : str
        One of :data:`PERP_KINDS`.
    instrument_id : InstrumentId
        What was subscribed.
    market_type : MarketType or None
        The client's market (None: resolved from the id).

    Returns
    -------
    str or None

    """
    what = _WHAT[kind]
    try:
        resolved = resolve_instrument(instrument_id.value, market_type)
    except DSMError as e:
        return f"Cannot subscribe to {what} for {instrument_id}: {e}"
    if resolved.market_type.is_futures:
        return None
    return (
        f"Cannot subscribe to {what} for {instrument_id}: Binance publishes mark prices, index "
        "prices and funding rates for USD-M and COIN-M futures only, not SPOT; subscribe to "
        f"the perpetual (e.g. {resolved.symbol}-PERP.BINANCE) with this client"
    )


def _price(value: str, instrument: Instrument) -> Price | None:
    if not value:  # Binance has no price yet: publish nothing rather than invent one
        return None
    tick = instrument.price_increment.as_decimal()
    return Price.from_str(f"{_tick_rounded(Decimal(value), tick):.{instrument.price_precision}f}")


def premium_updates(
    row: PremiumIndex,
    instrument: Instrument,
    kinds: set[str],
    last_funding: tuple[str, int] | None,
    ts_init: int,
) -> list[Any]:
    """
    Return the updates of one ``premiumIndex`` answer for the subscribed ``kinds``.

    A ``FundingRateUpdate`` only when ``(rate, next funding time)`` differs from
    ``last_funding`` (the last one published).
    """
    ts_event = row.time * NS_PER_MS
    out: list[Any] = []
    mark = _price(row.markPrice, instrument) if "mark_prices" in kinds else None
    if mark is not None:
        out.append(MarkPriceUpdate(instrument.id, mark, ts_event, ts_init))
    index = _price(row.indexPrice, instrument) if "index_prices" in kinds else None
    if index is not None:
        out.append(IndexPriceUpdate(instrument.id, index, ts_event, ts_init))
    key = (row.lastFundingRate, row.nextFundingTime)
    if "funding_rates" in kinds and row.lastFundingRate and key != last_funding:
        next_ns = row.nextFundingTime * NS_PER_MS or None
        rate = Decimal(row.lastFundingRate)
        out.append(FundingRateUpdate(instrument.id, rate, ts_event, ts_init, None, next_ns))
    return out


@dataclass
class _Poll:
    kinds: set[str] = field(default_factory=set)
    last_funding: tuple[str, int] | None = None
    task: asyncio.Task[None] | None = None


class PerpLiveMixin:
    """Serve mark / index / funding subscriptions by polling ``premiumIndex`` (see module)."""

    PERP_POLL_S = 1.0  # Binance's mark price stream updates every second
    _logger: Any
    _clock: Any
    _dsm: Any
    _market_type: Any
    _loop: Any

    def _perp_polls(self) -> dict[InstrumentId, _Poll]:
        polls = self.__dict__.get("_perp_poll_map")
        if polls is None:
            polls = self.__dict__["_perp_poll_map"] = {}
        return polls

    def _perp_subscribe(self, kind: str, command: Any) -> None:
        why = perp_refusal(kind, command.instrument_id, self._market_type)
        if why is not None:
            self._logger.error(why)
            return
        getattr(super(), f"subscribe_{kind}")(command)

    def _perp_unsubscribe(self, kind: str, command: Any) -> None:
        poll = self._perp_polls().get(command.instrument_id)
        if poll is None or kind not in poll.kinds:
            self._logger.debug(f"Nothing to unsubscribe for {command}: never subscribed here")
            return
        getattr(super(), f"unsubscribe_{kind}")(command)

    def subscribe_mark_prices(self, command: Any) -> None:
        """Subscribe to ``MarkPriceUpdate`` of a futures instrument (spot refused)."""
        self._perp_subscribe("mark_prices", command)

    def subscribe_index_prices(self, command: Any) -> None:
        """Subscribe to ``IndexPriceUpdate`` of a futures instrument (spot refused)."""
        self._perp_subscribe("index_prices", command)

    def subscribe_funding_rates(self, command: Any) -> None:
        """Subscribe to ``FundingRateUpdate`` of a futures instrument (spot refused)."""
        self._perp_subscribe("funding_rates", command)

    def unsubscribe_mark_prices(self, command: Any) -> None:
        """Unsubscribe mark prices (a quiet no-op when never subscribed)."""
        self._perp_unsubscribe("mark_prices", command)

    def unsubscribe_index_prices(self, command: Any) -> None:
        """Unsubscribe index prices (a quiet no-op when never subscribed)."""
        self._perp_unsubscribe("index_prices", command)

    def unsubscribe_funding_rates(self, command: Any) -> None:
        """Unsubscribe funding rates (a quiet no-op when never subscribed)."""
        self._perp_unsubscribe("funding_rates", command)

    async def _subscribe_mark_prices(self, command: Any) -> None:
        await self._perp_add("mark_prices", command.instrument_id)

    async def _subscribe_index_prices(self, command: Any) -> None:
        await self._perp_add("index_prices", command.instrument_id)

    async def _subscribe_funding_rates(self, command: Any) -> None:
        await self._perp_add("funding_rates", command.instrument_id)

    async def _unsubscribe_mark_prices(self, command: Any) -> None:
        await self._perp_remove("mark_prices", command.instrument_id)

    async def _unsubscribe_index_prices(self, command: Any) -> None:
        await self._perp_remove("index_prices", command.instrument_id)

    async def _unsubscribe_funding_rates(self, command: Any) -> None:
        await self._perp_remove("funding_rates", command.instrument_id)

    # -- polls ------------------------------------------------------------------------------

    async def _perp_add(self, kind: str, instrument_id: InstrumentId) -> None:
        polls = self._perp_polls()
        poll = polls.setdefault(instrument_id, _Poll())
        poll.kinds.add(kind)
        if kind == "funding_rates":
            poll.last_funding = None  # a new subscriber gets the current rate once
        if poll.task is None:
            try:
                instrument = await self._instrument(instrument_id)  # type: ignore[attr-defined]
            except DSMError as e:  # not listed: end the subscription rather than never deliver
                self._logger.error(f"Cannot subscribe to {_WHAT[kind]} for {instrument_id}: {e}")
                getattr(self, f"_remove_subscription_{kind}")(instrument_id)
                await self._perp_remove(kind, instrument_id)
                return
            if poll.task is None and poll.kinds:
                poll.task = self._loop.create_task(self._perp_run(poll, instrument))

    async def _perp_remove(self, kind: str, instrument_id: InstrumentId) -> None:
        polls = self._perp_polls()
        poll = polls.get(instrument_id)
        if poll is None:
            return
        poll.kinds.discard(kind)
        if not poll.kinds:
            del polls[instrument_id]
            await _cancel(poll.task)

    async def _stop_perp_polls(self) -> None:
        """Cancel every poll (on disconnect)."""
        polls = self._perp_polls()
        tasks = [p.task for p in polls.values()]
        polls.clear()
        for task in tasks:
            await _cancel(task)

    async def _perp_run(self, poll: _Poll, instrument: Instrument) -> None:
        resolved = resolve_instrument(instrument.id.value, self._market_type)
        client = self._dsm.rest_client(resolved.market_type)
        symbol = resolved.symbol
        failing = False
        while poll.kinds:
            started = time.monotonic()
            try:
                row = await client.get_parsed(
                    "premiumIndex",
                    {"symbol": symbol},
                    lambda r: parse_premium_index(r.content, symbol),
                    symbol=symbol,
                )
            except DSMError as e:
                if not failing:
                    self._logger.warning(f"{instrument.id} premiumIndex poll failed: {e}")
                failing = True
            except Exception as e:  # a bug must not end the subscription silently
                if not failing:
                    self._logger.exception(f"{instrument.id} premiumIndex poll failed", e)
                failing = True
            else:
                if failing:
                    self._logger.info(f"{instrument.id} premiumIndex poll recovered")
                failing = False
                self._perp_publish(poll, row, instrument)
            await asyncio.sleep(max(0.0, self.PERP_POLL_S - (time.monotonic() - started)))

    def _perp_publish(self, poll: _Poll, row: PremiumIndex, instrument: Instrument) -> None:
        ts_init = self._clock.timestamp_ns()
        updates = premium_updates(row, instrument, poll.kinds, poll.last_funding, ts_init)
        for update in updates:
            if isinstance(update, FundingRateUpdate):
                poll.last_funding = (row.lastFundingRate, row.nextFundingTime)
            self._handle_data(update)  # type: ignore[attr-defined]


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is None or task.done():
        return
    task.cancel()
    await asyncio.wait([task])  # waits for the end without swallowing our own cancellation
