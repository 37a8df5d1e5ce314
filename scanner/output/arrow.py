"""Records as Apache Arrow tables: the schema, and JSON Lines chunks parsed into it.

The scan moves pages as JSON Lines chunks; Arrow's own JSON reader (C++, several threads, no
Python object per record) turns a run of them into a table with the column types asked for.
``scanner.api.scan_arrow`` hands such tables on as record batches and ``scanner.output.parquet``
writes them as row groups. pyarrow is an optional dependency (``bucket-scanner[arrow]``):
``require_pyarrow`` says so in one line when it is missing.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from scanner.errors import UsageError

if TYPE_CHECKING:
    import pyarrow

INSTALL_HINT = "pip install 'bucket-scanner[arrow]'"


def require_pyarrow(what: str) -> Any:
    """The ``pyarrow`` module, or a ``UsageError`` saying how to install it."""
    try:
        # optional dependency (the [arrow] extra): imported only by what writes Arrow or Parquet
        import pyarrow
        import pyarrow.json
    except ImportError:
        raise UsageError(f"{what} needs pyarrow, which is not installed: {INSTALL_HINT}") from None
    return pyarrow


def record_schema() -> pyarrow.Schema:
    """``key`` string, ``size`` int64, ``last_modified`` timestamp (ms, UTC), ``etag`` and
    ``storage_class`` strings: the record's fields in their order."""
    pa = require_pyarrow("Arrow output")
    return pa.schema(
        [
            pa.field("key", pa.string(), nullable=False),
            pa.field("size", pa.int64(), nullable=False),
            pa.field("last_modified", pa.timestamp("ms", tz="UTC"), nullable=False),
            pa.field("etag", pa.string(), nullable=False),
            pa.field("storage_class", pa.string(), nullable=False),
        ]
    )


def jsonl_table(data: bytes, schema: pyarrow.Schema) -> pyarrow.Table:
    """The records of ``data`` (whole JSON Lines, as ``records.encode_jsonl`` writes them)."""
    pa = require_pyarrow("Arrow output")
    if not data:
        return schema.empty_table()
    table = pa.json.read_json(
        io.BytesIO(data),
        read_options=pa.json.ReadOptions(block_size=max(1 << 20, len(data) // 4 + 1)),
        parse_options=pa.json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error"),
    )
    # The reader marks every column nullable; the fields are never null.
    return table.cast(schema)
