"""``python -m benchmarks``: the full benchmark (see benchmarks/suite.py, docs/performance.md)."""

import sys

from benchmarks.suite import main

sys.exit(main())
