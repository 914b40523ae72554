"""Binance's used-weight budget: pause new requests before the minute's limit, not after.

Every REST answer carries ``X-MBX-USED-WEIGHT-1M``, the weight used in the current wall-clock
minute; past ~90% of the market's limit (``ENDPOINTS[market].weight_per_minute``) the gate holds
new requests until the next minute instead of walking into a 429. Pure: "now" is passed in.
"""

from __future__ import annotations

from typing import Protocol

from nautilus_dsm.constants import MINUTE_MS, SECOND_MS

WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
# The share of the per-minute limit past which new requests wait for the next minute.
WEIGHT_FRACTION = 0.9


class WeightGate:
    """
    Pause new requests once the used weight of the current minute passes ~90% of the limit.

    Binance counts ``X-MBX-USED-WEIGHT-1M`` per wall-clock minute; the gate holds requests
    until the next minute window instead of walking into a 429.
    """

    def __init__(self, limit: int, fraction: float = WEIGHT_FRACTION) -> None:
        self.limit = limit
        self.threshold = limit * fraction
        self.last_used: int | None = None
        self.peak_used = 0
        self._window_start_ms = 0

    def observe(self, used: int, now_ms: int) -> None:
        """Record the used weight Binance reported at ``now_ms``."""
        window = now_ms - now_ms % MINUTE_MS
        self.last_used = used
        self.peak_used = max(self.peak_used, used)
        self._window_start_ms = window

    def pause_s(self, now_ms: int) -> float:
        """Seconds a new request must wait at ``now_ms`` (0 when the budget allows it)."""
        if self.last_used is None or self.last_used <= self.threshold:
            return 0.0
        window_end = self._window_start_ms + MINUTE_MS
        return max(0.0, (window_end - now_ms) / SECOND_MS)


def parse_used_weight(value: str | None) -> int | None:
    """Parse the integer of an ``X-MBX-USED-WEIGHT-1M`` header; None when absent or malformed."""
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


class RequestLimiter(Protocol):
    """A budget shared beyond this process (e.g. across a cluster's workers on one IP).

    :class:`~nautilus_dsm.dsm.http.HttpTransport` awaits :meth:`acquire` before each REST
    try; one call is one request's share of the budget. Vision downloads take none.
    """

    async def acquire(self) -> None:
        """Wait until one more request fits the shared budget."""
        ...
