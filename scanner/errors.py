"""The errors a scan can end with, each tied to a documented exit code.

::

    ScanError (1)                  any other failure after retries
    ├── UsageError (2)             bad URI, bad option, output location unusable
    ├── AccessError (3)            missing or wrong credentials, access denied
    ├── BucketNotFoundError (4)    the bucket does not exist
    ├── EndpointError (5)          endpoint unreachable, not S3, or TLS failure
    └── Interrupted (130)          SIGINT stopped the run
        └── Terminated (143)       SIGTERM stopped the run

Every message is one line meant for the user; none carries a secret (``redact`` is applied to
anything that came from a library or a server). Cancellation is not an error and never becomes
one of these.
"""

from __future__ import annotations

import re
import signal
from typing import ClassVar, Final

_SECRET_PATTERNS: Final = (
    # SigV4 query and header parts, and session tokens.
    re.compile(r"(?i)(X-Amz-(?:Signature|Credential|Security-Token)=)[^&\s\"']+"),
    re.compile(r"(?i)(Signature=)[0-9a-f]+"),
    re.compile(r"(?i)(Credential=)[^,\s/]+"),
    re.compile(
        r"(?i)((?:aws_)?(?:secret_access_key|session_token|access_key_id)['\"]?\s*[:=]\s*['\"]?)[^'\"\s,}]+"
    ),
    # Anything shaped like an AWS access key id.
    re.compile(r"\b((?:AKIA|ASIA))[A-Z0-9]{16}\b"),
)


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Remove credentials from text that may have come from a library or a server."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + "[redacted]", text)
    return " ".join(text.split())


class ScanError(Exception):
    exit_code: ClassVar[int] = 1


class UsageError(ScanError):
    exit_code: ClassVar[int] = 2


class AccessError(ScanError):
    exit_code: ClassVar[int] = 3


class BucketNotFoundError(ScanError):
    exit_code: ClassVar[int] = 4


class EndpointError(ScanError):
    exit_code: ClassVar[int] = 5


class ServerOrderDiffers(ScanError):
    """The server does not list the way the ranged strategy relies on (UTF-8 byte order and an
    honoured ``StartAfter``): a fact about the server, learned from one of its answers.

    Never a failure the user sees: the scan switches to the order-independent listing. It is a
    ``ScanError`` only so that code which meets it outside a scan (a plan) still says why.
    """


class StartAfterIgnored(ServerOrderDiffers):
    """The server returned keys at or before ``StartAfter``, or rejected the parameter."""


class FolderPrefixRequired(ServerOrderDiffers):
    """The server takes only prefixes that end in ``/`` (directory buckets)."""


class InconsistentListing(ScanError):
    """The server's own pagination contradicts itself (a key returned twice): no listing of
    it can be trusted to be complete, so the scan refuses rather than write a wrong output."""


class Interrupted(ScanError):
    """SIGINT stopped the run (exit 128 + 2); the output is aborted, so nothing is left there."""

    exit_code: ClassVar[int] = 130
    signal_name: ClassVar[str] = "interrupted"


class Terminated(Interrupted):
    """SIGTERM stopped the run (exit 128 + 15), as Kubernetes does to a pod it stops."""

    exit_code: ClassVar[int] = 143
    signal_name: ClassVar[str] = "terminated"


def stopped_by(signum: int) -> Interrupted:
    """The error for the signal ``signum`` (SIGTERM, else SIGINT)."""
    kind = Terminated if signum == signal.SIGTERM else Interrupted
    return kind(kind.signal_name)


class OutputClosed(Exception):
    """The reader of standard output went away (for example ``scanner ... | head``)."""


CREDENTIAL_CODES: Final = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "InvalidSecurity",
        "AuthorizationQueryParametersError",
    }
)
ACCESS_DENIED_CODES: Final = frozenset({"AccessDenied", "AllAccessDisabled", "AccountProblem"})
TRANSIENT_CODES: Final = frozenset(
    {
        "SlowDown",
        "ServiceUnavailable",
        "InternalError",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "Throttling",
        "ThrottlingException",
        "TooManyRequests",
        "503 SlowDown",
    }
)
TRANSIENT_STATUSES: Final = frozenset({429, 500, 502, 503, 504})


def error_for_code(code: str, message: str, bucket: str, prefix: str) -> ScanError:
    """The error a non-transient S3 error code means for a listing of ``bucket``/``prefix``."""
    where = f"s3://{bucket}/{prefix}"
    if code == "NoSuchBucket":
        return BucketNotFoundError(f"bucket {bucket!r} does not exist")
    if code in ACCESS_DENIED_CODES:
        return AccessError(
            f"access denied listing {where}: the credentials need s3:ListBucket on "
            f"arn:aws:s3:::{bucket} (the bucket ARN, not /*)" + (f" for prefix {prefix!r}" if prefix else "")
        )
    if code in CREDENTIAL_CODES:
        hint = {
            "InvalidAccessKeyId": "the access key id is not known to this endpoint",
            "SignatureDoesNotMatch": "the secret access key is wrong for this access key id",
            "ExpiredToken": "the session credentials have expired",
        }.get(code, "the credentials were rejected")
        return AccessError(f"{code} listing {where}: {hint}")
    if code == "InvalidBucketName":
        return UsageError(f"invalid bucket name {bucket!r}")
    detail = f": {redact(message)}" if message else ""
    return ScanError(f"{code} listing {where}{detail}")


def first_failure(exc: BaseException) -> BaseException:
    """The error that matters inside (possibly nested) exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        failures = [first_failure(e) for e in exc.exceptions]
        for failure in failures:
            if isinstance(failure, ScanError | OutputClosed):
                return failure
        return failures[0]
    return exc
