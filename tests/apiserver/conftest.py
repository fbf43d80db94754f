"""The apiserver tier: one real etcd + kube-apiserver (TLS, x509 clients, Node,RBAC) per test session.

Fixtures
--------
control_plane (session)
    A `testbed.apiserver.ControlPlane`, started once for the whole tier and torn down at the end
    (processes stopped and proven gone, work directory deleted). What a test usually needs:

    - ``control_plane.url``: ``https://127.0.0.1:<port>`` (loopback only; the port is picked at start)
    - ``control_plane.admin_kubeconfig``: a kubeconfig file for ``system:admin`` (group system:masters)
    - ``control_plane.ca_cert``: the CA file; ``control_plane.admin``: CertKey(cert, key) of the admin
    - ``control_plane.api_client(identity=None)``: a sync ``kubernetes.client.ApiClient`` (close it)
    - ``control_plane.aio_api_client(identity=None)``: a ``kubernetes.aio`` ApiClient; create it inside
      the test's event loop and ``await client.close()`` (or use the ``aio_api`` fixture)
    - other identities: ``control_plane.pki.driver()``, ``.kubelet("node-a")``, ``.scheduler()``,
      ``.controller_manager()``, ``.client(name, user, groups)`` mint x509 identities that the apiserver
      trusts; ``control_plane.kubeconfig_for(name, identity)`` writes a kubeconfig for one of them
    - outage: ``with control_plane.apiserver_outage(): ...`` stops kube-apiserver (etcd keeps running)
      and starts it again on the same port with the same certificates when the block ends
    - ``control_plane.apiserver.last_start_seconds``: the last time from exec to /readyz

    No kube-controller-manager or scheduler runs in this tier: nothing allocates claims, garbage-collects
    or finalizes namespaces unless the test (or the `namespace` fixture) does it.

admin_api (function)
    A sync admin ApiClient, closed after the test.

aio_api (function, async)
    A kubernetes.aio admin ApiClient on the test's loop, closed after the test.

namespace (function)
    The name of a fresh namespace; at the end everything in it is deleted and the namespace is finalized
    and gone (testbed.namespaces does the namespace controller's job).

Cluster-scoped objects (ResourceSlices, DeviceClasses) are not covered by `namespace`: delete them in the
test, and give them names unique to the test.

Missing etcd or kube-apiserver binaries skip the tier locally and fail it in CI (``make deps-apiserver``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator

import kubernetes.aio.client
import kubernetes.client
import pytest
from testbed import etcd, namespaces, prereq
from testbed.apiserver import ControlPlane, k8s_binary, running_control_plane


@pytest.fixture(scope="session")
def control_plane(record_testsuite_property: Callable[[str, object], None]) -> Iterator[ControlPlane]:
    try:
        etcd.binary()
        k8s_binary("kube-apiserver")
    except FileNotFoundError as error:
        prereq.missing(f"control-plane binary [{error}]", "make deps-apiserver")
    with running_control_plane() as plane:
        assert plane.apiserver.last_start_seconds is not None
        record_testsuite_property(
            "apiserver_cold_start_seconds", round(plane.apiserver.last_start_seconds, 3)
        )
        yield plane


@pytest.fixture
def admin_api(control_plane: ControlPlane) -> Iterator[kubernetes.client.ApiClient]:
    with contextlib.closing(control_plane.api_client()) as client:
        yield client


@pytest.fixture
async def aio_api(control_plane: ControlPlane) -> AsyncIterator[kubernetes.aio.client.ApiClient]:
    async with control_plane.aio_api_client() as client:
        yield client


@pytest.fixture
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    with contextlib.closing(control_plane.api_client()) as client:
        name = namespaces.create(client)
        yield name
        namespaces.delete(client, name)
