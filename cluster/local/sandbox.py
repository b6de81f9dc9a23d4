"""One container of a local pod: its own root filesystem and mounts, then the container's process.

    ip netns exec NETNS unshare -m --propagation private python -m cluster.local.sandbox SPEC.json

Runs as root in the pod's network namespace and in a mount namespace of its own, so nothing it
mounts is seen outside. It builds the container's root the way a container runtime would, from
what is already on this machine:

- an overlay of the host's root file system with a private, in-memory upper layer (the container
  may create /etc/istio/proxy or write anywhere; the host's files are never touched);
- /proc, /dev and /sys from the host (the same PID namespace: the pod is a network and mount
  namespace, not a PID one), and private /tmp and /run;
- the image's files (tgpod, or pilot-agent with Envoy and its bootstrap template) and every
  volume of the spec bind-mounted at their paths, symlinks resolved inside the new root;

then changes root, drops to the container's user and group, and executes the container's command
with exactly its environment. SPEC.json is written by cluster/local/kubelet.py (no secrets in it:
tokens are files in the pod's volumes).
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from pathlib import Path
from typing import Any

MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 32, 4096, 16384, 1 << 18
_libc = ctypes.CDLL("libc.so.6", use_errno=True)


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    if _libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                   data.encode() if data else None) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {source} on {target} ({fstype or 'bind'}): {os.strerror(errno)}")


def inside(root: Path, path: str) -> Path:
    """``path`` as the container will see it once ``root`` is its root: symlinks (/var/run -> /run)
    resolved against the new root, never the host's. The result need not exist yet."""
    parts = [p for p in path.split("/") if p]
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        if candidate.is_symlink():
            hops += 1
            if hops > 40:
                raise OSError(f"too many symbolic links resolving {path} in {root}")
            link = os.readlink(candidate)
            parts = [p for p in link.split("/") if p] + parts
            if link.startswith("/"):
                resolved = []
            continue
        resolved.append(part)
    return root.joinpath(*resolved)


def _bind(source: str, target: Path, *, readonly: bool) -> None:
    if Path(source).is_dir():
        target.mkdir(parents=True, exist_ok=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch(exist_ok=True)
    _mount(source, str(target), None, MS_BIND | MS_REC)
    if readonly:
        _mount(source, str(target), None, MS_BIND | MS_REMOUNT | MS_RDONLY)


def build_root(spec: dict[str, Any]) -> Path:
    work = Path(spec["workdir"])
    _mount("none", "/", None, MS_REC | MS_PRIVATE)  # nothing mounted below propagates anywhere
    _mount("tmpfs", str(work), "tmpfs", 0, "mode=0755")
    for name in ("upper", "work", "root"):
        (work / name).mkdir()
    root = work / "root"
    _mount("overlay", str(root), "overlay", 0, f"lowerdir=/,upperdir={work / 'upper'},workdir={work / 'work'}")
    for system in ("proc", "dev", "sys"):
        _mount(f"/{system}", str(root / system), None, MS_BIND | MS_REC)
    for private in ("tmp", "run"):
        _mount("tmpfs", str(inside(root, f"/{private}")), "tmpfs", 0, "mode=1777" if private == "tmp" else "mode=0755")
    # Parents before children: /var/run/secrets/istio before /var/run/secrets/istio/crl.
    for mount in sorted(spec["mounts"], key=lambda m: len(Path(m["target"]).parts)):
        _bind(mount["source"], inside(root, mount["target"]), readonly=bool(mount.get("readonly")))
    return root


def main(argv: list[str]) -> None:
    spec = json.loads(Path(argv[0]).read_text())
    root = build_root(spec)
    os.chroot(root)
    os.chdir(spec.get("cwd") or "/")
    os.setgroups([])
    os.setgid(int(spec["gid"]))
    os.setuid(int(spec["uid"]))
    env = {str(k): str(v) for k, v in spec["env"].items()}
    command = list(spec["argv"])
    os.execvpe(command[0], command, env)  # noqa: S606 - the container's own command, as its spec says


if __name__ == "__main__":
    main(sys.argv[1:])
