"""``python -m scanner`` and the installed ``scanner`` command."""

import gc
import sys


def run() -> None:
    # Start-up (imports, the botocore client) makes tens of thousands of long-lived objects and
    # next to no garbage: collecting at the default threshold spends start-up time on nothing
    # (figures: benchmarks/results/design-figures-2026-12-03.md). The S3 client keeps the same
    # threshold for the scan, and freezes what start-up made. Set before the imports, so the
    # command imports nothing at module level.
    gc.set_threshold(20_000, 10, 10)
    # start-up: the entry point imports the CLI only when run
    from scanner.cli.main import main

    sys.exit(main())


if __name__ == "__main__":
    run()
