"""The library API: list a bucket from Python code, a notebook or a data pipeline.

::

    import scanner

    for record in scanner.scan("s3://bucket/prefix/", include=["**/*.dcm"]):
        print(record.key, record.size, record.last_modified)

``scan`` (an iterator), ``ascan`` (an async iterator) and ``scan_arrow`` (Arrow record batches)
all run the scan the command line runs, ``scanner.run.pipeline.run_scan``, with the same
options under the same names, into a writer that hands its chunks to the caller's code
(``StreamWriter``) instead of to a file. The scan runs in a thread of its own, with its own
event loop: that works the same from a script, from inside a running event loop (Jupyter's),
and from asyncio or anyio code, and no loop of the caller's is ever blocked by the listing.

- Backpressure: the writer hands over a few pages at a time through a bounded stream, and the
  ordered output waits instead of spilling (``ScanConfig.spill``), so a slow reader stops the
  listing once ``memory_budget`` bytes are waiting; memory never grows with the bucket.
- Stopping early (``break``, ``close()``, an exception in the loop, dropping the iterator)
  cancels the scan and waits for it: its tasks, connections, temporary files and thread are
  gone when the call returns.
- Errors are the ``ScanError`` tree of ``scanner.errors``, raised from the iteration; nothing
  here calls ``sys.exit``.
- The scan lists in this one process (no worker processes: forking a process that runs threads
  is not safe).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections import deque
from collections.abc import AsyncIterator, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Generic, NamedTuple, Self, TypedDict, TypeVar, Unpack

import anyio
import orjson
from anyio.from_thread import BlockingPortal, start_blocking_portal
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from scanner.config import (
    DEFAULT_CONCURRENCY,
    AddressingStyle,
    ConnectionConfig,
    ScanConfig,
    parse_s3_uri,
)
from scanner.errors import ScanError, UsageError, first_failure
from scanner.filters import FilterSpec, RecordFilter, parse_size, parse_time
from scanner.grouping import GroupingMode, GroupingSpec, TaskOrder
from scanner.listing.dialect import check_profile
from scanner.output.items import ItemsError, KeyOrderError, Task, TaskGrouper
from scanner.output.writers import StreamWriter
from scanner.records import ObjectRecord as _Listed
from scanner.run.pipeline import run_scan
from scanner.run.summary import ScanSummary

if TYPE_CHECKING:
    import pyarrow

__all__ = [
    "ArrowScan",
    "AsyncScan",
    "ObjectRecord",
    "Scan",
    "ScanOptions",
    "ScanStats",
    "ascan",
    "group_items",
    "scan",
    "scan_arrow",
]

# Pages (chunks of about a thousand records) the stream holds for a reader that is busy.
_PAGES_AHEAD: Final = 4
_GROUPING_BATCH: Final = 1000


class ObjectRecord(NamedTuple):
    """One object, as the listing described it."""

    key: str
    size: int
    last_modified: datetime
    """When the object was last written: an aware ``datetime`` in UTC (millisecond precision)."""
    etag: str
    """The entity tag without its quotes (the MD5 of the body for a single-part upload)."""
    storage_class: str


@dataclass(frozen=True)
class ScanStats:
    """How far a scan has got: objects listed (before filters), their bytes, requests sent."""

    objects: int
    bytes: int
    requests: int
    retries: int
    matched: int | None
    """Objects that passed the filters, once the scan is finished (None without filters)."""


# --- options ---------------------------------------------------------------------------------


class ScanOptions(TypedDict, total=False):
    """The options of ``scan``, ``ascan`` and ``scan_arrow``: the command line's, as keywords."""

    endpoint_url: str | None
    region: str | None
    profile: str | None
    addressing_style: AddressingStyle
    no_sign_request: bool
    request_payer: bool
    ca_bundle: str | None
    concurrency: int
    max_attempts: int
    unordered: bool
    server_profile: str
    temp_dir: str | None
    memory_budget: int
    types: str | Sequence[str] | None
    dicom_no_extension: bool
    include: str | Sequence[str] | None
    exclude: str | Sequence[str] | None
    min_size: int | str | None
    max_size: int | str | None
    modified_after: datetime | str | None
    modified_before: datetime | str | None


def _patterns(name: str, value: str | Sequence[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not all(isinstance(item, str) for item in value):
        raise UsageError(f"{name} must be a glob or a list of globs")
    return tuple(value)


def _size(name: str, value: int | str | None) -> int | None:
    if value is None or isinstance(value, int):
        return value
    try:
        return parse_size(value)
    except ValueError as exc:
        raise UsageError(f"{name}: {exc}") from None


def _time(name: str, value: datetime | str | None) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise UsageError(f"{name} must be an aware datetime (S3 times are UTC): give it a tzinfo")
        return value.astimezone(UTC)
    try:
        return parse_time(value)
    except ValueError as exc:
        raise UsageError(f"{name}: {exc}") from None


def _positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{name} must be a whole number of at least 1, not {value!r}")
    return value


# Longer than a screen: one check and one field per keyword option, in the order documented.
def scan_config(
    uri: str,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    profile: str | None = None,
    addressing_style: AddressingStyle = "auto",
    no_sign_request: bool = False,
    request_payer: bool = False,
    ca_bundle: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    max_attempts: int = 10,
    unordered: bool = False,
    server_profile: str = "auto",
    temp_dir: str | None = None,
    memory_budget: int = 16 * 1024 * 1024,
    types: str | Sequence[str] | None = None,
    dicom_no_extension: bool = False,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    min_size: int | str | None = None,
    max_size: int | str | None = None,
    modified_after: datetime | str | None = None,
    modified_before: datetime | str | None = None,
) -> ScanConfig:
    """The ``ScanConfig`` the command line would build from the same options.

    Checked as the command line checks them: anything unusable is a ``UsageError`` now, before
    any request.
    """
    location = parse_s3_uri(uri)
    if addressing_style not in ("auto", "path", "virtual"):
        raise UsageError(f"addressing_style must be auto, path or virtual, not {addressing_style!r}")
    if ca_bundle is not None and not os.path.isfile(ca_bundle):
        raise UsageError(f"CA bundle {ca_bundle!r} does not exist")
    if temp_dir is not None and not os.path.isdir(temp_dir):
        raise UsageError(f"temp_dir {temp_dir!r} is not a directory")
    connection = ConnectionConfig(
        endpoint_url=endpoint_url,
        region=region,
        profile=profile,
        addressing_style=addressing_style,
        no_sign_request=no_sign_request,
        request_payer=request_payer,
        ca_bundle=ca_bundle,
        concurrency=_positive("concurrency", concurrency),
        max_attempts=_positive("max_attempts", max_attempts),
    )
    try:
        filters = FilterSpec(
            types=tuple(dict.fromkeys(_patterns("types", types))),
            dicom_no_extension=dicom_no_extension,
            include=_patterns("include", include),
            exclude=_patterns("exclude", exclude),
            min_size=_size("min_size", min_size),
            max_size=_size("max_size", max_size),
            modified_after=_time("modified_after", modified_after),
            modified_before=_time("modified_before", modified_before),
            prefix=location.prefix,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    config = ScanConfig(
        location=location,
        connection=connection,
        ordered=not unordered,
        memory_budget=_positive("memory_budget", memory_budget),
        spill=False,
        temp_dir=temp_dir,
        filters=None if filters.is_noop else filters,
        server_profile=server_profile,
    )
    check_profile(config)
    return config


# --- the scan's thread -----------------------------------------------------------------------


def public_error(exc: BaseException) -> BaseException:
    """What a failed scan raises to the caller: the ``ScanError`` inside ``exc``."""
    found = first_failure(exc)
    if isinstance(found, ScanError):
        return found
    if isinstance(found, KeyOrderError):
        return UsageError(str(found))
    if isinstance(found, ItemsError):
        return ScanError(str(found))
    if isinstance(found, Exception):
        error = ScanError(f"unexpected {type(found).__name__}: {found}")
        error.__cause__ = found
        return error
    return found


class _ScanThread:
    """One scan in a thread with its own event loop, its pages handed over one at a time.

    ``start`` starts it; ``next_page`` (or ``next_page_async``) returns the next JSON Lines
    chunk, or None at the end, raising the scan's error if it failed; ``stop`` cancels it if it
    is still running and waits until it has let go of everything. All but ``start`` may be
    called from any thread; ``stop`` more than once.
    """

    def __init__(self, config: ScanConfig) -> None:
        self._config = config
        self.summary = ScanSummary()
        self._lock = threading.Lock()
        self._portal_context: Any = None
        self._portal: BlockingPortal | None = None
        self._future: Future[None] | None = None
        self._send: MemoryObjectSendStream[bytes] | None = None
        self._receive: MemoryObjectReceiveStream[bytes] | None = None
        self._error: BaseException | None = None
        self._stopped = False

    def start(self) -> None:
        with self._lock:
            if self._portal is not None or self._stopped:
                return
            context = start_blocking_portal("asyncio", {"use_uvloop": True}, name="scanner-scan")
            self._portal = context.__enter__()
            self._portal_context = context
            self._send, self._receive = anyio.create_memory_object_stream[bytes](_PAGES_AHEAD)
            self._future = self._portal.start_task_soon(self._run, self._send)

    async def _run(self, send: MemoryObjectSendStream[bytes]) -> None:
        try:
            with send:
                await run_scan(self._config, summary=self.summary, writer=lambda: StreamWriter(send))
        except Exception as exc:  # noqa: BLE001 - every failure goes to the reader
            # Kept for the reader, who meets it after the pages that came before it.
            self._error = exc

    def next_page(self) -> bytes | None:
        if self._portal is None or self._receive is None:
            return None
        try:
            return self._portal.call(self._receive.receive)
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            self._finish()
            return None

    async def next_page_async(self) -> bytes | None:
        if self._portal is None or self._receive is None:
            return None
        try:
            return await self._portal.call_async(self._receive.receive)
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            await anyio.to_thread.run_sync(self._finish)
            return None

    def _finish(self) -> None:
        self.stop()
        if self._error is not None:
            error, self._error = self._error, None
            raise public_error(error)

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            portal, context = self._portal, self._portal_context
            if portal is None:
                return
            assert self._future is not None
            self._future.cancel()
            try:
                portal.call(self._close_streams)
            finally:
                # Waits for the scan task to finish, stops the loop and joins the thread.
                context.__exit__(None, None, None)
            self._portal = None

    def _close_streams(self) -> None:
        for stream in (self._send, self._receive):
            if stream is not None:
                stream.close()

    def stats(self) -> ScanStats:
        summary = self.summary
        return ScanStats(
            objects=summary.objects,
            bytes=summary.bytes,
            requests=summary.requests.requests,
            retries=summary.requests.retries,
            matched=summary.matched,
        )


def _utc(text: str) -> datetime:
    # The parser wrote every time as UTC with milliseconds: 2026-11-28T01:28:50.000Z.
    return datetime.fromisoformat(text)


def records_from_jsonl(chunk: bytes) -> list[ObjectRecord]:
    """The records of one chunk of JSON Lines (as ``scanner.records.encode_jsonl`` writes)."""
    body = chunk.rstrip(b"\n")
    if not body:
        return []
    rows = orjson.loads(b"[" + body.replace(b"\n", b",") + b"]")
    return [
        ObjectRecord(row["key"], row["size"], _utc(row["last_modified"]), row["etag"], row["storage_class"])
        for row in rows
    ]


# --- what callers get ------------------------------------------------------------------------

_Item = TypeVar("_Item")


class _ThreadedScan(Generic[_Item]):
    """An iterator over what a scan on its own thread yields; a context manager that cancels it."""

    def __init__(self, thread: _ScanThread, items: Generator[_Item, None, None]) -> None:
        self._thread = thread
        self._items = items

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> _Item:
        return next(self._items)

    def close(self) -> None:
        """Stop the scan (if it is still running) and wait until it has let go of everything."""
        self._items.close()
        self._thread.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    @property
    def stats(self) -> ScanStats:
        return self._thread.stats()


class Scan(_ThreadedScan[ObjectRecord]):
    """The records of one scan, in key order (unless ``unordered``), as they are listed.

    Iterate it once. It is also a context manager; ``close()`` (or leaving the ``with`` block,
    or dropping the iterator) cancels a scan that is still running.
    """

    def __init__(self, config: ScanConfig) -> None:
        thread = _ScanThread(config)
        super().__init__(thread, self._generate(thread))

    @staticmethod
    def _generate(thread: _ScanThread) -> Generator[ObjectRecord, None, None]:
        # Static: a generator holding the iterator would keep it alive past a ``break``.
        try:
            thread.start()
            while (page := thread.next_page()) is not None:
                yield from records_from_jsonl(page)
        finally:
            thread.stop()


class AsyncScan(AsyncIterator[ObjectRecord]):
    """The records of one scan for ``async for``; ``aclose()`` (or ``async with``) stops it."""

    def __init__(self, config: ScanConfig) -> None:
        self._thread = _ScanThread(config)
        self._pending: deque[ObjectRecord] = deque()
        self._ended = False
        # Dropped without aclose() (a plain ``break``): stop the scan then, synchronously.
        self._finalizer = weakref.finalize(self, self._thread.stop)

    def __aiter__(self) -> AsyncScan:
        return self

    async def __anext__(self) -> ObjectRecord:
        while not self._pending:
            if self._ended:
                raise StopAsyncIteration
            self._thread.start()
            try:
                page = await self._thread.next_page_async()
            except BaseException:
                self._ended = True
                await self.aclose()
                raise
            if page is None:
                self._ended = True
                raise StopAsyncIteration
            self._pending.extend(records_from_jsonl(page))
        return self._pending.popleft()

    async def aclose(self) -> None:
        """Stop the scan (if it is still running) and wait until it has let go of everything."""
        self._ended = True
        self._pending.clear()
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._finalizer)

    async def __aenter__(self) -> AsyncScan:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.aclose()

    @property
    def stats(self) -> ScanStats:
        return self._thread.stats()


class ArrowScan(_ThreadedScan["pyarrow.RecordBatch"]):
    """The records of one scan as Arrow record batches of up to ``batch_size`` rows."""

    def __init__(self, config: ScanConfig, batch_size: int) -> None:
        # imported on first use (start-up of `import scanner`)
        from scanner.output.arrow import record_schema

        self.schema = record_schema()
        thread = _ScanThread(config)
        super().__init__(thread, self._generate(thread, self.schema, batch_size))

    @staticmethod
    def _generate(
        thread: _ScanThread, schema: pyarrow.Schema, batch_size: int
    ) -> Generator[pyarrow.RecordBatch, None, None]:
        # imported on first use (start-up of `import scanner`)
        from scanner.output.arrow import jsonl_table

        pending: list[bytes] = []
        rows = 0
        try:
            thread.start()
            while (page := thread.next_page()) is not None:
                pending.append(page)
                rows += page.count(b"\n")
                if rows >= batch_size:
                    table = jsonl_table(b"".join(pending), schema).combine_chunks()
                    pending, rows = [], 0
                    yield from table.to_batches(max_chunksize=batch_size)
            if pending:
                table = jsonl_table(b"".join(pending), schema).combine_chunks()
                yield from table.to_batches(max_chunksize=batch_size)
        finally:
            thread.stop()


def scan(uri: str, **options: Unpack[ScanOptions]) -> Scan:
    """The objects under ``s3://BUCKET[/PREFIX]``, one ``ObjectRecord`` at a time.

    Options are the command line's, in Python spelling (see ``scan_config``): ``endpoint_url``,
    ``region``, ``profile``, ``concurrency``, ``unordered``, ``include``, ``min_size``, ...
    Raises ``UsageError`` at once for an unusable option; errors of the scan itself come out of
    the iteration, all of them ``ScanError``.
    """
    return Scan(scan_config(uri, **options))


def ascan(uri: str, **options: Unpack[ScanOptions]) -> AsyncScan:
    """``scan`` for ``async for`` (asyncio or anyio): the caller's loop never waits for the listing."""
    return AsyncScan(scan_config(uri, **options))


def scan_arrow(uri: str, *, batch_size: int = 65_536, **options: Unpack[ScanOptions]) -> ArrowScan:
    """``scan`` as ``pyarrow.RecordBatch`` es of up to ``batch_size`` rows (``bucket-scanner[arrow]``).

    Columns: ``key`` (string), ``size`` (int64), ``last_modified`` (timestamp[ms, tz=UTC]),
    ``etag``, ``storage_class`` (strings).
    """
    # imported on first use (start-up of `import scanner`)
    from scanner.output.arrow import require_pyarrow

    require_pyarrow("scan_arrow")
    return ArrowScan(scan_config(uri, **options), _positive("batch_size", batch_size))


def group_items(
    records: Iterable[ObjectRecord],
    *,
    mode: GroupingMode = "series",
    prefix: str = "",
    study_depth: int = 1,
    name_template: str | None = None,
    dedupe_names: bool = False,
    task_order: TaskOrder = "first-item",
    keep_side_files: bool = False,
    legacy_items: bool = False,
) -> Iterator[dict[str, Any]]:
    """RedBrick tasks from records in key order, as ``scanner scan --format items`` makes them.

    Each task is the JSON object an items list holds (``{"name": ..., "series": [...]}``, or
    ``{"name": ..., "items": [...]}`` with ``legacy_items``), yielded as soon as it is
    complete. ``prefix`` is the one the records were listed under. Folder markers, empty
    objects and (unless ``keep_side_files``) hidden and ``.json``/``.txt`` files are left out,
    as in an items list. Records out of key order are a ``UsageError``; colliding task names
    (without ``dedupe_names``) a ``ScanError``.
    """
    try:
        spec = GroupingSpec(
            mode=mode,
            study_depth=study_depth,
            prefix=prefix,
            name_template=name_template,
            dedupe_names=dedupe_names,
            order=task_order,
        )
        selection = RecordFilter(
            FilterSpec(items_mode=True, skip_side_files=False if keep_side_files else None, prefix=prefix)
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return _group(records, TaskGrouper(spec), selection, legacy_items)


def _documents(tasks: list[Task], legacy: bool) -> Iterator[dict[str, Any]]:
    for task in tasks:
        # Through JSON: plain lists and dicts, exactly what an items list holds.
        document: dict[str, Any] = orjson.loads(
            orjson.dumps(task.to_legacy_json() if legacy else task.to_json())
        )
        yield document


def _group(
    records: Iterable[ObjectRecord], grouper: TaskGrouper, selection: RecordFilter, legacy: bool
) -> Iterator[dict[str, Any]]:
    batch: list[_Listed] = []
    try:
        for record in records:
            # Grouping reads keys and sizes only; the time is not needed as text.
            batch.append(_Listed(record.key, record.size, "", record.etag, record.storage_class))
            if len(batch) == _GROUPING_BATCH:
                tasks = grouper.feed_keys(r.key for r in selection.select(batch))
                batch = []
                yield from _documents(tasks, legacy)
        tasks = grouper.feed_keys(r.key for r in selection.select(batch))
        tasks.extend(grouper.finish())
        yield from _documents(tasks, legacy)
    except ItemsError as exc:
        raise public_error(exc) from exc
