"""Kubeconfig files for test identities, pointing at certificate files rather than embedding them.

File references keep one source of truth for each key (the PKI directory) and let a reader of a failing
test open the exact cert a component used.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from testbed.pki import CertKey


def write(path: Path, server: str, ca: Path, identity: CertKey, user: str = "user") -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "netclaim", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [
            {
                "name": user,
                "user": {"client-certificate": str(identity.cert), "client-key": str(identity.key)},
            }
        ],
        "contexts": [{"name": "netclaim", "context": {"cluster": "netclaim", "user": user}}],
        "current-context": "netclaim",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
