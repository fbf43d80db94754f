"""Benchmarks: each module measures one thing for real and returns a flat dict of metrics.

The test bed (tests/testbed) owns starting containerd and apiservers; it is put on the import path
here, before any benchmark module imports it.
"""

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parents[1] / "tests")
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
