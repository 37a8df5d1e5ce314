"""The listing contract, over every S3 server the scanner supports, through ``python -m scanner``.

Each server is seeded once with the same keys: awkward names, a DICOM-like tree large enough to
span pages and fan out, and the pairs on which a filesystem walk and byte order disagree
(``study00/...`` and ``study00-thumb/...``). What a server refuses to store is recorded, not
failed; what a boto3 paginator lists is the reference every scan must equal, key for key, each
exactly once. Where the server's own pagination is inconsistent (s3rver) the scan must either be
exact or refuse with one line naming that, never write an output with a key missing.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from scanner.listing.dialect import PROFILES
from tests.conftest import S3Target, run_scanner
from tests.keysets import ODD_KEYS, utf8_sorted

_BODY = b"xyz"
_TREE = [f"study{s:02d}/series{r}/img{i:03d}.dcm" for s in range(10) for r in range(4) for i in range(30)]
# Byte order puts "-" (0x2d) before "/" (0x2f); a walk lists each folder whole first.
_WALK_TRAPS = ["study00-thumb/t.png", "study00/series2-x/a.dcm", "study00/series2.dcm", "top.dcm"]


def _safe_for(kind: str, key: str) -> bool:
    """Keys a server survives being sent (s3rver dies on a long name part or a control character)."""
    if kind != "s3rver":
        return True
    parts_short = all(len(part.encode()) <= 200 for part in key.split("/"))
    return parts_short and not any(ord(c) < 0x20 or c == "\x7f" for c in key)


class Seeded:
    def __init__(self, target: S3Target) -> None:
        self.target = target
        self.bucket = target.new_bucket()
        wanted = [k for k in [*ODD_KEYS, *_TREE, *_WALK_TRAPS] if k and _safe_for(target.kind, k)]
        self.stored, self.refused = target.put_each(self.bucket, wanted, body=_BODY)
        self.listed, self.paginator_repeats = _paginate(target, self.bucket)
        # What the server reports is the reference: some store "x/" as "x", or "//" as "/".
        self.reference = sorted(set(self.listed))

    def under(self, prefix: str) -> list[str]:
        return [key for key in self.reference if key.startswith(prefix)]


def _paginate(target: S3Target, bucket: str, prefix: str = "") -> tuple[list[str], int]:
    client = target.client()
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(entry["Key"] for entry in page.get("Contents", []))
    return keys, len(keys) - len(set(keys))


_seeded: dict[str, Seeded] = {}


@pytest.fixture
def seeded(any_s3: S3Target) -> Seeded:
    if any_s3.kind not in _seeded:
        _seeded[any_s3.kind] = Seeded(any_s3)
    return _seeded[any_s3.kind]


def _scan(seeded: Seeded, tmp_path: Path, uri_suffix: str = "", *options: str) -> tuple[int, list[Any], str]:
    out = tmp_path / "out.jsonl"
    uri = f"s3://{seeded.bucket}/{uri_suffix}"
    result = run_scanner(["scan", uri, "-o", str(out), *options], seeded.target.env())
    records = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    return result.returncode, records, result.stderr


def _exact_or_refused(
    seeded: Seeded, code: int, records: list[Any], stderr: str, expected: list[str]
) -> None:
    if code != 0 and not PROFILES[seeded.target.kind].consistent_pagination:
        # One line that names the inconsistency, and no output at all.
        assert "inconsistent" in stderr or "twice" in stderr, stderr
        assert len(stderr.strip().splitlines()) == 1, stderr
        assert records == []
        return
    assert code == 0, stderr
    keys = [record["key"] for record in records]
    assert Counter(keys) == Counter(expected)


def test_every_key_exactly_once_in_byte_order(seeded: Seeded, tmp_path: Path) -> None:
    code, records, stderr = _scan(seeded, tmp_path)
    _exact_or_refused(seeded, code, records, stderr, seeded.reference)
    if code == 0:
        assert [r["key"] for r in records] == utf8_sorted(seeded.reference)
        assert {r["size"] for r in records} <= {len(_BODY), 0}
        assert all(r["last_modified"].endswith("Z") for r in records)


def test_unordered_lists_the_same_keys(seeded: Seeded, tmp_path: Path) -> None:
    code, records, stderr = _scan(seeded, tmp_path, "", "--unordered")
    _exact_or_refused(seeded, code, records, stderr, seeded.reference)


def test_one_process(seeded: Seeded, tmp_path: Path) -> None:
    code, records, stderr = _scan(seeded, tmp_path, "", "--processes", "1", "--concurrency", "4")
    _exact_or_refused(seeded, code, records, stderr, seeded.reference)


@pytest.mark.parametrize("prefix", ["study01/", "study0", "study00", "emoji/"])
def test_prefix_with_and_without_a_trailing_slash(seeded: Seeded, tmp_path: Path, prefix: str) -> None:
    code, records, stderr = _scan(seeded, tmp_path, prefix)
    _exact_or_refused(seeded, code, records, stderr, seeded.under(prefix))
    if code == 0:
        assert [r["key"] for r in records] == utf8_sorted(seeded.under(prefix))


def test_named_unordered_profile_is_exact_on_every_server(seeded: Seeded, tmp_path: Path) -> None:
    code, records, stderr = _scan(seeded, tmp_path, "", "--server-profile", "unordered")
    _exact_or_refused(seeded, code, records, stderr, seeded.reference)
    if code == 0:
        assert [r["key"] for r in records] == utf8_sorted(seeded.reference)


def test_checkpointed_scan(seeded: Seeded, tmp_path: Path) -> None:
    code, records, stderr = _scan(seeded, tmp_path, "", "--checkpoint", str(tmp_path / "progress"))
    _exact_or_refused(seeded, code, records, stderr, seeded.reference)
    assert not (tmp_path / "progress").exists() or not any((tmp_path / "progress").iterdir())


def test_items_list_has_every_dicom_slice_once(seeded: Seeded, tmp_path: Path) -> None:
    out = tmp_path / "items.json"
    result = run_scanner(
        ["scan", f"s3://{seeded.bucket}/", "-f", "items", "--type", "dicom", "-o", str(out)],
        seeded.target.env(),
    )
    expected = [k for k in seeded.reference if k.startswith("study") and k.endswith(".dcm")]
    if result.returncode != 0 and not PROFILES[seeded.target.kind].consistent_pagination:
        assert "inconsistent" in result.stderr or "twice" in result.stderr, result.stderr
        assert not out.exists()
        return
    assert result.returncode == 0, result.stderr
    tasks = json.loads(out.read_text())
    items = [item for task in tasks for series in task["series"] for item in series["items"]]
    assert Counter(k for k in items if k.startswith("study")) == Counter(expected)


def test_what_the_server_does_is_what_its_profile_says(seeded: Seeded) -> None:
    """The dialect table is measured: order and StartAfter, against the profile of that name."""
    profile = PROFILES[seeded.target.kind]
    listed = seeded.listed
    in_byte_order = listed == utf8_sorted(set(listed)) and not seeded.paginator_repeats
    client = seeded.target.client()
    after = "study00/series1/img029.dcm"
    page = client.list_objects_v2(Bucket=seeded.bucket, StartAfter=after, MaxKeys=50)
    returned = [entry["Key"] for entry in page.get("Contents", [])]
    expected = [k for k in utf8_sorted(seeded.reference) if k > after][:50]
    assert (in_byte_order and returned == expected) == profile.ranged, (returned[:5], expected[:5])


def test_standard_output_gets_each_key_once(seeded: Seeded) -> None:
    """Standard output cannot be taken back: a switch of strategy must happen before it is used."""
    result = run_scanner(["scan", f"s3://{seeded.bucket}/"], seeded.target.env())
    records = [json.loads(line) for line in result.stdout.splitlines()]
    _exact_or_refused(seeded, result.returncode, records, result.stderr, seeded.reference)


def test_incremental_state_on_every_server(seeded: Seeded, tmp_path: Path) -> None:
    """``--state`` reads the ordered output, so it works whatever order the server lists in."""
    state = tmp_path / "state.jsonl"
    first = _scan(seeded, tmp_path, "", "--state", str(state))
    _exact_or_refused(seeded, *first, seeded.reference)
    if first[0] != 0:
        assert not state.exists()
        return
    assert state.exists()
    code, records, stderr = _scan(seeded, tmp_path, "", "--state", str(state), "--changes-only")
    assert code == 0, stderr
    assert records == []  # nothing changed between the two runs
