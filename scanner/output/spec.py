"""What the output stage takes from a scan's options: a small frozen spec, built once.

A writer needs to know where its output goes and in which format, nothing about listing,
checkpoints or processes: ``OutputSpec.of`` picks those fields out of the ``ScanConfig`` in one
place, and every writer, sink and encoder of ``scanner.output`` is built from the spec.
"""

from __future__ import annotations

from dataclasses import dataclass

from scanner.config import Compression, ConnectionConfig, OutputFormat, ScanConfig
from scanner.grouping import GroupingSpec


@dataclass(frozen=True, slots=True)
class OutputSpec:
    destination: str
    output_format: OutputFormat
    connection: ConnectionConfig
    compression: Compression = "none"
    # Key order: Parquet says so in its metadata.
    ordered: bool = True
    grouping: GroupingSpec | None = None
    legacy_items: bool = False
    max_tasks_per_file: int | None = None
    # CSV gets a ``deleted`` column (``--changes-only --deletions``).
    deletions: bool = False
    # A worker process's output: its chunks as they are, for the parent to finish.
    worker: bool = False
    # The writer takes pages of keys or records, not output bytes: items lists, and every
    # ``--state`` run (whose snapshot needs every record).
    carries_records: bool = False

    @classmethod
    def of(cls, config: ScanConfig) -> OutputSpec:
        return cls(
            destination=config.output,
            output_format=config.output_format,
            connection=config.connection,
            compression=config.compression,
            ordered=config.ordered,
            grouping=config.grouping,
            legacy_items=config.legacy_items,
            max_tasks_per_file=config.max_tasks_per_file,
            deletions=config.deletions,
            worker=config.worker,
            carries_records=config.output_format == "items" or config.state is not None,
        )
