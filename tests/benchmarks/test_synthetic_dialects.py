"""The in-memory endpoint's listing dialects (``benchmarks.synthetic_s3``), through boto3.

The scanner's order-independent listing is tested and benchmarked against these dialects, so
each must do what the server it stands for does: ``sorted`` lists in UTF-8 byte order, ``walk``
(SeaweedFS) in the order of the tuples of '/'-separated components, ``directory`` (S3 Express
One Zone) in a hash order with its refusals, and CreateSession for botocore's S3 Express path.
"""

from __future__ import annotations

import datetime
import itertools
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from hypothesis import given
from hypothesis import strategies as st

from benchmarks.layouts import LAYOUTS
from benchmarks.synthetic_s3 import bucket_spec, running_synthetic_s3, walk_key

SIZE = 2500  # 12.5 studies: several pages, and a last study cut short
SORTED = f"bench-studies-{SIZE}"
WALK = f"bench-studies-{SIZE}-walk"
EXPRESS = f"bench-studies-{SIZE}--use1-az4--x-s3"  # directory dialect, and S3 Express for botocore
DIRECTORY = f"bench-studies-{SIZE}-directory"  # directory dialect under a plain name: plain SigV4
KEYS = LAYOUTS["studies"](SIZE)
ACCESS_KEY = "AKIDSYNTHETIC"


def _components(key: str) -> tuple[bytes, ...]:
    return tuple(part.encode("utf-8") for part in key.split("/"))


def _byte_order(keys: list[str]) -> list[str]:
    return sorted(keys, key=lambda key: key.encode("utf-8"))


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with running_synthetic_s3([SORTED, WALK, EXPRESS, DIRECTORY]) as url:
        yield url


def _client(endpoint_url: str, **s3: Any) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key="synthetic-secret",
        config=Config(s3={"addressing_style": "path", **s3}, retries={"total_max_attempts": 1}),
    )


@pytest.fixture
def s3(endpoint: str) -> Any:
    return _client(endpoint)


def _list(client: Any, bucket: str, **params: Any) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """Every key and common prefix the paginator returns, in order, and the pages."""
    pages = list(client.get_paginator("list_objects_v2").paginate(Bucket=bucket, **params))
    keys = [obj["Key"] for page in pages for obj in page.get("Contents", ())]
    prefixes = [entry["Prefix"] for page in pages for entry in page.get("CommonPrefixes", ())]
    return keys, prefixes, pages


def _error(call: Callable[[], object]) -> tuple[int, str, str]:
    with pytest.raises(ClientError) as caught:
        call()
    response = caught.value.response
    return (
        response["ResponseMetadata"]["HTTPStatusCode"],
        response["Error"]["Code"],
        response["Error"]["Message"],
    )


# -- every dialect -------------------------------------------------------------------------------


@pytest.mark.parametrize("bucket", [SORTED, WALK, EXPRESS, DIRECTORY])
@pytest.mark.parametrize("page_size", [1000, 97])
def test_the_paginator_lists_every_key_exactly_once(s3: Any, bucket: str, page_size: int) -> None:
    keys, _, pages = _list(s3, bucket, PaginationConfig={"PageSize": page_size})
    assert len(keys) == len(set(keys)) == SIZE
    assert set(keys) == set(KEYS)
    assert len(pages) == -(-SIZE // page_size)


@pytest.mark.parametrize("bucket", [SORTED, WALK, EXPRESS, DIRECTORY])
def test_a_folder_prefix_lists_exactly_that_folder(s3: Any, bucket: str) -> None:
    keys, _, _ = _list(s3, bucket, Prefix="study00001/", PaginationConfig={"PageSize": 50})
    assert sorted(keys) == sorted(key for key in KEYS if key.startswith("study00001/"))
    assert len(keys) == 8 * 24


@pytest.mark.parametrize("bucket", [SORTED, WALK, EXPRESS, DIRECTORY])
def test_delimited_pages_list_each_common_prefix_once(s3: Any, bucket: str) -> None:
    # Small pages, so that pages end on a common prefix and the next one must start past it.
    _, prefixes, pages = _list(s3, bucket, Delimiter="/", PaginationConfig={"PageSize": 4})
    expected = {key.split("/", 1)[0] + "/" for key in KEYS}
    assert len(expected) == 25  # 13 studies, the last one cut short before its thumbnails
    assert len(prefixes) == len(set(prefixes)) == len(expected)
    assert set(prefixes) == expected
    assert all(page["KeyCount"] <= 4 for page in pages)


def test_head_bucket_answers_200_and_a_missing_bucket_404(s3: Any) -> None:
    for bucket in (SORTED, WALK, EXPRESS, DIRECTORY, "bench-empty"):
        assert s3.head_bucket(Bucket=bucket)["ResponseMetadata"]["HTTPStatusCode"] == 200
    status, code, _ = _error(lambda: s3.list_objects_v2(Bucket="bench-studies-7"))
    assert (status, code) == (404, "NoSuchBucket")


def test_what_is_not_implemented_gets_a_501_error_document(s3: Any) -> None:
    status, code, _ = _error(lambda: s3.get_object(Bucket=SORTED, Key=KEYS[0]))
    assert (status, code) == (501, "NotImplemented")
    status, code, _ = _error(lambda: s3.list_objects_v2(Bucket=SORTED, MaxKeys=-1))
    assert (status, code) == (400, "InvalidArgument")


# -- sorted --------------------------------------------------------------------------------------


def test_sorted_lists_in_byte_order_and_start_after_is_exact(s3: Any) -> None:
    keys, _, _ = _list(s3, SORTED)
    assert keys == _byte_order(KEYS)
    after = "study00000/series7.json"
    tail, _, _ = _list(s3, SORTED, StartAfter=after)
    assert tail == [key for key in keys if key.encode() > after.encode()]


# -- walk ----------------------------------------------------------------------------------------


def test_walk_lists_folder_by_folder(s3: Any) -> None:
    keys, _, _ = _list(s3, WALK, PaginationConfig={"PageSize": 333})
    assert keys == sorted(KEYS, key=_components)
    assert keys != _byte_order(KEYS)  # what the layout is for
    # A study's folder, then its thumbnails folder, although '-' sorts before '/'.
    thumbs = keys.index("study00000-thumbs/series0.png")
    assert all(key.startswith("study00000/") for key in keys[:thumbs])
    # Inside a study, a series folder before the series' .json, although '.' sorts before '/'.
    assert keys.index("study00000/series0/img0022.dcm") + 1 == keys.index("study00000/series0.json")


def test_walk_start_after_returns_keys_at_or_before_it_in_byte_order(s3: Any) -> None:
    after = "study00000/series7.json"  # the last key of study00000/ in the walk
    keys, _, _ = _list(s3, WALK, StartAfter=after, PaginationConfig={"PageSize": 100})
    assert keys[0] == "study00000-thumbs/series0.png"
    assert keys[0].encode() < after.encode()
    walk = sorted(KEYS, key=_components)
    assert keys == walk[walk.index(after) + 1 :]


def test_walk_start_after_skips_keys_after_it_in_byte_order_that_the_walk_passed(s3: Any) -> None:
    after = "study00000-thumbs/series7.png"
    keys, _, _ = _list(s3, WALK, StartAfter=after)
    assert keys[0] == "study00001/series0/img0000.dcm"
    passed = [key for key in KEYS if key.startswith("study00000/")]
    assert all(key.encode() > after.encode() for key in passed)
    assert not set(passed) & set(keys)
    # A key that is in no bucket sits where the walk would have it.
    keys, _, _ = _list(s3, WALK, StartAfter="study00000/series3")
    assert keys[0] == "study00000/series3/img0000.dcm"


def test_walk_rolls_up_common_prefixes_in_walk_order(s3: Any) -> None:
    _, prefixes, _ = _list(s3, WALK, Delimiter="/", PaginationConfig={"PageSize": 3})
    assert prefixes[:4] == ["study00000/", "study00000-thumbs/", "study00001/", "study00001-thumbs/"]
    assert prefixes == sorted(prefixes, key=_components)
    keys, series, _ = _list(s3, WALK, Prefix="study00002/", Delimiter="/", PaginationConfig={"PageSize": 5})
    assert series == [f"study00002/series{n}/" for n in range(8)]
    assert keys == [f"study00002/series{n}.json" for n in range(8)]
    # A prefix that is not a folder matches both a folder and its thumbnails.
    keys, _, _ = _list(s3, WALK, Prefix="study00003")
    assert keys == sorted((key for key in KEYS if key.startswith("study00003")), key=_components)


# -- directory -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bucket", [EXPRESS, DIRECTORY])
def test_directory_lists_in_a_stable_order_that_is_not_lexicographic(s3: Any, bucket: str) -> None:
    first, _, pages = _list(s3, bucket, PaginationConfig={"PageSize": 500})
    second, _, _ = _list(s3, bucket, PaginationConfig={"PageSize": 500})
    assert first == second
    assert first not in (_byte_order(KEYS), sorted(KEYS, key=_components))
    tokens = [page["NextContinuationToken"] for page in pages[:-1]]
    assert not any(token in KEYS or token.startswith("study") for token in tokens)  # opaque


@pytest.mark.parametrize("bucket", [EXPRESS, DIRECTORY])
def test_directory_refuses_start_after_other_delimiters_and_non_folder_prefixes(s3: Any, bucket: str) -> None:
    status, code, message = _error(lambda: s3.list_objects_v2(Bucket=bucket, StartAfter="study00000/"))
    assert (status, code) == (400, "InvalidArgument")
    assert "StartAfter" in message
    status, code, message = _error(lambda: s3.list_objects_v2(Bucket=bucket, Delimiter="-"))
    assert (status, code) == (400, "InvalidArgument")
    assert "delimiter" in message
    status, code, message = _error(lambda: s3.list_objects_v2(Bucket=bucket, Prefix="study00000"))
    assert (status, code) == (400, "InvalidArgument")
    assert "must end in the delimiter /" in message
    status, code, _ = _error(lambda: s3.list_objects_v2(Bucket=bucket, ContinuationToken="not a token"))
    assert (status, code) == (400, "InvalidArgument")


@pytest.mark.parametrize("bucket", [EXPRESS, DIRECTORY])
def test_directory_pages_keys_and_common_prefixes_together(s3: Any, bucket: str) -> None:
    keys, prefixes, pages = _list(
        s3, bucket, Prefix="study00004/", Delimiter="/", PaginationConfig={"PageSize": 5}
    )
    assert sorted(keys) == [f"study00004/series{n}.json" for n in range(8)]
    assert sorted(prefixes) == [f"study00004/series{n}/" for n in range(8)]
    assert [page["KeyCount"] for page in pages] == [5, 5, 5, 1]
    for page in pages:
        assert len(page.get("Contents", ())) + len(page.get("CommonPrefixes", ())) == page["KeyCount"]
    # Keys and folders interleave in one hash order: some page holds both.
    assert any("Contents" in page and "CommonPrefixes" in page for page in pages)


# -- botocore's S3 Express path ------------------------------------------------------------------


def _record(client: Any) -> list[Any]:
    sent: list[Any] = []
    client.meta.events.register("before-send.s3", lambda request, **_: sent.append(request))
    return sent


def _credential(request: Any) -> str:
    authorization: str = request.headers["Authorization"].decode()
    return authorization.split("Credential=", 1)[1].split("/", 1)[0]


@pytest.mark.parametrize("addressing_style", ["path", "auto", "virtual"])
def test_botocore_creates_a_session_and_signs_listings_with_it(endpoint: str, addressing_style: str) -> None:
    """With an IP endpoint botocore sends a --x-s3 bucket's requests path-style, whatever the
    addressing style (it is not consulted for directory buckets, and "path" is not refused)."""
    client = _client(endpoint, addressing_style=addressing_style)
    sent = _record(client)
    keys, _, _ = _list(client, EXPRESS)
    assert sorted(keys) == sorted(KEYS)
    session, *listings = sent
    assert session.method == "GET"
    assert session.url == f"{endpoint}/{EXPRESS}?session"
    assert _credential(session) == ACCESS_KEY  # CreateSession: the client's own credentials
    assert "x-amz-s3session-token" not in session.headers
    assert len(listings) == 3
    tokens = {request.headers["x-amz-s3session-token"] for request in listings}
    assert len(tokens) == 1  # one session for the whole listing
    for request in listings:
        assert request.url.startswith(f"{endpoint}/{EXPRESS}?list-type=2")
        assert _credential(request).startswith("ASIA")  # the session's
        assert "/s3express/aws4_request" in request.headers["Authorization"].decode()


def test_create_session_returns_session_credentials(s3: Any) -> None:
    response = s3.create_session(Bucket=EXPRESS, SessionMode="ReadOnly")
    credentials = response["Credentials"]
    assert set(credentials) == {"AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration"}
    assert all(credentials[name] for name in ("AccessKeyId", "SecretAccessKey", "SessionToken"))
    lifetime = credentials["Expiration"] - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(minutes=4) < lifetime <= datetime.timedelta(minutes=5)


def test_without_session_auth_botocore_signs_with_the_clients_credentials(endpoint: str) -> None:
    client = _client(endpoint, disable_s3_express_session_auth=True)
    sent = _record(client)
    keys, _, _ = _list(client, EXPRESS)
    assert len(keys) == SIZE
    assert all("?session" not in request.url for request in sent)
    assert {_credential(request) for request in sent} == {ACCESS_KEY}


def test_with_a_host_name_endpoint_botocore_goes_virtual_hosted(endpoint: str) -> None:
    """Why the endpoint URL must be an IP address: a host name puts the bucket in the host."""
    client = _client(endpoint.replace("127.0.0.1", "localhost"), addressing_style="path")

    class Stop(Exception):
        pass

    urls: list[str] = []

    def stop(request: Any, **_: Any) -> None:
        urls.append(request.url)
        raise Stop

    client.meta.events.register("before-send.s3", stop)
    with pytest.raises(Stop):
        client.list_objects_v2(Bucket=EXPRESS)
    port = endpoint.rsplit(":", 1)[1]
    assert urls == [f"http://{EXPRESS}.localhost:{port}/?session"]


# -- names ---------------------------------------------------------------------------------------


def test_a_bucket_name_chooses_its_dialect() -> None:
    assert bucket_spec("dicom-100") == ("bench-dicom-100", "sorted", "bench-dicom-100")
    assert bucket_spec("dicom-100", "walk") == ("bench-dicom-100", "walk", "bench-dicom-100")
    assert bucket_spec("bench-dicom-100-walk") == ("bench-dicom-100-walk", "walk", "bench-dicom-100")
    assert bucket_spec("dicom-100-directory")[1:] == ("directory", "bench-dicom-100")
    assert bucket_spec("dicom-100--use1-az4--x-s3", "walk")[1:] == ("directory", "bench-dicom-100")
    assert bucket_spec("bench-empty--use1-az4--x-s3")[1:] == ("directory", "bench-empty")
    assert bucket_spec("bench-empty-walk")[1:] == ("walk", "bench-empty")
    for wrong in ("dicom", "nosuchlayout-10", "dicom-10-shuffled", "dicom-10--x-s3"):
        with pytest.raises(ValueError, match="bench-LAYOUT-SIZE"):
            bucket_spec(wrong)


# -- the walk order itself -----------------------------------------------------------------------

_KEY_TEXT = st.text(alphabet=st.sampled_from("/\x00\x01 -.0aZé\u2028日😀\U0010ffff"), max_size=12)


@given(_KEY_TEXT, _KEY_TEXT)
def test_walk_key_orders_like_the_tuple_of_components(a: str, b: str) -> None:
    assert (walk_key(a) < walk_key(b)) == (_components(a) < _components(b))
    assert (walk_key(a) == walk_key(b)) == (a == b)


@given(st.lists(_KEY_TEXT, unique=True, max_size=30), _KEY_TEXT)
def test_keys_with_a_prefix_are_contiguous_in_walk_order(keys: list[str], prefix: str) -> None:
    """What the walk dialect's prefix and common-prefix listings rely on."""
    walk = sorted(keys, key=walk_key)
    matching = [i for i, key in enumerate(walk) if key.startswith(prefix)]
    if matching:
        assert matching == list(range(matching[0], matching[-1] + 1))
    assert all(walk_key(key).startswith(walk_key(prefix)) == key.startswith(prefix) for key in keys)


def test_pairs_of_layout_keys_compare_the_same_in_walk_key_and_component_order() -> None:
    sample = KEYS[::37] + LAYOUTS["unicode"](60) + LAYOUTS["deep"](60)
    for a, b in itertools.combinations(sample, 2):
        assert (walk_key(a) < walk_key(b)) == (_components(a) < _components(b))


# -- the fallback benchmark's harness ------------------------------------------------------------


def test_the_fallback_benchmark_reports_a_failing_tool_and_carries_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from benchmarks import fallback
    from benchmarks.tools import TOOLS, Tool

    failing = (
        "import sys; print('listing ...', file=sys.stderr); sys.exit('error: not in key order (stand-in)')"
    )
    stand_in = Tool("scanner", "scanner (default)", lambda _: [sys.executable, "-c", failing], "jsonl")
    monkeypatch.setitem(TOOLS, "scanner", stand_in)
    argv = ["--keys", "300", "--repeat", "1", "--out", str(tmp_path), "--peer-python", sys.executable]
    assert fallback.main(argv) == 1  # a scanner failed: the run says so, after writing its results

    (written,) = tmp_path.glob("fallback-*.json")
    document = json.loads(written.read_text(encoding="utf-8"))
    assert written.with_suffix(".md").exists()
    assert document["machine"]["nproc"] >= 1
    checks = {(check["dialect"], check["tool"]): check for check in document["checks"]}
    assert len(checks) == 6
    for dialect in ("sorted", "walk", "directory"):
        assert checks[dialect, "boto3"]["ok"]
        assert checks[dialect, "boto3"]["keys"] == 300
        failed = checks[dialect, "scanner"]
        assert (failed["ok"], failed["exit_code"]) == (False, 1)
        assert failed["error"] == "exit 1: error: not in key order (stand-in)"
    rows = {(row["dialect"], row["tool"]): row for row in document["summary"]}
    assert all(rows[dialect, "scanner"]["failed"] for dialect in ("sorted", "walk", "directory"))
    for dialect in ("sorted", "walk", "directory"):
        boto3_row = rows[dialect, "boto3"]
        assert boto3_row["failed"] is None
        # Whole-process figures only: after start-up, 300 keys are within the noise of the empty run.
        assert boto3_row["keys_per_second"] > 0
        assert "vs_same_tool_on_sorted" in boto3_row
    assert {run["tool"] for run in document["runs"]} == {"boto3"}  # a failed check is never timed


def test_the_fallback_summary_compares_with_boto3_and_with_the_same_tool_on_sorted() -> None:
    from benchmarks.fallback import summarise
    from benchmarks.runner import Run

    def run(dialect: str, tool: str, dataset: str, wall: float) -> Run:
        return Run(dialect, dataset, tool, 0, wall, wall, 0.0, 1024, 0, None, None, True)

    runs = []
    for dialect, scanner_wall in (("sorted", 1.5), ("walk", 2.5), ("directory", 5.5)):
        runs += [run(dialect, "boto3", "empty-0", 0.5), run(dialect, "boto3", "studies-1000", 10.5)]
        runs += [
            run(dialect, "scanner", "empty-0", 0.5),
            run(dialect, "scanner", "studies-1000", scanner_wall),
        ]
    rows = {(row["dialect"], row["tool"]): row for row in summarise(runs, [], 1000)}
    assert [key[0] for key in rows] == ["sorted", "sorted", "walk", "walk", "directory", "directory"]
    assert rows["sorted", "scanner"]["keys_per_second_after_startup"] == pytest.approx(1000)
    assert rows["walk", "scanner"]["vs_boto3"] == pytest.approx(5.0)  # 2 s against 10 s of listing
    assert rows["walk", "scanner"]["vs_same_tool_on_sorted"] == pytest.approx(0.5)
    assert rows["directory", "scanner"]["vs_same_tool_on_sorted"] == pytest.approx(0.2)
    assert rows["directory", "boto3"]["vs_same_tool_on_sorted"] == pytest.approx(1.0)
