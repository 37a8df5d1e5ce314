"""``ObjectStore`` in a local directory: what pods on one machine (or a shared file system) share.

Keys are paths under the root. The object rules hold as they do on S3: a put replaces the whole
file at once (written beside it, then renamed); ``if_absent`` links the file written beside it
to the key's name, which fails when the name exists, so exactly one of racing writers wins (on
local file systems and NFS alike); an upload is invisible until committed; a missing key is an
answer.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import IO

from scanner.errors import UsageError


class DirectoryObjectStore:
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)

    def where(self, key: str) -> str:
        return self._path(key)

    def _path(self, key: str) -> str:
        path = os.path.normpath(os.path.join(self.root, key))
        if path != self.root and not path.startswith(self.root + os.sep):
            raise UsageError(f"the key {key!r} names a file outside {self.root}")
        return path

    async def get(self, key: str) -> bytes | None:
        try:
            with open(self._path(key), "rb") as handle:
                return handle.read()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise UsageError(f"cannot read {self._path(key)}: {exc.strerror}") from None

    @asynccontextmanager
    async def read(self, key: str, block_size: int = 1 << 20) -> AsyncIterator[AsyncIterator[bytes] | None]:
        try:
            handle = open(self._path(key), "rb")  # noqa: SIM115 - closed below
        except (FileNotFoundError, NotADirectoryError):
            yield None
            return
        except OSError as exc:
            raise UsageError(f"cannot read {self._path(key)}: {exc.strerror}") from None
        with handle:
            yield _file_blocks(handle, block_size)

    async def put(self, key: str, data: bytes, *, if_absent: bool = False) -> bool:
        path = self._path(key)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            if not if_absent:
                _replace(path, data)
                return True
            # The whole body first, under a name of its own: the key appears complete or not at all.
            staged = _staged(path, data)
            try:
                os.link(staged, path)  # fails if the key exists, like O_EXCL, and is atomic
            except FileExistsError:
                return False
            finally:
                os.unlink(staged)
            return True
        except OSError as exc:
            raise UsageError(f"cannot write {path}: {exc.strerror}") from None

    def upload(self, key: str) -> DirectoryUpload:
        return DirectoryUpload(self._path(key))

    async def delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            try:
                os.unlink(self._path(key))
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise UsageError(f"cannot remove {self._path(key)}: {exc.strerror}") from None

    async def keys(self, prefix: str) -> AsyncIterator[str]:
        # Only the directory the prefix's last "/" names is walked: a board is read twice a
        # second by every pod, and its parts' outputs need not be visited to find its claims.
        folder = prefix.rpartition("/")[0]
        top = self._path(folder) if folder else self.root
        for key in _files_under(top, f"{folder}/" if folder else ""):
            if key.startswith(prefix):
                yield key


# Files being written start with this: never keys.
_STAGED = ".staged-"


def _files_under(directory: str, key_prefix: str) -> Iterator[str]:
    """The keys of the files under ``directory``, whose own key is ``key_prefix``."""
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as exc:
        raise UsageError(f"cannot list {directory}: {exc.strerror}") from None
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from _files_under(entry.path, f"{key_prefix}{entry.name}/")
        elif not entry.name.startswith(_STAGED):
            yield key_prefix + entry.name


def _staged(path: str, data: bytes) -> str:
    descriptor, staged = tempfile.mkstemp(prefix=_STAGED, dir=os.path.dirname(path))
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    return staged


def _replace(path: str, data: bytes) -> None:
    os.replace(_staged(path, data), path)


async def _file_blocks(handle: IO[bytes], block_size: int) -> AsyncIterator[bytes]:
    while block := handle.read(block_size):
        yield block


class DirectoryUpload:
    def __init__(self, path: str) -> None:
        self._path = path
        self._handle: IO[bytes] | None = None
        self._staged = ""

    async def open(self) -> None:
        os.makedirs(os.path.dirname(self._path), exist_ok=True)
        descriptor, self._staged = tempfile.mkstemp(prefix=_STAGED, dir=os.path.dirname(self._path))
        self._handle = os.fdopen(descriptor, "wb")

    async def write(self, chunk: bytes) -> None:
        if self._handle is None:
            raise UsageError(f"writing {self._path} before it was opened")
        self._handle.write(chunk)

    async def commit(self) -> None:
        if self._handle is None:
            raise UsageError(f"committing {self._path}, which is not open")
        self._handle.close()
        self._handle = None
        os.replace(self._staged, self._path)

    async def abort(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
            os.unlink(self._staged)
