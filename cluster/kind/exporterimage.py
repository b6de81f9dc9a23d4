"""The audit exporter's image for the kind platform: ``docker build`` of cluster/kind/exporter.Dockerfile
from a context of only that file and the modules ``python -m cluster.audit`` imports (EXPORTER_MODULES;
tests/test_exporter_image.py proves the list is closed), then ``kind load``.

The base is ``[images] audit_exporter_base`` in cluster/versions.toml, by tag (no registry is reachable where
this was written, so no digest could be read); prometheus-client is the version installed here.
"""

from __future__ import annotations

import shutil
import tempfile
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from cluster.versions import VERSIONS_FILE

DOCKERFILE = Path(__file__).parent / "exporter.Dockerfile"
PACKAGE_ROOT = Path(__file__).parent.parent  # cluster/
# Relative to cluster/: the exporter, and what it imports (secrets for redaction, targets for the mesh CA's
# default role, with what those import).
EXPORTER_MODULES = ("__init__.py", "audit/__init__.py", "audit/__main__.py", "audit/exporter.py",
                    "audit/follow.py", "audit/reasons.py", "secrets.py", "targets.py", "errors.py",
                    "vaultlayout.py")


def base_image() -> str:
    return str(tomllib.loads(VERSIONS_FILE.read_text())["images"]["audit_exporter_base"])


@contextmanager
def exporter_context() -> Iterator[Path]:
    """A build context: ``Dockerfile`` and ``cluster/`` holding EXPORTER_MODULES only; removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="tg-exporter-image-") as folder:
        context = Path(folder)
        shutil.copyfile(DOCKERFILE, context / "Dockerfile")
        for module in EXPORTER_MODULES:
            target = context / "cluster" / module
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(PACKAGE_ROOT / module, target)
        yield context


def build_argv(tag: str, context: Path, *, docker: str = "docker") -> list[str]:
    """``docker build`` of the exporter image ``tag`` from ``context`` (exporter_context)."""
    return [docker, "build", "-t", tag, "--build-arg", f"BASE={base_image()}",
            "--build-arg", f"PROMETHEUS_CLIENT={metadata.version('prometheus-client')}",
            "-f", str(context / "Dockerfile"), str(context)]
