"""The first request's template and credentials without botocore, when nothing else could decide them.

Importing aiobotocore and creating its client is most of a scan's start-up, and of a scan of a
small bucket (benchmarks/results/startup-2026-12-03.md). When the credentials are static ones in
the environment and the region and endpoint are plain, what botocore would resolve is fully
determined here, from the same sources in the same order (botocore 1.40's): ``--region``, then
``AWS_DEFAULT_REGION``, then the default profile's ``region``; ``--endpoint-url``, then
``AWS_ENDPOINT_URL_S3``, then ``AWS_ENDPOINT_URL``.

Anything else botocore reads that could change the request sends the scan down botocore's path as
before: a profile (``--profile``, ``AWS_PROFILE``), any other ``AWS_*`` variable (FIPS, dual-stack,
web identity, container credentials, ``AWS_DATA_PATH``...), a default profile in the shared files
with any setting but the region and the keys the environment overrides, unsigned requests, bucket
names that are not plain DNS labels (directory buckets, access point aliases, dots), regions outside
the ``aws`` partition, endpoints with a path, credentials or an AWS host. Errors (no credentials,
a bad region, an unreadable config file) are always botocore's, on its path.
``tests/storage/test_direct.py`` compares the two paths' requests byte for byte.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from scanner.config import ConnectionConfig, S3Location
from scanner.storage.s3.signing import RequestTemplate

# Read by this module, or harmless here: the CA bundle only matters to TLS (the scanner loads it),
# AWS_REGION is not a region source for botocore, and IMDS is never asked with static credentials.
_KNOWN_VARIABLES: Final = frozenset(
    {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_CA_BUNDLE",
        "AWS_EC2_METADATA_DISABLED",
    }
)
# botocore reads the token from the first of these that is not empty.
_TOKEN_VARIABLES: Final = ("AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN")
# Default-profile settings that cannot change the request: the environment's credentials win over
# the keys, the region is read here, and the client's own s3 config replaces addressing_style.
_KNOWN_SETTINGS: Final = frozenset(
    {"region", "output", "aws_access_key_id", "aws_secret_access_key", "aws_session_token"}
)
# The aws partition's region pattern in botocore's endpoint rules (partitions.json).
_AWS_REGION: Final = re.compile(r"(us|eu|ap|sa|ca|me|af|il|mx)-[a-z]+-\d+")
# A bucket the rules address like any other: one DNS label, no "--" (directory buckets, access
# point and Outposts aliases end in --x-s3, --op-s3...), no access point alias suffix.
_PLAIN_BUCKET: Final = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?!-)){1,61}[a-z0-9]")
_HOST: Final = re.compile(r"[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?")
# botocore's IPV4_PAT: such a host takes no bucket label.
_IPV4: Final = re.compile(r"(?:[0-9]{1,3}\.){3}[0-9]{1,3}")


@dataclass(frozen=True, slots=True)
class StaticCredentials:
    """Environment credentials, shaped like botocore's (frozen or not) for ``sign``.

    Kept out of ``repr``: the scanner scrubs all three from what it prints, and a repr can end up
    in a traceback or a debug log.
    """

    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    token: str | None = field(repr=False)

    async def get_frozen_credentials(self) -> StaticCredentials:
        return self


@dataclass(frozen=True, slots=True)
class DirectRequest:
    template: RequestTemplate
    credentials: StaticCredentials


def direct_request(
    location: S3Location, config: ConnectionConfig, environ: Mapping[str, str] = os.environ
) -> DirectRequest | None:
    """The template and credentials botocore would produce, or None to ask botocore."""
    if config.no_sign_request or config.profile is not None:
        return None
    if any(name.startswith("AWS_") and name not in _KNOWN_VARIABLES for name in environ):
        return None
    credentials = _environment_credentials(environ)
    if credentials is None or not _PLAIN_BUCKET.fullmatch(location.bucket):
        return None
    profile = _default_profile(environ)
    if profile is None:
        return None
    region = _region(config, environ, profile)
    base_url = _base_url(location.bucket, region, config, environ) if region else None
    if region is None or base_url is None:
        return None
    headers = (("x-amz-request-payer", "requester"),) if config.request_payer else ()
    return DirectRequest(RequestTemplate(base_url, region, headers), credentials)


def _environment_credentials(environ: Mapping[str, str]) -> StaticCredentials | None:
    access_key = environ.get("AWS_ACCESS_KEY_ID", "")
    secret_key = environ.get("AWS_SECRET_ACCESS_KEY", "")
    if not access_key or not secret_key:
        return None  # none, or partial: botocore's chain and its messages decide
    token = next((value for name in _TOKEN_VARIABLES if (value := environ.get(name, ""))), None)
    return StaticCredentials(access_key, secret_key, token)


def _region(config: ConnectionConfig, environ: Mapping[str, str], profile: Mapping[str, Any]) -> str | None:
    if config.region is not None:
        region: Any = config.region
    elif "AWS_DEFAULT_REGION" in environ:
        region = environ["AWS_DEFAULT_REGION"]  # even empty: botocore takes it as it is
    else:
        region = profile.get("region")
    # Anything else (none, malformed, another partition): botocore resolves it, or says why not.
    return region if isinstance(region, str) and _AWS_REGION.fullmatch(region) else None


def _base_url(bucket: str, region: str, config: ConnectionConfig, environ: Mapping[str, str]) -> str | None:
    """The URL up to the query, as botocore's S3 endpoint rules write it."""
    endpoint = _endpoint(config, environ)
    style = config.addressing_style
    if endpoint is None:
        host = "s3.amazonaws.com" if region == "us-east-1" else f"s3.{region}.amazonaws.com"
        if style == "path":
            return f"https://{host}/{bucket}"
        return f"https://{bucket}.{host}/"
    authority = _plain_authority(endpoint)
    if authority is None:
        return None
    scheme, netloc, hostname = authority
    # With a custom endpoint botocore forces path style unless virtual is asked for, and an IP
    # address cannot take the bucket as a label.
    if style != "virtual" or _IPV4.fullmatch(hostname):
        return f"{scheme}://{netloc}/{bucket}"
    return f"{scheme}://{bucket}.{netloc}/"


def _endpoint(config: ConnectionConfig, environ: Mapping[str, str]) -> str | None:
    if config.endpoint_url is not None:
        return config.endpoint_url
    return environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL") or None


def _plain_authority(endpoint: str) -> tuple[str, str, str] | None:
    """Scheme, host[:port] and host of an endpoint with nothing the rules would rewrite."""
    try:
        parts = urlsplit(endpoint)
        port = parts.port
    except ValueError:
        return None
    hostname = parts.hostname or ""
    plain = (
        endpoint.startswith(("http://", "https://"))
        and parts.path in ("", "/")
        and not (parts.query or parts.fragment or parts.username or parts.password)
        and parts.netloc == (hostname if port is None else f"{hostname}:{port}")
        and _HOST.fullmatch(hostname) is not None
        and "amazonaws" not in hostname
    )
    return (parts.scheme, parts.netloc, hostname) if plain else None


def _default_profile(environ: Mapping[str, str]) -> dict[str, Any] | None:
    """The default profile as botocore merges it from the two shared files, when it is plain.

    None when a file cannot be read as botocore would, or when the profile sets anything that
    could change the request (services, endpoint_url, s3 settings, credential sources...).
    """
    config = _parsed(_shared_file(environ, "AWS_CONFIG_FILE", "~/.aws/config"))
    credentials = _parsed(_shared_file(environ, "AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"))
    if config is None or credentials is None:
        return None
    profile = dict(_config_default(config))
    profile.update(credentials.get("default", {}))
    s3 = profile.get("s3")
    plain_s3 = s3 is None or (isinstance(s3, dict) and set(s3) <= {"addressing_style"})
    return profile if plain_s3 and set(profile) - {"s3"} <= _KNOWN_SETTINGS else None


def _shared_file(environ: Mapping[str, str], variable: str, default: str) -> str:
    path = environ.get(variable, default)  # even empty: botocore takes it as it is
    return os.path.expanduser(os.path.expandvars(path))


def _parsed(path: str) -> dict[str, dict[str, Any]] | None:
    """``raw_config_parse``'s sections of ``path`` ({} when it is no file); None if unreadable."""
    if not os.path.isfile(path):
        return {}
    import configparser  # start-up: only when a shared file exists

    parser = configparser.RawConfigParser()
    try:
        parser.read([path])
        return {
            section: {option: _nested(parser.get(section, option)) for option in parser.options(section)}
            for section in parser.sections()
        }
    except (configparser.Error, UnicodeDecodeError, OSError, ValueError):
        return None  # botocore raises its ConfigParseError: let it, on its own path


def _nested(value: str) -> Any:
    """An indented block as botocore's ``_parse_nested`` reads it (ValueError when it cannot)."""
    if not value.startswith("\n"):
        return value
    pairs = (line.strip().split("=", 1) for line in value.splitlines() if line.strip())
    return {key.strip(): setting.strip() for key, setting in pairs}


def _config_default(sections: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """What ``build_profile_map`` keeps as the default profile: the last section naming it."""
    found: dict[str, Any] = {}
    for name, values in sections.items():
        if name.startswith("profile"):
            import shlex  # start-up: only for a config file with named profiles

            try:
                parts = shlex.split(name)
            except ValueError:
                continue
            if len(parts) == 2 and parts[1] == "default":
                found = values
        elif name == "default":
            found = values
    return found
