"""The pieces of a shared scan (``scanner.run.sharing``) and the tree they form, as pure data.

The roots are the plan's parts, which tile the prefix; a piece handed over is a range inside its
parent, and a done record says which pieces were handed over from a piece. A piece's output
holds its range less its children's, so the outputs' segments (``segments_of``) tile the prefix
exactly when the tree is whole (``in_key_order``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from scanner.config import SharedWork
from scanner.errors import ScanError
from scanner.keyspace import KeyRange


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


def range_json(key_range: KeyRange) -> dict[str, Any]:
    return {"start_after": key_range.start_after, "end": key_range.end}


def range_of(document: dict[str, Any], prefix: str) -> KeyRange:
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
            **range_json(self.piece.range),
            "children": [{"id": child.id, **range_json(child.range)} for child in self.children],
            "objects": self.objects,
            "pod": self.pod,
        }
        return orjson.dumps(document)

    @classmethod
    def from_json(cls, data: bytes, prefix: str) -> Done:
        document = orjson.loads(data)
        children = tuple(Piece(c["id"], range_of(c, prefix)) for c in document["children"])
        piece = Piece(document["id"], range_of(document, prefix))
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
