"""``ObjectStore`` for one S3 bucket: the object calls outputs, checkpoints, state and plans make.

Built on the streamed download (``download.py``) and the multipart upload (``upload.py``); every
botocore error passes through ``scanner.storage.errors``, with the role of the objects (``state``,
``checkpoint``, ``plan``, ``output``) in its message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing, asynccontextmanager
from typing import Any

import anyio

from scanner.config import ConnectionConfig, S3Location
from scanner.storage.base import committing
from scanner.storage.errors import ObjectCall, object_errors
from scanner.storage.s3.download import BLOCK_SIZE, S3Download
from scanner.storage.s3.objects import object_client
from scanner.storage.s3.upload import S3UploadSink, put_new_object

# DeleteObjects takes at most this many keys a request.
_DELETE_BATCH = 1000
_DELETES_IN_FLIGHT = 8
_BATCH_REFUSED = frozenset({"MissingContentMD5", "NotImplemented", "InvalidRequest"})


class S3ObjectStore:
    def __init__(self, bucket: str, connection: ConnectionConfig, *, role: str, what: str) -> None:
        self.bucket = bucket
        self._connection = connection
        self._role = role
        self._what = what

    def where(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def _download(self, key: str, block_size: int = BLOCK_SIZE) -> S3Download:
        location = S3Location(self.bucket, key)
        return S3Download(location, self._connection, block_size, role=self._role, what=self._what)

    async def get(self, key: str) -> bytes | None:
        async with self._download(key) as download:
            if not download.exists:
                return None
            return b"".join([block async for block in download.blocks()])

    @asynccontextmanager
    async def read(
        self, key: str, block_size: int = BLOCK_SIZE
    ) -> AsyncIterator[AsyncIterator[bytes] | None]:
        async with self._download(key, block_size) as download:
            if not download.exists:
                yield None
                return
            async with aclosing(download.blocks()) as blocks:
                yield blocks

    async def put(self, key: str, data: bytes, *, if_absent: bool = False) -> bool:
        location = S3Location(self.bucket, key)
        if if_absent:
            return await put_new_object(location, self._connection, data, role=self._role, what=self._what)
        async with committing(self.upload(key)) as upload:
            await upload.write(data)
        return True

    def upload(self, key: str) -> S3UploadSink:
        return S3UploadSink(S3Location(self.bucket, key), self._connection, role=self._role, what=self._what)

    def _call(self, verb: str, doing: str, key: str, needs: str) -> ObjectCall:
        return ObjectCall(verb, doing, self.where(key), self._role, self._what, needs)

    async def delete(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        needs = f"s3:DeleteObject on arn:aws:s3:::{self.bucket}/{keys[0]}"
        with object_errors(self._call("remove", "removing", keys[0], needs)):
            async with object_client(self._connection) as client:
                for start in range(0, len(keys), _DELETE_BATCH):
                    await self._delete_batch(client, keys[start : start + _DELETE_BATCH])

    async def _delete_batch(self, client: Any, keys: Sequence[str]) -> None:
        # imported on first use, not with the module: start-up
        from botocore.exceptions import ClientError

        if len(keys) > 1:
            batch = {"Objects": [{"Key": key} for key in keys], "Quiet": True}
            try:
                await client.delete_objects(Bucket=self.bucket, Delete=batch)
                return
            except ClientError as exc:
                # Gateways that insist on a Content-MD5 (the JuiceFS gateway) refuse the batch
                # botocore sends (it checksums with CRC32): one DeleteObject a key there.
                if exc.response.get("Error", {}).get("Code") not in _BATCH_REFUSED:
                    raise
        limit = anyio.CapacityLimiter(_DELETES_IN_FLIGHT)

        async def delete_one(key: str) -> None:
            async with limit:
                await client.delete_object(Bucket=self.bucket, Key=key)

        async with anyio.create_task_group() as group:
            for key in keys:
                group.start_soon(delete_one, key)

    async def keys(self, prefix: str) -> AsyncIterator[str]:
        needs = f"s3:ListBucket on arn:aws:s3:::{self.bucket}"
        with object_errors(self._call("list", "listing", prefix, needs)):
            async with object_client(self._connection) as client:
                paginator = client.get_paginator("list_objects_v2")
                async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                    for entry in page.get("Contents", []):
                        yield entry["Key"]
