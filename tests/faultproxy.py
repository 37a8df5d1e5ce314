"""A fault-injecting HTTP/1.1 reverse proxy, put between the scanner and a real S3 server.

The proxy forwards each request unchanged, ``Host`` header included: the scanner signs for the
address it connects to (the proxy's), and the S3 server checks the SigV4 signature against the
``Host`` it receives, so the signature stays valid. A seeded RNG decides per request whether to
inject a fault and which one (``rate`` and a weighted ``kinds`` mix), and the proxy counts what it
did, so a test can compare the scanner's summary with the faults it really met.

Fault kinds (``FAULT_KINDS``)::

    slowdown_503       503 with an S3 ``SlowDown`` error document (not forwarded)
    throttle_429       429 ``TooManyRequests`` (not forwarded)
    internal_500       500 ``InternalError`` (not forwarded)
    bad_gateway_502    502 with an HTML body, as a load balancer sends it (not forwarded)
    timeout_504        504 with an HTML body (not forwarded)
    reset_before       the connection is reset (RST) before any byte of a response
    reset_mid_body     headers and part of the real body, then a reset
    truncated_xml      status 200, the real body cut short, Content-Length matching the cut
    malformed_xml      status 200, the real body with broken markup (a tag without its ``>``,
                       an entry whose ``<Key>`` was renamed, a body cut mid-entry and closed
                       again, a misspelt ``</IsTruncated>``)
    invalid_utf8       status 200, the real body with the second byte of two keys (the page's
                       last one and one more) replaced by 0xFF
    error_200          status 200 whose body is an S3 ``<Error>`` document
    slow               nothing for ``stall`` seconds (or headers and part of the body, then
                       nothing), then the connection is closed: slower than a read timeout
    ignore_start_after a server that ignores ``StartAfter``: the proxy signs its own request
                       without ``start-after`` (the scanner's signature covers the query, so
                       it cannot just strip it) and returns that listing
    repeat_token       an empty truncated page whose NextContinuationToken, when followed, comes
                       back again and again (the loop aiobotocore's paginator guards against)
    echo_credentials   400 whose error message echoes the request's Authorization header,
                       session token and URL (servers that reflect the request in an error)

``select`` limits faults to the requests it accepts; ``latency`` (seconds, or a function of the
request) delays answers (S3 takes 75-300 ms a page, RGW on loopback a few ms), which
makes requests in flight visible: ``samples`` holds (monotonic time, requests in flight) after
every change, for tests of how a client paces itself.

Runs its own event loop in a daemon thread, so it serves synchronous and async tests alike.
"""

from __future__ import annotations

import asyncio
import random
import re
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

import aiohttp
from yarl import URL

FAULT_KINDS: Final = (
    "slowdown_503",
    "throttle_429",
    "internal_500",
    "bad_gateway_502",
    "timeout_504",
    "reset_before",
    "reset_mid_body",
    "truncated_xml",
    "malformed_xml",
    "invalid_utf8",
    "error_200",
    "slow",
    "ignore_start_after",
    "repeat_token",
    "echo_credentials",
)
# Faults a correct client retries through to an exact result (``slow`` too, but only with a
# short read timeout).
TRANSIENT_KINDS: Final = (
    "slowdown_503",
    "throttle_429",
    "internal_500",
    "bad_gateway_502",
    "timeout_504",
    "reset_before",
    "reset_mid_body",
    "truncated_xml",
    "malformed_xml",
    "error_200",
)

_HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)
_REPEAT_PREFIX: Final = "fault-repeat-"
_SIGNATURE: Final = re.compile(r"Signature=([0-9a-f]{64})")
_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def s3_error(code: str, message: str, extra: str = "") -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>{extra}"
        "<RequestId>4442587FB7D0A2F9</RequestId><HostId>fault-proxy</HostId></Error>"
    ).encode()


def _html(status: int) -> bytes:
    title = f"{status} {_REASONS[status]}"
    return f"<html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>".encode()


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass
class Request:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(self.target.partition("?")[2], keep_blank_values=True))

    def header(self, name: str) -> str:
        lowered = name.lower()
        return next((value for key, value in self.headers if key.lower() == lowered), "")


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


class _Abort(Exception):
    """Ends a client connection without another response."""


class FaultProxy:
    """``with FaultProxy(upstream, rate=0.2, kinds=TRANSIENT_KINDS) as proxy: proxy.url``."""

    def __init__(
        self,
        upstream: str,
        *,
        rate: float = 0.0,
        kinds: Sequence[str] | Mapping[str, float] = TRANSIENT_KINDS,
        seed: int = 0,
        from_request: int = 1,
        schedule: Mapping[int, str] | None = None,
        stall: float = 5.0,
        latency: float | Callable[[Request], float] = 0.0,
        select: Callable[[Request], bool] | None = None,
        credentials: tuple[str, str] | None = None,
        region: str = "us-east-1",
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.stall = stall
        self.latency = latency
        self.select = select
        self._credentials = credentials
        self._region = region
        self._lock = threading.Lock()
        self.configure(rate=rate, kinds=kinds, seed=seed, from_request=from_request, schedule=schedule or {})
        self.requests = 0
        # ListObjectsV2 requests among them (a scan's checkpoint saves and state are not).
        self.listings = 0
        self.forwarded = 0
        self.faults: Counter[str] = Counter()
        # Follow-ups of a repeated token: the scanner asking again for a page it already had.
        self.repeat_replies = 0
        self.signatures: set[str] = set()
        self.in_flight = 0
        self.samples: list[tuple[float, int]] = []
        self._repeat_numbers = 0
        self._owed_start_after = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._session: aiohttp.ClientSession | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.port = 0

    # -- configuration and counters (any thread) -------------------------------------------

    def configure(
        self,
        *,
        rate: float | None = None,
        kinds: Sequence[str] | Mapping[str, float] | None = None,
        seed: int | None = None,
        from_request: int | None = None,
        schedule: Mapping[int, str] | None = None,
    ) -> None:
        """Set the fault rate and mix; ``from_request`` spares the requests before that number,
        and ``schedule`` forces a kind on given request numbers (1-based, in arrival order)."""
        with self._lock:
            if from_request is not None:
                self._from_request = from_request
            if schedule is not None:
                if set(schedule.values()) - set(FAULT_KINDS):
                    raise ValueError(f"unknown fault kinds in {schedule}")
                self._schedule = dict(schedule)
            if rate is not None:
                self.rate = rate
            if kinds is not None:
                weights = dict(kinds) if isinstance(kinds, Mapping) else dict.fromkeys(kinds, 1.0)
                unknown = set(weights) - set(FAULT_KINDS)
                if unknown:
                    raise ValueError(f"unknown fault kinds: {sorted(unknown)}")
                self._kinds = list(weights)
                self._weights = list(weights.values())
            if seed is not None:
                self._rng = random.Random(seed)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def faulted(self) -> int:
        with self._lock:
            return sum(self.faults.values())

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {"requests": self.requests, "forwarded": self.forwarded, **self.faults}

    def _choose(self, request: Request) -> tuple[str | None, bool]:
        """The fault for this request, if any, and whether the schedule forced it."""
        selected = self.select is None or self.select(request)
        with self._lock:
            self.requests += 1
            if "list-type" in request.query:
                self.listings += 1
            # Always two draws, so the fault sequence depends on the seed and request count only.
            roll = self._rng.random()
            kind = self._rng.choices(self._kinds, self._weights)[0] if self._kinds else None
            if self.requests in self._schedule:
                return self._schedule[self.requests], True
            if self._owed_start_after and "start-after" in request.query:
                self._owed_start_after -= 1
                return "ignore_start_after", True
            if self.requests < self._from_request or not selected:
                return None, False
            return (kind if roll < self.rate else None), False

    def _count(self, kind: str) -> None:
        with self._lock:
            self.faults[kind] += 1

    def _flight(self, change: int) -> None:
        with self._lock:
            self.in_flight += change
            self.samples.append((time.monotonic(), self.in_flight))

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        loop = self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._open(), loop).result(timeout=10)
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        assert self._thread is not None
        self._thread.join(timeout=10)
        loop.close()
        self._loop = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _open(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64),
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type", "Accept"),
            timeout=aiohttp.ClientTimeout(total=120),
        )
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=1 << 20)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        assert self._server is not None
        assert self._session is not None
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._session.close()

    # -- one client connection --------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while True:
                request = await _read_request(reader, writer)
                if request is None:
                    break
                self._flight(+1)
                try:
                    delay = self.latency(request) if callable(self.latency) else self.latency
                    if delay:
                        await asyncio.sleep(delay)
                    await self._handle(request, writer)
                finally:
                    self._flight(-1)
                if request.header("Connection").lower() == "close":
                    break
        except (_Abort, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._connections.discard(task)
            if not writer.transport.is_closing():
                writer.transport.abort()

    async def _handle(self, request: Request, writer: asyncio.StreamWriter) -> None:
        signature = _SIGNATURE.search(request.header("Authorization"))
        if signature is not None:
            with self._lock:
                self.signatures.add(signature.group(1))
        query = request.query
        token = query.get("continuation-token", "")
        kind, forced = self._choose(request)
        if token.startswith(_REPEAT_PREFIX):
            with self._lock:
                self.repeat_replies += 1
            await _send(writer, _repeat_page(query, token))
            return
        if kind in ("slowdown_503", "throttle_429", "internal_500", "bad_gateway_502", "timeout_504"):
            self._count(kind)
            await _send(writer, _status_fault(kind))
        elif kind == "reset_before":
            self._count(kind)
            _reset(writer)
        elif kind == "error_200":
            self._count(kind)
            code = self._pick(("InternalError", "SlowDown"))
            await _send(writer, Response(200, [("Content-Type", "application/xml")], s3_error(code, "x")))
        elif kind == "echo_credentials":
            self._count(kind)
            await _send(writer, _echo(request))
        elif kind == "slow":
            self._count(kind)
            await self._slow(request, writer)
        elif kind == "repeat_token" and not token:
            self._count(kind)
            with self._lock:
                self._repeat_numbers += 1
                number = self._repeat_numbers
            await _send(writer, _repeat_page(query, f"{_REPEAT_PREFIX}{number}"))
        elif kind == "ignore_start_after" and "start-after" in query and not token:
            self._count(kind)
            await _send(writer, await self._without_start_after(request))
        elif kind == "ignore_start_after" and forced:
            # Forced on a request without StartAfter (which requests carry one depends on how
            # the client's tasks interleave): the next request that does gets it instead.
            with self._lock:
                self._owed_start_after += 1
            await _send(writer, await self._forward(request))
        else:
            response = await self._forward(request)
            if kind in ("reset_mid_body", "truncated_xml", "malformed_xml", "invalid_utf8"):
                damaged = self._damage(kind, response)
                if damaged is not None:
                    self._count(kind)
                    if kind == "reset_mid_body":
                        await _send_part_then_reset(writer, response)
                        return
                    response = damaged
            await _send(writer, response)

    def _pick(self, options: Sequence[Any]) -> Any:
        with self._lock:
            return self._rng.choice(options)

    def _uniform(self, low: float, high: float) -> float:
        with self._lock:
            return self._rng.uniform(low, high)

    async def _forward(self, request: Request) -> Response:
        assert self._session is not None
        headers = [(k, v) for k, v in request.headers if k.lower() not in _HOP_BY_HOP]
        return await self._fetch(request.method, request.target, headers, request.body)

    async def _fetch(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes) -> Response:
        assert self._session is not None
        with self._lock:
            self.forwarded += 1
        url = URL(self.upstream + target, encoded=True)
        async with self._session.request(
            method, url, headers=headers, data=body or None, allow_redirects=False
        ) as upstream:
            data = await upstream.read()
            kept = [(k, v) for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP]
            return Response(upstream.status, kept, data)

    def _damage(self, kind: str, response: Response) -> Response | None:
        """``response`` damaged as ``kind`` says, or None when it cannot be (not a 200 listing)."""
        body = response.body
        if response.status != 200 or b"<ListBucketResult" not in body:
            return None
        if kind == "reset_mid_body":
            return response
        if kind == "truncated_xml":
            cut = int(len(body) * self._uniform(0.05, 0.95))
            return Response(200, response.headers, body[:cut])
        if kind == "invalid_utf8":
            keys = [m.start(1) for m in re.finditer(rb"<Key>([^<]{2,})</Key>", body)]
            if not keys:
                return None
            # The last key (a client pages on from it) and one more, anywhere.
            for at in {keys[-1] + 1, self._pick(keys) + 1}:
                body = body[:at] + b"\xff" + body[at + 1 :]
            return Response(200, response.headers, body)
        return Response(200, response.headers, self._malform(body))

    def _malform(self, body: bytes) -> bytes:
        """``body`` made not well-formed, in one of a few ways a regex parser could miss."""
        closings = [m.start() for m in re.finditer(rb"</Contents>", body)]
        if not closings:
            return body.replace(b"</IsTruncated>", b"</IsTruncatd>", 1)
        way = self._pick(("unclosed_tag", "renamed_key", "cut_and_closed", "misspelt_truncated"))
        at = self._pick(closings)
        if way == "unclosed_tag":
            end = at + len(b"</Contents")
            return body[:end] + body[end + 1 :]
        if way == "renamed_key":
            opening = body.rfind(b"<Key>", 0, at)
            return body[:opening] + b"<Kex>" + body[opening + len(b"<Key>") :]
        if way == "cut_and_closed":
            key = body.rfind(b"<Key>", 0, at) + len(b"<Key>") + 1
            return body[:key] + b"</ListBucketResult>"
        return body.replace(b"</IsTruncated>", b"</IsTruncatd>", 1)

    async def _slow(self, request: Request, writer: asyncio.StreamWriter) -> None:
        if self._pick(("before_headers", "mid_body")) == "mid_body":
            response = await self._forward(request)
            writer.write(_head(response) + response.body[: len(response.body) // 3])
            await writer.drain()
        await asyncio.sleep(self.stall)
        raise _Abort

    async def _without_start_after(self, request: Request) -> Response:
        """The listing the request asks for, as a server that ignores StartAfter answers it."""
        if self._credentials is None:
            raise ValueError("ignore_start_after needs the upstream credentials")
        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        path, _, query = request.target.partition("?")
        kept = "&".join(part for part in query.split("&") if not part.startswith("start-after="))
        url = f"{self.upstream}{path}?{kept}"
        signed = AWSRequest(method="GET", url=url)
        S3SigV4Auth(Credentials(*self._credentials), "s3", self._region).add_auth(signed)
        headers = [(k, v.decode() if isinstance(v, bytes) else v) for k, v in signed.headers.items()]
        headers.append(("Host", urlsplit(self.upstream).netloc))
        return await self._fetch("GET", f"{path}?{kept}", headers, b"")


async def _read_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise
        return None
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
    length = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
    if any(k.lower() == "expect" and v.lower() == "100-continue" for k, v in headers):
        # botocore sends uploads this way and waits for the go-ahead before the body; the
        # request is forwarded whole, without the expectation.
        headers = [(k, v) for k, v in headers if k.lower() != "expect"]
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
    body = await reader.readexactly(length) if length else b""
    return Request(method, target, headers, body)


def _head(response: Response) -> bytes:
    lines = [f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Unknown')}"]
    lines += [f"{name}: {value}" for name, value in response.headers]
    lines += [f"Content-Length: {len(response.body)}", "Connection: keep-alive", "", ""]
    return "\r\n".join(lines).encode("latin-1")


async def _send(writer: asyncio.StreamWriter, response: Response) -> None:
    writer.write(_head(response) + response.body)
    await writer.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), not a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
    raise _Abort


async def _send_part_then_reset(writer: asyncio.StreamWriter, response: Response) -> None:
    writer.write(_head(response) + response.body[: len(response.body) // 2])
    await writer.drain()
    # Let the client read what was sent before the RST discards it.
    await asyncio.sleep(0.05)
    _reset(writer)


def _status_fault(kind: str) -> Response:
    xml = [("Content-Type", "application/xml")]
    if kind == "slowdown_503":
        return Response(503, xml, s3_error("SlowDown", "Please reduce your request rate."))
    if kind == "throttle_429":
        return Response(429, xml, s3_error("TooManyRequests", "Too many requests."))
    if kind == "internal_500":
        return Response(500, xml, s3_error("InternalError", "We encountered an internal error."))
    status = 502 if kind == "bad_gateway_502" else 504
    return Response(status, [("Content-Type", "text/html")], _html(status))


def _repeat_page(query: Mapping[str, str], token: str) -> Response:
    """An empty, truncated page whose next token is ``token`` (again, when it was followed)."""
    continuation = query.get("continuation-token")
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        f"<Name>bucket</Name><Prefix>{_xml_escape(query.get('prefix', ''))}</Prefix>"
        f"<MaxKeys>{_xml_escape(query.get('max-keys', '1000'))}</MaxKeys><KeyCount>0</KeyCount>"
        + (f"<ContinuationToken>{_xml_escape(continuation)}</ContinuationToken>" if continuation else "")
        + f"<NextContinuationToken>{token}</NextContinuationToken>"
        "<EncodingType>url</EncodingType><IsTruncated>true</IsTruncated></ListBucketResult>"
    ).encode()
    return Response(200, [("Content-Type", "application/xml")], body)


def _echo(request: Request) -> Response:
    """400 whose message carries the request's credentials, as some servers reflect them."""
    message = (
        f"Invalid argument. Authorization: {request.header('Authorization')}; "
        f"x-amz-security-token: {request.header('X-Amz-Security-Token')}; "
        f"url: http://{request.header('Host')}{request.target}"
    )
    extra = (
        f"<AWSAccessKeyId>{_xml_escape(request.header('Authorization'))}</AWSAccessKeyId>"
        f"<CanonicalRequest>{_xml_escape(request.target)}</CanonicalRequest>"
    )
    body = s3_error("InvalidArgument", _xml_escape(message), extra)
    return Response(400, [("Content-Type", "application/xml")], body)


@contextmanager
def fault_proxy(upstream: str, **options: Any) -> Iterator[FaultProxy]:
    with FaultProxy(upstream, **options) as proxy:
        yield proxy
