"""Ordering and spill on their own: producers finish in any order, the writer sees key order."""

from __future__ import annotations

import random

import anyio
from hypothesis import given, settings
from hypothesis import strategies as st

from scanner.output.chunks import Chunk, RecordChunk, Unpacker, output_bytes, output_records
from scanner.output.external_sort import ExternalSort
from scanner.output.ordering import OrderedOutput, Segment
from scanner.records import ObjectRecord


def _chain(output: OrderedOutput, count: int) -> list[Segment]:
    """``count`` segments in key order: the first, then ``count - 1`` inserted after it."""
    bounds = [(f"k{index:03d}", f"k{index + 1:03d}") for index in range(1, count)]
    return [output.first, *output.insert_after(output.first, bounds)]


def _drain_in_random_order(output: OrderedOutput, chunks: list[list[Chunk]], seed: int) -> list[Chunk]:
    """Each segment's producer puts its chunks, producers started in a shuffled order; what the
    writer was handed, in order."""
    chain = _chain(output, len(chunks))
    written: list[Chunk] = []
    order = list(range(len(chunks)))
    random.Random(seed).shuffle(order)

    async def write(chunk: Chunk) -> None:
        written.append(chunk)

    async def produce(index: int) -> None:
        for chunk in chunks[index]:
            await output.put(chain[index], chunk)
            await anyio.sleep(0)
        output.finish(chain[index])

    async def main() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(output.drain, write)
            for index in order:
                group.start_soon(produce, index)
        output.close()

    anyio.run(main)
    return written


def _run(budget: int, chunks_per_segment: int, segments: int, seed: int) -> tuple[list[bytes], int]:
    output = OrderedOutput(memory_budget=budget, head_limit=64)
    chunks: list[list[Chunk]] = [
        [b"%03d-%03d;" % (s, c) for c in range(chunks_per_segment)] for s in range(segments)
    ]
    written = [output_bytes(chunk) for chunk in _drain_in_random_order(output, chunks, seed)]
    assert b"".join(written) == b"".join(output_bytes(chunk) for segment in chunks for chunk in segment)
    return written, output.spilled_bytes


def _listed(segment: int, index: int) -> ObjectRecord:
    return ObjectRecord(f"s{segment:03d}/k{index:03d}", index, "2026-12-01T00:00:00.000Z", '"e"', "STANDARD")


@settings(max_examples=30, deadline=None)
@given(budget=st.sampled_from([0, 600, 1 << 20]), segments=st.integers(1, 8), seed=st.integers(0, 1000))
def test_pages_of_records_come_out_as_records_in_order_through_spill(
    budget: int, segments: int, seed: int
) -> None:
    output = OrderedOutput(memory_budget=budget, head_limit=0, read_back=Unpacker())
    pages = [[[_listed(s, 3 * page + i) for i in range(3)] for page in range(4)] for s in range(segments)]
    chunks: list[list[Chunk]] = [[RecordChunk(page) for page in segment] for segment in pages]
    seen = [
        record for chunk in _drain_in_random_order(output, chunks, seed) for record in output_records(chunk)
    ]
    assert seen == [record for segment in pages for page in segment for record in page]
    if budget == 0 and segments > 1:
        assert output.spilled_bytes > 0


@settings(max_examples=30, deadline=None)
@given(
    budget=st.sampled_from([0, 16, 1 << 20]),
    chunks=st.integers(1, 8),
    segments=st.integers(1, 12),
    seed=st.integers(0, 1000),
)
def test_output_is_in_segment_order_whatever_order_producers_run_in(
    budget: int, chunks: int, segments: int, seed: int
) -> None:
    _run(budget, chunks, segments, seed)


def test_segments_behind_the_head_spill_past_the_budget() -> None:
    _, spilled = _run(budget=0, chunks_per_segment=5, segments=6, seed=1)
    assert spilled > 0
    _, spilled = _run(budget=1 << 20, chunks_per_segment=5, segments=6, seed=1)
    assert spilled == 0


def test_insert_after_hands_over_the_rest_of_the_range() -> None:
    head = Segment(None, None)
    output = OrderedOutput(memory_budget=0, first=head)
    new = output.insert_after(head, [("m", "t"), ("t", None)])
    assert (head.end, [(s.after, s.end) for s in new]) == ("m", [("m", "t"), ("t", None)])
    assert output.segments() == [head, *new]


def _record(key: str) -> ObjectRecord:
    return ObjectRecord(key, 1, "2026-12-01T00:00:00.000Z", '"e"', "STANDARD")


@settings(max_examples=30, deadline=None)
@given(
    keys=st.sets(st.text(min_size=1, max_size=6), max_size=300), budget=st.sampled_from([0, 2000, 1 << 20])
)
def test_external_sort_gives_byte_order_in_bounded_runs(keys: set[str], budget: int) -> None:
    keys_list = list(keys)
    random.Random(0).shuffle(keys_list)
    sort = ExternalSort(memory_budget=budget)
    for start in range(0, len(keys_list), 7):
        sort.add([_record(key) for key in keys_list[start : start + 7]])
    out = [record.key for page in sort.pages(size=10) for record in page]
    assert out == sorted(keys, key=lambda key: key.encode("utf-8", "surrogatepass"))
