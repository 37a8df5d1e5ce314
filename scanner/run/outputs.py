"""The writer a run writes through: the format's own, wrapped for an incremental run."""

from __future__ import annotations

from scanner.config import ScanConfig
from scanner.incremental.writer import IncrementalWriter
from scanner.output.limit import LimitedWriter
from scanner.output.writers import Writer, make_writer, page_encoder


def open_writer(config: ScanConfig) -> Writer:
    """The writer of ``config``'s format; with ``--state`` it also records the snapshot."""
    writer = make_writer(config)
    if config.state is not None and not config.worker:
        return IncrementalWriter(config, writer, page_encoder(config))
    if config.limit is not None and not config.worker:
        return LimitedWriter(writer, config.limit, config.output_format)
    return writer
