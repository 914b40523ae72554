"""The live settings: live_source, reconcile_grace_ms, health_interval_s, base_url_ws."""

from __future__ import annotations

import msgspec
import pytest

from nautilus_dsm.config import DSMDataClientConfig, DSMSourceConfig
from nautilus_dsm.dsm.settings import SourceSettings
from nautilus_dsm.errors import InvalidInput


def test_websocket_is_the_default_live_source() -> None:
    config = DSMDataClientConfig()

    assert config.live_source == "websocket"
    assert config.reconcile_grace_ms is None and config.health_interval_s == 60.0
    assert config.source_config().base_url_ws is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"live_source": "poll"},
            "DSMDataClientConfig.live_source 'poll' is not 'websocket' or 'rest'; use "
            "'websocket' (streams with REST reconciliation, the default) or 'rest' (REST polling)",
        ),
        (
            {"reconcile_grace_ms": -1},
            "DSMDataClientConfig.reconcile_grace_ms must be a whole number of ms >= 0 or None, "
            "was -1; e.g. 1500",
        ),
        (
            {"reconcile_grace_ms": 1.5},
            "DSMDataClientConfig.reconcile_grace_ms must be a whole number of ms >= 0 or None, "
            "was 1.5; e.g. 1500",
        ),
        (
            {"health_interval_s": -5},
            "DSMDataClientConfig.health_interval_s must be >= 0 seconds, was -5; e.g. 60 (0 "
            "turns the periodic line off)",
        ),
        (
            {"base_url_ws": "https://stream.binance.com"},
            "base_url_ws 'https://stream.binance.com' is not a websocket URL; use "
            "ws://host:port/path or wss://host:port/path (e.g. wss://stream.binance.com:9443/ws)",
        ),
    ],
)
def test_bad_live_settings_are_refused_when_built(kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidInput) as e:
        DSMDataClientConfig(**kwargs)
    assert str(e.value) == message


def test_a_mapping_of_urls_becomes_hashable_pairs_and_round_trips() -> None:
    config = DSMDataClientConfig(
        base_url_ws={"futures_usdt": "ws://127.0.0.1:9/um", "spot": "ws://127.0.0.1:9/s"}
    )
    source = config.source_config()

    assert config.base_url_ws == (
        ("futures_usdt", "ws://127.0.0.1:9/um"),
        ("spot", "ws://127.0.0.1:9/s"),
    )
    assert hash(config) == hash(DSMDataClientConfig(base_url_ws=dict(config.base_url_ws)))
    assert source.ws_urls == {"futures_usdt": "ws://127.0.0.1:9/um", "spot": "ws://127.0.0.1:9/s"}
    assert msgspec.json.decode(msgspec.json.encode(source), type=DSMSourceConfig) == source


def test_a_template_is_kept_as_written() -> None:
    settings = SourceSettings(base_url_ws="ws://127.0.0.1:9/{market}/ws")

    assert settings.ws_urls == "ws://127.0.0.1:9/{market}/ws"


def test_an_unknown_market_in_the_mapping_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r"base_url_ws \{'perp': 'ws://x'\} is not a mapping"):
        SourceSettings(base_url_ws={"perp": "ws://x"})


def test_base_url_ws_in_both_places_is_refused() -> None:
    with pytest.raises(InvalidInput, match="sets base_url_ws both as keywords and in source="):
        DSMDataClientConfig(base_url_ws="ws://a/ws", source=DSMSourceConfig())
