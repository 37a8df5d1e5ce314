"""Resumable scans: ``--checkpoint DIR|s3://BUCKET/PREFIX``.

The ordered output is a chain of segments (``scanner.output.ordering``), each standing for a key range
``(after, end]`` and holding the encoded records listed into it so far, in key order. That chain
is the whole state of a scan, so it is what a checkpoint saves:

- every chunk put into a segment is also appended to the current *piece*, a journal file (a
  page of records packed as bytes, ``scanner.output.chunks``), and the segment remembers where
  it went (piece, offset, length);
- every ``interval`` seconds, and once more when the scan is stopped or fails, the current piece
  is closed and made durable and a new one begun, then the *manifest* is replaced: for every
  segment in key order its range, the last key listed into it, whether it is complete, and its
  extents; plus the scan's counters and a fingerprint of the scan. The manifest is built in one
  synchronous step, so it is consistent with the pieces it names, and it is written only after
  them, so a process killed at any moment leaves a valid manifest behind (the previous one).

Resuming rebuilds the chain from the manifest: each segment gets its saved bytes back (read
from the pieces before anything new), complete segments are done, and each incomplete one lists
only what is left of its range, ``(last key listed, end]``, into itself. The writer therefore
sees the very byte stream an uninterrupted scan produces, so every output format, the items
list's grouping and the ``--state`` snapshot come out the same; finished ranges are not listed
again, and no key is lost or listed twice. What is saved is the record stream, not the output
file: the output is still written atomically at the end of the run that completes the scan.

On success the checkpoint is removed; a scan that cannot remove it fails, because the next run
would otherwise resume a scan that already finished.
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Final

import anyio
import orjson

from scanner.checkpoint.store import PIECE_PREFIX, CheckpointStore, Piece
from scanner.config import ScanConfig
from scanner.errors import ScanError, UsageError
from scanner.keyspace import KeyRange
from scanner.output.chunks import Chunk, pack
from scanner.output.ordering import Extent, OrderedOutput, Segment

FORMAT: Final = "bucket-scanner-checkpoint"
# 2: pages of records (items lists, --state) are journaled as whole records, not keys only.
VERSION: Final = 2
# A stopped scan saves once more; a pod's grace period after SIGTERM is 30 s by default.
FINAL_SAVE_SECONDS: Final = 20.0


@dataclass(frozen=True, slots=True)
class SavedSegment:
    """One segment as a checkpoint records it."""

    after: str | None
    listed: str | None
    end: str | None
    complete: bool
    extents: tuple[Extent, ...] = ()

    def remaining(self, prefix: str) -> KeyRange | None:
        """What is left to list of this segment's range; ``None`` once it is complete."""
        if self.complete:
            return None
        return KeyRange(prefix, self.listed if self.listed is not None else self.after, self.end)


def merge_segments(segments: Sequence[SavedSegment]) -> list[SavedSegment]:
    """Fewer, equivalent segments: each one following a complete segment is folded into it.

    A complete segment's bytes are exactly its range, so the one after it simply continues
    them: same bytes in the same order, same ranges left to list.
    """
    merged: list[SavedSegment] = []
    for segment in segments:
        last = merged[-1] if merged else None
        if last is not None and last.complete and last.end == segment.after:
            merged[-1] = SavedSegment(
                last.after,
                segment.listed if segment.listed is not None else last.end,
                segment.end,
                segment.complete,
                last.extents + segment.extents,
            )
        else:
            merged.append(segment)
    return merged


def scan_fingerprint(config: ScanConfig) -> dict[str, str]:
    """What must not change between a run and its resumption: what is listed, and how it is encoded."""
    encoding = repr(
        (
            config.output_format,
            config.filters,
            config.grouping,
            config.legacy_items,
            config.state is not None,
        )
    )
    shard = [(part.start_after, part.end) for part in config.shard_ranges or ()]
    return {
        "uri": str(config.location),
        # One range as (after, end), as before shards could have several.
        "shard": repr(shard[0] if len(shard) == 1 else shard) if shard else "",
        "encoding": hashlib.sha256(encoding.encode()).hexdigest()[:16],
    }


def scan_settings(config: ScanConfig) -> dict[str, str]:
    """The options behind the fingerprint's ``encoding``, readable: what a refusal names."""
    settings = {
        "--format": config.output_format,
        "--state": "given" if config.state is not None else "not given",
        "--legacy-items": "on" if config.legacy_items else "off",
    }
    grouping = config.grouping
    if grouping is not None:
        settings |= {
            "--group": grouping.mode,
            "--study-depth": str(grouping.study_depth),
            "--name-template": grouping.name_template or "the default",
            "--dedupe-names": "on" if grouping.dedupe_names else "off",
            "--task-order": grouping.order,
        }
    spec = config.filters
    chosen = {
        "--type": ",".join(spec.types) if spec is not None else "",
        "--dicom-no-extension": "on" if spec is not None and spec.dicom_no_extension else "",
        "--include": ",".join(spec.include) if spec is not None else "",
        "--exclude": ",".join(spec.exclude) if spec is not None else "",
        "--min-size": str(spec.min_size) if spec is not None and spec.min_size is not None else "",
        "--max-size": str(spec.max_size) if spec is not None and spec.max_size is not None else "",
        "--modified-after": spec.modified_after.isoformat() if spec and spec.modified_after else "",
        "--modified-before": spec.modified_before.isoformat() if spec and spec.modified_before else "",
        "--keep-side-files": "on" if spec is not None and spec.skip_side_files is False else "",
    }
    settings |= {option: value or "none" for option, value in chosen.items()}
    return settings


def settings_differ(saved: Any, current: dict[str, str]) -> str:
    """The options whose values differ, as ``--format jsonl (this run: items)``; empty if unknown."""
    if not isinstance(saved, dict):
        return ""
    differ = [
        f"{option} {saved.get(option, '?')} (this run: {value})"
        for option, value in current.items()
        if saved.get(option, value) != value
    ]
    return ", ".join(differ)


@dataclass
class Counters:
    objects: int = 0
    bytes: int = 0
    matched: int | None = None
    skipped: dict[str, int] = field(default_factory=dict)


@dataclass
class Restored:
    """A scan rebuilt from a checkpoint: its chain, what is left to list, and its counters."""

    first: Segment
    work: list[tuple[KeyRange, Segment]]
    complete: list[Segment]
    counters: Counters
    started: str


class Checkpoint:
    """Journals a scan's ordered output and saves it to ``store`` now and then."""

    def __init__(self, store: CheckpointStore, config: ScanConfig, interval: float) -> None:
        self.store = store
        self._fingerprint = scan_fingerprint(config)
        self._settings = scan_settings(config)
        self._prefix = config.location.prefix
        self._interval = interval
        self._run = secrets.token_hex(4)
        self._generation = 0
        self._piece: Piece | None = None
        self._unpublished: list[Piece] = []
        self._lock = anyio.Lock()
        self._output: OrderedOutput | None = None
        self._counters: Callable[[], Counters] = Counters
        # Segments the writer is done with, most folded into one complete prefix (the chain
        # forgets them as it goes, but the checkpoint still needs their bytes).
        self._prefix_segment: SavedSegment | None = None
        self._prefix_extents: list[Extent] = []
        self._released: list[SavedSegment] = []
        self._open_files: list[IO[bytes]] = []
        self.started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.saves = 0
        self._resumable: Callable[[], bool] = lambda: True
        self._valid = True

    # -- resuming --------------------------------------------------------------------------

    async def restore(self) -> Restored | None:
        """The scan saved in the store, rebuilt; ``None`` when there is none."""
        data = await self.store.read_manifest()
        if data is None:
            return None
        manifest = self._check(data)
        pieces: list[str] = manifest["pieces"]
        files: dict[str, IO[bytes]] = {}
        for name in pieces:
            files[name] = await self.store.open_piece(name)
            self._open_files.append(files[name])
        saved = [_segment_from_json(entry, pieces) for entry in manifest["segments"]]
        chain = [_rebuild(segment, files) for segment in saved]
        for before, after in itertools.pairwise(chain):
            before.next = after
        work: list[tuple[KeyRange, Segment]] = []
        complete: list[Segment] = []
        for segment, record in zip(chain, saved, strict=True):
            remaining = record.remaining(self._prefix)
            if remaining is None:
                complete.append(segment)
            else:
                work.append((remaining, segment))
        counters = manifest["counters"]
        self.started = str(manifest.get("started", self.started))
        return Restored(
            first=chain[0],
            work=work,
            complete=complete,
            counters=Counters(
                objects=int(counters["objects"]),
                bytes=int(counters["bytes"]),
                matched=counters.get("matched"),
                skipped=dict(counters.get("skipped", {})),
            ),
            started=self.started,
        )

    def _check(self, data: bytes) -> dict[str, Any]:
        where = self.store.where
        try:
            manifest = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UsageError(
                f"the checkpoint at {where} is damaged (not JSON); remove it to start over"
            ) from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise UsageError(f"{where} does not hold a checkpoint of this scanner; give an empty location")
        if manifest.get("version") != VERSION:
            raise UsageError(
                f"the checkpoint at {where} has version {manifest.get('version')!r}, this scanner reads "
                f"{VERSION}; remove it to start over"
            )
        saved = manifest.get("scan", {})
        for name, value in self._fingerprint.items():
            if saved.get(name) != value:
                what = {"uri": "another bucket or prefix", "shard": "another shard"}.get(
                    name, "another output format or selection"
                )
                differ = settings_differ(manifest.get("settings"), self._settings)
                if name == "uri":
                    what = f"another bucket or prefix, {saved.get('uri', '?')} (this run: {value})"
                elif name == "shard":
                    what = f"another shard of {saved.get('uri', '?')}"
                elif differ:
                    what = f"{saved.get('uri', '?')} with other options: {differ}"
                else:
                    what = f"{what} ({saved.get('uri', '?')})"
                raise UsageError(
                    f"the checkpoint at {where} belongs to a scan of {what}; remove it or give "
                    "another --checkpoint"
                )
        return dict(manifest)

    def close(self) -> None:
        for file in self._open_files:
            file.close()
        self._open_files.clear()
        for piece in [*self._unpublished, *([self._piece] if self._piece else [])]:
            piece.file.close()

    # -- journaling ------------------------------------------------------------------------

    def attach(
        self, output: OrderedOutput, counters: Callable[[], Counters], resumable: Callable[[], bool]
    ) -> None:
        """Journal ``output`` from now on. ``resumable`` turns false when the scan cannot resume
        from a checkpoint (a server that ignores StartAfter is listed with continuation tokens,
        which do not survive the process); the last manifest saved stays valid then."""
        self._output = output
        self._counters = counters
        self._resumable = resumable
        output.journal = self._journal
        output.on_release = self._release

    def _journal(self, segment: Segment, chunk: Chunk) -> None:
        data = pack(chunk)
        piece = self._piece
        if piece is None:
            self._generation += 1
            piece = self._piece = self.store.new_piece(f"{PIECE_PREFIX}{self._run}-{self._generation:06d}")
        offset = piece.append(data)
        extents = segment.extents
        if extents:
            name, start, length = extents[-1]
            if name == piece.name and start + length == offset:
                extents[-1] = (name, start, length + len(data))
                return
        extents.append((piece.name, offset, len(data)))

    def _release(self, segment: Segment) -> None:
        saved = _saved(segment)
        prefix = self._prefix_segment
        if not self._released and saved.complete and (prefix is None or prefix.end == saved.after):
            self._prefix_extents.extend(saved.extents)
            after = prefix.after if prefix is not None else saved.after
            self._prefix_segment = SavedSegment(after, saved.end, saved.end, True)
        else:
            self._released.append(saved)

    def invalidate(self) -> None:
        """A page was counted but not journaled: save nothing more (the last save stays valid)."""
        self._valid = False

    # -- saving ----------------------------------------------------------------------------

    async def run_periodically(self) -> None:
        while True:
            await anyio.sleep(self._interval)
            await self.save()

    async def save(self) -> bool:
        """Make every journaled byte durable, then replace the manifest with one naming them;
        whether it saved (a scan that cannot resume does not)."""
        async with self._lock:
            if self._output is None or not self._valid or not self._resumable():
                return False
            if self._piece is not None:
                self._unpublished.append(self._piece)
                self._piece = None
            manifest = self._manifest()
            while self._unpublished:
                await self.store.publish(self._unpublished[0])
                self._unpublished.pop(0)
            await self.store.write_manifest(manifest)
            self.saves += 1
            return True

    async def save_after_failure(self) -> bool:
        """One more save when the scan stops early; whether it saved any progress."""
        with anyio.move_on_after(FINAL_SAVE_SECONDS, shield=True):
            try:
                return await self.save() and self._counters().objects > 0
            except (ScanError, OSError):
                return False
        return False

    def _manifest(self) -> bytes:
        assert self._output is not None
        segments: list[SavedSegment] = []
        if self._prefix_segment is not None:
            prefix = self._prefix_segment
            segments.append(
                SavedSegment(prefix.after, prefix.listed, prefix.end, True, tuple(self._prefix_extents))
            )
        segments.extend(self._released)
        segments.extend(_saved(segment) for segment in self._output.segments())
        segments = merge_segments(segments)
        pieces: dict[str, int] = {}
        encoded = []
        for segment in segments:
            encoded.append(
                {
                    "after": segment.after,
                    "listed": segment.listed,
                    "end": segment.end,
                    "complete": segment.complete,
                    "extents": [
                        [pieces.setdefault(name, len(pieces)), offset, length]
                        for name, offset, length in segment.extents
                    ],
                }
            )
        counters = self._counters()
        return orjson.dumps(
            {
                "format": FORMAT,
                "version": VERSION,
                "scan": self._fingerprint,
                "settings": self._settings,
                "started": self.started,
                "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "counters": {
                    "objects": counters.objects,
                    "bytes": counters.bytes,
                    "matched": counters.matched,
                    "skipped": counters.skipped,
                },
                "pieces": list(pieces),
                "segments": encoded,
            }
        )


def _saved(segment: Segment) -> SavedSegment:
    return SavedSegment(segment.after, segment.listed, segment.end, segment.complete, tuple(segment.extents))


def _segment_from_json(entry: dict[str, Any], pieces: list[str]) -> SavedSegment:
    return SavedSegment(
        entry["after"],
        entry["listed"],
        entry["end"],
        bool(entry["complete"]),
        tuple((pieces[index], offset, length) for index, offset, length in entry["extents"]),
    )


def _rebuild(saved: SavedSegment, files: dict[str, IO[bytes]]) -> Segment:
    segment = Segment(saved.after, saved.end)
    segment.listed = saved.listed
    segment.extents = list(saved.extents)
    segment.preloaded.extend((files[name], offset, length) for name, offset, length in saved.extents)
    return segment
