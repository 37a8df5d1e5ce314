"""The scan as one task group: ranges -> filter -> encode -> (order) -> one writer.

Workers list ranges, filter each page and encode it into one bytes chunk as soon as it arrives.
In ordered mode (the default) chunks go into ``OrderedOutput`` and the single writer drains it in
key order; with ``--unordered`` they go through a small bounded stream straight to the writer.
Either way memory is bounded: at most ``concurrency`` pages in flight, a bounded stream or
budgeted buffers (with spill files past the budget), and one writer that owns the output.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio

from scanner.config import ScanConfig
from scanner.enumerate import EnumerationStats, Enumerator, OutputSlot, PageSource
from scanner.filters import RecordFilter
from scanner.keyspace import KeyRange
from scanner.ordering import OrderedOutput, Segment
from scanner.records import ObjectRecord
from scanner.s3.client import RequestStats, S3PageSource
from scanner.writers import ItemsWriter, PageEncoder, Writer, make_writer, page_encoder

_UNORDERED_BUFFER = 32


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

    @property
    def keys_per_second(self) -> float:
        return self.objects / self.seconds if self.seconds > 0 else 0.0

    def add_skipped(self, reasons: dict[str, int]) -> None:
        for reason, count in reasons.items():
            self.skipped[reason] = self.skipped.get(reason, 0) + count


class PageHandler:
    """Counts, filters and encodes one page of records: what each worker does per page."""

    def __init__(self, config: ScanConfig, summary: ScanSummary) -> None:
        self._summary = summary
        spec = config.filters
        if config.state is not None:
            # The writer needs every record, in order, for the snapshot; it filters there.
            from scanner.incremental import encode_full_records

            self._encode: PageEncoder = encode_full_records
            spec = None
        else:
            self._encode = page_encoder(config)
        self.filter = RecordFilter(spec) if spec is not None and not spec.is_noop else None

    def __call__(self, records: list[ObjectRecord]) -> bytes:
        summary = self._summary
        summary.objects += len(records)
        summary.bytes += sum(r.size for r in records)
        if self.filter is not None:
            records = self.filter.select(records)
        return self._encode(records) if records else b""

    def finish(self) -> None:
        if self.filter is not None:
            self._summary.matched = self.filter.matched
            self._summary.add_skipped(self.filter.skipped)


async def run_scan(
    config: ScanConfig,
    source: PageSource | None = None,
    ranges: Sequence[KeyRange] | None = None,
    summary: ScanSummary | None = None,
) -> ScanSummary:
    """Scan ``config.location`` (or only ``ranges`` of it) into ``config.output``.

    The output is complete or absent. ``summary``, when given, is filled in as the scan goes
    (for progress reports).
    """
    started = time.perf_counter()
    summary = summary if summary is not None else ScanSummary()
    writer = make_writer(config)
    await writer.open()
    try:
        if source is None:
            async with S3PageSource(config.location, config.connection) as s3:
                summary.requests = s3.stats
                await _scan_into(config, s3, writer, summary, ranges)
        else:
            await _scan_into(config, source, writer, summary, ranges)
        await writer.commit()
    except BaseException:
        with anyio.CancelScope(shield=True):
            await writer.abort()
        raise
    finish_summary(summary, writer)
    summary.seconds = time.perf_counter() - started
    return summary


def finish_summary(summary: ScanSummary, writer: Writer) -> None:
    from scanner.incremental import IncrementalWriter

    if isinstance(writer, IncrementalWriter):
        summary.changes = writer.changes
        if writer.filter is not None:
            summary.matched = writer.filter.matched
            summary.add_skipped(writer.filter.skipped)
        writer = writer.inner
    if isinstance(writer, ItemsWriter):
        summary.tasks = writer.tasks
        summary.add_skipped(writer.skipped)


async def _scan_into(
    config: ScanConfig,
    source: PageSource,
    writer: Writer,
    summary: ScanSummary,
    ranges: Sequence[KeyRange] | None,
) -> None:
    handle = PageHandler(config, summary)
    root = KeyRange(config.location.prefix)
    parallelism = config.connection.concurrency

    if config.ordered:
        output = OrderedOutput(config.memory_budget, temp_dir=config.temp_dir)

        async def emit_ordered(slot: OutputSlot, records: list[ObjectRecord]) -> None:
            assert isinstance(slot, Segment)
            await output.put(slot, handle(records))

        def split_slot(slot: OutputSlot, count: int) -> list[OutputSlot]:
            assert isinstance(slot, Segment)
            return list(output.insert_after(slot, count))

        def finish_slot(slot: OutputSlot) -> None:
            assert isinstance(slot, Segment)
            output.finish(slot)

        enumerator = Enumerator(
            source,
            root,
            parallelism=parallelism,
            emit=emit_ordered,
            split_slot=split_slot,
            finish_slot=finish_slot,
        )
        summary.enumeration = enumerator.stats
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(output.drain, writer.write)
                if ranges is None:
                    await enumerator.run(output.first)
                else:
                    await enumerator.run_ranges(ranges, output.first)
        finally:
            summary.spilled_bytes = output.spilled_bytes
            output.close()
        handle.finish()
        return

    send, receive = anyio.create_memory_object_stream[bytes](_UNORDERED_BUFFER)

    async def emit_unordered(slot: OutputSlot, records: list[ObjectRecord]) -> None:
        chunk = handle(records)
        if chunk:
            await send.send(chunk)

    async def drain() -> None:
        async with receive:
            async for chunk in receive:
                await writer.write(chunk)

    enumerator = Enumerator(
        source,
        root,
        parallelism=parallelism,
        emit=emit_unordered,
        split_slot=lambda slot, count: [slot] * count,
        finish_slot=lambda slot: None,
    )
    summary.enumeration = enumerator.stats
    async with anyio.create_task_group() as group:
        group.start_soon(drain)
        async with send:
            if ranges is None:
                await enumerator.run(object())
            else:
                await enumerator.run_ranges(ranges, object())
    handle.finish()
