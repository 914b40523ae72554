"""``request_funding_rates`` of ``DSMDataClient``: funding history through the DSM engine.

The request's instrument must be a futures perpetual (refused, answered empty, before any I/O
otherwise); its range ``[start, end)`` (``end`` None: now; ``start`` None: ``end`` minus
:data:`DEFAULT_LOOKBACK_NS`) is fetched with ``DataSourceManager.fetch_funding_rates`` (cache ->
Vision monthly ``fundingRate`` -> REST) and answered once with ``FundingRateUpdate`` objects
(:func:`~nautilus_dsm.perp_data.frame_to_funding_updates`: exact rates, ``interval`` in minutes,
``next_funding_ns``, ``ts_event`` the boundary); a ``limit`` keeps the latest ``limit`` rows.
Any failure answers empty with one logged error: a request never hangs.

Live funding *subscriptions* (``subscribe_funding_rates``, mark and index prices) are served by
:mod:`nautilus_dsm.perp_live` (REST ``premiumIndex``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from nautilus_dsm.common import from_ms, resolve_instrument
from nautilus_dsm.common.datasets import Dataset
from nautilus_dsm.errors import DSMError

__all__ = ["DEFAULT_LOOKBACK_NS", "FundingRequestsMixin"]

DEFAULT_LOOKBACK_NS = 30 * 86_400 * 1_000_000_000  # 30 days when the request has no start


class FundingRequestsMixin:
    """Answer ``RequestFundingRates`` from the DSM engine (mixed into ``DSMDataClient``)."""

    _dsm: Any
    _logger: Any
    _market_type: Any

    async def _request_funding_rates(self, request: Any) -> None:
        updates: list[Any] = []
        try:
            updates = await self._funding_for_request(request)
        except asyncio.CancelledError:
            self._logger.warning(f"Request for {request.instrument_id} funding cancelled")
            updates = []
            raise
        except DSMError as e:  # invalid input, spot instrument, source down
            self._logger.error(f"Cannot serve {request.instrument_id} funding rates: {e}")
            updates = []
        except Exception as e:
            self._logger.exception(f"Request for {request.instrument_id} funding failed", e)
            updates = []
        finally:
            self._handle_funding_rates(  # type: ignore[attr-defined]
                request.instrument_id, updates, request.id, request.start, request.end,
                request.params,
            )  # fmt: skip

    async def _funding_for_request(self, request: Any) -> list[Any]:
        from nautilus_dsm.perp_data import frame_to_funding_updates
        from nautilus_dsm.requests import timestamp_ns

        instrument_id = request.instrument_id
        resolved = resolve_instrument(instrument_id.value, self._market_type)
        Dataset.FUNDING_RATES.check_market(resolved.market_type)  # before any I/O
        end_ns = timestamp_ns(request.end) or time.time_ns()
        start_ns = timestamp_ns(request.start) or end_ns - DEFAULT_LOOKBACK_NS
        result = await self._dsm.fetch_funding_rates(
            resolved.instrument_id, from_ms(start_ns // 1_000_000), from_ms(-(-end_ns // 1_000_000))
        )
        for warning in result.report.warnings:
            self._logger.warning(f"{instrument_id} funding: {warning}")
        updates = frame_to_funding_updates(result.frame, instrument_id)
        limit = getattr(request, "limit", 0) or 0
        if limit and len(updates) > limit:
            updates = updates[-limit:]
        self._logger.info(f"{instrument_id}: {result.report.summary()}; answering {len(updates)}")
        return updates
