"""The `netclaim` command: `run` starts the driver, `status` shows a pod's network (more to come)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from draplugin.cli_status import add_status_parser


def _run(args: argparse.Namespace) -> int:
    print("netclaim run: not wired yet", file=sys.stderr)
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="netclaim", description="Kubernetes DRA network driver")
    subparsers = parser.add_subparsers(dest="command", required=True)
    run = subparsers.add_parser("run", help="run the driver on this node")
    run.set_defaults(handler=_run)
    add_status_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
