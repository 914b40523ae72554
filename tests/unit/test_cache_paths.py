"""The default cache root: ``$NAUTILUS_DSM_CACHE_DIR`` when set and non-empty, else the user
cache dir; overridden endpoints get a folder per host set under whichever root (no I/O)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from nautilus_dsm.dsm.cache import KlineCache
from nautilus_dsm.dsm.cache_paths import CACHE_DIR_ENV, default_cache_dir, endpoint_cache_dir
from nautilus_dsm.dsm.manager import DataSourceManager
from nautilus_dsm.dsm.settings import SourceSettings

IMITATION = "http://127.0.0.1:8080"
# sha256("http://127.0.0.1:8080|http://127.0.0.1:8080")[:12]
IMITATION_FOLDER = "endpoints/127.0.0.1-8080_127.0.0.1-8080-3083da8c1217"
linux_only = pytest.mark.skipif(sys.platform != "linux", reason="XDG cache dir is Linux's")


def test_the_environment_variable_is_named_nautilus_dsm_cache_dir() -> None:
    assert CACHE_DIR_ENV == "NAUTILUS_DSM_CACHE_DIR"


def test_default_root_is_the_environment_variable_when_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("NAUTILUS_DSM_CACHE_DIR", str(tmp_path / "shared-cache"))

    assert default_cache_dir() == tmp_path / "shared-cache"


def test_default_root_expands_a_home_relative_environment_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NAUTILUS_DSM_CACHE_DIR", "~/bars")

    assert default_cache_dir() == tmp_path / "home" / "bars"


@linux_only
def test_default_root_is_the_user_cache_dir_without_the_environment_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("NAUTILUS_DSM_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))

    assert default_cache_dir() == tmp_path / "xdg" / "nautilus-dsm"


@linux_only
def test_an_empty_environment_variable_is_ignored(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("NAUTILUS_DSM_CACHE_DIR", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))

    assert default_cache_dir() == tmp_path / "xdg" / "nautilus-dsm"


def test_binance_endpoints_use_the_environment_root_itself(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("NAUTILUS_DSM_CACHE_DIR", str(tmp_path / "shared-cache"))

    assert endpoint_cache_dir(None, None) == tmp_path / "shared-cache"


def test_overridden_endpoints_get_their_host_folder_under_the_environment_root(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("NAUTILUS_DSM_CACHE_DIR", str(tmp_path / "shared-cache"))

    assert endpoint_cache_dir(IMITATION, IMITATION) == tmp_path / "shared-cache" / IMITATION_FOLDER


def test_one_overridden_endpoint_names_only_its_host(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("NAUTILUS_DSM_CACHE_DIR", str(tmp_path / "shared-cache"))

    root = endpoint_cache_dir("https://testnet.binancefuture.com", None)

    # sha256("https://testnet.binancefuture.com|-")[:12]
    assert root == tmp_path / "shared-cache/endpoints/testnet.binancefuture.com-d8a22fad05bc"


@linux_only
def test_overridden_endpoints_get_their_host_folder_under_the_user_cache_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("NAUTILUS_DSM_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))

    assert endpoint_cache_dir(IMITATION, IMITATION) == tmp_path / "xdg/nautilus-dsm" / (
        IMITATION_FOLDER
    )


def test_a_manager_without_cache_dir_caches_under_the_environment_root(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("NAUTILUS_DSM_CACHE_DIR", str(tmp_path / "shared-cache"))

    binance = DataSourceManager(SourceSettings())
    imitation = DataSourceManager.create(base_url_http=IMITATION, base_url_vision=IMITATION)

    assert binance.cache.root == tmp_path / "shared-cache"
    assert imitation.cache.root == tmp_path / "shared-cache" / IMITATION_FOLDER


def test_an_explicit_cache_dir_wins_over_the_environment_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("NAUTILUS_DSM_CACHE_DIR", str(tmp_path / "shared-cache"))

    dsm = DataSourceManager.create(base_url_http=IMITATION, cache_dir=tmp_path / "mine")

    assert dsm.cache.root == tmp_path / "mine"


def test_a_cache_without_root_uses_the_environment_root(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("NAUTILUS_DSM_CACHE_DIR", str(tmp_path / "shared-cache"))

    assert KlineCache().root == tmp_path / "shared-cache"
