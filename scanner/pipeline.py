"""The scan as one task group: ranges -> encode -> (order) -> one writer -> sink.

Workers list ranges and encode each page into one bytes chunk as soon as it arrives. In ordered
mode (the default) chunks go into ``OrderedOutput`` and the single writer drains it in key order;
with ``--unordered`` they go through a small bounded stream straight to the writer. Either way
memory is bounded: at most ``concurrency`` pages in flight, a bounded stream or budgeted buffers
(with spill files past the budget), and one writer that owns the sink.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import anyio

from scanner.config import ScanConfig
from scanner.enumerate import EnumerationStats, Enumerator, OutputSlot, PageSource
from scanner.keyspace import KeyRange
from scanner.ordering import OrderedOutput, Segment
from scanner.records import ObjectRecord, csv_header, encode_csv, encode_jsonl
from scanner.s3.client import RequestStats, S3PageSource
from scanner.sinks import Sink, open_sink

_UNORDERED_BUFFER = 32


@dataclass
class ScanSummary:
    objects: int = 0
    bytes: int = 0
    seconds: float = 0.0
    requests: RequestStats = field(default_factory=RequestStats)
    enumeration: EnumerationStats = field(default_factory=EnumerationStats)
    spilled_bytes: int = 0

    @property
    def keys_per_second(self) -> float:
        return self.objects / self.seconds if self.seconds > 0 else 0.0


def encoder_for(config: ScanConfig) -> Callable[[list[ObjectRecord]], bytes]:
    return encode_csv if config.output_format == "csv" else encode_jsonl


def preamble_for(config: ScanConfig) -> bytes:
    return csv_header() if config.output_format == "csv" else b""


async def run_scan(
    config: ScanConfig,
    source: PageSource | None = None,
    ranges: Sequence[KeyRange] | None = None,
) -> ScanSummary:
    """Scan ``config.location`` (or only ``ranges`` of it) into ``config.output``.

    The output is complete or absent.
    """
    started = time.perf_counter()
    summary = ScanSummary()
    sink = open_sink(config.output, config.connection)
    await sink.open()
    try:
        if source is None:
            async with S3PageSource(config.location, config.connection) as s3:
                summary.requests = s3.stats
                await _scan_into(config, s3, sink, summary, ranges)
        else:
            await _scan_into(config, source, sink, summary, ranges)
        await sink.commit()
    except BaseException:
        with anyio.CancelScope(shield=True):
            await sink.abort()
        raise
    summary.seconds = time.perf_counter() - started
    return summary


async def _scan_into(
    config: ScanConfig,
    source: PageSource,
    sink: Sink,
    summary: ScanSummary,
    ranges: Sequence[KeyRange] | None,
) -> None:
    encode = encoder_for(config)
    preamble = preamble_for(config)
    if preamble:
        await sink.write(preamble)
    root = KeyRange(config.location.prefix)
    parallelism = config.connection.concurrency

    if config.ordered:
        output = OrderedOutput(config.memory_budget, temp_dir=config.temp_dir)

        async def emit_ordered(slot: OutputSlot, records: list[ObjectRecord]) -> None:
            _count(summary, records)
            assert isinstance(slot, Segment)
            await output.put(slot, encode(records))

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
                group.start_soon(output.drain, sink.write)
                if ranges is None:
                    await enumerator.run(output.first)
                else:
                    await enumerator.run_ranges(ranges, output.first)
        finally:
            summary.spilled_bytes = output.spilled_bytes
            output.close()
        return

    send, receive = anyio.create_memory_object_stream[bytes](_UNORDERED_BUFFER)

    async def emit_unordered(slot: OutputSlot, records: list[ObjectRecord]) -> None:
        _count(summary, records)
        await send.send(encode(records))

    async def drain() -> None:
        async with receive:
            async for chunk in receive:
                await sink.write(chunk)

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


def _count(summary: ScanSummary, records: list[ObjectRecord]) -> None:
    summary.objects += len(records)
    summary.bytes += sum(r.size for r in records)
