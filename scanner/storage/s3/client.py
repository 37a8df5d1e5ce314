"""ListObjectsV2 over HTTP: botocore prepares and signs, ``http`` sends, ``parse`` reads.

aiobotocore (the session under aioboto3) stays in charge of everything that is hard to get right
and cheap per request: credentials from every AWS source (environment, profiles, SSO, IRSA/web
identity, instance roles, with refresh), region and endpoint rules, addressing style, request
payer and SigV4. It hands back the signed request through its ``before-send`` event, and this
module sends it with a plain GET (``http``: kept-alive asyncio streams, no aiohttp) so the
response never reaches botocore's XML parser, tens of times slower than ``parse``. When static
credentials in the environment and a plain region and endpoint decide it all, ``direct`` makes
the same request without importing botocore at all, most of start-up. (Figures:
benchmarks/results/design-figures-2026-12-03.md, benchmarks/results/startup-2026-12-03.md.)

Retries live here: transient statuses, throttling codes, dropped connections, timeouts and
damaged bodies are retried with exponential backoff and full jitter, each attempt signed anew.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
import random
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from scanner.config import MAX_KEYS_PER_PAGE, ConnectionConfig, S3Location
from scanner.errors import (
    TRANSIENT_CODES,
    TRANSIENT_STATUSES,
    AccessError,
    EndpointError,
    FolderPrefixRequired,
    ScanError,
    ServerOrderDiffers,
    StartAfterIgnored,
    UsageError,
    error_for_code,
    redact,
)
from scanner.keyspace import KeyRange
from scanner.storage.base import ListPage
from scanner.storage.limits import AdaptiveLimiter, limited, out_of_descriptors
from scanner.storage.s3.direct import direct_request
from scanner.storage.s3.http import ConnectFailed, ConnectionPool, HttpError, Response, TlsFailed
from scanner.storage.s3.parse import (
    ErrorDocument,
    MalformedListing,
    NotS3Response,
    parse_error,
    parse_list_page,
)
from scanner.storage.s3.signing import RequestTemplate, sign, template_from

_BACKOFF_BASE: Final = 0.1
_BACKOFF_CAP: Final = 10.0
_REGION_HEADER: Final = "x-amz-bucket-region"
_CONNECT_ATTEMPTS: Final = 4
_GC_THRESHOLD: Final = 20_000
# Without the version: the package's __init__ imports the run layer, which imports this module.
_USER_AGENT: Final = "bucket-scanner"
_log = logging.getLogger("scanner.storage")


@dataclass
class RequestStats:
    requests: int = 0
    retries: int = 0
    throttled: int = 0
    last_error: str = ""


class _Prepared(Exception):
    """Carries the signed request out of botocore's send path."""

    def __init__(self, request: Any) -> None:
        super().__init__()
        self.request = request


def _capture(request: Any, **_: Any) -> None:
    raise _Prepared(request)


class _Retry(Exception):
    def __init__(self, reason: str, *, throttled: bool = False, retry_after: float = 0.0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.throttled = throttled
        self.retry_after = retry_after


def _is_throttling(exc: BaseException) -> bool:
    return isinstance(exc, _Retry) and exc.throttled


@dataclass
class S3PageSource:
    """Lists pages of one bucket. Use as an async context manager."""

    location: S3Location
    config: ConnectionConfig
    stats: RequestStats = field(default_factory=RequestStats)
    _client: Any = None
    _client_context: Any = None
    _http: ConnectionPool | None = None
    # Clients opened for the bucket's region after a redirect (at most one): a redirect answered
    # to a request signed by an earlier client says nothing about the current one.
    _client_generation: int = 0
    _region_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _credentials: Any = None
    _template: RequestTemplate | None = None
    _use_template: bool = True
    limiter: AdaptiveLimiter = field(init=False)
    _limited_attempt: Callable[[Mapping[str, Any], KeyRange], Awaitable[ListPage]] = field(init=False)
    _secrets: tuple[str, ...] = ()

    async def __aenter__(self) -> S3PageSource:
        self.limiter = AdaptiveLimiter(self.config.concurrency)
        self._limited_attempt = limited(self._attempt, self.limiter, _is_throttling)
        # Loading a CA bundle releases the GIL: on a thread, it overlaps the client's set-up,
        # which is Python through and through.
        tls = None
        if self._may_use_tls():
            tls = asyncio.ensure_future(asyncio.to_thread(_tls_context, self._ca_bundle()))
        try:
            if not self._open_direct():
                await self._open_client(self.config.region)
        except BaseException:
            if tls is not None:
                tls.add_done_callback(_ignore_outcome)
            raise
        self._http = ConnectionPool(
            tls=await tls if tls is not None else None,
            connect_timeout=self.config.connect_timeout,
            read_timeout=self.config.read_timeout,
            keep=self.config.concurrency + 4,
            user_agent=_USER_AGENT,
        )
        _settle_collector()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            await self._http.close()
        if self._client_context is not None:
            await self._client_context.__aexit__(None, None, None)

    def _may_use_tls(self) -> bool:
        """False for a plain-HTTP endpoint and no ``--ca-bundle``: loading one would be wasted.

        An ambient ``AWS_CA_BUNDLE`` cannot apply to plain HTTP, so it is not read then. (The pool
        would still verify against the system's CAs, were an HTTPS URL ever sent.) Without
        ``--endpoint-url``, the endpoint botocore takes from the environment counts: it wins over
        any in the config file.
        """
        endpoint = self.config.endpoint_url or _environment_endpoint() or ""
        return not endpoint.lower().startswith("http://") or self.config.ca_bundle is not None

    def _ca_bundle(self) -> str:
        return self.config.ca_bundle or os.environ.get("AWS_CA_BUNDLE") or _default_ca_bundle()

    def _open_direct(self) -> bool:
        """The request template and credentials without botocore, when nothing else decides them."""
        direct = direct_request(self.location, self.config)
        if direct is None:
            return False
        credentials = self._credentials = direct.credentials
        self._template = direct.template
        self._secrets = tuple(
            s for s in (credentials.secret_key, credentials.token, credentials.access_key) if s
        )
        return True

    async def _open_client(self, region: str | None) -> None:
        # aiobotocore's session, not aioboto3's: the same credential chain, region and endpoint
        # rules, without importing boto3, s3transfer and aioboto3's resources. Imported here,
        # not at the top, so that these imports overlap the CA bundle's loading on its thread.
        from aiobotocore.session import get_session
        from botocore import UNSIGNED
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ProfileNotFound

        from scanner.storage.s3.models import use_fast_data_loader

        if self._client_context is not None:
            await self._client_context.__aexit__(None, None, None)
            self._client_context = None
        try:
            session = get_session()
            if self.config.profile is not None:
                session.set_config_variable("profile", self.config.profile)
            use_fast_data_loader(session)
            config = Config(
                signature_version=UNSIGNED if self.config.no_sign_request else "s3v4",
                s3={"addressing_style": self.config.addressing_style},
                retries={"max_attempts": 0},
            )
            self._client_context = session.create_client(
                "s3",
                endpoint_url=self.config.endpoint_url,
                region_name=region,
                config=config,
            )
            self._client = await self._client_context.__aenter__()
        except ProfileNotFound as exc:
            raise UsageError(f"AWS profile {self.config.profile!r} not found") from exc
        except BotoCoreError as exc:
            raise UsageError(f"cannot configure the S3 client: {redact(str(exc))}") from exc
        except ValueError as exc:
            raise UsageError(f"cannot configure the S3 client: {redact(str(exc))}") from exc
        self._client.meta.events.register("before-send.s3.ListObjectsV2", _capture)
        self._template = None
        self._use_template = not self.config.no_sign_request and not self.location.bucket.endswith("--x-s3")
        if not self.config.no_sign_request:
            credentials = self._credentials = await session.get_credentials()
            if credentials is not None:
                frozen = await credentials.get_frozen_credentials()
                self._secrets = tuple(s for s in (frozen.secret_key, frozen.token, frozen.access_key) if s)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Configured credential values, for scrubbing anything printed."""
        return self._secrets

    async def _signed(self, params: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
        """URL and headers of the signed request for ``params``."""
        template = self._template
        if template is not None:
            frozen = await self._credentials.get_frozen_credentials()
            return sign(template, params, frozen)
        request = await self._prepare(params)
        if self._use_template and self._credentials is not None:
            self._template = template_from(request)
        headers = {
            name: value.decode("ascii") if isinstance(value, bytes) else value
            for name, value in request.headers.items()
        }
        return request.url, headers

    async def _prepare(self, params: Mapping[str, Any]) -> Any:
        # imported on first use, not with the module: start-up
        from botocore.exceptions import BotoCoreError, NoCredentialsError, ParamValidationError

        try:
            await self._client.list_objects_v2(**params)
        except _Prepared as prepared:
            return prepared.request
        except NoCredentialsError as exc:
            raise AccessError(
                "no AWS credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                "a --profile, or use --no-sign-request for a public bucket)"
            ) from exc
        except ParamValidationError as exc:
            raise UsageError(redact(str(exc), self._secrets)) from exc
        except BotoCoreError as exc:
            raise AccessError(f"cannot sign the request: {redact(str(exc), self._secrets)}") from exc
        raise ScanError("the S3 client sent a request it was asked only to prepare")

    async def list_page(
        self,
        key_range: KeyRange,
        *,
        delimiter: str | None = None,
        token: str | None = None,
        max_keys: int = MAX_KEYS_PER_PAGE,
    ) -> ListPage:
        """One ListObjectsV2 page of ``key_range`` (from its ``start_after``), with retries."""
        params: dict[str, Any] = {
            "Bucket": self.location.bucket,
            "Prefix": key_range.request_prefix(),
            "EncodingType": "url",
            "MaxKeys": max_keys,
        }
        if token is not None:
            params["ContinuationToken"] = token
        elif key_range.start_after is not None:
            params["StartAfter"] = key_range.start_after
        if delimiter is not None:
            params["Delimiter"] = delimiter
        if self.config.request_payer:
            params["RequestPayer"] = "requester"

        attempt = 0
        while True:
            generation = self._client_generation
            try:
                return await self._limited_attempt(params, key_range)
            except _WrongRegion as wrong:
                await self._follow_region(wrong.region, generation)
            except _Retry as retry:
                attempt += 1
                self.stats.retries += 1
                self.stats.throttled += retry.throttled
                self.stats.last_error = retry.reason
                # A refused connection rarely heals within a scan: fail fast on it.
                budget = self.config.max_attempts
                if retry.reason.startswith("cannot connect"):
                    budget = min(budget, _CONNECT_ATTEMPTS)
                if attempt >= budget:
                    raise self._exhausted(retry, key_range) from None
                delay = random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2**attempt))
                if _log.isEnabledFor(logging.DEBUG):
                    fields = {
                        "where": _describe(self.location.bucket, key_range),
                        "attempt": attempt,
                        "of": budget,
                        "reason": retry.reason,
                        "delay": round(max(delay, retry.retry_after), 3),
                    }
                    _log.debug("request-retried", extra={"fields": fields})
                await asyncio.sleep(max(delay, retry.retry_after))

    async def _follow_region(self, region: str | None, signed_by: int) -> None:
        """Like the AWS CLI, follow a wrong-region redirect once: the bucket's region is
        authoritative. Requests sent concurrently are all redirected: one opens the new client,
        the others wait for it and are signed anew."""
        async with self._region_lock:
            if self._client_generation != signed_by:
                return
            if not region or self._client_generation > 0:
                hint = f" (it is in {region}: pass --region {region})" if region else ""
                raise UsageError(f"bucket {self.location.bucket!r} is not in the configured region{hint}")
            await self._open_client(region)
            self._client_generation += 1

    def _exhausted(self, retry: _Retry, key_range: KeyRange) -> ScanError:
        where = _describe(self.location.bucket, key_range)
        message = f"giving up on {where} after repeated failures: {retry.reason}"
        if retry.reason.startswith("cannot connect"):
            return EndpointError(message)
        return ScanError(message)

    async def _attempt(self, params: Mapping[str, Any], key_range: KeyRange) -> ListPage:
        signed_url, headers = await self._signed(params)
        self.stats.requests += 1
        response = await self._send(signed_url, headers)
        body, status = response.body, response.status
        region = response.headers.get(_REGION_HEADER)
        retry_after = response.headers.get("retry-after", "")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            if status == 200:
                # A damaged body: replacing the bad bytes would invent a key (and skip real ones).
                raise _Retry("malformed response (invalid UTF-8)") from None
            text = body.decode("utf-8", "replace")
        if status == 200:
            try:
                return parse_list_page(text, delimited="Delimiter" in params)
            except ErrorDocument as document:
                return self._raise_for_error(200, document, region, params, retry_after)
            except MalformedListing as exc:
                raise _Retry(f"malformed response ({exc})") from exc
            except NotS3Response as exc:
                raise EndpointError(
                    f"{self._endpoint_name(signed_url)} does not answer like an S3 endpoint: {exc}"
                ) from exc
        error = parse_error(text) or ErrorDocument(f"HTTP {status}", "")
        return self._raise_for_error(status, error, region, params, retry_after)

    async def _send(self, signed_url: str, headers: Mapping[str, str]) -> Response:
        """The answer to the signed GET; failures as ``_Retry`` or the error to stop with."""
        assert self._http is not None
        try:
            return await self._http.get(signed_url, headers)
        except TlsFailed as exc:
            endpoint = self._endpoint_name(signed_url)
            if exc.certificate:
                raise EndpointError(
                    f"TLS certificate verification failed for {endpoint}: "
                    f"{redact(str(exc.error), self._secrets)} (pass --ca-bundle for a private CA)"
                ) from exc
            raise EndpointError(
                f"TLS handshake with {endpoint} failed: {redact(str(exc.error), self._secrets)}"
            ) from exc
        except ConnectFailed as exc:
            if exc.os_error.errno in (errno.EMFILE, errno.ENFILE):
                # Not the endpoint's fault, and no retry helps while the scan holds them all.
                raise ScanError(
                    out_of_descriptors(f"connecting to {self._endpoint_name(signed_url)}")
                ) from exc
            raise _Retry(
                f"cannot connect to {self._endpoint_name(signed_url)}: "
                f"{redact(exc.os_error.strerror or str(exc.os_error), self._secrets)}"
            ) from exc
        except TimeoutError as exc:
            raise _Retry("connection error (timed out)") from exc
        except HttpError as exc:
            raise _Retry(f"connection error ({exc})") from exc

    def _raise_for_error(
        self,
        status: int,
        error: ErrorDocument,
        region: str | None,
        params: Mapping[str, Any],
        retry_after: str,
    ) -> ListPage:
        code = error.code
        if code in TRANSIENT_CODES or (status in TRANSIENT_STATUSES and code.startswith("HTTP")):
            throttled = status in (429, 503) or code in ("SlowDown", "Throttling", "TooManyRequests")
            wait = float(retry_after) if retry_after.isdigit() else 0.0
            raise _Retry(_status_text(code, status), throttled=throttled, retry_after=min(wait, 30))
        if status in TRANSIENT_STATUSES:
            raise _Retry(_status_text(code, status), throttled=status in (429, 503))
        if (
            code
            in ("PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException")
            or status == 301
        ):
            raise _WrongRegion(region, code)
        if status == 403 and code.startswith("HTTP"):
            code = "AccessDenied"
        if code.startswith("HTTP"):
            # No S3 error document: something other than S3 answered (a proxy, a web server).
            raise EndpointError(
                f"the endpoint answered HTTP {status} without an S3 error document; "
                "is the endpoint URL an S3 API endpoint?"
            )
        if status == 400 and code in _DIALECT_REFUSALS:
            refused = _refused_parameter(params, error.message)
            if refused is not None:
                raise refused
        raise error_for_code(code, error.message, self.location.bucket, self.location.prefix)

    def _endpoint_name(self, url: str) -> str:
        # needed on one path only (start-up)
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc}"


# What a server answers when a request uses what its dialect lacks (directory buckets refuse
# StartAfter and prefixes that do not end in "/"): a fact about the server, not a failure.
_DIALECT_REFUSALS: Final = frozenset({"InvalidArgument", "NotImplemented", "InvalidRequest"})


def _refused_parameter(params: Mapping[str, Any], message: str) -> ServerOrderDiffers | None:
    prefix = str(params.get("Prefix", ""))
    text = message.lower()
    if prefix and not prefix.endswith("/") and ("prefix" in text or "delimiter" in text):
        return FolderPrefixRequired(f"the server takes only prefixes that end in '/' ({message})")
    if "StartAfter" in params and ("start" in text or "after" in text or not text):
        return StartAfterIgnored(f"the server rejected StartAfter ({message or 'no reason given'})")
    return None


class _WrongRegion(ScanError):
    def __init__(self, region: str | None, code: str) -> None:
        super().__init__(code)
        self.region = region
        self.code = code


def _environment_endpoint() -> str | None:
    """The endpoint URL botocore reads from the environment for S3, if any."""
    if os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true":
        return None
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _default_ca_bundle() -> str:
    """botocore's default CA bundle (``get_cert_path(True)``): certifi's, else its own copy."""
    try:
        # start-up: certifi directly, not through botocore.httpsession and its imports
        import certifi
    except ImportError:
        from botocore.httpsession import get_cert_path

        return str(get_cert_path(True))
    return str(certifi.where())


def _tls_context(bundle: str) -> ssl.SSLContext:
    """A verifying TLS context with ``bundle``'s CAs. Imports nothing: it runs on a thread."""
    try:
        return ssl.create_default_context(cafile=bundle)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot read CA bundle {bundle!r}: {exc.strerror or exc}") from exc


def _ignore_outcome(future: asyncio.Future[Any]) -> None:
    """Retrieve a future's exception that nobody will ask for (asyncio warns otherwise)."""
    if not future.cancelled():
        future.exception()


def _settle_collector() -> None:
    """Keep the cyclic garbage collector out of a scan's way.

    The client holds some 40,000 objects (service model, endpoint rules) for the whole scan, and
    the imports behind it as many again; frozen, no collection walks them any more. A scan then
    makes records by the hundred thousand, none of them in a reference cycle: collecting every
    700 net allocations (the default) found nothing and cost about a fifth of the CPU of a
    100k-key scan after start-up. Every 20,000 still bounds what cyclic garbage can build up.
    """
    gc.freeze()
    threshold, *older = gc.get_threshold()
    if 0 < threshold < _GC_THRESHOLD:
        gc.set_threshold(_GC_THRESHOLD, *older)


def _status_text(code: str, status: int) -> str:
    return code if code == f"HTTP {status}" else f"{code} (HTTP {status})"


def _describe(bucket: str, key_range: KeyRange) -> str:
    """Where a range is, in words: the folder all its keys share, never its raw bounds.

    A range's bounds are often points between keys made up by the split (``'\u07c0,'``), which
    mean nothing to a user.
    """
    shared = key_range.request_prefix()
    folder = shared[: shared.rfind("/") + 1] if len(shared) > len(key_range.prefix) else ""
    where = f"s3://{bucket}/{show_key(max(folder, key_range.prefix, key=len))}"
    whole = key_range.start_after is None and key_range.end is None
    return where if whole or folder else f"part of {where}"


def show_key(key: str) -> str:
    """A key as it can be printed on one line: control and unprintable characters escaped."""
    if key.isprintable():
        return key
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in key)
