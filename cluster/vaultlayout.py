"""Where things live in Vault: mount paths and per-namespace names.

Kept apart from ``cluster.vault`` (which needs hvac) so that settings and their
checks load without the Vault and Kubernetes clients.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VaultLayout:
    """Where things live in Vault; the kubeconfig platform prefixes them per run."""

    kubernetes_path: str = "kubernetes"
    kv_path: str = "secret"
    pki_root_path: str = "pki"
    pki_int_path: str = "pki_int"
    audit_path: str = "file"

    def role(self, namespace: str) -> str:
        return namespace

    def policy(self, namespace: str) -> str:
        return f"ns-{namespace}"

    def secret_path(self, namespace: str, name: str = "app") -> str:
        """The KV v2 logical path (without the data/ segment)."""
        return f"{namespace}/{name}"
