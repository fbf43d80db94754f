"""Run a CNI network configuration list per the CNI spec: ADD, DEL, CHECK over its plugins.

- ADD runs the plugins in order, each getting the previous plugin's result as `prevResult`; the
  last result is the network's result.
- DEL runs them in reverse, each with the cached ADD result as `prevResult` (0.4.0+); an ADD that
  fails part way runs DEL for the whole list, as the spec tells runtimes to.
- CHECK runs them in order with the cached result (skipped for `disableCheck`).
- GC (CNI 1.1) runs every plugin with `cni.dev/valid-attachments`, and then each plugin's IPAM plugin
  directly with the same config: main plugins up to v1.10 (macvlan, ipvlan, bridge) do not pass GC on to
  their IPAM, yet a leaked IPAM reservation is exactly what GC is for. GC is idempotent, so a plugin that
  does pass it on makes the second call a no-op.
- Each plugin's stdin is its own config plus `name` and `cniVersion` of the list, and `runtimeConfig`
  with the capabilities it declares; CNI_ARGS, CNI_IFNAME, CNI_NETNS, CNI_CONTAINERID, CNI_PATH
  go through the environment.
- Every plugin gets at most what is left of the operation's deadline: the RunPodSandbox hook runs
  inside containerd's 2 s NRI budget (README, Hazards), so a hanging plugin is killed in time for
  the hook to answer with an error instead of the runtime dropping the plugin connection.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from draplugin.cni import exec as cni_exec

Runner = Callable[[str, Mapping[str, str], bytes, float], Awaitable[cni_exec.Completed]]
MIN_PLUGIN_SECONDS = 0.05
"""Below this a plugin is not even started: it could not finish, and the error says why."""


@dataclass(frozen=True)
class Runtime:
    """The per-attachment values the runtime hands every plugin."""

    container_id: str
    netns: str
    """Empty when the sandbox's netns is gone: DEL must still release what the plugins hold (IPAM)."""
    ifname: str
    args: tuple[tuple[str, str], ...] = ()
    capabilities: Mapping[str, Any] = field(default_factory=dict)


class PluginError(Exception):
    """A plugin failed: names the plugin, the command and the CNI error code, msg and details."""

    def __init__(self, plugin: str, command: str, reason: str, code: int | None = None) -> None:
        super().__init__(f"CNI plugin {plugin} {command} failed: {reason}")
        self.plugin = plugin
        self.command = command
        self.code = code


class PluginNotFound(PluginError):
    pass


class Chain:
    """Finds plugins in `bin_dirs` (also CNI_PATH, for plugins that call IPAM plugins themselves)."""

    def __init__(self, bin_dirs: Sequence[str], runner: Runner = cni_exec.run) -> None:
        self.bin_dirs = tuple(bin_dirs)
        self._run = runner

    async def add(self, network: Mapping[str, Any], rt: Runtime, deadline: float) -> dict[str, Any]:
        """The network's result; on a failure the chain is deleted again and the error raised."""
        previous: dict[str, Any] | None = None
        try:
            for plugin in network["plugins"]:
                output = await self._invoke("ADD", network, plugin, rt, previous=previous, deadline=deadline)
                previous = _result(plugin["type"], output)
        except PluginError:
            await self.delete_quietly(network, rt, previous)
            raise
        if previous is None:
            raise PluginError(network["plugins"][-1]["type"], "ADD", "no result")
        return previous

    async def delete(
        self, network: Mapping[str, Any], rt: Runtime, previous: Mapping[str, Any] | None, deadline: float
    ) -> None:
        """Every plugin in reverse; all are tried, the first failure is raised after the others ran."""
        first: PluginError | None = None
        for plugin in reversed(network["plugins"]):
            try:
                await self._invoke("DEL", network, plugin, rt, previous=previous, deadline=deadline)
            except PluginError as error:
                first = first or error
        if first is not None:
            raise first

    async def delete_quietly(
        self, network: Mapping[str, Any], rt: Runtime, previous: Mapping[str, Any] | None
    ) -> None:
        """The clean-up after a failed ADD, on a budget of its own: the ADD's may be spent (a hung
        plugin), and what the earlier plugins made (an address in host-local) must not leak."""
        with contextlib.suppress(PluginError):
            await self.delete(network, rt, previous, time.monotonic() + CLEANUP_SECONDS)

    async def check(
        self, network: Mapping[str, Any], rt: Runtime, previous: Mapping[str, Any], deadline: float
    ) -> None:
        if network.get("disableCheck") is True:
            return
        for plugin in network["plugins"]:
            await self._invoke("CHECK", network, plugin, rt, previous=previous, deadline=deadline)

    async def gc(self, network: Mapping[str, Any], valid: Sequence[tuple[str, str]], deadline: float) -> None:
        """GC with the (container ID, interface) pairs still in use; all plugins are tried, the first
        failure is raised after the others ran."""
        if network.get("disableGC") is True:
            return
        attachments = [{"containerID": cid, "ifname": ifname} for cid, ifname in valid]
        # libcni also sends the spec's first, misspelt key (containernetworking/cni#1101).
        extra = {"cni.dev/valid-attachments": attachments, "cni.dev/attachments": attachments}
        rt = Runtime("", "", "")
        first: PluginError | None = None
        for plugin in network["plugins"]:
            targets = [plugin["type"]]
            ipam = plugin.get("ipam")
            if isinstance(ipam, Mapping) and isinstance(ipam.get("type"), str):
                targets.append(ipam["type"])
            for executable in targets:
                try:
                    await self._invoke(
                        "GC",
                        network,
                        plugin,
                        rt,
                        previous=None,
                        deadline=deadline,
                        extra=extra,
                        run=executable,
                    )
                except PluginError as error:
                    first = first or error
        if first is not None:
            raise first

    def find(self, plugin_type: str) -> str | None:
        for directory in self.bin_dirs:
            path = os.path.join(directory, plugin_type)
            if os.path.isfile(path) and os.access(path, os.X_OK):
                return path
        return None

    async def _invoke(
        self,
        command: str,
        network: Mapping[str, Any],
        plugin: Mapping[str, Any],
        rt: Runtime,
        *,
        previous: Mapping[str, Any] | None,
        deadline: float,
        extra: Mapping[str, Any] | None = None,
        run: str | None = None,
    ) -> bytes:
        """`run` names another executable than the plugin's own type, given the plugin's config (GC of
        an IPAM plugin); `extra` keys are added to the config (GC's valid attachments)."""
        kind = run or plugin["type"]
        executable = self.find(kind)
        if executable is None:
            raise PluginNotFound(kind, command, f"no executable {kind!r} in {':'.join(self.bin_dirs)}")
        remaining = deadline - time.monotonic()
        if remaining < MIN_PLUGIN_SECONDS:
            raise PluginError(kind, command, "no time left in the hook's budget to run it")
        stdin = json.dumps(
            {**plugin_config(network, plugin, rt.capabilities, previous), **(extra or {})}
        ).encode()
        try:
            done = await self._run(executable, self._env(command, rt), stdin, remaining)
        except cni_exec.TimedOut as timeout:
            raise PluginError(kind, command, f"killed after {timeout.timeout:.2f} s (timeout)") from timeout
        except OSError as error:
            raise PluginError(kind, command, f"cannot start {executable}: {error}") from error
        if done.returncode != 0:
            code, reason = _error(done)
            raise PluginError(kind, command, reason, code)
        return done.stdout

    def _env(self, command: str, rt: Runtime) -> dict[str, str]:
        return {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": rt.container_id,
            "CNI_NETNS": rt.netns,
            "CNI_IFNAME": rt.ifname,
            "CNI_ARGS": ";".join(f"{key}={value}" for key, value in rt.args),
            "CNI_PATH": ":".join(self.bin_dirs),
        }


CLEANUP_SECONDS = 0.4


def plugin_config(
    network: Mapping[str, Any],
    plugin: Mapping[str, Any],
    capabilities: Mapping[str, Any],
    previous: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """A plugin's stdin: its config, the list's name and version, and what the runtime adds."""
    config = dict(plugin)
    config["name"] = network["name"]
    config["cniVersion"] = network["cniVersion"]
    declared = plugin.get("capabilities")
    if isinstance(declared, Mapping):
        runtime = {key: value for key, value in capabilities.items() if declared.get(key) is True}
        if runtime:
            config["runtimeConfig"] = runtime
    if previous is not None:
        config["prevResult"] = previous
    return config


def _result(plugin: str, output: bytes) -> dict[str, Any]:
    try:
        value = json.loads(output)
    except ValueError:
        raise PluginError(plugin, "ADD", f"printed no JSON result: {_shown(output)}") from None
    if not isinstance(value, dict):
        raise PluginError(plugin, "ADD", "printed a result that is not a JSON object")
    return value


def _error(done: cni_exec.Completed) -> tuple[int | None, str]:
    """The CNI error object on stdout (`code`, `msg`, `details`), else what stderr says."""
    try:
        value = json.loads(done.stdout)
    except ValueError:
        value = None
    if isinstance(value, dict) and "code" in value:
        code = value.get("code")
        text = f"code {code}: {value.get('msg', '')}"
        if value.get("details"):
            text += f" ({value['details']})"
        return (code if isinstance(code, int) else None), text
    detail = _shown(done.stderr or done.stdout) or "no output"
    return None, f"exit status {done.returncode}: {detail}"


def _shown(output: bytes, limit: int = 300) -> str:
    text = output.decode("utf-8", "replace").strip()
    return text if len(text) <= limit else text[:limit] + "…"
