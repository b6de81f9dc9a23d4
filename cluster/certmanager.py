"""cert-manager objects, built the same way on every platform.

The kind platform hands the Issuer to real cert-manager and istio-csr; the
local platform records its mesh CA's Vault login the same way. Either way
the conformance checks find, from the API server, which Vault login
certificate renewal depends on.
"""

from __future__ import annotations

import base64
from typing import Any

from cluster.kube import labels

GROUP, VERSION = "cert-manager.io", "v1"


def vault_issuer(
    namespace: str,
    name: str,
    run_id: str,
    *,
    server: str,
    path: str,
    role: str,
    mount: str,
    service_account: str,
    ca_pem: str | None = None,
) -> dict[str, Any]:
    """A namespaced Vault Issuer that logs in with Kubernetes auth via serviceAccountRef."""
    vault: dict[str, Any] = {
        "server": server,
        "path": path,
        "auth": {
            "kubernetes": {
                "role": role,
                "mountPath": f"/v1/auth/{mount}",
                "serviceAccountRef": {"name": service_account},
            }
        },
    }
    if ca_pem:
        vault["caBundle"] = base64.b64encode(ca_pem.encode()).decode()
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Issuer",
        "metadata": {"name": name, "namespace": namespace, "labels": labels(run_id)},
        "spec": {"vault": vault},
    }
