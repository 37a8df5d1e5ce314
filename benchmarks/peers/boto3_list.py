"""boto3's ListObjectsV2 paginator: ``python boto3_list.py BUCKET OUTPUT``.

Endpoint, credentials and region come from the AWS_* environment like any boto3 program.
"""

from __future__ import annotations

import sys

import boto3
from botocore.config import Config


def main(bucket: str, output: str) -> None:
    client = boto3.client("s3", config=Config(s3={"addressing_style": "path"}))
    pages = 0
    with open(output, "w", encoding="utf-8", newline="\n") as out:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            pages += 1
            out.writelines(obj["Key"] + "\n" for obj in page.get("Contents", ()))
    print(f"{pages} requests", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
