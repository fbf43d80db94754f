"""An NRI plugin that logs every event it receives: `python -m nriplugin.examples.logger --socket PATH`.

Useful to see what a runtime actually sends (netns paths, pod IPs, which events arrive in which order)
before writing a real plugin. It subscribes to every event and never changes anything.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Sequence

from nriplugin import Plugin, RuntimeInfo, Stub, api
from nriplugin.connection import DEFAULT_SOCKET_PATH

log = logging.getLogger("nri-logger")


def describe_pod(pod: api.PodSandbox) -> str:
    netns = next((ns.path for ns in pod.linux.namespaces if ns.type == "network"), "-")
    ips = ",".join(pod.ips) or "-"
    return (
        f"pod {pod.namespace}/{pod.name} uid={pod.uid} id={pod.id[:12]} pid={pod.pid} netns={netns} ips={ips}"
    )


def describe(pod: api.PodSandbox, container: api.Container) -> str:
    return f"container {container.name} id={container.id[:12]} in {describe_pod(pod)}"


class Logger(Plugin):
    async def configure(self, runtime: RuntimeInfo) -> None:
        log.info(
            "Configure: %s %s, request timeout %d ms, registration timeout %d ms",
            runtime.name,
            runtime.version,
            runtime.request_timeout_ms,
            runtime.registration_timeout_ms,
        )

    async def synchronize(self, pods: Sequence[api.PodSandbox], containers: Sequence[api.Container]) -> None:
        log.info("Synchronize: %d pods, %d containers", len(pods), len(containers))
        for pod in pods:
            log.info("  %s", describe_pod(pod))

    async def run_pod_sandbox(self, pod: api.PodSandbox) -> None:
        log.info("RunPodSandbox %s", describe_pod(pod))

    async def stop_pod_sandbox(self, pod: api.PodSandbox) -> None:
        log.info("StopPodSandbox %s", describe_pod(pod))

    async def remove_pod_sandbox(self, pod: api.PodSandbox) -> None:
        log.info("RemovePodSandbox %s", describe_pod(pod))

    async def create_container(self, pod: api.PodSandbox, container: api.Container) -> None:
        log.info("CreateContainer %s args=%s", describe(pod, container), list(container.args))

    async def post_create_container(self, pod: api.PodSandbox, container: api.Container) -> None:
        log.info("PostCreateContainer %s", describe(pod, container))

    async def start_container(self, pod: api.PodSandbox, container: api.Container) -> None:
        log.info("StartContainer %s", describe(pod, container))

    async def post_start_container(self, pod: api.PodSandbox, container: api.Container) -> None:
        log.info("PostStartContainer %s", describe(pod, container))

    async def update_container(
        self, pod: api.PodSandbox, container: api.Container, resources: api.LinuxResources
    ) -> None:
        log.info("UpdateContainer %s", describe(pod, container))

    async def post_update_container(self, pod: api.PodSandbox, container: api.Container) -> None:
        log.info("PostUpdateContainer %s", describe(pod, container))

    async def stop_container(self, pod: api.PodSandbox, container: api.Container) -> None:
        log.info("StopContainer %s", describe(pod, container))

    async def remove_container(self, pod: api.PodSandbox, container: api.Container) -> None:
        log.info("RemoveContainer %s", describe(pod, container))

    async def shutdown(self) -> None:
        log.info("Shutdown")


async def run(socket_path: str, name: str, index: str) -> None:
    stub = Stub.from_environment(Logger(), name, index, socket_path=socket_path)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(stub.stop()))
    await stub.run()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--socket", default=DEFAULT_SOCKET_PATH, help="runtime NRI socket")
    parser.add_argument("--name", default="logger", help="plugin name")
    parser.add_argument("--idx", default="50", help="two-digit plugin index")
    parser.add_argument("-v", "--verbose", action="store_true", help="also log protocol details")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    asyncio.run(run(args.socket, args.name, args.idx))


if __name__ == "__main__":
    main()
