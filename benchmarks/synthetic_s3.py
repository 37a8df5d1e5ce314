"""A ListObjectsV2 endpoint that answers from memory, in the listing dialects of several servers.

Against Ceph RGW on a small machine the server is the bottleneck: a second client process there
can only show what it costs. This endpoint serves the benchmark's layouts (bucket
``bench-LAYOUT-SIZE``, and ``bench-empty``) from entries rendered once at start, in tens of
microseconds a page, so that the client is what limits a scan and its scaling over processes
shows. It implements what listing needs and nothing more: ListObjectsV2 with ``prefix``,
``start-after``, ``continuation-token``, ``max-keys``, ``delimiter`` and ``encoding-type=url``,
HEAD bucket, and CreateSession for directory buckets, over HTTP/1.1 keep-alive; anything else
gets 501. Errors are S3 XML error documents with S3's status codes. It checks no signature.

Not every S3 server lists in UTF-8 byte order, so each bucket lists in one of three dialects:

* ``sorted`` (the default): AWS general-purpose buckets, Ceph RGW, MinIO, moto. Keys in UTF-8
  byte order; ``start-after`` and continuation tokens exact.
* ``walk``: SeaweedFS, which lists a filesystem walk, folder by folder. Keys come in the order of
  the tuple of their '/'-separated components, so ``study0/series2/img9.dcm`` comes before
  ``study0-thumb/t.png`` although '-' sorts before '/'. Continuation tokens are complete in that
  order. ``start-after`` follows it too: the listing goes on from where that key would sit in the
  walk, so it can return keys at or before ``start-after`` in byte order, and never returns keys
  after it in byte order that the walk had already passed. Delimited listings roll up common
  prefixes in walk order.
* ``directory``: S3 Express One Zone directory buckets. Entries in a stable hash order (not
  lexicographic); ``start-after`` refused (400 InvalidArgument), "/" the only delimiter (400
  otherwise), a non-empty prefix must end in "/" (400); continuation tokens are opaque (base64 of
  an index); a delimited listing pages its keys and common prefixes together, at most
  ``max-keys`` of both a page, in hash order. ``GET /BUCKET?session`` (CreateSession) returns
  session credentials that expire 5 minutes later: botocore calls it before any other request to
  a directory bucket and signs those with the session.

Which dialect a bucket gets: a name ending in ``--x-s3``, AWS's directory bucket form
``BASE--ZONE--x-s3`` (``bench-dicom-100000--use1-az4--x-s3``), is a directory bucket, as it is
for botocore; a ``-sorted``, ``-walk`` or ``-directory`` suffix names the dialect (so
``bench-dicom-100000-walk`` serves ``dicom-100000`` in the walk dialect); any other bucket gets
``--dialect``. ``bench-`` may be left out. One endpoint can so serve one layout in every dialect:

    python -m benchmarks.synthetic_s3 --buckets bench-dicom-1000000 [--port 0]
    python -m benchmarks.synthetic_s3 --buckets dicom-100000 --dialect walk
    python -m benchmarks.synthetic_s3 --buckets studies-1000,studies-1000-walk,studies-1000--use1-az4--x-s3

Prints ``listening on http://127.0.0.1:PORT`` once every bucket is ready. ``bench-empty`` (in
``--dialect``) is always served.

botocore and directory buckets: with an ``endpoint_url`` whose host is an IP address, botocore's
endpoint rules send a ``--x-s3`` bucket's requests path-style whatever ``addressing_style`` says,
CreateSession signed with the client's credentials and every other request with the session's
(SigV4 plus ``x-amz-s3session-token``). With a host name they go virtual-hosted
(``BUCKET.HOST:PORT``), which needs a DNS name per bucket. So use ``http://127.0.0.1:PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import bisect
import contextlib
import hashlib
import secrets
import sys
import time
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Literal, cast
from urllib.parse import parse_qsl, quote, unquote, urlsplit
from xml.sax.saxutils import escape

from benchmarks.children import announce, fast_runner, listening_child
from benchmarks.layouts import LAYOUTS, SHAPES

Dialect = Literal["sorted", "walk", "directory"]
DIALECTS: tuple[Dialect, ...] = ("sorted", "walk", "directory")
DIRECTORY_SUFFIX = "--x-s3"
EMPTY = "bench-empty"

_MODIFIED = "2026-11-28T00:00:00.000Z"
_ETAG = "&quot;9dd4e461268c8034f5c8564e155c67a6&quot;"
_XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"
_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'
_HEAD = f'{_DECLARATION}<ListBucketResult xmlns="{_XMLNS}">'
# S3 Express sessions last 5 minutes; botocore refreshes one 45 s before it expires.
_SESSION_SECONDS = 300


def _encode(value: str, url: bool) -> str:
    return quote(value, safe="/-_.~") if url else escape(value)


class S3Error(Exception):
    """An S3 error response: the status and the ``<Error>`` document a client reads."""

    def __init__(self, status: int, code: str, message: str, **fields: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields

    def document(self) -> bytes:
        extra = "".join(f"<{name}>{escape(value)}</{name}>" for name, value in self.fields.items())
        return (
            f"{_DECLARATION}<Error><Code>{self.code}</Code><Message>{escape(self.message)}</Message>"
            f"{extra}<RequestId>synthetic</RequestId><HostId>synthetic</HostId></Error>"
        ).encode()


def _invalid_argument(message: str, name: str, value: str) -> S3Error:
    return S3Error(400, "InvalidArgument", message, ArgumentName=name, ArgumentValue=value)


def _max_keys(query: Mapping[str, str]) -> int:
    text = query.get("max-keys", "1000")
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise _invalid_argument("Provided max-keys not an integer or within integer range", "max-keys", text)
    return min(1000, value)


def walk_key(key: str) -> str:
    """A string whose code point order is the walk order of keys: the order of the tuples of their
    '/'-separated components, each compared in UTF-8 byte order (= code point order).

    "/" becomes the lowest pair of code points and a NUL in a name the next pair, so a component
    ends before every longer component it begins, whatever character follows there. Keys that
    start with a given string are contiguous in this order too, like in byte order.
    """
    if "\x00" in key:
        key = key.replace("\x00", "\x00\x01")
    return key.replace("/", "\x00\x00")


def _entry(key: str, url: bool) -> str:
    return (
        f"<Contents><Key>{_encode(key, url)}</Key><LastModified>{_MODIFIED}</LastModified>"
        f"<ETag>{_ETAG}</ETag><Size>1</Size><StorageClass>STANDARD</StorageClass></Contents>"
    )


def _page(
    name: str,
    prefix: str,
    url: bool,
    delimiter: str,
    max_keys: int,
    entries: Sequence[str],
    prefixes: Sequence[str],
    token: str | None,
) -> str:
    """One ``ListBucketResult``; ``token`` is the next continuation token, None on the last page."""
    parts = [
        _HEAD,
        f"<Name>{escape(name)}</Name><Prefix>{_encode(prefix, url)}</Prefix>",
        f"<KeyCount>{len(entries) + len(prefixes)}</KeyCount><MaxKeys>{max_keys}</MaxKeys>",
        f"<Delimiter>{_encode(delimiter, url)}</Delimiter>" if delimiter else "",
        "<EncodingType>url</EncodingType>" if url else "",
        f"<IsTruncated>{'false' if token is None else 'true'}</IsTruncated>",
        f"<NextContinuationToken>{token}</NextContinuationToken>" if token is not None else "",
        *entries,
        *(f"<CommonPrefixes><Prefix>{_encode(p, url)}</Prefix></CommonPrefixes>" for p in prefixes),
        "</ListBucketResult>",
    ]
    return "".join(parts)


class Bucket:
    """The ``sorted`` dialect: keys in UTF-8 byte order, each with its ``<Contents>`` entry
    rendered once per encoding. Code point order is UTF-8 byte order, so keys sort as strings."""

    dialect: Dialect = "sorted"

    def __init__(self, name: str, keys: Sequence[str]) -> None:
        self.name = name
        self.keys = sorted(keys, key=self._sort_key)
        self._order = [self._sort_key(key) for key in self.keys]
        self._entries = {url: [_entry(key, url) for key in self.keys] for url in (True, False)}

    @staticmethod
    def _sort_key(key: str) -> str:
        return key

    def _after(self, key: str) -> int:
        return bisect.bisect_right(self._order, self._sort_key(key))

    def _from(self, key: str) -> int:
        return bisect.bisect_left(self._order, self._sort_key(key))

    def _past_prefix(self, prefix: str) -> int:
        """Index of the first key that sorts after every key starting with ``prefix``."""
        bound = self._sort_key(prefix).rstrip("\U0010ffff")
        if not bound:
            return len(self._order)
        return bisect.bisect_left(self._order, bound[:-1] + chr(ord(bound[-1]) + 1))

    def list(self, query: Mapping[str, str]) -> str:
        prefix = query.get("prefix", "")
        url = query.get("encoding-type") == "url"
        max_keys = _max_keys(query)
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
            index = max(index + 1, self._past_prefix(common))
            # The token names the common prefix's last key, so that the next page starts after
            # all of them instead of rolling the same prefix up again.
            last = self.keys[index - 1]
        next_token = quote(last, safe="") if index < end else None
        return _page(self.name, prefix, url, delimiter, max_keys, entries, prefixes, next_token)


class WalkBucket(Bucket):
    """The ``walk`` dialect: keys, tokens, ``start-after`` and common prefixes in walk order."""

    dialect: Dialect = "walk"
    _sort_key = staticmethod(walk_key)


def _hash_order(name: str) -> bytes:
    # A keyed-nothing, process-independent hash: the same bucket lists the same way every run.
    return hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=8).digest()


class DirectoryBucket:
    """The ``directory`` dialect: keys (and a folder's entries) in hash order, folder prefixes only."""

    dialect: Dialect = "directory"

    def __init__(self, name: str, keys: Sequence[str]) -> None:
        self.name = name
        self.keys = sorted(keys, key=_hash_order)
        self._entries = {url: [_entry(key, url) for key in self.keys] for url in (True, False)}
        # Every folder's keys (indices, in hash order): a directory bucket takes only folder
        # prefixes, so a prefix listing is one lookup instead of a pass over the bucket.
        folders: dict[str, list[int]] = {}
        for index, key in enumerate(self.keys):
            cut = key.find("/")
            while cut >= 0:
                folders.setdefault(key[: cut + 1], []).append(index)
                cut = key.find("/", cut + 1)
        self._folders: dict[str, Sequence[int]] = {**folders, "": range(len(self.keys))}
        # A folder's own entries for delimited listings: a key index, or a common prefix.
        self._children: dict[str, list[int | str]] = {}

    def _children_of(self, folder: str) -> list[int | str]:
        children = self._children.get(folder)
        if children is None:
            keys: list[int] = []
            subfolders: dict[str, None] = {}
            for index in self._folders.get(folder, ()):
                key = self.keys[index]
                cut = key.find("/", len(folder))
                if cut < 0:
                    keys.append(index)
                else:
                    subfolders[key[: cut + 1]] = None
            named: list[tuple[bytes, int | str]] = [(_hash_order(self.keys[i]), i) for i in keys]
            named += [(_hash_order(p), p) for p in subfolders]
            named.sort(key=lambda pair: pair[0])
            children = self._children[folder] = [child for _, child in named]
        return children

    def list(self, query: Mapping[str, str]) -> str:
        prefix = query.get("prefix", "")
        delimiter = query.get("delimiter", "")
        if prefix and not prefix.endswith("/"):
            raise _invalid_argument(
                "Prefixes must end in the delimiter / for directory buckets", "prefix", prefix
            )
        if delimiter and delimiter != "/":
            raise _invalid_argument(
                "The only delimiter directory buckets support is /", "delimiter", delimiter
            )
        if query.get("start-after"):
            raise _invalid_argument(
                "StartAfter is not supported for directory buckets", "start-after", query["start-after"]
            )
        url = query.get("encoding-type") == "url"
        max_keys = _max_keys(query)
        start = self._position(query.get("continuation-token"))
        entries: list[str] = []
        prefixes: list[str] = []
        if delimiter:
            children = self._children_of(prefix)
            total = len(children)
            for child in children[start : start + max_keys]:
                if isinstance(child, str):
                    prefixes.append(child)
                else:
                    entries.append(self._entries[url][child])
        else:
            indices = self._folders.get(prefix, ())
            total = len(indices)
            entries = [self._entries[url][i] for i in indices[start : start + max_keys]]
        stop = start + len(entries) + len(prefixes)
        token = base64.b64encode(b"%d" % stop).decode("ascii") if stop < total else None
        return _page(self.name, prefix, url, delimiter, max_keys, entries, prefixes, token)

    @staticmethod
    def _position(token: str | None) -> int:
        if token is None:
            return 0
        try:
            return int(base64.b64decode(token, validate=True))
        except (binascii.Error, ValueError):
            raise _invalid_argument(
                "The continuation token provided is incorrect", "continuation-token", token
            ) from None


AnyBucket = Bucket | DirectoryBucket
_CLASSES: dict[Dialect, type[Bucket] | type[DirectoryBucket]] = {
    "sorted": Bucket,
    "walk": WalkBucket,
    "directory": DirectoryBucket,
}


def bucket_spec(spec: str, default: Dialect = "sorted") -> tuple[str, Dialect, str]:
    """``(bucket name, dialect, bench-LAYOUT-SIZE or bench-empty)`` of a ``--buckets`` entry."""
    name = spec if spec.startswith("bench-") else f"bench-{spec}"
    base, dialect = name, default
    if name.endswith(DIRECTORY_SUFFIX):
        base, dialect = name.removesuffix(DIRECTORY_SUFFIX).rpartition("--")[0], "directory"
    else:
        head, _, tail = name.rpartition("-")
        if tail in DIALECTS:
            base, dialect = head, tail
    if base != EMPTY:
        parts = base.split("-")
        if len(parts) != 3 or parts[1] not in {**LAYOUTS, **SHAPES} or not parts[2].isdigit():
            raise ValueError(
                f"bucket {spec!r}: not bench-LAYOUT-SIZE[-DIALECT] or bench-LAYOUT-SIZE--ZONE--x-s3 "
                f"(layouts: {', '.join(LAYOUTS)}; dialects: {', '.join(DIALECTS)})"
            )
    return name, dialect, base


def bucket_for(spec: str, default: Dialect = "sorted") -> AnyBucket:
    name, dialect, base = bucket_spec(spec, default)
    keys: list[str] = []
    if base != EMPTY:
        _, layout, size = base.split("-")
        keys = {**LAYOUTS, **SHAPES}[layout](int(size))
    return _CLASSES[dialect](name, keys)


def _session_result() -> bytes:
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + _SESSION_SECONDS))
    return (
        f'{_DECLARATION}<CreateSessionResult xmlns="{_XMLNS}"><Credentials>'
        f"<SessionToken>{secrets.token_urlsafe(32)}</SessionToken>"
        f"<SecretAccessKey>{secrets.token_urlsafe(30)}</SecretAccessKey>"
        f"<AccessKeyId>ASIA{secrets.token_hex(8).upper()}</AccessKeyId>"
        f"<Expiration>{expires}</Expiration></Credentials></CreateSessionResult>"
    ).encode("ascii")


def _header(head: bytes, name: bytes) -> str | None:
    """One request header's value (only read off requests that need it: rare, and not the hot path)."""
    for line in head.split(b"\r\n")[1:]:
        field, _, value = line.partition(b":")
        if field.strip().lower() == name:
            return value.strip().decode("latin-1")
    return None


class _Connection(asyncio.Protocol):
    def __init__(self, buckets: Mapping[str, AnyBucket], latency: float = 0.0) -> None:
        self._buckets = buckets
        # Each answer goes out this many seconds after its request came in (in order: the same
        # delay for every request of a connection), as a distant server's would.
        self._latency = latency
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            head, self._buffer = self._buffer[:end], self._buffer[end + 4 :]
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            status, body = self._answer(method, target, head)
            assert self._transport is not None
            reason = b"OK" if status == 200 else HTTPStatus(status).phrase.encode("ascii")
            answer = (
                b"HTTP/1.1 %d %s\r\nContent-Type: application/xml\r\nContent-Length: %d\r\n"
                b"x-amz-request-id: synthetic\r\n\r\n%s"
                % (status, reason, len(body), b"" if method == "HEAD" else body)
            )
            if self._latency:
                asyncio.get_running_loop().call_later(self._latency, self._send, answer)
            else:
                self._transport.write(answer)

    def _send(self, answer: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(answer)

    def _answer(self, method: str, target: str, head: bytes) -> tuple[int, bytes]:
        parts = urlsplit(target)
        name = unquote(parts.path.strip("/"))
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        bucket = self._buckets.get(name)
        try:
            if bucket is None:
                if not name or "/" in name:
                    raise S3Error(501, "NotImplemented", "only bucket-level requests are implemented")
                raise S3Error(404, "NoSuchBucket", "The specified bucket does not exist", BucketName=name)
            if method == "GET" and query.get("list-type") == "2":
                return 200, bucket.list(query).encode("utf-8")
            if method == "GET" and "session" in query and bucket.dialect == "directory":
                mode = _header(head, b"x-amz-create-session-mode")
                if mode not in (None, "ReadWrite", "ReadOnly"):
                    raise _invalid_argument("Invalid session mode", "x-amz-create-session-mode", mode or "")
                return 200, _session_result()
            if method == "HEAD" and not query:
                return 200, b""
            raise S3Error(
                501, "NotImplemented", "only ListObjectsV2, HEAD bucket and CreateSession are implemented"
            )
        except S3Error as error:
            return error.status, error.document()


async def serve(names: Sequence[str], port: int, dialect: Dialect = "sorted", latency: float = 0.0) -> None:
    buckets: dict[str, AnyBucket] = {}
    for spec in dict.fromkeys([EMPTY, *names]):
        bucket = bucket_for(spec, dialect)
        buckets[bucket.name] = bucket
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(buckets, latency), "127.0.0.1", port)
    announce(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
    async with server:
        await server.serve_forever()


def running_synthetic_s3(
    buckets: Sequence[str], dialect: Dialect = "sorted"
) -> contextlib.AbstractContextManager[str]:
    """This endpoint in a process of its own, serving ``buckets``; yields its URL."""
    return listening_child(
        "benchmarks.synthetic_s3",
        "--buckets",
        ",".join(buckets),
        "--dialect",
        dialect,
        what="the in-memory endpoint",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.synthetic_s3",
        description=__doc__.split("\n")[0],
        epilog="Bucket names and dialects: see the module's docstring.",
    )
    parser.add_argument(
        "--buckets",
        default="",
        help="comma-separated [bench-]LAYOUT-SIZE[-DIALECT] or [bench-]LAYOUT-SIZE--ZONE--x-s3 bucket names",
    )
    parser.add_argument(
        "--dialect",
        choices=DIALECTS,
        default="sorted",
        help="dialect of the buckets whose name does not choose one (default sorted)",
    )
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    parser.add_argument(
        "--latency-ms", type=float, default=0.0, help="answer each request this much later (default 0)"
    )
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.buckets.split(",") if name.strip()]
    for name in names:
        try:
            bucket_spec(name, args.dialect)
        except ValueError as exc:
            parser.error(str(exc))
    with fast_runner() as runner:
        runner.run(serve(names, args.port, args.dialect, args.latency_ms / 1000))
    return 0


if __name__ == "__main__":
    sys.exit(main())
