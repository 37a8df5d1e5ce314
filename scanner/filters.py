"""Which listed objects to keep: file types, globs, size and date bounds (pure, no I/O).

``RecordFilter.check`` runs once per key on the hot path, so everything that can be worked out
up front (regexes, lower-cased extension sets, the date bounds as strings) is worked out when the
filter is built, and a spec with nothing set short-circuits to a counter increment.

Decisions the brief left open:

- Globs and the hidden-file rule see the key relative to the *scanned folder*: the prefix cut
  back to its last ``/`` (``prefix_base``). For prefix ``scans/2024`` that is ``scans/``, so a
  key ``scans/2024-01/a.dcm`` is seen as ``2024-01/a.dcm``, never as ``-01/a.dcm``.
- Globs are case-sensitive (S3 keys are); file-type extensions are not. A glob without ``/``
  matches top-level keys only: ``*.dcm`` is not ``**/*.dcm``.
- ``items_mode`` turns on the "never an item" rules: zero-byte objects are skipped, and
  hidden/side files are skipped unless ``skip_side_files`` is set to False.
- Folder markers (keys ending in ``/``) are skipped whenever any filtering happens (items mode
  or any criterion set). With nothing set (``is_noop``) every object passes, folder markers and
  zero-byte objects included, so a plain JSON Lines listing is the whole bucket.
- ``skip_side_files`` is tri-state: None (the default) means "as ``items_mode``", so a plain
  listing is not silently thinned while an items list never contains side files.
- Hidden means some component of the relative key starts with ``.``; side files end in
  ``.json`` or ``.txt``.
- With ``dicom_no_extension`` a file counts as DICOM when its name has no extension or its
  "extension" is all digits, because DICOM files are often named by their UID
  (``1.2.840.113619.2.55.3.6046``). It requires ``dicom`` in ``types``.
- ``min_size``/``max_size`` are inclusive; ``modified_after`` is inclusive and
  ``modified_before`` exclusive, so consecutive windows never overlap.
- A record whose ``last_modified`` cannot be parsed fails a date filter (reason ``modified``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Final

from scanner.records import ObjectRecord

TYPE_EXTENSIONS: Final[dict[str, tuple[str, ...]]] = {
    "dicom": (".dcm", ".dicom", ".ima"),
    "nifti": (".nii", ".nii.gz"),
    "nrrd": (".nrrd",),
    "metaimage": (".mha", ".mhd"),
    "image": (".png", ".jpg", ".jpeg", ".bmp"),
    "video": (".mp4", ".avi", ".mov"),
}
TYPE_NAMES: Final = (*TYPE_EXTENSIONS, "any")
SIDE_FILE_EXTENSIONS: Final = (".json", ".txt")

SKIP_REASONS: Final = (
    "folder-marker",
    "zero-byte",
    "hidden",
    "side-file",
    "type",
    "excluded",
    "not-included",
    "size",
    "modified",
)

_EXTENSION_TYPE: Final = {ext: name for name, exts in TYPE_EXTENSIONS.items() for ext in exts}


def prefix_base(prefix: str) -> str:
    """The scanned folder: ``prefix`` cut back to (and including) its last ``/``."""
    return prefix[: prefix.rfind("/") + 1]


def file_extension(name: str) -> str:
    """Lower-cased extension of a file name (``.nii.gz`` counts as one), or ``""``.

    A leading dot does not start an extension (``.dcm`` is a hidden file with none), as in
    ``os.path.splitext``.
    """
    lower = name.lower()
    if lower.endswith(".nii.gz") and len(lower) > 7:
        return ".nii.gz"
    dot = lower.rfind(".")
    return lower[dot:] if dot > 0 else ""


def file_type(key: str) -> str | None:
    """The file-type name of a key's last component by extension, or None."""
    return _EXTENSION_TYPE.get(file_extension(key[key.rfind("/") + 1 :]))


# --- globs ---------------------------------------------------------------------------------


def _translate_class(body: str) -> tuple[str, bool]:
    """Regex for the inside of ``[...]`` (fnmatch rules); True when it can match nothing.

    The body never holds ``/`` (see ``_translate``), but a range such as ``!-0`` spans it, so
    ``/`` is excluded explicitly: a class is one character of one segment.
    """
    negate = body.startswith("!")
    if negate:
        body = body[1:]
    parts: list[str] = []
    members: list[tuple[str, str]] = []
    i = 0
    while i < len(body):
        if i + 2 < len(body) and body[i + 1] == "-":
            low, high = body[i], body[i + 2]
            i += 3
        else:
            low = high = body[i]
            i += 1
        if low > high:  # fnmatch drops reversed ranges
            continue
        members.append((low, high))
        parts.append(re.escape(low) if low == high else f"{re.escape(low)}-{re.escape(high)}")
    if negate:
        return f"[^{''.join(parts)}/]", False
    if not members:
        return "(?!)", True
    return f"(?:(?!/)[{''.join(parts)}])", False


def _translate(pattern: str) -> tuple[str, str | None]:
    """Glob -> regex source, plus the reason it can never match (or None)."""
    out: list[str] = []
    impossible: str | None = None
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            j = i
            while j < n and pattern[j] == "*":
                j += 1
            if j - i == 1:
                out.append("[^/]*")
            elif (i == 0 or pattern[i - 1] == "/") and j < n and pattern[j] == "/":
                out.append("(?:[^/]*/)*")  # "**/": zero or more whole folders
                j += 1
            else:
                out.append(".*")  # "**" as the last segment or inside a segment crosses "/"
            i = j
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            j = i + 1
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] not in "]/":
                j += 1
            if j >= n or pattern[j] == "/":
                # Unclosed within its segment: a literal "[", as fnmatch does per segment (and
                # POSIX fnmatch with FNM_PATHNAME), so "[" never joins two segments.
                out.append(re.escape(c))
                i += 1
                continue
            regex, empty = _translate_class(pattern[i + 1 : j])
            if empty and impossible is None:
                impossible = f"character class {pattern[i : j + 1]!r} matches no character"
            out.append(regex)
            i = j + 1
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out), impossible


def compile_glob(pattern: str) -> re.Pattern[str]:
    """Compile a glob for ``fullmatch`` against a key relative to the scanned folder.

    ``*`` stays within one segment, ``?`` is one character, ``[...]``/``[!...]`` are classes
    (fnmatch rules, never matching ``/``; a ``[`` not closed within its segment is literal),
    ``**/`` is zero or more folders, a final ``**`` matches anything below, and ``**`` inside
    a segment (``**.dcm``) crosses folders. There is no escape character: write ``[*]`` for a
    literal star.
    """
    return re.compile(_translate(pattern)[0], re.DOTALL)


def compile_globs(patterns: Iterable[str]) -> re.Pattern[str] | None:
    """One regex matching when any pattern matches, or None for no patterns."""
    sources = [_translate(p)[0] for p in patterns]
    if not sources:
        return None
    return re.compile("|".join(f"(?:{s})" for s in sources), re.DOTALL)


def glob_never_matches(pattern: str) -> str | None:
    """Why ``pattern`` can never match an object key, or None when it can.

    Caught: the empty pattern; a pattern ending in ``/``, which could only match folder
    markers, and those are never kept once a filter is active; a class matching nothing.
    """
    if not pattern:
        return "an empty pattern matches no key"
    if pattern.endswith("/"):
        return (
            f"{pattern!r} ends with '/' and could only match folder markers, "
            f"which filters always skip; did you mean {pattern + '**'!r}?"
        )
    return _translate(pattern)[1]


# --- CLI value parsing -----------------------------------------------------------------------

_SIZE_RE: Final = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*")
_SIZE_UNITS: Final = {
    "": 1,
    "b": 1,
    **{u: 1000**p for p, u in enumerate(("k", "m", "g", "t", "p"), 1)},
    **{u + "b": 1000**p for p, u in enumerate(("k", "m", "g", "t", "p"), 1)},
    **{u + "i": 1024**p for p, u in enumerate(("k", "m", "g", "t", "p"), 1)},
    **{u + "ib": 1024**p for p, u in enumerate(("k", "m", "g", "t", "p"), 1)},
}


def parse_size(text: str) -> int:
    """``"123"``, ``"10MB"`` (10**7), ``"1GiB"`` (2**30), ``"1.5 kb"`` -> bytes.

    Units are case-insensitive; K/M/G/T/P and KB... are powers of 1000, KiB... of 1024.
    """
    match = _SIZE_RE.fullmatch(text)
    unit = _SIZE_UNITS.get(match.group(2).lower()) if match else None
    if match is None or unit is None:
        raise ValueError(
            f"invalid size {text!r}: expected a number with an optional unit "
            "such as 123, 10MB, 1.5GiB (B, KB, MB, GB, TB, PB, KiB, MiB, GiB, TiB, PiB)"
        )
    try:
        value = Decimal(match.group(1)) * unit
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only decimals
        raise ValueError(f"invalid size {text!r}") from exc
    if value != value.to_integral_value():
        raise ValueError(f"invalid size {text!r}: not a whole number of bytes")
    return int(value)


_DATE_ONLY_RE: Final = re.compile(r"\d{4}-?\d{2}-?\d{2}")


def parse_time(text: str) -> datetime:
    """``"2026-01-01"`` (midnight UTC) or ISO 8601 with an offset -> aware UTC datetime.

    A date and time without an offset is refused rather than guessed: S3 times are UTC and a
    silently local reading would shift the window by hours.
    """
    stripped = text.strip()
    try:
        value = datetime.fromisoformat(stripped)
    except ValueError:
        raise ValueError(
            f"invalid time {text!r}: expected YYYY-MM-DD or ISO 8601 with an offset, "
            "such as 2026-01-01T12:00:00Z or 2026-01-01T12:00:00+02:00"
        ) from None
    if value.tzinfo is None:
        if not _DATE_ONLY_RE.fullmatch(stripped):
            raise ValueError(
                f"invalid time {text!r}: add a UTC offset such as Z or +02:00 "
                "(a date alone means midnight UTC)"
            )
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


# --- the filter -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FilterSpec:
    """What to keep. Defaults keep everything; see the module docstring for the rules."""

    types: tuple[str, ...] = ()
    dicom_no_extension: bool = False
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    min_size: int | None = None
    max_size: int | None = None
    modified_after: datetime | None = None
    modified_before: datetime | None = None
    skip_side_files: bool | None = None
    items_mode: bool = False
    prefix: str = ""

    def __post_init__(self) -> None:
        unknown = [t for t in self.types if t not in TYPE_NAMES]
        if unknown:
            raise ValueError(f"unknown file type {unknown[0]!r}; choose from {', '.join(TYPE_NAMES)}")
        if self.dicom_no_extension and self.types and "dicom" not in self.types:
            raise ValueError("dicom_no_extension needs 'dicom' among the file types")
        for kind, patterns in (("include", self.include), ("exclude", self.exclude)):
            for pattern in patterns:
                problem = glob_never_matches(pattern)
                if problem is not None:
                    raise ValueError(f"{kind} pattern never matches: {problem}")
        for name, size in (("min_size", self.min_size), ("max_size", self.max_size)):
            if size is not None and size < 0:
                raise ValueError(f"{name} must not be negative")
        if self.min_size is not None and self.max_size is not None and self.min_size > self.max_size:
            raise ValueError("min_size is larger than max_size: nothing can match")
        for name, when in (
            ("modified_after", self.modified_after),
            ("modified_before", self.modified_before),
        ):
            if when is not None and when.utcoffset() is None:
                raise ValueError(f"{name} must be timezone-aware")
        after, before = self.modified_after, self.modified_before
        if after is not None and before is not None and after >= before:
            raise ValueError("modified_after is not before modified_before: nothing can match")

    @property
    def effective_skip_side_files(self) -> bool:
        return self.items_mode if self.skip_side_files is None else self.skip_side_files

    @property
    def any_type(self) -> bool:
        return not self.types or "any" in self.types

    @property
    def is_noop(self) -> bool:
        """True when every object passes, so the caller may skip filtering altogether."""
        return not (
            self.items_mode
            or self.effective_skip_side_files
            or not self.any_type
            or self.include
            or self.exclude
            or self.min_size is not None
            or self.max_size is not None
            or self.modified_after is not None
            or self.modified_before is not None
        )


_CANONICAL_TIME_LEN: Final = len("2026-11-28T01:28:50.000Z")


def _ceil_ms_string(when: datetime) -> str:
    """``when`` rounded up to a whole millisecond, in S3's fixed-width LastModified form.

    S3 times have millisecond precision, so for a record time t: t >= when <=> t >= ceil(when),
    and t < when <=> t < ceil(when); equal-width strings then compare like the times.
    """
    when = when.astimezone(UTC)
    extra = when.microsecond % 1000
    try:
        if extra:
            when += timedelta(microseconds=1000 - extra)
    except OverflowError:
        return "\uffff"  # past every representable time
    return (
        f"{when.year:04d}-{when.month:02d}-{when.day:02d}T"
        f"{when.hour:02d}:{when.minute:02d}:{when.second:02d}.{when.microsecond // 1000:03d}Z"
    )


def _parse_record_time(text: str) -> datetime | None:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# Longer than a screen on purpose: one closure over every criterion (see the docstring).
def _build_reason(spec: FilterSpec) -> Callable[[ObjectRecord], str | None]:
    """The per-record test as one closure.

    Built once per filter so the hot path reads closure cells rather than instance attributes
    (several times cheaper in CPython) and unused criteria cost one falsy check each.
    """
    base = prefix_base(spec.prefix)
    base_len = len(base)
    items_mode = spec.items_mode
    skip_side = spec.effective_skip_side_files
    types = None if spec.any_type else frozenset(e for t in spec.types for e in TYPE_EXTENSIONS[t])
    no_extension = spec.dicom_no_extension and "dicom" in spec.types
    include_re = compile_globs(spec.include)
    exclude_re = compile_globs(spec.exclude)
    include = include_re.fullmatch if include_re else None
    exclude = exclude_re.fullmatch if exclude_re else None
    min_size, max_size = spec.min_size, spec.max_size
    sized = min_size is not None or max_size is not None
    after, before = spec.modified_after, spec.modified_before
    dated = after is not None or before is not None
    after_s = _ceil_ms_string(after) if after else None
    before_s = _ceil_ms_string(before) if before else None
    by_name = skip_side or types is not None

    def modified_matches(text: str) -> bool:
        if len(text) == _CANONICAL_TIME_LEN and text[19] == "." and text[23] == "Z":
            return (after_s is None or text >= after_s) and (before_s is None or text < before_s)
        when = _parse_record_time(text)
        if when is None:
            return False
        return (after is None or when >= after) and (before is None or when < before)

    def reason(record: ObjectRecord) -> str | None:
        key = record[0]
        if key[-1:] == "/":
            return "folder-marker"
        if items_mode and record[1] == 0:
            return "zero-byte"
        rel = key[base_len:] if key.startswith(base) else key
        if by_name:
            name = rel[rel.rfind("/") + 1 :]
            if skip_side:
                if rel[:1] == "." or "/." in rel:
                    return "hidden"
                if name.lower().endswith(SIDE_FILE_EXTENSIONS):
                    return "side-file"
            if types is not None:
                ext = file_extension(name)
                if ext not in types and not (no_extension and (not ext or ext[1:].isdigit())):
                    return "type"
        if exclude is not None and exclude(rel):
            return "excluded"
        if include is not None and not include(rel):
            return "not-included"
        if sized:
            size = record[1]
            if (min_size is not None and size < min_size) or (max_size is not None and size > max_size):
                return "size"
        if dated and not modified_matches(record[2]):
            return "modified"
        return None

    return reason


def _keep_all(record: ObjectRecord) -> str | None:
    return None


class RecordFilter:
    """Applies a ``FilterSpec`` per record and counts what it kept and why it skipped."""

    def __init__(self, spec: FilterSpec) -> None:
        self.spec = spec
        self.matched = 0
        self.skipped: dict[str, int] = {}
        self.is_noop = spec.is_noop
        # ``reason(record)`` is ``check`` without counting.
        self.reason: Callable[[ObjectRecord], str | None] = _keep_all if self.is_noop else _build_reason(spec)

    def check(self, record: ObjectRecord) -> str | None:
        """None when ``record`` is kept, else the skip reason (one of ``SKIP_REASONS``)."""
        reason = self.reason(record)
        if reason is None:
            self.matched += 1
        else:
            self.skipped[reason] = self.skipped.get(reason, 0) + 1
        return reason

    def select(self, records: Iterable[ObjectRecord]) -> list[ObjectRecord]:
        """The kept records of a page, counting as ``check`` does."""
        if self.is_noop:
            kept = list(records)
            self.matched += len(kept)
            return kept
        reason = self.reason
        skipped = self.skipped
        kept = []
        for record in records:
            why = reason(record)
            if why is None:
                kept.append(record)
            else:
                skipped[why] = skipped.get(why, 0) + 1
        self.matched += len(kept)
        return kept
