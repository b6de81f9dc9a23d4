"""helm, and the cert-manager chart, for rendering offline: both from the Go module proxy.

cluster/kind/helm/ is a small Go module whose ``tool`` directive pins helm.sh/helm/v3 at
[helm_build] in versions.toml (the version [tools.helm] downloads for kind). helm is built once,
as its Makefile builds it (CGO off, ``internal/version.version`` stamped), and cached under
``~/.cache/trustgrid/bin/helm-<version>/``. cert-manager ships its chart inside its Go module
(``deploy/charts/cert-manager``), so the chart comes from the module, hash-checked
(cluster/kind/charts.py): the one the kind platform installs. istio-csr's module is refused by the
proxy: its chart cannot be rendered here (tests/test_istio_csr_values.py reads the values it takes instead).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path

from cluster.errors import BinaryMissing
from cluster.kind.charts import load_pins, module_chart
from cluster.runstate import cache_dir, file_lock
from cluster.versions import VERSIONS_FILE

HELM_MODULE = Path(__file__).parent / "helm"
GO_HINT = "install Go 1.26+ (helm builds in about 3 minutes on 2 cores), or copy a helm {version} binary to {path}"


def _helm_version() -> str:
    return str(tomllib.loads(VERSIONS_FILE.read_text())["helm_build"]["module"])


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
    version = _helm_version()
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


def vault_chart(cache: Path | None = None) -> Path:
    """The Vault chart the kind platform installs: from the vault-helm module, hash-checked (cluster/kind/charts.py)."""
    return module_chart(load_pins()["vault"], cache or cache_dir())


def cert_manager_chart(cache: Path | None = None) -> Path:
    """The cert-manager chart the kind platform installs: from its Go module, hash-checked and stamped
    (cluster/kind/charts.py), under ``cache`` (``~/.cache/trustgrid``). Raises ChartUnavailable (one line)."""
    return module_chart(load_pins()["cert_manager"], cache or cache_dir())


def prometheus_chart(cache: Path | None = None) -> Path:
    """The Prometheus chart the kind platform installs beside Vault: from the prometheus-community module, with
    its subcharts from the same zip, hash-checked (cluster/kind/charts.py)."""
    return module_chart(load_pins()["prometheus"], cache or cache_dir())
