"""Pods that share a plan's parts at run time (``scan --share-work``): the tree of pieces, the
board, the hand-over inside a listing, and whole pods as processes against real servers."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import anyio
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scanner.config import ConnectionConfig, S3Location, ScanConfig, SharedWork
from scanner.errors import ScanError, UsageError
from scanner.keyspace import KeyRange
from scanner.output.merge import concatenate_segments
from scanner.run import sharing
from scanner.run.board import Board, board_document
from scanner.run.pieces import (
    BoardState,
    Done,
    Piece,
    choose,
    in_key_order,
    ranges_left,
    roots_of,
    segments_of,
)
from scanner.run.sharing import RANGES_PER_IDLE_POD, Demand, merge_board
from scanner.run.sharing import _list_piece as list_piece
from scanner.run.sharing import _list_until_complete as list_until_complete
from scanner.run.summary import ScanSummary
from scanner.storage.directory import DirectoryObjectStore
from tests.conftest import REPO_ROOT, S3Target, run_scanner
from tests.keysets import nested_keys
from tests.memory_source import MemoryBucket

KEYS = st.lists(st.text(alphabet="abc/", min_size=1, max_size=5), min_size=2, max_size=40, unique=True)


def tree(keys: list[str], cuts: list[int]) -> tuple[Piece, list[Piece]]:
    """A piece over all of ``keys`` and children over every other stretch between ``cuts``."""
    ordered = sorted(keys)
    points = sorted({ordered[i % len(ordered)] for i in cuts})
    bounds: list[str | None] = [None, *points, None]
    children = [
        Piece(f"p00000.{n}", KeyRange("", bounds[n], bounds[n + 1]))
        for n in range(1, len(bounds) - 1, 2)
        if bounds[n] is not None
    ]
    return Piece("p00000", KeyRange("")), children


@given(KEYS, st.lists(st.integers(min_value=0, max_value=100), max_size=8))
def test_a_piece_less_its_children_and_the_children_tile_it(keys: list[str], cuts: list[int]) -> None:
    piece, children = tree(keys, cuts)
    left = ranges_left(piece, children)
    for key in keys:
        in_left = sum(r.contains(key) for r in left)
        in_children = sum(child.range.contains(key) for child in children)
        assert in_left + in_children == 1, key
    # The merge's segments: each key in one, in key order, and the one of the right output.
    records = [Done(piece, tuple(children), 0, 0), *(Done(child, (), 0, 0) for child in children)]
    segments = segments_of(records)
    for key in keys:
        (owner,) = [index for index, segment in segments if segment.contains(key)]
        assert owner == (
            0
            if any(r.contains(key) for r in left)
            else 1 + next(n for n, child in enumerate(children) if child.range.contains(key))
        )
    starts = [segment.start_after for _, segment in segments]
    assert starts[0] is None
    assert starts[1:] == sorted(starts[1:])  # type: ignore[type-var]


def test_what_is_left_of_a_bounded_piece() -> None:
    piece = Piece("p00001", KeyRange("", "b", "k"))
    children = [Piece("p00001.1", KeyRange("", "c", "d")), Piece("p00001.2", KeyRange("", "f", "k"))]
    assert ranges_left(piece, children) == [KeyRange("", "b", "c"), KeyRange("", "d", "f")]
    assert ranges_left(piece, []) == [piece.range]
    tail = [Piece("p00001.1", KeyRange("", "b", "k"))]
    assert ranges_left(piece, tail) == []


def test_the_tree_is_checked_before_a_merge() -> None:
    roots = [Piece("p00000", KeyRange("", None, "m")), Piece("p00001", KeyRange("", "m", None))]
    child = Piece("p00000.1", KeyRange("", "f", "m"))
    done = {
        "p00000": Done(roots[0], (child,), 5, 0),
        "p00001": Done(roots[1], (), 5, 1),
    }
    with pytest.raises(ScanError, match=r"no output yet for p00000\.1"):
        in_key_order(roots, done)
    done["p00000.1"] = Done(child, (), 2, 1)
    assert [record.piece.id for record in in_key_order(roots, done)] == ["p00000", "p00000.1", "p00001"]
    done["p00009"] = Done(Piece("p00009", KeyRange("")), (), 0, 0)
    with pytest.raises(ScanError, match="belong to no piece"):
        in_key_order(roots, done)
    del done["p00009"]
    outside = Piece("p00000.1", KeyRange("", "f", "z"))
    done["p00000"] = Done(roots[0], (outside,), 5, 0)
    with pytest.raises(ScanError, match="not inside it"):
        in_key_order(roots, done)


def record_line(key: str) -> bytes:
    fields = {"key": key, "size": 1, "last_modified": "2026-11-28T01:28:50.000Z", "etag": "e"}
    return orjson.dumps({**fields, "storage_class": "STANDARD"}) + b"\n"


def test_segments_are_read_in_key_order_and_every_key_is_checked(tmp_path: Path) -> None:
    parent, child = tmp_path / "p.jsonl", tmp_path / "c.jsonl"
    parent.write_bytes(b"".join(record_line(k) for k in ("a", "b", "f", "g")))
    child.write_bytes(b"".join(record_line(k) for k in ("c", "d")))
    paths = [str(parent), str(child)]
    segments = [
        (0, KeyRange("", None, "b")),
        (1, KeyRange("", "b", "e")),
        (0, KeyRange("", "e", None)),
    ]

    async def read(segments: list[tuple[int, KeyRange]]) -> list[str]:
        return [record.key async for record in concatenate_segments(paths, segments, ConnectionConfig())]

    assert anyio.run(read, segments) == ["a", "b", "c", "d", "f", "g"]
    # "d" outside the child's segment, then "f" left in the parent past its last segment.
    with pytest.raises(ScanError, match="'d' outside its part"):
        anyio.run(
            read, [(0, KeyRange("", None, "b")), (1, KeyRange("", "b", "c")), (0, KeyRange("", "c", None))]
        )
    with pytest.raises(ScanError, match="'f' outside its part"):
        anyio.run(read, [(0, KeyRange("", None, "b")), (1, KeyRange("", "b", "e"))])


def test_a_done_record_survives_its_json() -> None:
    record = Done(
        Piece("p00002", KeyRange("a/", "a/b", "a/k")),
        (Piece("p00002.1", KeyRange("a/", "a/c", "a/d")),),
        7,
        3,
    )
    assert Done.from_json(record.to_json(), "a/") == record


def test_a_pod_claims_its_own_parts_then_handed_pieces_then_the_others_last() -> None:
    roots = [Piece(f"p0000{i}", KeyRange("")) for i in range(6)]
    state = BoardState()
    assert choose(state, roots, 1, 3).id == "p00001"
    state.claims |= {"p00001", "p00004"}
    state.handed["p00000.1"] = Piece("p00000.1", KeyRange(""))
    assert choose(state, roots, 1, 3).id == "p00000.1"
    # Handed over by this pod for pods that wait: theirs while they do.
    assert choose(state, roots, 1, 3, frozenset({"p00000.1"})).id == "p00005"
    state.claims |= {"p00000.1", "p00005", "p00003", "p00002", "p00000"}
    assert choose(state, roots, 1, 3) is None


def test_the_ranges_idle_pods_want_are_shared_among_the_busy_ones() -> None:
    roots = [Piece(f"p0000{i}", KeyRange("")) for i in range(4)]
    state = BoardState(claims={piece.id for piece in roots}, idle={3})
    demand = Demand(0, 4)
    demand.update(state, roots)
    assert demand.wanted == -(-RANGES_PER_IDLE_POD // 3)
    state.handed["h1-a-1"] = Piece("h1-a-1", KeyRange(""), parent="p00001")  # one to claim already
    demand.update(state, roots)
    assert demand.wanted == -(-(RANGES_PER_IDLE_POD - 1) // 3)
    demand.update(BoardState(claims=state.claims), roots)
    assert demand.wanted == 0


def work_for(tmp_path: Path, parts: list[KeyRange], output: str = "") -> tuple[ScanConfig, SharedWork]:
    work = SharedWork(str(tmp_path / "board"), 0, 3, "plan.json", tuple(parts))
    config = ScanConfig(
        location=S3Location("bucket", ""),
        connection=ConnectionConfig(),
        output=output or str(tmp_path / "merged.jsonl"),
        server_profile="aws",
        shared_work=work,
    )
    return config, work


def test_pods_of_another_scan_are_refused_at_the_board(tmp_path: Path) -> None:
    config, work = work_for(tmp_path, [KeyRange("")])
    board = Board(DirectoryObjectStore(work.board), "", "", work.board)
    anyio.run(board.join, board_document(config, work))
    anyio.run(board.join, board_document(config, work))  # the same scan joins again
    other = replace(work, pods=4)
    with pytest.raises(UsageError, match="another scan"):
        anyio.run(board.join, board_document(config, other))


def test_a_listing_hands_ranges_to_idle_pods_and_the_pieces_merge_to_every_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One pod lists the one part while two others wait: it hands ranges over as it goes, each a
    piece of its own; listed in turn (as the waiting pods would) and merged, they hold every key
    exactly once."""
    # At once, not after a second of listing: what is tested is what is handed over.
    monkeypatch.setattr(sharing, "MIN_LISTING_SECONDS", 0.0)
    keys = [f"study{s:03d}/img{i:05d}.dcm" for s in range(3) for i in range(20_000)]
    bucket = MemoryBucket(keys, latency=0.001)
    config, work = work_for(tmp_path, [KeyRange("")])
    board = Board(DirectoryObjectStore(work.board), "", "", work.board)
    roots = roots_of(work)
    listed = ScanSummary()

    async def share() -> int:
        await board.join(board_document(config, work))
        await board.set_idle(1, True)
        await board.set_idle(2, True)
        assert await board.claim("claims/p00000", 0)
        state = await board.read()
        demand = Demand(0, 3)
        demand.update(state, roots)
        assert demand.wanted == 2 * RANGES_PER_IDLE_POD  # this pod is the only one busy
        await list_piece(config, board, roots[0], state, bucket, listed, demand)
        handed = (await board.read()).done["p00000"].children
        assert handed, "nothing was handed over to the waiting pods"
        assert demand.wanted == 2 * RANGES_PER_IDLE_POD - len(handed)
        await board.set_idle(1, False)
        await board.set_idle(2, False)
        while not (state := await board.read()).complete(roots):
            for piece in state.unclaimed(roots):
                assert await board.claim(f"claims/{piece.id}", 1)
                await list_piece(config, board, piece, state, bucket, listed, Demand(1, 3))
        return await merge_board(config, board, roots)

    assert anyio.run(share) == len(keys)
    merged = [orjson.loads(line)["key"] for line in (tmp_path / "merged.jsonl").read_bytes().splitlines()]
    assert merged == sorted(keys)
    assert listed.objects == len(keys)


def test_a_restarted_pod_finishes_its_claims_less_what_it_had_handed_over(tmp_path: Path) -> None:
    """Pod 0 had claimed part 0 and handed a range of it over, then stopped before it was done.
    Started again, it lists part 0 without that range (claimed again by no one: its claim
    stands), then the rest; merged, every key once."""
    keys = [f"k{n:06d}" for n in range(30_000)]
    bucket = MemoryBucket(keys)
    parts = [KeyRange("", None, "k015000"), KeyRange("", "k015000", None)]
    config, _ = work_for(tmp_path, parts)
    assert config.shared_work is not None
    work = replace(config.shared_work, pods=1)
    config = replace(config, shared_work=work)
    board = Board(DirectoryObjectStore(work.board), "", "", work.board)
    roots = roots_of(work)
    handed = Piece("h0-before-1", KeyRange("", "k005000", "k010000"), parent="p00000")

    async def restart() -> int:
        await board.join(board_document(config, work))
        assert await board.claim("claims/p00000", 0)
        await board.hand_over(handed)
        await list_until_complete(config, work, board, roots, bucket, ScanSummary())
        state = await board.read()
        assert state.done["p00000"].children == (handed,)
        assert state.done["p00000"].objects == 15_001 - 5_000
        return await merge_board(config, board, roots)

    assert anyio.run(restart) == len(keys)
    merged = [orjson.loads(line)["key"] for line in (tmp_path / "merged.jsonl").read_bytes().splitlines()]
    assert merged == keys


def pods(args: list[str], count: int, env: dict[str, str]) -> list[subprocess.CompletedProcess[str]]:
    """``count`` pods of one shared scan, started at once (an Indexed Job's)."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "scanner", "scan", *args, "--shard", f"{i}/{count}"],
            env={**env, "PYTHONPATH": str(REPO_ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(count)
    ]
    results = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=300)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    return results


def test_pods_share_the_work_through_s3_and_the_last_merges_to_a_single_scan(s3: S3Target) -> None:
    """Three pods, a plan of four parts a pod in S3, the board under an S3 prefix, the merged
    output to S3: the single scan's bytes, for JSON Lines and an items list."""
    keys = nested_keys()
    bucket = s3.shared_bucket("nested", keys)
    out = s3.new_bucket()
    uri = f"s3://{bucket}"
    plan = f"s3://{out}/plan.json"
    result = run_scanner(["plan", uri, "--shards", "3", "--parts-per-shard", "4", "-o", plan], s3.env())
    assert result.returncode == 0, result.stderr
    client = s3.client()
    for output_format, extra in (("jsonl", []), ("items", ["--group", "series"])):
        board = f"s3://{out}/work-{output_format}/"
        merged = f"s3://{out}/merged.{output_format}"
        args = [uri, "--plan", plan, "--share-work", board, "-o", merged, "-f", output_format, *extra]
        for pod in pods(args, 3, s3.env()):
            assert pod.returncode == 0, pod.stderr
        single = f"s3://{out}/single.{output_format}"
        result = run_scanner(["scan", uri, "-f", output_format, *extra, "-o", single], s3.env())
        assert result.returncode == 0, result.stderr
        merged_body = client.get_object(Bucket=out, Key=f"merged.{output_format}")["Body"].read()
        single_body = client.get_object(Bucket=out, Key=f"single.{output_format}")["Body"].read()
        assert merged_body == single_body, output_format
        done = client.list_objects_v2(Bucket=out, Prefix=f"work-{output_format}/done/")["Contents"]
        assert len(done) >= 12


def test_pods_share_the_work_through_a_directory(moto_target: S3Target, tmp_path: Path) -> None:
    keys = nested_keys()
    bucket = moto_target.shared_bucket("nested", keys)
    uri = f"s3://{bucket}"
    plan = tmp_path / "plan.json"
    result = run_scanner(
        ["plan", uri, "--shards", "2", "--parts-per-shard", "3", "-o", str(plan)], moto_target.env()
    )
    assert result.returncode == 0, result.stderr
    merged = tmp_path / "merged.csv"
    args = [uri, "--plan", str(plan), "--share-work", str(tmp_path / "work"), "-o", str(merged), "-f", "csv"]
    for pod in pods(args, 2, moto_target.env()):
        assert pod.returncode == 0, pod.stderr
    single = tmp_path / "single.csv"
    result = run_scanner(["scan", uri, "-f", "csv", "-o", str(single)], moto_target.env())
    assert result.returncode == 0, result.stderr
    assert merged.read_bytes() == single.read_bytes()
    assert orjson.loads((tmp_path / "work" / "merged.json").read_bytes())["records"] == len(keys)


def test_a_server_that_ignores_conditional_puts_cannot_hold_the_board(s3rver_target: S3Target) -> None:
    """s3rver stores a put with If-None-Match: * over an existing key: two pods could win one
    claim, so the first pod to join says so and stops (exit code 2) before it lists a key."""
    bucket = s3rver_target.new_bucket(["a/1", "a/2"])
    plan = f"s3://{bucket}/plan.json"
    result = run_scanner(["plan", f"s3://{bucket}/a/", "--shards", "2", "-o", plan], s3rver_target.env())
    assert result.returncode == 0, result.stderr
    args = [
        f"s3://{bucket}/a/",
        "--plan",
        plan,
        "--share-work",
        f"s3://{bucket}/work/",
        "-o",
        f"s3://{bucket}/out.jsonl",
    ]
    (pod,) = pods(args, 1, s3rver_target.env())
    assert pod.returncode == 2, pod.stderr
    (line,) = pod.stderr.strip().splitlines()
    assert "ignored If-None-Match" in line
    listed = s3rver_target.client().list_objects_v2(Bucket=bucket)["Contents"]
    assert not any(entry["Key"].startswith(("work/claims/", "work/parts/")) for entry in listed)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--unordered"], "--share-work cannot be used with --unordered"),
        (["--checkpoint", "ck"], "--share-work cannot be used with --checkpoint"),
        (["-o", "-"], "--share-work needs an --output file"),
    ],
)
def test_what_a_shared_scan_cannot_do_is_one_line_before_any_request(
    tmp_path: Path, extra: list[str], message: str
) -> None:
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}
    args = ["scan", "s3://bucket", "--shard", "0/2", "--plan", "plan.json", "--share-work", str(tmp_path)]
    result = run_scanner([*args, "-o", str(tmp_path / "out.jsonl"), *extra], env)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ")
    assert message in line
