"""The listing's HTTP/1.1 client against a scripted server over real TCP: framing, keep-alive,
reconnecting after a server closed an idle connection, and the failures it reports."""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import Awaitable, Callable

import pytest

from scanner.storage.s3.http import ConnectFailed, ConnectionPool, HttpError, Response, _origin

# One scripted answer: what the server writes back for a request, and whether it then closes.
Script = Callable[[int], tuple[bytes, bool]]


class ScriptedServer:
    """Answers request N of the whole run with ``script(N)``; counts connections, keeps requests."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[bytes] = []
        self.handlers: list[asyncio.Task[None]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self.handlers.append(task)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                self.requests.append(head)
                answer, close = self.script(len(self.requests) - 1)
                writer.write(answer)
                await writer.drain()
                if close:
                    return
        finally:
            writer.close()


def _answer(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    lines = [f"HTTP/1.1 {status}", *headers, "", ""]
    return "\r\n".join(lines).encode() + body


def _sized(body: bytes, *headers: str) -> bytes:
    return _answer(body, f"Content-Length: {len(body)}", *headers)


def _pool(read_timeout: float = 5.0) -> ConnectionPool:
    return ConnectionPool(
        tls=None, connect_timeout=5.0, read_timeout=read_timeout, keep=4, user_agent="test/1"
    )


def _run(script: Script, client: Callable[[str, ScriptedServer], Awaitable[None]]) -> ScriptedServer:
    served = ScriptedServer(script)

    async def main() -> None:
        server = await asyncio.start_server(served.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            await client(f"http://127.0.0.1:{port}/bucket?list-type=2&prefix=a%2Fb", served)
            # The client has closed its connections: each handler sees the end and returns.
            await asyncio.wait_for(asyncio.gather(*served.handlers), 5)

    asyncio.run(main())
    return served


def test_sized_bodies_share_one_kept_alive_connection() -> None:
    answers: list[Response] = []

    async def client(url: str, _: ScriptedServer) -> None:
        pool = _pool()
        for _round in range(3):
            answers.append(await pool.get(url, {"X-Amz-Date": "20261203T000000Z"}))
        await pool.close()

    served = _run(lambda n: (_sized(f"page {n}".encode(), "x-amz-bucket-region: eu-west-1"), False), client)
    assert [a.body for a in answers] == [b"page 0", b"page 1", b"page 2"]
    assert answers[0].status == 200
    assert answers[0].headers["x-amz-bucket-region"] == "eu-west-1"
    assert served.connections == 1
    request = served.requests[0].decode()
    assert request.startswith("GET /bucket?list-type=2&prefix=a%2Fb HTTP/1.1\r\n")
    assert "\r\nHost: 127.0.0.1:" in request  # a port that is not the scheme's own is part of it
    assert "\r\nX-Amz-Date: 20261203T000000Z\r\n" in request
    assert "\r\nUser-Agent: test/1\r\n" in request


def test_chunked_body_with_extensions_and_trailers() -> None:
    chunked = b"5;name=x\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n"
    got: list[Response] = []

    async def client(url: str, _: ScriptedServer) -> None:
        pool = _pool()
        got.append(await pool.get(url, {}))
        got.append(await pool.get(url, {}))  # the connection is still usable after the trailers
        await pool.close()

    served = _run(lambda n: (_answer(chunked, "Transfer-Encoding: chunked"), False), client)
    assert [r.body for r in got] == [b"hello, world", b"hello, world"]
    assert served.connections == 1


def test_connection_close_is_honoured_and_a_new_one_opened() -> None:
    async def client(url: str, _: ScriptedServer) -> None:
        pool = _pool()
        assert (await pool.get(url, {})).body == b"one"
        assert (await pool.get(url, {})).body == b"two"
        await pool.close()

    bodies = [b"one", b"two"]
    served = _run(lambda n: (_sized(bodies[n], "Connection: close"), True), client)
    assert served.connections == 2


def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    async def client(url: str, _: ScriptedServer) -> None:
        pool = _pool()
        assert (await pool.get(url, {})).body == b"first"
        await asyncio.sleep(0.05)  # the server has closed it by now, without saying so
        assert (await pool.get(url, {})).body == b"second"
        await pool.close()

    bodies = [b"first", b"second"]
    served = _run(lambda n: (_sized(bodies[n]), True), client)
    assert served.connections == 2


def test_a_kept_alive_connection_closed_as_the_request_arrives_is_retried_once_on_a_new_one() -> None:
    bodies = {0: b"first", 2: b"second"}

    async def client(url: str, _: ScriptedServer) -> None:
        pool = _pool()
        assert (await pool.get(url, {})).body == b"first"
        assert (await pool.get(url, {})).body == b"second"
        await pool.close()

    # Request 1 arrives on the kept-alive connection and is dropped unanswered, as a server that
    # closes an idle connection at that moment does; the client sends it again (request 2).
    served = _run(lambda n: (_sized(bodies[n]), False) if n != 1 else (b"", True), client)
    assert served.connections == 2
    assert len(served.requests) == 3


def test_a_body_cut_short_is_an_error_not_a_short_page() -> None:
    async def client(url: str, _: ScriptedServer) -> None:
        pool = _pool()
        with pytest.raises(HttpError, match="closed the connection mid-answer"):
            await pool.get(url, {})
        await pool.close()

    _run(lambda n: (_answer(b"only part", "Content-Length: 100"), True), client)


def test_interim_answers_are_skipped_and_gzip_is_decoded() -> None:
    body = gzip.compress(b"<ListBucketResult/>")
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"

    async def client(url: str, _: ScriptedServer) -> None:
        pool = _pool()
        response = await pool.get(url, {})
        assert (response.status, response.body) == (200, b"<ListBucketResult/>")
        await pool.close()

    _run(lambda n: (interim + _sized(body, "Content-Encoding: gzip"), False), client)


def test_a_body_delimited_by_the_end_of_the_connection() -> None:
    async def client(url: str, _: ScriptedServer) -> None:
        pool = _pool()
        response = await pool.get(url, {})
        assert (response.status, response.body) == (503, b"busy")
        await pool.close()

    _run(lambda n: (_answer(b"busy", status="503 Slow Down"), True), client)


def test_an_answer_that_is_not_http() -> None:
    async def client(url: str, _: ScriptedServer) -> None:
        pool = _pool()
        with pytest.raises(HttpError, match="not an HTTP answer"):
            await pool.get(url, {})
        await pool.close()

    _run(lambda n: (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", True), client)


def test_a_server_that_stalls_times_out() -> None:
    async def client(url: str, _: ScriptedServer) -> None:
        pool = _pool(read_timeout=0.2)
        with pytest.raises(TimeoutError):
            await pool.get(url, {})
        await pool.close()

    _run(lambda n: (b"HTTP/1.1 200 OK\r\n", False), client)


def test_every_request_goes_to_its_own_target_with_or_without_a_path() -> None:
    targets: list[str] = []

    async def client(url: str, served: ScriptedServer) -> None:
        origin = url.split("/bucket")[0]
        pool = _pool()
        for path in ("/bucket?a=1", "?prefix=x/y", "?prefix=x/z", "/other?b=2"):
            await pool.get(origin + path, {})
        await pool.close()
        targets.extend(request.decode().split(" ")[1] for request in served.requests)

    _run(lambda n: (_sized(b""), False), client)
    assert targets == ["/bucket?a=1", "/?prefix=x/y", "/?prefix=x/z", "/other?b=2"]


def test_a_refused_connection() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def main() -> None:
        with pytest.raises(ConnectFailed) as failed:
            await _pool().get(f"http://127.0.0.1:{port}/b", {})
        assert isinstance(failed.value.os_error, ConnectionRefusedError)

    asyncio.run(main())


@pytest.mark.parametrize(
    ("url", "host", "port", "header", "target"),
    [
        ("http://s3.local/b?x=1", "s3.local", 80, "s3.local", "/b?x=1"),
        ("http://s3.local:80/b", "s3.local", 80, "s3.local", "/b"),
        ("https://s3.amazonaws.com/b", "s3.amazonaws.com", 443, "s3.amazonaws.com", "/b"),
        ("https://h:8443", "h", 8443, "h:8443", "/"),
        ("http://h:9000?list-type=2", "h", 9000, "h:9000", "/?list-type=2"),
        ("http://h?prefix=a/b", "h", 80, "h", "/?prefix=a/b"),
        ("http://[::1]:9000/b", "::1", 9000, "[::1]:9000", "/b"),
        ("HTTP://[fd00::2]/b", "fd00::2", 80, "[fd00::2]", "/b"),
    ],
)
def test_origin_and_host_header(url: str, host: str, port: int, header: str, target: str) -> None:
    origin, got_target = _origin(url)
    assert (origin.host, origin.port, origin.host_header, got_target) == (host, port, header, target)
