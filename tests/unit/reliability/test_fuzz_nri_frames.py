"""Malformed mux and ttrpc frames from a hostile runtime against a real nriplugin Stub (see
reliability_fuzz.HostileRuntime): the stub answers or hangs up, never goes silent, and reconnects."""

from __future__ import annotations

import os

from reliability_fuzz import run_nri_fuzz

EXAMPLES = 100
SEED = int(os.environ.get("NETCLAIM_FUZZ_SEED", "8202"))


def test_hostile_runtime_frames_never_hang_or_kill_the_stub() -> None:
    print(f"NRI frame fuzz: {EXAMPLES} sessions, seed {SEED}")
    tally = run_nri_fuzz(EXAMPLES, SEED)
    print(tally)
    assert tally.sessions == EXAMPLES
    assert tally.survived > 0  # well-framed input was generated and answered
    assert tally.closed_by_stub + tally.closed_after_eof > 0  # and broken framing too
