"""Where the RunPodSandbox hook's time goes: cProfile over N attaches of one (or --interfaces) macvlan.

Used to find what separates the hook from the pyroute2 floor (bench.attach_floor). Undo is outside
the profile. usage: python -m bench.profile_hook [--runs 300] [--interfaces 1] [--top 30]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats

from bench.attach_floor import Hook
from bench.common import Bed


async def _profile(runs: int, interfaces: int, profiler: cProfile.Profile) -> None:
    with Bed() as bed:
        async with Hook(bed, interfaces) as hook:
            for i in range(runs + 5):
                if i >= 5:
                    profiler.enable()
                await hook.attach()
                profiler.disable()
                await hook.undo()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_hook", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--interfaces", type=int, default=1)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--sort", default="cumulative")
    args = parser.parse_args(argv)
    profiler = cProfile.Profile()
    asyncio.run(_profile(args.runs, args.interfaces, profiler))
    pstats.Stats(profiler).sort_stats(args.sort).print_stats(args.top)


if __name__ == "__main__":
    main()
