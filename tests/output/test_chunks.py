"""Chunks on their own: pages of records packed for a file and read back, in blocks of any size."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scanner.errors import ScanError
from scanner.output.chunks import (
    KeyChunk,
    RecordChunk,
    Unpacker,
    as_is,
    block_reader,
    chunks_of_file,
    output_bytes,
    output_keys,
    output_records,
    pack,
    weight,
)
from scanner.records import ObjectRecord, RecordColumns

_records = st.builds(
    ObjectRecord,
    key=st.text(min_size=1, max_size=40),
    size=st.integers(0, 2**63 - 1),
    last_modified=st.just("2026-12-01T00:00:00.000Z"),
    etag=st.text(max_size=10),
    storage_class=st.sampled_from(["STANDARD", "GLACIER", ""]),
)
_pages = st.lists(st.lists(_records, min_size=1, max_size=6), max_size=6)


def _unpacked_in_blocks(data: bytes, block: int) -> list[ObjectRecord]:
    unpack = Unpacker()
    found: list[ObjectRecord] = []
    for start in range(0, len(data), block):
        for chunk in unpack(data[start : start + block]):
            found.extend(output_records(chunk))
    unpack.finish()
    return found


@settings(max_examples=60, deadline=None)
@given(pages=_pages, block=st.integers(1, 300))
def test_packed_pages_read_back_as_the_same_records_whatever_the_block_size(
    pages: list[list[ObjectRecord]], block: int
) -> None:
    data = b"".join(pack(RecordChunk(page)) for page in pages)
    assert _unpacked_in_blocks(data, block) == [record for page in pages for record in page]


@settings(max_examples=40, deadline=None)
@given(
    pages=st.lists(st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=6), max_size=6),
    block=st.integers(1, 100),
)
def test_packed_keys_read_back_as_keys_beside_records(pages: list[list[str]], block: int) -> None:
    records = [ObjectRecord("r", 1, "t", "e", "S")]
    data = b"".join(pack(KeyChunk(keys)) + pack(RecordChunk(records)) for keys in pages)
    unpack = Unpacker()
    found = [chunk for start in range(0, len(data), block) for chunk in unpack(data[start : start + block])]
    unpack.finish()
    assert [output_keys(chunk) for chunk in found if isinstance(chunk, KeyChunk)] == pages
    assert [list(output_records(chunk)) for chunk in found if isinstance(chunk, RecordChunk)] == [
        records
    ] * len(pages)
    assert pack(KeyChunk([])) == b""


def test_parsed_columns_pack_as_their_records_do() -> None:
    columns = RecordColumns(
        ["a", "b\n"], ["1", "20"], ["t1", "t2"], ['"e1"', '"e2"'], ["STANDARD", "GLACIER"]
    )
    assert pack(RecordChunk(columns)) == pack(RecordChunk(list(columns)))
    assert _unpacked_in_blocks(pack(RecordChunk(columns)), 5) == list(columns)


def test_output_bytes_pass_through_as_they_are() -> None:
    assert pack(b"line\n") == b"line\n"
    assert as_is(b"part of a li") == (b"part of a li",)
    assert block_reader(False) is as_is
    assert isinstance(block_reader(True), Unpacker)
    assert output_bytes(b"x") == b"x"


def test_a_page_of_records_weighs_more_than_its_keys() -> None:
    page = [ObjectRecord("k" * 10, 1, "t", "e", "S")] * 3
    assert weight(RecordChunk(page)) > 30
    assert weight(b"12345") == 5
    assert pack(RecordChunk([])) == b""


def test_a_file_cut_inside_a_page_is_an_error() -> None:
    data = pack(RecordChunk([ObjectRecord("key", 1, "t", "e", "S")]))
    with pytest.raises(ScanError, match="ends inside a page"):
        list(chunks_of_file(io.BytesIO(data[:-3]), Unpacker()))


def test_a_writer_of_one_kind_refuses_the_other() -> None:
    with pytest.raises(AssertionError):
        output_bytes(RecordChunk([]))
    with pytest.raises(AssertionError):
        output_records(b"")
