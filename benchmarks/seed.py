"""Create and fill benchmark buckets, skipping buckets that already hold the expected keys."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from benchmarks.layouts import LAYOUTS


def bucket_name(layout: str, size: int) -> str:
    return f"bench-{layout}-{size}"


def make_client(endpoint_url: str, access_key: str, secret_key: str, pool: int = 64) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 10, "mode": "standard"},
            max_pool_connections=pool,
        ),
    )


def count_keys(client: Any, bucket: str) -> int:
    total = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        total += page.get("KeyCount", 0)
    return total


def seed(client: Any, layout: str, size: int, threads: int = 48, log: Any = print) -> tuple[str, list[str]]:
    """Make sure ``bench-LAYOUT-SIZE`` holds exactly the layout's keys; returns (bucket, keys)."""
    keys = LAYOUTS[layout](size)
    bucket = bucket_name(layout, size)
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        client.create_bucket(Bucket=bucket)
    elif count_keys(client, bucket) == len(keys):
        return bucket, keys
    log(f"seeding s3://{bucket} with {len(keys):,} keys ...")
    _put_all(client, bucket, keys, threads)
    return bucket, keys


def _put_all(client: Any, bucket: str, keys: Sequence[str], threads: int) -> None:
    def put(key: str) -> None:
        client.put_object(Bucket=bucket, Key=key, Body=b"x")

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in pool.map(put, keys, chunksize=64):
            pass
