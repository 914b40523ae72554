"""Which clients hold a shared data-source manager: a refcount, so the last one closes it.

Clients built by the factory share one manager per configuration. Each client records its hold
when it is built (and again when it reconnects) and drops it on disconnect; the client whose
release leaves no holder closes the manager's connections, so a shared manager is never closed
under another client's in-flight request. Engine-sharing bookkeeping only: no NautilusTrader, no
I/O, thread-safe.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nautilus_dsm.dsm.manager import DataSourceManager

__all__ = ["acquire_dsm", "dsm_holders", "release_dsm"]

_holders: dict[DataSourceManager, int] = {}
_holders_lock = threading.Lock()


def acquire_dsm(dsm: DataSourceManager) -> None:
    """Record one more client using ``dsm`` (a client calls it when built or reconnected)."""
    with _holders_lock:
        _holders[dsm] = _holders.get(dsm, 0) + 1


def release_dsm(dsm: DataSourceManager) -> bool:
    """
    Drop one client's hold on ``dsm``.

    Returns
    -------
    bool
        True when no client holds it any more: the caller then closes its connections.

    """
    with _holders_lock:
        remaining = _holders.get(dsm, 0) - 1
        if remaining > 0:
            _holders[dsm] = remaining
            return False
        _holders.pop(dsm, None)
        return True


def dsm_holders(dsm: DataSourceManager) -> int:
    """Return how many clients currently hold ``dsm`` (0 when none)."""
    with _holders_lock:
        return _holders.get(dsm, 0)
