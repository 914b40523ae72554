"""Binance REST funding history: ``GET /fapi/v1/fundingRate`` / ``/dapi/v1/fundingRate``.

Paged by time: each request asks ``[cursor, end)`` with ``limit=1000`` (Binance's maximum) and
a full page moves the cursor past its last ``fundingTime``, so no event is skipped however the
interval changes. The endpoint has its own limit, 500 requests per 5 minutes per IP, beside the
request weight: :class:`RequestWindow` keeps the client under it (it waits, never overshoots).
Every page is decoded and validated (:func:`~nautilus_dsm.dsm.funding_schema.parse_rest_funding`)
before use; a bad one is retried by the transport, then refused with ``InvalidResponse``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

import httpx
import polars as pl

from nautilus_dsm.common.datasets import Dataset
from nautilus_dsm.common.times import iso_ms
from nautilus_dsm.dsm.funding_schema import empty_funding, parse_rest_funding
from nautilus_dsm.dsm.http import RetryableResponse
from nautilus_dsm.dsm.rest import BinanceRestClient
from nautilus_dsm.errors import InvalidResponse

__all__ = ["FUNDING_LIMIT", "FUNDING_WINDOW", "FundingRest", "RequestWindow"]

FUNDING_LIMIT = 1000  # most rows one fundingRate page returns
FUNDING_WINDOW = (500, 300.0)  # 500 requests per 5 minutes, per IP
_FAR_FUTURE_MS = 4_102_444_800_000  # 2100-01-01: the open end of a "first event" probe


class RequestWindow:
    """
    At most ``limit`` requests in any ``window_s`` seconds (a sliding window).

    Parameters
    ----------
    limit : int
        Requests allowed per window.
    window_s : float
        The window's length in seconds.
    clock : Callable[[], float], optional
        Monotonic seconds (``time.monotonic`` when None; tests inject one).

    """

    def __init__(
        self, limit: int, window_s: float, clock: Callable[[], float] | None = None
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock or time.monotonic
        self._sent: deque[float] = deque()
        self._lock = asyncio.Lock()
        self.waited_s = 0.0

    def delay_s(self) -> float:
        """Seconds to wait before the next request may go (0 when it may go now). Pure."""
        now = self._clock()
        while self._sent and now - self._sent[0] >= self.window_s:
            self._sent.popleft()
        if len(self._sent) < self.limit:
            return 0.0
        return self._sent[0] + self.window_s - now

    def record(self) -> None:
        """Count one request sent now."""
        self._sent.append(self._clock())

    async def acquire(self) -> None:
        """Wait until a request fits the window, then count it."""
        async with self._lock:
            while (delay := self.delay_s()) > 0:
                self.waited_s += delay
                await asyncio.sleep(delay)
            self.record()


class FundingRest:
    """
    Funding history of one market through its REST client, paged by time.

    Parameters
    ----------
    client : BinanceRestClient
        The market's REST client (its retries, weight gate and circuit apply).
    window : RequestWindow, optional
        The fundingRate request window (500 / 5 min when None); share one per host.

    """

    def __init__(self, client: BinanceRestClient, window: RequestWindow | None = None) -> None:
        Dataset.FUNDING_RATES.check_market(client.market_type)
        self.client = client
        self.window = window if window is not None else RequestWindow(*FUNDING_WINDOW)
        self.requests = 0

    async def funding(self, symbol: str, start_ms: int, end_ms: int) -> pl.DataFrame:
        """
        Return every funding event with ``fundingTime`` in ``[start_ms, end_ms)``.

        FUNDING_SCHEMA rows in the source's order, intervals null (REST does not state them).
        """
        frames: list[pl.DataFrame] = []
        cursor = start_ms
        while cursor < end_ms:
            page = await self._page(symbol, cursor, end_ms)
            frames.append(page)
            if page.height < FUNDING_LIMIT:
                break
            last = int(page.get_column("calc_time").dt.epoch("ms").max())  # type: ignore[arg-type]
            cursor = last + 1
        frames = [f for f in frames if f.height]
        return pl.concat(frames) if frames else empty_funding()

    async def first_event_ms(self, symbol: str) -> int | None:
        """Return the boundary of the symbol's first funding event ever (one request), or None."""
        frame = await self._page(symbol, 0, _FAR_FUTURE_MS, limit=1, open_end=True)
        if frame.height == 0:
            return None
        return int(frame.get_column("funding_time").dt.epoch("ms").min())  # type: ignore[arg-type]

    async def _page(
        self,
        symbol: str,
        start_ms: int,
        end_ms: int,
        *,
        limit: int = FUNDING_LIMIT,
        open_end: bool = False,
    ) -> pl.DataFrame:
        path = f"{self.client.base_url}/fundingRate"
        what = (
            f"Binance {self.client.market_type.name} REST {httpx.URL(path).path} {symbol} "
            f"{iso_ms(start_ms)}..{iso_ms(end_ms)}"
        )

        def parse(response: httpx.Response) -> pl.DataFrame:
            try:
                return parse_rest_funding(response.content, what, symbol, start_ms, end_ms)
            except InvalidResponse as exc:
                raise RetryableResponse(str(exc)) from exc

        params: dict[str, str | int] = {"symbol": symbol, "startTime": start_ms, "limit": limit}
        if not open_end:
            params["endTime"] = end_ms - 1  # inclusive on Binance's side
        await self.window.acquire()
        self.requests += 1
        frame = await self.client.get_parsed("fundingRate", params, parse, symbol=symbol)
        return frame if frame is not None else empty_funding()
