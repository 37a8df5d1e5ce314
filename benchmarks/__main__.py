"""``python -m benchmarks`` (``make bench``); see benchmarks/README.md for the variants."""

import sys

from benchmarks.cli import main

sys.exit(main())
