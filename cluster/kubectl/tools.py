"""kind, kubectl, helm and istioctl: pinned, downloaded into the cache, checked, then used.

Order: a tool already on PATH at the pinned version; else the cached copy
(re-checked: a cache file is only trusted by its sum); else a download. A
download is written to a temporary file, its sha256 compared with the pin,
and only then unpacked, made executable and moved into place. A mismatch
deletes the file: nothing that failed its check is ever executed.
"""

from __future__ import annotations

import hashlib
import io
import os
import platform
import shutil
import subprocess
import tarfile
import tempfile
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cluster.errors import PlatformUnavailable
from cluster.versions import VERSIONS_FILE

Fetch = Callable[[str, float], bytes]


class ChecksumMismatch(PlatformUnavailable):
    """A download is not what its pin says: refused, deleted, never run."""


class DownloadFailed(PlatformUnavailable):
    """The network (or the download host) could not be reached."""


@dataclass(frozen=True)
class Tool:
    name: str
    version: str
    url_template: str
    sha256: str
    version_command: tuple[str, ...]
    member: str = ""  # the binary's path inside a .tar.gz; empty for a bare binary
    host: str = "linux/amd64"  # the OS/architecture the pinned download (and its sha256) is built for

    @property
    def url(self) -> str:
        return self.url_template.format(version=self.version)

    @property
    def archive_member(self) -> str:
        return self.member.format(version=self.version)


def load_tools(path: Path = VERSIONS_FILE, *, versions: dict[str, str] | None = None) -> dict[str, Tool]:
    """The pinned tools; ``versions`` picks another pinned version of a tool (the CI matrix's Istio)."""
    data = tomllib.loads(path.read_text())
    tools = {}
    for name, pinned in data.get("tools", {}).items():
        wanted = (versions or {}).get(name) or str(pinned["version"])
        spec = pinned
        if wanted != str(pinned["version"]):
            known = data.get("alternatives", {}).get(name, {})
            if wanted not in known:
                raise DownloadFailed(f"{name} {wanted} is not pinned",
                                     fix=f"choose {pinned['version']} or one of {', '.join(known) or 'none'}")
            spec = {**pinned, **known[wanted]}
        tools[name] = Tool(name=name, version=wanted, url_template=str(spec["url"]),
                           sha256=str(spec["sha256"]).lower(), version_command=tuple(spec.get("version_command", ())),
                           member=str(spec.get("member", "")), host=str(spec["host"]))
    return tools


class UnpinnedHost(PlatformUnavailable):
    """No pinned download of a tool for this host's OS and architecture."""


def host_platform() -> str:
    """This host as "os/arch" in Go's names (linux/amd64, darwin/arm64), as release archives name them."""
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)
    return f"{platform.system().lower()}/{arch}"


def debug_image(path: Path = VERSIONS_FILE) -> str:
    """The pinned image (by digest) of the ephemeral containers that capture traffic: [images] debug."""
    return str(tomllib.loads(path.read_text())["images"]["debug"])


def http_fetch(url: str, timeout: float) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - pinned https URLs only
            return bytes(response.read())
    except (urllib.error.URLError, TimeoutError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise DownloadFailed(f"cannot download {url} ({reason})",
                             fix="check the network or a proxy, or put the pinned tool on PATH") from None


def _on_path(tool: Tool) -> Path | None:
    """The tool on PATH, when it reports the pinned version."""
    found = shutil.which(tool.name)
    if not found:
        return None
    try:
        shown = subprocess.run([found, *tool.version_command], capture_output=True, text=True, timeout=10,
                               check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return Path(found) if tool.version.lstrip("v") in shown else None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _binary_from(tool: Tool, data: bytes) -> bytes:
    if not tool.member:
        return data
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        member = archive.extractfile(tool.archive_member)
        if member is None:
            raise DownloadFailed(f"{tool.url} has no {tool.archive_member}", fix="check the pin in versions.toml")
        return member.read()


def ensure_tool(tool: Tool, bin_dir: Path, *, fetch: Fetch = http_fetch, timeout: float = 120,
                use_path: bool = True, host: str | None = None) -> Path:
    """The path of a checked binary of the pinned tool.

    A tool on PATH at the pinned version is used on any host. Otherwise the pinned download must be
    for this host (``host``, default host_platform()): a download for another OS or architecture is
    refused with one line (UnpinnedHost) rather than fetched and failing with "exec format error".
    """
    if use_path and (found := _on_path(tool)):
        return found
    here = host or host_platform()
    if tool.host != here:
        raise UnpinnedHost(f"{tool.name} {tool.version} is pinned only for {tool.host}; this host is {here}",
                           fix=f"put {tool.name} {tool.version} on PATH (it is used when it reports that version), "
                               f"or add a {here} url and sha256 for it to cluster/versions.toml")
    target = bin_dir / f"{tool.name}-{tool.version}"
    stamp = bin_dir / f"{tool.name}-{tool.version}.sha256"  # "<pinned download sum> <binary sum>"
    if target.exists() and stamp.exists() and stamp.read_text().split() == [tool.sha256,
                                                                            _sha256(target.read_bytes())]:
        return target
    data = fetch(tool.url, timeout)
    actual = _sha256(data)
    if actual != tool.sha256:
        raise ChecksumMismatch(
            f"{tool.name} {tool.version} from {tool.url} has sha256 {actual}, the pin says {tool.sha256}; "
            "it was deleted and not run", fix="check cluster/versions.toml, or the network for tampering")
    binary = _binary_from(tool, data)
    bin_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=bin_dir, prefix=f".{tool.name}-", delete=False) as part:
        part.write(binary)
    os.chmod(part.name, 0o700)  # only after the check: a refused download is never executable
    os.replace(part.name, target)
    stamp.write_text(f"{tool.sha256} {_sha256(binary)}\n")
    return target
