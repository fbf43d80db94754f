#!/usr/bin/env python3
"""Write a one-layer OCI image archive (an oci-layout tar) from local files, with the stdlib only.

Why: the runtime tier has no registry and no Docker; `ctr images import` accepts an oci-layout tar, and
containerd names the image after the `io.containerd.image.name` annotation of the index entry. The
output is byte-for-byte reproducible for the same inputs (fixed mtimes, sorted entries), so the cache
can compare digests.

usage: mkimage.py OUT.tar NAME:TAG --file SRC:DST [...] [--link TARGET:DST ...] [--cmd ARG ...]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterable
from pathlib import PurePosixPath
from typing import Any

LAYER_MEDIA = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG_MEDIA = "application/vnd.oci.image.config.v1+json"
MANIFEST_MEDIA = "application/vnd.oci.image.manifest.v1+json"
PLATFORM = {"architecture": "amd64", "os": "linux"}


def _entry(name: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _parents(paths: Iterable[str]) -> list[str]:
    dirs: set[str] = set()
    for path in paths:
        for parent in PurePosixPath(path).parents:
            if str(parent) not in (".", ""):
                dirs.add(str(parent))
    return sorted(dirs)


def layer(files: list[tuple[str, str]], links: list[tuple[str, str]]) -> bytes:
    """The uncompressed layer tar: parent dirs, then regular files, then symlinks."""
    out = io.BytesIO()
    rel_files = [(src, dst.strip("/")) for src, dst in files]
    rel_links = [(target, dst.strip("/")) for target, dst in links]
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in _parents([dst for _, dst in rel_files + rel_links]):
            tar.addfile(_entry(d, tarfile.DIRTYPE, 0o755))
        for src, dst in sorted(rel_files, key=lambda f: f[1]):
            mode = os.stat(src).st_mode & 0o7777
            with open(src, "rb") as fh:
                data = fh.read()
            tar.addfile(_entry(dst, tarfile.REGTYPE, mode, len(data)), io.BytesIO(data))
        for target, dst in sorted(rel_links, key=lambda f: f[1]):
            info = _entry(dst, tarfile.SYMTYPE, 0o777)
            info.linkname = target
            tar.addfile(info)
    return out.getvalue()


def _add_blob(tar: tarfile.TarFile, data: bytes, media: str) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    tar.addfile(_entry(f"blobs/sha256/{digest}", tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
    return {"mediaType": media, "digest": f"sha256:{digest}", "size": len(data)}


def _add_json(tar: tarfile.TarFile, name: str, obj: object) -> None:
    data = json.dumps(obj, sort_keys=True).encode()
    tar.addfile(_entry(name, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))


def write_image(
    out: str, name: str, files: list[tuple[str, str]], links: list[tuple[str, str]], cmd: list[str]
) -> str:
    """Write the archive and return the manifest digest."""
    raw = layer(files, links)
    compressed = gzip.compress(raw, mtime=0)
    config = {
        **PLATFORM,
        "config": {"Cmd": cmd, "Env": ["PATH=/bin:/sbin:/usr/bin:/usr/sbin"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest()]},
        "history": [{"created_by": "netclaim hack/mkimage.py"}],
    }
    tmp = out + ".tmp"
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        _add_json(tar, "oci-layout", {"imageLayoutVersion": "1.0.0"})
        layer_desc = _add_blob(tar, compressed, LAYER_MEDIA)
        config_desc = _add_blob(tar, json.dumps(config, sort_keys=True).encode(), CONFIG_MEDIA)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA,
            "config": config_desc,
            "layers": [layer_desc],
        }
        manifest_desc = _add_blob(tar, json.dumps(manifest, sort_keys=True).encode(), MANIFEST_MEDIA)
        manifest_desc["platform"] = PLATFORM
        manifest_desc["annotations"] = {
            "io.containerd.image.name": name,
            "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1],
        }
        _add_json(tar, "index.json", {"schemaVersion": 2, "manifests": [manifest_desc]})
    os.replace(tmp, out)
    return str(manifest_desc["digest"])


def _pair(text: str) -> tuple[str, str]:
    left, sep, right = text.partition(":")
    if not sep or not left or not right:
        raise argparse.ArgumentTypeError(f"expected A:B, got {text!r}")
    return left, right


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("out")
    ap.add_argument("name")
    ap.add_argument("--file", type=_pair, action="append", default=[], metavar="SRC:DST")
    ap.add_argument("--link", type=_pair, action="append", default=[], metavar="TARGET:DST")
    ap.add_argument("--cmd", nargs="+", default=[])
    args = ap.parse_args()
    digest = write_image(args.out, args.name, args.file, args.link, args.cmd)
    print(f"{args.name} {digest} -> {args.out}")


if __name__ == "__main__":
    main()
