"""A ListObjectsV2 endpoint that answers from memory, for the scaling pass of the benchmark.

Against Ceph RGW on a small machine the server is the bottleneck: a second client process there
can only show what it costs. This endpoint serves the benchmark's layouts (bucket
``bench-LAYOUT-SIZE``, and ``bench-empty``) from entries rendered once at start, in tens of
microseconds a page, so that the client is what limits a scan and its scaling over processes
shows. It implements what listing needs and nothing more: ListObjectsV2 with ``prefix``,
``start-after``, ``continuation-token``, ``max-keys``, ``delimiter`` and ``encoding-type=url``,
over HTTP/1.1 keep-alive; anything else gets 501. It checks no signature.

    python -m benchmarks.synthetic_s3 --buckets dicom-1000000 [--port 0]

Prints ``listening on http://127.0.0.1:PORT`` once every bucket is ready.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import sys
from collections.abc import Sequence
from typing import cast
from urllib.parse import parse_qsl, quote, unquote, urlsplit
from xml.sax.saxutils import escape

from benchmarks.children import announce, fast_runner, listening_child
from benchmarks.layouts import LAYOUTS

_MODIFIED = "2026-11-28T00:00:00.000Z"
_ETAG = "&quot;9dd4e461268c8034f5c8564e155c67a6&quot;"
_HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'


def _encode(value: str, url: bool) -> str:
    return quote(value, safe="/-_.~") if url else escape(value)


class Bucket:
    """Keys in UTF-8 byte order, each with its ``<Contents>`` entry rendered once per encoding."""

    def __init__(self, name: str, keys: list[str]) -> None:
        self.name = name
        self.keys = sorted(keys, key=lambda key: key.encode("utf-8"))
        self._order = [key.encode("utf-8") for key in self.keys]
        self._entries = {url: [self._entry(key, url) for key in self.keys] for url in (True, False)}

    @staticmethod
    def _entry(key: str, url: bool) -> str:
        return (
            f"<Contents><Key>{_encode(key, url)}</Key><LastModified>{_MODIFIED}</LastModified>"
            f"<ETag>{_ETAG}</ETag><Size>1</Size><StorageClass>STANDARD</StorageClass></Contents>"
        )

    def _after(self, key: str) -> int:
        return bisect.bisect_right(self._order, key.encode("utf-8"))

    def _from(self, key: str) -> int:
        return bisect.bisect_left(self._order, key.encode("utf-8"))

    def _past_prefix(self, prefix: str) -> int:
        """Index of the first key that sorts after every key starting with ``prefix``."""
        raw = prefix.encode("utf-8")
        while raw and raw[-1] == 0xFF:
            raw = raw[:-1]
        if not raw:
            return len(self._order)
        return bisect.bisect_left(self._order, raw[:-1] + bytes([raw[-1] + 1]))

    def list(self, query: dict[str, str]) -> str:
        prefix = query.get("prefix", "")
        url = query.get("encoding-type") == "url"
        max_keys = min(1000, int(query.get("max-keys", "1000")))
        delimiter = query.get("delimiter", "")
        token = query.get("continuation-token")
        after = unquote(token) if token is not None else query.get("start-after", "")
        index = max(self._from(prefix), self._after(after) if after else 0)
        end = self._past_prefix(prefix) if prefix else len(self.keys)
        entries: list[str] = []
        prefixes: list[str] = []
        last = ""
        while index < end and len(entries) + len(prefixes) < max_keys:
            if not delimiter:
                stop = min(end, index + max_keys - len(entries))
                entries.extend(self._entries[url][index:stop])
                last = self.keys[stop - 1]
                index = stop
                break
            key = self.keys[index]
            cut = key.find(delimiter, len(prefix))
            if cut < 0:
                entries.append(self._entries[url][index])
                last = key
                index += 1
                continue
            common = key[: cut + len(delimiter)]
            prefixes.append(common)
            last = common
            index = max(index + 1, self._past_prefix(common))
        truncated = index < end
        parts = [
            _HEAD,
            f"<Name>{escape(self.name)}</Name><Prefix>{_encode(prefix, url)}</Prefix>",
            f"<KeyCount>{len(entries) + len(prefixes)}</KeyCount><MaxKeys>{max_keys}</MaxKeys>",
            f"<Delimiter>{_encode(delimiter, url)}</Delimiter>" if delimiter else "",
            "<EncodingType>url</EncodingType>" if url else "",
            f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>",
            f"<NextContinuationToken>{quote(last, safe='')}</NextContinuationToken>" if truncated else "",
            *entries,
            *(f"<CommonPrefixes><Prefix>{_encode(p, url)}</Prefix></CommonPrefixes>" for p in prefixes),
            "</ListBucketResult>",
        ]
        return "".join(parts)


def bucket_for(name: str) -> Bucket:
    if name == "bench-empty":
        return Bucket(name, [])
    _, layout, size = name.split("-", 2)
    return Bucket(name, LAYOUTS[layout](int(size)))


class _Connection(asyncio.Protocol):
    def __init__(self, buckets: dict[str, Bucket]) -> None:
        self._buckets = buckets
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            head, self._buffer = self._buffer[:end], self._buffer[end + 4 :]
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            status, body = self._answer(method, target)
            assert self._transport is not None
            self._transport.write(
                b"HTTP/1.1 %d %s\r\nContent-Type: application/xml\r\nContent-Length: %d\r\n"
                b"x-amz-request-id: synthetic\r\n\r\n%s"
                % (status, b"OK" if status == 200 else b"Error", len(body), body)
            )

    def _answer(self, method: str, target: str) -> tuple[int, bytes]:
        parts = urlsplit(target)
        name = unquote(parts.path.strip("/"))
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        bucket = self._buckets.get(name)
        if method != "GET" or query.get("list-type") != "2" or "/" in name:
            return 501, b"<Error><Code>NotImplemented</Code><Message>ListObjectsV2 only</Message></Error>"
        if bucket is None:
            return 404, b"<Error><Code>NoSuchBucket</Code><Message>no such bucket</Message></Error>"
        return 200, bucket.list(query).encode("utf-8")


async def serve(names: Sequence[str], port: int) -> None:
    buckets = {name: bucket_for(name) for name in {"bench-empty", *names}}
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(buckets), "127.0.0.1", port)
    announce(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
    async with server:
        await server.serve_forever()


def running_synthetic_s3(buckets: Sequence[str]) -> contextlib.AbstractContextManager[str]:
    """This endpoint in a process of its own, serving ``buckets``; yields its URL."""
    return listening_child(
        "benchmarks.synthetic_s3", "--buckets", ",".join(buckets), what="the in-memory endpoint"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.synthetic_s3", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--buckets", default="", help="comma-separated bench-LAYOUT-SIZE bucket names")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.buckets.split(",") if name.strip()]
    with fast_runner() as runner:
        runner.run(serve(names, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
