"""Where the RunPodSandbox hook's time goes: cProfile over N attaches of one (or --interfaces) macvlan,
or with --host-device of a stand-in NIC moved into the pod (--stop: its StopPodSandbox instead).

Used to find what separates the hook from the pyroute2 floor (bench.attach_floor). What is not
profiled (the undo, or the attach with --stop, and the checks) runs outside the profile.
usage: python -m bench.profile_hook [--runs 300] [--interfaces 1 | --host-device [--stop]] [--top 30]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats

from bench.attach_floor import HOSTDEV_POD_MTU, HOSTDEV_POD_NAME, Hook, StandInNic
from bench.common import Bed, host_device


async def _profile(runs: int, interfaces: int, profiler: cProfile.Profile) -> None:
    with Bed() as bed:
        async with Hook(bed, interfaces) as hook:
            for i in range(runs + 5):
                if i >= 5:
                    profiler.enable()
                await hook.attach()
                profiler.disable()
                await hook.undo()


async def _profile_host_device(runs: int, stop: bool, profiler: cProfile.Profile) -> None:
    with Bed() as bed:
        async with StandInNic(bed) as nic:
            plan = host_device(nic.name, HOSTDEV_POD_NAME, mtu=HOSTDEV_POD_MTU)
            async with Hook(bed, devices=[plan]) as hook:
                for i in range(runs + 5):
                    if i >= 5 and not stop:
                        profiler.enable()
                    await hook.attach()
                    profiler.disable()
                    await hook.settled()
                    if i >= 5 and stop:
                        profiler.enable()
                    await hook.stop()
                    profiler.disable()
                    await hook.forget()
                    await nic.assert_home()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_hook", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--interfaces", type=int, default=1)
    parser.add_argument("--host-device", action="store_true", help="move a stand-in NIC instead")
    parser.add_argument("--stop", action="store_true", help="with --host-device: profile StopPodSandbox")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--sort", default="cumulative")
    args = parser.parse_args(argv)
    profiler = cProfile.Profile()
    if args.host_device:
        asyncio.run(_profile_host_device(args.runs, args.stop, profiler))
    else:
        asyncio.run(_profile(args.runs, args.interfaces, profiler))
    pstats.Stats(profiler).sort_stats(args.sort).print_stats(args.top)


if __name__ == "__main__":
    main()
