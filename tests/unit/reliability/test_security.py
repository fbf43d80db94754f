"""Security properties that are easy to lose in a refactor and hard to notice when lost.

- The daemon never starts a program: a shell-out from a root process that handles other tenants'
  names and addresses is one quoting bug away from code execution, and in the NRI hook it would also
  break the 2 s budget. Checked on the AST of every product source file, so that comments, strings
  and names like `subprocess_count` do not count and `from os import system as s` does.
- Sockets and state files are root-only whatever the umask: the DRA and registration sockets accept
  prepare calls, the plan checkpoint and attachment records hold other pods' addresses and MACs.
- Names from claims cannot escape: interface names and RDMA device names with `../`, slashes, NUL,
  control characters or too many bytes are refused with a field path; a derived veth host name
  stays a 15-byte-safe netdev name whatever ids it is derived from.
"""

from __future__ import annotations

import ast
import os
import shutil
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import draplugin
import nriplugin
from draplugin.attachments import AttachmentStore, SandboxRecord
from draplugin.checkpoint import Checkpoint
from draplugin.config import ConfigError, parse_network_config
from draplugin.config.fields import interface_name
from draplugin.devices.veth import host_end_name
from draplugin.kubelet.server import KubeletServers, SocketPaths
from draplugin.model import ClaimPlan, ClaimRef, DeviceKind, DevicePlan, DeviceRef, NetdevSpec
from draplugin.planstore import PlanStore
from draplugin.prepare import Preparer

# --- no shell-outs ------------------------------------------------------------------------------------

FORBIDDEN_MODULES = {"subprocess", "pty", "pexpect", "sh", "plumbum", "commands", "popen2"}
FORBIDDEN_OS = {
    "system",
    "popen",
    "fork",
    "forkpty",
    "posix_spawn",
    "posix_spawnp",
    *(f"exec{suffix}" for suffix in ("l", "le", "lp", "lpe", "v", "ve", "vp", "vpe")),
    *(f"spawn{suffix}" for suffix in ("l", "le", "lp", "lpe", "v", "ve", "vp", "vpe")),
}
FORBIDDEN_ASYNCIO = {"create_subprocess_exec", "create_subprocess_shell"}


def shell_outs(source: str, filename: str) -> list[str]:
    """Every way this file could start another program, as `file:line: what`."""
    findings: list[str] = []
    os_aliases = {"os"}
    asyncio_aliases = {"asyncio"}

    def report(node: ast.AST, what: str) -> None:
        findings.append(f"{filename}:{getattr(node, 'lineno', '?')}: {what}")

    tree = ast.parse(source, filename)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                root = alias.name.split(".")[0]
                if root in FORBIDDEN_MODULES:
                    report(node, f"import {alias.name}")
                if alias.name == "os":
                    os_aliases.add(alias.asname or "os")
                if alias.name == "asyncio":
                    asyncio_aliases.add(alias.asname or "asyncio")
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module.split(".")[0] in FORBIDDEN_MODULES:
                report(node, f"from {module} import ...")
            for alias in node.names:
                if module == "os" and alias.name in FORBIDDEN_OS:
                    report(node, f"from os import {alias.name}")
                if module.startswith("asyncio") and alias.name in FORBIDDEN_ASYNCIO:
                    report(node, f"from {module} import {alias.name}")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id in os_aliases and node.attr in FORBIDDEN_OS:
                report(node, f"os.{node.attr}")
            if node.value.id in asyncio_aliases and node.attr in FORBIDDEN_ASYNCIO:
                report(node, f"asyncio.{node.attr}")
        elif isinstance(node, ast.Call) and _is_dynamic_import(node):
            report(node, "dynamic import")
    return findings


def _is_dynamic_import(call: ast.Call) -> bool:
    """`__import__(...)` and `importlib.import_module(...)`: a module name the AST cannot vouch for."""
    func = call.func
    if isinstance(func, ast.Name):
        return func.id in ("__import__", "import_module")
    return isinstance(func, ast.Attribute) and func.attr == "import_module"


def product_sources() -> list[Path]:
    roots = [Path(draplugin.__file__).parent, Path(nriplugin.__file__).parent]
    files = [p for root in roots for p in root.rglob("*.py") if "pb" not in p.relative_to(root).parts]
    return sorted(files)


def test_the_checker_finds_every_way_of_shelling_out() -> None:
    """Guards the guard: each of these must be flagged, and harmless look-alikes must not."""
    bad = {
        "import subprocess": 1,
        "import subprocess as sp": 1,
        "from subprocess import run": 1,
        "import pty": 1,
        "import os\nos.system('x')": 1,
        "import os as o\no.popen('x')": 1,
        "from os import system": 1,
        "from os import execvp as go": 1,
        "import os\nos.posix_spawn('x', [], {})": 1,
        "import asyncio\nasyncio.create_subprocess_exec('x')": 1,
        "from asyncio import create_subprocess_shell": 1,
        "__import__('subprocess')": 1,
        "import importlib\nimportlib.import_module('subprocess')": 1,
    }
    for source, count in bad.items():
        assert len(shell_outs(source, "t.py")) >= count, source
    harmless = "import os\nsubprocess_count = 1\nos.path.join('a')\n# import subprocess\ns = 'os.system'\n"
    assert shell_outs(harmless, "t.py") == []


CNI_EXEC = Path("draplugin/cni/exec.py")
"""The one module allowed to start programs: CNI plugins are executables by specification (issue 16).
It builds the environment from scratch, uses no shell, runs an absolute path from the operator's bin
dirs and kills the plugin's process group at its deadline; everything else stays process-free."""


def test_no_shell_outs_in_the_daemon() -> None:
    files = product_sources()
    assert len(files) > 40, files  # draplugin and nriplugin, not an empty glob
    findings = [
        f
        for path in files
        if not str(path).endswith(str(CNI_EXEC))
        for f in shell_outs(path.read_text(), str(path))
    ]
    assert findings == []


def test_the_cni_exec_module_starts_plugins_without_a_shell() -> None:
    """The exemption is exactly what it claims: asyncio's exec, never a shell or subprocess."""
    path = next(p for p in product_sources() if str(p).endswith(str(CNI_EXEC)))
    findings = shell_outs(path.read_text(), str(path))
    assert findings and all("create_subprocess_exec" in finding for finding in findings), findings


# --- file and socket modes ----------------------------------------------------------------------------


@pytest.fixture
def open_umask() -> Iterator[None]:
    """umask 0: whatever mode a file ends up with is the one the code chose, not the environment's."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ncsec-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


class NoClaims:
    async def read(self, namespace: str, name: str) -> None:
        return None


@pytest.fixture
async def servers(short_dir: Path, open_umask: None) -> AsyncIterator[KubeletServers]:
    paths = SocketPaths(registry_dir=short_dir / "registry", plugins_dir=short_dir / "plugins")
    store = PlanStore.open(Checkpoint(short_dir / "state" / "plans.json"))
    preparer = Preparer(driver="netclaim.dev", node="n", reader=NoClaims(), lookup={}, store=store)
    kubelet = KubeletServers(paths, preparer)
    await kubelet.start()
    try:
        yield kubelet
    finally:
        await kubelet.stop(grace=1.0)


async def test_kubelet_sockets_and_their_dirs_are_root_only(servers: KubeletServers) -> None:
    paths = servers.paths
    assert stat.S_ISSOCK(paths.dra.lstat().st_mode)
    assert mode(paths.dra) == 0o600
    assert mode(paths.registration) == 0o600
    assert mode(paths.dra.parent) == 0o700  # plugins/<driver>/: ours alone
    assert mode(paths.registry_dir) == 0o700  # created by us here (kubelet's own dir is left alone)
    assert mode(paths.plugins_dir) == 0o700


async def test_an_existing_dra_dir_is_tightened(short_dir: Path, open_umask: None) -> None:
    paths = SocketPaths(registry_dir=short_dir / "registry", plugins_dir=short_dir / "plugins")
    paths.dra.parent.mkdir(parents=True, mode=0o777)
    store = PlanStore.open(Checkpoint(short_dir / "state" / "plans.json"))
    kubelet = KubeletServers(
        paths, Preparer(driver="netclaim.dev", node="n", reader=NoClaims(), lookup={}, store=store)
    )
    await kubelet.start()
    try:
        assert mode(paths.dra.parent) == 0o700
        assert mode(paths.dra) == 0o600
    finally:
        await kubelet.stop(grace=1.0)


def sample_plan() -> ClaimPlan:
    ref = DeviceRef("nic", "netclaim.dev", "node", "veth")
    netdev = NetdevSpec(
        interface_name="net1", addresses=("203.0.113.5/24",), hardware_address="02:00:00:00:00:01"
    )
    return ClaimPlan(ClaimRef("ns", "c", "uid-1"), ("pod-1",), (DevicePlan(ref, DeviceKind.VETH, netdev),))


async def test_checkpoint_is_0600_in_a_0700_dir(short_dir: Path, open_umask: None) -> None:
    state = short_dir / "state"
    store = PlanStore.open(Checkpoint(state / "plans.json"))
    await store.put([sample_plan()])  # a journal line: the first file in a fresh state directory
    assert mode(state / "plans.json.journal") == 0o600
    assert mode(state) == 0o700
    await store.fold()  # the whole file, as at a clean stop
    assert mode(state / "plans.json") == 0o600
    names = sorted(p.name for p in state.iterdir())
    assert names == ["plans.json", "plans.json.journal"]  # no temporary file left readable
    assert (state / "plans.json.journal").stat().st_size == 0


async def test_attachments_file_is_0600_in_a_0700_dir(short_dir: Path, open_umask: None) -> None:
    state = short_dir / "state2"
    store = AttachmentStore(state / "attachments.json")
    store.put(SandboxRecord("sb", "pod-1", "ns", "p", "/run/netns/x"))
    await store.flush()
    assert mode(state / "attachments.json") == 0o600
    assert mode(state) == 0o700
    assert [p.name for p in state.iterdir()] == ["attachments.json"]


# --- names from claims --------------------------------------------------------------------------------

HOSTILE_NAMES = [
    "../etc",
    "..",
    ".",
    "a/b",
    "/",
    "eth0/../../x",
    "x" * 16,
    "é" * 8,  # 8 characters, 16 bytes
    "net\x00",
    "\x00",
    "net\n1",
    "net\t1",
    "net 1",
    "net\x7f",
    "net\u200b",  # zero-width space: not printable
    "net:1",
    "",
]


def document(**netdev: object) -> dict[str, object]:
    return {"apiVersion": "netclaim.dev/v1alpha1", "kind": "NetworkConfig", "netdev": netdev}


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=repr)
def test_hostile_interface_names_are_refused_with_a_field_path(name: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_network_config(document(interfaceName=name))
    assert [e.path for e in refused.value.errors] == ["netdev.interfaceName"]
    with pytest.raises(ConfigError) as refused:
        parse_network_config(document(veth={"hostInterfaceName": name}))
    assert [e.path for e in refused.value.errors] == ["netdev.veth.hostInterfaceName"]


@pytest.mark.parametrize(
    "name", ["../../dev/mem", "..", "/dev/mem", "uverbs0/../x", "rdma\x00", "a b", "x" * 65, ""], ids=repr
)
def test_hostile_rdma_device_names_are_refused_with_a_field_path(name: str) -> None:
    raw = {
        "apiVersion": "netclaim.dev/v1alpha1",
        "kind": "NetworkConfig",
        "rdma": {"devices": ["uverbs0", name]},
    }
    with pytest.raises(ConfigError) as refused:
        parse_network_config(raw)
    assert [e.path for e in refused.value.errors] == ["rdma.devices[1]"]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.tuples(st.text(), st.text(), st.text(), st.text(), st.text(), st.none() | st.text()))
def test_derived_veth_host_names_are_short_and_safe(ids: tuple[str, str, str, str, str, str | None]) -> None:
    """Whatever the ids (kubelet's UIDs, user-chosen request names), the host end is `ncv` + 12 hex."""
    pod, claim, request, pool, device, share = ids
    plan = DevicePlan(DeviceRef(request, "netclaim.dev", pool, device, share), DeviceKind.VETH, None)
    name = host_end_name(pod, claim, plan)
    assert len(name.encode()) <= 15
    assert name.startswith("ncv") and all(c in "0123456789abcdef" for c in name[3:])
    assert interface_name(name) == name


def test_derived_veth_host_names_differ_per_device() -> None:
    """Two devices of one pod must not collide on the host (the second attach would fail EEXIST)."""
    names = {
        host_end_name(
            f"pod-{p}", f"claim-{c}", DevicePlan(DeviceRef(r, "d", "pool", "veth"), DeviceKind.VETH, None)
        )
        for p in range(10)
        for c in range(10)
        for r in ("a", "b", "c")
    }
    assert len(names) == 300
