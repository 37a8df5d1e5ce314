from __future__ import annotations

import csv
import io
import json

from hypothesis import given
from hypothesis import strategies as st

from scanner.records import ObjectRecord, RecordColumns, csv_header, encode_csv, encode_jsonl, total_size

keys = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20)


@given(st.lists(keys, max_size=20))
def test_jsonl_round_trip(names: list[str]) -> None:
    records = [ObjectRecord(k, 1, "2026-11-28T01:28:50.000Z", "e", "STANDARD") for k in names]
    lines = encode_jsonl(records).split(b"\n")
    assert lines[-1] == b""
    assert [json.loads(line)["key"] for line in lines[:-1]] == names


@given(st.lists(keys, max_size=20))
def test_csv_round_trip(names: list[str]) -> None:
    records = [ObjectRecord(k, 7, "2026-11-28T01:28:50.000Z", "e", "STANDARD") for k in names]
    text = (csv_header() + encode_csv(records)).decode()
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == ["key", "size", "last_modified", "etag", "storage_class"]
    assert [r[0] for r in rows[1:]] == names


texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
record_lists = st.lists(
    st.builds(ObjectRecord, keys, st.integers(min_value=0, max_value=2**63), texts, texts, texts), max_size=30
)


def _columns(records: list[ObjectRecord]) -> RecordColumns:
    return RecordColumns(
        [r.key for r in records],
        [str(r.size) for r in records],
        [r.last_modified for r in records],
        [r.etag for r in records],
        [r.storage_class for r in records],
    )


@given(record_lists)
def test_columns_encode_as_records_do(records: list[ObjectRecord]) -> None:
    """Joined from the columns or dumped by orjson a record at a time: the same bytes, whatever
    the values hold (quotes, backslashes, control characters send a page to orjson)."""
    assert encode_jsonl(_columns(records)) == encode_jsonl(records)


@given(record_lists, st.integers(), st.integers())
def test_columns_are_the_sequence_of_their_records(
    records: list[ObjectRecord], start: int, stop: int
) -> None:
    columns = _columns(records)
    assert len(columns) == len(records)
    assert list(columns) == records
    assert columns == records
    assert records == columns
    assert [columns[i] for i in range(-len(records), len(records))] == records + records
    part = columns[start:stop]
    assert isinstance(part, RecordColumns)
    assert part == records[start:stop]
    assert encode_jsonl(part) == encode_jsonl(records[start:stop])
    assert total_size(columns) == total_size(records) == sum(r.size for r in records)


def test_columns_keep_sizes_as_numbers() -> None:
    columns = RecordColumns(["a"], ["42"], ["t"], ["e"], ["STANDARD"])
    assert columns[0] == ObjectRecord("a", 42, "t", "e", "STANDARD")
    assert type(columns[0].size) is int
    assert json.loads(encode_jsonl(columns)) == {
        "key": "a",
        "size": 42,
        "last_modified": "t",
        "etag": "e",
        "storage_class": "STANDARD",
    }


@given(
    st.lists(
        st.one_of(
            st.integers(min_value=0, max_value=2**70).map(str),
            st.from_regex(r"0[0-9]{1,3}", fullmatch=True),
        ),
        max_size=30,
    )
)
def test_sizes_are_read_as_int_reads_them(digits: list[str]) -> None:
    """Past 64 bits or with leading zeros (not JSON integers), sizes still read as ``int`` does."""
    count = len(digits)
    columns = RecordColumns(["k"] * count, digits, ["t"] * count, ["e"] * count, ["STANDARD"] * count)
    assert columns.sizes == [int(text) for text in digits]
    assert all(type(size) is int for size in columns.sizes)
