"""Items lists from real S3 servers, end to end through ``python -m scanner``.

The expected lists are written out by hand from the layout below (not computed by the code
under test), and every output is validated against the RedBrick schemas kept in the package.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.conftest import S3Target, run_scanner

LAYOUT = {
    # DICOM: two studies, several series each; slices with and without extensions.
    "archive/study1/ct/001.dcm": b"d",
    "archive/study1/ct/002.dcm": b"d",
    "archive/study1/ct/003": b"d",
    "archive/study1/mr/001.DCM": b"d",
    "archive/study1/mr/002.dicom": b"d",
    "archive/study1/report.txt": b"side file",
    "archive/study1/notes.json": b"{}",
    "archive/study1/.DS_Store": b"hidden",
    "archive/study1/mr/": b"",  # a folder marker
    "archive/study2/ct/001.dcm": b"d",
    "archive/study2/ct/empty.dcm": b"",  # zero bytes: never an item
    "archive/study2/top.dcm": b"d",  # directly in the study folder
    # NIfTI and PNG
    "volumes/brain01.nii.gz": b"n",
    "volumes/brain02.nii": b"n",
    "photos/chest 1.png": b"p",
    "photos/chest 2.PNG": b"p",
    # names that collide once templated with {folder}
    "sites/a/case/001.dcm": b"d",
    "sites/b/case/001.dcm": b"d",
}


def schema(name: str) -> dict[str, Any]:
    text = resources.files("scanner").joinpath("schemas", name).read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


CURRENT = schema("redbrick-items.schema.json")
LEGACY = schema("redbrick-items-legacy.schema.json")


def seed(s3: S3Target) -> str:
    bucket = s3.new_bucket()
    client = s3.client()
    for key, body in LAYOUT.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)
    return bucket


@pytest.fixture
def layout_bucket(s3: S3Target) -> str:
    return _layout(s3)


_seeded: dict[str, str] = {}


def _layout(s3: S3Target) -> str:
    if s3.kind not in _seeded:
        _seeded[s3.kind] = seed(s3)
    return _seeded[s3.kind]


def items_of(s3: S3Target, tmp_path: Path, uri: str, *options: str, legacy: bool = False) -> Any:
    out = tmp_path / "items.json"
    result = run_scanner(["scan", uri, "-f", "items", "-o", str(out), *options], s3.env())
    assert result.returncode == 0, result.stderr
    document = json.loads(out.read_text(encoding="utf-8"))
    jsonschema.validate(document, LEGACY if legacy else CURRENT)
    return document


def test_series_of_dicom(s3: S3Target, layout_bucket: str, tmp_path: Path) -> None:
    got = items_of(s3, tmp_path, f"s3://{layout_bucket}/archive/", "--group", "series", "--type", "dicom")
    assert got == [
        {
            "name": "study1/ct",
            "series": [{"items": ["archive/study1/ct/001.dcm", "archive/study1/ct/002.dcm"]}],
        },
        {
            "name": "study1/mr",
            "series": [{"items": ["archive/study1/mr/001.DCM", "archive/study1/mr/002.dicom"]}],
        },
        # Tasks come in the key order of their first item: ct/001.dcm sorts before top.dcm.
        {"name": "study2/ct", "series": [{"items": ["archive/study2/ct/001.dcm"]}]},
        {"name": "study2", "series": [{"items": ["archive/study2/top.dcm"]}]},
    ]


def test_series_with_files_without_extension(s3: S3Target, layout_bucket: str, tmp_path: Path) -> None:
    got = items_of(
        s3, tmp_path, f"s3://{layout_bucket}/archive/study1/", "--type", "dicom", "--dicom-no-extension"
    )
    assert got[0] == {
        "name": "ct",
        "series": [
            {"items": ["archive/study1/ct/001.dcm", "archive/study1/ct/002.dcm", "archive/study1/ct/003"]}
        ],
    }


def test_study_grouping(s3: S3Target, layout_bucket: str, tmp_path: Path) -> None:
    got = items_of(
        s3,
        tmp_path,
        f"s3://{layout_bucket}/archive/",
        "--group",
        "study",
        "--study-depth",
        "1",
        "--type",
        "dicom",
    )
    assert got == [
        {
            "name": "study1",
            "series": [
                {"name": "ct", "items": ["archive/study1/ct/001.dcm", "archive/study1/ct/002.dcm"]},
                {"name": "mr", "items": ["archive/study1/mr/001.DCM", "archive/study1/mr/002.dicom"]},
            ],
        },
        {
            "name": "study2",
            "series": [
                {"name": "ct", "items": ["archive/study2/ct/001.dcm"]},
                {"name": ".", "items": ["archive/study2/top.dcm"]},
            ],
        },
    ]


def test_file_grouping_of_nifti_and_png(s3: S3Target, layout_bucket: str, tmp_path: Path) -> None:
    got = items_of(
        s3, tmp_path, f"s3://{layout_bucket}", "--group", "file", "--type", "nifti", "--type", "image"
    )
    assert got == [
        {"name": "photos/chest 1.png", "series": [{"items": ["photos/chest 1.png"]}]},
        {"name": "photos/chest 2.PNG", "series": [{"items": ["photos/chest 2.PNG"]}]},
        {"name": "volumes/brain01.nii.gz", "series": [{"items": "volumes/brain01.nii.gz"}]},
        {"name": "volumes/brain02.nii", "series": [{"items": "volumes/brain02.nii"}]},
    ]


def test_legacy_format(s3: S3Target, layout_bucket: str, tmp_path: Path) -> None:
    got = items_of(
        s3,
        tmp_path,
        f"s3://{layout_bucket}/archive/study1/",
        "--type",
        "dicom",
        "--legacy-items",
        legacy=True,
    )
    assert got == [
        {"name": "ct", "items": ["archive/study1/ct/001.dcm", "archive/study1/ct/002.dcm"]},
        {"name": "mr", "items": ["archive/study1/mr/001.DCM", "archive/study1/mr/002.dicom"]},
    ]


def test_colliding_names_fail_with_both_keys_or_get_a_suffix(
    s3: S3Target, layout_bucket: str, tmp_path: Path
) -> None:
    uri = f"s3://{layout_bucket}/sites/"
    out = tmp_path / "items.json"
    result = run_scanner(
        ["scan", uri, "-f", "items", "--name-template", "{folder}", "-o", str(out)], s3.env()
    )
    assert result.returncode == 1
    assert "sites/a/case" in result.stderr
    assert "sites/b/case" in result.stderr
    assert not out.exists()
    got = items_of(s3, tmp_path, uri, "--name-template", "{folder}", "--dedupe-names")
    assert [task["name"] for task in got] == ["case", "case (2)"]


def test_empty_result_is_valid_json(s3: S3Target, layout_bucket: str, tmp_path: Path) -> None:
    got = items_of(s3, tmp_path, f"s3://{layout_bucket}/nothing-here/")
    assert got == []


def test_skip_report_on_stderr(s3: S3Target, layout_bucket: str, tmp_path: Path) -> None:
    out = tmp_path / "items.json"
    result = run_scanner(
        ["scan", f"s3://{layout_bucket}/archive/", "-f", "items", "--type", "dicom", "-o", str(out)], s3.env()
    )
    assert result.returncode == 0, result.stderr
    report = result.stderr.strip().splitlines()[-1]
    assert "6 objects matched" in report
    for reason in ("folder-marker 1", "zero-byte 1", "hidden 1", "side-file 2", "type 1"):
        assert reason in report, report


def test_items_uploaded_to_s3_and_read_back(s3: S3Target, layout_bucket: str, tmp_path: Path) -> None:
    destination = s3.new_bucket()
    uri = f"s3://{layout_bucket}/archive/"
    options = ["-f", "items", "--group", "series", "--type", "dicom"]
    result = run_scanner(["scan", uri, *options, "-o", f"s3://{destination}/items.json"], s3.env())
    assert result.returncode == 0, result.stderr
    uploaded = s3.client().get_object(Bucket=destination, Key="items.json")["Body"].read()
    local = run_scanner(["scan", uri, *options, "-o", str(tmp_path / "items.json")], s3.env())
    assert local.returncode == 0, local.stderr
    assert uploaded == (tmp_path / "items.json").read_bytes()
    jsonschema.validate(json.loads(uploaded), CURRENT)


def test_failed_items_upload_leaves_nothing(s3: S3Target, layout_bucket: str) -> None:
    destination = s3.new_bucket()
    uri = f"s3://{layout_bucket}/sites/"
    # Colliding names fail the run after the upload has started.
    result = run_scanner(
        ["scan", uri, "-f", "items", "--name-template", "{folder}", "-o", f"s3://{destination}/items.json"],
        s3.env(),
    )
    assert result.returncode == 1
    client = s3.client()
    assert client.list_objects_v2(Bucket=destination).get("KeyCount", 0) == 0
    assert client.list_multipart_uploads(Bucket=destination).get("Uploads", []) == []


def test_max_tasks_per_file(s3: S3Target, layout_bucket: str, tmp_path: Path) -> None:
    out = tmp_path / "items.json"
    result = run_scanner(
        [
            "scan",
            f"s3://{layout_bucket}/archive/",
            "-f",
            "items",
            "--type",
            "dicom",
            "--max-tasks-per-file",
            "3",
            "-o",
            str(out),
        ],
        s3.env(),
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["items-00001.json", "items-00002.json"]
    first = json.loads((tmp_path / "items-00001.json").read_text())
    second = json.loads((tmp_path / "items-00002.json").read_text())
    assert [t["name"] for t in first] == ["study1/ct", "study1/mr", "study2/ct"]
    assert [t["name"] for t in second] == ["study2"]
    for document in (first, second):
        jsonschema.validate(document, CURRENT)


def test_filters_apply_to_jsonl(s3: S3Target, layout_bucket: str, tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    result = run_scanner(
        [
            "scan",
            f"s3://{layout_bucket}",
            "--include",
            "archive/**/*.dcm",
            "--exclude",
            "**/ct/002.dcm",
            "--min-size",
            "1",
            "-o",
            str(out),
        ],
        s3.env(),
    )
    assert result.returncode == 0, result.stderr
    keys = [json.loads(line)["key"] for line in out.read_text().splitlines()]
    assert keys == ["archive/study1/ct/001.dcm", "archive/study2/ct/001.dcm", "archive/study2/top.dcm"]


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (["--group", "study"], "only applies to --format items"),
        (["-f", "items", "--unordered"], "--unordered"),
        (["-f", "items", "--study-depth", "2"], "--study-depth needs --group study"),
        (["--include", "dir/"], "never matches"),
        (["--type", "dicom", "--type", "bogus"], "invalid choice"),
        (["--min-size", "ten"], "size"),
        (["--modified-after", "yesterday"], "modified"),
        (["-f", "items", "--name-template", "{nope}"], "nope"),
        (["-f", "items", "--max-tasks-per-file", "2"], "--output"),
    ],
)
def test_bad_selection_options(moto_target: S3Target, options: list[str], fragment: str) -> None:
    result = run_scanner(["scan", "s3://bucket", *options], moto_target.env())
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ")
    assert fragment in result.stderr
