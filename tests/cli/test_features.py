"""What users of big buckets expect next: --limit, --start-after, ``scanner ls``, -v, completion.

Run as a user runs them (``python -m scanner``) against real servers.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import S3Target, run_scanner
from tests.keysets import nested_keys, utf8_sorted

NOWHERE = "http://127.0.0.1:9"


def offline_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b", **extra}


def usage_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def keys_of(path: Path) -> list[str]:
    return [json.loads(line)["key"] for line in path.read_text().splitlines()]


# --- --limit -------------------------------------------------------------------------------------


def test_limit_writes_the_first_keys_and_stops_listing(moto_target: S3Target, tmp_path: Path) -> None:
    keys = nested_keys()
    bucket = moto_target.shared_bucket("nested-20000", keys)
    out, summary = tmp_path / "o.jsonl", tmp_path / "s.json"
    result = run_scanner(
        ["scan", f"s3://{bucket}", "--limit", "5", "-o", str(out), "--summary", str(summary)],
        moto_target.env(),
    )
    assert result.returncode == 0, result.stderr
    assert keys_of(out) == utf8_sorted(keys)[:5]
    document = json.loads(summary.read_text())
    assert document["status"] == "succeeded"
    assert document["limited"] is True
    # 20 pages for the whole bucket; the first one holds the five keys.
    assert document["requests"] < 10, document
    assert document["objects"] < len(keys)


def test_limit_counts_matching_objects_in_csv(moto_target: S3Target, tmp_path: Path) -> None:
    keys = ["a/1.dcm", "a/2.txt", 'b/comma,quote".dcm', "b/new\nline.dcm", "c/3.dcm", "d/4.dcm"]
    bucket = moto_target.new_bucket(keys)
    out = tmp_path / "o.csv"
    result = run_scanner(
        ["scan", f"s3://{bucket}", "-f", "csv", "--include", "**/*.dcm", "--limit", "3", "-o", str(out)],
        moto_target.env(),
    )
    assert result.returncode == 0, result.stderr
    rows = list(csv.reader(io.StringIO(out.read_bytes().decode(), newline="")))
    assert [row[0] for row in rows] == ["key", "a/1.dcm", 'b/comma,quote".dcm', "b/new\nline.dcm"]


def test_limit_to_standard_output_unordered(moto_target: S3Target) -> None:
    keys = nested_keys(3000)
    bucket = moto_target.shared_bucket("nested-3000", keys)
    result = run_scanner(
        ["scan", f"s3://{bucket}", "--unordered", "--limit", "1500", "-q"], moto_target.env()
    )
    assert result.returncode == 0, result.stderr
    listed = [json.loads(line)["key"] for line in result.stdout.splitlines()]
    assert len(listed) == 1500
    assert len(set(listed)) == 1500
    assert set(listed) <= set(keys)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (["--limit", "0"], "--limit"),
        (["--limit", "3", "-f", "items"], "not tasks of an items list"),
        (["--limit", "3", "--state", "STATE"], "--state"),
    ],
)
def test_limit_mistakes_are_usage_errors(options: list[str], fragment: str, tmp_path: Path) -> None:
    options = [str(tmp_path / "s.gz") if option == "STATE" else option for option in options]
    result = run_scanner(["scan", "s3://bucket", "--endpoint-url", NOWHERE, *options], offline_env())
    usage_error(result, fragment)


# --- --start-after ------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["auto", "unordered"])
def test_start_after_lists_only_the_keys_after(moto_target: S3Target, tmp_path: Path, profile: str) -> None:
    """Ranges send it as StartAfter; the tree walk (servers that list folder by folder) filters."""
    keys = nested_keys(3000)
    bucket = moto_target.shared_bucket("nested-3000", keys)
    after = "study0003/series2/img00017.dcm"
    out = tmp_path / "o.jsonl"
    result = run_scanner(
        [
            "scan",
            f"s3://{bucket}/study0003/",
            "--start-after",
            after,
            "--server-profile",
            profile,
            "-o",
            str(out),
        ],
        moto_target.env(),
    )
    assert result.returncode == 0, result.stderr
    expected = [key for key in utf8_sorted(keys) if key.startswith("study0003/") and key > after]
    assert keys_of(out) == expected


def test_start_after_with_limit_pages_through_a_bucket(moto_target: S3Target, tmp_path: Path) -> None:
    keys = utf8_sorted(nested_keys(3000))
    bucket = moto_target.shared_bucket("nested-3000", keys)
    out = tmp_path / "o.jsonl"
    result = run_scanner(
        ["scan", f"s3://{bucket}", "--start-after", keys[1999], "--limit", "10", "-o", str(out)],
        moto_target.env(),
    )
    assert result.returncode == 0, result.stderr
    assert keys_of(out) == keys[2000:2010]


def test_start_after_outside_the_prefix_is_a_usage_error() -> None:
    result = run_scanner(
        ["scan", "s3://bucket/a/", "--endpoint-url", NOWHERE, "--start-after", "b/1"], offline_env()
    )
    usage_error(result, "--start-after 'b/1' is not under the prefix 'a/'")


# --- scanner ls -----------------------------------------------------------------------------------


def test_ls_lists_one_folder_level(moto_target: S3Target) -> None:
    bucket = moto_target.new_bucket(["a/1.dcm", "a/b/2.dcm", "a/b/3.dcm", "a/c/4.dcm", "a/d e.dcm", "x.txt"])
    result = run_scanner(["ls", f"s3://{bucket}/a/"], moto_target.env())
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert [line.split(maxsplit=2)[-1] for line in lines] == ["1.dcm", "b/", "c/", "d e.dcm"]
    assert lines[1].split() == ["PRE", "b/"]
    stamp, size, name = lines[0].split(maxsplit=2)
    assert (size, name) == ("1", "1.dcm")
    assert stamp.endswith("Z")
    result = run_scanner(["ls", f"s3://{bucket}", "--format", "jsonl"], moto_target.env())
    assert result.returncode == 0, result.stderr
    entries = [json.loads(line) for line in result.stdout.splitlines()]
    assert entries[0] == {"prefix": "a/"}
    assert entries[1]["key"] == "x.txt"
    assert len(entries) == 2


def test_ls_pages_through_a_wide_folder(moto_target: S3Target) -> None:
    keys = [f"w/{i:05d}.dcm" for i in range(1500)] + [f"w/f{i:04d}/x" for i in range(600)]
    bucket = moto_target.new_bucket(keys)
    result = run_scanner(["ls", f"s3://{bucket}/w/", "-f", "jsonl"], moto_target.env())
    assert result.returncode == 0, result.stderr
    entries = [json.loads(line) for line in result.stdout.splitlines()]
    names = [entry.get("prefix") or entry["key"] for entry in entries]
    assert names == utf8_sorted(
        [f"w/{i:05d}.dcm" for i in range(1500)] + [f"w/f{i:04d}/" for i in range(600)]
    )


def test_ls_of_a_missing_bucket_is_one_error_line(moto_target: S3Target) -> None:
    result = run_scanner(["ls", "s3://no-such-bucket-for-ls/"], moto_target.env())
    assert result.returncode == 4
    assert result.stderr.splitlines() == ["error: bucket 'no-such-bucket-for-ls' does not exist"]
    assert result.stdout == ""


# --- -v/--verbose ----------------------------------------------------------------------------------


def test_verbose_is_the_debug_log_level(moto_target: S3Target, tmp_path: Path) -> None:
    bucket = moto_target.new_bucket(["a", "b"])
    result = run_scanner(
        ["scan", f"s3://{bucket}", "-v", "--log-format", "json", "-o", str(tmp_path / "o")], moto_target.env()
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line)["event"] for line in result.stderr.splitlines()]
    assert "listing-strategy" in events
    assert events[-1] == "scan-finished"


@pytest.mark.parametrize(
    ("options", "fragment"),
    [(["-v", "-q"], "contradict"), (["--verbose", "--log-level", "warning"], "not warning")],
)
def test_verbose_against_other_options_is_a_usage_error(options: list[str], fragment: str) -> None:
    usage_error(
        run_scanner(["scan", "s3://bucket", "--endpoint-url", NOWHERE, *options], offline_env()), fragment
    )


# --- shell completion ------------------------------------------------------------------------------


def complete(script: str, *words: str) -> list[str]:
    """What the bash completion offers for ``words`` (the last one being completed)."""
    program = (
        f"{script}\nCOMP_WORDS=(scanner {' '.join(words)}); COMP_CWORD={len(words)}; "
        '_scanner; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    result = subprocess.run(["bash", "-c", program], capture_output=True, text=True, check=True)
    return result.stdout.split()


def completion_script(shell: str) -> str:
    result = run_scanner(["completion", shell], offline_env())
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_bash_completion_knows_commands_options_and_choices() -> None:
    script = completion_script("bash")
    assert "ls" in complete(script, "")
    assert {"scan", "plan", "merge", "completion"} <= set(complete(script, ""))
    assert complete(script, "scan", "--conc") == ["--concurrency"]
    assert complete(script, "scan", "--format", "") == ["jsonl", "csv", "items", "parquet"]
    assert complete(script, "scan", "--group", "s") == ["series", "study"]
    assert "--limit" in complete(script, "scan", "--l")
    assert complete(script, "ls", "-f", "") == ["text", "jsonl"]
    assert complete(script, "completion", "") == ["bash", "zsh"]


def test_zsh_completion_loads() -> None:
    script = completion_script("zsh")
    assert script.startswith("autoload -U +X bashcompinit && bashcompinit\n")
    if shutil.which("zsh") is None:
        pytest.skip("zsh is not installed")
    result = subprocess.run(
        ["zsh", "-c", script + "\ntypeset -f _scanner >/dev/null"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_unknown_shell_is_a_usage_error() -> None:
    usage_error(run_scanner(["completion", "fish"], offline_env()), "fish")
