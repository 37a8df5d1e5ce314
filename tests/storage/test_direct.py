"""The request made without botocore is botocore's, byte for byte; anything else goes to botocore.

Each case prepares the first request both ways from the same environment and shared files:
through the aiobotocore client (as a scan without the direct path does) and through
``direct_request`` + ``sign``. The URL, every signed header and the signature must be equal;
botocore's unsigned headers (User-Agent, amz-sdk-*) are the ones no templated request sends.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from scanner.config import ConnectionConfig, S3Location
from scanner.storage.s3.client import S3PageSource
from scanner.storage.s3.direct import direct_request
from scanner.storage.s3.signing import sign, template_from
from tests.storage.test_signing import NOW, PARAMS

ACCESS_KEY = "AKIDEXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
UNSIGNED_HEADERS = ("user-agent", "amz-sdk-invocation-id", "amz-sdk-request")


@pytest.fixture(autouse=True)
def _credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)


def _botocore(
    location: S3Location, config: ConnectionConfig, params: dict[str, Any]
) -> tuple[str, dict[str, str]]:
    async def prepare() -> Any:
        source = S3PageSource(location, config)
        await source._open_client(config.region)
        try:
            with mock.patch("botocore.auth.get_current_datetime", return_value=NOW.replace(tzinfo=None)):
                return await source._prepare(params)
        finally:
            await source._client_context.__aexit__(None, None, None)

    request = asyncio.run(prepare())
    assert template_from(request) is not None  # plain SigV4, as the direct path assumes
    headers = {
        name: value.decode("ascii") if isinstance(value, bytes) else value
        for name, value in request.headers.items()
        if name.lower() not in UNSIGNED_HEADERS
    }
    return request.url, headers


def _direct(
    location: S3Location, config: ConnectionConfig, params: dict[str, Any]
) -> tuple[str, dict[str, str]]:
    direct = direct_request(location, config)
    assert direct is not None, "expected the direct path"
    return sign(direct.template, params, direct.credentials, now=NOW)


def _same(bucket: str, config: ConnectionConfig, params: dict[str, Any] | None = None) -> None:
    location = S3Location(bucket, "")
    for case in [params] if params is not None else PARAMS:
        assert case is not None
        # As list_page asks: always url-encoded, the payer header only with --request-payer.
        request = {**case, "Bucket": bucket, "EncodingType": "url"}
        request.pop("RequestPayer", None)
        if config.request_payer:
            request["RequestPayer"] = "requester"
        assert _direct(location, config, request) == _botocore(location, config, request)


AWS_REGIONS = [
    "us-east-1",
    "us-east-2",
    "us-west-2",
    "eu-central-1",
    "ap-southeast-2",
    "sa-east-1",
    "il-central-1",
]


@pytest.mark.parametrize("region", AWS_REGIONS)
@pytest.mark.parametrize("style", ["auto", "path", "virtual"])
def test_aws_regions_and_styles(region: str, style: Any) -> None:
    _same("my-bucket-1", ConnectionConfig(region=region, addressing_style=style))


ENDPOINTS = [
    "http://127.0.0.1:9000",
    "http://localhost:9000",
    "http://minio:9000/",
    "https://s3.example.com",
    "https://s3.example.com:8443/",
    "http://127.0.0.1:80",
    "https://storage.internal:443",
]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("style", ["auto", "path", "virtual"])
@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1"])
def test_custom_endpoints(endpoint: str, style: Any, region: str) -> None:
    _same("bucket", ConnectionConfig(endpoint_url=endpoint, region=region, addressing_style=style))


@pytest.mark.parametrize("variable", ["AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"])
def test_session_tokens(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, "FwoGZXIvYXdzEJr//////////wEaDM+token=")
    _same("bucket", ConnectionConfig(region="eu-west-2"))
    _same("bucket", ConnectionConfig(region="us-east-1", endpoint_url="http://127.0.0.1:9000"))


def test_the_security_token_wins_as_in_botocore(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session")
    monkeypatch.setenv("AWS_SECURITY_TOKEN", "security")
    _same("bucket", ConnectionConfig(region="us-east-1"), PARAMS[0])
    monkeypatch.setenv("AWS_SECURITY_TOKEN", "")
    _same("bucket", ConnectionConfig(region="us-east-1"), PARAMS[0])


def test_request_payer() -> None:
    _same("bucket", ConnectionConfig(region="us-west-2", request_payer=True))
    _same(
        "bucket",
        ConnectionConfig(region="us-east-1", endpoint_url="http://localhost:9000", request_payer=True),
    )


def test_endpoints_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    _same("bucket", ConnectionConfig(region="us-east-1"), PARAMS[1])
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://localhost:9100")
    _same("bucket", ConnectionConfig(region="us-east-1"), PARAMS[1])
    _same("bucket", ConnectionConfig(region="us-east-1", addressing_style="virtual"), PARAMS[1])
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "")  # empty: the next source counts
    _same("bucket", ConnectionConfig(region="us-east-1"), PARAMS[1])
    _same("bucket", ConnectionConfig(region="us-east-1", endpoint_url="https://s3.example.com"), PARAMS[1])


def test_regions_from_the_environment_and_the_shared_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "config"
    credentials = tmp_path / "credentials"
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    config.write_text("[default]\nregion = eu-west-3\noutput = json\n[profile other]\nregion = ap-south-1\n")
    _same("bucket", ConnectionConfig(), PARAMS[2])
    config.write_text("[default]\nregion = eu-west-3\n[profile default]\nregion = ca-central-1\n")
    _same("bucket", ConnectionConfig(), PARAMS[2])
    credentials.write_text(
        "[default]\naws_access_key_id = ignored\naws_secret_access_key = ignored\nregion = us-west-1\n"
    )
    _same("bucket", ConnectionConfig(), PARAMS[2])  # the credentials file's region is read too
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-north-1")
    monkeypatch.setenv("AWS_REGION", "ap-northeast-1")  # not a region source for botocore
    _same("bucket", ConnectionConfig(), PARAMS[2])
    _same("bucket", ConnectionConfig(region="me-south-1"), PARAMS[2])


def test_the_clients_addressing_style_wins_over_the_config_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "config"
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://localhost:9000")
    config.write_text("[default]\nregion = us-east-1\ns3 =\n    addressing_style = virtual\n")
    _same("bucket", ConnectionConfig(), PARAMS[0])
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    config.write_text("[default]\ns3 =\n    addressing_style = path\n")
    _same("bucket", ConnectionConfig(), PARAMS[0])
    _same("bucket", ConnectionConfig(addressing_style="virtual"), PARAMS[0])


def test_the_page_source_keeps_the_secrets_to_scrub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SESSION_TOKEN", "the-token")
    source = S3PageSource(S3Location("bucket", ""), ConnectionConfig(region="us-east-1"))
    assert source._open_direct()
    assert set(source.secrets) == {SECRET_KEY, "the-token", ACCESS_KEY}
    shown = repr(direct_request(S3Location("bucket", ""), ConnectionConfig(region="us-east-1")))
    assert not any(secret in shown for secret in source.secrets)


BASE = ConnectionConfig(region="us-east-1")
# Each of these leaves the decision to botocore: a setting it reads that could change the request,
# or a case whose error message is botocore's.
BOTOCORE_VARIABLES = [
    ("AWS_PROFILE", "default"),
    ("AWS_DEFAULT_PROFILE", "other"),
    ("AWS_USE_FIPS_ENDPOINT", "true"),
    ("AWS_USE_DUALSTACK_ENDPOINT", "true"),
    ("AWS_S3_US_EAST_1_REGIONAL_ENDPOINT", "regional"),
    ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true"),
    ("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/token"),
    ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/r"),
    ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/credentials"),
    ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://169.254.170.23/v1/credentials"),
    ("AWS_CREDENTIAL_EXPIRATION", "2030-01-01T00:00:00Z"),
    ("AWS_ACCOUNT_ID", "123456789012"),
    ("AWS_DATA_PATH", "/tmp/models"),
    ("AWS_AUTH_SCHEME_PREFERENCE", "sigv4a"),
    ("AWS_S3_DISABLE_EXPRESS_SESSION_AUTH", "true"),
    ("AWS_ENDPOINT_URL_S3_CONTROL", "http://127.0.0.1:1"),
]


@pytest.mark.parametrize(("name", "value"), BOTOCORE_VARIABLES)
def test_other_aws_variables_go_to_botocore(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    assert direct_request(S3Location("bucket", ""), BASE) is not None
    monkeypatch.setenv(name, value)
    assert direct_request(S3Location("bucket", ""), BASE) is None


@pytest.mark.parametrize(
    "config",
    [
        replace(BASE, profile="default"),
        replace(BASE, no_sign_request=True),
        replace(BASE, region=None),
        replace(BASE, region=""),
        replace(BASE, region="bad_region"),
        replace(BASE, region="cn-north-1"),
        replace(BASE, region="us-gov-west-1"),
        replace(BASE, region="us-isob-east-1"),
        replace(BASE, region="aws-global"),
        replace(BASE, endpoint_url=""),
        replace(BASE, endpoint_url="http://127.0.0.1:9000/base/path"),
        replace(BASE, endpoint_url="https://s3-accelerate.amazonaws.com"),
        replace(BASE, endpoint_url="https://s3.us-east-1.amazonaws.com"),
        replace(BASE, endpoint_url="http://user:pass@127.0.0.1:9000"),
        replace(BASE, endpoint_url="http://[::1]:9000"),
        replace(BASE, endpoint_url="HTTP://127.0.0.1:9000"),
        replace(BASE, endpoint_url="http://Upper.Example:9000"),
        replace(BASE, endpoint_url="ftp://127.0.0.1"),
        replace(BASE, endpoint_url="http://127.0.0.1:notaport"),
        replace(BASE, endpoint_url="http://127.0.0.1:9000?x=1"),
    ],
)
def test_configurations_botocore_decides(config: ConnectionConfig) -> None:
    assert direct_request(S3Location("bucket", ""), config) is None


@pytest.mark.parametrize(
    "bucket",
    [
        "my-bucket--x-s3",
        "b--usw2-az1--x-s3",
        "ap-alias-s3alias-x--op-s3",
        "my.bucket",
        "Bucket",
        "b_x",
        "ab",
        "a" * 64,
    ],
)
def test_buckets_botocore_decides(bucket: str) -> None:
    assert direct_request(S3Location(bucket, ""), BASE) is None


def test_missing_or_partial_credentials_go_to_botocore(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "")
    assert direct_request(S3Location("bucket", ""), BASE) is None
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    assert direct_request(S3Location("bucket", ""), BASE) is None


def test_an_empty_default_region_goes_to_botocore(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "")
    assert direct_request(S3Location("bucket", ""), ConnectionConfig()) is None


@pytest.mark.parametrize(
    "text",
    [
        "[default]\nendpoint_url = http://127.0.0.1:9000\n",
        "[default]\nservices = local\n[services local]\ns3 =\n  endpoint_url = http://127.0.0.1:9000\n",
        "[default]\ns3 =\n    use_dualstack_endpoint = true\n",
        "[default]\ns3 =\n    us_east_1_regional_endpoint = regional\n",
        "[default]\ns3 = path\n",
        "[default]\ns3_us_east_1_regional_endpoint = regional\n",
        "[default]\nuse_fips_endpoint = true\n",
        "[default]\nignore_configured_endpoint_urls = true\n",
        "[default]\ncredential_process = /bin/creds\n",
        "[default]\nrole_arn = arn:aws:iam::123456789012:role/r\nsource_profile = base\n",
        "[default]\nsso_session = corp\n",
        "[default]\nsigv4a_signing_region_set = *\n",
        "[default]\nregion = us-east-1\nca_bundle = /ca.pem\n",
        "[default]\ns3 =\n    no equals sign here\n",
        "not an ini file\n",
        "[default]\nregion = us-east-1\nregion = us-west-2\n",
    ],
)
def test_shared_config_files_botocore_decides(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str
) -> None:
    for variable in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        path = tmp_path / variable
        monkeypatch.setenv(variable, str(path))
        path.write_text("[other]\nregion = us-east-1\n")
        assert direct_request(S3Location("bucket", ""), BASE) is not None
        path.write_text(text)
        assert direct_request(S3Location("bucket", ""), BASE) is None
        path.unlink()


def test_other_profiles_in_the_shared_files_do_not_matter(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "config"
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    config.write_text(
        "[default]\nregion = us-east-1\n[profile sso]\nsso_session = corp\n"
        "[sso-session corp]\nsso_region = x\n"
    )
    assert direct_request(S3Location("bucket", ""), ConnectionConfig()) is not None
    _same("bucket", ConnectionConfig(), PARAMS[3])


def test_the_credentials_file_names_profiles_without_the_word(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    credentials = tmp_path / "credentials"
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    credentials.write_text("[profile default]\nregion = eu-west-1\nendpoint_url = http://127.0.0.1:1\n")
    _same("bucket", ConnectionConfig(region="us-east-2"), PARAMS[0])
