"""Output to an S3 object, streamed: a multipart upload that becomes visible only on success.

Chunks are gathered into parts, each uploaded as soon as it is full, so memory stays at one part
and nothing is staged on disk. The output's size is not known until the end, and S3 takes at
most 10,000 parts of at most 5 GiB each: so parts start at ``PART_SIZE`` and double every tenth
of the part limit (``part_size_of``), which stays within the limit up to S3's 5 TiB object size,
while an output of a few GB keeps parts (and memory) small. The upload
runs in the writer: while a part is in flight the pipeline waits (backpressure, not buffers).
``commit`` completes the upload (or, for an output smaller than one part, sends a single PUT);
``abort`` aborts it, so S3 never shows a partial object at the key, and no orphaned parts are
left to bill for.
"""

from __future__ import annotations

from typing import Any, Final

from scanner.config import ConnectionConfig, S3Location
from scanner.errors import ScanError
from scanner.storage.errors import ObjectCall, object_errors
from scanner.storage.s3.objects import object_client

PART_SIZE: Final = 8 * 1024 * 1024  # S3's minimum for all but the last part is 5 MiB
MAX_PARTS: Final = 10_000  # S3's limits on a multipart upload
MAX_PART_SIZE: Final = 5 * 1024**3


def part_size_of(number: int, first: int, max_parts: int = MAX_PARTS, most: int = MAX_PART_SIZE) -> int:
    """The size of part ``number`` (from 1) of an upload whose first part is ``first`` bytes.

    Sizes double every ``max_parts // 10`` parts, up to ``most``: the ``max_parts`` parts hold
    1,023 times as much as that many parts of the first size (or ``most`` each past it). With
    S3's limits and 8 MiB to start, that is 7.8 TiB, more than S3's 5 TiB object limit.
    """
    step = max(1, max_parts // 10)
    return min(most, first << min((number - 1) // step, 62))


class S3UploadSink:
    def __init__(
        self,
        location: S3Location,
        connection: ConnectionConfig,
        part_size: int = PART_SIZE,
        *,
        role: str = "output",
        what: str = "the output",
        max_parts: int = MAX_PARTS,
        max_part_size: int = MAX_PART_SIZE,
    ) -> None:
        self.location = location
        # Whose object it is, for error messages ("output", "state", "checkpoint", "plan").
        self._role = role
        self._what = what
        self._connection = connection
        self._first_part_size = part_size
        self._part_size = part_size
        self._max_parts = max_parts
        self._max_part_size = max_part_size
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._client: Any = None
        self._client_context: Any = None
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    async def open(self) -> None:
        self._client_context = object_client(self._connection)
        self._client = await self._client_context.__aenter__()

    async def write(self, chunk: bytes) -> None:
        self._buffer.append(chunk)
        self._buffered += len(chunk)
        while self._buffered >= self._part_size:
            await self._flush_part()

    async def _flush_part(self) -> None:
        """Upload the next part: ``_part_size`` bytes of the buffer, or all of it at the end."""
        joined = b"".join(self._buffer)
        data, rest = joined[: self._part_size], joined[self._part_size :]
        self._buffer = [rest] if rest else []
        self._buffered = len(rest)
        if self._upload_id is None:
            response = await self._call(
                self._client.create_multipart_upload,
                Bucket=self.location.bucket,
                Key=self.location.prefix,
                ContentType=_content_type(self.location.prefix),
            )
            self._upload_id = response["UploadId"]
        number = len(self._parts) + 1
        if number > self._max_parts:
            raise ScanError(
                f"the output to s3://{self.location.bucket}/{self.location.prefix} is larger than "
                f"S3's {self._max_parts:,} parts of up to {self._max_part_size:,} bytes can hold"
            )
        response = await self._call(
            self._client.upload_part,
            Bucket=self.location.bucket,
            Key=self.location.prefix,
            UploadId=self._upload_id,
            PartNumber=number,
            Body=data,
        )
        self._parts.append({"PartNumber": number, "ETag": response["ETag"]})
        self._part_size = part_size_of(
            number + 1, self._first_part_size, self._max_parts, self._max_part_size
        )

    async def commit(self) -> None:
        try:
            if self._upload_id is None:
                await self._call(
                    self._client.put_object,
                    Bucket=self.location.bucket,
                    Key=self.location.prefix,
                    Body=b"".join(self._buffer),
                    ContentType=_content_type(self.location.prefix),
                )
            else:
                if self._buffer:
                    await self._flush_part()
                await self._call(
                    self._client.complete_multipart_upload,
                    Bucket=self.location.bucket,
                    Key=self.location.prefix,
                    UploadId=self._upload_id,
                    MultipartUpload={"Parts": self._parts},
                )
                self._upload_id = None
        except BaseException:
            # Abort while the client is still open, or the parts would be left behind.
            await self.abort()
            raise
        await self._close()

    async def abort(self) -> None:
        if self._upload_id is not None and self._client is not None:
            try:
                await self._client.abort_multipart_upload(
                    Bucket=self.location.bucket, Key=self.location.prefix, UploadId=self._upload_id
                )
            except Exception:  # noqa: BLE001 - best effort; S3 lifecycle rules reap the rest
                pass
            self._upload_id = None
        await self._close()

    async def _close(self) -> None:
        self._client = None
        context, self._client_context = self._client_context, None
        if context is not None:
            await context.__aexit__(None, None, None)

    async def _call(self, method: Any, **params: Any) -> Any:
        where = f"s3://{self.location.bucket}/{self.location.prefix}"
        needs = f"s3:PutObject on arn:aws:s3:::{self.location.bucket}/{self.location.prefix}"
        with object_errors(ObjectCall("write", "writing", where, self._role, self._what, needs)):
            return await method(**params)


def _content_type(key: str) -> str:
    if key.endswith(".gz"):
        return "application/gzip"
    if key.endswith(".zst"):
        return "application/zstd"
    if key.endswith(".parquet"):
        return "application/vnd.apache.parquet"
    if key.endswith((".jsonl", ".ndjson")):
        return "application/x-ndjson"
    if key.endswith(".json"):
        return "application/json"
    if key.endswith(".csv"):
        return "text/csv"
    return "application/octet-stream"


async def put_new_object(
    location: S3Location,
    connection: ConnectionConfig,
    data: bytes,
    *,
    role: str = "plan",
    what: str = "the plan",
) -> bool:
    """Create the object with ``data`` unless the key exists (``If-None-Match: *``).

    True when this call created it; False when the key already existed, or another writer's
    conditional put of it was in progress (S3's 409 ``ConditionalRequestConflict``): either way
    the object at the key is someone else's, and the caller reads it.
    """
    # imported on first use, not with the module: start-up
    from botocore.exceptions import ClientError

    sink = S3UploadSink(location, connection, role=role, what=what)
    await sink.open()
    try:
        await sink._call(
            sink._client.put_object,
            Bucket=location.bucket,
            Key=location.prefix,
            Body=data,
            ContentType=_content_type(location.prefix),
            IfNoneMatch="*",
        )
    except ScanError as exc:
        cause = exc.__cause__
        if isinstance(cause, ClientError):
            code = str(cause.response.get("Error", {}).get("Code", ""))
            status = cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
                return False
        raise
    finally:
        await sink._close()
    return True
