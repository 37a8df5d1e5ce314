"""Where the output goes: standard output or an atomically replaced local file.

A file is written beside its target under a hidden temporary name, flushed, fsynced and renamed
over the target only when the whole scan succeeded; on any failure or cancellation the temporary
file is removed, so the target path either holds a complete output or is untouched.
"""

from __future__ import annotations

import errno
import os
import sys
import tempfile
from typing import BinaryIO, Protocol

from scanner.errors import OutputClosed, ScanError, UsageError

_BUFFER: int = 1 << 20


class Sink(Protocol):
    def open(self) -> None: ...
    def write(self, chunk: bytes) -> None: ...
    def commit(self) -> None: ...
    def abort(self) -> None: ...


class StdoutSink:
    def __init__(self, stream: BinaryIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout.buffer

    def open(self) -> None:
        pass

    def write(self, chunk: bytes) -> None:
        try:
            self._stream.write(chunk)
        except BrokenPipeError as exc:
            raise OutputClosed from exc

    def commit(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError as exc:
            raise OutputClosed from exc

    def abort(self) -> None:
        try:
            self._stream.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass


class AtomicFileSink:
    def __init__(self, path: str) -> None:
        self.path = path
        self._temp_path: str | None = None
        self._file: BinaryIO | None = None

    def open(self) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        if os.path.isdir(self.path):
            raise UsageError(f"output path {self.path!r} is a directory")
        if not os.path.isdir(directory):
            raise UsageError(f"output directory {directory!r} does not exist")
        name = os.path.basename(self.path)
        try:
            fd, self._temp_path = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".partial")
        except OSError as exc:
            raise UsageError(f"cannot write to output directory {directory!r}: {exc.strerror}") from exc
        self._file = os.fdopen(fd, "wb", buffering=_BUFFER)

    def write(self, chunk: bytes) -> None:
        assert self._file is not None
        try:
            self._file.write(chunk)
        except OSError as exc:
            raise self._write_error(exc) from exc

    def commit(self) -> None:
        assert self._file is not None
        assert self._temp_path is not None
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
            self.abort()
            raise self._write_error(exc) from exc
        self._temp_path = None
        _fsync_directory(os.path.dirname(os.path.abspath(self.path)))

    def abort(self) -> None:
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


def open_sink(output: str) -> Sink:
    return StdoutSink() if output == "-" else AtomicFileSink(output)
