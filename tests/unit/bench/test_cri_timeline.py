"""bench/cri_timeline.py against lines in the shape containerd's CRI logs them (1.7 and 2.x alike; the
podstart benchmark fails when a timed pod's calls are not found, so a changed format cannot pass
silently). Fractional seconds are truncated to the microsecond."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import cri_timeline

SANDBOX = "&PodSandboxMetadata{Name:%s,Uid:u-%s,Namespace:%s,Attempt:0,}"


def _lines(name: str, namespace: str, sandbox: str, container: str, second: int) -> list[str]:
    meta = SANDBOX % (name, name, namespace)
    at = f"2026-12-07T11:05:{second:02d}"
    return [
        f'time="{at}.100000000Z" level=info msg="RunPodSandbox for {meta}"',
        f'time="{at}.212345678Z" level=info '
        f'msg="RunPodSandbox for {meta} returns sandbox id \\"{sandbox}\\""',
        f'time="{at}.220000000Z" level=info msg="CreateContainer within sandbox \\"{sandbox}\\" '
        f'for container &ContainerMetadata{{Name:app,Attempt:0,}}"',
        f'time="{at}.250000000Z" level=info msg="CreateContainer within sandbox \\"{sandbox}\\" '
        f'for &ContainerMetadata{{Name:app,Attempt:0,}} returns container id \\"{container}\\""',
        f'time="{at}.260000000Z" level=info msg="StartContainer for \\"{container}\\""',
        f'time="{at}.300000001Z" level=info msg="StartContainer for \\"{container}\\" returns successfully"',
    ]


def test_points_of_each_pod_of_the_namespace(tmp_path: Path) -> None:
    log = tmp_path / "containerd.log"
    lines = [
        *_lines("1if-1", "bench", "aa11", "cc11", 1),
        *_lines("other", "kube-system", "aa22", "cc22", 2),
        'time="2026-12-07T11:05:03.000000000Z" level=warning msg="something else"',
        *_lines("plain-1", "bench", "aa33", "cc33", 4),
    ]
    log.write_text("\n".join(lines) + "\n")
    points = cri_timeline.read(log, "bench")
    assert sorted(points) == ["1if-1", "plain-1"]
    base = cri_timeline.wall_seconds("2026-12-07T11:05:01Z")
    pod = points["1if-1"]
    assert pod.sandbox_called == pytest.approx(base + 0.1, abs=1e-6)
    assert pod.sandbox_returned == pytest.approx(base + 0.212345, abs=1e-6)
    assert pod.container_started == pytest.approx(base + 0.3, abs=1e-6)
    assert points["plain-1"].sandbox_called == pytest.approx(base + 3.1, abs=1e-6)


def test_a_retried_sandbox_keeps_the_first_call_and_the_last_return(tmp_path: Path) -> None:
    first = _lines("1if-2", "bench", "dead", "beef", 5)[:2]
    log = tmp_path / "containerd.log"
    log.write_text("\n".join([*first, *_lines("1if-2", "bench", "f00d", "cafe", 7)]) + "\n")
    pod = cri_timeline.read(log, "bench")["1if-2"]
    base = cri_timeline.wall_seconds("2026-12-07T11:05:05Z")
    assert pod.sandbox_called == pytest.approx(base + 0.1, abs=1e-6)
    assert pod.sandbox_returned == pytest.approx(base + 2.212345, abs=1e-6)
    assert pod.container_started == pytest.approx(base + 2.3, abs=1e-6)


def test_wall_seconds_takes_nanoseconds_and_offsets() -> None:
    assert cri_timeline.wall_seconds("1970-01-01T00:00:01.123456789Z") == pytest.approx(1.123456)
    assert cri_timeline.wall_seconds("1970-01-01T01:00:01.5+01:00") == pytest.approx(1.5)
    assert cri_timeline.wall_seconds("1970-01-01T00:00:02Z") == 2.0
