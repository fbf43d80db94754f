"""Fixtures of the runtime tier: a real, private containerd with NRI, driven over CRI like kubelet.

How to use them in tests/runtime/test_*.py (the `runtime` marker is applied from the directory):

``containerd`` (module scope, parametrized: ids ``containerd-1.7``, ``containerd-2.1``, ``containerd-2.2``
    and ``containerd-2.4``)
    A `testbed.containerd.Containerd`, already started with the pause and busybox images imported.
    Every test that uses it runs once per line. 1.7 and 2.1 are Debian's builds with bookworm's runc
    1.1.5; 2.2 and 2.4 are built from the Go module proxy with their own runc (1.4.x, 1.5.x). Useful
    attributes: ``line`` ("1.7"/"2.1"/"2.2"/"2.4"), ``version`` (what the cache recorded: the Debian
    version, e.g. "2.1.9+ds1-5", or "containerd v2.4.2 runc v1.5.3 nri v0.12.3"), ``cri_socket``,
    ``nri_socket`` (connect your NRI plugin here), ``nri_plugin_dir`` (pre-launched plugins),
    ``netns_dir`` (pod netns files), ``bridge``/``network`` (the CNI bridge and network name),
    ``cgroup_parent``, ``pid``, ``log_path``/``log_tail()``. Methods: ``stop()`` and ``start()``
    (restart containerd while pods keep running), ``wait_nri(timeout)`` (the NRI listener comes up
    after CRI; call it before connecting a plugin), ``client()`` (a new CriClient).
    At the end of the module it removes every pod, stops containerd and asserts the host is clean
    (links, netns, mounts, cgroups, shims); a leak fails the module's last test with TeardownError,
    whose message lists each leftover and where a copy of containerd's log was kept. Do not stop or
    restart containerd while a CRI call of yours is still in flight in another thread.

``cri`` (function scope)
    A `testbed.cri.CriClient` for that containerd. After the test it makes sure containerd is running
    and removes every pod and container, so each test starts with an empty runtime. Calls raise
    `testbed.cri.CriError` with ``.code`` (grpc.StatusCode) and ``.details`` (containerd's message, which
    carries an NRI plugin's error text, e.g. "NRI RunPodSandbox failed: ...").

``make_pod`` (function scope)
    ``make_pod(name="pod", *, uid=None, namespace="default", annotations=None, command=None)`` ->
    ``BusyboxPod(sandbox_id, container_id, netns_path)``: RunPodSandbox plus one running busybox
    container (``sleep 3600``). Same as ``testbed.cri.make_pod(cri, ...)``.

Blocking calls and asyncio: the client is synchronous. An asyncio test whose NRI plugin runs in the same
event loop must call it from a thread, or containerd waits on a plugin that cannot run::

    async def test_x(containerd, cri, make_pod):
        plugin = await start_plugin(containerd.nri_socket)   # your code
        sandbox_id, container_id, netns = await asyncio.to_thread(make_pod, "p1")
        result = await asyncio.to_thread(cri.exec_sync, container_id, ["ip", "-o", "addr"])
        assert "eth1" in result.stdout

Other helpers on CriClient: ``run_pod_sandbox``, ``pod_sandbox_status`` (state, ip, netns_path, pid,
verbose info), ``create_container``/``start_container``/``run_busybox``, ``exec_sync`` -> ExecResult
(exit_code, stdout, stderr), ``stop_container`` (timeout 0), ``remove_container``, ``stop_pod_sandbox``,
``remove_pod_sandbox``, ``remove_pod``, ``list_pod_sandbox``, ``list_containers``, ``version``,
``container_status`` (verbose: ``runtime_spec`` is the OCI spec as run, i.e. after NRI adjustments).

Outside pytest the same pieces are ``testbed.containerd.Containerd(line, workdir)`` (start/stop/teardown)
and ``hack/testbed.sh up runtime --containerd 2.1`` (detached; prints the socket paths).

Prerequisites: root and `make deps-runtime` (containerd 1.7 + 2.1 from Debian, 2.2 + 2.4 built by
hack/build-containerd.sh, CRI stubs and images in the cache).
Missing ones skip locally and fail under CI=true.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from testbed import prereq
from testbed.containerd import ALL_LINES, Containerd, RuntimeMissing, check_installed, installed_versions
from testbed.cri import BusyboxPod, CriClient, MakePod, StubsMissing, load_stubs
from testbed.cri import make_pod as _make_pod


def pytest_report_header(config: pytest.Config) -> str:
    """Debian mirrors keep only the newest build per suite: record what this run actually tested."""
    return "runtime tier: " + ", ".join(f"{k} {v}" for k, v in installed_versions().items())


def _require_runtime(line: str) -> None:
    if os.geteuid() != 0:
        prereq.missing("root (containerd, netns, cgroups)", "run the runtime tier as root")
    try:
        check_installed(line)
        load_stubs()
    except (RuntimeMissing, StubsMissing) as err:
        prereq.missing(f"containerd {line} test bed ({err})", "make deps-runtime")


@pytest.fixture(scope="module", params=ALL_LINES, ids=[f"containerd-{line}" for line in ALL_LINES])
def containerd(request: pytest.FixtureRequest) -> Iterator[Containerd]:
    line: str = request.param
    _require_runtime(line)
    ctd = Containerd(line, Path(tempfile.mkdtemp(prefix="nct-", dir="/tmp")))
    try:
        ctd.start()
    except BaseException:
        ctd.teardown()
        raise
    yield ctd
    ctd.teardown()


@pytest.fixture
def cri(containerd: Containerd) -> Iterator[CriClient]:
    client = containerd.client()
    yield client
    try:
        containerd.start()  # a test may have stopped it; pods are removed through CRI only
        client.remove_all()
    finally:
        client.close()


@pytest.fixture
def make_pod(cri: CriClient) -> MakePod:
    def make(name: str = "pod", **kwargs: Any) -> BusyboxPod:
        return _make_pod(cri, name, **kwargs)

    return make
