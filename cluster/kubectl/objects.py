"""Objects the kubectl-driven platform applies on kind and on an existing cluster alike."""

from __future__ import annotations

import base64
from typing import Any

from cluster.istio import ROOT_NAMESPACE
from cluster.kube import labels
from cluster.targets import DEFAULT_MESH_CA_ROLE
from cluster.vault import PluginCa
from cluster.workloads import VAULT_CA_CONFIGMAP

Manifest = dict[str, Any]

# The Kubernetes auth role the mesh CA's Issuer logs in with (VaultConfigurator.configure_mesh_ca).
MESH_CA_ROLE = DEFAULT_MESH_CA_ROLE


def cacerts_secret(ca: PluginCa, run_id: str) -> Manifest:
    """`ca: plugin`: a Vault-issued intermediate as Istio's own signing CA (the files of PluginCa.files)."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "cacerts", "namespace": ROOT_NAMESPACE, "labels": labels(run_id)},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in ca.files().items()}}


def ca_configmap(namespace: str, ca_pem: str, run_id: str) -> Manifest:
    """What workloads mount to trust Vault (cluster/workloads.py VaultTarget.ca_configmap)."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": VAULT_CA_CONFIGMAP, "namespace": namespace, "labels": labels(run_id)},
            "data": {"ca.crt": ca_pem}}
