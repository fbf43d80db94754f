"""The `netclaim` command: `run` starts the driver, `status` shows a pod's network (more to come)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from draplugin.cli_status import add_status_parser
from draplugin.settings import add_arguments as add_run_arguments


def _run(args: argparse.Namespace) -> int:
    # grpcio's fork handlers crash pyroute2 (README, Hazards): off before anything imports grpc.
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
    from draplugin import daemon, logs, settings

    config = settings.from_args(args)
    logs.setup(config.log_format, config.log_level)
    return daemon.run(config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="netclaim", description="Kubernetes DRA network driver")
    subparsers = parser.add_subparsers(dest="command", required=True)
    run = subparsers.add_parser("run", help="run the driver on this node (DRA kubelet plugin + NRI plugin)")
    add_run_arguments(run)
    run.set_defaults(handler=_run)
    add_status_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
