"""Binance REST klines: closed bars of a range, paginated, rate-limit aware.

Only closed bars are returned (the still-forming bar Binance includes is never served), every
row the source sent for the range is kept (duplicates and disorder are the manager's to count
and fix), and pages are planned up front from the range so a gap inside a page never ends the
fetch early. Every answer is decoded with the typed msgspec decoder (:mod:`.wire`) and validated
(:mod:`.validate`) before it is used: a page that fails is retried, then refused with
:class:`~nautilus_dsm.errors.InvalidResponse`, never passed on or trimmed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
import polars as pl

from nautilus_dsm.common import ENDPOINTS, Interval, MarketType, rest_base_url
from nautilus_dsm.common.datasets import DAPI_KLINE_WINDOW_MS, Dataset
from nautilus_dsm.common.times import iso_ms
from nautilus_dsm.dsm.bounds import REST_DEADLINE_S, REST_MAX_RETRIES, REST_TIMEOUT_S
from nautilus_dsm.dsm.exchange_clock import ExchangeClock, wall_clock_ms
from nautilus_dsm.dsm.http import HttpTransport, Reply, RetryableResponse, gather_or_cancel
from nautilus_dsm.dsm.planner import closed_end_ms, decided_without_now
from nautilus_dsm.dsm.retry_policy import RetryPolicy
from nautilus_dsm.dsm.schema import empty_frame, parse_rest_klines
from nautilus_dsm.dsm.validate import Expect
from nautilus_dsm.dsm.weight_gate import RequestLimiter, WeightGate
from nautilus_dsm.errors import InvalidInput, InvalidResponse, SourceError, UnknownSymbol

# GET /time: tries and total deadline per try (a measurement that fails falls back, see
# ExchangeClock, so it must cost a fetch little).
TIME_MAX_TRIES = 2
TIME_DEADLINE_S = 5.0


# --------------------------------------------------------------------------------------------
# Pure planning
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    """One klines request: bar open times in ``[start_ms, end_ms)``, at most ``bars`` of them."""

    start_ms: int
    end_ms: int
    bars: int

    @property
    def end_time_param(self) -> int:
        """Binance's inclusive ``endTime``: the page never reaches into the next page's bars."""
        return self.end_ms - 1


def plan_pages(interval: Interval, start_ms: int, end_ms: int, limit: int) -> list[Page]:
    """Split the bar open times in ``[start_ms, end_ms)`` into pages of at most ``limit`` bars."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1, was {limit}")
    pages: list[Page] = []
    if interval.is_month:
        opens = interval.open_times_ms(start_ms, end_ms)
        for i in range(0, len(opens), limit):
            chunk = opens[i : i + limit]
            pages.append(Page(chunk[0], interval.next_open_ms(chunk[-1]), len(chunk)))
        return pages
    size = interval.fixed_ms
    first = interval.ceil_ms(start_ms)
    total = interval.count(start_ms, end_ms)
    for i in range(0, total, limit):
        bars = min(limit, total - i)
        page_start = first + i * size
        pages.append(Page(page_start, page_start + bars * size, bars))
    return pages


# --------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RestStats:
    """
    What a REST client did so far.

    ``used_weight`` is the highest ``X-MBX-USED-WEIGHT-1M`` Binance reported,
    ``last_used_weight`` the latest (None before the first answer carrying it).
    """

    requests: int
    retries: int
    waited_s: float
    used_weight: int
    last_used_weight: int | None


def _decode_json(response: httpx.Response) -> Any:
    try:
        return msgspec.json.decode(response.content)
    except msgspec.DecodeError as exc:
        # A 200 with a cut or garbled body is a transport failure, not an answer.
        raise RetryableResponse(f"undecodable JSON body ({exc})") from exc


class BinanceRestClient:
    """
    Klines, first bar and exchangeInfo from one Binance market's REST API.

    Parameters
    ----------
    market_type : MarketType
        The market (``/api/v3``, ``/fapi/v1`` or ``/dapi/v1``).
    base_url_http : str, optional
        Host override (mirrors, testnets, the local imitation); Binance's host when None.
    timeout_s : float, default 10.0
        Inactivity timeout: the longest wait for a connection or for the next bytes.
    deadline_s : float, default 60.0
        Total deadline of one try (connect + headers + the whole body).
    max_retries : int, default 5
        Tries per request for 5xx, timeouts and connection resets.
    backoff_base_s, backoff_max_s : float
        Full-jitter exponential backoff between those tries.
    max_wait_s : float, default 120.0
        Longest total wait one request accepts on 429/418/weight gates.
    concurrency : int, default 4
        Requests in flight at once.
    verify_tls : bool, default True
        TLS certificate verification.
    clock : Callable[[], int], optional
        Wall-clock "now" in epoch ms deciding which bars are closed (system clock when None).
    limiter : RequestLimiter, optional
        A budget shared with other processes (a cluster's REST weight), taken per try.

    """

    def __init__(
        self,
        market_type: MarketType,
        base_url_http: str | None = None,
        *,
        timeout_s: float = REST_TIMEOUT_S,
        deadline_s: float = REST_DEADLINE_S,
        max_retries: int = REST_MAX_RETRIES,
        backoff_base_s: float = 0.25,
        backoff_max_s: float = 8.0,
        max_wait_s: float = 120.0,
        concurrency: int = 4,
        verify_tls: bool = True,
        clock: Callable[[], int] | None = None,
        limiter: RequestLimiter | None = None,
    ) -> None:
        self.market_type = MarketType.parse(market_type)
        self.base_url = rest_base_url(self.market_type, base_url_http)
        self.kline_limit = ENDPOINTS[self.market_type].kline_limit
        self._clock = clock or wall_clock_ms
        self._weight = WeightGate(ENDPOINTS[self.market_type].weight_per_minute)
        self._transport = HttpTransport(
            name=f"Binance {self.market_type.name} REST",
            policy=RetryPolicy(max_retries, backoff_base_s, backoff_max_s, max_wait_s),
            timeout_s=timeout_s,
            deadline_s=deadline_s,
            concurrency=concurrency,
            verify_tls=verify_tls,
            weight_gate=self._weight,
            limiter=limiter,
        )
        # GET /time has its own transport: its own circuit (a hung /time must not open the
        # klines' circuit of the same host), a short deadline and few tries, since a failed
        # measurement only falls back to the last offset. Counters are shared (stats).
        self._time_transport = HttpTransport(
            name=f"Binance {self.market_type.name} REST",
            policy=RetryPolicy(min(max_retries, TIME_MAX_TRIES), backoff_base_s, 1.0, 0.0),
            timeout_s=min(timeout_s, TIME_DEADLINE_S),
            deadline_s=min(deadline_s, TIME_DEADLINE_S),
            concurrency=1,
            verify_tls=verify_tls,
            weight_gate=self._weight,
            limiter=limiter,
        )
        self._time_transport.counters = self._transport.counters

    @property
    def stats(self) -> RestStats:
        """A snapshot of the request counters and the used weight."""
        counters = self._transport.counters
        return RestStats(
            requests=counters.requests,
            retries=counters.retries,
            waited_s=counters.waited_s,
            used_weight=self._weight.peak_used,
            last_used_weight=self._weight.last_used,
        )

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._transport.aclose()
        await self._time_transport.aclose()

    # -- klines --------------------------------------------------------------------------
    def page_limit(self, interval: Interval) -> int:
        """Most bars one page asks for: the market's limit, inside COIN-M's 200-day window."""
        if self.market_type is not MarketType.FUTURES_COIN:
            return self.kline_limit
        # dapi refuses a startTime..endTime window over 200 days (6 calendar months fit).
        per_window = 6 if interval.is_month else DAPI_KLINE_WINDOW_MS // interval.fixed_ms
        return max(1, min(self.kline_limit, per_window))

    async def klines(
        self,
        symbol: str,
        interval: Interval | str,
        start_ms: int,
        end_ms: int,
        *,
        now_ms: int | None = None,
        dataset: Dataset = Dataset.KLINES,
    ) -> pl.DataFrame:
        """
        Every closed bar with open time in ``[start_ms, end_ms)``, as Binance served them.

        Rows keep the source's order, duplicates included (FRAME_SCHEMA); the bar forming at
        ``now_ms`` (exchange time, see :meth:`exchange_clock`, when None) and later bars are
        never returned. ``dataset`` picks the kline-shaped endpoint (``markPriceKlines``,
        ``indexPriceKlines`` by pair, ``premiumIndexKlines``).
        """
        interval = Interval.parse(interval)
        interval.check_market(self.market_type)
        dataset = _kline_dataset(dataset, self.market_type)
        now = await self._exchange_now_ms(interval, end_ms) if now_ms is None else now_ms
        stop = closed_end_ms(interval, end_ms, now)
        pages = plan_pages(interval, start_ms, stop, self.page_limit(interval))
        if not pages:
            return empty_frame()
        frames = await gather_or_cancel(
            [self._fetch_page(symbol, interval, page, dataset) for page in pages]
        )
        frame = pl.concat([f for group in frames for f in group], how="vertical")
        opens = pl.col("open_time").dt.epoch("ms")
        return frame.filter((opens >= start_ms) & (opens < stop))

    async def _fetch_page(
        self, symbol: str, interval: Interval, page: Page, dataset: Dataset
    ) -> list[pl.DataFrame]:
        # One request per page normally; a full answer that stops short of the page end (the
        # source repeated rows) continues after the last open time, so no bar is dropped.
        # Every answer is validated inside [cursor, page end), so the cursor always advances.
        frames: list[pl.DataFrame] = []
        cursor = page.start_ms
        limit = self.page_limit(interval)
        while True:
            frame = await self._klines_request(
                symbol, interval, cursor, page.end_time_param, limit, dataset
            )
            frames.append(frame)
            if frame.height < limit:
                return frames
            last_open = int(frame.get_column("open_time").dt.epoch("ms").max())  # type: ignore[arg-type]
            if interval.next_open_ms(last_open) >= page.end_ms:
                return frames
            cursor = last_open + 1

    async def first_open_time(
        self,
        symbol: str,
        interval: Interval | str,
        start_ms: int,
        *,
        dataset: Dataset = Dataset.KLINES,
    ) -> int | None:
        """
        Open time (ms) of the first bar at or after ``start_ms``, None when there is none.

        One request; the manager uses it to find a listing date.
        """
        interval = Interval.parse(interval)
        interval.check_market(self.market_type)
        dataset = _kline_dataset(dataset, self.market_type)
        frame = await self._klines_request(symbol, interval, start_ms, None, 1, dataset)
        if frame.is_empty():
            return None
        return int(frame.get_column("open_time").dt.epoch("ms").min())  # type: ignore[arg-type]

    async def _klines_request(
        self,
        symbol: str,
        interval: Interval,
        start_ms: int,
        end_ms_inclusive: int | None,
        limit: int,
        dataset: Dataset = Dataset.KLINES,
    ) -> pl.DataFrame:
        """One klines request, decoded and validated (FRAME_SCHEMA, the source's row order).

        A 2xx answer that fails validation is retried by the transport like a garbled body
        (a proxy or a bad node may serve it once); when every try fails, the last refusal is
        raised as :class:`InvalidResponse` with the offending open times.
        """
        params: dict[str, str | int] = {
            dataset.symbol_param: dataset.rest_symbol(symbol),
            "interval": interval.value,
            "startTime": start_ms,
            "limit": limit,
        }
        if end_ms_inclusive is not None:
            params["endTime"] = end_ms_inclusive
        url = f"{self.base_url}/{dataset.rest_path}"
        end_ms = None if end_ms_inclusive is None else end_ms_inclusive + 1
        expect = Expect(
            interval,
            start_ms,
            end_ms,
            f"Binance {self.market_type.name} REST {httpx.URL(url).path} {symbol} "
            f"{interval.value} {iso_ms(start_ms)}..{'' if end_ms is None else iso_ms(end_ms)}",
        )
        refusals: list[InvalidResponse] = []

        def parse(response: httpx.Response) -> pl.DataFrame:
            try:
                return parse_rest_klines(response.content, expect)
            except msgspec.DecodeError as exc:
                # A 200 with a cut or garbled body is a transport failure, not an answer.
                raise RetryableResponse(f"undecodable JSON body ({exc})") from exc
            except InvalidResponse as exc:
                refusals.append(exc)
                raise RetryableResponse(str(exc)) from exc

        try:
            reply = await self._transport.get(url, params, parse)
        except SourceError as exc:
            last = refusals[-1] if refusals else None
            if last is None or str(last) not in str(exc) or isinstance(exc, InvalidResponse):
                raise
            raise InvalidResponse(
                f"{last} (after {len(refusals)} tries)", last.open_times_ms
            ) from exc
        self._raise_for_error(reply, symbol, interval)
        if reply.value is None:  # a 2xx always carries the parsed frame
            return empty_frame()
        return reply.value

    async def get_parsed(
        self,
        resource: str,
        params: dict[str, str | int],
        parse: Callable[[httpx.Response], Any],
        *,
        symbol: str | None = None,
    ) -> Any:
        """GET ``{market prefix}/{resource}`` under this client's retries, weight and circuit.

        ``parse`` runs on a 2xx answer (it may raise :class:`RetryableResponse`); an error
        answer raises like every request of this client (``UnknownSymbol`` for -1121...).
        """
        reply = await self._transport.get(f"{self.base_url}/{resource}", params, parse)
        self._raise_for_error(reply, symbol, None)
        return reply.value

    # -- exchangeInfo --------------------------------------------------------------------
    async def exchange_info(self, symbol: str | None = None) -> dict:
        """Fetch the decoded ``exchangeInfo`` of the market (of one symbol when given)."""
        params: dict[str, str | int] = {} if symbol is None else {"symbol": symbol}
        reply = await self._transport.get(f"{self.base_url}/exchangeInfo", params, _decode_json)
        self._raise_for_error(reply, symbol, None)
        if not isinstance(reply.value, dict):
            raise SourceError(
                f"Binance {self.market_type.name} {reply.response.url.path} answered "
                f"{type(reply.value).__name__} instead of an exchangeInfo object"
            )
        return reply.value

    # -- server time -----------------------------------------------------------------------
    _exchange_clock: ExchangeClock | None = None  # created on first use

    def exchange_clock(self) -> ExchangeClock:
        """Return the client's exchange clock (created on first use).

        It decides which bars are closed when ``klines`` gets no ``now_ms``.

        Measured only on the system clock: an injected ``clock`` is taken as exchange time.
        (The manager keeps its own per-market clock and always passes ``now_ms``.)
        """
        if self._exchange_clock is None:
            measured = self.server_time if self._clock is wall_clock_ms else None
            self._exchange_clock = ExchangeClock(self.market_type.name, measured, local=self._clock)
        return self._exchange_clock

    async def _exchange_now_ms(self, interval: Interval, end_ms: int) -> int:
        clock = self.exchange_clock()
        if decided_without_now(interval, end_ms, self._clock()):
            return clock.now_ms()  # a range closed long ago: no GET /time
        return await clock.ensure()

    async def server_time(self) -> int:
        """Binance's clock: ``serverTime`` (epoch ms) of ``GET /time`` (weight 1).

        Raises :class:`SourceError` when the host fails, ``InvalidResponse`` when the answer
        holds no integer ``serverTime``.
        """
        held, why = self._transport._gate_delay()
        if held > 0:  # a 429/418 hold covers /time too; waiting for it would stall the fetch
            raise SourceError(f"Binance {self.market_type.name} REST /time held: {why}")
        reply = await self._time_transport.get(f"{self.base_url}/time", None, _decode_json)
        self._raise_for_error(reply, None, None)
        value = reply.value.get("serverTime") if isinstance(reply.value, dict) else None
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise InvalidResponse(
                f"Binance {self.market_type.name} {reply.response.url.path} answered "
                f"{_snippet_of(reply.value)} without an integer serverTime; check base_url_http"
            )
        return value

    # -- errors ----------------------------------------------------------------------------
    def _raise_for_error(
        self, reply: Reply[Any], symbol: str | None, interval: Interval | None
    ) -> None:
        status = reply.status
        if 200 <= status < 300:
            return
        code, msg = _binance_error(reply.response)
        path = reply.response.url.path
        market = self.market_type.name
        if code == -1121:
            raise UnknownSymbol(
                f"{symbol!r} is not a Binance {market} symbol ({path} answered -1121 {msg!r}); "
                "check the spelling and the market type (e.g. BTCUSDT on SPOT or FUTURES_USDT, "
                "BTCUSD_PERP on FUTURES_COIN)"
            )
        if code == -1120:
            shown = interval.value if interval is not None else "?"
            raise InvalidInput(
                f"Binance {market} rejected interval {shown!r} ({path} answered -1120 {msg!r}); "
                "use an interval this market serves (1s is spot only)"
            )
        raise SourceError(
            f"Binance {market} {path} answered HTTP {status}"
            + (f" code {code}: {msg}" if code is not None else f": {msg}")
            + f" (symbol={symbol}); check the request parameters"
        )


def _kline_dataset(dataset: Dataset | str, market_type: MarketType) -> Dataset:
    """Return the kline-shaped dataset if the market publishes it, else raise InvalidInput."""
    dataset = Dataset.parse(dataset)
    if not dataset.is_kline:
        raise InvalidInput(
            f"dataset {dataset.value} is not kline-shaped; fetch it with "
            "DataSourceManager.fetch_funding_rates"
        )
    dataset.check_market(market_type)
    return dataset


def _binance_error(response: httpx.Response) -> tuple[int | None, str]:
    try:
        body = msgspec.json.decode(response.content)
    except msgspec.DecodeError:
        return None, response.text.strip()[:200]
    if isinstance(body, dict):
        code = body.get("code")
        return (code if isinstance(code, int) else None), str(body.get("msg", ""))
    return None, str(body)[:200]


def _snippet_of(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text[:limit] + ("..." if len(text) > limit else "")
