"""Catalog URIs and storage options: parsing, the AWS environment, fsspec vs Rust names (pure)."""

from __future__ import annotations

import os

import pytest

from nautilus_dsm.catalog.storage import (
    CatalogLocation,
    catalog_location,
    parse_storage_options,
    storage_options_from_env,
)
from nautilus_dsm.errors import InvalidInput


def test_key_value_pairs_are_parsed() -> None:
    assert parse_storage_options(["endpoint_url=http://h:9000/x=y", "region=eu-west-1"]) == {
        "endpoint_url": "http://h:9000/x=y",
        "region": "eu-west-1",
    }


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        (["region"], "storage option 'region' is not KEY=VALUE"),
        (["=x"], "storage option '=x' is not KEY=VALUE"),
        (["key=a", "key=b"], "storage option 'key' is given twice; pass it once"),
    ],
)
def test_bad_pairs_are_refused(pairs: list[str], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_storage_options(pairs)


def test_the_aws_environment_gives_the_s3_options() -> None:
    env = {
        "AWS_ACCESS_KEY_ID": "AK",
        "AWS_SECRET_ACCESS_KEY": "SK",
        "AWS_SESSION_TOKEN": "T",
        "AWS_ENDPOINT_URL": "https://generic",
        "AWS_ENDPOINT_URL_S3": "https://s3-only",
        "AWS_DEFAULT_REGION": "us-west-2",
        "AWS_REGION": "eu-central-1",
    }
    assert storage_options_from_env(env) == {
        "key": "AK", "secret": "SK", "token": "T",
        "endpoint_url": "https://s3-only", "region": "eu-central-1",
    }  # fmt: skip


def test_an_s3_uri_maps_options_for_s3fs_and_for_the_rust_reader() -> None:
    location = catalog_location(
        "s3://bucket/a/b/",
        {"endpoint_url": "http://127.0.0.1:9000", "secret": "S", "requester_pays": "true"},
        environ={"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "from-env"},
    )
    assert location == CatalogLocation(
        uri="s3://bucket/a/b/",
        protocol="s3",
        path="bucket/a/b",
        fs_options={
            "key": "AK", "secret": "S", "endpoint_url": "http://127.0.0.1:9000",
            "requester_pays": True, "use_listings_cache": False,
        },
        rust_options={
            "access_key_id": "AK", "secret_access_key": "S",
            "endpoint_url": "http://127.0.0.1:9000", "allow_http": "true",
        },
    )  # fmt: skip
    assert location.is_object_store


def test_a_region_goes_to_s3fs_client_kwargs() -> None:
    location = catalog_location("s3a://bucket/cat", {"region": "eu-west-1"}, environ={})
    assert location.protocol == "s3"
    assert location.fs_options == {
        "client_kwargs": {"region_name": "eu-west-1"},
        "use_listings_cache": False,
    }
    assert location.rust_options == {"region": "eu-west-1"}
    assert location.backtest_kwargs() == {
        "catalog_path": "bucket/cat",
        "catalog_fs_protocol": "s3",
        "catalog_fs_storage_options": location.fs_options,
        "catalog_fs_rust_storage_options": {"region": "eu-west-1"},
    }


def test_local_and_memory_catalogs() -> None:
    assert catalog_location("cat").path == os.path.abspath("cat")
    assert catalog_location("memory:///cat").path == "/cat"
    assert catalog_location("file:///data/cat").protocol == "file"
    with pytest.raises(InvalidInput, match=r"storage options \['key'\] do not apply"):
        catalog_location("/data/cat", {"key": "x"})


@pytest.mark.parametrize("uri", ["", "   ", "s3://", "gs:///x"])
def test_uris_without_a_place_are_refused(uri: str) -> None:
    with pytest.raises(InvalidInput):
        catalog_location(uri, environ={})
