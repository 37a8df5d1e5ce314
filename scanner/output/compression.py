"""Compressed outputs and inputs: gzip (the standard library's zlib) or zstd (``zstandard``).

Which one an output gets is chosen by its name (``.gz``, ``.zst``) or by ``--compress``; a
name and an option that disagree are a usage error rather than a ``.gz`` file of plain text.
``CompressedSink`` wraps any sink (a file, standard output, an S3 upload): chunks are gathered
into blocks of ``_BLOCK`` bytes and compressed in a worker thread (zlib and zstd let go of the
GIL), so the listing goes on meanwhile. What the sink commits is one complete gzip member or
zstd frame; what it aborts leaves nothing, as the sink below it promises.

``decompressed`` reads inputs back (``scanner merge``): it tells the codec from the first bytes
(the gzip and zstd magic numbers), so an input needs no particular name.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Final, Protocol

import anyio

from scanner.config import Compression
from scanner.errors import ScanError, UsageError
from scanner.storage.base import Upload

__all__ = ["COMPRESSIONS", "CompressedSink", "Compression", "choose_compression", "decompressed"]

COMPRESSIONS: Final = ("none", "gzip", "zstd")
# Name endings, and what each means.
EXTENSIONS: Final[dict[str, Compression]] = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd"}
# Levels for a listing (many short, similar lines with random ETags in them): gzip 3 is about
# twice as fast as gzip's default 6 for a few percent more bytes, and zstd 1 was both the
# fastest and the smallest of zstd's levels (benchmarks/results/formats-2026-12-03.md).
GZIP_LEVEL: Final = 3
ZSTD_LEVEL: Final = 1
ZSTD_HINT: Final = "pip install zstandard"

_BLOCK: Final = 1 << 20
_GZIP_MAGIC: Final = b"\x1f\x8b"
_ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"


def compression_of(name: str) -> Compression | None:
    """The compression an output's name asks for (``x.jsonl.gz``: gzip), or None."""
    lowered = name.lower()
    for extension, compression in EXTENSIONS.items():
        if lowered.endswith(extension):
            return compression
    return None


def choose_compression(output: str, asked: str | None, output_format: str) -> Compression:
    """The compression of ``output``: ``asked`` (``--compress``) or what its name says.

    A usage error when they disagree, when the format compresses itself (Parquet), or when
    zstd is asked for and ``zstandard`` is not installed.
    """
    named = compression_of(output) if output != "-" else None
    if asked is not None and asked not in COMPRESSIONS:
        raise UsageError(f"--compress must be one of {', '.join(COMPRESSIONS)}, not {asked!r}")
    if asked is not None and named is not None and asked != named:
        raise UsageError(f"--compress {asked} does not match the output name {output!r}, which says {named}")
    chosen: Compression = named or asked or "none"  # type: ignore[assignment]
    if output_format == "parquet" and chosen != "none":
        raise UsageError(
            "Parquet compresses its own columns (zstd): --compress and .gz/.zst names apply to "
            "jsonl, csv and items"
        )
    if chosen == "zstd":
        require_zstandard()
    return chosen


def require_zstandard() -> None:
    try:
        import zstandard  # noqa: F401
    except ImportError:
        raise UsageError(f"zstd compression needs zstandard, which is not installed: {ZSTD_HINT}") from None


class _Compressor(Protocol):
    def compress(self, data: bytes, /) -> bytes: ...
    def flush(self) -> bytes: ...


def _compressor(compression: Compression) -> _Compressor:
    if compression == "gzip":
        # wbits 31: a gzip header and trailer (no name, no time: the same bytes every run).
        return zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    # imported only when zstd is asked for (start-up)
    import zstandard

    compressor: _Compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj()
    return compressor


class CompressedSink:
    """A sink whose bytes reach ``inner`` compressed."""

    def __init__(self, inner: Upload, compression: Compression) -> None:
        self.inner = inner
        self.compression = compression
        self._compressor = _compressor(compression)
        self._pending: list[bytes] = []
        self._pending_size = 0

    async def open(self) -> None:
        await self.inner.open()

    async def write(self, chunk: bytes) -> None:
        self._pending.append(chunk)
        self._pending_size += len(chunk)
        if self._pending_size >= _BLOCK:
            await self._compress_pending(final=False)

    async def _compress_pending(self, *, final: bool) -> None:
        data = b"".join(self._pending)
        self._pending.clear()
        self._pending_size = 0
        compressed = await anyio.to_thread.run_sync(self._compress, data, final)
        if compressed:
            await self.inner.write(compressed)

    def _compress(self, data: bytes, final: bool) -> bytes:
        compressed = self._compressor.compress(data) if data else b""
        return compressed + self._compressor.flush() if final else compressed

    async def commit(self) -> None:
        try:
            await self._compress_pending(final=True)
        except BaseException:
            await self.inner.abort()
            raise
        await self.inner.commit()

    async def abort(self) -> None:
        self._pending.clear()
        await self.inner.abort()


# --- reading -----------------------------------------------------------------------------------


class _Frame(Protocol):
    """One gzip member or zstd frame being decompressed (zlib's and zstandard's objects)."""

    @property
    def eof(self) -> bool: ...
    @property
    def unused_data(self) -> bytes: ...
    def decompress(self, data: bytes, /) -> bytes: ...


class _Frames:
    """Frames one after another (``cat a.gz b.gz`` is a valid gzip file; so for zstd)."""

    def __init__(self, codec: Compression) -> None:
        self._codec = codec
        self._frame = self._new()
        self.between = False

    def _new(self) -> _Frame:
        if self._codec == "gzip":
            return zlib.decompressobj(31)
        # imported only when zstd is asked for (start-up)
        import zstandard

        frame: _Frame = zstandard.ZstdDecompressor().decompressobj()
        return frame

    def decompress(self, data: bytes) -> bytes:
        out = []
        while data:
            if self.between:
                self._frame, self.between = self._new(), False
            out.append(self._frame.decompress(data))
            if not self._frame.eof:
                break
            data, self.between = self._frame.unused_data, True
        return b"".join(out)


async def decompressed(blocks: AsyncIterator[bytes], name: str) -> AsyncGenerator[bytes, None]:
    """``blocks`` of ``name`` decompressed when they start as gzip or zstd does, else as they are."""
    first = b""
    async for block in blocks:
        first += block
        if len(first) >= len(_ZSTD_MAGIC):
            break
    codec: Compression = (
        "gzip" if first.startswith(_GZIP_MAGIC) else "zstd" if first.startswith(_ZSTD_MAGIC) else "none"
    )
    if codec == "none":
        if first:
            yield first
        async for block in blocks:
            yield block
        return
    if codec == "zstd":
        try:
            import zstandard  # noqa: F401
        except ImportError:
            raise UsageError(
                f"{name} is zstd-compressed, and zstandard is not installed: {ZSTD_HINT}"
            ) from None
    frames = _Frames(codec)
    try:
        yield frames.decompress(first)
        async for block in blocks:
            yield frames.decompress(block)
    except Exception as exc:
        # zlib.error, zstandard.ZstdError: the input is not what its first bytes said.
        if isinstance(exc, zlib.error) or type(exc).__name__ == "ZstdError":
            raise ScanError(f"cannot decompress {name} ({codec}): {exc}") from None
        raise
    if not frames.between:
        raise ScanError(f"{name} ends inside its {codec} data: it is cut short")
