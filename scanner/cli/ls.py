"""``scanner ls s3://BUCKET/PREFIX``: one folder level, not the whole tree.

One ``Delimiter="/"`` listing, page after page by continuation tokens (so it works the same on
every server, whatever its order): the folders directly under the prefix (S3's common prefixes)
and the objects directly in it, merged in key order as they come. Text (the default) names each
relative to the listed folder, as ``aws s3 ls`` does; ``--format jsonl`` writes one JSON object
per entry with full keys, ``{"prefix": ...}`` for a folder and the usual record for an object.
"""

from __future__ import annotations

import argparse
import heapq
import signal
import sys
from collections.abc import Callable, Iterator
from typing import BinaryIO

import orjson

from scanner.config import ConnectionConfig, parse_s3_uri
from scanner.filters import prefix_base
from scanner.keyspace import KeyRange
from scanner.records import ObjectRecord, encode_jsonl
from scanner.storage.base import ListPage, next_token


def add_ls_command(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    add_connection_arguments: Callable[[argparse.ArgumentParser], None],
) -> None:
    ls = commands.add_parser(
        "ls",
        help="list one folder level: its folders and objects",
        description="List the folders (common prefixes) and objects directly under "
        "s3://BUCKET[/PREFIX], one level, not the whole tree.",
    )
    ls.add_argument("uri", nargs="?", help="s3://BUCKET[/PREFIX]")
    ls.add_argument("-f", "--format", choices=("text", "jsonl"), help="text (default, as aws s3 ls) or jsonl")
    add_connection_arguments(ls)


def run_ls(args: argparse.Namespace, connection: ConnectionConfig) -> int:
    # `scanner ls` imports what only it uses: the other commands load none of it
    import anyio

    from scanner.errors import UsageError

    if not args.uri:
        raise UsageError("no S3 URI given (scanner ls s3://BUCKET[/PREFIX], or SCANNER_URI)")
    location = parse_s3_uri(args.uri)
    show = _jsonl if args.format == "jsonl" else _text(prefix_base(location.prefix))
    out = sys.stdout.buffer

    async def list_level() -> None:
        # `scanner ls` imports what only it uses: the other commands load none of it
        from scanner.storage.s3.client import S3PageSource

        async with S3PageSource(location, connection) as source:
            token: str | None = None
            while True:
                page = await source.list_page(KeyRange(location.prefix), delimiter="/", token=token)
                out.write(b"".join(show(entry) for entry in _entries(page)))
                if not page.is_truncated:
                    return
                token = next_token(page, token)

    try:
        anyio.run(list_level, backend="asyncio")
        out.flush()
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except BrokenPipeError:
        _quiet_stdout(out)
        return 141
    return 0


def _entries(page: ListPage) -> Iterator[str | ObjectRecord]:
    """A page's folders and objects in key order (each list comes sorted)."""
    folders: list[tuple[str, str | ObjectRecord]] = [(prefix, prefix) for prefix in page.common_prefixes]
    objects: list[tuple[str, str | ObjectRecord]] = [(record.key, record) for record in page.records]
    for _, entry in heapq.merge(folders, objects, key=lambda pair: pair[0]):
        yield entry


def _jsonl(entry: str | ObjectRecord) -> bytes:
    if isinstance(entry, str):
        return orjson.dumps({"prefix": entry}) + b"\n"
    return encode_jsonl([entry])


def _text(base: str) -> Callable[[str | ObjectRecord], bytes]:
    # `scanner ls` imports what only it uses: the other commands load none of it
    from scanner.storage.s3.client import show_key

    def line(entry: str | ObjectRecord) -> bytes:
        if isinstance(entry, str):
            return f"{'PRE':>37} {show_key(entry[len(base) :])}\n".encode()
        name = show_key(entry.key[len(base) :])
        return f"{entry.last_modified} {entry.size:>12} {name}\n".encode()

    return line


def _quiet_stdout(out: BinaryIO) -> None:
    """The reader went away: drop what is buffered, so exiting prints no second error."""
    # `scanner ls` imports what only it uses: the other commands load none of it
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
    except OSError:
        pass
