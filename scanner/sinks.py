"""Where the output goes: standard output or an atomically replaced local file.

A file is written beside its target under a hidden temporary name, flushed, fsynced and renamed
over the target only when the whole scan succeeded; on any failure or cancellation the temporary
file is removed, so the target path either holds a complete output or is untouched.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import tempfile
from typing import BinaryIO, Protocol

from scanner.config import ConnectionConfig, parse_s3_object_uri
from scanner.errors import OutputClosed, ScanError, UsageError

_BUFFER: int = 1 << 20


class Sink(Protocol):
    """One output. ``commit`` makes it visible at its destination; ``abort`` leaves nothing."""

    async def open(self) -> None: ...
    async def write(self, chunk: bytes) -> None: ...
    async def commit(self) -> None: ...
    async def abort(self) -> None: ...


class StdoutSink:
    def __init__(self, stream: BinaryIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout.buffer

    async def open(self) -> None:
        pass

    async def write(self, chunk: bytes) -> None:
        try:
            self._stream.write(chunk)
        except BrokenPipeError as exc:
            raise OutputClosed from exc

    async def commit(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError as exc:
            raise OutputClosed from exc

    async def abort(self) -> None:
        try:
            self._stream.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass


class AtomicFileSink:
    def __init__(self, path: str) -> None:
        self.path = path
        self._temp_path: str | None = None
        self._file: BinaryIO | None = None

    async def open(self) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        if os.path.isdir(self.path):
            raise UsageError(f"output path {self.path!r} is a directory")
        if os.path.exists(self.path) and not stat.S_ISREG(os.stat(self.path).st_mode):
            # A device or a pipe (/dev/null, a FIFO): write to it; renaming over it would
            # replace the device with a file.
            try:
                self._file = open(self.path, "wb", buffering=_BUFFER)  # noqa: SIM115
            except OSError as exc:
                raise UsageError(f"cannot write to {self.path!r}: {exc.strerror}") from exc
            return
        if not os.path.isdir(directory):
            raise UsageError(f"output directory {directory!r} does not exist")
        name = os.path.basename(self.path)
        try:
            fd, self._temp_path = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".partial")
        except OSError as exc:
            raise UsageError(f"cannot write to output directory {directory!r}: {exc.strerror}") from exc
        self._file = os.fdopen(fd, "wb", buffering=_BUFFER)

    async def write(self, chunk: bytes) -> None:
        assert self._file is not None
        try:
            self._file.write(chunk)
        except OSError as exc:
            raise self._write_error(exc) from exc

    async def commit(self) -> None:
        assert self._file is not None
        if self._temp_path is None:  # a device or a pipe
            try:
                self._file.close()
            except OSError as exc:
                raise self._write_error(exc) from exc
            return
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            # The umask-respecting mode a plain open() would have given, not mkstemp's 0600.
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self._temp_path, 0o666 & ~umask)
            os.replace(self._temp_path, self.path)
        except OSError as exc:
            await self.abort()
            raise self._write_error(exc) from exc
        self._temp_path = None
        _fsync_directory(os.path.dirname(os.path.abspath(self.path)))

    async def abort(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass  # a full disk fails the final flush too; the file goes away regardless
        if self._temp_path is not None:
            try:
                os.unlink(self._temp_path)
            except FileNotFoundError:
                pass
            self._temp_path = None

    def _write_error(self, exc: OSError) -> ScanError:
        if exc.errno == errno.ENOSPC:
            return ScanError(f"no space left on the device writing {self.path!r}")
        return ScanError(f"cannot write {self.path!r}: {exc.strerror or exc}")


def _fsync_directory(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def open_sink(output: str, connection: ConnectionConfig | None = None) -> Sink:
    if output == "-":
        return StdoutSink()
    if output.startswith("s3://"):
        from scanner.s3.upload import S3UploadSink

        return S3UploadSink(parse_s3_object_uri(output), connection or ConnectionConfig())
    return AtomicFileSink(output)
