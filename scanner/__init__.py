"""bucket-scanner: list an S3 bucket fast, exactly once, in key order.

The library API (``scan``, ``ascan``, ``scan_arrow``, ``group_items``, ``ObjectRecord``) lives in
``scanner.api`` and is imported from here on first use: ``import scanner`` and
``scanner --version`` stay as quick as they were (the API pulls in the S3 client).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from scanner.api import (
        ArrowScan,
        AsyncScan,
        ObjectRecord,
        Scan,
        ScanOptions,
        ScanStats,
        ascan,
        group_items,
        scan,
        scan_arrow,
    )
    from scanner.errors import AccessError, BucketNotFoundError, EndpointError, ScanError, UsageError

_API: frozenset[str] = frozenset(
    {
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
    }
)
_ERRORS: frozenset[str] = frozenset(
    {"AccessError", "BucketNotFoundError", "EndpointError", "ScanError", "UsageError"}
)

__all__ = [
    "AccessError",
    "ArrowScan",
    "AsyncScan",
    "BucketNotFoundError",
    "EndpointError",
    "ObjectRecord",
    "Scan",
    "ScanError",
    "ScanOptions",
    "ScanStats",
    "UsageError",
    "__version__",
    "ascan",
    "group_items",
    "scan",
    "scan_arrow",
]


def __getattr__(name: str) -> Any:
    # Imported on first use, for start-up time only (see the module docstring).
    if name in _API:
        # lazy exports: `import scanner` stays cheap (start-up)
        from scanner import api

        return getattr(api, name)
    if name in _ERRORS:
        # lazy exports: `import scanner` stays cheap (start-up)
        from scanner import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'scanner' has no attribute {name!r}")
