"""Admission latency of `netclaim webhook`: AdmissionReview POSTs over loopback HTTPS on one
keep-alive connection (as the apiserver sends them), a valid claim and a bad one alternating, timed
from the request write to the parsed response. The server runs on its own thread and loop, the
client is the standard library's http.client, so both sides' costs count (TLS, JSON, the parser).

usage: python -m bench.webhook [--requests N]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import ssl
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson
from testbed.pki import PKI

from bench.common import ms
from draplugin.admission.server import PATH, TlsFiles, WebhookServer
from draplugin.config import API_VERSION, KIND
from draplugin.model import DRIVER_NAME

CONFIG = {"apiVersion": API_VERSION, "kind": KIND}
GOOD = {**CONFIG, "netdev": {"interfaceName": "data0", "mtu": 9000, "addresses": ["203.0.113.5/24"]}}
BAD = {**CONFIG, "netdev": {"interfaceName": "a-name-longer-than-15-bytes", "mtu": 10}}


def review(parameters: object, uid: int) -> bytes:
    claim = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": f"c{uid}", "namespace": "bench"},
        "spec": {"devices": {"config": [{"opaque": {"driver": DRIVER_NAME, "parameters": parameters}}]}},
    }
    request = {
        "uid": f"uid-{uid}",
        "kind": {"group": "resource.k8s.io", "version": "v1", "kind": "ResourceClaim"},
        "operation": "CREATE",
        "namespace": "bench",
        "object": claim,
    }
    return orjson.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})


def measure(requests: int = 2000) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="netclaim-bench-webhook-") as directory:
        pki = PKI.create(Path(directory))
        pair = pki.serving("webhook", ["localhost"], ["127.0.0.1"])
        loop = asyncio.new_event_loop()
        server = WebhookServer("127.0.0.1", 0, TlsFiles(pair.cert, pair.key))
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
        try:
            return _run(server.port, pki.ca.cert, requests)
        finally:
            asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()


def _run(port: int, ca: Path, requests: int) -> dict[str, float]:
    context = ssl.create_default_context(cafile=str(ca))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
    bodies = [
        (review(GOOD, i), True) if i % 2 == 0 else (review(BAD, i), False) for i in range(requests + 50)
    ]
    samples: dict[bool, list[float]] = {True: [], False: []}
    for index, (body, good) in enumerate(bodies):
        started = time.perf_counter()
        conn.request("POST", PATH, body, {"Content-Type": "application/json"})
        answer = json.loads(conn.getresponse().read())
        elapsed = time.perf_counter() - started
        assert answer["response"]["allowed"] is good, answer
        if index >= 50:  # warm-up: TLS handshake, first imports
            samples[good].append(elapsed)
    conn.close()
    both = samples[True] + samples[False]
    return {
        "webhook_admission_ms_p50": ms(both, 50),
        "webhook_admission_ms_p99": ms(both, 99),
        "webhook_admission_allowed_ms_p50": ms(samples[True], 50),
        "webhook_admission_denied_ms_p50": ms(samples[False], 50),
        "webhook_requests": float(len(both)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.webhook", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.requests), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
