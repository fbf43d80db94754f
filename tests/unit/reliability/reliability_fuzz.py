"""Fuzz harnesses shared by the unit tier (short counts) and the soak tier (long counts).

Three targets, each through the real code and, where there is one, the real socket:

- opaque parameters → `draplugin.planner.plan_claim` (the validator as NodePrepareResources runs it):
  the only exception is `PlanError`, every problem names the claim and carries a field path that
  starts at a config entry that exists (`config[i]`/`classConfig[i]`) or at the device/request; and a
  plan that does come out never holds an unsafe interface name;
- malformed ttrpc and mux frames → a real `nriplugin.Stub` connected to a hostile runtime on a unix
  socket: after any input the connection answers a probe or is closed by the stub, never silent; input
  that is well framed on the Plugin connection must leave it answering; the stub reconnects afterwards;
- malformed DRA requests → `KubeletServers` on real grpc unix sockets: every claim gets an answer,
  every error names its claim, garbage bytes and huge batches neither crash nor hang the server.

Every socket read has a timeout: a hang is a failure with a message, not a stuck test run.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import select
import shutil
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from draplugin.allocation import AllocatedClaim, ConfigSource, OpaqueConfig
from draplugin.checkpoint import Checkpoint
from draplugin.config.fields import interface_name
from draplugin.kubelet.server import KubeletServers, SocketPaths
from draplugin.model import CharDevice, ClaimRef, DeviceKind, DeviceRef, PublishedDevice
from draplugin.pb.dra.v1 import api_pb2 as v1
from draplugin.pb.dra.v1 import api_pb2_grpc as v1_grpc
from draplugin.pb.dra.v1beta1 import api_pb2 as v1beta1
from draplugin.pb.dra.v1beta1 import api_pb2_grpc as v1beta1_grpc
from draplugin.planner import PlanError, plan_claim
from draplugin.planstore import PlanStore
from draplugin.prepare import Preparer
from nriplugin import Backoff, Plugin, Stub, api
from nriplugin.mux import PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN, encode_frames
from nriplugin.pb.ttrpc import ttrpc_pb2
from nriplugin.stub import PLUGIN_SERVICE
from nriplugin.ttrpc.errors import Code
from nriplugin.ttrpc.framing import Frame, FrameDecoder, MessageType, encode_frame

T = TypeVar("T")
DRIVER = "netclaim.dev"
NODE = "node-a"
POOL = "node-a"
API_VERSION = "netclaim.dev/v1alpha1"


def fuzz(examples: int, fuzz_seed: int) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Hypothesis settings for these harnesses: a fixed seed (printed by the callers), no deadline
    (the machine is shared and slow at times; hangs are caught by socket timeouts instead)."""

    def wrap(fn: Callable[..., None]) -> Callable[..., None]:
        configured = settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )(fn)
        return seed(fuzz_seed)(configured)

    return wrap


# =====================================================================================================
# opaque parameters through the planner
# =====================================================================================================

DEVICES: dict[str, PublishedDevice] = {
    "macvlan-up0": PublishedDevice("macvlan-up0", DeviceKind.MACVLAN, "up0", multi_allocatable=True),
    "ipvlan-up0": PublishedDevice("ipvlan-up0", DeviceKind.IPVLAN, "up0"),
    "veth": PublishedDevice("veth", DeviceKind.VETH, None, multi_allocatable=True),
    "nic-eth1": PublishedDevice("nic-eth1", DeviceKind.HOST_DEVICE, "eth1"),
    "vf-eth2v0": PublishedDevice("vf-eth2v0", DeviceKind.SRIOV_VF, "eth2v0"),
    "rdma-mlx0": PublishedDevice(
        "rdma-mlx0",
        DeviceKind.RDMA,
        None,
        char_devices=(
            CharDevice("/dev/infiniband/uverbs0", 231, 192),
            CharDevice("/dev/infiniband/rdma_cm", 10, 58),
        ),
    ),
}

_hostile = [
    "eth0",
    "net1",
    "",
    ".",
    "..",
    "../x",
    "a/b",
    "x" * 15,
    "x" * 16,
    "é" * 8,
    "n\x00",
    "n\n",
    "n 1",
    "n:1",
    "02:00:00:00:00:01",
    "01:00:00:00:00:00",
    "00:00:00:00:00:00",
    "203.0.113.5/24",
    "203.0.113.5",
    "203.0.113.0/24",
    "203.0.113.0/33",
    "2001:db8::1/64",
    "2001:db8::/32",
    "fe80::1%eth0/64",
    "bridge",
    "private",
    "l2",
    "l3s",
    "veth",
    "macvlan",
    "ipvlan",
    "host-device",
    "uverbs0",
    "rdma_cm",
    "../../dev/mem",
    API_VERSION,
    "NetworkConfig",
]
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.integers(-10, 70000)
    | st.floats(allow_nan=True)
    | st.text(max_size=24)
    | st.sampled_from(_hostile)
)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=16,
)
_route = st.dictionaries(st.sampled_from(["destination", "gateway", "metric", "via"]), _scalars, max_size=4)
_netdev_values = (
    _scalars
    | st.lists(st.sampled_from(_hostile) | _scalars, max_size=20)
    | st.lists(_route, max_size=4)
    | st.dictionaries(st.sampled_from(["mode", "hostInterfaceName", "x"]), _scalars, max_size=2)
    | _json
)
_netdev = st.dictionaries(
    st.sampled_from(
        [
            "kind",
            "interfaceName",
            "mtu",
            "hardwareAddress",
            "addresses",
            "routes",
            "macvlan",
            "ipvlan",
            "veth",
            "x",
        ]
    ),
    _netdev_values,
    max_size=9,
)
_document = st.fixed_dictionaries(
    {},
    optional={
        "apiVersion": st.just(API_VERSION) | _scalars,
        "kind": st.just("NetworkConfig") | _scalars,
        "netdev": _netdev | _json,
        "rdma": st.dictionaries(
            st.sampled_from(["devices", "x"]), st.lists(_scalars, max_size=18) | _scalars
        ),
        "extra": _json,
    },
)
_parameters = _document | _json


@st.composite
def allocated_claims(draw: st.DrawFn) -> AllocatedClaim:
    names = draw(st.lists(st.sampled_from([*DEVICES, "missing-dev"]), min_size=1, max_size=4))
    requests = [f"r{i}" for i in range(len(names))]
    devices = tuple(DeviceRef(r, DRIVER, POOL, n) for r, n in zip(requests, names, strict=True))
    configs = []
    counters = {ConfigSource.CLAIM: 0, ConfigSource.CLASS: 0}
    for _ in range(draw(st.integers(0, 4))):
        source = draw(st.sampled_from(list(ConfigSource)))
        chosen = tuple(draw(st.lists(st.sampled_from([*requests, "other"]), max_size=2)))
        driver = draw(st.sampled_from([DRIVER, DRIVER, "other.dev"]))
        configs.append(OpaqueConfig(source, counters[source], chosen, driver, draw(_parameters)))
        counters[source] += 1
    return AllocatedClaim(
        ref=ClaimRef("ns", draw(st.sampled_from(["c", "claim-x", "a.b"])), "uid-1"),
        allocated=draw(st.booleans() | st.just(True)),
        pod_uids=("pod-1",),
        devices=devices,
        configs=tuple(configs),
        node_names=draw(st.sampled_from([frozenset({NODE}), None, frozenset({"other"})])),
    )


_LABEL = re.compile(r"^(config|classConfig)\[(\d+)\]")


@dataclass
class OpaqueTally:
    cases: int = 0
    rejected: int = 0
    planned: int = 0
    problems: int = 0


def check_opaque(claim: AllocatedClaim, tally: OpaqueTally) -> None:
    tally.cases += 1
    try:
        plan = plan_claim(claim, DRIVER, NODE, DEVICES)
    except PlanError as error:
        tally.rejected += 1
        assert error.problems
        for part in str(error).split("; claim "):
            assert part.removeprefix("claim ").startswith(f"{claim.ref}"), str(error)
        labels = {c.label for c in claim.configs}
        for problem in error.problems:
            tally.problems += 1
            path = problem.error.path
            assert path, problem
            assert problem.error.message, problem
            match = _LABEL.match(path)
            if match:
                assert match.group(0) in labels, (path, labels)
            else:
                assert path.startswith(("device ", "status.allocation", "netdev.interfaceName")), problem
        return
    tally.planned += 1
    for device in plan.devices:
        if device.netdev is not None:
            assert interface_name(device.netdev.interface_name) == device.netdev.interface_name
            host = device.netdev.host_interface_name
            assert host is None or interface_name(host) == host
        for char_device in device.char_devices:
            assert char_device.path.startswith("/dev/infiniband/") and ".." not in char_device.path


def run_opaque_fuzz(examples: int, fuzz_seed: int) -> OpaqueTally:
    tally = OpaqueTally()

    @fuzz(examples, fuzz_seed)
    @given(allocated_claims())
    def body(claim: AllocatedClaim) -> None:
        check_opaque(claim, tally)

    body()
    return tally


# =====================================================================================================
# a loop in a thread, for servers under test driven by synchronous (blocking, timed-out) clients
# =====================================================================================================


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@contextlib.contextmanager
def short_tmp(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# =====================================================================================================
# hostile NRI runtime against a real Stub
# =====================================================================================================


class QuietPlugin(Plugin):
    async def run_pod_sandbox(self, pod: api.PodSandbox) -> None:
        return None


PROBE_STREAM = 0xFFFFFFFF
IO_TIMEOUT = 5.0

_methods = st.sampled_from(
    [
        "Configure",
        "Synchronize",
        "Shutdown",
        "StateChange",
        "CreateContainer",
        "UpdateContainer",
        "StopContainer",
    ]
)


@st.composite
def ttrpc_messages(draw: st.DrawFn) -> bytes:
    """One complete ttrpc message (header length = payload length) with hostile contents."""
    kind = draw(st.sampled_from(["request", "request", "garbage", "response", "data"]))
    if kind == "request":
        request = ttrpc_pb2.Request(
            service=draw(st.just(PLUGIN_SERVICE) | st.text(max_size=30)),
            method=draw(_methods | st.text(max_size=20)),
            payload=draw(st.binary(max_size=512)),
            timeout_nano=draw(st.integers(0, 2**63 - 1)),
        )
        for key, value in draw(st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8)), max_size=3)):
            request.metadata.add(key=key, value=value)
        payload = request.SerializeToString()
        mtype: int = MessageType.REQUEST
    else:
        payload = draw(st.binary(max_size=1024))
        mtype = {
            "garbage": draw(st.integers(0, 255)),
            "response": MessageType.RESPONSE,
            "data": MessageType.DATA,
        }[kind]
    stream = draw(st.integers(0, 0xFFFFFFFE) | st.sampled_from([0, 1, 2, 3, 5, 0xFFFFFFFD]))
    flags = draw(st.integers(0, 255))
    return encode_frame(stream, mtype, flags, payload)


@dataclass(frozen=True)
class TrunkInput:
    """What the hostile runtime sends after registering the stub."""

    chunks: tuple[bytes, ...]
    framed_on_plugin_conn: bool  # every byte is a well-formed mux frame of complete ttrpc messages on conn 1


@st.composite
def trunk_inputs(draw: st.DrawFn) -> TrunkInput:
    framed = draw(st.booleans())
    chunks: list[bytes] = []
    for _ in range(draw(st.integers(1, 6))):
        if framed:
            message = draw(ttrpc_messages())
            if draw(st.booleans()) and len(message) > 2:
                cut = draw(st.integers(1, len(message) - 1))  # one ttrpc message over two mux frames
                chunks += [
                    b"".join(encode_frames(PLUGIN_SERVICE_CONN, part))
                    for part in (message[:cut], message[cut:])
                ]
            else:
                chunks.append(b"".join(encode_frames(PLUGIN_SERVICE_CONN, message)))
            continue
        choice = draw(
            st.sampled_from(["raw", "conn", "lying-mux", "truncated-ttrpc", "huge-mux", "empty-mux"])
        )
        if choice == "raw":
            chunks.append(draw(st.binary(min_size=1, max_size=256)))
        elif choice == "conn":  # a complete message on another connection (2 = the stub's client side)
            conn = draw(st.sampled_from([RUNTIME_SERVICE_CONN, 0, 3, 0xFFFFFFFF]))
            message = draw(ttrpc_messages())
            chunks.append(struct.pack(">II", conn, len(message)) + message)
        elif choice == "lying-mux":  # a mux header whose length disagrees with what follows
            body = draw(st.binary(max_size=64))
            chunks.append(struct.pack(">II", PLUGIN_SERVICE_CONN, draw(st.integers(0, 1 << 24))) + body)
        elif choice == "truncated-ttrpc":  # a ttrpc header promising more than the mux frame holds
            header = struct.pack(">IIBB", draw(st.integers(0, 8 << 20)), 7, 1, 0)
            chunks.append(struct.pack(">II", PLUGIN_SERVICE_CONN, len(header)) + header)
        elif choice == "huge-mux":
            chunks.append(
                struct.pack(">II", PLUGIN_SERVICE_CONN, draw(st.integers((16 << 20) + 1, 0xFFFFFFFF)))
            )
        else:
            chunks.append(struct.pack(">II", draw(st.integers(0, 3)), 0))
    return TrunkInput(tuple(chunks), framed)


def _recv_exact(sock: socket.socket, size: int, deadline: float) -> bytes | None:
    """None on EOF; raises TimeoutError past the deadline."""
    data = b""
    while len(data) < size:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no data within the deadline ({len(data)}/{size} bytes)")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(size - len(data))
        except (ConnectionResetError, BrokenPipeError):
            return None
        if not chunk:
            return None
        data += chunk
    return data


class TrunkReader:
    """Reads mux frames from the stub and reassembles ttrpc messages per connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.decoders = {PLUGIN_SERVICE_CONN: FrameDecoder(), RUNTIME_SERVICE_CONN: FrameDecoder()}

    def next(self, deadline: float) -> tuple[int, Frame] | None:
        """The next complete ttrpc message from the stub, or None at EOF."""
        while True:
            header = _recv_exact(self.sock, 8, deadline)
            if header is None:
                return None
            conn, length = struct.unpack(">II", header)
            assert length <= (4 << 20) + 10, f"stub sent an implausible mux frame of {length} bytes"
            assert conn in self.decoders, f"stub wrote on mux connection {conn}"
            payload = _recv_exact(self.sock, length, deadline) if length else b""
            if payload is None:
                return None
            for frame in self.decoders[conn].feed(payload):
                assert isinstance(frame, Frame)
                return conn, frame


def send_message(sock: socket.socket, conn: int, message: bytes) -> None:
    sock.settimeout(IO_TIMEOUT)
    sock.sendall(b"".join(encode_frames(conn, message)))


@dataclass
class NriTally:
    sessions: int = 0
    survived: int = 0
    closed_by_stub: int = 0
    closed_after_eof: int = 0


class HostileRuntime:
    """A listening socket the Stub connects to; each example uses one fresh connection."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "nri.sock"
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.path))
        self.listener.listen(8)
        self.loop = LoopThread()
        self.stub = Stub(
            QuietPlugin(),
            "fuzz",
            "50",
            socket_path=str(self.path),
            backoff=Backoff(initial=0.001, maximum=0.01),
            registration_timeout=IO_TIMEOUT,
        )
        self.task = asyncio.run_coroutine_threadsafe(self.stub.run(), self.loop.loop)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.loop.run(self.stub.stop(), timeout=10)
        with contextlib.suppress(Exception):
            self.task.result(10)
        self.listener.close()
        self.loop.close()

    def accept(self) -> socket.socket:
        """The stub (re)connects on its own after every session; this proves it is still alive."""
        ready, _, _ = select.select([self.listener], [], [], IO_TIMEOUT)
        assert ready, f"the stub did not reconnect within {IO_TIMEOUT}s (task done: {self.task.done()})"
        conn, _ = self.listener.accept()
        return conn

    def register(self, sock: socket.socket, reader: TrunkReader) -> None:
        """Answer the stub's RegisterPlugin, as a runtime does."""
        got = reader.next(time.monotonic() + IO_TIMEOUT)
        assert got is not None, "stub closed before registering"
        conn, frame = got
        assert conn == RUNTIME_SERVICE_CONN and frame.type == MessageType.REQUEST, (conn, frame)
        request = ttrpc_pb2.Request.FromString(frame.payload)
        assert request.method == "RegisterPlugin", request
        response = ttrpc_pb2.Response(payload=api.Empty().SerializeToString())
        send_message(
            sock,
            RUNTIME_SERVICE_CONN,
            encode_frame(frame.stream_id, MessageType.RESPONSE, 0, response.SerializeToString()),
        )

    def session(self, data: TrunkInput, tally: NriTally) -> None:
        sock = self.accept()
        tally.sessions += 1
        try:
            reader = TrunkReader(sock)
            self.register(sock, reader)
            sent_all = True
            try:
                for chunk in data.chunks:
                    sock.settimeout(IO_TIMEOUT)
                    sock.sendall(chunk)
                probe = ttrpc_pb2.Request(service=PLUGIN_SERVICE, method="NoSuchMethod", payload=b"")
                send_message(
                    sock,
                    PLUGIN_SERVICE_CONN,
                    encode_frame(PROBE_STREAM, MessageType.REQUEST, 0, probe.SerializeToString()),
                )
            except (BrokenPipeError, ConnectionResetError):
                sent_all = False  # the stub already hung up on us: a clean close
            # Well-framed input must be answered: generous wait. Otherwise silence is a legitimate
            # outcome (an incomplete frame was declared), resolved below by ending the stream.
            wait = IO_TIMEOUT if data.framed_on_plugin_conn else 0.3
            outcome = self._await_probe(sock, reader, wait) if sent_all else "closed"
            if data.framed_on_plugin_conn:
                assert outcome == "answered", f"well-framed input on the Plugin connection ended as {outcome}"
            if outcome == "answered":
                tally.survived += 1
            elif outcome == "closed":
                tally.closed_by_stub += 1
            else:
                # Silence is legitimate only while a frame the input declared is incomplete; once we
                # end the stream the stub must notice and hang up.
                sock.shutdown(socket.SHUT_WR)
                deadline = time.monotonic() + IO_TIMEOUT
                while True:
                    try:
                        got = reader.next(deadline)
                    except TimeoutError:
                        raise AssertionError("stub neither answered nor closed after our EOF") from None
                    except AssertionError:
                        continue
                    if got is None:
                        break
                tally.closed_after_eof += 1
        finally:
            sock.close()

    def _await_probe(self, sock: socket.socket, reader: TrunkReader, wait: float) -> str:
        deadline = time.monotonic() + wait
        while True:
            try:
                got = reader.next(deadline)
            except TimeoutError:
                return "silent"
            if got is None:
                return "closed"
            conn, frame = got
            if conn == PLUGIN_SERVICE_CONN and frame.stream_id == PROBE_STREAM:
                assert frame.type == MessageType.RESPONSE
                response = ttrpc_pb2.Response.FromString(frame.payload)
                assert response.status.code in (Code.UNIMPLEMENTED, Code.INVALID_ARGUMENT), response
                return "answered"


def run_nri_fuzz(examples: int, fuzz_seed: int) -> NriTally:
    tally = NriTally()
    with short_tmp("ncfz-") as directory:
        runtime = HostileRuntime(directory)
        try:

            @fuzz(examples, fuzz_seed)
            @given(trunk_inputs())
            def body(data: TrunkInput) -> None:
                runtime.session(data, tally)

            body()
            # Still alive and still registering after everything.
            sock = runtime.accept()
            with contextlib.closing(sock):
                runtime.register(sock, TrunkReader(sock))
            assert not runtime.task.done()
        finally:
            runtime.close()
    return tally


# =====================================================================================================
# malformed DRA requests against the real kubelet sockets
# =====================================================================================================


class FlakyReader:
    """Claims from 'the API': none exist, except that names containing 'boom' fail like a transport."""

    async def read(self, namespace: str, name: str) -> AllocatedClaim | None:
        if "boom" in name:
            raise ConnectionError("apiserver unreachable")
        return None


class DraServer:
    def __init__(self, directory: Path) -> None:
        self.loop = LoopThread()
        self.paths = SocketPaths(
            driver=DRIVER, registry_dir=directory / "reg", plugins_dir=directory / "plugins"
        )

        async def build() -> KubeletServers:
            store = PlanStore.open(Checkpoint(directory / "state" / "plans.json"))
            preparer = Preparer(driver=DRIVER, node=NODE, reader=FlakyReader(), lookup=DEVICES, store=store)
            servers = KubeletServers(self.paths, preparer)
            await servers.start()
            return servers

        self.servers = self.loop.run(build())
        self.channel = grpc.insecure_channel(f"unix://{self.paths.dra}")
        self.v1 = v1_grpc.DRAPluginStub(self.channel)
        self.v1beta1 = v1beta1_grpc.DRAPluginStub(self.channel)

    def close(self) -> None:
        self.channel.close()
        self.loop.run(self.servers.stop(grace=1.0))
        self.loop.close()

    def raw(self, method: str, body: bytes, timeout: float = 10.0) -> grpc.StatusCode:
        call = self.channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        try:
            call(body, timeout=timeout)
        except grpc.RpcError as error:
            code: grpc.StatusCode = error.code()
            return code
        return grpc.StatusCode.OK


GARBAGE_CODES = (
    grpc.StatusCode.OK,  # bytes that happen to decode as a request
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.INVALID_ARGUMENT,
)
_claim_text = st.text(max_size=40) | st.sampled_from(["", "boom", "a/b", "../x", "x" * 300, "\x00"])
_claims = st.lists(st.tuples(_claim_text, _claim_text, _claim_text), max_size=40)


def check_prepare(server: DraServer, version: str, claims: list[tuple[str, str, str]]) -> int:
    """Every distinct UID gets an entry whose error names (one of) the claims with that UID."""
    pb = v1 if version == "v1" else v1beta1
    stub = server.v1 if version == "v1" else server.v1beta1
    request = pb.NodePrepareResourcesRequest(
        claims=[pb.Claim(namespace=n, name=m, uid=u) for n, m, u in claims]
    )
    response = stub.NodePrepareResources(request, timeout=30)
    assert set(response.claims) == {u for _, _, u in claims}
    names: dict[str, list[str]] = {}
    for n, m, u in claims:
        names.setdefault(u, []).append(f"claim {n}/{m}")
    for uid, result in response.claims.items():
        assert result.error, (uid, result)
        assert not result.devices
        assert any(result.error.startswith(name) for name in names[uid]), (result.error, names[uid])
    unprepare = stub.NodeUnprepareResources(
        pb.NodeUnprepareResourcesRequest(claims=[pb.Claim(namespace=n, name=m, uid=u) for n, m, u in claims]),
        timeout=30,
    )
    assert set(unprepare.claims) == {u for _, _, u in claims}
    assert all(not r.error for r in unprepare.claims.values())  # nothing prepared: nothing to fail
    return len(claims)


def run_dra_fuzz(server: DraServer, examples: int, fuzz_seed: int) -> int:
    total = 0

    @fuzz(examples, fuzz_seed)
    @given(st.sampled_from(["v1", "v1beta1"]), _claims, st.binary(max_size=200))
    def body(version: str, claims: list[tuple[str, str, str]], garbage: bytes) -> None:
        nonlocal total
        total += check_prepare(server, version, claims)
        # Garbage on the wire: a status for that call (grpcio answers an undecodable request with
        # UNKNOWN or INTERNAL), never a hang or a dead server; the next example proves it still serves.
        code = server.raw(f"/k8s.io.kubelet.pkg.apis.dra.{version}.DRAPlugin/NodePrepareResources", garbage)
        assert code in GARBAGE_CODES, code

    body()
    return total
