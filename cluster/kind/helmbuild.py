"""helm, and the cert-manager chart, for rendering offline: both from the Go module proxy.

cluster/kind/helm/ is a small Go module whose ``tool`` directive pins helm.sh/helm/v3 at
[helm_build] in versions.toml (the version [tools.helm] downloads for kind). helm is built once,
as its Makefile builds it (CGO off, ``internal/version.version`` stamped), and cached under
``~/.cache/trustgrid/bin/helm-<version>/``. cert-manager ships its chart inside its Go module
(``deploy/charts/cert-manager``, at [cert_manager] version), so the chart comes from the module
cache, not from a chart repository. istio-csr's module is refused by the proxy: its chart cannot be
rendered here (tests/test_istio_csr_values.py reads the values it takes instead).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path

from cluster.errors import BinaryMissing
from cluster.runstate import file_lock
from cluster.versions import VERSIONS_FILE

HELM_MODULE = Path(__file__).parent / "helm"
CERT_MANAGER_MODULE = "github.com/cert-manager/cert-manager"
GO_HINT = "install Go 1.26+ (helm builds in about 3 minutes on 2 cores), or copy a helm {version} binary to {path}"


def _pins() -> tuple[str, str]:
    data = tomllib.loads(VERSIONS_FILE.read_text())
    return str(data["helm_build"]["module"]), str(data["cert_manager"]["version"])


def _go(missing: str, fix: str) -> str:
    go = shutil.which("go")
    if go is None:
        raise BinaryMissing(f"{missing} and Go is not installed", fix=fix)
    return go


def _last_line(text: str) -> str:
    return (text.strip().splitlines() or ["no output"])[-1]


def _quiet(_: str) -> None:
    pass


def find_helm(cache: Path, *, progress: Callable[[str], None] = _quiet) -> Path:
    """The cached helm of [helm_build], built first when missing. Raises BinaryMissing (one line, with the fix)."""
    version, _ = _pins()
    path = cache / "bin" / f"helm-{version}" / "helm"
    with file_lock(cache / "locks" / "helm.lock"):
        if path.exists():
            return path
        go = _go(f"helm {version} is not cached at {path}", GO_HINT.format(version=version, path=path))
        if f"helm.sh/helm/v3 {version}" not in (HELM_MODULE / "go.mod").read_text():
            raise BinaryMissing(f"cluster/kind/helm/go.mod does not require helm.sh/helm/v3 {version}",
                                fix="pin the same version in cluster/versions.toml [helm_build]")
        progress(f"building helm {version} from its Go module, to render the kind path's charts offline (first run "
                 "only; about 3 minutes on 2 cores)")
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(".helm.partial")
        env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false"}
        result = subprocess.run([go, "build", "-trimpath", "-ldflags",
                                 f"-s -w -X helm.sh/helm/v3/internal/version.version={version}",
                                 "-o", str(partial), "helm.sh/helm/v3/cmd/helm"],
                                cwd=HELM_MODULE, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            partial.unlink(missing_ok=True)
            raise BinaryMissing(f"go build of helm {version} failed: {_last_line(result.stderr)}",
                                fix=GO_HINT.format(version=version, path=path))
        partial.rename(path)  # atomic: an interrupted build leaves no half binary
        return path


def cert_manager_chart() -> Path:
    """deploy/charts/cert-manager of the cert-manager module at [cert_manager] (downloaded when not cached)."""
    _, version = _pins()
    go = _go(f"the cert-manager chart {version} comes from its Go module",
             "install Go 1.26+ (the chart is read from the module cache)")
    result = subprocess.run([go, "mod", "download", "-json", f"{CERT_MANAGER_MODULE}@{version}"],
                            capture_output=True, text=True, check=False, cwd=HELM_MODULE)
    folder = Path(json.loads(result.stdout or "{}").get("Dir", "/nonexistent")) / "deploy" / "charts" / "cert-manager"
    if not (folder / "Chart.yaml").exists():
        raise BinaryMissing(f"the cert-manager chart is not in {CERT_MANAGER_MODULE} {version} ({folder}): "
                            f"{_last_line(result.stderr)}", fix="check access to the Go module proxy")
    return folder
