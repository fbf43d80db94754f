"""A fake kube-apiserver on loopback serving canned pods and ResourceClaims, and kubeconfigs pointing at it.

It runs on its own thread and event loop because the CLI under test calls `asyncio.run` itself; it
speaks plain HTTP on 127.0.0.1, which the real client accepts from a kubeconfig's `server`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

Json = dict[str, Any]


@dataclass
class FakeApi:
    pods: dict[tuple[str, str], Json]
    claims: list[Json]
    deny: bool = False
    """Answer every request 403, as an apiserver does for a user without RBAC."""
    paths: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    """Each request's Host header: the apiserver's name even when the request came through a proxy."""
    url: str = ""

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/api/v1/namespaces/{ns}/pods/{name}", self._pod)
        app.router.add_get("/apis/resource.k8s.io/v1/namespaces/{ns}/resourceclaims/{name}", self._claim)
        app.router.add_get("/apis/resource.k8s.io/v1/namespaces/{ns}/resourceclaims", self._claims)
        app.router.add_get("/apis/resource.k8s.io/v1/resourceclaims", self._claims)
        return app

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.paths.append(request.path)
        self.hosts.append(request.host)
        if self.deny:
            return web.json_response({"kind": "Status", "message": "forbidden", "code": 403}, status=403)
        response: web.StreamResponse = await handler(request)
        return response

    async def _pod(self, request: web.Request) -> web.Response:
        pod = self.pods.get((request.match_info["ns"], request.match_info["name"]))
        return web.json_response(pod) if pod else _not_found()

    async def _claim(self, request: web.Request) -> web.Response:
        ns, name = request.match_info["ns"], request.match_info["name"]
        claim = next((c for c in self.claims if _meta(c) == (ns, name)), None)
        return web.json_response(claim) if claim else _not_found()

    async def _claims(self, request: web.Request) -> web.Response:
        ns = request.match_info.get("ns")
        items = [c for c in self.claims if ns is None or _meta(c)[0] == ns]
        return web.json_response({"kind": "ResourceClaimList", "items": items})


def _meta(obj: Mapping[str, Any]) -> tuple[str, str]:
    return obj["metadata"]["namespace"], obj["metadata"]["name"]


def _not_found() -> web.Response:
    return web.json_response({"kind": "Status", "code": 404}, status=404)


@contextmanager
def serving(api: FakeApi) -> Iterator[FakeApi]:
    """Serve `api` on 127.0.0.1 (a free port) until the block ends; `api.url` is its address."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(api.app())
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    api.url = f"http://127.0.0.1:{port}"
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.run_until_complete(runner.cleanup())
        loop.close()


def write_kubeconfig(path: Path, contexts: Mapping[str, tuple[str, str | None]], current: str | None) -> Path:
    """A kubeconfig whose contexts map name → (server, namespace); token auth, no TLS."""
    document: Json = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server}} for name, (server, _) in contexts.items()],
        "users": [{"name": "me", "user": {"token": "t"}}],
        "contexts": [
            {"name": name, "context": {"cluster": name, "user": "me", **({"namespace": ns} if ns else {})}}
            for name, (_, ns) in contexts.items()
        ],
    }
    if current:
        document["current-context"] = current
    path.write_text(yaml.safe_dump(document))
    return path
