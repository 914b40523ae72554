"""Errors raised by nautilus-dsm.

Every message names the offending input and the fix, so a user can act on it without reading
the source.
"""

from __future__ import annotations


class DSMError(Exception):
    """Base class of every nautilus-dsm error."""


class InvalidInput(DSMError, ValueError):
    """A request that cannot be served as given; raised before any I/O."""


class MarketTypeMismatch(InvalidInput):
    """The instrument belongs to another market than the one requested or configured."""


class UnknownSymbol(InvalidInput):
    """Binance does not list the symbol on this market (exchangeInfo or error -1121)."""


class SourceError(DSMError):
    """A data source failed after its bounded retries."""


class RateLimited(SourceError):
    """Binance answered 429/418 and the wait it asked for exceeds what we may wait."""


class ChecksumMismatch(SourceError):
    """A Vision file whose SHA-256 differs from its published ``.CHECKSUM``."""


class DataUnavailable(SourceError):
    """No source (cache, Vision, REST) could provide a period that should exist."""


class QualityBelowThreshold(DSMError):
    """The fetched data is less complete than ``min_completeness``.

    The fetched result (frame and report) is attached, so nothing is lost when the policy raises.
    """

    def __init__(self, message: str, result: object | None = None) -> None:
        super().__init__(message)
        self.result = result


class InvalidResponse(SourceError):
    """A source answered, but its payload fails validation (wrong shape, values or times).

    A source failure of that response: it is retried, then the next source is asked; it is never
    cached. ``open_times_ms`` holds the open times of the offending rows when they are known, so
    a live stream can skip exactly those bars and go on.
    """

    def __init__(self, message: str, open_times_ms: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.open_times_ms = tuple(open_times_ms)


class CircuitOpen(SourceError):
    """A host failed several requests in a row (timeouts, resets, refused connections).

    Requests to it fail fast, without I/O, until its cooldown has passed; then one probe request
    is let through and a success closes the circuit again. The period goes to the next source.
    """


class CacheUnwritable(DSMError, OSError):
    """The kline cache could not store a period (read-only directory, disk full, permissions).

    The fetch that met it still returns the bars it downloaded (from memory, with a warning in
    the report); only the cache entry is missing, so a later fetch downloads that period again.
    """


class SeriesLocked(DSMError):
    """Another writer holds a series' lock (catalog bar type, cache series) past the wait.

    ``holder`` is what the lock file says about its owner (host, pid, owner id, since when),
    ``path`` the lock file, so the message can name both and the fix.
    """

    def __init__(self, message: str, path: str = "", holder: str = "") -> None:
        super().__init__(message)
        self.path = path
        self.holder = holder


class InvalidData(DataUnavailable, InvalidResponse):
    """A fetch whose every failed period was answered only with payloads failing validation.

    Both a :class:`DataUnavailable` (no source could provide the periods) and an
    :class:`InvalidResponse` (``open_times_ms`` names the bad bars, so a live stream can skip
    exactly those and go on).
    """


class FundingSettlementError(InvalidInput):
    """The funding module cannot settle funding as configured.

    Raised when the catalog holds no (or inconsistent) funding rows for an instrument, when no
    price exists at a funding boundary, or when the account has no balance in the currency a
    payment is settled in. The message names the instrument, the catalog and the fix.
    """


class StreamError(SourceError):
    """A websocket kline stream failed (refused, rejected, closed)."""


class StreamSubscriptionRejected(StreamError, InvalidInput):
    """Binance answered a ``SUBSCRIBE``/``UNSUBSCRIBE`` with an error (the stream is named)."""


class StreamClosed(StreamError):
    """The stream manager was closed, or the stream unsubscribed, while it was awaited."""


class SeriesMonthFailed(DSMError):
    """A series-month of a distributed ingest failed on its worker (after the engine's retries).

    The message names the task (``klines-BTCUSDT-PERP.BINANCE-1m-2024-01``), the original
    error's class and text; it travels back to the client as plain text (picklable).
    """


class ConditionalWritesUnsupported(DSMError):
    """An object store ignores conditional writes (``If-None-Match``): it cannot hold a lock.

    Raised before the first series lock of a bucket is taken, naming the bucket and the fix.
    """
