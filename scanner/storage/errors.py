"""The one place where botocore's errors for object calls (get, put, multipart, delete) become the
scan's error tree; the listing hot path, which sends its own requests, maps S3's error codes
through ``scanner.errors.error_for_code``.

    with object_errors(ObjectCall("write", "writing", where, "output", "the output", needs)):
        await client.put_object(...)

Every message is one line, says what was being done where, and for a refusal which permission
the credentials need; anything that came from the server or a library is redacted.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

from scanner.errors import AccessError, BucketNotFoundError, EndpointError, ScanError, redact

# Codes (and bare statuses, from gateways that send no body) that mean "no such key".
MISSING_CODES: Final = frozenset({"NoSuchKey", "404", "NotFound"})
ACCESS_CODES: Final = frozenset(
    {"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"}
)


class ObjectMissing(ScanError):
    """The key does not exist (for callers that take that as an answer, not a failure)."""


@dataclass(frozen=True, slots=True)
class ObjectCall:
    """What a call does, for its error messages."""

    # "write" and "writing" (or "remove", "removing the checkpoint at"): what is done to ``where``.
    verb: str
    doing: str
    where: str
    # Whose bucket it is ("output", "state", "checkpoint"), and what is read or written.
    role: str
    what: str
    # The permissions a refusal says the credentials need.
    needs: str
    # A missing key is ``ObjectMissing`` (else a failure like any other).
    missing_is_an_answer: bool = False


@contextmanager
def object_errors(call: ObjectCall) -> Iterator[None]:
    # imported on first use, not with the module: start-up
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

    try:
        yield
    except ClientError as exc:
        raise _client_error(call, exc.response) from exc
    except NoCredentialsError as exc:
        raise AccessError(f"no AWS credentials found to {call.verb} {call.what}") from exc
    except EndpointConnectionError as exc:
        raise EndpointError(f"cannot connect to {call.verb} {call.where}") from exc
    except BotoCoreError as exc:
        raise ScanError(f"{call.doing} {call.where} failed: {redact(str(exc))}") from exc


def _client_error(call: ObjectCall, response: dict[str, Any]) -> ScanError:
    error = response.get("Error", {})
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    code = str(error.get("Code", "")) or (f"HTTP {status}" if status else "error")
    if code == "NoSuchBucket":
        return BucketNotFoundError(f"{call.role} bucket {_bucket_of(call.where)!r} does not exist")
    # Any other 404 is a missing key, whatever body a gateway in front of S3 sent with it.
    if call.missing_is_an_answer and (code in MISSING_CODES or status == 404):
        return ObjectMissing(f"{call.where} does not exist")
    if code in ACCESS_CODES:
        return AccessError(f"{code} {call.doing} {call.where}: the credentials need {call.needs}")
    message = redact(str(error.get("Message", "")))
    return ScanError(f"{code} {call.doing} {call.where}" + (f": {message}" if message else ""))


def _bucket_of(where: str) -> str:
    return where.removeprefix("s3://").split("/", 1)[0]
