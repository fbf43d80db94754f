"""~1,000 hostile opaque-parameter sets through the planner (the soak runs 10,000): see reliability_fuzz."""

from __future__ import annotations

import os

from reliability_fuzz import run_opaque_fuzz

EXAMPLES = 1000
SEED = int(os.environ.get("NETCLAIM_FUZZ_SEED", "8201"))


def test_opaque_parameters_fail_only_with_claim_and_field_path() -> None:
    print(f"opaque-parameter fuzz: {EXAMPLES} cases, seed {SEED}")
    tally = run_opaque_fuzz(EXAMPLES, SEED)
    print(tally)
    assert tally.cases == EXAMPLES
    # The generator must reach both outcomes, or the test checks less than it claims.
    assert tally.rejected > EXAMPLES // 10
    assert tally.planned > EXAMPLES // 50
