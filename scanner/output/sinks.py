"""Where the output goes: standard output or an atomically replaced local file.

A file is written beside its target as an unnamed file (Linux ``O_TMPFILE``), flushed, fsynced
and given its name only when the whole scan succeeded. A process killed outright (SIGKILL, the
OOM killer, a node going away) therefore leaves nothing at the destination: the kernel frees an
unnamed file with its last descriptor. Where unnamed files are not supported (other systems,
some filesystems) the file gets a hidden temporary name instead, removed on any failure or
cancellation that the process lives through. Either way the target path holds a complete output
or is untouched.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import tempfile
from typing import BinaryIO, Protocol

from scanner.config import Compression, ConnectionConfig, parse_s3_object_uri
from scanner.errors import OutputClosed, ScanError, UsageError
from scanner.storage.s3.store import S3ObjectStore

_BUFFER: int = 1 << 20


class Sink(Protocol):
    """One output. ``commit`` makes it visible at its destination; ``abort`` leaves nothing.

    The same shape as ``scanner.storage.base.Upload`` (an S3 upload is a sink), which is what a
    wrapper of any sink (``CompressedSink``) takes.
    """

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
        # A write interrupted by a signal (SIGINT while the reader is slow) can return having
        # taken only part of the chunk: the rest must follow, or lines would be cut.
        view = memoryview(chunk)
        try:
            while view:
                taken = self._stream.write(view)
                view = view[taken:]
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
    def __init__(self, path: str, role: str = "output") -> None:
        self.path = path
        # What the file is, for error messages ("output", "state").
        self.role = role
        self._temp_path: str | None = None
        self._unnamed = False
        self._file: BinaryIO | None = None

    async def open(self) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        if os.path.isdir(self.path):
            raise UsageError(f"{self.role} path {self.path!r} is a directory")
        if os.path.exists(self.path) and not stat.S_ISREG(os.stat(self.path).st_mode):
            # A device or a pipe (/dev/null, a FIFO): write to it; renaming over it would
            # replace the device with a file.
            try:
                self._file = open(self.path, "wb", buffering=_BUFFER)  # noqa: SIM115
            except OSError as exc:
                raise UsageError(f"cannot write to {self.path!r}: {exc.strerror}") from exc
            return
        if not os.path.isdir(directory):
            raise UsageError(f"{self.role} directory {directory!r} does not exist")
        try:
            fd = self._open_unnamed(directory)
            if fd is None:
                name = os.path.basename(self.path)
                fd, self._temp_path = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".partial")
        except OSError as exc:
            raise UsageError(f"cannot write to {self.role} directory {directory!r}: {exc.strerror}") from exc
        self._file = os.fdopen(fd, "wb", buffering=_BUFFER)

    def _open_unnamed(self, directory: str) -> int | None:
        """A file in ``directory`` with no name yet; ``None`` where the system cannot make one."""
        flag = getattr(os, "O_TMPFILE", None)
        if flag is None or not os.path.isdir("/proc/self/fd"):
            return None
        try:
            fd = os.open(directory, flag | os.O_WRONLY, 0o666)
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
                return None
            raise
        self._unnamed = True
        return fd

    async def write(self, chunk: bytes) -> None:
        assert self._file is not None
        try:
            self._file.write(chunk)
        except OSError as exc:
            raise self._write_error(exc) from exc

    async def commit(self) -> None:
        assert self._file is not None
        if self._unnamed:
            try:
                self._file.flush()
                os.fsync(self._file.fileno())
                self._name_unnamed()
            except OSError as exc:
                await self.abort()
                raise self._write_error(exc) from exc
            self._file.close()
            self._file = None
            _fsync_directory(os.path.dirname(os.path.abspath(self.path)))
            return
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

    def _name_unnamed(self) -> None:
        """Give the unnamed file the target's name: at once when it is free, or under a hidden
        name renamed over the existing target (renaming is the only atomic way to replace)."""
        assert self._file is not None
        directory = os.path.dirname(os.path.abspath(self.path))
        # linkat(AT_SYMLINK_FOLLOW) on /proc/self/fd/N links the file the descriptor holds.
        # os.link calls plain link(), which would link the /proc symlink itself, unless it is
        # given a directory descriptor (ignored for absolute paths): that makes it use linkat.
        source = f"/proc/self/fd/{self._file.fileno()}"
        directory_fd = os.open(directory, os.O_RDONLY)
        try:
            try:
                os.link(source, os.path.abspath(self.path), src_dir_fd=directory_fd, follow_symlinks=True)
                return
            except FileExistsError:
                pass
            name = os.path.basename(self.path)
            while True:
                hidden = os.path.join(directory, f".{name}.{os.urandom(4).hex()}.partial")
                try:
                    os.link(source, hidden, src_dir_fd=directory_fd, follow_symlinks=True)
                    break
                except FileExistsError:
                    continue
        finally:
            os.close(directory_fd)
        try:
            os.replace(hidden, self.path)
        except OSError:
            os.unlink(hidden)
            raise

    async def abort(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass  # a full disk fails the final flush too; the file goes away regardless
            self._file = None
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


def open_sink(
    output: str,
    connection: ConnectionConfig | None = None,
    compression: Compression = "none",
    *,
    role: str = "output",
    what: str = "the output",
) -> Sink:
    """Standard output, an S3 object (through the ``ObjectStore``), or a local file; compressed
    if asked."""
    sink: Sink
    if output == "-":
        sink = StdoutSink()
    elif output.startswith("s3://"):
        where = parse_s3_object_uri(output)
        objects = S3ObjectStore(where.bucket, connection or ConnectionConfig(), role=role, what=what)
        sink = objects.upload(where.prefix)
    else:
        sink = AtomicFileSink(output, role)
    if compression == "none":
        return sink
    # only a compressed output needs it (start-up)
    from scanner.output.compression import CompressedSink

    return CompressedSink(sink, compression)
