"""The writer stage on its own: chunks in, one committed output (or none) out."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from scanner.config import ConnectionConfig, ScanConfig, parse_s3_uri
from scanner.grouping import GroupingSpec
from scanner.output.chunks import KeyChunk
from scanner.output.spec import OutputSpec
from scanner.output.writers import make_writer, numbered_output, page_encoder
from scanner.records import ObjectRecord

PAGES = [
    [
        ObjectRecord(
            f"study{s}/series{n}/img{i}.dcm", 10 * i, "2026-12-01T00:00:00.000Z", f'"e{i}"', "STANDARD"
        )
        for n in range(2)
        for i in range(3)
    ]
    for s in range(2)
]


def _config(output: Path, output_format: str = "jsonl", **changes: object) -> ScanConfig:
    config = ScanConfig(
        location=parse_s3_uri("s3://bucket/"), connection=ConnectionConfig(), output=str(output)
    )
    return replace(config, output_format=output_format, **changes)  # type: ignore[arg-type]


def _write(config: ScanConfig, commit: bool = True) -> None:
    async def run() -> None:
        writer = make_writer(OutputSpec.of(config))
        encode = page_encoder(OutputSpec.of(config))
        await writer.open()
        for page in PAGES:
            await writer.write(encode(page))
        await (writer.commit() if commit else writer.abort())

    anyio.run(run)


def test_json_lines_are_the_pages_in_order(tmp_path: Path) -> None:
    _write(_config(tmp_path / "out.jsonl"))
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert [json.loads(line)["key"] for line in lines] == [r.key for page in PAGES for r in page]


def test_csv_starts_with_its_header(tmp_path: Path) -> None:
    _write(_config(tmp_path / "out.csv", "csv"))
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out.csv").read_text())))
    assert [row["key"] for row in rows] == [r.key for page in PAGES for r in page]
    assert rows[0]["size"] == "0"


@pytest.mark.parametrize("output_format", ["jsonl", "csv", "items"])
def test_an_aborted_output_leaves_nothing(tmp_path: Path, output_format: str) -> None:
    grouping = GroupingSpec(mode="series") if output_format == "items" else None
    _write(_config(tmp_path / "out", output_format, grouping=grouping), commit=False)
    assert list(tmp_path.iterdir()) == []


def test_items_writer_groups_keys_into_series_tasks(tmp_path: Path) -> None:
    _write(_config(tmp_path / "items.json", "items", grouping=GroupingSpec(mode="series")))
    tasks = json.loads((tmp_path / "items.json").read_text())
    assert [task["name"] for task in tasks] == [
        "study0/series0",
        "study0/series1",
        "study1/series0",
        "study1/series1",
    ]
    assert all(len(task["series"][0]["items"]) == 3 for task in tasks)


def test_items_writer_rolls_over_to_numbered_files(tmp_path: Path) -> None:
    config = _config(
        tmp_path / "items.json", "items", grouping=GroupingSpec(mode="series"), max_tasks_per_file=3
    )
    _write(config)
    first = json.loads((tmp_path / "items-00001.json").read_text())
    second = json.loads((tmp_path / "items-00002.json").read_text())
    assert (len(first), len(second)) == (3, 1)


def test_items_writers_are_handed_the_pages_keys() -> None:
    config = _config(Path("items.json"), "items", grouping=GroupingSpec(mode="series"))
    chunk = page_encoder(OutputSpec.of(config))(PAGES[0])
    assert isinstance(chunk, KeyChunk)
    assert list(chunk.keys) == [record.key for record in PAGES[0]]


@pytest.mark.parametrize(
    ("output", "number", "numbered"),
    [
        ("items.json", 1, "items-00001.json"),
        ("s3://b/out/items.json", 12, "s3://b/out/items-00012.json"),
        ("dir.v2/items", 3, "dir.v2/items-00003"),
    ],
)
def test_numbered_output_keeps_the_extension_last(output: str, number: int, numbered: str) -> None:
    assert numbered_output(output, number) == numbered
