"""The runtime test bed itself works on both containerd lines: if these fail, every NRI test is moot."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from testbed import hoststate
from testbed.containerd import Containerd, TeardownError
from testbed.cri import CriClient, CriError, MakePod

POD_ADDR = re.compile(r"^\d+:\s+eth0\s+inet\s+198\.51\.100\.(\d+)/24\b", re.MULTILINE)


def _ns_id(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def test_version_names_the_line(containerd: Containerd, cri: CriClient) -> None:
    version = cri.version()
    assert version.runtime_name == "containerd"
    # Debian builds report "2.1.9+unknown"; upstream-style builds (2.2, 2.4) report "v2.4.2".
    assert version.runtime_version.removeprefix("v").startswith(containerd.line + ".")
    assert version.runtime_version.removeprefix("v").startswith(containerd.release)
    assert containerd.release.startswith(containerd.line + ".")  # the build actually installed


def test_pod_gets_its_own_netns(containerd: Containerd, cri: CriClient, make_pod: MakePod) -> None:
    sandbox_id, _, netns = make_pod("netns-owner")
    status = cri.pod_sandbox_status(sandbox_id)
    assert status.state == "SANDBOX_READY"
    assert Path(netns).parent == containerd.netns_dir
    assert status.pid is not None
    pod_ns = os.stat(netns)
    assert (pod_ns.st_dev, pod_ns.st_ino) == _ns_id(f"/proc/{status.pid}/ns/net")
    assert (pod_ns.st_dev, pod_ns.st_ino) != _ns_id("/proc/self/ns/net")
    assert (netns, "nsfs") in hoststate.mounts()


def test_container_sees_cni_address(cri: CriClient, make_pod: MakePod) -> None:
    sandbox_id, container_id, _ = make_pod("addr")
    result = cri.exec_sync(container_id, ["ip", "-o", "-4", "addr", "show"])
    assert result.exit_code == 0, result.stderr
    match = POD_ADDR.search(result.stdout)
    assert match, result.stdout
    assert cri.pod_sandbox_status(sandbox_id).ip == f"198.51.100.{match.group(1)}"


def test_container_status_shows_the_spec_as_run(cri: CriClient, make_pod: MakePod) -> None:
    sandbox_id, container_id, _ = make_pod("spec", annotations={"netclaim.test/pod": "yes"})
    (listed,) = [p for p in cri.list_pod_sandbox() if p.id == sandbox_id]
    assert listed.annotations["netclaim.test/pod"] == "yes"
    status = cri.container_status(container_id)
    assert status.state == "CONTAINER_RUNNING"
    assert status.runtime_spec["process"]["args"] == ["/bin/sleep", "3600"]
    assert status.runtime_spec["annotations"]["io.kubernetes.cri.container-name"] == "main"


def test_failed_exec_reports_exit_code(cri: CriClient, make_pod: MakePod) -> None:
    _, container_id, _ = make_pod("exit-code")
    result = cri.exec_sync(container_id, ["sh", "-c", "echo oops >&2; exit 3"])
    assert (result.exit_code, result.stderr.strip()) == (3, "oops")


def test_errors_carry_code_and_message(cri: CriClient) -> None:
    with pytest.raises(CriError) as err:
        cri.pod_sandbox_status("does-not-exist")
    assert err.value.code.name == "NOT_FOUND"
    assert "not found" in err.value.details
    assert str(err.value).startswith("CRI PodSandboxStatus: NOT_FOUND: ")


def test_nri_socket_accepts_connections(containerd: Containerd) -> None:
    containerd.wait_nri(timeout=5.0)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(containerd.nri_socket))


def test_restart_keeps_pods(containerd: Containerd, cri: CriClient, make_pod: MakePod) -> None:
    first = make_pod("survivor-1")
    second = make_pod("survivor-2")
    old_pid = containerd.pid
    containerd.stop()
    assert containerd.pid is None
    assert os.path.exists(first.netns_path), "stopping containerd must not stop pods"
    containerd.start()
    assert containerd.pid not in (None, old_pid)
    listed = {p.id: p.state for p in cri.list_pod_sandbox()}
    assert listed == {first.sandbox_id: "SANDBOX_READY", second.sandbox_id: "SANDBOX_READY"}
    assert cri.exec_sync(second.container_id, ["true"]).exit_code == 0


def test_remove_pod_releases_netns(cri: CriClient, make_pod: MakePod) -> None:
    sandbox_id, _, netns = make_pod("short-lived")
    cri.remove_pod(sandbox_id)
    assert not os.path.exists(netns)
    assert sandbox_id not in {p.id for p in cri.list_pod_sandbox()}


def test_teardown_leaves_host_clean(containerd: Containerd) -> None:
    """A second instance of the same line, torn down with pods running: nothing of it may remain."""
    other = Containerd(containerd.line, containerd.workdir.parent / f"{containerd.workdir.name}-b")
    before = hoststate.snapshot(other.scope())
    try:
        other.start()
        with other.client() as client:
            pods = [client.run_pod_sandbox(f"leftover-{i}") for i in range(3)]
            client.run_busybox(pods[0])
        assert hoststate.bridge_ports(other.bridge), "pods must hang on the instance's bridge"
        assert hoststate.snapshot(other.scope()) != before
    finally:
        t0 = time.monotonic()
        other.teardown()
        elapsed = time.monotonic() - t0
    assert hoststate.diff(before, hoststate.snapshot(other.scope())) == []
    assert not other.workdir.exists()
    assert elapsed < 15, f"teardown took {elapsed:.1f}s"


def test_teardown_reports_and_removes_a_leak(containerd: Containerd) -> None:
    """The cleanliness check can fail: a busy pod cgroup and an orphan process are reported, then removed."""
    other = Containerd(containerd.line, containerd.workdir.parent / f"{containerd.workdir.name}-c")
    before = hoststate.snapshot(other.scope())
    leak = Path("/sys/fs/cgroup/pids") / other.cgroup_parent.strip("/") / "leak"
    sleeper = None
    try:
        other.start()
        leak.mkdir(parents=True)
        sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", str(other.workdir)])
        (leak / "cgroup.procs").write_text(f"{sleeper.pid}\n")
        with pytest.raises(TeardownError) as err:
            other.teardown()
        sleeper.wait(10)  # the forced clean-up killed it
    finally:
        if sleeper and sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()
        if leak.exists():
            leak.rmdir()
            leak.parent.rmdir()
    assert err.value.log is not None and err.value.log.is_file()
    err.value.log.unlink()
    message = str(err.value)
    assert str(leak) in message
    assert f"+ processes: ({sleeper.pid}," in message
    assert hoststate.diff(before, hoststate.snapshot(other.scope())) == []
