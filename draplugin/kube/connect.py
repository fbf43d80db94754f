"""Where a client's kube configuration comes from, resolved as kubectl does, and failures in one line.

The kubernetes client reports a missing kubeconfig as "Invalid kube-config file. Expected key
current-context in kube-config", an unreadable one as a bare traceback, and an apiserver that is down
as fifty lines of aiohttp. A person at a terminal needs what went wrong and what to try next: every
failure here becomes a `Failure(what, hint)`, which the CLI prints as one line.
"""

from __future__ import annotations

import ipaddress
import os
import urllib.parse
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from kubernetes.aio import client as kclient
from kubernetes.aio import config as kconfig

from draplugin.kube.raw import ApiReadError

HOME_KUBECONFIG = "~/.kube/config"
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class Failure(Exception):
    """An error a person can act on: what happened, and a hint of what to do about it."""

    def __init__(self, what: str, hint: str) -> None:
        super().__init__(what, hint)
        self.what = what
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.what} ({self.hint})"


@dataclass(frozen=True)
class Connection:
    configuration: kclient.Configuration
    namespace: str | None
    """The kubeconfig context's namespace (or the service account's in a pod); None when unset."""
    source: str
    """Where the configuration came from, for messages: the kubeconfig path(s) or the service account."""


def kubeconfig_paths(explicit: str | None, environ: Mapping[str, str]) -> list[str] | None:
    """kubectl's order: --kubeconfig, then $KUBECONFIG (a path list), then ~/.kube/config if it exists.

    None means "no kubeconfig": the caller falls back to the in-cluster service account.
    """
    if explicit:
        return [explicit]
    listed = [p for p in environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    if listed:
        return listed
    home = os.path.expanduser(HOME_KUBECONFIG)
    return [home] if os.path.exists(home) else None


async def connect(
    kubeconfig: str | None,
    *,
    context: str | None = None,
    search: bool = True,
    environ: Mapping[str, str] = os.environ,
) -> Connection:
    """Load a client configuration; Failure says why not.

    `search` looks where kubectl looks when no kubeconfig is given; without it (the daemon, whose
    --kubeconfig already defaults to $KUBECONFIG) no kubeconfig means the in-cluster service account.
    """
    if search:
        paths = kubeconfig_paths(kubeconfig, environ)
    else:  # the daemon's --kubeconfig defaults to $KUBECONFIG, which may be a path list
        paths = [p for p in (kubeconfig or "").split(os.pathsep) if p] or None
    if paths is None:
        if context:
            raise Failure(f"--context {context} needs a kubeconfig, and none was found", _where_hint(search))
        return _in_cluster(search)
    return await _from_kubeconfig(paths, context)


def _where_hint(search: bool) -> str:
    if search:
        return f"pass --kubeconfig, set KUBECONFIG or create {HOME_KUBECONFIG}"
    return "pass --kubeconfig or set KUBECONFIG, or run in a pod with a service account"


def _in_cluster(search: bool) -> Connection:
    configuration = kclient.Configuration()
    try:
        kconfig.load_incluster_config(client_configuration=configuration)
    except kconfig.ConfigException as error:
        raise Failure(f"no kubeconfig, and not running in a cluster: {error}", _where_hint(search)) from error
    return Connection(_settled(configuration), _service_account_namespace(), "in-cluster service account")


def _service_account_namespace() -> str | None:
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or None
    except OSError:
        return None


async def _from_kubeconfig(paths: Sequence[str], context: str | None) -> Connection:
    documents = _read_all(paths)
    existing = list(documents)
    source = os.pathsep.join(existing)
    _check_context(documents, context, source)
    configuration = kclient.Configuration()
    try:
        loader = await kconfig.load_kube_config(
            config_file=source,
            context=context or None,
            client_configuration=configuration,
            persist_config=False,
        )
    except kconfig.ConfigException as error:
        raise Failure(
            f"invalid kubeconfig {source}: {error}", "check it with `kubectl config view`"
        ) from error
    active: dict[str, Any] = loader.current_context or {}
    namespace = (active.get("context") or {}).get("namespace")
    return Connection(_settled(configuration), str(namespace) if namespace else None, source)


def _settled(
    configuration: kclient.Configuration, environ: Mapping[str, str] = os.environ
) -> kclient.Configuration:
    """The HTTP session without aiohttp's `trust_env`, the proxy taken from the environment here instead.

    The client's session trusts the environment, which in aiohttp means proxies *and* a ~/.netrc (or
    $NETRC) lookup before every request: a file read on a thread per call, and for a host the netrc
    names, credentials that aiohttp refuses to combine with the bearer token, so every request failed
    with a ValueError. What kubectl reads from the environment is the proxy: HTTPS_PROXY / HTTP_PROXY
    for the server's scheme unless NO_PROXY covers its host; a kubeconfig's proxy-url wins.
    """
    configuration.client_session_kwargs = {**(configuration.client_session_kwargs or {}), "trust_env": False}
    if not configuration.proxy:
        configuration.proxy = environment_proxy(configuration.host, environ)
    return configuration


def environment_proxy(server: str, environ: Mapping[str, str]) -> str | None:
    """The proxy the environment names for this server URL, read as Go's net/http (kubectl) reads it:
    HTTPS_PROXY or HTTP_PROXY by the URL's scheme, the upper-case name first; none for a loopback host or
    one NO_PROXY covers."""
    url = urllib.parse.urlsplit(server)
    proxy = _variable(environ, f"{url.scheme}_proxy") if url.scheme in ("http", "https") else None
    if not proxy or not url.hostname:
        return None
    if url.hostname.lower() == "localhost" or _loopback(url.hostname):
        return None  # as net/http: a local apiserver (a kind or `make demo` node) is never proxied
    port = url.port or (443 if url.scheme == "https" else 80)
    if any(_covers(entry, url.hostname, port) for entry in _variable(environ, "no_proxy").split(",")):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"  # `proxy:3128` means http, as in net/http


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _variable(environ: Mapping[str, str], name: str) -> str:
    return environ.get(name.upper()) or environ.get(name) or ""


def _covers(entry: str, host: str, port: int) -> bool:
    """One NO_PROXY entry: `*`, an IP or CIDR (a service network, say), or a domain with its subdomains
    (leading `.` or `*.` optional); `host:port` limits a name or IP entry to that port."""
    entry = entry.strip().lower()
    host = host.lower().rstrip(".")
    if entry == "*":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if "/" in entry:
        try:
            return address is not None and address in ipaddress.ip_network(entry, strict=False)
        except ValueError:
            return False
    named, _, wanted = entry.rpartition(":") if _has_port(entry) else (entry, "", "")
    if wanted and wanted != str(port):
        return False
    named = named.strip("[]").removeprefix("*").lstrip(".").rstrip(".")
    if not named:
        return False
    if address is not None:
        try:
            return address == ipaddress.ip_address(named)
        except ValueError:
            return False
    return host == named or host.endswith("." + named)


def _has_port(entry: str) -> bool:
    """`name:443` or `[2001:db8::1]:443`; a bare IPv6 address has colons but no port."""
    if entry.startswith("["):
        return "]:" in entry
    return entry.count(":") == 1


def _read_all(paths: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each existing kubeconfig, parsed; missing files are skipped as kubectl does, unless all are."""
    existing = [p for p in paths if os.path.lexists(os.path.expanduser(p))]
    if not existing:
        raise Failure(f"kubeconfig {os.pathsep.join(paths)} not found", "check --kubeconfig and KUBECONFIG")
    return {path: _read_one(path) for path in existing}


def _read_one(path: str) -> dict[str, Any]:
    try:
        text = Path(os.path.expanduser(path)).read_text()
    except OSError as error:
        raise Failure(
            f"cannot read kubeconfig {path}: {error.strerror or error}", "check the path and its permissions"
        ) from error
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise Failure(f"kubeconfig {path} is not valid YAML{where}", "fix or regenerate it") from error
    if not isinstance(document, dict):
        raise Failure(f"kubeconfig {path} is not a kubeconfig (not a mapping)", "fix or regenerate it")
    return document


def _check_context(documents: Mapping[str, dict[str, Any]], context: str | None, source: str) -> None:
    """The context asked for (or the current one) exists: the client would only say "Expected object"."""
    names = sorted(
        {
            str(c.get("name"))
            for doc in documents.values()
            for c in doc.get("contexts") or []
            if isinstance(c, dict)
        }
    )
    listed = f"contexts: {', '.join(names)}" if names else "it defines no context"
    if context:
        if context not in names:
            raise Failure(f"context {context!r} not found in kubeconfig {source}", listed)
        return
    # The client's merge lets the last file that sets current-context win; so does this check.
    current = [str(doc["current-context"]) for doc in documents.values() if doc.get("current-context")]
    if not current:
        raise Failure(f"kubeconfig {source} sets no current-context", f"pass --context; {listed}")
    if current[-1] not in names:
        raise Failure(f"current-context {current[-1]!r} of kubeconfig {source} does not exist", listed)


@asynccontextmanager
async def apiserver_errors(host: str, timeout_s: float) -> AsyncIterator[None]:
    """Turn what the HTTP client raises about the apiserver into a Failure naming the server."""
    try:
        yield
    except aiohttp.ClientConnectorCertificateError as error:
        raise Failure(
            f"the apiserver at {host} failed TLS verification: {error.certificate_error}",
            "check certificate-authority-data in the kubeconfig",
        ) from error
    except aiohttp.ClientConnectorError as error:
        reason = error.os_error.strerror or str(error.os_error)
        raise Failure(
            f"cannot reach the apiserver at {host}: {reason}",
            "is the cluster running? check the server in the kubeconfig or --context",
        ) from error
    except (TimeoutError, aiohttp.ServerTimeoutError) as error:
        raise Failure(
            f"the apiserver at {host} did not answer within {timeout_s:g} s", "is the cluster overloaded?"
        ) from error
    except aiohttp.ClientError as error:
        raise Failure(f"lost the connection to the apiserver at {host}: {error}", "try again") from error
    except ApiReadError as error:
        raise Failure(
            f"the apiserver at {host} refused the read: {error}",
            "check the kubeconfig user's credentials and its RBAC (get pods, list resourceclaims)",
        ) from error


def explain(error: BaseException) -> str | None:
    """The one line to print for an error a person can act on; None for a bug (keep its traceback).

    Follows explicit causes (`raise ... from`): the daemon wraps a component's failure in its own.
    """
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, Failure):
            return str(seen)
        if isinstance(seen, kconfig.ConfigException):
            return (
                f"invalid kube configuration: {seen} (check --kubeconfig, KUBECONFIG or the service account)"
            )
        seen = seen.__cause__
    return None
