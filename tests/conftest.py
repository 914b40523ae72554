"""Shared fixtures: the local Binance imitation and the real reference data."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# ../shared/realdata beside the checkout (CI's layout), or NAUTILUS_DSM_REALDATA.
REALDATA = Path(
    os.environ.get("NAUTILUS_DSM_REALDATA")
    or Path(__file__).resolve().parents[2] / "shared" / "realdata"
)


_LOCAL_NAMES = {None, "", "localhost", "ip6-localhost"}


def _is_local(host: object) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    if host in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True, scope="session")
def _loopback_only() -> Iterator[None]:
    """Refuse, in the test process, any name lookup or connection beyond 127.0.0.1 / ::1.

    There is no internet here, and a test that reached for Binance would only time out; this
    makes it fail at once, naming the host (subprocess tests point at the imitation by URL).
    """
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not _is_local(host):
            raise socket.gaierror(
                f"test tried to resolve {host!r}: tests talk to the imitation on 127.0.0.1"
            )
        return real_getaddrinfo(host, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]
    try:
        yield
    finally:
        socket.getaddrinfo = real_getaddrinfo  # type: ignore[assignment]


@pytest.fixture
def realdata() -> Path:
    """``../shared/realdata`` (recorded Binance data); skips when the folder is absent."""
    if not REALDATA.is_dir():
        pytest.skip(f"real reference data not found at {REALDATA}")
    return REALDATA


@pytest.fixture
def imitation() -> Iterator[object]:
    """A fresh Binance imitation on 127.0.0.1 (real HTTP), stopped after the test."""
    from nautilus_dsm.testing import BinanceImitation

    with BinanceImitation() as server:
        yield server


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    path = tmp_path / "cache"
    path.mkdir()
    return path


@pytest.fixture(autouse=True, scope="session")
def _no_user_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Point the per-user cache dir (XDG) at a temp dir and drop ``NAUTILUS_DSM_CACHE_DIR``
    (which would take precedence): no test may touch the user's cache."""
    old = os.environ.get("XDG_CACHE_HOME")
    old_root = os.environ.pop("NAUTILUS_DSM_CACHE_DIR", None)
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old
    if old_root is not None:
        os.environ["NAUTILUS_DSM_CACHE_DIR"] = old_root


def close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what is still pending on ``loop``, let it unwind, then close the loop.

    A node leaves tasks behind (its actors' executor workers among them). Closing the loop
    over them makes the garbage collector log "Task was destroyed but it is pending!" later,
    in whichever test happens to be running, where it lands in that test's ``caplog``.
    """
    if loop.is_closed():
        return
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A fresh event loop for a TradingNode, closed with nothing left pending."""
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        close_loop(loop)


def dispose_node(node: Any) -> None:
    """Dispose of a stopped ``TradingNode`` leaving no task pending on its loop.

    ``TradingNode.dispose`` closes a loop that is not running with its actors' executor workers
    still pending; the garbage collector later logs "Task was destroyed but it is pending!" into
    whichever test runs then. NautilusTrader's own ``cancel_all_tasks`` unwinds them first.
    """
    node.kernel.cancel_all_tasks()
    node.dispose()


def dsm_messages(records: list[logging.LogRecord]) -> list[str]:
    """The messages of ``nautilus_dsm``'s own loggers among ``records`` (caplog's).

    Exact assertions on what the package logged must not depend on what the interpreter, asyncio
    or NautilusTrader logged meanwhile.
    """
    return [r.getMessage() for r in records if r.name.split(".")[0] == "nautilus_dsm"]
