"""Pods that share a plan's parts while they run (``scan --shard I/N --plan P --share-work W``).

A static plan balances only as well as its sample saw the bucket: a huge folder among many tiny
ones that no probe landed in ends up in one part, and its pod lists it alone while the others
wait (``benchmarks/results/plan-balance-*.md``). With ``--share-work`` the pods share the work
through small objects under ``W`` (a directory, or s3://BUCKET/PREFIX/) instead:

- ``board.json``: what the pods share: the scan's URI, the plan's parts, the listing's options.
  The first pod stores it with a conditional put; a pod whose scan differs stops (exit code 2).
- ``claims/ID``: one pod's claim of piece ``ID``, made with a conditional put that exactly one
  pod wins. The pieces are the plan's parts (``p00000``...) and the pieces handed over.
- ``idle/POD``: a pod that found nothing left to claim.
- ``pieces/ID.json``: a piece handed over. While idle pods wait, a pod listing a piece hands
  over the rest of some of its ranges (those its listing has split the piece into, with
  plenty left) and publishes each as piece ``PARENT.N`` (the hand-over of
  ``scanner.listing.enumerate``, as worker processes take ranges). So a part that holds far
  more keys than its estimate is shared by every pod that has time, whatever the plan saw.
- ``parts/ID.jsonl``: a piece's output, JSON Lines in key order: its range less what it handed over.
- ``done/ID.json``: written after the piece's output: its range and the pieces handed over.
- ``merge`` and ``merged.json``: once every piece is done, the pod that wins the ``merge``
  claim merges the outputs into ``--output`` (in ``--format``); the others end at once.

No key is lost or listed twice because the pieces form a tree whose roots tile the prefix (the
plan) and whose children are disjoint ranges inside their parent, and each output holds exactly
its piece's range less its children's. The merge checks the whole tree, and every key of every
output against its piece, before it writes a byte. A pod that fails and is started again (the
Job's retries, same index) first finishes the pieces it had claimed, keeping the pieces it had
already handed over; a pod that never comes back leaves its pieces unfinished and the others
waiting, so the Job's ``activeDeadlineSeconds`` ends it.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

import anyio
import orjson

from scanner.config import ScanConfig, SharedWork, parse_s3_uri
from scanner.errors import ScanError, UsageError
from scanner.keyspace import KeyRange
from scanner.listing.enumerate import OutputSlot
from scanner.output.merge import concatenate_segments
from scanner.output.spec import OutputSpec
from scanner.output.writers import page_encoder
from scanner.run.outputs import open_writer
from scanner.run.pipeline import run_scan
from scanner.run.summary import ScanSummary
from scanner.storage.base import ObjectStore, committing

BOARD_FORMAT: Final = "bucket-scanner-shared-work"
BOARD_VERSION: Final = 1
# How often a pod looks at the board: an idle one for pieces to claim, a busy one for idle pods
# to hand a piece to. A look is one LIST request (a few more when there is news), so a pod
# costs two requests a second against the hundreds a second it lists.
POLL_SECONDS: Final = 0.5
# A range is handed over only with at least this many keys estimated left: the other pod pays a
# claim, a first request, an output and a done record for it.
MIN_HANDED_KEYS: Final = 5_000
# Ranges handed over for each idle pod at a time.
RANGES_PER_IDLE_POD: Final = 8
# A piece is listed this long before ranges of it are handed over.
MIN_LISTING_SECONDS: Final = 2 * POLL_SECONDS
# How long a piece handed over waits for the idle pods it was meant for before its donor may
# claim it back.
RESERVED_SECONDS: Final = 4 * POLL_SECONDS
# Pieces a pod lists side by side: those handed over are small, and one at a time a pod would
# wait on one range's round trips.
PIECES_AT_ONCE: Final = 4
_log = logging.getLogger("scanner.run")


# --- pieces and the tree they form (pure) ------------------------------------------------------


@dataclass(frozen=True)
class Piece:
    id: str
    range: KeyRange
    estimate: int = 0
    # The piece it was handed over from (None: a part of the plan). Not part of its identity:
    # a done record names its children by id and range only.
    parent: str | None = field(default=None, compare=False)


def root_id(index: int) -> str:
    return f"p{index:05d}"


def _estimates(work: SharedWork) -> list[int]:
    return [*work.estimates[: len(work.parts)], *[0] * (len(work.parts) - len(work.estimates))]


def roots_of(work: SharedWork) -> list[Piece]:
    """The plan's parts, as the pieces that tile the prefix."""
    return [
        Piece(root_id(i), r, e) for i, (r, e) in enumerate(zip(work.parts, _estimates(work), strict=True))
    ]


def _range_json(key_range: KeyRange) -> dict[str, Any]:
    return {"start_after": key_range.start_after, "end": key_range.end}


def _range_of(document: dict[str, Any], prefix: str) -> KeyRange:
    return KeyRange(prefix, document["start_after"], document["end"])


@dataclass(frozen=True)
class Done:
    """A piece listed: its output holds ``piece.range`` less the ranges of ``children``."""

    piece: Piece
    children: tuple[Piece, ...]
    objects: int
    pod: int

    def to_json(self) -> bytes:
        document = {
            "id": self.piece.id,
            **_range_json(self.piece.range),
            "children": [{"id": child.id, **_range_json(child.range)} for child in self.children],
            "objects": self.objects,
            "pod": self.pod,
        }
        return orjson.dumps(document)

    @classmethod
    def from_json(cls, data: bytes, prefix: str) -> Done:
        document = orjson.loads(data)
        children = tuple(Piece(c["id"], _range_of(c, prefix)) for c in document["children"])
        piece = Piece(document["id"], _range_of(document, prefix))
        return cls(piece, children, int(document["objects"]), int(document["pod"]))


def _inside(parent: KeyRange, children: Sequence[KeyRange]) -> bool:
    """Whether ``children`` are disjoint, in key order, and inside ``parent``."""
    low = parent.start_after
    for child in children:
        if child.start_after is None or (low is not None and child.start_after < low):
            return False
        if child.end is None:
            if parent.end is not None:
                return False
        elif child.end <= child.start_after or (parent.end is not None and child.end > parent.end):
            return False
        low = child.end
        if low is None and child is not children[-1]:
            return False
    return True


def ranges_left(piece: Piece, handed: Sequence[Piece]) -> list[KeyRange]:
    """What of ``piece`` is still to list once ``handed`` (its children, in key order) are not."""
    prefix = piece.range.prefix
    left: list[KeyRange] = []
    low = piece.range.start_after
    for child in handed:
        if child.range.start_after != low:
            left.append(KeyRange(prefix, low, child.range.start_after))
        if child.range.end is None:
            return left
        low = child.range.end
    if piece.range.end is None or low != piece.range.end:
        left.append(KeyRange(prefix, low, piece.range.end))
    return left


def segments_of(records: Sequence[Done]) -> list[tuple[int, KeyRange]]:
    """What each record's output holds (its piece less the pieces handed over from it), as
    (record's index, range), in key order: together they tile the roots of the tree."""
    segments = [
        (index, left)
        for index, record in enumerate(records)
        for left in ranges_left(record.piece, record.children)
    ]
    return sorted(
        segments, key=lambda segment: (segment[1].start_after is not None, segment[1].start_after or "")
    )


def in_key_order(roots: Sequence[Piece], done: dict[str, Done]) -> list[Done]:
    """Every piece's record, checked to form the whole tree: each root and each child done,
    children inside their parents, nothing done that the tree does not hold.

    Raises ``ScanError`` naming what is missing or wrong. The records come parents first (the
    merge goes by their segments, ``segments_of``, in key order).
    """
    found: list[Done] = []
    missing: list[str] = []
    pending = list(reversed(roots))
    while pending:
        piece = pending.pop()
        record = done.get(piece.id)
        if record is None:
            missing.append(piece.id)
            continue
        if record.piece.range != piece.range:
            raise ScanError(f"piece {piece.id} was listed over another range than the plan's")
        if not _inside(piece.range, [child.range for child in record.children]):
            raise ScanError(f"the pieces handed over from {piece.id} are not inside it")
        found.append(record)
        pending.extend(reversed(record.children))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ScanError(f"the shared scan is not finished: no output yet for {shown}")
    stray = set(done) - {record.piece.id for record in found}
    if stray:
        raise ScanError(f"done records that belong to no piece of this scan: {', '.join(sorted(stray)[:5])}")
    return found


@dataclass
class BoardState:
    claims: set[str] = field(default_factory=set)
    idle: set[int] = field(default_factory=set)
    handed: dict[str, Piece] = field(default_factory=dict)
    done: dict[str, Done] = field(default_factory=dict)
    merge_claimed: bool = False
    merged: bool = False

    def unclaimed(self, roots: Sequence[Piece]) -> list[Piece]:
        return [piece for piece in [*roots, *self.handed.values()] if piece.id not in self.claims]

    def complete(self, roots: Sequence[Piece]) -> bool:
        known = [*roots, *self.handed.values()]
        return all(piece.id in self.done for piece in known) and all(
            child.id in self.done for record in self.done.values() for child in record.children
        )


def choose(
    state: BoardState, roots: Sequence[Piece], pod: int, pods: int, reserved: frozenset[str] = frozenset()
) -> Piece | None:
    """The piece pod ``pod`` of ``pods`` claims next: its own parts of the plan first (as a
    static plan would give them), then pieces handed over, then the other pods' last parts.

    ``reserved``: pieces this pod handed over for pods that wait, passed over while they do.
    """
    free = {piece.id for piece in state.unclaimed(roots)} - reserved
    own = [piece for index, piece in enumerate(roots) if index % pods == pod and piece.id in free]
    if own:
        return own[0]
    handed = sorted((piece for piece in state.handed.values() if piece.id in free), key=lambda p: p.id)
    if handed:
        return handed[0]
    others = [piece for piece in reversed(roots) if piece.id in free]
    return others[0] if others else None


# --- the board: the objects the pods share -----------------------------------------------------


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
        "parts": [{**_range_json(piece.range), "estimated_keys": piece.estimate} for piece in roots_of(work)],
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
            elif name == "merge":
                state.merge_claimed = True
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
                    document["id"], _range_of(document, self._scan_prefix), parent=document["parent"]
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
        document = {"id": piece.id, "parent": piece.parent, **_range_json(piece.range)}
        key = self.key(f"pieces/{piece.id}.json")
        if not await self.store.put(key, orjson.dumps(document), if_absent=True):
            raise ScanError(f"piece {piece.id} was handed over twice")
        self._handed[piece.id] = piece

    async def finish(self, record: Done) -> None:
        await self.store.put(self.key(f"done/{record.piece.id}.json"), record.to_json())
        self._done[record.piece.id] = record


# --- handing ranges over while a piece is listed ----------------------------------------------


class Demand:
    """What a pod knows of the other pods' wait, shared by the pieces it lists at once: how many
    ranges they want handed over (from the last look at the board), and the pieces this pod
    handed over and when (while other pods wait, those are theirs)."""

    def __init__(self, pod: int, pods: int) -> None:
        self._pods = pods
        self.wanted = 0
        self._handed: dict[str, float] = {}
        # Ids of pieces handed over: short whatever the depth of the tree, and unique to this
        # run of this pod (a restarted pod must not reuse one; the conditional put checks it).
        self._id_prefix = f"h{pod}-{secrets.token_hex(4)}-"
        self._ids = itertools.count(1)

    def new_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids)}"

    def update(self, state: BoardState, roots: Sequence[Piece]) -> None:
        # Shared among the pods still listing, each of which hands over its part of it.
        wanted = len(state.idle) * RANGES_PER_IDLE_POD - len(state.unclaimed(roots))
        busy = max(1, self._pods - len(state.idle))
        self.wanted = -(-wanted // busy) if wanted > 0 else 0

    def handed(self, piece: Piece) -> None:
        self.wanted -= 1
        self._handed[piece.id] = time.monotonic()

    def reserved(self, state: BoardState) -> frozenset[str]:
        if not state.idle:
            return frozenset()
        # A pod that stopped while marked idle must not hold them up for long.
        fresh = time.monotonic() - RESERVED_SECONDS
        return frozenset(piece_id for piece_id, when in self._handed.items() if when > fresh)


class Donor:
    """The ``HandOver`` of a pod listing a piece: while other pods wait with nothing to claim,
    it takes the rest of ranges with plenty left (``RANGES_PER_IDLE_POD`` for each idle pod)
    and publishes each as a new piece."""

    def __init__(self, board: Board, piece: Piece, earlier: Sequence[Piece], demand: Demand) -> None:
        self._board = board
        self._piece = piece
        self._demand = demand
        self.handed: list[Piece] = list(earlier)
        self._started = time.monotonic()
        self._finish: Callable[[OutputSlot], None] | None = None
        self._outbox: list[Piece] = []
        self._posted = anyio.Event()

    def attach(self, finish: Callable[[OutputSlot], None]) -> None:
        self._finish = finish

    def wants(self, remaining_keys: float) -> bool:
        # A piece handed over is not handed on at its first page: pieces would hop from pod to
        # pod a page at a time while each waits for the next look at the board.
        listing = time.monotonic() - self._started >= MIN_LISTING_SECONDS
        return listing and self._demand.wanted > 0 and remaining_keys >= MIN_HANDED_KEYS

    def take(self, key_range: KeyRange, slot: OutputSlot) -> None:
        assert self._finish is not None
        piece = Piece(self._demand.new_id(), key_range, parent=self._piece.id)
        self._demand.handed(piece)
        self.handed.append(piece)
        self._outbox.append(piece)
        self._posted.set()
        self._finish(slot)

    async def publish(self) -> None:
        """Publish what was handed over, as it comes (runs until cancelled)."""
        while True:
            await self._posted.wait()
            self._posted = anyio.Event()
            await self.flush()

    async def flush(self) -> None:
        while self._outbox:
            piece = self._outbox[0]
            await self._board.hand_over(piece)
            self._outbox.pop(0)


# --- one pod -----------------------------------------------------------------------------------


async def share_work(config: ScanConfig, live: ScanSummary) -> ScanSummary:
    """List pieces until every piece is done; the pod that wins the merge claim then merges."""
    work = config.shared_work
    assert work is not None
    store, prefix = open_board_store(work.board, config.connection)
    board = Board(store, prefix, config.location.prefix, work.board)
    await board.join(board_document(config, work))
    roots = roots_of(work)
    # Start-up: the listing client, once for every piece this pod lists.
    from scanner.storage.s3.client import S3PageSource

    async with S3PageSource(config.location, config.connection) as source:
        live.requests = source.stats
        await _list_until_complete(config, work, board, roots, source, live)
    # A pod restarted after it won the merge claim merges again, unless it had finished.
    merges = await board.claim("merge", work.pod) or await board.claimed_by("merge") == work.pod
    if merges and not (await board.read()).merged:
        await merge_board(config, board, roots)
    return live


async def _list_until_complete(
    config: ScanConfig, work: SharedWork, board: Board, roots: Sequence[Piece], source: Any, live: ScanSummary
) -> None:
    """Claim and list pieces, up to ``PIECES_AT_ONCE`` at a time (those this pod claimed before
    it was restarted first), until every piece of the tree is done; marked idle on the board
    while it lists none and finds none to claim. One look at the board a round serves them all."""
    resumed = await _claimed_before(board, roots, work.pod)
    demand = Demand(work.pod, work.pods)
    running: set[str] = set()
    finished = anyio.Event()
    idle = False

    async def list_one(piece: Piece, state: BoardState) -> None:
        nonlocal finished
        try:
            await _list_piece(config, board, piece, state, source, live, demand)
        finally:
            running.discard(piece.id)
            finished.set()

    async with anyio.create_task_group() as group:
        while True:
            state = await board.read()
            if state.complete(roots):
                break
            demand.update(state, roots)
            while len(running) < PIECES_AT_ONCE:
                piece = (
                    resumed.pop(0)
                    if resumed
                    else await _claim_next(board, state, roots, work, demand, running)
                )
                if piece is None:
                    break
                running.add(piece.id)
                group.start_soon(list_one, piece, state)
            if idle != (not running):
                idle = not running
                await board.set_idle(work.pod, idle)
            with anyio.move_on_after(POLL_SECONDS):
                await finished.wait()
            finished = anyio.Event()
    if idle:
        await board.set_idle(work.pod, False)


async def _claim_next(
    board: Board,
    state: BoardState,
    roots: Sequence[Piece],
    work: SharedWork,
    demand: Demand,
    running: set[str],
) -> Piece | None:
    """The next piece this pod wins the claim of, or None when there is none to claim."""
    while (piece := choose(state, roots, work.pod, work.pods, demand.reserved(state) | running)) is not None:
        state.claims.add(piece.id)  # this pod's or another's now
        if await _claim(board, piece, work.pod):
            return piece
    return None


async def _claim(board: Board, piece: Piece, pod: int) -> bool:
    return await board.claim(f"claims/{piece.id}", pod)


async def _claimed_before(board: Board, roots: Sequence[Piece], pod: int) -> list[Piece]:
    """Pieces this pod claimed in an earlier attempt and did not finish: it lists them first."""
    state = await board.read()
    known = {piece.id: piece for piece in [*roots, *state.handed.values()]}
    mine = []
    for piece_id in sorted(state.claims - set(state.done)):
        if piece_id in known and await board.claimed_by(f"claims/{piece_id}") == pod:
            mine.append(known[piece_id])
    return mine


async def _list_piece(
    config: ScanConfig,
    board: Board,
    piece: Piece,
    state: BoardState,
    source: Any,
    live: ScanSummary,
    demand: Demand,
) -> None:
    """List ``piece`` into its output, handing ranges over to idle pods; then record it done.

    What this pod handed over from it before it was restarted (``state``) stays handed over.
    """
    earlier = sorted(
        (p for p in state.handed.values() if p.parent == piece.id),
        key=lambda p: p.range.start_after or "",
    )
    donor = Donor(board, piece, earlier, demand)
    output = board.output_of(piece.id)
    if not output.startswith("s3://"):
        os.makedirs(os.path.dirname(output), exist_ok=True)
    piece_config = replace(
        config,
        output=output,
        output_format="jsonl",
        compression="none",
        grouping=None,
        shard_ranges=None,
        shared_work=None,
        processes=1,
        processes_on_demand=False,
    )
    # Its own counts (pieces run side by side), added to the pod's once it is listed.
    listed = ScanSummary(requests=live.requests)
    ranges = ranges_left(piece, earlier)
    async with anyio.create_task_group() as group:
        group.start_soon(donor.publish)
        if ranges:
            await run_scan(piece_config, source, ranges, listed, hand_over=donor)
        else:
            await _write_empty(piece_config)
        group.cancel_scope.cancel()
    with anyio.CancelScope(shield=True):
        await donor.flush()
    handed = tuple(sorted(donor.handed, key=lambda p: p.range.start_after or ""))
    pod = config.shared_work.pod if config.shared_work is not None else 0
    await board.finish(Done(piece, handed, listed.objects, pod))
    live.objects += listed.objects
    live.bytes += listed.bytes
    if listed.matched is not None:
        live.matched = (live.matched or 0) + listed.matched
        live.add_skipped(listed.skipped)
    _log.debug(
        "piece-listed",
        extra={"fields": {"piece": piece.id, "objects": listed.objects, "handed_over": len(handed)}},
    )


async def _write_empty(config: ScanConfig) -> None:
    async with committing(open_writer(config)):
        pass


async def merge_board(config: ScanConfig, board: Board, roots: Sequence[Piece]) -> int:
    """Merge every piece's output into ``config.output`` in its format; the records written.

    The whole tree is checked first, and each key against the piece whose output holds it.
    """
    records = in_key_order(roots, (await board.read()).done)
    paths = [board.output_of(record.piece.id) for record in records]
    encode = page_encoder(OutputSpec.of(config))
    written = 0
    async with committing(open_writer(config)) as writer:
        page = []
        segments = sorted(
            (
                (index, left)
                for index, record in enumerate(records)
                for left in ranges_left(record.piece, record.children)
            ),
            key=lambda segment: segment[1].start_after or "",
        )
        merged = concatenate_segments(paths, segments, config.connection)
        async for record in merged:
            page.append(record)
            if len(page) == 1000:
                await writer.write(encode(page))
                written += len(page)
                page = []
        if page:
            await writer.write(encode(page))
            written += len(page)
    finished = {"output": config.output, "records": written}
    await board.store.put(board.key("merged.json"), orjson.dumps(finished))
    return written
