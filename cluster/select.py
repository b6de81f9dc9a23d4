"""Choose the platform: the only module that knows every platform's package."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

from cluster.errors import PlatformUnavailable
from cluster.guard import Attachment, check_context, current_context, kubeconfig_path
from cluster.secrets import redact
from cluster.settings import Settings

if TYPE_CHECKING:  # for annotations only: the check of a wrong --platform must not wait for the Kubernetes client
    from cluster.platform import Platform

Progress = Callable[[str], None]


def docker_engine(timeout: float = 1.2) -> str | None:
    """Why no Docker engine answers, or None when one does.

    Asked of the Docker client (`docker version`), which honours contexts, DOCKER_HOST and
    Docker Desktop's socket, not of one socket path. Bounded by ``timeout`` seconds, so that
    `--platform kind` without an engine still fails in well under 2 s.
    """
    docker = shutil.which("docker")
    if docker is None:
        return "there is no docker command on PATH"
    try:
        result = subprocess.run([docker, "version", "--format", "{{.Server.Version}}"], capture_output=True,
                                text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return f"`docker version` did not answer in {timeout:g} s"
    except OSError as err:
        return f"`docker version` could not run ({err.strerror})"
    if result.returncode == 0 and result.stdout.strip():
        return None
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    return redact(lines[-1].rstrip(".") if lines else f"`docker version` exited {result.returncode}")


def docker_engine_answers(timeout: float = 1.2) -> bool:
    """True when the Docker client reaches an engine (a client alone is not enough)."""
    return docker_engine(timeout) is None


def resolve(platform: str) -> tuple[str, str]:
    """The concrete platform name, and why it was chosen (for the header)."""
    if platform != "auto":
        return platform, "chosen with --platform"
    if docker_engine_answers():
        return "kind", "auto: a Docker engine answers"
    return "local", "auto: no Docker engine answers"


def check_available(name: str, settings: Settings | None = None) -> None:
    """Fail fast (well under 2 s), with one line, before anything is created."""
    if name == "kubeconfig" and settings is not None:
        check_context(Attachment(settings.context or current_context(kubeconfig_path()), settings.context_allowlist,
                                 settings.allow_live_cluster, settings.allow_disruptive))
    if name == "kind" and (why := docker_engine()) is not None:
        raise PlatformUnavailable(f"the kind platform needs a Docker engine, and none answers: {why}",
                                  fix="start Docker, or use --platform local")
    if name == "kind" and settings is not None and settings.profile.setup.mesh.ca == "istio-csr":
        from cluster.kind.charts import istio_csr_source, load_pins

        istio_csr_source(settings.istio_csr_chart, load_pins()["istio_csr"])  # its one line, before anything runs


def open_platform(name: str, settings: Settings, progress: Progress) -> AbstractContextManager[Platform]:
    """Bring the platform up; the context manager tears down whatever it started."""
    check_available(name, settings)
    if name == "kind":
        from cluster.kind.bringup import start_kind

        return start_kind(settings, progress)
    if name == "kubeconfig":
        from cluster.kubeconfig.platform import attach_existing

        return attach_existing(settings, progress)
    from cluster.local.bringup import start_local

    return start_local(settings, progress)


def attach_platform(name: str, settings: Settings, state_path: Path) -> Platform:
    """Connect to a platform another process (the xdist controller) brought up; the controller checked
    that it is available (Docker, the context guard) before it did."""
    if name == "kind":
        from cluster.kind.bringup import attach_kind

        return attach_kind(settings, state_path)
    if name == "kubeconfig":
        from cluster.kubeconfig.platform import attach_existing_worker

        return attach_existing_worker(settings, state_path)
    from cluster.local.bringup import attach_local

    return attach_local(settings, state_path)


def attach_run(name: str, settings: Settings) -> tuple[Platform, Path]:
    """--attach RUN_ID: the live local platform of another process's run, and its state directory.

    Raises PlatformUnavailable (one line) when the run is not there, or its owner is gone."""
    from cluster.local.bringup import attach_live

    if name != "local" or settings.attach is None:
        raise PlatformUnavailable(f"--attach is for --platform local, not {name}", fix="add --platform local")
    return attach_live(settings, settings.attach)
