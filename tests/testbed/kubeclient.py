"""Kubernetes Python clients (sync and kubernetes.aio) for a test identity, never through a proxy.

Built from the PKI files directly instead of a kubeconfig so a test can pick any identity it minted.
The sync Configuration reads HTTP(S)_PROXY from the environment by default; a loopback test server must
never be reached through one, so the proxy is switched off explicitly.
"""

from __future__ import annotations

from pathlib import Path

import kubernetes.aio.client as aio_client
import kubernetes.client as sync_client

from testbed.pki import CertKey


def sync_configuration(url: str, ca: Path, identity: CertKey) -> sync_client.Configuration:
    config = sync_client.Configuration(host=url)
    config.proxy = None
    config.ssl_ca_cert = str(ca)
    config.cert_file = str(identity.cert)
    config.key_file = str(identity.key)
    return config


def sync_api_client(url: str, ca: Path, identity: CertKey) -> sync_client.ApiClient:
    return sync_client.ApiClient(sync_configuration(url, ca, identity))


def aio_configuration(url: str, ca: Path, identity: CertKey) -> aio_client.Configuration:
    config = aio_client.Configuration(host=url)
    config.proxy = None
    config.ssl_ca_cert = str(ca)
    config.cert_file = str(identity.cert)
    config.key_file = str(identity.key)
    return config


def aio_api_client(url: str, ca: Path, identity: CertKey) -> aio_client.ApiClient:
    """Create inside the event loop that will use it; close with `await client.close()` or `async with`."""
    return aio_client.ApiClient(aio_configuration(url, ca, identity))
