"""Per-tier pass/fail/skip counts from test-results/<tier>.xml, and one closing total line.

The closing line has the plain form `N passed, N failed, N skipped` so that CI and humans read the
same totals; errors count as failures there.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def tier_counts(path: Path) -> tuple[int, int, int] | None:
    if not path.exists():
        return None
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    tests = failures = skipped = 0
    for s in suites:
        tests += int(s.get("tests", 0))
        failures += int(s.get("failures", 0)) + int(s.get("errors", 0))
        skipped += int(s.get("skipped", 0))
    return tests - failures - skipped, failures, skipped


def main(argv: list[str]) -> int:
    results_dir = Path(argv[1])
    totals = [0, 0, 0]
    for tier in argv[2:]:
        counts = tier_counts(results_dir / f"{tier}.xml")
        if counts is None:
            print(f"{tier:<16} no results")
            continue
        print(f"{tier:<16} {counts[0]} passed, {counts[1]} failed, {counts[2]} skipped")
        totals = [a + b for a, b in zip(totals, counts, strict=True)]
    print(f"{totals[0]} passed, {totals[1]} failed, {totals[2]} skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
