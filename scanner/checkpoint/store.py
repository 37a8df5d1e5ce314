"""Where a checkpoint lives: a local directory, or a prefix in S3.

A checkpoint is one manifest (``manifest.json``) and the pieces it names (``piece-RUN-N``): see
``scanner.checkpoint.checkpoint``. A store only moves bytes, with three guarantees the checkpoint relies on:

- ``publish`` makes a piece durable (fsync, or a completed upload) and can be repeated;
- ``write_manifest`` replaces the manifest atomically (rename over it, or one PUT), so a
  process killed at any moment leaves the previous manifest or the new one, never a mix;
- ``clear`` removes the manifest before the pieces, so no manifest ever names a missing piece.

A local piece is written in place as the scan goes (the journal is the piece); an S3 piece is
journaled to a local temporary file and uploaded when it is published.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import IO, Final, Protocol

import anyio

from scanner.config import ConnectionConfig, parse_s3_uri
from scanner.errors import ScanError, UsageError
from scanner.storage.base import ObjectStore, committing
from scanner.storage.s3.store import S3ObjectStore

MANIFEST: Final = "manifest.json"
PIECE_PREFIX: Final = "piece-"
_BLOCK: Final = 1 << 20


class Piece:
    """One piece being journaled: bytes are appended as chunks arrive, unbuffered."""

    def __init__(self, name: str, file: IO[bytes], where: str) -> None:
        self.name = name
        self.file = file
        self.size = 0
        self._where = where

    def append(self, chunk: bytes) -> int:
        """Append ``chunk``; its offset in the piece."""
        offset = self.size
        view = memoryview(chunk)
        try:
            while view:
                written = os.write(self.file.fileno(), view)
                view = view[written:]
        except OSError as exc:
            raise ScanError(f"cannot write the checkpoint for {self._where}: {exc.strerror}") from exc
        self.size += len(chunk)
        return offset


class CheckpointStore(Protocol):
    where: str

    async def open(self) -> None: ...
    async def read_manifest(self) -> bytes | None: ...
    async def write_manifest(self, data: bytes) -> None: ...
    def new_piece(self, name: str) -> Piece: ...
    async def publish(self, piece: Piece) -> None: ...
    async def open_piece(self, name: str) -> IO[bytes]: ...
    async def clear(self) -> None: ...


def open_store(location: str, connection: ConnectionConfig, temp_dir: str | None) -> CheckpointStore:
    if location.startswith("s3://"):
        where = parse_s3_uri(location)
        objects = S3ObjectStore(where.bucket, connection, role="checkpoint", what="the checkpoint")
        return ObjectCheckpointStore(objects, where.prefix, temp_dir)
    return LocalCheckpointStore(location)


def check_location(location: str) -> None:
    """Reject an unusable ``--checkpoint`` before any request is made."""
    if location.startswith("s3://"):
        parse_s3_uri(location)
        return
    if os.path.exists(location) and not os.path.isdir(location):
        raise UsageError(f"--checkpoint {location!r} is a file; it must be a directory")
    parent = os.path.dirname(os.path.abspath(location))
    if not os.path.isdir(parent):
        raise UsageError(f"--checkpoint: directory {parent!r} does not exist")
    writable = location if os.path.isdir(location) else parent
    if not os.access(writable, os.W_OK):
        raise UsageError(f"--checkpoint: cannot write to {writable!r}")


class LocalCheckpointStore:
    """A directory: the manifest and the pieces are files in it."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.where = directory

    async def open(self) -> None:
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as exc:
            raise ScanError(f"cannot create checkpoint directory {self.directory!r}: {exc.strerror}") from exc

    async def read_manifest(self) -> bytes | None:
        try:
            with open(os.path.join(self.directory, MANIFEST), "rb") as file:
                return file.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ScanError(f"cannot read the checkpoint in {self.directory!r}: {exc.strerror}") from exc

    async def write_manifest(self, data: bytes) -> None:
        await anyio.to_thread.run_sync(self._write_manifest, data)

    def _write_manifest(self, data: bytes) -> None:
        target = os.path.join(self.directory, MANIFEST)
        temporary = target + ".tmp"
        try:
            with open(temporary, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, target)
            _fsync_directory(self.directory)
        except OSError as exc:
            raise ScanError(f"cannot write the checkpoint in {self.directory!r}: {exc.strerror}") from exc

    def new_piece(self, name: str) -> Piece:
        path = os.path.join(self.directory, name)
        try:
            return Piece(name, open(path, "wb", buffering=0), self.where)
        except OSError as exc:
            raise ScanError(f"cannot write the checkpoint in {self.directory!r}: {exc.strerror}") from exc

    async def publish(self, piece: Piece) -> None:
        def sync() -> None:
            if not piece.file.closed:
                os.fsync(piece.file.fileno())
                piece.file.close()
            _fsync_directory(self.directory)

        try:
            await anyio.to_thread.run_sync(sync)
        except OSError as exc:
            raise ScanError(f"cannot write the checkpoint in {self.directory!r}: {exc.strerror}") from exc

    async def open_piece(self, name: str) -> IO[bytes]:
        try:
            return open(os.path.join(self.directory, name), "rb")
        except OSError as exc:
            raise ScanError(
                f"the checkpoint in {self.directory!r} is damaged: piece {name!r}: {exc.strerror}"
            ) from exc

    async def clear(self) -> None:
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.directory, MANIFEST))
            _fsync_directory(self.directory)
            for entry in os.scandir(self.directory):
                if entry.name.startswith(PIECE_PREFIX) or entry.name == MANIFEST + ".tmp":
                    os.unlink(entry.path)
        except OSError as exc:
            raise ScanError(f"cannot remove the checkpoint in {self.directory!r}: {exc.strerror}") from exc


class ObjectCheckpointStore:
    """Objects under ``PREFIX/`` of an ``ObjectStore``; pieces are journaled locally until published."""

    def __init__(self, objects: ObjectStore, prefix: str, temp_dir: str | None) -> None:
        self._objects = objects
        self._prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self._temp_dir = temp_dir
        self.where = objects.where(self._prefix)

    async def open(self) -> None:
        pass

    async def read_manifest(self) -> bytes | None:
        return await self._objects.get(self._prefix + MANIFEST)

    async def write_manifest(self, data: bytes) -> None:
        await self._objects.put(self._prefix + MANIFEST, data)

    def new_piece(self, name: str) -> Piece:
        try:
            file = tempfile.TemporaryFile(dir=self._temp_dir, buffering=0)  # noqa: SIM115 - Piece owns it
        except OSError as exc:
            raise ScanError(f"cannot stage the checkpoint for {self.where}: {exc.strerror}") from exc
        return Piece(name, file, self.where)

    async def publish(self, piece: Piece) -> None:
        async with committing(self._objects.upload(self._prefix + piece.name)) as upload:
            offset = 0
            while offset < piece.size:
                block = os.pread(piece.file.fileno(), min(_BLOCK, piece.size - offset), offset)
                offset += len(block)
                await upload.write(block)
        piece.file.close()

    async def open_piece(self, name: str) -> IO[bytes]:
        copy = tempfile.TemporaryFile(dir=self._temp_dir)  # noqa: SIM115 - the caller closes
        try:
            async with self._objects.read(self._prefix + name) as blocks:
                if blocks is None:
                    raise ScanError(f"the checkpoint at {self.where} is damaged: piece {name!r} is missing")
                async for block in blocks:
                    copy.write(block)
        except BaseException:
            copy.close()
            raise
        return copy

    async def clear(self) -> None:
        # The manifest first: a failure half-way leaves pieces no manifest names, never the reverse.
        await self._objects.delete([self._prefix + MANIFEST])
        pieces = [key async for key in self._objects.keys(self._prefix + PIECE_PREFIX)]
        await self._objects.delete(pieces)


def _fsync_directory(directory: str) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
