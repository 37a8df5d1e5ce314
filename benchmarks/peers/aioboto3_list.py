"""aioboto3's ListObjectsV2 paginator: ``python aioboto3_list.py BUCKET OUTPUT``.

A paginator is sequential by nature (each page needs the previous page's token), so this is one
coroutine; it shows what the async stack costs, not what concurrency could add.
"""

from __future__ import annotations

import asyncio
import sys

import aioboto3
from botocore.config import Config


async def main(bucket: str, output: str) -> None:
    session = aioboto3.Session()
    pages = 0
    async with session.client("s3", config=Config(s3={"addressing_style": "path"})) as client:
        with open(output, "w", encoding="utf-8", newline="\n") as out:
            async for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                pages += 1
                out.writelines(obj["Key"] + "\n" for obj in page.get("Contents", ()))
    print(f"{pages} requests", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
