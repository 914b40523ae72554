"""The log bridge: the engine's stdlib ``logging`` records into NautilusTrader's log.

The engine (``nautilus_dsm.dsm``) logs with ``logging.getLogger(__name__)`` because it never
imports NautilusTrader. NautilusTrader installs no stdlib handler, so inside a ``TradingNode``
those records (Vision -> REST fallbacks, quarantined cache files, 429 holds) would be invisible,
or printed raw by Python's last-resort handler outside the node's log files. The bridge is one
handler on the ``nautilus_dsm`` logger that forwards each record to a NautilusTrader
:class:`~nautilus_trader.common.component.Logger` named for the component that wrote it
(``DataSourceManager``, ``VisionClient``...), at the same level, whenever Nautilus logging is
initialised (a kernel is running); otherwise it behaves like Python's default (warnings and
errors to stderr, unless the application configured handlers of its own).

It is installed by the Nautilus entry points (the data client factory, the data client) and is
idempotent. Records still propagate to the application's own handlers (``logging.basicConfig``,
pytest's ``caplog``). The bridge sets the ``nautilus_dsm`` logger to INFO when it has no level,
so INFO records reach the node, whose own level then filters; for DEBUG records call
``logging.getLogger("nautilus_dsm").setLevel(logging.DEBUG)``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

__all__ = ["COMPONENTS", "NautilusLogBridge", "component_for", "install_log_bridge"]

ROOT_LOGGER = "nautilus_dsm"

# Logger name prefix -> the component name shown in the Nautilus log. The longest prefix wins;
# modules not listed show as "DSM.<module>".
COMPONENTS: dict[str, str] = {
    "nautilus_dsm.dsm": "DataSourceManager",
    "nautilus_dsm.dsm.vision": "VisionClient",
    "nautilus_dsm.dsm.rest": "BinanceRestClient",
    "nautilus_dsm.dsm.http": "HttpTransport",
    "nautilus_dsm.dsm.circuit": "HttpTransport",
    "nautilus_dsm.dsm.retry_policy": "HttpTransport",
    "nautilus_dsm.dsm.weight_gate": "HttpTransport",
    "nautilus_dsm.dsm.exchange_clock": "ExchangeClock",
    "nautilus_dsm.dsm.cache": "KlineCache",
    "nautilus_dsm.dsm.cache_paths": "KlineCache",
    "nautilus_dsm.dsm.cache_files": "KlineCache",
    "nautilus_dsm.dsm.cache_state": "KlineCache",
    "nautilus_dsm.dsm.cache_checks": "KlineCache",
    "nautilus_dsm.dsm.locks": "SeriesLock",
    "nautilus_dsm.dsm.streams": "KlineStreams",
    "nautilus_dsm.dsm.stream_connection": "KlineStreams",
    "nautilus_dsm.dsm.stream_wire": "KlineStreams",
    "nautilus_dsm.catalog": "CatalogIngest",
    "nautilus_dsm.bars": "BarConversion",
    "nautilus_dsm._capsule": "BarConversion",
}

_lock = threading.Lock()
_installed: NautilusLogBridge | None = None


def component_for(logger_name: str) -> str:
    """Return the Nautilus component name for a stdlib logger name of this package."""
    best = ""
    for prefix in COMPONENTS:
        if (logger_name == prefix or logger_name.startswith(prefix + ".")) and len(prefix) > len(
            best
        ):
            best = prefix
    if best:
        return COMPONENTS[best]
    return "DSM." + logger_name.rsplit(".", 1)[-1]


class NautilusLogBridge(logging.Handler):
    """A stdlib handler writing ``nautilus_dsm.*`` records into NautilusTrader's log."""

    def __init__(self) -> None:
        super().__init__(level=logging.NOTSET)
        self._loggers: dict[str, Any] = {}
        self._exc_formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        """Forward ``record`` to Nautilus, or to stderr when no kernel is running."""
        try:
            from nautilus_trader.common.component import is_logging_initialized

            if not is_logging_initialized():
                self._fallback(record)
                return
            message = record.getMessage()
            if record.exc_info:
                message = f"{message}\n{self._exc_formatter.formatException(record.exc_info)}"
            logger = self._logger(component_for(record.name))
            if record.levelno >= logging.ERROR:
                logger.error(message)
            elif record.levelno >= logging.WARNING:
                logger.warning(message)
            elif record.levelno >= logging.INFO:
                logger.info(message)
            else:
                logger.debug(message)
        except Exception:  # a log line must never break the engine
            self.handleError(record)

    def _logger(self, name: str) -> Any:
        logger = self._loggers.get(name)
        if logger is None:
            from nautilus_trader.common.component import Logger

            logger = self._loggers[name] = Logger(name)
        return logger

    @staticmethod
    def _fallback(record: logging.LogRecord) -> None:
        # Python's default when nobody configured logging: warnings and errors to stderr.
        # The bridge being installed must not silence that, nor double what the application's
        # own handlers already print.
        if logging.getLogger().handlers:
            return
        last_resort = logging.lastResort
        if last_resort is not None and record.levelno >= last_resort.level:
            last_resort.handle(record)


def install_log_bridge() -> NautilusLogBridge:
    """
    Install the bridge on the ``nautilus_dsm`` logger (once per process) and return it.

    Returns
    -------
    NautilusLogBridge
        The installed handler (the same object on every call).

    """
    global _installed
    with _lock:
        if _installed is None:
            _installed = NautilusLogBridge()
            root = logging.getLogger(ROOT_LOGGER)
            root.addHandler(_installed)
            if root.level == logging.NOTSET:
                root.setLevel(logging.INFO)
        return _installed
