"""The `netclaim` command: `run` starts the driver, `status` shows pods' networks.

Errors a person can act on (no kubeconfig, an apiserver that does not answer, a pod that does not
exist) print one line, `netclaim: <what> (<hint>)`, and exit 1; `--debug` shows the traceback instead.
Anything else is a bug and keeps its traceback. `kubectl-netclaim` is the same CLI as a kubectl plugin.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from draplugin.admission.command import add_webhook_parser
from draplugin.cli_status import KUBECTL_PLUGIN, add_status_parser
from draplugin.kube.connect import connect, explain
from draplugin.settings import add_arguments as add_run_arguments
from draplugin.settings import from_args
from draplugin.version import version_line

KUBECTL_PROG = "kubectl netclaim"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends `(default: X)` to each flag's help, except where no default is worth printing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if _nothing(action.default) or "default:" in text:
            return text
        return super()._get_help_string(action)


def _nothing(default: object) -> bool:
    """No default to show: unset, off, or an empty list (`(default: ())` tells a reader nothing)."""
    empty = isinstance(default, str | tuple | list | set | frozenset) and not default
    return default is None or default is False or empty


def _run(args: argparse.Namespace) -> int:
    # grpcio's fork handlers crash pyroute2 (README, Hazards): off before anything imports grpc.
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
    config = from_args(args)
    # Loaded here, before start-up, so a missing or broken kubeconfig (or a pod without a service
    # account) is one line instead of a traceback from deep inside start-up; the daemon uses this same
    # configuration. An unreachable apiserver is not checked: the daemon waits and retries for it.
    connection = asyncio.run(connect(str(config.kubeconfig) if config.kubeconfig else None, search=False))
    from draplugin import daemon, logs

    logs.setup(config.log_format, config.log_level)
    return daemon.run(config, connection.configuration)


def build_parser(prog: str = "netclaim") -> argparse.ArgumentParser:
    """The whole CLI; as the kubectl plugin (`prog` KUBECTL_PROG) only `status`, which is all it needs."""
    plugin = prog == KUBECTL_PROG
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Kubernetes DRA network driver",
        epilog=None if plugin else KUBECTL_PLUGIN,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=version_line())
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    # The same flag after the command (`netclaim status web --debug`); SUPPRESS keeps the global value.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if not plugin:
        run = subparsers.add_parser(
            "run",
            help="run the driver on this node (DRA kubelet plugin + NRI plugin)",
            description="Run the driver on this node: DRA kubelet plugin and containerd NRI plugin.",
            parents=[common],
            formatter_class=HelpFormatter,
        )
        add_run_arguments(run)
        run.set_defaults(handler=_run)
        add_webhook_parser(subparsers, parents=[common], formatter_class=HelpFormatter)
    add_status_parser(subparsers, parents=[common], formatter_class=HelpFormatter)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`netclaim`."""
    return _main(build_parser(), argv)


def kubectl_main(argv: Sequence[str] | None = None) -> int:
    """`kubectl-netclaim`: kubectl runs it for `kubectl netclaim ...` with the words after `netclaim`."""
    return _main(build_parser(KUBECTL_PROG), argv)


def _main(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except Exception as error:
        message = explain(error)
        if message is None or args.debug:
            raise
        print(f"{parser.prog}: {message}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
