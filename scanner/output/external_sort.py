"""Records in any order in, records in UTF-8 byte order out, in bounded memory.

A server that does not list in byte order (a tree walk's output) still gets an ordered output:
records are held up to a memory budget, then sorted and spilled as a run to an anonymous
temporary file (unlinked at creation, so nothing is left on disk even after a crash), and the
runs are merged at the end. Runs are read back a line of ``_LINE_RECORDS`` records at a time,
so the merge holds a line per run, never a run.

The walk lists every key once, so a key that comes out of the merge twice means the server
listed it twice: the scan refuses rather than write it twice.
"""

from __future__ import annotations

import heapq
import operator
import tempfile
from collections.abc import Iterator, Sequence
from typing import IO, Final

import orjson

from scanner.errors import InconsistentListing
from scanner.records import ObjectRecord, keys_of, records_from_columns

# What a held record costs in memory besides its key's characters: the tuple and its four other
# values (sizes measured with sys.getsizeof on records as the parser makes them).
_RECORD_OVERHEAD: Final = 330
_LINE_RECORDS: Final = 100
# Runs merged at once: each holds a read buffer and a decoded line.
_MERGE_WAYS: Final = 64
_READ_BUFFER: Final = 64 * 1024

_by_key = operator.itemgetter(0)


class ExternalSort:
    def __init__(self, memory_budget: int, temp_dir: str | None = None) -> None:
        self._budget = memory_budget
        self._temp_dir = temp_dir
        self._held: list[ObjectRecord] = []
        self._held_bytes = 0
        self._runs: list[IO[bytes]] = []
        self.spilled_bytes = 0

    @property
    def runs(self) -> int:
        return len(self._runs)

    def add(self, records: Sequence[ObjectRecord]) -> None:
        self._held.extend(records)
        self._held_bytes += sum(map(len, keys_of(records))) + _RECORD_OVERHEAD * len(records)
        if self._held_bytes >= self._budget:
            self._runs.append(self._spill(self._held))
            self._held = []
            self._held_bytes = 0

    def pages(self, size: int = 1000) -> Iterator[list[ObjectRecord]]:
        """Every record added, in key order, ``size`` at a time; each key at most once."""
        self._held.sort(key=_by_key)
        while len(self._runs) >= _MERGE_WAYS:
            # More runs than can be open at once: merge the oldest into one first.
            merged = self._spill(_merge([*map(_read_run, self._runs[:_MERGE_WAYS])]))
            for run in self._runs[:_MERGE_WAYS]:
                run.close()
            self._runs = [merged, *self._runs[_MERGE_WAYS:]]
        streams = [*map(_read_run, self._runs), iter(self._held)]
        page: list[ObjectRecord] = []
        last: str | None = None
        for record in _merge(streams) if self._runs else iter(self._held):
            if record.key == last:
                raise InconsistentListing(
                    f"the server listed {record.key!r} twice; its listing cannot be trusted to be complete"
                )
            last = record.key
            page.append(record)
            if len(page) == size:
                yield page
                page = []
        if page:
            yield page

    def close(self) -> None:
        for run in self._runs:
            run.close()
        self._runs = []
        self._held = []

    def _spill(self, records: Sequence[ObjectRecord] | Iterator[ObjectRecord]) -> IO[bytes]:
        if isinstance(records, list):
            records.sort(key=_by_key)
        file = tempfile.TemporaryFile(dir=self._temp_dir)  # noqa: SIM115 (kept open as a run)
        line: list[tuple[str, int, str, str, str]] = []
        for record in records:
            line.append(tuple(record))  # type: ignore[arg-type]
            if len(line) == _LINE_RECORDS:
                self.spilled_bytes += file.write(orjson.dumps(line) + b"\n")
                line = []
        if line:
            self.spilled_bytes += file.write(orjson.dumps(line) + b"\n")
        file.seek(0)
        return file


def _merge(streams: Sequence[Iterator[ObjectRecord]]) -> Iterator[ObjectRecord]:
    return heapq.merge(*streams, key=_by_key)


def _read_run(file: IO[bytes]) -> Iterator[ObjectRecord]:
    file.seek(0)
    reader = open(file.fileno(), "rb", buffering=_READ_BUFFER, closefd=False)  # noqa: SIM115
    with reader:
        for line in reader:
            rows = orjson.loads(line)
            yield from records_from_columns(*zip(*rows, strict=True))
