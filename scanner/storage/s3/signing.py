"""Signing ListObjectsV2 requests without the whole botocore request pipeline.

The first request of a scan goes through the aiobotocore client, which resolves the endpoint
(region rules, addressing style, FIPS and dual-stack settings, custom endpoints) and signs it.
Its URL, up to the query, and its signing region then make a ``RequestTemplate``: later requests
only change the query, so they are built here and signed with botocore's own SigV4 signer and the
session's (refreshing) credentials. That costs about 70 µs a request instead of about 1 ms.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

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


@dataclass(frozen=True, slots=True)
class RequestTemplate:
    base_url: str
    region: str
    headers: tuple[tuple[str, str], ...]

    def url(self, params: Mapping[str, Any]) -> str:
        query = "list-type=2" + "".join(
            f"&{_QUERY_NAMES[name]}={quote(str(value), safe='-_.~')}"
            for name, value in params.items()
            if name in _QUERY_NAMES
        )
        return f"{self.base_url}?{query}"


def template_from(prepared: Any) -> RequestTemplate | None:
    """A template from a request botocore prepared, or None when it was not plain SigV4."""
    headers = {name.lower(): _text(value) for name, value in prepared.headers.items()}
    match = _SCOPE.search(headers.get("authorization", ""))
    if match is None or "x-amz-s3session-token" in headers:
        return None  # unsigned, or S3 Express session auth: keep botocore for every request
    carried = tuple((name, headers[name]) for name in _CARRIED_HEADERS if name in headers)
    return RequestTemplate(prepared.url.partition("?")[0], match.group(1), carried)


def sign(
    template: RequestTemplate, params: Mapping[str, Any], credentials: Any
) -> tuple[str, dict[str, str]]:
    """The URL and headers of a signed GET for ``params``."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest

    request = AWSRequest(method="GET", url=template.url(params), headers=dict(template.headers))
    S3SigV4Auth(credentials, "s3", template.region).add_auth(request)
    return request.url, {name: _text(value) for name, value in request.headers.items()}


def _text(value: str | bytes) -> str:
    return value.decode("ascii") if isinstance(value, bytes) else value
