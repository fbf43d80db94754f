"""`make bench`: run the benchmarks, write bench/out/results.json (one flat object, metric -> number),
print a table with the targets.

The machine is shared (other engineers' containerd, kubelet and apiservers run alongside), so absolute
times move with the load; the figures to compare across runs are the ratios, each measured against its
reference in the same run, and the load average is recorded at the start and end of every run.

Quick by default (a few minutes); --full adds the slow parts: 1,000 pod cycles for the RSS drift, more
samples, five runs of the attach section (`--attach-repeats`: the median run's figures, each run's p50
ratios and the ratios' spreads over the runs; 100 samples per method and run, ~3.5 min at load 2-3 on
2 CPUs; bench/attach_floor.py), and the runtime benchmarks on the containerd 1.7 line too (metrics
suffixed `_containerd_1_7`). `--only cdi` (~1 min; not in the default set) compares the CDI and the NRI move
of one NIC on containerd 2.2 and 2.4, metrics suffixed `_containerd_2_2`/`_2_4` (bench/cdi.py).
`--only podstart` (~4 min per line, after `make deps-node`; not in the default set) times pod created ->
Running on a whole local node with the chart-installed driver, plain vs 1 and 4 interfaces, and a burst
of 100 pods, on containerd 2.1 and 1.7 (`_containerd_1_7`) (bench/podstart.py).

usage: python -m bench [--full] [--only attach,apiserver,admission,runtime,cdi,podstart] [--lines 2.1[,1.7]]
       [--attach-repeats N]
"""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")  # before grpc is imported: see README, Hazards

import argparse
import json
import math
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench import report
from bench.common import SERIES, load_average

OUT = Path(__file__).resolve().parent / "out" / "results.json"

# metric -> (comparison, target): "<=" means the measured value must not exceed the target.
TARGETS: dict[str, tuple[str, float]] = {
    "ratio_attach_vs_cni": ("<=", 0.33),
    "ratio_attach_vs_floor": ("<=", 1.5),
    # issue 22: the hook within 20 % of the raw netlink floor, at the median and in the tail
    "ratio_attach_vs_floor_p50": ("<=", 1.2),
    "ratio_attach_vs_floor_p99": ("<=", 1.2),
    "ratio_8if_vs_floor_p50": ("<=", 1.2),
    "ratio_8if_vs_floor_p99": ("<=", 1.2),
    "ratio_hostdev_vs_floor_p50": ("<=", 1.2),
    "ratio_hostdev_vs_floor_p99": ("<=", 1.2),
    "ratio_hostdev_stop_vs_floor_p50": ("<=", 1.2),
    "attach_macvlan_ms_p99": ("<=", 20.0),
    "hook_8if_ms_p99": ("<=", 60.0),
    "runpodsandbox_overhead_ms_p50": ("<=", 15.0),
    "status_visible_ms_p99": ("<=", 500.0),
    # issue 22's memory and Prepare targets
    "rss_mib_steady": ("<=", 60.0),
    "rss_drift_mib_1000": ("<=", 1.0),
    "prepare_ms_per_claim_p50": ("<=", 3.0),
    "concurrent_100_pods_unconfigured": ("<=", 0.0),
    "pod_start_overhead_1if_ms_p50": ("<=", 30.0),
    "burst_100_pods_unconfigured": ("<=", 0.0),
}


def target_for(name: str) -> tuple[str, float] | None:
    """Targets apply to the same metric on another containerd line (suffix `_containerd_1_7`)."""
    base = name.split("_containerd_", maxsplit=1)[0]
    return TARGETS.get(base)


def verdict(name: str, value: float) -> tuple[str, str] | None:
    """(target text, ok/MISSED) for a metric with a target."""
    target = target_for(name)
    if target is None:
        return None
    op, limit = target
    ok = not math.isnan(value) and value <= limit
    return f"{op} {limit:g}", "ok" if ok else "MISSED"


def table(results: dict[str, float]) -> str:
    rows = [f"{'metric':<44} {'value':>12}  {'target':>10}  verdict"]
    for name, value in results.items():
        judged = verdict(name, value)
        if judged is None:
            rows.append(f"{name:<44} {value:>12g}")
            continue
        rows.append(f"{name:<44} {value:>12g}  {judged[0]:>10}  {judged[1]}")
    missing = [name for name in TARGETS if not any(target_for(k) and k.startswith(name) for k in results)]
    hint = "(not in this run: --full, or --only podstart)"
    rows += [f"{name:<44} {'not measured':>12}  {hint}" for name in missing]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--full", action="store_true", help="slow parts too: 1,000 pod cycles, containerd 1.7"
    )
    parser.add_argument(
        "--only", default="attach,apiserver,admission,webhook,ipam,runtime", help="sections to run"
    )
    parser.add_argument("--lines", default=None, help="containerd lines (default 2.1; --full: 2.1,1.7)")
    parser.add_argument(
        "--runs",
        type=int,
        default=None,
        help="attach samples per method and run (default 200; 100 with --attach-repeats > 1)",
    )
    parser.add_argument(
        "--attach-repeats",
        type=int,
        default=None,
        help="runs of the attach section; the median run is reported, with spreads (default 1; --full 5)",
    )
    parser.add_argument(
        "--pairs", type=int, default=None, help="RunPodSandbox pairs (default 40; --full 100)"
    )
    parser.add_argument("--storm", type=int, default=100, help="pods started at once")
    parser.add_argument(
        "--cycles", type=int, default=None, help="pod cycles for RSS (default 0; --full 1000)"
    )
    parser.add_argument(
        "--cdi-cycles", type=int, default=40, help="pod cycles per attach mode and line for cdi (default 40)"
    )
    parser.add_argument(
        "--podstart-rounds",
        type=int,
        default=51,
        help="podstart: pods per shape, the first untimed (the timed ones rounded up to whole cycles)",
    )
    parser.add_argument("--podstart-lines", default="2.1,1.7", help="podstart: containerd lines")
    parser.add_argument("--trace-rss", action="store_true", help="tracemalloc report of RSS growth (slow)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("run as root: netns, netlink and containerd need it")
    sections = {s for s in args.only.split(",") if s}
    lines = (args.lines or ("2.1,1.7" if args.full else "2.1")).split(",")
    repeats = args.attach_repeats or (5 if args.full else 1)
    # Samples per method and attach run: 200 for one run; 100 each for several, so 5 runs take ~3.5 min.
    runs = args.runs or (200 if repeats == 1 else 100)
    runs_8if = max(runs // 2, min(runs, 100))  # half, but a p99 wants 100 samples
    pairs = args.pairs if args.pairs is not None else (100 if args.full else 40)
    cycles = args.cycles if args.cycles is not None else (1000 if args.full else 0)

    load_start = load_average()
    results: dict[str, float] = {}
    failed: list[str] = []
    t0 = time.time()

    def section(name: str, run: Callable[[], dict[str, float]]) -> None:
        if name.split(":", maxsplit=1)[0] not in sections:
            return
        started = time.perf_counter()
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        try:
            results.update(run())
        except Exception:
            traceback.print_exc()
            failed.append(name)
        print(f"bench: {name} done in {time.perf_counter() - started:.1f}s", file=sys.stderr, flush=True)

    from bench import admission, apiserver, attach_floor, cdi, ipam, runtime, webhook

    section("attach", lambda: attach_floor.run(runs, runs_8if, runs, repeats=repeats))
    section("apiserver", lambda: apiserver.measure(claims=200, status_claims=200, vfs=1000))
    section("admission", lambda: admission.measure(per_kind=300))
    section("webhook", lambda: webhook.measure(requests=2000))
    section("ipam", lambda: ipam.measure(pairs=200))
    for line in lines:
        section(
            f"runtime:{line}",
            lambda line=line: runtime.measure(
                line, pairs=pairs, storm=args.storm, cycles=cycles, trace=args.trace_rss
            ),  # type: ignore[misc]
        )
    for line in cdi.LINES:
        section(f"cdi:{line}", lambda line=line: cdi.measure(line, cycles=args.cdi_cycles))  # type: ignore[misc]
    if "podstart" in sections:
        from bench import podstart  # the node tier's helpers: imported only when asked for

        for line in args.podstart_lines.split(","):
            section(
                f"podstart:{line}",
                lambda line=line: podstart.measure(line, rounds=args.podstart_rounds, burst=args.storm),  # type: ignore[misc]
            )
    load_end = load_average()
    results.update(
        {
            "run_unix_time": round(t0),
            "run_seconds": round(time.time() - t0, 1),
            "full": 1.0 if args.full else 0.0,
            "loadavg_1m_start": round(load_start[0], 2),
            "loadavg_5m_start": round(load_start[1], 2),
            "loadavg_1m_end": round(load_end[0], 2),
            "loadavg_5m_end": round(load_end[1], 2),
            "cpus": float(os.cpu_count() or 0),
        }
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t0))
    header = (
        f"# make bench, {stamp}\n\n{os.cpu_count()} CPUs; load average {load_start[0]:.2f} at start, "
        f"{load_end[0]:.2f} at end; sections: {', '.join(sorted(sections))}"
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    written = report.write(args.out.parent, results, verdict, header, SERIES)
    print(f"\n{stamp}; load average {load_start[0]:.2f} at start, {load_end[0]:.2f} at end; wrote {args.out}")
    print("report: " + ", ".join(str(path) for path in written))
    if failed:
        print(f"sections that failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
