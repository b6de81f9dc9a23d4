"""The sample workload every platform runs: tgpod (echo app and Vault agent) as a Pod template.

One definition for kind, an existing cluster and the local platform, whose kubelet runs the
same Pod spec after Istio's injector: a Deployment and a Service on a cluster, the Pod alone
(plus its Service) on the local platform.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cluster.agent import APP_PORT
from cluster.kube import labels

Manifest = dict[str, Any]

APP_IMAGE = "trustgrid/tgpod:dev"  # built from cluster/kind/Dockerfile; the local kubelet runs the cached tgpod
AGENT_SOCKET_DIR = "/run/tgpod"
VAULT_TOKEN_DIR = "/var/run/secrets/vault"  # noqa: S105 - a directory, not a secret
VAULT_CA_DIR = "/var/run/secrets/vault-ca"
VAULT_CA_CONFIGMAP = "trustgrid-vault-ca"  # key ca.crt: the CA of Vault's TLS certificate (kind, existing clusters)
# The app's own user: never 1337, which Istio's interception exempts.
APP_UID = 65532


@dataclass(frozen=True)
class VaultTarget:
    """Where workloads reach Vault, and the ConfigMap (key ca.crt) that holds the CA of its TLS certificate."""

    namespace: str  # "vault" or "openbao" (its Kubernetes namespace)
    address: str  # as pods reach it
    flavor: str  # "vault" or "openbao"
    pki_int_path: str = "pki_int"
    kubernetes_path: str = "kubernetes"
    kv_path: str = "secret"
    ca_configmap: str = VAULT_CA_CONFIGMAP


def pod_template(ns: str, name: str, service_account: str, vault: VaultTarget, *, meshed: bool = True,
                 audience: str = "vault", image: str = APP_IMAGE,
                 annotations: Mapping[str, str] | None = None) -> Manifest:
    """The app's Pod template: its Vault JWT is a projected token of Vault's audience, its Vault CA a ConfigMap.
    ``annotations`` are added to the Pod's (Istio's traffic.sidecar.istio.io/* say what its proxy captures)."""
    # The app logs in to Vault as it starts: with a sidecar, hold it until the proxy is up (the known
    # agent-before-proxy trap); without one, say so explicitly (the label wins over the annotation).
    pod_annotations = ({"proxy.istio.io/config": '{"holdApplicationUntilProxyStarts": true}'} if meshed
                       else {"sidecar.istio.io/inject": "false"})
    pod_annotations.update(annotations or {})
    pod_labels = {"app": name, "trustgrid.io/workload": name}
    if not meshed:
        pod_labels["sidecar.istio.io/inject"] = "false"
    args = ["app", f"--listen=0.0.0.0:{APP_PORT}", f"--agent-socket={AGENT_SOCKET_DIR}/agent.sock",
            f"--namespace={ns}", f"--service-account={service_account}", "--pod=$(POD_NAME)",
            f"--vault-addr={vault.address}", f"--vault-ca={VAULT_CA_DIR}/ca.crt",
            f"--vault-auth-path={vault.kubernetes_path}", f"--vault-role={ns}",
            f"--vault-token-file={VAULT_TOKEN_DIR}/token", f"--vault-secret={vault.kv_path}/data/{ns}/app"]
    container = {
        "name": "app", "image": image, "imagePullPolicy": "IfNotPresent", "args": args,
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "ports": [{"name": "http", "containerPort": APP_PORT}],
        "volumeMounts": [{"name": "vault-token", "mountPath": VAULT_TOKEN_DIR, "readOnly": True},
                         {"name": "vault-ca", "mountPath": VAULT_CA_DIR, "readOnly": True},
                         {"name": "agent", "mountPath": AGENT_SOCKET_DIR}],
        "readinessProbe": {"tcpSocket": {"port": APP_PORT}, "periodSeconds": 2},
        "securityContext": {"runAsNonRoot": True, "runAsUser": APP_UID, "allowPrivilegeEscalation": False},
    }
    token = {"serviceAccountToken": {"path": "token", "audience": audience, "expirationSeconds": 600}} if audience \
        else {"serviceAccountToken": {"path": "token", "expirationSeconds": 600}}
    return {"metadata": {"labels": pod_labels, "annotations": pod_annotations},
            "spec": {"serviceAccountName": service_account, "automountServiceAccountToken": False,
                     "containers": [container],
                     "volumes": [{"name": "vault-token", "projected": {"sources": [token]}},
                                 {"name": "vault-ca", "configMap": {"name": vault.ca_configmap,
                                                                    "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                                 {"name": "agent", "emptyDir": {}}]}}


def service(ns: str, name: str, run_id: str) -> Manifest:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "labels": labels(run_id, app=name)},
            "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": APP_PORT, "targetPort": APP_PORT}]}}


def fresh_connections(ns: str, name: str, run_id: str) -> Manifest:
    """A DestinationRule for the workload's Service: one request per upstream connection.

    Envoy pools its mTLS connections, and an established connection keeps the certificates and the
    listener (PeerAuthentication, AuthorizationPolicy) it was opened with until it closes, so a probe
    on a pooled connection would judge the mesh as it was. With this every probe is a new handshake
    under the policy in force. It sets no TLS, so auto mTLS still applies
    (pilot/pkg/networking/core/cluster_tls.go)."""
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": f"{name}-fresh-connections", "namespace": ns, "labels": labels(run_id, app=name)},
            "spec": {"host": f"{name}.{ns}.svc.cluster.local",
                     "trafficPolicy": {"connectionPool": {"http": {"maxRequestsPerConnection": 1}}}}}


def workload(ns: str, name: str, service_account: str, vault: VaultTarget, run_id: str, *,
             meshed: bool = True, audience: str = "vault", image: str = APP_IMAGE,
             annotations: Mapping[str, str] | None = None) -> list[Manifest]:
    """The echo app (and Vault agent) as a ServiceAccount, a Deployment and a Service."""
    meta = {"namespace": ns, "labels": labels(run_id, app=name)}
    pod = pod_template(ns, name, service_account, vault, meshed=meshed, audience=audience, image=image,
                       annotations=annotations)
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": service_account, **meta}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, **meta},
         "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}}, "template": pod}},
        service(ns, name, run_id),
        fresh_connections(ns, name, run_id),
    ]
