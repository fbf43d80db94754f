"""`netclaim status POD`: the network a pod got, as its claims report it, for people and scripts."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import orjson
from kubernetes.aio import client as kclient
from kubernetes.aio import config as kconfig

from draplugin.netstatus import DRIVER, PodNotFound, format_table, read_pod_network


def add_status_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `status` on the main CLI's subparsers (argparse's private _SubParsersAction type)."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "status", help="show the network interfaces a pod got from its resource claims"
    )
    parser.add_argument("pod", help="pod name")
    parser.add_argument("-n", "--namespace", default="default")
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")
    parser.add_argument("--kubeconfig", default=None, help="default: $KUBECONFIG, ~/.kube/config, in-cluster")
    parser.add_argument("--driver", default=DRIVER, help="show devices of this driver ('*' for all drivers)")
    parser.set_defaults(handler=run_status)
    return parser


def run_status(args: argparse.Namespace) -> int:
    return asyncio.run(_status(args))


async def _status(args: argparse.Namespace) -> int:
    configuration = kclient.Configuration()
    try:
        await kconfig.load_kube_config(config_file=args.kubeconfig, client_configuration=configuration)
    except kconfig.ConfigException:
        if args.kubeconfig:
            raise
        kconfig.load_incluster_config(client_configuration=configuration)
    driver = None if args.driver == "*" else args.driver
    async with kclient.ApiClient(configuration) as api:
        try:
            rows = await read_pod_network(api, args.namespace, args.pod, driver=driver)
        except PodNotFound as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    if args.output == "json":
        sys.stdout.write(
            orjson.dumps([r.to_json() for r in rows], option=orjson.OPT_INDENT_2).decode() + "\n"
        )
    else:
        print(format_table(rows))
    return 0
