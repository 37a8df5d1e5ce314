"""The board of a shared scan: the small objects under ``--share-work`` through which its pods
claim pieces, publish the ones they hand over and record the ones they finish
(``scanner.run.sharing`` says what each object is)."""

from __future__ import annotations

import hashlib
import os
from typing import Any, Final

import orjson

from scanner.config import ScanConfig, SharedWork, parse_s3_uri
from scanner.errors import ScanError, UsageError
from scanner.run.pieces import BoardState, Done, Piece, range_json, range_of, roots_of
from scanner.storage.base import ObjectStore

BOARD_FORMAT: Final = "bucket-scanner-shared-work"
BOARD_VERSION: Final = 1


def open_board_store(board: str, connection: Any) -> tuple[ObjectStore, str]:
    """The store under ``board`` and the key prefix of its objects."""
    if board.startswith("s3://"):
        # Start-up: only a shared scan needs the object store.
        from scanner.storage.s3.store import S3ObjectStore

        location = parse_s3_uri(board)
        prefix = location.prefix
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        return S3ObjectStore(location.bucket, connection, role="output", what="the shared work"), prefix
    from scanner.storage.directory import DirectoryObjectStore

    return DirectoryObjectStore(board), ""


def board_document(config: ScanConfig, work: SharedWork) -> bytes:
    """What every pod must agree on, as ``board.json`` holds it."""
    listing = repr((config.filters, config.start_after, config.location.prefix))
    document = {
        "format": BOARD_FORMAT,
        "version": BOARD_VERSION,
        "uri": str(config.location),
        "plan": work.plan,
        "pods": work.pods,
        "output": config.output,
        "output_format": config.output_format,
        "listing": hashlib.sha256(listing.encode()).hexdigest(),
        "parts": [{**range_json(piece.range), "estimated_keys": piece.estimate} for piece in roots_of(work)],
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


class Board:
    """The shared objects under one prefix of a store, read and written for one pod."""

    def __init__(self, store: ObjectStore, prefix: str, location_prefix: str, where: str) -> None:
        self.store = store
        self.prefix = prefix
        self.where = where
        self._scan_prefix = location_prefix
        self._handed: dict[str, Piece] = {}
        self._done: dict[str, Done] = {}

    def key(self, name: str) -> str:
        return self.prefix + name

    def output_of(self, piece_id: str) -> str:
        """Where a piece's output goes: a URI or path the scan's sinks take."""
        if self.where.startswith("s3://"):
            return f"{self.where.rstrip('/')}/parts/{piece_id}.jsonl"
        return os.path.join(self.where, "parts", f"{piece_id}.jsonl")

    async def join(self, document: bytes) -> None:
        """Store the board's description, or check it is this scan's; and that the server keeps
        conditional puts, without which two pods could win one claim."""
        key = self.key("board.json")
        await self.store.put(key, document, if_absent=True)
        if await self.store.put(key, document, if_absent=True):
            raise UsageError(
                f"the server ignored If-None-Match when writing {self.store.where(key)}, so two pods "
                "could claim one piece: --share-work needs a server that keeps conditional puts"
            )
        stored = await self.store.get(key)
        if stored != document:
            raise UsageError(
                f"{self.store.where(key)} is for another scan (other URI, plan, pod count, output or "
                "filters): give each run of the Job its own --share-work prefix"
            )

    async def read(self) -> BoardState:
        state = BoardState()
        new: list[tuple[str, str]] = []
        async for key in self.store.keys(self.prefix):
            name = key[len(self.prefix) :]
            kind, _, rest = name.partition("/")
            if kind == "claims":
                state.claims.add(rest)
            elif kind == "idle":
                state.idle.add(int(rest))
            elif kind in ("pieces", "done") and not self._known(kind, rest.removesuffix(".json")):
                new.append((kind, key))
            elif name == "merged.json":
                state.merged = True
        for kind, key in new:
            data = await self.store.get(key)
            if data is None:
                continue  # listed, then removed: not a record of this board
            self._remember(kind, data)
        state.handed = dict(self._handed)
        state.done = dict(self._done)
        return state

    def _known(self, kind: str, piece_id: str) -> bool:
        return piece_id in (self._done if kind == "done" else self._handed)

    def _remember(self, kind: str, data: bytes) -> None:
        try:
            if kind == "done":
                record = Done.from_json(data, self._scan_prefix)
                self._done[record.piece.id] = record
            else:
                document = orjson.loads(data)
                piece = Piece(
                    document["id"], range_of(document, self._scan_prefix), parent=document["parent"]
                )
                self._handed[piece.id] = piece
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ScanError(f"a record under {self.where} is not one of the shared work's ({exc})") from None

    async def claim(self, name: str, pod: int) -> bool:
        return await self.store.put(self.key(name), orjson.dumps({"pod": pod}), if_absent=True)

    async def claimed_by(self, name: str) -> int | None:
        data = await self.store.get(self.key(name))
        return None if data is None else int(orjson.loads(data)["pod"])

    async def set_idle(self, pod: int, idle: bool) -> None:
        if idle:
            await self.store.put(self.key(f"idle/{pod}"), b"")
        else:
            await self.store.delete([self.key(f"idle/{pod}")])

    async def hand_over(self, piece: Piece) -> None:
        document = {"id": piece.id, "parent": piece.parent, **range_json(piece.range)}
        key = self.key(f"pieces/{piece.id}.json")
        if not await self.store.put(key, orjson.dumps(document), if_absent=True):
            raise ScanError(f"piece {piece.id} was handed over twice")
        self._handed[piece.id] = piece

    async def finish(self, record: Done) -> None:
        await self.store.put(self.key(f"done/{record.piece.id}.json"), record.to_json())
        self._done[record.piece.id] = record
