"""The soak: a 100k-key bucket on Ceph RGW, faults on 5% of requests, several runs.

Every run must list exactly the bucket's keys, and peak memory must stay level across runs.
Long (seeding 100k keys takes minutes), so it runs with ``make soak``, not ``make test``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.conftest import REPO_ROOT, S3Target
from tests.faultproxy import TRANSIENT_KINDS, FaultProxy
from tests.keysets import utf8_sorted

pytestmark = pytest.mark.soak

SOAK_KEYS = int(os.environ.get("SCANNER_SOAK_KEYS", "100000"))
SOAK_RUNS = int(os.environ.get("SCANNER_SOAK_RUNS", "5"))


def soak_keys(count: int) -> list[str]:
    return [
        f"study{s:05d}/series{r}/img{i:08d}.dcm"
        for s in range(-(-count // 200))
        for r in range(8)
        for i in range(25)
    ][:count]


@pytest.mark.skipif(not os.path.exists("/usr/bin/time"), reason="needs /usr/bin/time for peak RSS")
def test_soak_with_faults(rgw_target: S3Target, tmp_path: Path) -> None:
    keys = soak_keys(SOAK_KEYS)
    bucket = rgw_target.shared_bucket(f"soak-{SOAK_KEYS}", keys)
    expected = utf8_sorted(keys)
    rows = []
    for run in range(SOAK_RUNS):
        out = tmp_path / f"run-{run}.jsonl"
        with FaultProxy(
            rgw_target.endpoint_url,
            rate=0.05,
            kinds=TRANSIENT_KINDS,
            seed=run,
            credentials=(rgw_target.access_key, rgw_target.secret_key),
        ) as proxy:
            env = {**rgw_target.env(), "AWS_ENDPOINT_URL": proxy.url, "PYTHONPATH": str(REPO_ROOT)}
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "scanner",
                    "scan",
                    f"s3://{bucket}",
                    "-o",
                    str(out),
                    "--processes",
                    "1",
                ],
                env=env,
                stderr=subprocess.PIPE,
            )
            assert process.stderr is not None
            stderr = process.stderr.read().decode()
            process.wait()
            faulted = proxy.faulted
        rss_kb = int(stderr.rsplit("maxrss-kb ", 1)[1].split()[0])
        stderr = stderr.rsplit("maxrss-kb ", 1)[0]
        assert process.returncode == 0, stderr
        got = [orjson.loads(line)["key"] for line in out.read_bytes().splitlines()]
        assert got == expected, f"run {run}: {len(got)} keys, {len(set(got))} distinct"
        rows.append((run, faulted, stderr.strip().splitlines()[-1], rss_kb // 1024))
        out.unlink()
    print()
    for run, faulted, summary, rss in rows:
        print(f"soak run {run}: {faulted} faults injected; {summary}; peak RSS {rss} MB")
    peaks = [rss for *_, rss in rows]
    assert max(peaks) - min(peaks) <= 20, f"peak RSS moved across runs: {peaks}"
    assert max(peaks) < 150
