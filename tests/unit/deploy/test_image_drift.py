"""The Dockerfile and hack/build-image.sh describe one image: this keeps them from drifting.

Why: users with Docker build from the Dockerfile, the test bed (no Docker) from hack/build-image.sh; a
difference between them would mean the tests run another image than the one users get. Compared: the
Debian suite and Python packages (hence the same Debian python3), the venv path and the commands that
fill it (same wheel source, installed with --no-index from those wheels only, so the same
distributions), the console scripts on PATH, ENV, labels, ENTRYPOINT, USER and the copied sources. The
build script prints its spec (`--print-spec`); the Dockerfile is parsed here. What the built image
really holds (Python version, `pip freeze`) is checked against the pins by tests/runtime/test_image.py.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import tomllib
from dataclasses import dataclass, field
from typing import Any

from testbed.paths import REPO

# What `FROM debian:<suite>-slim` sets: Docker's default PATH, the only ENV of Debian's images.
DOCKER_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class Stage:
    """One build stage of a Dockerfile, reduced to what the comparison needs."""

    base: str
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)
    copies: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    user: str = ""


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _pairs(args: str) -> dict[str, str]:
    return dict(word.split("=", 1) for word in shlex.split(args))


def parse_dockerfile(text: str) -> list[Stage]:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for instr, rest in _instructions(text):
        if instr == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif instr == "FROM":
            image = rest.split()[0]
            stages.append(Stage(re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)))
        elif instr == "ENV":
            stages[-1].env.update(_pairs(rest))
        elif instr == "LABEL":
            stages[-1].labels.update(_pairs(rest))
        elif instr == "RUN":
            stages[-1].runs.append(re.sub(r"^(--mount=\S+\s+)+", "", rest))
        elif instr == "COPY" and "--from" not in rest:
            stages[-1].copies += [src.rstrip("/").removeprefix("./") for src in rest.split()[:-1]]
        elif instr == "ENTRYPOINT":
            stages[-1].entrypoint = json.loads(rest)
        elif instr == "USER":
            stages[-1].user = rest
    return stages


def _commands(run: str) -> list[list[str]]:
    return [shlex.split(part) for part in run.split("&&")]


def _apt_packages(stage: Stage) -> list[str]:
    for run in stage.runs:
        for cmd in _commands(run):
            if cmd[:2] == ["apt-get", "install"]:
                return sorted(word for word in cmd[2:] if not word.startswith("-"))
    raise AssertionError(f"stage FROM {stage.base} installs no Debian package")


def spec() -> dict[str, Any]:
    out = subprocess.run(
        [str(REPO / "hack" / "build-image.sh"), "--print-spec"], capture_output=True, text=True, check=True
    ).stdout
    result: dict[str, Any] = json.loads(out)
    return result


def drift(dockerfile: str, image: dict[str, Any]) -> list[str]:
    """Every difference between a Dockerfile's final image and the build script's spec."""
    stages = parse_dockerfile(dockerfile)
    build, final = stages[0], stages[-1]
    problems: list[str] = []

    def same(what: str, docker: object, script: object) -> None:
        if docker != script:
            problems.append(f"{what}: Dockerfile {docker!r} != build-image.sh {script!r}")

    for stage in (build, final):
        same(f"base of stage FROM {stage.base}", stage.base, f"debian:{image['suite']}-slim")
        same(f"Debian packages of stage FROM {stage.base}", _apt_packages(stage), sorted(image["packages"]))
    venv = image["venv"]
    commands = [cmd for run in final.runs for cmd in _commands(run)]
    same("venv", ["python3", "-m", "venv", venv] in commands, True)
    install = [f"{venv}/bin/pip", "install", "--no-index", "--find-links", "/wheels", "netclaim"]
    same("wheel install", install in commands, True)
    links = sorted(cmd[-1].rsplit("/", 1)[-1] for cmd in commands if cmd[:2] == ["ln", "-s"])
    link_targets = {cmd[2]: cmd[3] for cmd in commands if cmd[:2] == ["ln", "-s"]}
    same("console scripts on PATH", links, sorted(image["scripts"]))
    for script in image["scripts"]:
        same(f"link of {script}", link_targets.get(f"{venv}/bin/{script}"), f"/usr/local/bin/{script}")
    same("wheels built from the sources", "pip wheel --wheel-dir /wheels ." in " ".join(build.runs), True)
    same("copied sources", sorted(build.copies), sorted(image["sources"]))
    env = {"PATH": DOCKER_DEFAULT_PATH, **final.env}
    same("ENV", env, image["env"])
    same("LABEL", final.labels, image["labels"])
    same("ENTRYPOINT", final.entrypoint, image["entrypoint"])
    same("USER", final.user, image["user"])
    return problems


def test_dockerfile_and_build_script_describe_one_image() -> None:
    problems = drift((REPO / "Dockerfile").read_text(), spec())
    assert not problems, "Dockerfile and hack/build-image.sh drifted:\n  " + "\n  ".join(problems)


def test_every_console_script_is_on_path() -> None:
    """A console script added to pyproject must reach /usr/local/bin in both images."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert sorted(spec()["scripts"]) == sorted(project["scripts"])


def test_image_tags_follow_the_chart_app_version() -> None:
    chart = (REPO / "deploy" / "helm" / "netclaim" / "Chart.yaml").read_text()
    (app_version,) = re.findall(r'^appVersion:\s*"?([^"\s]+)"?', chart, re.MULTILINE)
    tags = spec()["tags"]
    assert tags == [
        f"localhost/netclaim/netclaim:{app_version}",
        f"localhost/netclaim/netclaim:{app_version}-next",
    ]


def test_drift_is_detected() -> None:
    """The comparison itself can fail: each kind of change to the Dockerfile is reported."""
    text = (REPO / "Dockerfile").read_text()
    image = spec()
    assert drift(text, image) == []
    mutations = {
        "ENV": text.replace("PYTHONUNBUFFERED=1", "PYTHONUNBUFFERED=0"),
        "LABEL": text.replace('licenses="Apache-2.0"', 'licenses="MIT"'),
        "ENTRYPOINT": text.replace('ENTRYPOINT ["netclaim", "run"]', 'ENTRYPOINT ["netclaim"]'),
        "base": text.replace("ARG BASE_IMAGE=debian:bookworm-slim", "ARG BASE_IMAGE=python:3.12-slim"),
        "Debian packages": text.replace("python3 python3-venv \\", "python3 python3-venv python3-pip \\", 1),
        "wheel install": text.replace("--no-index --find-links /wheels netclaim", "netclaim"),
        "USER": text.replace("USER 0:0", "USER 65534:65534"),
        "venv": text.replace("python3 -m venv /opt/netclaim", "python3 -m venv /opt/other"),
    }
    for what, mutated in mutations.items():
        assert mutated != text, f"mutation {what} did not apply"
        found = drift(mutated, image)
        assert any(what in problem for problem in found), (what, found)
