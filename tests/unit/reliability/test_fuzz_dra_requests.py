"""Malformed DRA requests against KubeletServers on real grpc unix sockets: no crash, no hang, every
error names its claim. Fuzzed batches (see reliability_fuzz.check_prepare) plus the edge cases a fuzzer
rarely builds on its own: empty batches, missing UIDs, 20,000 claims, an over-limit message, garbage on
the registration socket, and many concurrent callers."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from reliability_fuzz import DraServer, check_prepare, run_dra_fuzz, short_tmp

from draplugin.pb.dra.v1 import api_pb2 as v1
from draplugin.pb.pluginregistration.v1 import api_pb2 as reg
from draplugin.pb.pluginregistration.v1 import api_pb2_grpc as reg_grpc

EXAMPLES = 150
SEED = int(os.environ.get("NETCLAIM_FUZZ_SEED", "8203"))
V1_PREPARE = "/k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin/NodePrepareResources"


@pytest.fixture(scope="module")
def server() -> Iterator[DraServer]:
    with short_tmp("ncdra-") as directory:
        dra = DraServer(directory)
        try:
            yield dra
        finally:
            dra.close()


def alive(server: DraServer) -> None:
    response = server.v1.NodePrepareResources(
        v1.NodePrepareResourcesRequest(claims=[v1.Claim(namespace="ns", name="probe", uid="u-probe")]),
        timeout=10,
    )
    assert response.claims["u-probe"].error.startswith("claim ns/probe: not found")


def test_fuzzed_batches(server: DraServer) -> None:
    print(f"DRA request fuzz: {EXAMPLES} batches, seed {SEED}")
    claims = run_dra_fuzz(server, EXAMPLES, SEED)
    print(f"{claims} claims answered")
    assert claims > EXAMPLES
    alive(server)


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
def test_empty_batch_is_an_empty_answer(server: DraServer, version: str) -> None:
    assert check_prepare(server, version, []) == 0


def test_missing_uid_namespace_and_name_still_name_the_claim(server: DraServer) -> None:
    check_prepare(server, "v1", [("", "", ""), ("ns", "no-uid", ""), ("", "", "u1"), ("ns", "boom", "u2")])
    response = server.v1.NodePrepareResources(
        v1.NodePrepareResourcesRequest(claims=[v1.Claim(namespace="ns", name="boom", uid="u2")]), timeout=10
    )
    assert response.claims["u2"].error == "claim ns/boom: cannot read it from the API: apiserver unreachable"


def test_huge_batch_answers_every_claim(server: DraServer) -> None:
    claims = [("ns", f"c{i}", f"u{i}") for i in range(20_000)]
    t0 = time.monotonic()
    check_prepare(server, "v1", claims)
    print(f"20,000 claims prepared and unprepared in {time.monotonic() - t0:.2f}s")
    alive(server)


def test_over_limit_message_is_refused_and_the_server_survives(server: DraServer) -> None:
    huge = v1.NodePrepareResourcesRequest(claims=[v1.Claim(namespace="ns", name="x" * (5 << 20), uid="u")])
    with pytest.raises(grpc.RpcError) as refused:
        server.v1.NodePrepareResources(huge, timeout=30)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    alive(server)


@pytest.mark.parametrize("garbage", [b"\x00", b"\xff" * 64, b"\x0a\x05\x0a\x03", os.urandom(4096)], ids=repr)
def test_garbage_bytes_get_a_status_not_a_crash(server: DraServer, garbage: bytes) -> None:
    code = server.raw(V1_PREPARE, garbage)
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), code
    alive(server)


def test_registration_socket_survives_garbage(server: DraServer) -> None:
    with grpc.insecure_channel(f"unix://{server.paths.registration}") as channel:
        call = channel.unary_unary(
            "/pluginregistration.Registration/GetInfo", request_serializer=None, response_deserializer=None
        )
        for body in (b"\xff\xff", b"\x00", b""):
            try:
                call(body, timeout=10)
            except grpc.RpcError as error:
                assert error.code() in (
                    grpc.StatusCode.UNKNOWN,
                    grpc.StatusCode.INTERNAL,
                    grpc.StatusCode.UNIMPLEMENTED,
                )
        info = reg_grpc.RegistrationStub(channel).GetInfo(reg.InfoRequest(), timeout=10)
        assert info.name == "netclaim.dev"


def test_concurrent_callers_all_get_answers(server: DraServer) -> None:
    def one(i: int) -> int:
        return check_prepare(
            server, "v1" if i % 2 else "v1beta1", [("ns", f"p{i}-{j}", f"p{i}-{j}") for j in range(50)]
        )

    with ThreadPoolExecutor(16) as pool:
        assert sum(pool.map(one, range(64))) == 64 * 50
