"""The DevicePolicy/Node watcher against scripted apiserver answers: no CRD behaves as no policy and
says so once, failures are one log line and a retry (never a crash), watch events and Node labels
reach the book, and a Node's status heartbeat does not poke the publisher.

The real apiserver side is tests/apiserver/test_device_policy.py; here each answer is chosen.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from draplugin.kube import policies
from draplugin.kube.policies import PolicyWatcher
from draplugin.policy.book import Notice, PolicyBook


class Content:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def iter_any(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        await asyncio.Event().wait()  # a watch stays open until the server ends it

    async def read(self, limit: int) -> bytes:
        return b"".join(self.chunks)[:limit]


class Response:
    def __init__(self, status: int, body: Any = None, chunks: list[bytes] | None = None) -> None:
        self.status = status
        self.body = json.dumps(body).encode() if body is not None else b"{}"
        self.content = Content(chunks or [])

    async def read(self) -> bytes:
        return self.body

    def release(self) -> None:
        pass


def scripted(
    answers: list[Response | Exception],
) -> tuple[Callable[..., Awaitable[Any]], list[dict[str, Any]]]:
    """A list/watch call answering from `answers` in order, then never; records each call's arguments."""
    calls: list[dict[str, Any]] = []

    async def call(**kw: Any) -> Any:
        calls.append(kw)
        if not answers:
            await asyncio.Event().wait()
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return call, calls


def listed(*items: dict[str, Any], version: str = "10") -> Response:
    return Response(200, {"metadata": {"resourceVersion": version}, "items": list(items)})


def watched(*events: dict[str, Any], split: bool = False) -> Response:
    lines = b"".join(json.dumps(e).encode() + b"\n" for e in events)
    chunks = [lines[: len(lines) // 2], lines[len(lines) // 2 :]] if split else [lines]
    return Response(200, chunks=chunks)


def policy(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "uid": f"u-{name}"}, "spec": {"resources": [{"resourceName": name}]}}


def node(labels: dict[str, str], heartbeat: str = "t0") -> dict[str, Any]:
    return {"metadata": {"name": "node-a", "labels": labels}, "status": {"heartbeat": heartbeat}}


async def settle() -> None:
    for _ in range(50):
        await asyncio.sleep(0.005)


@pytest.fixture(autouse=True)
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policies, "RETRY_SECONDS", 0.001)


async def run(watcher: PolicyWatcher) -> None:
    task = asyncio.create_task(watcher.run())
    await settle()
    assert not task.done(), task  # never crashes
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_no_crd_is_no_policy_said_once_then_found(caplog: pytest.LogCaptureFixture) -> None:
    book = PolicyBook("node-a")
    pokes: list[None] = []
    absent = [Response(404, {"reason": "NotFound"}) for _ in range(3)]
    policies_call, calls = scripted(
        [*absent, listed(policy("p1")), watched({"type": "ADDED", "object": policy("p2")})]
    )
    nodes_call, _ = scripted([listed(node({"rack": "r1"})), watched()])
    watcher = PolicyWatcher(
        "node-a",
        book,
        lambda: pokes.append(None),
        policies=policies_call,
        nodes=nodes_call,
        recheck_seconds=0.001,
    )
    with caplog.at_level(logging.INFO, logger="draplugin.kube.policies"):
        await run(watcher)
    assert [p.name for p in book.policies] == ["p1", "p2"]
    assert book.labels == {"rack": "r1"} and book.ready.is_set()
    said = [r for r in caplog.records if "no DevicePolicy CRD" in r.getMessage()]
    assert len(said) == 1
    assert calls[4]["watch"] is True and calls[4]["resource_version"] == "10"
    assert len(pokes) >= 3  # no CRD, the list, the ADDED event (and the Node's labels)


async def test_failures_are_one_line_each_and_retried(caplog: pytest.LogCaptureFixture) -> None:
    book = PolicyBook("node-a")
    failing: list[Response | Exception] = [
        Response(500, {"message": "etcd down"}),
        OSError("connection reset"),
    ]
    policies_call, _ = scripted([*failing, listed(policy("p1")), watched()])
    nodes_call, _ = scripted([Response(403, {"message": "nodes is forbidden"}), listed(node({})), watched()])
    watcher = PolicyWatcher("node-a", book, lambda: None, policies=policies_call, nodes=nodes_call)
    with caplog.at_level(logging.INFO, logger="draplugin.kube.policies"):
        await run(watcher)
    assert [p.name for p in book.policies] == ["p1"] and book.labels == {}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("HTTP 500" in w and "etcd down" in w for w in warnings), warnings
    assert any("connection reset" in w for w in warnings), warnings
    assert any("Node node-a" in w and "HTTP 403" in w for w in warnings), warnings
    assert not any(r.exc_info for r in caplog.records)  # no traceback
    assert any("read again after 2 failed attempts" in r.getMessage() for r in caplog.records)


async def test_watch_events_and_label_changes_reach_the_book_heartbeats_do_not_poke() -> None:
    book = PolicyBook("node-a")
    pokes: list[str] = []
    events = [
        {"type": "ADDED", "object": policy("p2")},
        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}},
        {"type": "DELETED", "object": policy("p1")},
    ]
    policies_call, _ = scripted([listed(policy("p1")), watched(*events, split=True)])
    node_events = [
        {"type": "MODIFIED", "object": node({"rack": "r1"}, heartbeat="t1")},  # status only
        {"type": "MODIFIED", "object": node({"rack": "r2"}, heartbeat="t2")},
    ]
    nodes_call, _ = scripted([listed(node({"rack": "r1"})), watched(*node_events)])
    watcher = PolicyWatcher(
        "node-a", book, lambda: pokes.append("poke"), policies=policies_call, nodes=nodes_call
    )
    await run(watcher)
    assert [p.name for p in book.policies] == ["p2"]
    assert book.labels == {"rack": "r2"}
    assert len(pokes) == 3 + 2  # list, ADDED, DELETED; the first labels and the change, not the heartbeat


async def test_an_error_event_relists() -> None:
    book = PolicyBook("node-a")
    policies_call, calls = scripted(
        [
            listed(policy("p1")),
            watched({"type": "ERROR", "object": {"code": 410}}),
            listed(policy("p3")),
            watched(),
        ]
    )
    nodes_call, _ = scripted([listed(node({})), watched()])
    await run(PolicyWatcher("node-a", book, lambda: None, policies=policies_call, nodes=nodes_call))
    assert [p.name for p in book.policies] == ["p3"]
    assert len(calls) == 4


class FakeCore:
    """The one CoreV1Api call PolicyEvents makes, answering with `status`."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def create_namespaced_event_without_preload_content(
        self, namespace: str, body: dict[str, Any], **kw: Any
    ) -> Response:
        self.sent.append((namespace, body))
        return Response(self.status, {"message": "events is forbidden"} if self.status >= 300 else body)


@pytest.mark.parametrize(("status", "warned"), [(201, False), (403, True)])
async def test_events_go_on_the_policy_and_only_a_refusal_is_logged(
    caplog: pytest.LogCaptureFixture, status: int, warned: bool
) -> None:
    events = policies.PolicyEvents.__new__(policies.PolicyEvents)
    core = FakeCore(status)
    events._core = core
    events.driver, events.node, events._tasks = "netclaim.dev", "node-a", set()
    notice = Notice("b-wide", "uid-b", "DeviceConflict", "node node-a: 8 device(s) ...")
    with caplog.at_level(logging.WARNING, logger="draplugin.kube.policies"):
        events(notice)
        await settle()
    ((namespace, body),) = core.sent
    assert namespace == "default"
    assert body["involvedObject"] == {
        "apiVersion": "netclaim.dev/v1alpha1",
        "kind": "DevicePolicy",
        "name": "b-wide",
        "uid": "uid-b",
    }
    assert (body["reason"], body["type"], body["source"]) == (
        "DeviceConflict",
        "Warning",
        {"component": "netclaim.dev", "host": "node-a"},
    )
    refusals = [r.getMessage() for r in caplog.records if "Event on DevicePolicy b-wide" in r.getMessage()]
    assert bool(refusals) is warned, refusals
    if warned:
        assert "HTTP 403" in refusals[0]
