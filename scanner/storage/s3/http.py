"""HTTP/1.1 GETs over kept-alive asyncio streams: what a listing needs, and nothing more.

A ListObjectsV2 request is a GET of a signed URL with a few headers; its answer is a status, two
headers that matter and a body of a few hundred kilobytes. Importing aiohttp for that costs more
than a quarter of a second (most of a small scan's start-up: benchmarks/results/
startup-2026-12-03.md), and it adds a layer of Python per response. This client speaks the
subset of HTTP/1.1 S3 servers use: ``Content-Length`` or chunked bodies, optional gzip, keep-alive
with ``Connection: close`` honoured, 1xx answers skipped.

A kept-alive connection the server has closed meanwhile fails before any byte of the answer
arrives; the request is then sent once more on a new connection, as every HTTP client does for an
idempotent GET. Any other failure is the caller's to retry (with its backoff).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

# Large enough for any header block a server sends (the reader's limit bounds a line or header
# block, not the body).
_READ_LIMIT: Final = 1 << 20
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


class HttpError(Exception):
    """The connection broke or the answer was not HTTP/1.x: worth retrying."""


class ConnectFailed(Exception):
    """No connection could be made; ``os_error`` says why (refused, no such host, EMFILE...)."""

    def __init__(self, os_error: OSError) -> None:
        super().__init__(str(os_error))
        self.os_error = os_error


class TlsFailed(Exception):
    """The TLS handshake failed; ``certificate`` tells whether verification refused the peer."""

    def __init__(self, error: ssl.SSLError) -> None:
        super().__init__(str(error))
        self.error = error
        self.certificate = isinstance(error, ssl.SSLCertVerificationError)


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes


@dataclass(frozen=True, slots=True)
class _Origin:
    scheme: str
    host: str  # for connecting: no brackets around an IPv6 address
    port: int
    host_header: str


class _Connection:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.close()


def _origin(url: str) -> tuple[_Origin, str]:
    """The origin of ``url`` and its request target (path and query, as they stand)."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in _DEFAULT_PORTS:
        raise ValueError(f"not an http(s) URL: {url[:40]!r}")
    # The host ends at the path or, without one, at the query ("http://host:9000?prefix=a/b").
    ends = [at for at in (rest.find("/"), rest.find("?")) if at >= 0]
    cut = min(ends) if ends else len(rest)
    netloc, target = rest[:cut], rest[cut:]
    target = target if target.startswith("/") else "/" + target
    host, port = netloc, _DEFAULT_PORTS[scheme]
    if netloc.startswith("["):
        bracketed, _, after = netloc.partition("]")
        host = bracketed[1:]
        if after.startswith(":") and after[1:]:
            port = int(after[1:])
    elif ":" in netloc:
        host, _, number = netloc.rpartition(":")
        if number:
            port = int(number)
    # What botocore signs and aiohttp sends: the port only when it is not the scheme's own.
    shown = f"[{host}]" if ":" in host else host
    header = shown if port == _DEFAULT_PORTS[scheme] else f"{shown}:{port}"
    return _Origin(scheme, host, port, header), target


class ConnectionPool:
    """Kept-alive connections per origin, for GETs. Close it when done."""

    def __init__(
        self,
        *,
        tls: ssl.SSLContext | None,
        connect_timeout: float,
        read_timeout: float,
        keep: int,
        user_agent: str,
    ) -> None:
        self._tls = tls
        self._connect_timeout = connect_timeout
        # One deadline for the whole answer: a page is a few hundred kilobytes, and a server that
        # takes this long over one has stalled.
        self._read_timeout = read_timeout
        self._keep = keep
        self._user_agent = user_agent
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._origins: dict[str, _Origin] = {}

    async def get(self, url: str, headers: Mapping[str, str]) -> Response:
        origin, target = self._split(url)
        request = self._request(origin, target, headers)
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            if connection.reader.at_eof():
                connection.close()  # the server's close has arrived already: no need to try it
                continue
            answer = await self._exchange(connection, request, origin, reused=True)
            if answer is not None:
                return answer
        connection = await self._connect(origin)
        answer = await self._exchange(connection, request, origin, reused=False)
        assert answer is not None
        return answer

    async def close(self) -> None:
        """Closes the idle connections; the pool can still be used (it connects anew)."""
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()

    def _split(self, url: str) -> tuple[_Origin, str]:
        # Every URL of a scan has one origin: parse its scheme and host once.
        cut = url.find("/", url.find("://") + 3)
        query = url.find("?")
        if cut < 0 or 0 <= query < cut:
            return _origin(url)  # no path: the query follows the host (a "/" in it is no path)
        base = url[:cut]
        known = self._origins.get(base)
        if known is not None:
            return known, url[cut:]
        origin, target = _origin(url)
        self._origins[base] = origin
        return origin, target

    def _request(self, origin: _Origin, target: str, headers: Mapping[str, str]) -> bytes:
        lines = [f"GET {target} HTTP/1.1", f"Host: {origin.host_header}"]
        if "User-Agent" not in headers:
            lines.append(f"User-Agent: {self._user_agent}")
        lines.extend(f"{name}: {value}" for name, value in headers.items())
        lines.append("\r\n")
        return "\r\n".join(lines).encode("latin-1")

    async def _connect(self, origin: _Origin) -> _Connection:
        tls = None
        if origin.scheme == "https":
            tls = self._tls or ssl.create_default_context()
        try:
            async with asyncio.timeout(self._connect_timeout):
                reader, writer = await asyncio.open_connection(
                    origin.host,
                    origin.port,
                    ssl=tls,
                    server_hostname=origin.host if tls is not None else None,
                    limit=_READ_LIMIT,
                )
        except ssl.SSLError as exc:
            _drop_unawaited_handshake_errors(asyncio.get_running_loop())
            raise TlsFailed(exc) from exc
        except TimeoutError:
            raise  # an OSError too, kept apart: the caller tells a stall from a refusal
        except OSError as exc:
            raise ConnectFailed(exc) from exc
        return _Connection(reader, writer)

    async def _exchange(
        self, connection: _Connection, request: bytes, origin: _Origin, *, reused: bool
    ) -> Response | None:
        """The answer to ``request`` on ``connection``; None when a reused connection turned out
        to be closed before answering (send again on another)."""
        answered = False
        try:
            async with asyncio.timeout(self._read_timeout):
                connection.writer.write(request)
                await connection.writer.drain()
                status, headers = await _read_head(connection.reader)
                answered = True
                body, keep = await _read_body(connection.reader, status, headers)
            if headers.get("content-encoding", "identity").lower() not in ("identity", ""):
                body = _decoded(body, headers["content-encoding"])
        except TimeoutError:
            connection.close()
            raise  # an OSError too, kept apart: the caller tells a stall from a broken connection
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            connection.close()
            if reused and not answered and not _partial(exc):
                return None
            raise HttpError(_what(exc)) from exc
        except (OSError, asyncio.LimitOverrunError, ValueError, EOFError) as exc:
            connection.close()
            raise HttpError(_what(exc)) from exc
        except BaseException:
            # Cancelled mid-answer: the rest of it would come before the next one.
            connection.close()
            raise
        if keep:
            idle = self._idle.setdefault(origin, [])
            if len(idle) < self._keep:
                idle.append(connection)
            else:
                connection.close()
        else:
            connection.close()
        return Response(status, headers, body)


def _partial(exc: BaseException) -> bool:
    return isinstance(exc, asyncio.IncompleteReadError) and bool(exc.partial)


def _what(exc: BaseException) -> str:
    if isinstance(exc, asyncio.IncompleteReadError):
        return "the server closed the connection mid-answer"
    if isinstance(exc, ValueError):
        return f"not an HTTP answer ({exc})"
    return type(exc).__name__


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    while True:
        block = await reader.readuntil(b"\r\n\r\n")
        status_line, *lines = block[:-4].decode("latin-1").split("\r\n")
        version, _, rest = status_line.partition(" ")
        if not version.startswith("HTTP/1."):
            raise ValueError(f"status line {status_line[:40]!r}")
        status = int(rest[:3])
        if 100 <= status < 200 and status != 101:
            continue  # an interim answer: the real one follows
        headers: dict[str, str] = {}
        for line in lines:
            name, colon, value = line.partition(":")
            if not colon:
                raise ValueError(f"header line {line[:40]!r}")
            name = name.strip().lower()
            value = value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        if version == "HTTP/1.0" and headers.get("connection", "").lower() != "keep-alive":
            headers.setdefault("connection", "close")
        return status, headers


async def _read_body(
    reader: asyncio.StreamReader, status: int, headers: Mapping[str, str]
) -> tuple[bytes, bool]:
    """The body, and whether the connection can carry another request."""
    keep = "close" not in headers.get("connection", "").lower()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return await _read_chunks(reader), keep
    length = headers.get("content-length")
    if length is not None:
        return await reader.readexactly(int(length)), keep
    if status in (204, 304):
        return b"", keep
    return await reader.read(), False  # delimited by the end of the connection


async def _read_chunks(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        line = await reader.readuntil(b"\r\n")
        size = int(line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailers
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise ValueError("chunk not followed by CRLF")


def _decoded(body: bytes, encoding: str) -> bytes:
    import zlib  # rare: listings are sent uncompressed unless asked

    encoding = encoding.lower()
    try:
        if encoding in ("gzip", "x-gzip"):
            return zlib.decompress(body, 16 + zlib.MAX_WBITS)
        if encoding == "deflate":
            try:
                return zlib.decompress(body)
            except zlib.error:
                return zlib.decompress(body, -zlib.MAX_WBITS)
    except zlib.error as exc:
        raise ValueError(f"a damaged {encoding} body ({exc})") from None
    raise ValueError(f"content encoding {encoding!r}")


class _HandshakeErrorFilter:
    """A loop's exception handler that drops one report: a failed TLS handshake's error left in
    a future that nothing awaits (the stream protocol's close waiter, under uvloop), which the
    collector would otherwise print as a traceback beside the one line the caller reports. Every
    other report goes to the handler the loop had."""

    def __init__(self, previous: Any) -> None:
        self._previous = previous

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        unawaited = context.get("message") == "Future exception was never retrieved"
        if unawaited and isinstance(context.get("exception"), ssl.SSLError):
            return
        if self._previous is None:
            loop.default_exception_handler(context)
        else:
            self._previous(loop, context)


def _drop_unawaited_handshake_errors(loop: asyncio.AbstractEventLoop) -> None:
    previous = loop.get_exception_handler()
    if not isinstance(previous, _HandshakeErrorFilter):
        loop.set_exception_handler(_HandshakeErrorFilter(previous))
