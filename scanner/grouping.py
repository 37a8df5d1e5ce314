"""How records become RedBrick tasks: the grouping the user asked for, validated when built.

It sits below the configuration (``ScanConfig.grouping``); the grouping itself is in
``scanner.output.items``.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Final, Literal

GroupingMode = Literal["file", "series", "study"]
TaskOrder = Literal["first-item", "completion"]
ItemsFormat = Literal["current", "legacy"]

_COMMON_FIELDS: Final = frozenset({"path", "folder", "parent", "stem", "key", "index"})
_MODE_FIELDS: Final[dict[str, frozenset[str]]] = {
    "file": _COMMON_FIELDS,
    "series": _COMMON_FIELDS | {"series"},
    "study": _COMMON_FIELDS | {"study"},
}


def validate_name_template(template: str, mode: GroupingMode) -> None:
    """Raise ValueError unless ``template`` renders with this mode's fields."""
    allowed = _MODE_FIELDS[mode]
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"invalid name template {template!r}: {exc}") from None
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in allowed:
            other = [m for m, fields in _MODE_FIELDS.items() if field in fields]
            where = f" (only in {other[0]} mode)" if other else ""
            raise ValueError(
                f"unknown field {{{field}}} in name template{where}; "
                f"use {', '.join('{' + f + '}' for f in sorted(allowed))}"
            )
        if conversion is not None or (spec and "{" in spec):
            raise ValueError(f"name template field {{{field}}}: conversions are not supported")
    sample: dict[str, object] = dict.fromkeys(allowed, "x")
    sample["index"] = 1
    try:
        template.format_map(sample)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"invalid name template {template!r}: {exc}") from None


@dataclass(frozen=True)
class GroupingSpec:
    """How records become tasks; validated when built."""

    mode: GroupingMode = "series"
    study_depth: int = 1
    prefix: str = ""
    name_template: str | None = None
    dedupe_names: bool = False
    order: TaskOrder = "first-item"
    # The name of a task at the bucket root itself (its folder has no name): the command line
    # gives the bucket's. None keeps ".".
    root_name: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in _MODE_FIELDS:
            raise ValueError(f"unknown grouping mode {self.mode!r}; use file, series or study")
        if self.order not in ("first-item", "completion"):
            raise ValueError(f"unknown task order {self.order!r}")
        if self.study_depth < 0:
            raise ValueError("study_depth must be 0 or more")
        if self.name_template is not None:
            validate_name_template(self.name_template, self.mode)
