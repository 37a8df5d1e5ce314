"""The request template's SigV4 is botocore's S3SigV4Auth, byte for byte."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from unittest import mock

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from scanner.storage.s3.signing import RequestTemplate, sign

NOW = datetime(2026, 12, 3, 9, 30, 1, tzinfo=UTC)


def _botocore(
    template: RequestTemplate, params: dict[str, Any], credentials: Any
) -> tuple[str, dict[str, str]]:
    request = AWSRequest(method="GET", url=template.url(params), headers=dict(template.headers))
    with mock.patch("botocore.auth.get_current_datetime", return_value=NOW.replace(tzinfo=None)):
        S3SigV4Auth(credentials, "s3", template.region).add_auth(request)
    headers = {
        name: value.decode("ascii") if isinstance(value, bytes) else value
        for name, value in request.headers.items()
    }
    return request.url, headers


TEMPLATES = [
    RequestTemplate("http://127.0.0.1:9000/bucket", "us-east-1", ()),
    RequestTemplate("https://bucket.s3.eu-west-2.amazonaws.com/", "eu-west-2", ()),
    RequestTemplate(
        "https://s3.amazonaws.com:443/bucket", "us-east-1", (("x-amz-request-payer", "requester"),)
    ),
    RequestTemplate("http://[::1]:8080/b.dots", "auto", ()),
    RequestTemplate("HTTP://Example.COM:80/bucket", "us-west-1", ()),
]
PARAMS = [
    {"Bucket": "bucket", "Prefix": "", "EncodingType": "url", "MaxKeys": 1000},
    {
        "Bucket": "bucket",
        "Prefix": "a b/",
        "EncodingType": "url",
        "MaxKeys": 7,
        "StartAfter": "a b/c+d%e&f=g",
    },
    {
        "Bucket": "bucket",
        "Prefix": "é/",
        "EncodingType": "url",
        "MaxKeys": 1000,
        "ContinuationToken": "1/a==",
        "Delimiter": "/",
    },
    {
        "Bucket": "bucket",
        "Prefix": "x",
        "StartAfter": "\x01\u07c0,",
        "MaxKeys": 1000,
        "RequestPayer": "requester",
    },
]


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize("token", [None, "session token value"])
def test_sign_is_botocore_s3_sigv4(
    template: RequestTemplate, params: dict[str, Any], token: str | None
) -> None:
    credentials = Credentials(
        "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token
    ).get_frozen_credentials()
    assert sign(template, params, credentials, now=NOW) == _botocore(template, params, credentials)


def test_a_new_secret_gets_its_own_signing_key() -> None:
    template = TEMPLATES[0]
    first = Credentials("AKID", "secret-one").get_frozen_credentials()
    second = Credentials("AKID", "secret-two").get_frozen_credentials()
    assert sign(template, PARAMS[0], first, now=NOW) == _botocore(template, PARAMS[0], first)
    assert sign(template, PARAMS[0], second, now=NOW) == _botocore(template, PARAMS[0], second)
    assert sign(template, PARAMS[0], first, now=NOW) != sign(template, PARAMS[0], second, now=NOW)
