"""Choose the platform: the only module that knows every platform's package."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from cluster.errors import PlatformUnavailable
from cluster.guard import Attachment, check_context, current_context, kubeconfig_path
from cluster.platform import Platform
from cluster.settings import Settings

Progress = Callable[[str], None]


def docker_engine_answers(timeout: float = 1.0) -> bool:
    """True when a Docker engine answers /_ping on its socket (a client alone is not enough)."""
    host = docker_host()
    if not host.startswith("unix://"):
        return False  # remote engines are for --platform kind, chosen explicitly
    path = host.removeprefix("unix://")
    if not Path(path).exists():
        return False
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b" 200 " in sock.recv(64)
    except OSError:
        return False


def resolve(platform: str) -> tuple[str, str]:
    """The concrete platform name, and why it was chosen (for the header)."""
    if platform != "auto":
        return platform, "chosen with --platform"
    if docker_engine_answers():
        return "kind", "auto: a Docker engine answers"
    return "local", "auto: no Docker engine answers"


def docker_host() -> str:
    return os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")


def check_available(name: str, settings: Settings | None = None) -> None:
    """Fail fast (well under 2 s), with one line, before anything is created."""
    if name == "kubeconfig" and settings is not None:
        check_context(Attachment(settings.context or current_context(kubeconfig_path()), settings.context_allowlist,
                                 settings.allow_live_cluster, settings.allow_disruptive))
    if name == "kind" and not docker_engine_answers():
        raise PlatformUnavailable(f"the kind platform needs a Docker engine, and none answers at {docker_host()}",
                                  fix="start Docker, or use --platform local")


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
    """Connect to a platform another process (the xdist controller) brought up."""
    check_available(name, settings)
    if name == "kind":
        from cluster.kind.bringup import attach_kind

        return attach_kind(settings, state_path)
    if name == "kubeconfig":
        from cluster.kubeconfig.platform import attach_existing_worker

        return attach_existing_worker(settings, state_path)
    from cluster.local.bringup import attach_local

    return attach_local(settings, state_path)
