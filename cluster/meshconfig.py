"""The mesh configuration where Istio keeps it: ConfigMap istio-system/istio, key ``mesh``.

The platforms write it from the profile's setup; proxies and conformance
checks read it back from the API server, so a cluster configured by someone
else is judged by what it really says.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from cluster.istio import ROOT_NAMESPACE
from cluster.kube import Kube, labels
from cluster.profile import Setup

CONFIGMAP = "istio"
# Istio's proxies renew when this fraction of the lifetime is left (SECRET_GRACE_PERIOD_RATIO).
GRACE_RATIO = "SECRET_GRACE_PERIOD_RATIO"
ISTIO_DEFAULT_GRACE_RATIO = 0.5
ISTIO_DEFAULT_TRUST_DOMAIN = "cluster.local"


@dataclass(frozen=True)
class MeshConfig:
    trust_domain: str
    grace_ratio: float  # the share of a certificate's lifetime left when the proxy renews

    @property
    def renew_fraction(self) -> float:
        """The share of the lifetime after which the proxy renews."""
        return 1 - self.grace_ratio

    @property
    def found_at(self) -> str:
        return f"ConfigMap {ROOT_NAMESPACE}/{CONFIGMAP} (key mesh)"


def proxy_metadata(setup: Setup) -> dict[str, str]:
    """The proxies' certificate settings (meshConfig.defaultConfig.proxyMetadata): pilot-agent asks the
    CA for SECRET_TTL and renews with SECRET_GRACE_PERIOD_RATIO of the lifetime left
    (pilot/cmd/pilot-agent/options/options.go)."""
    return {GRACE_RATIO: str(round(1 - setup.mesh.renew_fraction, 6)),
            "SECRET_TTL": f"{int(setup.mesh.cert_ttl.total_seconds())}s"}


def mesh_config_text(setup: Setup) -> str:
    grace = round(1 - setup.mesh.renew_fraction, 6)
    return yaml.safe_dump(
        {"trustDomain": setup.trust_domain, "defaultConfig": {"proxyMetadata": {GRACE_RATIO: str(grace)}}},
        sort_keys=True,
    )


def configmap(setup: Setup, run_id: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CONFIGMAP, "namespace": ROOT_NAMESPACE, "labels": labels(run_id)},
        "data": {"mesh": mesh_config_text(setup)},
    }


def write_mesh_config(kube: Kube, setup: Setup, run_id: str) -> None:
    body = configmap(setup, run_id)
    try:
        kube.core.create_namespaced_config_map(ROOT_NAMESPACE, body)
    except ApiException as err:
        if err.status != 409:
            raise
        kube.core.replace_namespaced_config_map(CONFIGMAP, ROOT_NAMESPACE, body)


def parse_mesh_config(text: str) -> MeshConfig:
    """Istio's defaults apply to whatever the mesh config leaves out."""
    data = yaml.safe_load(text or "") or {}
    if not isinstance(data, dict):
        raise ValueError("the mesh config is not a mapping")
    metadata = (data.get("defaultConfig") or {}).get("proxyMetadata") or {}
    grace = float(metadata.get(GRACE_RATIO, ISTIO_DEFAULT_GRACE_RATIO))
    if not 0 < grace < 1:
        raise ValueError(f"{GRACE_RATIO} is {grace}, outside (0, 1)")
    return MeshConfig(trust_domain=str(data.get("trustDomain") or ISTIO_DEFAULT_TRUST_DOMAIN), grace_ratio=grace)


def read_mesh_config(api: client.ApiClient) -> MeshConfig:
    try:
        found = client.CoreV1Api(api).read_namespaced_config_map(CONFIGMAP, ROOT_NAMESPACE)
    except ApiException as err:
        if err.status != 404:
            raise
        return parse_mesh_config("")
    return parse_mesh_config((found.data or {}).get("mesh", ""))
