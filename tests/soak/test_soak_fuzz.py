"""The unit tier's fuzzers at soak length: 10,000 opaque-parameter sets, 1,000 hostile NRI sessions,
2,000 fuzzed DRA batches. Seeds are random per run and printed (NETCLAIM_FUZZ_SEED replays one)."""

from __future__ import annotations

import os
import random

from unit.reliability.reliability_fuzz import (
    DraServer,
    run_dra_fuzz,
    run_nri_fuzz,
    run_opaque_fuzz,
    short_tmp,
)


def fuzz_seed() -> int:
    seed = int(os.environ.get("NETCLAIM_FUZZ_SEED", random.SystemRandom().randrange(1 << 32)))
    print(f"seed {seed} (NETCLAIM_FUZZ_SEED={seed} to replay)")
    return seed


def test_soak_opaque_parameters() -> None:
    tally = run_opaque_fuzz(10_000, fuzz_seed())
    print(tally)
    assert tally.cases == 10_000
    assert tally.rejected > 1000 and tally.planned > 100


def test_soak_nri_frames() -> None:
    tally = run_nri_fuzz(1_000, fuzz_seed())
    print(tally)
    assert tally.sessions == 1_000


def test_soak_dra_requests() -> None:
    with short_tmp("ncdra-") as directory:
        server = DraServer(directory)
        try:
            claims = run_dra_fuzz(server, 2_000, fuzz_seed())
        finally:
            server.close()
    print(f"{claims} claims answered")
    assert claims > 2_000
