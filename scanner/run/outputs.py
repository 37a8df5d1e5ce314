"""The writer a run writes through: the format's own, wrapped for an incremental run.

Each stage gets the small frozen spec of its own (``OutputSpec``, ``IncrementalSpec``), built
here from the scan's options.
"""

from __future__ import annotations

from scanner.config import ScanConfig
from scanner.incremental.writer import IncrementalSpec, IncrementalWriter
from scanner.output.limit import LimitedWriter
from scanner.output.spec import OutputSpec
from scanner.output.writers import Writer, make_writer, page_encoder


def open_writer(config: ScanConfig) -> Writer:
    """The writer of ``config``'s format; with ``--state`` it also records the snapshot."""
    spec = OutputSpec.of(config)
    writer = make_writer(spec)
    if config.state is not None and not config.worker:
        return IncrementalWriter(IncrementalSpec.of(config), writer, page_encoder(spec))
    if config.limit is not None and not config.worker:
        return LimitedWriter(writer, config.limit, config.output_format)
    return writer
