"""The per-host circuit breaker of the HTTP sources (pure: no I/O, an injectable clock).

A host that keeps timing out or resetting connections is skipped after a few consecutive
transport failures (fail fast, so its periods go to the next source at once), then probed with
one request per cooldown, the cooldown doubling while the probes fail, so a long-running node
notices within :data:`BREAKER_MAX_COOLDOWN_S` that the host is back.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# Consecutive transport failures (timeouts, resets, refused connections) that open a host's
# circuit, and its first cooldown (doubling on each failed probe up to the maximum).
BREAKER_THRESHOLD = 3
BREAKER_COOLDOWN_S = 2.0
# Capped low: a live node notices a recovered host within 15 s of its return.
BREAKER_MAX_COOLDOWN_S = 15.0


class CircuitBreaker:
    """
    Consecutive-failure circuit of one host: closed, open (fail fast), half-open (one probe).

    ``threshold`` consecutive transport failures open it for ``cooldown_s``; after that one
    request is let through as a probe: a success closes the circuit, a failure opens it again
    for twice the previous cooldown (up to ``max_cooldown_s``), so a host that stays down costs
    one request per cooldown while a long-running node still notices when it is back.
    """

    def __init__(
        self,
        threshold: int = BREAKER_THRESHOLD,
        cooldown_s: float = BREAKER_COOLDOWN_S,
        max_cooldown_s: float = BREAKER_MAX_COOLDOWN_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if threshold < 1:
            raise ValueError(f"threshold must be >= 1, was {threshold}")
        self.threshold = threshold
        self.base_cooldown_s = cooldown_s
        self.max_cooldown_s = max(cooldown_s, max_cooldown_s)
        self.cooldown_s = cooldown_s
        self.failures = 0
        self.last_error = ""
        self.open_until: float | None = None
        self.probing = False
        self._clock = clock

    @property
    def is_open(self) -> bool:
        """True unless the circuit is closed (it is open or half-open)."""
        return self.open_until is not None

    def refusal(self) -> str | None:
        """Why a request may not go now (open, cooldown running), without taking the probe."""
        if self.open_until is None:
            return None
        remaining = self.open_until - self._clock()
        return f"skipped for {remaining:.1f} s more" if remaining > 0 else None

    def admit(self) -> str | None:
        """None when a request may go (it may be the half-open probe), else why it may not."""
        if self.open_until is None:
            return None
        remaining = self.open_until - self._clock()
        if remaining > 0:
            return f"skipped for {remaining:.1f} s more"
        if self.probing:
            return "skipped while one probe request is in flight"
        self.probing = True
        return None

    def success(self) -> bool:
        """Record that the host answered; return True when that closed an open circuit."""
        was_open = self.open_until is not None
        self.failures = 0
        self.open_until = None
        self.probing = False
        self.cooldown_s = self.base_cooldown_s
        return was_open

    def failure(self, error: str) -> str | None:
        """Record a transport failure; return ``"opened"``, ``"reopened"`` or None.

        ``"reopened"`` means a failed probe.
        """
        self.failures += 1
        self.last_error = error
        if self.probing:
            self.probing = False
            self.cooldown_s = min(self.cooldown_s * 2, self.max_cooldown_s)
            self.open_until = self._clock() + self.cooldown_s
            return "reopened"
        if self.open_until is None and self.failures >= self.threshold:
            self.open_until = self._clock() + self.cooldown_s
            return "opened"
        return None

    def abandon(self) -> None:
        """Release a probe that ended without an answer either way (cancelled): let another go."""
        self.probing = False
