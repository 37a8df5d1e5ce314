"""Input from an S3 object, streamed: one GET whose body is read in blocks, never whole.

The objects the scanner reads back (a ``--state`` snapshot, a checkpoint, the outputs of shards
that ``scanner merge`` combines) can be hundreds of megabytes for a large bucket, so the body is
handed on block by block and memory stays at one block. A key that does not exist is not an
error here: ``open`` returns ``False`` and the caller decides what absence means (for the state,
"first run").

S3 answers a GET of a missing key with 404 ``NoSuchKey`` only when the caller may list the bucket;
without ``s3:ListBucket`` it answers 403 ``AccessDenied`` so as not to reveal which keys exist.
A 403 is therefore never read as "missing": taking it for a first run would make every scheduled
run report the whole bucket as new, silently. It is an ``AccessError`` whose message names both
permissions.

The client is built exactly as ``scanner.storage.s3.upload`` builds it, so reading and writing the state
use the same credentials, endpoint and addressing style.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from types import TracebackType
from typing import Any, Final

from scanner.config import ConnectionConfig, S3Location
from scanner.errors import ScanError, redact
from scanner.storage.errors import ObjectCall, ObjectMissing, object_errors
from scanner.storage.s3.objects import object_client

BLOCK_SIZE: Final = 1024 * 1024


class S3Download:
    """One object read from S3 as a stream of byte blocks.

    Use as ``async with S3Download(location, connection) as download:``; ``exists`` tells whether
    the object was there, and ``blocks()`` yields its body.
    """

    def __init__(
        self,
        location: S3Location,
        connection: ConnectionConfig,
        block_size: int = BLOCK_SIZE,
        *,
        role: str = "state",
        what: str = "the state",
    ) -> None:
        self.location = location
        # Whose object it is, for error messages ("state", "input", "plan").
        self._role = role
        self._what = what
        self.exists = False
        self._connection = connection
        self._block_size = block_size
        self._client_context: Any = None
        self._body: Any = None

    @property
    def where(self) -> str:
        return f"s3://{self.location.bucket}/{self.location.prefix}"

    async def __aenter__(self) -> S3Download:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def open(self) -> bool:
        """Send the GET; ``False`` (and nothing to read) when the key does not exist."""
        self._client_context = object_client(self._connection)
        try:
            client = await self._client_context.__aenter__()
            response = await self._call(
                client.get_object, Bucket=self.location.bucket, Key=self.location.prefix
            )
        except BaseException:
            await self.close()
            raise
        if response is None:
            await self.close()
            return False
        self._body = response["Body"]
        self.exists = True
        return True

    async def blocks(self) -> AsyncGenerator[bytes, None]:
        """The body in blocks of at most ``block_size`` bytes, as they arrive."""
        if self._body is None:
            return
        # Loaded by the object client already; here to keep this module cheap to import.
        import aiohttp
        from botocore.exceptions import BotoCoreError

        # A body cut short mid-stream is not retried here: botocore has already retried the
        # request itself, and a scheduled job that fails is simply run again by its controller.
        while True:
            try:
                block = await self._body.read(self._block_size)
            except (BotoCoreError, aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise ScanError(f"reading {self.where} failed: {redact(str(exc))}") from exc
            if not block:
                return
            yield block

    async def close(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            body.close()
        context, self._client_context = self._client_context, None
        if context is not None:
            await context.__aexit__(None, None, None)

    async def _call(self, method: Any, **params: Any) -> Any:
        """The response, or ``None`` for a key that does not exist; S3 failures as ``ScanError``."""
        bucket, key = self.location.bucket, self.location.prefix
        needs = (
            f"s3:GetObject on arn:aws:s3:::{bucket}/{key}, and s3:ListBucket on arn:aws:s3:::{bucket} "
            "(without it S3 answers 403, not 404, for a key that does not exist yet)"
        )
        call = ObjectCall(
            "read", "reading", self.where, self._role, self._what, needs, missing_is_an_answer=True
        )
        try:
            with object_errors(call):
                return await method(**params)
        except ObjectMissing:
            return None


async def read_small_object(location: S3Location, connection: ConnectionConfig) -> bytes | None:
    """The whole body of a small object (a shard plan), or None when the key does not exist."""
    async with S3Download(location, connection, role="plan", what="the shard plan") as download:
        if not download.exists:
            return None
        return b"".join([block async for block in download.blocks()])
