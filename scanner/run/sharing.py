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
  plenty left) and publishes each as a piece of its own, naming its parent (the hand-over of
  ``scanner.listing.enumerate``, as worker processes take ranges). So a part that holds far
  more keys than its estimate is shared by every pod that has time, whatever the plan saw.
- ``parts/ID.jsonl``: a piece's output, JSON Lines in key order: its range less what it handed over.
- ``done/ID.json``: written after the piece's output: its range and the pieces handed over.
- ``merge`` and ``merged.json``: once every piece is done, the pod that wins the ``merge``
  claim merges the outputs into ``--output`` (in ``--format``); the others end at once.

No key is lost or listed twice because the pieces form a tree whose roots tile the prefix (the
plan) and whose children are disjoint ranges inside their parent, and each output holds exactly
its piece's range less its children's. The merge checks the whole tree before it writes a
byte, then reads the outputs' segments in key order (``scanner.run.pieces.segments_of``),
checking every key against its segment; only the outputs of the pieces around the current
segment are open at a time. A pod that fails and is started again (the
Job's retries, same index) first finishes the pieces it had claimed, keeping the pieces it had
already handed over; a pod that never comes back leaves its pieces unfinished and the others
waiting, so the Job's ``activeDeadlineSeconds`` ends it.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Final

import anyio
import orjson

from scanner.config import ScanConfig, SharedWork
from scanner.keyspace import KeyRange
from scanner.listing.enumerate import OutputSlot
from scanner.output.merge import concatenate_segments, write_records
from scanner.output.spec import OutputSpec
from scanner.output.writers import page_encoder
from scanner.run.board import Board, board_document, open_board_store
from scanner.run.outputs import open_writer
from scanner.run.pieces import (
    BoardState,
    Done,
    Piece,
    choose,
    in_key_order,
    ranges_left,
    roots_of,
    segments_of,
)
from scanner.run.pipeline import run_scan
from scanner.run.summary import ScanSummary
from scanner.storage.base import committing

# How often a pod looks at the board: an idle one for pieces to claim, a busy one for idle pods
# to hand ranges to (one look serves all the pieces it lists). A look is one LIST request (a GET
# more for each record not seen yet), so a pod costs two requests a second against the
# hundreds a second it lists.
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


# --- handing ranges over while a piece is listed ----------------------------------------------


class Demand:
    """What a pod knows of the other pods' wait, shared by the pieces it lists at once: how many
    ranges they want handed over (from the last look at the board), and the pieces this pod
    handed over and when (while other pods wait, those are theirs)."""

    def __init__(self, pod: int, pods: int) -> None:
        self.pod = pod
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
    assert config.shared_work is not None
    if not config.shared_work.board.startswith("s3://"):
        return await _share_work(config, live)
    # Start-up: only a board in S3 needs the object client.
    from scanner.storage.s3.objects import object_client

    # One object client for the whole pod, kept open: the board's many small calls and the
    # pieces' outputs all reuse it instead of each making its own.
    async with object_client(config.connection):
        return await _share_work(config, live)


async def _share_work(config: ScanConfig, live: ScanSummary) -> ScanSummary:
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
    await board.finish(Done(piece, handed, listed.objects, demand.pod))
    live.add_listed(listed.objects, listed.bytes, listed.matched, listed.skipped)
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
    segments = segments_of(records)
    async with committing(open_writer(config)) as writer:
        merged = concatenate_segments(paths, segments, config.connection)
        written = await write_records(writer, page_encoder(OutputSpec.of(config)), merged)
    finished = {"output": config.output, "records": written}
    await board.store.put(board.key("merged.json"), orjson.dumps(finished))
    return written
