"""Incremental scans: remember what a run saw, and emit only what changed since the last one.

With ``--state`` the workers hand the writer each page's records (before any filter, as a
``RecordChunk``) and the writer does, for each page in key order:

1. append it to the new snapshot (``StateWriter``), so the state describes the bucket, not a
   filtered view: changing a filter never fakes changes;
2. with ``--changes-only``, keep only objects added or changed since the old snapshot
   (``ChangeDetector`` merges the two sorted streams, holding one batch of the old one);
3. filter and encode what is left and hand it to the real writer.

For an items list, a task is kept when any of its items is new or changed, with all its items,
and flagged in ``metaData`` as ``{"scanChange": "new"}`` (none of its items existed before) or
``"changed"``. The snapshot is committed only after the output was, so a failed run never
advances it.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson

from scanner.config import ConnectionConfig, OutputFormat, ScanConfig
from scanner.errors import UsageError
from scanner.filters import FilterSpec, RecordFilter
from scanner.incremental.state import ChangeDetector, StateEntry, StateReader, StateWriter
from scanner.output.chunks import Chunk, output_records
from scanner.output.items import Task
from scanner.output.writers import ItemsWriter, PageEncoder, Writer
from scanner.records import ObjectRecord, encode_csv_rows


@dataclass(frozen=True, slots=True)
class IncrementalSpec:
    """What an incremental run's writer takes from the scan's options."""

    state: str
    uri: str
    connection: ConnectionConfig
    output_format: OutputFormat
    filters: FilterSpec | None = None
    changes_only: bool = False
    deletions: bool = False

    @classmethod
    def of(cls, config: ScanConfig) -> IncrementalSpec:
        assert config.state is not None
        return cls(
            state=config.state,
            uri=str(config.location),
            connection=config.connection,
            output_format=config.output_format,
            filters=config.filters,
            changes_only=config.changes_only,
            deletions=config.deletions,
        )


class IncrementalWriter:
    def __init__(self, spec: IncrementalSpec, inner: Writer, encode: PageEncoder) -> None:
        self._spec = spec
        self.inner = inner
        self._encode = encode
        filters = spec.filters
        self.filter = RecordFilter(filters) if filters is not None and not filters.is_noop else None
        # Deleted objects pass the same filter (on what they were), counted apart.
        self._deletion_filter = RecordFilter(filters or FilterSpec())
        self._state = StateWriter(spec.state, spec.uri, spec.connection)
        self._reader: StateReader | None = None
        self._detector: ChangeDetector | None = None
        # Keys still waiting in open groups, and which of them existed in the old snapshot.
        self._fresh: set[str] = set()
        self._existed: set[str] = set()
        self.removed = 0

    @property
    def changes(self) -> dict[str, int]:
        detector = self._detector
        if detector is None:
            return {}
        return {
            "added": detector.added,
            "changed": detector.changed,
            "removed": self.removed,
            "unchanged": detector.unchanged,
        }

    async def open(self) -> None:
        if self._spec.changes_only:
            self._reader = StateReader(self._spec.state, self._spec.connection)
            await self._reader.open()
            if self._reader.exists and self._reader.uri not in (None, self._spec.uri):
                raise_usage(f"the state file is for {self._reader.uri}, not {self._spec.uri}")
            self._detector = ChangeDetector(self._reader)
            if isinstance(self.inner, ItemsWriter):
                self.inner.keep_task = self._keep_task
        await self._state.open()
        await self.inner.open()

    async def write(self, chunk: Chunk) -> None:
        records = output_records(chunk)
        await self._state.add_page(records)
        if self._detector is not None:
            changes = await self._detector.classify(records)
            self.removed += len(changes.removed)
            if isinstance(self.inner, ItemsWriter):
                # Tasks need all their items; the fresh ones decide whether a task is kept.
                self._fresh.update(r.key for r in changes.fresh)
                self._existed.update(changes.changed)
            else:
                records = changes.fresh
        if self.filter is not None:
            records = self.filter.select(records)
        if self._spec.deletions and self._detector is not None:
            await self._write_with_deletions(records, changes.gone)
        elif records:
            await self.inner.write(self._encode(records))

    async def _write_with_deletions(
        self, records: Sequence[ObjectRecord], gone: Sequence[StateEntry]
    ) -> None:
        """Fresh records and deletion records merged in key order (both come sorted)."""
        was = self._deletion_filter.select([_as_record(entry) for entry in gone]) if gone else ()
        if not was:
            if records:
                await self.inner.write(self._encode_fresh(records))
            return
        fresh: list[tuple[bool, ObjectRecord]] = [(False, record) for record in records]
        deleted: list[tuple[bool, ObjectRecord]] = [(True, record) for record in was]
        merged = heapq.merge(fresh, deleted, key=lambda tagged: tagged[1].key)
        for is_deleted, run in itertools.groupby(merged, key=lambda tagged: tagged[0]):
            page = [record for _, record in run]
            chunk = encode_deleted(page, self._spec.output_format) if is_deleted else self._encode_fresh(page)
            await self.inner.write(chunk)

    def _encode_fresh(self, records: Sequence[ObjectRecord]) -> Chunk:
        if self._spec.output_format == "csv":
            return encode_csv_rows([(*record, "") for record in records])
        return self._encode(records)

    def _keep_task(self, task: Task) -> Task | None:
        items = task.items()
        fresh = [key for key in items if key in self._fresh]
        existed = any(key not in self._fresh or key in self._existed for key in items)
        for key in items:
            self._fresh.discard(key)
            self._existed.discard(key)
        if not fresh:
            return None
        return replace(task, meta_data=(("scanChange", "changed" if existed else "new"),))

    async def commit(self) -> None:
        if self._detector is not None:
            rest = await self._detector.finish_entries()
            self.removed += len(rest)
            if self._spec.deletions and rest:
                await self._write_with_deletions((), rest)
        await self.inner.commit()
        # Only now: a run whose output failed must not advance the state.
        await self._state.commit()
        await self._close_reader()

    async def abort(self) -> None:
        await self.inner.abort()
        await self._state.abort()
        await self._close_reader()

    async def _close_reader(self) -> None:
        if self._reader is not None:
            await self._reader.close()
            self._reader = None


def _as_record(entry: StateEntry) -> ObjectRecord:
    """A deleted object as it was (its storage class is not in the snapshot)."""
    return ObjectRecord(entry.key, entry.size, entry.last_modified, entry.etag, "")


def encode_deleted(records: Sequence[ObjectRecord], output_format: OutputFormat) -> bytes:
    """Deletion records: JSON Lines with ``"storage_class": null, "deleted": true``, or CSV rows
    with ``true`` in the ``deleted`` column."""
    if output_format == "csv":
        return encode_csv_rows([(r.key, r.size, r.last_modified, r.etag, "", "true") for r in records])
    dumps = orjson.dumps
    return b"".join(
        dumps(
            {
                "key": r.key,
                "size": r.size,
                "last_modified": r.last_modified,
                "etag": r.etag,
                "storage_class": None,
                "deleted": True,
            }
        )
        + b"\n"
        for r in records
    )


def raise_usage(message: str) -> Any:
    raise UsageError(message)
