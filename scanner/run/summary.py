"""What a scan counts as it goes, and the per-page work every listing task does.

``ScanSummary`` is filled in while the scan runs (the progress display reads it) and is what
``run()`` returns; ``PageHandler`` counts, filters and encodes each page where it was listed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from scanner.checkpoint.checkpoint import Counters
from scanner.config import ScanConfig
from scanner.filters import FilterSpec, RecordFilter
from scanner.incremental.writer import IncrementalWriter
from scanner.listing.enumerate import EnumerationStats
from scanner.listing.walk import WalkStats
from scanner.output.chunks import Chunk, RecordChunk
from scanner.output.spec import OutputSpec
from scanner.output.writers import ItemsWriter, PageEncoder, Writer, page_encoder
from scanner.records import ObjectRecord, total_size
from scanner.storage.s3.client import RequestStats


@dataclass
class ScanSummary:
    objects: int = 0
    bytes: int = 0
    seconds: float = 0.0
    requests: RequestStats = field(default_factory=RequestStats)
    enumeration: EnumerationStats = field(default_factory=EnumerationStats)
    spilled_bytes: int = 0
    # With filters: objects written, and objects left out by reason.
    matched: int | None = None
    skipped: dict[str, int] = field(default_factory=dict)
    tasks: int | None = None
    # Incremental runs with --changes-only: added, changed, removed, unchanged.
    changes: dict[str, int] = field(default_factory=dict)
    # With --checkpoint: objects an earlier run listed (included in ``objects``), and whether a
    # scan that stopped early saved its progress.
    resumed_objects: int = 0
    checkpoint_saved: bool = False
    # How the key space was listed: "ranges" (byte order and StartAfter) or "tree walk"; and
    # what the server answered that made the scan switch, if it did.
    strategy: str = "ranges"
    switched_because: str | None = None
    walk: WalkStats = field(default_factory=WalkStats)
    # With --limit: the output holds that many records, and the listing stopped there.
    limited: bool = False
    # With standard output: bytes and lines handed to it so far (a stopped scan says so).
    streamed_bytes: int = 0
    streamed_lines: int = 0
    # Records handed to a writer of standard output that takes records (an items list).
    streamed_records: int = 0

    def restart_counts(self) -> None:
        """Forget what a listing that was given up counted (its output is thrown away)."""
        self.objects = self.bytes = 0
        self.matched = None
        self.skipped = {}
        self.spilled_bytes = 0

    @property
    def keys_per_second(self) -> float:
        listed = self.objects - self.resumed_objects
        return listed / self.seconds if self.seconds > 0 else 0.0

    def add_skipped(self, reasons: dict[str, int]) -> None:
        for reason, count in reasons.items():
            self.skipped[reason] = self.skipped.get(reason, 0) + count

    def add_worker(self, report: dict[str, Any]) -> None:
        """What a worker process listed (its report), added to this scan's counts."""
        self.add_listed(report["objects"], report["bytes"], report["matched"], report["skipped"])
        self.requests.requests += report["requests"]
        self.requests.retries += report["retries"]

    def add_listed(self, objects: int, size: int, matched: int | None, skipped: dict[str, int]) -> None:
        """Objects listed elsewhere (a worker, a piece of a shared scan), added to these counts."""
        self.objects += objects
        self.bytes += size
        if matched is not None:
            self.matched = (self.matched or 0) + matched
            self.add_skipped(skipped)


@dataclass(frozen=True, slots=True)
class PageSpec:
    """What the per-page stage takes from the scan's options."""

    encode: PageEncoder
    start_after: str | None = None
    # None where the writer filters (``--state``: the snapshot needs every record).
    filters: FilterSpec | None = None

    @classmethod
    def of(cls, config: ScanConfig) -> PageSpec:
        if config.state is not None:
            return cls(RecordChunk, config.start_after)
        return cls(page_encoder(OutputSpec.of(config)), config.start_after, config.filters)


class PageHandler:
    """Counts, filters and encodes one page of records: what each worker does per page."""

    def __init__(self, spec: PageSpec, summary: ScanSummary) -> None:
        self._summary = summary
        self._start_after = spec.start_after
        self._encode = spec.encode
        filters = spec.filters
        self.filter = RecordFilter(filters) if filters is not None and not filters.is_noop else None

    def __call__(self, records: Sequence[ObjectRecord]) -> Chunk:
        return self.encode(self.select(records))

    def select(self, records: Sequence[ObjectRecord]) -> Sequence[ObjectRecord]:
        """Count a page, and keep what passes the filter."""
        after = self._start_after
        if after is not None and records and records[0].key <= after:
            # The tree walk lists every folder whole: --start-after is applied here.
            records = [record for record in records if record.key > after]
        summary = self._summary
        summary.objects += len(records)
        summary.bytes += total_size(records)
        if self.filter is not None:
            records = self.filter.select(records)
        return records

    def encode(self, records: Sequence[ObjectRecord]) -> Chunk:
        return self._encode(records) if records else b""

    def finish(self) -> None:
        if self.filter is not None:
            # Added, not set: worker processes' counts may be in already.
            self._summary.matched = (self._summary.matched or 0) + self.filter.matched
            self._summary.add_skipped(self.filter.skipped)

    def counters(self) -> Counters:
        """What a checkpoint saves of the counts so far."""
        selection = self.filter
        return Counters(
            objects=self._summary.objects,
            bytes=self._summary.bytes,
            matched=selection.matched if selection is not None else None,
            skipped=dict(selection.skipped) if selection is not None else {},
        )

    def restore(self, counters: Counters) -> None:
        """Carry on counting from what a checkpoint saved."""
        self._summary.objects = counters.objects
        self._summary.bytes = counters.bytes
        self._summary.resumed_objects = counters.objects
        if self.filter is not None:
            self.filter.matched = counters.matched or 0
            self.filter.skipped = dict(counters.skipped)


def finish_summary(summary: ScanSummary, writer: Writer) -> None:
    if isinstance(writer, IncrementalWriter):
        summary.changes = writer.changes
        if writer.filter is not None:
            summary.matched = writer.filter.matched
            summary.add_skipped(writer.filter.skipped)
        writer = writer.inner
    if isinstance(writer, ItemsWriter):
        summary.tasks = writer.tasks
        summary.add_skipped(writer.skipped)
