"""One REST budget for a whole cluster: a Dask ``Semaphore`` held for a window per request.

Binance counts REST weight per IP, and the workers of one machine (or of machines behind one
NAT) share one IP: eight workers each pacing itself to the limit get the IP banned. The
cluster-wide limiter is a named ``distributed.Semaphore`` with ``requests`` leases; each REST
try takes one lease and gives it back ``window_s`` seconds later, so at most ``requests``
tries start in any window of ``window_s`` seconds across every worker (a sliding-window
limit). A lease held by a worker that dies expires with the scheduler's lease timeout, so the
budget is not lost. Vision downloads take no lease (Binance Vision is a file host without
request weight). :func:`requests_per_minute` turns a market's weight limit into leases.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Any

from nautilus_dsm.common import ENDPOINTS, MarketType
from nautilus_dsm.errors import InvalidInput

# Weight of one klines page at the market's page size (Binance's published weights: spot
# 2 for limit 1000; futures 10 for limits above 1000).
KLINES_PAGE_WEIGHT = {
    MarketType.SPOT: 2,
    MarketType.FUTURES_USDT: 10,
    MarketType.FUTURES_COIN: 10,
}
DEFAULT_SHARE = 0.8  # of the IP's weight per minute; the rest for anything else on that IP
_processes_semaphores: dict[str, Any] = {}
_lock = threading.Lock()


def requests_per_minute(market: MarketType | str, share: float = DEFAULT_SHARE) -> int:
    """Klines requests a minute that fit ``share`` of the market's weight limit (at least 1)."""
    m = MarketType.parse(market)
    if not 0 < share <= 1:
        raise InvalidInput(f"weight share {share!r} must be in (0, 1]; pass e.g. 0.8")
    return max(1, int(ENDPOINTS[m].weight_per_minute * share) // KLINES_PAGE_WEIGHT[m])


@dataclass(frozen=True)
class ClusterWeightLimiter:
    """
    A sliding-window REST budget shared by every worker of a Dask cluster.

    Picklable: send it to the workers with the task; each worker process binds the named
    semaphore once (:meth:`bind`) and takes one lease per REST try.

    Parameters
    ----------
    name : str
        The semaphore's name on the scheduler (one per IP / budget).
    requests : int
        Tries allowed in any window.
    window_s : float, default 60
        The window (Binance counts weight per minute).

    """

    name: str
    requests: int
    window_s: float = 60.0

    def __post_init__(self) -> None:
        if self.requests < 1 or not self.window_s > 0:
            raise InvalidInput(
                f"REST budget {self.requests} requests per {self.window_s} s must be >= 1 "
                "request in a window > 0 s; pass e.g. --rest-requests-per-minute 190"
            )

    def bind(self) -> BoundLimiter:
        """Return the limiter of this worker (or client) process, its semaphore created once."""
        from distributed import Semaphore

        with _lock:
            semaphore = _processes_semaphores.get(self.name)
            if semaphore is None:
                semaphore = Semaphore(max_leases=self.requests, name=self.name)
                _processes_semaphores[self.name] = semaphore
        return BoundLimiter(self, semaphore)


class BoundLimiter:
    """A :class:`~nautilus_dsm.dsm.weight_gate.RequestLimiter` on a Dask semaphore."""

    def __init__(self, spec: ClusterWeightLimiter, semaphore: Any) -> None:
        self.spec = spec
        self._semaphore = semaphore
        self.granted: list[float] = []  # wall-clock times of the leases taken (reports, tests)

    async def acquire(self) -> None:
        """Wait for a lease; it is given back ``window_s`` later, whatever the request does."""
        # The semaphore's blocking API talks to the scheduler from this worker's own loop.
        await asyncio.to_thread(self._semaphore.acquire)
        self.granted.append(time.time())
        timer = threading.Timer(self.spec.window_s, self._release)
        timer.daemon = True
        timer.start()

    def _release(self) -> None:
        try:
            self._semaphore.release()
        except Exception:  # an expired lease (scheduler timeout) is already free
            return
