"""The CNI chain runner and its exec adapter: spec'd env and stdin, prevResult chaining, errors that
name plugin and CNI code, DEL after a failed ADD, and a hanging plugin killed at its deadline."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from draplugin.cni import exec as cni_exec
from draplugin.cni.chain import Chain, PluginError, Runtime
from draplugin.cni.result import reported

NETWORK: dict[str, Any] = {
    "cniVersion": "1.0.0",
    "name": "chained",
    "plugins": [
        {"type": "first", "capabilities": {"ips": True}},
        {"type": "second", "keep": 1},
    ],
}
RT = Runtime(
    "sandbox-1", "/run/netns/x", "net1", (("A", "1"), ("B", "2")), {"ips": ["203.0.113.7/24"], "mac": "x"}
)


def result_of(n: int) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "net1", "mac": "02:00:00:00:00:0A", "sandbox": "/run/netns/x"}],
        "ips": [{"address": f"203.0.113.{n}/24", "interface": 0}],
        "step": n,
    }


class Recorder:
    """Stands in for the exec adapter: records each call and answers from a script."""

    def __init__(self, answers: dict[tuple[str, str], cni_exec.Completed]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, dict[str, str], dict[str, Any]]] = []

    async def __call__(
        self, exe: str, env: Mapping[str, str], stdin: bytes, limit: float
    ) -> cni_exec.Completed:
        assert limit > 0
        self.calls.append((os.path.basename(exe), dict(env), json.loads(stdin)))
        return self.answers.get((os.path.basename(exe), env["CNI_COMMAND"]), cni_exec.Completed(0, b"", b""))


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    for name in ("first", "second"):
        (tmp_path / name).write_text("#!/bin/sh\n")
        (tmp_path / name).chmod(stat.S_IRWXU)
    return tmp_path


def ok(n: int) -> cni_exec.Completed:
    return cni_exec.Completed(0, json.dumps(result_of(n)).encode(), b"")


def test_add_chains_prev_result_and_sets_the_spec_environment(bin_dir: Path) -> None:
    runner = Recorder({("first", "ADD"): ok(1), ("second", "ADD"): ok(2)})
    result = asyncio.run(Chain([str(bin_dir)], runner).add(NETWORK, RT, time.monotonic() + 1))
    assert result["step"] == 2
    (_, env1, in1), (_, env2, in2) = runner.calls
    assert env2["CNI_COMMAND"] == "ADD"
    assert env1 == {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "sandbox-1",
        "CNI_NETNS": "/run/netns/x",
        "CNI_IFNAME": "net1",
        "CNI_ARGS": "A=1;B=2",
        "CNI_PATH": str(bin_dir),
    }
    assert in1 == {
        **NETWORK["plugins"][0],
        "name": "chained",
        "cniVersion": "1.0.0",
        "runtimeConfig": {"ips": ["203.0.113.7/24"]},
    }  # only the capability it declares
    assert "prevResult" not in in1
    assert in2["prevResult"] == result_of(1) and "runtimeConfig" not in in2 and in2["keep"] == 1
    assert reported(result, "net1").ips == ("203.0.113.2/24",)
    assert reported(result, "net1").hardware_address == "02:00:00:00:00:0a"


def test_a_failing_plugin_is_named_with_its_cni_error_and_the_chain_is_deleted(bin_dir: Path) -> None:
    error = {"cniVersion": "1.0.0", "code": 11, "msg": "no master", "details": "ncex-up0 missing"}
    runner = Recorder(
        {("first", "ADD"): ok(1), ("second", "ADD"): cni_exec.Completed(1, json.dumps(error).encode(), b"")}
    )
    with pytest.raises(PluginError) as caught:
        asyncio.run(Chain([str(bin_dir)], runner).add(NETWORK, RT, time.monotonic() + 1))
    assert str(caught.value) == "CNI plugin second ADD failed: code 11: no master (ncex-up0 missing)"
    assert caught.value.code == 11
    deletes = [
        (name, stdin.get("prevResult")) for name, env, stdin in runner.calls if env["CNI_COMMAND"] == "DEL"
    ]
    assert deletes == [("second", result_of(1)), ("first", result_of(1))]  # reverse order, last good result


def test_del_runs_every_plugin_in_reverse_even_after_a_failure(bin_dir: Path) -> None:
    runner = Recorder({("second", "DEL"): cni_exec.Completed(2, b"", b"boom")})
    with pytest.raises(PluginError, match="CNI plugin second DEL failed: exit status 2: boom"):
        asyncio.run(Chain([str(bin_dir)], runner).delete(NETWORK, RT, result_of(1), time.monotonic() + 1))
    assert [name for name, _, _ in runner.calls] == ["second", "first"]


def test_a_missing_plugin_names_the_bin_dirs(tmp_path: Path) -> None:
    with pytest.raises(
        PluginError, match=f"CNI plugin first ADD failed: no executable 'first' in {tmp_path}"
    ):
        asyncio.run(Chain([str(tmp_path)], Recorder({})).add(NETWORK, RT, time.monotonic() + 1))


def test_the_adapter_passes_env_stdin_and_exit_code(tmp_path: Path) -> None:
    script = tmp_path / "echoer"
    script.write_text(
        '#!/bin/sh\necho "$CNI_COMMAND $CNI_IFNAME ${KUBECONFIG:-unset}"; cat; echo err >&2; exit 3\n'
    )
    script.chmod(stat.S_IRWXU)
    os.environ["KUBECONFIG"] = "/secret"
    try:
        done = asyncio.run(cni_exec.run(str(script), {"CNI_COMMAND": "ADD", "CNI_IFNAME": "net1"}, b"{}", 5))
    finally:
        del os.environ["KUBECONFIG"]
    assert done == cni_exec.Completed(3, b"ADD net1 unset\n{}", b"err\n")


def test_a_hanging_plugin_and_its_children_are_killed_at_the_deadline(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    script = tmp_path / "hang"
    script.write_text(f"#!/bin/sh\nsleep 60 &\necho $! > {pidfile}\nwait\n")
    script.chmod(stat.S_IRWXU)

    async def go() -> float:
        start = time.monotonic()
        with pytest.raises(cni_exec.TimedOut):
            await cni_exec.run(str(script), {}, b"", 0.5)
        return time.monotonic() - start

    took = asyncio.run(go())
    assert 0.5 <= took < 1.5
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 2
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(child), "the plugin's child survived the kill"


def test_a_hanging_plugin_in_the_chain_is_an_error_naming_it(tmp_path: Path) -> None:
    script = tmp_path / "first"
    script.write_text('#!/bin/sh\n[ "$CNI_COMMAND" = DEL ] && exit 0\nexec sleep 60\n')
    script.chmod(stat.S_IRWXU)
    network = {**NETWORK, "plugins": [{"type": "first"}]}
    start = time.monotonic()
    with pytest.raises(
        PluginError, match=r"CNI plugin first ADD failed: killed after 0\.[0-9]+ s \(timeout\)"
    ):
        asyncio.run(Chain([str(tmp_path)]).add(network, RT, time.monotonic() + 0.4))
    assert time.monotonic() - start < 1.5


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return state != "Z"
