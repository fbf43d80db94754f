#!/usr/bin/env python3
"""Write a one-layer OCI image archive (an oci-layout tar) from local files, with the stdlib only.

Why: the test bed has no registry and no Docker; `ctr images import` accepts an oci-layout tar, and
containerd names the image after the `io.containerd.image.name` annotation of the index entry. The
output is byte-for-byte reproducible for the same inputs (fixed mtimes, sorted entries), so the cache
can compare digests.

Two ways to fill the layer:
- `--file SRC:DST` / `--link TARGET:DST`: a handful of files (the static pause and busybox images);
- `--rootfs DIR`: a whole root filesystem (the netclaim image, hack/build-image.sh), with owners, modes,
  hard links and symlinks kept; the contents of /dev, /proc and /sys are left out (the runtime mounts
  them) and so are sockets and device nodes.

The image config takes Docker's keys (`--entrypoint`, `--cmd`, `--env`, `--label`, `--user`). `--variant
NAME:TAG --variant-label K=V` adds a second image to the same archive: the same layer blob, a config with
extra labels, so two tags (e.g. an upgrade test's "old" and "new") cost one layer.

usage: mkimage.py OUT.tar NAME:TAG (--file SRC:DST ... [--link TARGET:DST ...] | --rootfs DIR)
                  [--entrypoint ARG ...] [--cmd ARG ...] [--env K=V ...] [--label K=V ...] [--user U]
                  [--variant NAME:TAG --variant-label K=V ...] [--report OUT.json]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

LAYER_MEDIA = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG_MEDIA = "application/vnd.oci.image.config.v1+json"
MANIFEST_MEDIA = "application/vnd.oci.image.manifest.v1+json"
PLATFORM = {"architecture": "amd64", "os": "linux"}
DEFAULT_PATH = "PATH=/bin:/sbin:/usr/bin:/usr/sbin"
# Mount points whose contents belong to the runtime, not the image (the directories themselves stay).
RUNTIME_MOUNTS = ("dev", "proc", "sys")


@dataclass
class ImageConfig:
    """The Docker/OCI config keys this tool writes; absent ones are left out of the JSON."""

    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    user: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"Env": self.env or [DEFAULT_PATH]}
        if self.cmd or not self.entrypoint:
            out["Cmd"] = self.cmd
        if self.entrypoint:
            out["Entrypoint"] = self.entrypoint
        if self.labels:
            out["Labels"] = self.labels
        if self.user:
            out["User"] = self.user
        return out


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


def _walk(root: str) -> list[str]:
    """Every path under `root`, relative, parents before children, in a stable (sorted) order."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        dirnames.sort()
        if rel_dir in RUNTIME_MOUNTS:
            dirnames.clear()
            continue
        for name in sorted(dirnames + filenames):
            found.append(name if rel_dir == "." else f"{rel_dir}/{name}")
    # os.walk yields a directory's entries before descending, so each parent precedes its children;
    # a plain sort keeps that (a parent is a prefix) and makes the order independent of the walk.
    return sorted(found)


def rootfs_layer(root: str) -> bytes:
    """The uncompressed layer tar of a whole directory tree, owners and modes kept, mtimes zeroed."""
    out = io.BytesIO()
    seen: dict[tuple[int, int], str] = {}  # (dev, inode) of a multiply-linked file -> first name
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in _walk(root):
            path = os.path.join(root, rel)
            st = os.lstat(path)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                info = _entry(rel, tarfile.DIRTYPE, mode)
            elif stat.S_ISLNK(st.st_mode):
                info = _entry(rel, tarfile.SYMTYPE, 0o777)
                info.linkname = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in seen:
                    info = _entry(rel, tarfile.LNKTYPE, mode)
                    info.linkname = seen[key]
                else:
                    seen[key] = rel
                    info = _entry(rel, tarfile.REGTYPE, mode, st.st_size)
                    info.uid, info.gid = st.st_uid, st.st_gid
                    with open(path, "rb") as fh:
                        tar.addfile(info, fh)
                    continue
            else:  # sockets, fifos, device nodes: never part of an image
                continue
            info.uid, info.gid = st.st_uid, st.st_gid
            tar.addfile(info)
    return out.getvalue()


def _add_blob(tar: tarfile.TarFile, data: bytes, media: str) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    tar.addfile(_entry(f"blobs/sha256/{digest}", tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
    return {"mediaType": media, "digest": f"sha256:{digest}", "size": len(data)}


def _add_json(tar: tarfile.TarFile, name: str, obj: object) -> None:
    data = json.dumps(obj, sort_keys=True).encode()
    tar.addfile(_entry(name, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))


def write_archive(
    out: str, raw: bytes, images: list[tuple[str, ImageConfig]], *, compresslevel: int = 9
) -> dict[str, Any]:
    """Write one archive holding every (name, config) over the single layer `raw`.

    Returns a report: per image its manifest digest, and the layer's compressed and unpacked sizes.
    """
    compressed = gzip.compress(raw, compresslevel=compresslevel, mtime=0)
    diff_id = "sha256:" + hashlib.sha256(raw).hexdigest()
    tmp = out + ".tmp"
    entries: list[dict[str, Any]] = []
    report: dict[str, Any] = {"layer_compressed": len(compressed), "layer_unpacked": len(raw), "images": {}}
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        _add_json(tar, "oci-layout", {"imageLayoutVersion": "1.0.0"})
        layer_desc = _add_blob(tar, compressed, LAYER_MEDIA)
        for name, image_config in images:
            config = {
                **PLATFORM,
                "config": image_config.to_json(),
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                "history": [{"created_by": "netclaim hack/mkimage.py"}],
            }
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
            entries.append(manifest_desc)
            report["images"][name] = {"manifest": manifest_desc["digest"], "config": config_desc["digest"]}
        _add_json(tar, "index.json", {"schemaVersion": 2, "manifests": entries})
    os.replace(tmp, out)
    report["archive"] = os.path.getsize(out)
    return report


def write_image(
    out: str, name: str, files: list[tuple[str, str]], links: list[tuple[str, str]], cmd: list[str]
) -> str:
    """Write a one-image archive of a few files and return the manifest digest."""
    report = write_archive(out, layer(files, links), [(name, ImageConfig(cmd=cmd))])
    return str(report["images"][name]["manifest"])


def _pair(text: str) -> tuple[str, str]:
    left, sep, right = text.partition(":")
    if not sep or not left or not right:
        raise argparse.ArgumentTypeError(f"expected A:B, got {text!r}")
    return left, right


def _keyval(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("out")
    ap.add_argument("name")
    ap.add_argument("--file", type=_pair, action="append", default=[], metavar="SRC:DST")
    ap.add_argument("--link", type=_pair, action="append", default=[], metavar="TARGET:DST")
    ap.add_argument("--rootfs", metavar="DIR", help="pack this whole tree instead of --file/--link")
    ap.add_argument("--entrypoint", nargs="+", default=[])
    ap.add_argument("--cmd", nargs="+", default=[])
    ap.add_argument("--env", action="append", default=[], metavar="K=V")
    ap.add_argument("--label", type=_keyval, action="append", default=[], metavar="K=V")
    ap.add_argument("--user", default="")
    ap.add_argument("--variant", metavar="NAME:TAG", help="a second image: same layer, extra labels")
    ap.add_argument("--variant-label", type=_keyval, action="append", default=[], metavar="K=V")
    ap.add_argument("--compresslevel", type=int, default=9)
    ap.add_argument("--report", metavar="OUT.json", help="write digests and sizes here")
    args = ap.parse_args()
    if args.rootfs and (args.file or args.link):
        ap.error("--rootfs and --file/--link are exclusive")
    for env in args.env:
        _keyval(env)
    config = ImageConfig(
        entrypoint=args.entrypoint, cmd=args.cmd, env=args.env, labels=dict(args.label), user=args.user
    )
    images = [(args.name, config)]
    if args.variant:
        labels = {**config.labels, **dict(args.variant_label)}
        variant = ImageConfig(config.entrypoint, config.cmd, config.env, labels, config.user)
        images.append((args.variant, variant))
    raw = rootfs_layer(args.rootfs) if args.rootfs else layer(args.file, args.link)
    report = write_archive(args.out, raw, images, compresslevel=args.compresslevel)
    if args.report:
        with open(args.report, "w") as fh:
            json.dump(report, fh, indent=1, sort_keys=True)
    for name, digests in report["images"].items():
        print(f"{name} {digests['manifest']} -> {args.out}")


if __name__ == "__main__":
    main()
