"""The one settings object: SourceSettings (engine) and DSMSourceConfig (NautilusConfig)."""

from __future__ import annotations

import pytest

from nautilus_dsm import DSMDataClientConfig, DSMSourceConfig, MarketType, SourceSettings
from nautilus_dsm.errors import InvalidInput


def test_settings_are_frozen_hashable_and_equal_by_value():
    a = SourceSettings(market_type="futures_usdt", max_retries=2)
    b = SourceSettings(market_type=MarketType.FUTURES_USDT, max_retries=2)
    assert a == b
    assert hash(a) == hash(b)
    assert a.market_type is MarketType.FUTURES_USDT
    with pytest.raises(AttributeError):
        a.max_retries = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"min_completeness": 1.5},
            "min_completeness 1.5 is not a fraction; pass a value in [0, 1], e.g. 0.95",
        ),
        (
            {"on_low_quality": "ignore"},
            "on_low_quality 'ignore' is not 'raise' or 'warn'; use one of them",
        ),
        ({"max_concurrency": 0}, "max_concurrency must be a whole number >= 1, was 0; e.g. 4"),
        (
            {"max_retries": 0},
            "max_retries must be a whole number of tries >= 1, was 0; e.g. max_retries=3 "
            "(CLI --max-retries 3)",
        ),
        ({"use_vision": "no"}, "use_vision must be True or False, was 'no'"),
        (
            {"time_sync_interval_s": 0},
            "time_sync_interval_s must be > 0 seconds, was 0; e.g. 60 to measure Binance's "
            "clock offset every minute",
        ),
        (
            {"market_type": "options"},
            "unknown market type 'options'; use one of: spot, futures_usdt, futures_coin",
        ),
    ],
)
def test_a_bad_setting_is_refused_naming_the_field_and_a_fix(kwargs, message):
    with pytest.raises(InvalidInput) as info:
        SourceSettings(**kwargs)
    assert str(info.value) == message


def test_the_nautilus_config_names_itself_and_round_trips_through_json():
    with pytest.raises(InvalidInput) as info:
        DSMSourceConfig(max_concurrency=-1)
    assert str(info.value) == (
        "DSMSourceConfig.max_concurrency must be a whole number >= 1, was -1; e.g. 4"
    )
    config = DSMSourceConfig(market_type=MarketType.SPOT, base_url_http="http://127.0.0.1:9")
    assert isinstance(config, SourceSettings)
    parsed = DSMSourceConfig.parse(config.json())
    assert parsed == config
    assert parsed.market_type is MarketType.SPOT


def test_client_config_keywords_and_source_are_one_place_per_setting():
    source = DSMSourceConfig(max_retries=2)
    assert DSMDataClientConfig(source=source).source_config() is source
    assert DSMDataClientConfig(max_retries=2).source_config() == source
    with pytest.raises(InvalidInput) as info:
        DSMDataClientConfig(max_retries=3, source=source)
    assert str(info.value) == (
        "DSMDataClientConfig sets max_retries both as keywords and in "
        "source=DSMSourceConfig(...); set each engine setting in one place, e.g. "
        "source=DSMSourceConfig(max_retries=...)"
    )


def test_client_config_errors_name_the_client_config_field():
    with pytest.raises(InvalidInput) as info:
        DSMDataClientConfig(min_completeness=1.5)
    assert str(info.value) == (
        "DSMDataClientConfig.min_completeness 1.5 is not a fraction; pass a value in [0, 1], "
        "e.g. 0.95"
    )


def test_replace_validates_like_a_new_instance():
    settings = SourceSettings()
    assert settings.replace(max_rows=10).max_rows == 10
    with pytest.raises(InvalidInput):
        settings.replace(max_rows=0)
