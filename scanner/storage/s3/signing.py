"""Signing ListObjectsV2 requests without the whole botocore request pipeline.

The first request of a scan goes through the aiobotocore client, which resolves the endpoint
(region rules, addressing style, FIPS and dual-stack settings, custom endpoints) and signs it
(unless ``direct`` can make the template itself, for static credentials and a plain endpoint).
Its URL, up to the query, and its signing region then make a ``RequestTemplate``: later requests
only change the query, so they are built and signed here with the session's (refreshing)
credentials: SigV4 exactly as botocore's ``S3SigV4Auth`` writes it for a GET without a body
(the tests compare the two byte for byte), the signing key derived once a day and region rather
than four HMACs a request: a fraction of what botocore's signer costs, and far less than the
whole client (figures: benchmarks/results/design-figures-2026-12-03.md).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote, urlsplit

_QUERY_NAMES: Final = {
    "Prefix": "prefix",
    "StartAfter": "start-after",
    "ContinuationToken": "continuation-token",
    "Delimiter": "delimiter",
    "MaxKeys": "max-keys",
    "EncodingType": "encoding-type",
}
_SCOPE: Final = re.compile(r"Credential=[^/,]+/\d{8}/([^/,]+)/s3/aws4_request")
_CARRIED_HEADERS: Final = ("x-amz-request-payer",)
# What a GET without a body signs as its payload (botocore signs it so, over HTTP and HTTPS).
_EMPTY_SHA256: Final = hashlib.sha256(b"").hexdigest()
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class RequestTemplate:
    base_url: str
    region: str
    headers: tuple[tuple[str, str], ...]
    # What every request's canonical request shares: the path and the host header.
    path: str = field(init=False, compare=False)
    host: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        object.__setattr__(self, "path", parts.path or "/")
        object.__setattr__(self, "host", _host_header(self.base_url))

    def query_pairs(self, params: Mapping[str, Any]) -> list[str]:
        """The query's ``name=value`` pairs, percent-encoded, in the URL's order."""
        return ["list-type=2"] + [
            f"{_QUERY_NAMES[name]}={quote(str(value), safe='-_.~')}"
            for name, value in params.items()
            if name in _QUERY_NAMES
        ]

    def url(self, params: Mapping[str, Any]) -> str:
        return f"{self.base_url}?{'&'.join(self.query_pairs(params))}"


def _host_header(url: str) -> str:
    """The host header SigV4 signs: lower case, no default port, IPv6 in brackets."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None and parts.port != _DEFAULT_PORTS.get(parts.scheme):
        host = f"{host}:{parts.port}"
    return host


def template_from(prepared: Any) -> RequestTemplate | None:
    """A template from a request botocore prepared, or None when it was not plain SigV4."""
    headers = {name.lower(): _text(value) for name, value in prepared.headers.items()}
    match = _SCOPE.search(headers.get("authorization", ""))
    if match is None or "x-amz-s3session-token" in headers:
        return None  # unsigned, or S3 Express session auth: keep botocore for every request
    carried = tuple((name, headers[name]) for name in _CARRIED_HEADERS if name in headers)
    return RequestTemplate(prepared.url.partition("?")[0], match.group(1), carried)


def sign(
    template: RequestTemplate,
    params: Mapping[str, Any],
    credentials: Any,
    now: datetime | None = None,
) -> tuple[str, dict[str, str]]:
    """The URL and headers of a signed GET for ``params`` (SigV4, as botocore signs it).

    ``credentials`` has ``access_key``, ``secret_key`` and ``token`` (botocore's frozen
    credentials); ``now`` is for tests.
    """
    pairs = template.query_pairs(params)
    url = f"{template.base_url}?{'&'.join(pairs)}"
    timestamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    headers = dict(template.headers)
    headers["X-Amz-Date"] = timestamp
    if credentials.token:
        headers["X-Amz-Security-Token"] = credentials.token
    headers["X-Amz-Content-SHA256"] = _EMPTY_SHA256
    signed = sorted([("host", template.host), *((name.lower(), value) for name, value in headers.items())])
    signed_names = ";".join(name for name, _ in signed)
    canonical = "\n".join(
        (
            "GET",
            template.path,
            "&".join(sorted(pairs, key=_query_sort_key)),
            "".join(f"{name}:{' '.join(value.split())}\n" for name, value in signed),
            signed_names,
            _EMPTY_SHA256,
        )
    )
    scope = f"{timestamp[:8]}/{template.region}/s3/aws4_request"
    string_to_sign = "\n".join(
        ("AWS4-HMAC-SHA256", timestamp, scope, hashlib.sha256(canonical.encode("utf-8")).hexdigest())
    )
    key = _signing_key(credentials.secret_key, timestamp[:8], template.region)
    signature = hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
        f"SignedHeaders={signed_names}, Signature={signature}"
    )
    return url, headers


def _query_sort_key(pair: str) -> tuple[str, str]:
    # botocore sorts the (name, value) pairs, not the joined text: "a=b" and "a-b=c" differ.
    name, _, value = pair.partition("=")
    return name, value


@functools.lru_cache(maxsize=8)
def _signing_key(secret_key: str, date: str, region: str) -> bytes:
    """SigV4's derived key: one a day, region and secret (refreshed credentials get their own)."""
    key = f"AWS4{secret_key}".encode()
    for part in (date, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
    return key


def _text(value: str | bytes) -> str:
    return value.decode("ascii") if isinstance(value, bytes) else value
