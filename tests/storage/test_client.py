"""Which S3 page sources load a CA bundle: none for a plain-HTTP endpoint, wherever it is set."""

from __future__ import annotations

import pytest

from scanner.config import ConnectionConfig, S3Location
from scanner.storage.s3.client import S3PageSource

ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")


def _may_use_tls(**connection: object) -> bool:
    return S3PageSource(S3Location("b", ""), ConnectionConfig(**connection))._may_use_tls()  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _no_endpoint_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENDPOINT_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_the_configured_endpoint_decides() -> None:
    assert _may_use_tls() is True
    assert _may_use_tls(endpoint_url="https://s3.example") is True
    assert _may_use_tls(endpoint_url="HTTP://127.0.0.1:9000") is False
    assert _may_use_tls(endpoint_url="http://127.0.0.1:9000", ca_bundle="/ca.pem") is True


def test_the_environment_endpoint_counts_without_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    assert _may_use_tls() is False
    assert _may_use_tls(endpoint_url="https://s3.example") is True
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "https://s3.example")
    assert _may_use_tls() is True  # the service's own variable wins, as in botocore
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9001")
    assert _may_use_tls() is False
    monkeypatch.setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")
    assert _may_use_tls() is True


def test_the_default_ca_bundle_is_botocores() -> None:
    from botocore.httpsession import get_cert_path

    from scanner.storage.s3.client import _default_ca_bundle

    assert _default_ca_bundle() == str(get_cert_path(True))
