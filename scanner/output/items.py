"""Grouping listed objects into RedBrick AI tasks, and encoding items lists (pure, no I/O).

Records arrive in key order (UTF-8 byte order is ``str`` order), already filtered. A
``TaskGrouper`` turns them into ``Task`` objects as soon as each group is complete; an
``ItemsListEncoder`` turns tasks into ``bytes`` chunks of one JSON array, one task per line.

Modes (``GroupingSpec.mode``):

- ``file``: one task per object, named by its key relative to the scanned folder.
- ``series``: one task per folder; the objects directly in it form its series. A folder's
  direct files are *not* contiguous in key order (``F/a.dcm``, ``F/sub/x.dcm``, ``F/z.dcm``),
  but every key starting with ``F`` is, so a group closes once a key arrives that does not start
  with its folder. The open groups are then always ancestors of the current key's folder, so
  they form a stack.
- ``study``: one task per folder ``study_depth`` levels below the scanned folder (0 means the
  scanned folder itself: one task). Each folder under it holding objects becomes a series named
  by its path relative to the study folder; objects directly in the study folder form the
  series named ``"."``. Objects above that depth are skipped and counted as
  ``"above-study-depth"``.

Decisions the brief left open:

- Volume files (NIfTI, NRRD, MetaImage) are one volume each, so in series and study mode each
  is a series of its own, named by its path relative to the task folder; NIfTI items are a
  single string (RedBrick requires it), the others a one-element list, as in file mode. The
  remaining objects of a folder (DICOM slices, images) share one list series.
- Series are ordered by their first item key. In file and series mode a task with one series
  leaves it unnamed (as in RedBrick's examples); with several, the folder's list series is
  named ``"."``. Study mode always names its series.
- The scanned folder is the prefix cut back to its last ``/`` (``filters.prefix_base``); a
  group at that folder itself (series mode) or a study at depth 0 is named after the folder's
  last component, or ``"."`` at the bucket root.
- Tasks come out in the order of their first item key (``order="first-item"``): a completed
  task waits while an earlier-opened ancestor folder is still open. A stray object high up in
  the tree therefore holds back every task below it until the stream leaves that folder;
  ``order="completion"`` emits each task as soon as it closes (still deterministic) for
  listings where that would hold too much.
- Items of open groups are kept in memory as the record's own key strings (no copies); a
  100k-item series costs its key strings plus one pointer each. Nothing spills to disk: this
  module does no I/O.
- Input is checked, not trusted: a key that is not strictly greater than the previous one, or
  lies outside the scanned folder, raises ``KeyOrderError`` (grouping would silently split a
  folder otherwise); folder markers are skipped and counted as ``"folder-marker"``.
- The legacy format (``[{"name", "items"}]``) flattens every series of a task into one list in
  key order. ``RollingItemsListEncoder`` splits output into files of at most N tasks, each a
  complete JSON array.
- Task names are unique across the whole run: the grouper remembers each emitted name and the
  folder or key that produced it (memory grows with the number of tasks). A collision raises
  ``NameCollisionError`` naming both, unless ``dedupe_names``: later ones then get `` (2)``,
  `` (3)``... in emission order. Series names within a task follow the same rule.

Name templates (``str.format`` syntax, format specs allowed, e.g. ``{index:05d}``):
``{path}`` the default name (folder or key relative to the scanned folder), ``{folder}`` its
last component, ``{parent}`` the rest (``""`` at top level), ``{stem}`` ``{folder}`` without its
extension (files only; ``.nii.gz`` is one extension), ``{key}`` the full bucket path of the
object or folder (no trailing ``/``; ``"."`` for the bucket root), ``{index}`` the 1-based task
number in output order, ``{study}`` (study mode) and ``{series}`` (series mode) aliases of
``{path}``.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import orjson

from scanner.filters import file_extension, prefix_base
from scanner.grouping import GroupingSpec, ItemsFormat
from scanner.records import ObjectRecord

_VOLUME_EXTENSIONS: Final = frozenset({".nii", ".nii.gz", ".nrrd", ".mha", ".mhd"})
_NIFTI_EXTENSIONS: Final = frozenset({".nii", ".nii.gz"})


class ItemsError(Exception):
    """Base of the errors grouping can raise."""


class NameCollisionError(ItemsError):
    """Two tasks (or two series of one task) would get the same name."""

    def __init__(self, name: str, first: str, second: str, scope: str = "task") -> None:
        hint = (
            "give --name-template a pattern that tells them apart (such as '{key}'), or --dedupe-names"
            if scope == "task"
            else "--dedupe-names gives the later one a ' (2)' suffix"
        )
        super().__init__(f"{scope} name {name!r} of {second!r} is already used by {first!r}; {hint}")
        self.name = name
        self.first = first
        self.second = second
        self.scope = scope


class KeyOrderError(ItemsError):
    """Records did not arrive in strictly increasing key order, or lie outside the prefix."""


class EmptyNameError(ItemsError):
    """A name template rendered an empty task name."""


@dataclass(frozen=True, slots=True)
class Series:
    """One series: a single item path (a NIfTI volume) or the item paths in key order."""

    items: str | tuple[str, ...]
    name: str | None = None

    @property
    def first_item(self) -> str:
        return self.items if isinstance(self.items, str) else self.items[0]

    def to_json(self) -> dict[str, object]:
        if self.name is None:
            return {"items": self.items}
        return {"name": self.name, "items": self.items}


@dataclass(frozen=True, slots=True)
class Task:
    """One RedBrick task; ``series`` is ordered by first item key."""

    name: str
    series: tuple[Series, ...]
    # Task metaData (string to string), e.g. what an incremental run says changed.
    meta_data: tuple[tuple[str, str], ...] = ()

    @property
    def first_item(self) -> str:
        return self.series[0].first_item

    def items(self) -> list[str]:
        """Every item path of the task in key order."""
        out: list[str] = []
        for series in self.series:
            if isinstance(series.items, str):
                out.append(series.items)
            else:
                out.extend(series.items)
        if len(self.series) > 1:
            out.sort()
        return out

    def to_json(self) -> dict[str, object]:
        document: dict[str, object] = {"name": self.name, "series": [s.to_json() for s in self.series]}
        if self.meta_data:
            document["metaData"] = dict(self.meta_data)
        return document

    def to_legacy_json(self) -> dict[str, object]:
        return {"name": self.name, "items": self.items()}


class _NameBook:
    """Hands out unique names, remembering who owns each one."""

    __slots__ = ("_dedupe", "_next", "_owners", "_scope")

    def __init__(self, dedupe: bool, scope: str) -> None:
        self._dedupe = dedupe
        self._scope = scope
        self._owners: dict[str, str] = {}
        self._next: dict[str, int] = {}

    def claim(self, name: str, owner: str) -> str:
        first = self._owners.get(name)
        if first is None:
            self._owners[name] = owner
            return name
        if not self._dedupe:
            raise NameCollisionError(name, first, owner, self._scope)
        n = self._next.get(name, 2)
        while (candidate := f"{name} ({n})") in self._owners:
            n += 1
        self._next[name] = n + 1
        self._owners[candidate] = owner
        return candidate


class _Group:
    """An open task: its folder (a full key prefix ending in "/", or "") and its items."""

    __slots__ = ("first_key", "folder", "lists", "volumes")

    def __init__(self, folder: str, first_key: str) -> None:
        self.folder = folder
        self.first_key = first_key
        self.lists: dict[str, list[str]] = {}  # series folder (full prefix) -> keys
        self.volumes: list[str] = []

    def add(self, key: str, series_folder: str) -> None:
        if file_extension(key[len(series_folder) :]) in _VOLUME_EXTENSIONS:
            self.volumes.append(key)
        else:
            keys = self.lists.get(series_folder)
            if keys is None:
                self.lists[series_folder] = [key]
            else:
                keys.append(key)


def _file_series(key: str, name: str | None) -> Series:
    """A series of one file: NIfTI items must be a single string, the rest a list of one."""
    if file_extension(key[key.rfind("/") + 1 :]) in _NIFTI_EXTENSIONS:
        return Series(key, name)
    return Series((key,), name)


class TaskGrouper:
    """Streams key-ordered records into tasks; see the module docstring for the rules."""

    def __init__(self, spec: GroupingSpec) -> None:
        self.spec = spec
        self.skipped: dict[str, int] = {}
        self.tasks_emitted = 0
        self._base = prefix_base(spec.prefix)
        self._base_len = len(self._base)
        tail = self._base[:-1].rsplit("/", 1)[-1]
        self._root_name = tail or spec.root_name or "."
        self._last_key: str | None = None
        self._stack: list[_Group] = []  # open groups, outermost (earliest first key) first
        self._done: list[tuple[str, _Group]] = []  # closed, awaiting output: a heap
        self._out: list[Task] = []
        self._names = _NameBook(spec.dedupe_names, "task")

    def feed(self, record: ObjectRecord) -> list[Task]:
        """Add one record; return the tasks that became complete (possibly none)."""
        self._add(record.key)
        return self._take()

    def feed_page(self, records: Iterable[ObjectRecord]) -> list[Task]:
        """Add a page of records; return the tasks that became complete."""
        add = self._add
        for record in records:
            add(record.key)
        return self._take()

    def feed_keys(self, keys: Iterable[str]) -> list[Task]:
        """Add a page of keys (grouping needs nothing else); return the tasks that became complete."""
        add = self._add
        for key in keys:
            add(key)
        return self._take()

    def finish(self) -> list[Task]:
        """End of input: close every open group and return the remaining tasks."""
        while self._stack:
            self._close(self._stack.pop())
        self._release()
        return self._take()

    def _take(self) -> list[Task]:
        out, self._out = self._out, []
        return out

    def _add(self, key: str) -> None:
        last = self._last_key
        if last is not None and key <= last:
            raise KeyOrderError(f"key {key!r} arrived after {last!r}: keys must be in order")
        if not key.startswith(self._base):
            raise KeyOrderError(f"key {key!r} is outside the scanned folder {self._base!r}")
        self._last_key = key
        if key.endswith("/"):
            self._skip("folder-marker")
            return
        mode = self.spec.mode
        if mode == "file":
            self._emit_file(key)
            return
        stack = self._stack
        if mode == "series":
            folder = key[: key.rfind("/") + 1]
            while stack and not key.startswith(stack[-1].folder):
                self._close(stack.pop())
            if not stack or stack[-1].folder != folder:
                stack.append(_Group(folder, key))
            stack[-1].add(key, folder)
        else:
            if stack and key.startswith(stack[-1].folder):
                group = stack[-1]
            else:
                if stack:  # one study at a time: this key is past the open one
                    self._close(stack.pop())
                study = self._study_folder(key)
                if study is None:
                    self._skip("above-study-depth")
                    self._release()
                    return
                group = _Group(study, key)
                stack.append(group)
            group.add(key, key[: key.rfind("/") + 1])
        if self._done:
            self._release()

    def _skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def _study_folder(self, key: str) -> str | None:
        end = self._base_len - 1
        for _ in range(self.spec.study_depth):
            end = key.find("/", end + 1)
            if end < 0:
                return None
        return key[: end + 1]

    def _close(self, group: _Group) -> None:
        if self.spec.order == "completion":
            self._emit(group)
        else:
            heapq.heappush(self._done, (group.first_key, group))

    def _release(self) -> None:
        """Emit closed groups once no open group has an earlier first key.

        Any group opened later starts after every key seen so far, so only the outermost open
        group (the bottom of the stack, which opened first) can precede a closed one.
        """
        done = self._done
        if self._stack:
            limit = self._stack[0].first_key
            while done and done[0][0] < limit:
                self._emit(heapq.heappop(done)[1])
        else:
            while done:
                self._emit(heapq.heappop(done)[1])

    def _emit_file(self, key: str) -> None:
        name = self._task_name(key[self._base_len :], key, is_file=True)
        self._out.append(Task(name, (_file_series(key, None),)))

    def _emit(self, group: _Group) -> None:
        folder = group.folder
        rel = folder[self._base_len : -1] if folder != self._base else ""
        full = folder[:-1] if folder else "."
        study = self.spec.mode == "study"
        names = None
        if study or len(group.lists) + len(group.volumes) > 1:
            names = _NameBook(self.spec.dedupe_names, "series")
        series: list[Series] = []
        for series_folder, keys in group.lists.items():
            name = None
            if names is not None:
                sub = series_folder[len(folder) : -1] if series_folder != folder else ""
                name = names.claim(sub or ".", series_folder)
            series.append(Series(tuple(keys), name))
        for key in group.volumes:
            name = names.claim(key[len(folder) :], key) if names is not None else None
            series.append(_file_series(key, name))
        if len(series) > 1:
            series.sort(key=lambda s: s.first_item)
        name = self._task_name(rel, full, is_file=False)
        self._out.append(Task(name, tuple(series)))

    def _task_name(self, rel: str, full: str, *, is_file: bool) -> str:
        self.tasks_emitted += 1
        path = rel or self._root_name
        template = self.spec.name_template
        if template is None:
            name = path
        else:
            parent, _, last = path.rpartition("/")
            stem = last
            if is_file:
                ext = file_extension(last)
                stem = last[: len(last) - len(ext)] if ext else last
            fields: dict[str, object] = {
                "path": path,
                "folder": last,
                "parent": parent,
                "stem": stem,
                "key": full,
                "index": self.tasks_emitted,
                "study": path,
                "series": path,
            }
            name = template.format_map(fields)
            if not name:
                raise EmptyNameError(f"name template {template!r} gave {full!r} an empty name")
        return self._names.claim(name, full)


class ItemsListEncoder:
    """Encodes tasks as one JSON array, one task per line, so it streams and diffs well.

    ``start() + encode(t1) + encode(t2) + end()`` is ``[\n{t1},\n{t2}\n]\n``; with no tasks
    it is ``[]\n``. Bytes are deterministic (orjson, keys in a fixed order).
    """

    def __init__(self, fmt: ItemsFormat = "current") -> None:
        if fmt not in ("current", "legacy"):
            raise ValueError(f"unknown items list format {fmt!r}; use current or legacy")
        self.legacy = fmt == "legacy"
        self.count = 0

    def start(self) -> bytes:
        return b"["

    def encode(self, task: Task) -> bytes:
        data = orjson.dumps(task.to_legacy_json() if self.legacy else task.to_json())
        self.count += 1
        return (b"\n" if self.count == 1 else b",\n") + data

    def encode_many(self, tasks: Iterable[Task]) -> bytes:
        return b"".join([self.encode(task) for task in tasks])

    def end(self) -> bytes:
        return b"\n]\n" if self.count else b"]\n"


@dataclass(frozen=True, slots=True)
class ItemsListChunk:
    """Bytes for output file number ``file_index`` (from 0); ``closes_file`` ends that file."""

    file_index: int
    data: bytes
    closes_file: bool


class RollingItemsListEncoder:
    """Splits an items list into files of at most ``max_tasks_per_file`` tasks.

    Each file is a complete JSON array. A file is closed right after its last task, so the sink
    can commit it at once and no empty trailing file appears; with no tasks at all, ``finish``
    yields one file holding ``[]``. ``max_tasks_per_file=None`` writes a single file.
    """

    def __init__(self, fmt: ItemsFormat = "current", max_tasks_per_file: int | None = None) -> None:
        if max_tasks_per_file is not None and max_tasks_per_file < 1:
            raise ValueError("max_tasks_per_file must be at least 1")
        self._max = max_tasks_per_file
        self._fmt: ItemsFormat = fmt
        ItemsListEncoder(fmt)  # validate the format now, not at the first task
        self._encoder: ItemsListEncoder | None = None
        self.files = 0

    def encode(self, task: Task) -> list[ItemsListChunk]:
        encoder = self._encoder
        head = b""
        if encoder is None:
            encoder = self._encoder = ItemsListEncoder(self._fmt)
            self.files += 1
            head = encoder.start()
        data = head + encoder.encode(task)
        if self._max is not None and encoder.count >= self._max:
            self._encoder = None
            return [ItemsListChunk(self.files - 1, data + encoder.end(), True)]
        return [ItemsListChunk(self.files - 1, data, False)]

    def encode_many(self, tasks: Iterable[Task]) -> list[ItemsListChunk]:
        """Chunks for several tasks, merged per file."""
        out: list[ItemsListChunk] = []
        for task in tasks:
            for chunk in self.encode(task):
                if out and out[-1].file_index == chunk.file_index and not out[-1].closes_file:
                    last = out.pop()
                    chunk = ItemsListChunk(chunk.file_index, last.data + chunk.data, chunk.closes_file)
                out.append(chunk)
        return out

    def finish(self) -> list[ItemsListChunk]:
        encoder = self._encoder
        if encoder is not None:
            self._encoder = None
            return [ItemsListChunk(self.files - 1, encoder.end(), True)]
        if self.files == 0:
            self.files = 1
            empty = ItemsListEncoder(self._fmt)
            return [ItemsListChunk(0, empty.start() + empty.end(), True)]
        return []
