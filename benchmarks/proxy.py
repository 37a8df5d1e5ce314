"""A latency-injecting TCP proxy: real S3 LIST costs 75-300 ms a page, loopback costs nothing.

Per connection, every chunk arriving from the client is forwarded upstream DELAY (+/- JITTER)
after it arrived; responses flow back untouched. An HTTP request is one or a few chunks, so each
request reaches the server DELAY late, whatever the client pipelines or however many connections
it opens: exactly what a far-away server looks like to a client, which has to hide the latency
with concurrency. Chunks keep their order (a due time never goes backwards).

    python -m benchmarks.proxy --upstream http://127.0.0.1:7480 --delay-ms 50 [--jitter-ms 5]

prints ``listening on http://127.0.0.1:PORT`` once ready and runs until SIGTERM/SIGINT. The
harness runs it as its own process so its CPU time never lands in a measured client's figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import sys
import urllib.parse
from collections.abc import Sequence

from benchmarks.children import announce, fast_runner, listening_child

_CHUNK = 256 * 1024


class LatencyProxy:
    def __init__(self, upstream_host: str, upstream_port: int, delay: float, jitter: float) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._delay = delay
        self._jitter = jitter
        self._rng = random.Random()
        self._connections: set[asyncio.Task[None]] = set()

    async def handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        # asyncio holds handler tasks only weakly: a connection whose peers vanished without
        # an EOF would be garbage-collected mid-await ("Task was destroyed but it is pending").
        me = asyncio.current_task()
        assert me is not None  # a stream handler always runs as a task
        self._connections.add(me)
        try:
            server_reader, server_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            client_writer.close()
            self._connections.discard(me)
            return
        pumps = [
            asyncio.ensure_future(self._delayed(client_reader, server_writer)),
            asyncio.ensure_future(self._plain(server_reader, client_writer)),
        ]
        try:
            # Both directions end on their EOFs; a reset on either ends the connection at once.
            await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
        except asyncio.CancelledError:
            # Only shutdown cancels a connection; asyncio's stream callback would log it as an
            # error of the handler, so end quietly instead.
            pass
        finally:
            for pump in pumps:
                pump.cancel()
                if pump.done() and not pump.cancelled():
                    pump.exception()  # retrieved: a reset is expected, not worth a log line
            for writer in (server_writer, client_writer):
                writer.close()
            self._connections.discard(me)

    def _due(self, now: float, previous: float) -> float:
        offset = self._delay + (self._rng.uniform(-self._jitter, self._jitter) if self._jitter else 0.0)
        return max(previous, now + max(0.0, offset))

    async def _delayed(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

        async def send() -> None:
            while (item := await queue.get()) is not None:
                due, data = item
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()

        sender = asyncio.ensure_future(send())
        due = 0.0
        try:
            while data := await reader.read(_CHUNK):
                due = self._due(loop.time(), due)
                queue.put_nowait((due, data))
        finally:
            queue.put_nowait(None)
            await sender

    async def _plain(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()


async def serve(upstream: str, delay: float, jitter: float, port: int) -> None:
    parts = urllib.parse.urlsplit(upstream)
    if parts.scheme != "http" or parts.hostname is None:
        raise SystemExit(f"--upstream must be http://HOST:PORT, not {upstream!r}")
    proxy = LatencyProxy(parts.hostname, parts.port or 80, delay, jitter)
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", port)
    bound = server.sockets[0].getsockname()[1]
    announce(f"http://127.0.0.1:{bound}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def running_proxy(
    upstream: str, delay_ms: float, jitter_ms: float = 0.0
) -> contextlib.AbstractContextManager[str]:
    """Run the proxy as a child process for the block; yields its endpoint URL."""
    return listening_child(
        "benchmarks.proxy",
        "--upstream",
        upstream,
        "--delay-ms",
        str(delay_ms),
        "--jitter-ms",
        str(jitter_ms),
        what="latency proxy",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.proxy", description=__doc__.split("\n")[0])
    parser.add_argument("--upstream", required=True, help="http://HOST:PORT of the S3 server")
    parser.add_argument("--delay-ms", type=float, default=50.0, help="added to every request (default 50)")
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="uniform +/- jitter (default 0)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    args = parser.parse_args(argv)
    with fast_runner() as runner:
        runner.run(serve(args.upstream, args.delay_ms / 1000, args.jitter_ms / 1000, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
