"""Where the pieces of an existing cluster live, from options: parsed once, one line on bad input.

An existing cluster was set up by someone else, so nothing is assumed: the
Vault address (as the test process reaches it, and as pods reach it), the
mounts it uses, the Vault workload and the mesh CA deployment to scale for
the down faults, and the workload image the cluster can pull.
"""

from __future__ import annotations

import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cluster.errors import SettingsError
from cluster.vaultlayout import VaultLayout

DEFAULT_VAULT_WORKLOAD = "vault/statefulset/vault"
DEFAULT_MESH_CA = "cert-manager/deployment/cert-manager-istio-csr"
DEFAULT_MESH_CA_ROLE = "mesh-ca"
LAYOUT_KEYS = {"auth": "kubernetes_path", "kv": "kv_path", "pki": "pki_root_path", "pki_int": "pki_int_path"}


@dataclass(frozen=True)
class Workload:
    """A namespaced workload as kubectl names it: (namespace, kind/name)."""

    namespace: str
    resource: str

    @property
    def name(self) -> str:
        return self.resource.split("/", 1)[1]


@dataclass(frozen=True)
class ExistingCluster:
    vault_addr: str  # as this process reaches Vault
    vault_cluster_addr: str  # as pods reach it
    layout: VaultLayout
    vault_workload: Workload
    mesh_ca: Workload
    mesh_ca_role: str
    image: str
    unseal_keys: Path | None
    vault_ca: Path | None = None  # the CA bundle Vault's TLS certificate chains to (VAULT_CACERT)

    def verify(self) -> str | bool:
        """What hvac verifies Vault's certificate against."""
        return str(self.vault_ca) if self.vault_ca else True


def parse_workload(value: str, option: str) -> Workload:
    parts = value.split("/")
    if len(parts) != 3 or not all(parts) or parts[1] not in ("deployment", "statefulset"):
        raise SettingsError(f"{option} {value!r} is not NAMESPACE/KIND/NAME",
                            fix=f"pass {option} like {DEFAULT_VAULT_WORKLOAD} (KIND is deployment or statefulset)")
    return Workload(parts[0], f"{parts[1]}/{parts[2]}")


def parse_layout(value: str | None) -> VaultLayout:
    """``auth=kubernetes,kv=secret,pki=pki,pki_int=pki_int``: the mounts the cluster's Vault uses."""
    if not value:
        return VaultLayout()
    fields: dict[str, str] = {}
    for item in value.split(","):
        key, sep, mount = item.partition("=")
        if not sep or key.strip() not in LAYOUT_KEYS or not mount.strip().strip("/"):
            raise SettingsError(f"--vault-layout item {item!r} is not KEY=MOUNT",
                                fix=f"use keys {', '.join(LAYOUT_KEYS)}, e.g. auth=kubernetes,pki_int=pki_int")
        fields[LAYOUT_KEYS[key.strip()]] = mount.strip().strip("/")
    return VaultLayout(**fields)


def unseal_keys_file(value: str | None) -> Path | None:
    """`operator init -format=json` output; readable by its owner only, as Vault's own docs insist."""
    if not value:
        return None
    path = Path(value)
    try:
        mode = path.stat().st_mode
    except OSError as err:
        raise SettingsError(f"--vault-unseal-keys {path}: {err.strerror}",
                            fix="pass the JSON that `vault operator init -format=json` printed") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SettingsError(f"--vault-unseal-keys {path} is readable by others (mode {stat.S_IMODE(mode):o})",
                            fix=f"chmod 600 {path}")
    return path


def existing_cluster(env: Mapping[str, str], *, vault_addr: str | None, vault_cluster_addr: str | None,
                     layout: str | None, vault_workload: str | None, mesh_ca: str | None, mesh_ca_role: str | None,
                     image: str | None, unseal_keys: str | None, vault_ca: str | None = None) -> ExistingCluster:
    """Only whether VAULT_TOKEN is set is checked here; the token itself stays in the environment."""
    if not vault_addr:
        raise SettingsError("--platform kubeconfig needs the Vault address", fix="pass --vault-addr or set VAULT_ADDR")
    if not image:
        raise SettingsError("--platform kubeconfig needs a workload image the cluster can pull",
                            fix="build cluster/kind/Dockerfile, push it, and pass --workload-image REF")
    if not env.get("VAULT_TOKEN"):
        raise SettingsError("--platform kubeconfig needs a Vault token that may manage its roles and policies",
                            fix="set VAULT_TOKEN (never on the command line: it would show in ps)")
    return ExistingCluster(
        vault_addr=vault_addr.rstrip("/"), vault_cluster_addr=(vault_cluster_addr or vault_addr).rstrip("/"),
        layout=parse_layout(layout),
        vault_workload=parse_workload(vault_workload or DEFAULT_VAULT_WORKLOAD, "--vault-workload"),
        mesh_ca=parse_workload(mesh_ca or DEFAULT_MESH_CA, "--mesh-ca"),
        mesh_ca_role=mesh_ca_role or DEFAULT_MESH_CA_ROLE, image=image, unseal_keys=unseal_keys_file(unseal_keys),
        vault_ca=_readable(vault_ca, "--vault-ca"))


def _readable(value: str | None, option: str) -> Path | None:
    if not value:
        return None
    path = Path(value)
    if not path.is_file():
        raise SettingsError(f"{option} {path} is not a readable file", fix=f"pass {option} with a PEM bundle")
    return path
