"""The suite's guard: no test resolves a host beyond the loopback (there is no internet here)."""

from __future__ import annotations

import socket

import pytest

from nautilus_dsm.backtest.demo import internet_reachable


def test_a_real_binance_host_cannot_be_resolved():
    with pytest.raises(socket.gaierror) as info:
        socket.getaddrinfo("api.binance.com", 443)
    assert str(info.value) == (
        "test tried to resolve 'api.binance.com': tests talk to the imitation on 127.0.0.1"
    )


def test_the_loopback_still_resolves():
    assert socket.getaddrinfo("127.0.0.1", 80)[0][4][0] == "127.0.0.1"
    assert socket.getaddrinfo("localhost", 80)


def test_the_demo_probe_sees_no_internet_at_once():
    assert internet_reachable(timeout=0.2) is False
