"""`netclaim webhook`: the validating admission webhook as a process of its own (a Deployment).

It needs no kubeconfig and no node: it only judges what the apiserver sends. Stops on SIGTERM after
the listener closes, so a rolling update drops no admission the apiserver already sent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_ADDRESS = "0.0.0.0:8443"


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host.removeprefix("[").removesuffix("]") or "0.0.0.0", int(port)


def _readable(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    return path


def add_webhook_parser(subparsers: Any, parents: Sequence[argparse.ArgumentParser], **kw: Any) -> None:
    parser = subparsers.add_parser(
        "webhook",
        help="serve the validating admission webhook for netclaim configs (TLS, AdmissionReview v1)",
        description="Serve POST /validate: ResourceClaims, ResourceClaimTemplates and DeviceClasses "
        "whose netclaim.dev configs Prepare would refuse are denied with Prepare's field paths.",
        parents=list(parents),
        **kw,
    )
    parser.add_argument("--tls-cert-file", type=_readable, required=True, help="serving certificate (PEM)")
    parser.add_argument("--tls-private-key-file", type=_readable, required=True, help="its key (PEM)")
    parser.add_argument("--address", type=_address, default=DEFAULT_ADDRESS, help="HOST:PORT to listen on")
    parser.add_argument("--log-format", choices=("json", "text"), default="json")
    parser.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"), default="INFO")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from draplugin import logs
    from draplugin.admission.server import TlsFiles, WebhookServer  # not for `netclaim --help`

    logs.setup(args.log_format, args.log_level)
    host, port = args.address
    server = WebhookServer(host, port, TlsFiles(args.tls_cert_file, args.tls_private_key_file))

    async def main() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        await server.start()
        try:
            await stopping.wait()
        finally:
            await server.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    return 0
