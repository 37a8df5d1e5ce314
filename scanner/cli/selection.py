"""Command-line options that choose objects (filters) and shape items lists (grouping).

Kept apart from ``cli`` so each stays readable; only the CLI imports this module.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from scanner.config import S3Location
from scanner.errors import UsageError
from scanner.filters import TYPE_NAMES, FilterSpec, parse_size, parse_time
from scanner.grouping import GroupingSpec

# Options that only mean something for --format items.
_ITEMS_ONLY = (
    "group",
    "study_depth",
    "name_template",
    "dedupe_names",
    "legacy_items",
    "max_tasks_per_file",
    "task_order",
)


def add_selection_arguments(scan: argparse.ArgumentParser, positive_int: Callable[[str], int]) -> None:
    items = scan.add_argument_group("items lists (--format items)")
    items.add_argument(
        "--group", choices=("file", "series", "study"), help="one task per file, folder (default) or study"
    )
    items.add_argument(
        "--study-depth",
        type=positive_int,
        help="with --group study: folder depth of studies below the prefix (default 1)",
    )
    items.add_argument(
        "--name-template",
        help="task names, e.g. '{path}' (default), '{key}', '{folder}', 'case-{index:05d}'",
    )
    items.add_argument(
        "--dedupe-names",
        action="store_true",
        default=None,
        help="give colliding task names a stable ' (2)' suffix instead of failing",
    )
    items.add_argument(
        "--legacy-items", action="store_true", default=None, help='the older [{"name", "items"}] format'
    )
    items.add_argument(
        "--max-tasks-per-file", type=positive_int, help="split the items list into numbered files of N tasks"
    )
    items.add_argument(
        "--task-order",
        choices=("first-item", "completion"),
        help="tasks in the key order of their first item (default), or as each folder completes",
    )
    chosen = scan.add_argument_group("filters (all formats)")
    chosen.add_argument(
        "--type",
        action="append",
        choices=TYPE_NAMES,
        help="keep files of this type (repeatable; default any, items lists too): " + ", ".join(TYPE_NAMES),
    )
    chosen.add_argument(
        "--dicom-no-extension",
        action="store_true",
        default=None,
        help="with --type dicom: also files without an extension (or with an all-digit one)",
    )
    chosen.add_argument(
        "--include", action="append", help="keep keys matching this glob, relative to the prefix (repeatable)"
    )
    chosen.add_argument(
        "--exclude", action="append", help="drop keys matching this glob, relative to the prefix (repeatable)"
    )
    chosen.add_argument("--min-size", help="smallest size kept, e.g. 1024, 10KB, 1MiB")
    chosen.add_argument("--max-size", help="largest size kept")
    chosen.add_argument("--modified-after", help="keep objects modified at or after this time (ISO 8601)")
    chosen.add_argument("--modified-before", help="keep objects modified before this time (ISO 8601)")
    chosen.add_argument(
        "--keep-side-files",
        action="store_true",
        default=None,
        help="items lists: keep hidden files and .json/.txt side files (skipped by default)",
    )


T = TypeVar("T")


def _option(parse: Callable[[str], T], option: str, value: str | None) -> T | None:
    if value is None:
        return None
    try:
        return parse(value)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None


@dataclass(frozen=True)
class Selection:
    filters: FilterSpec | None
    grouping: GroupingSpec | None
    legacy_items: bool
    max_tasks_per_file: int | None


def selection_from_args(args: argparse.Namespace, location: S3Location, output_format: str) -> Selection:
    items = output_format == "items"
    if not items:
        given = [name for name in _ITEMS_ONLY if getattr(args, name) is not None]
        if given:
            option = "--" + given[0].replace("_", "-")
            raise UsageError(f"{option} only applies to --format items")
    if args.study_depth is not None and args.group != "study":
        raise UsageError("--study-depth needs --group study")
    try:
        filters = FilterSpec(
            types=tuple(dict.fromkeys(args.type or ())),
            dicom_no_extension=bool(args.dicom_no_extension),
            include=tuple(args.include or ()),
            exclude=tuple(args.exclude or ()),
            min_size=_option(parse_size, "--min-size", args.min_size),
            max_size=_option(parse_size, "--max-size", args.max_size),
            modified_after=_option(parse_time, "--modified-after", args.modified_after),
            modified_before=_option(parse_time, "--modified-before", args.modified_before),
            skip_side_files=False if args.keep_side_files else None,
            items_mode=items,
            prefix=location.prefix,
        )
        grouping = (
            GroupingSpec(
                mode=args.group or "series",
                study_depth=args.study_depth if args.study_depth is not None else 1,
                prefix=location.prefix,
                name_template=args.name_template,
                dedupe_names=bool(args.dedupe_names),
                order=args.task_order or "first-item",
                root_name=location.bucket,
            )
            if items
            else None
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return Selection(
        filters=None if filters.is_noop else filters,
        grouping=grouping,
        legacy_items=bool(args.legacy_items),
        max_tasks_per_file=args.max_tasks_per_file,
    )
