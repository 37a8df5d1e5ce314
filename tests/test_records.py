from __future__ import annotations

import csv
import io
import json

from hypothesis import given
from hypothesis import strategies as st

from scanner.records import ObjectRecord, csv_header, encode_csv, encode_jsonl

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
