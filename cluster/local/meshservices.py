"""Start the local mesh CA (istio-csr's part).

A separate process on the node, labelled like every process of the run,
with identities in the API server and Vault as on a real cluster: the CA is
the service account istio-system/mesh-ca, bound to system:auth-delegator for
TokenReview, to a ClusterRole for publishing istio-ca-root-cert (istio-csr's
own RBAC), and to its own Vault role.
"""

from __future__ import annotations

import json
import socket
import ssl
import sys
from dataclasses import asdict

import httpx

from cluster import certmanager
from cluster.kube import AUTH_DELEGATOR, Kube, labels
from cluster.local import caproto
from cluster.local.apiserver import SERVICE_ACCOUNT_ISSUER, ApiServerEndpoint
from cluster.local.meshca import MeshCaConfig
from cluster.local.process import ManagedProcess, claim_port
from cluster.profile import Setup
from cluster.runstate import RunState, cache_dir
from cluster.vault import VaultConfigurator
from cluster.vaultlayout import VaultLayout
from cluster.versions import load_pins

MESH_NAMESPACE = "istio-system"
MESH_CA_ACCOUNT = "mesh-ca"
MESH_CA_POD = "mesh-ca-0"
MESH_CA_CLUSTER_ROLE = "trustgrid-mesh-ca"
CONFIG_FILE = "meshca/config.json"


def _pod_object(kube: Kube, run_id: str) -> str:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    body = client.V1Pod(
        metadata=client.V1ObjectMeta(name=MESH_CA_POD, labels=labels(run_id, app="mesh-ca")),
        spec=client.V1PodSpec(service_account_name=MESH_CA_ACCOUNT, automount_service_account_token=False,
                              containers=[client.V1Container(name="mesh-ca", image="local/mesh-ca")]),
    )
    try:
        return str(kube.core.create_namespaced_pod(MESH_NAMESPACE, body).metadata.uid)
    except ApiException as err:
        if err.status != 409:
            raise
    return str(kube.core.read_namespaced_pod(MESH_CA_POD, MESH_NAMESPACE).metadata.uid)


def mesh_ca_identity(kube: Kube, configurator: VaultConfigurator, state: RunState, run_id: str) -> str:
    """Service account, RBAC, pod-bound tokens and Vault role of the mesh CA; returns the role."""
    kube.ensure_namespace(MESH_NAMESPACE, run_id)
    kube.ensure_service_account(MESH_NAMESPACE, MESH_CA_ACCOUNT, run_id)
    kube.bind_cluster_role("trustgrid-mesh-ca-tokenreview", AUTH_DELEGATOR, [(MESH_NAMESPACE, MESH_CA_ACCOUNT)], run_id)
    _ensure_cluster_role(kube, run_id)
    kube.bind_cluster_role(MESH_CA_CLUSTER_ROLE, MESH_CA_CLUSTER_ROLE, [(MESH_NAMESPACE, MESH_CA_ACCOUNT)], run_id)
    uid = _pod_object(kube, run_id)
    project_mesh_ca_tokens(kube, configurator.setup, state, uid)
    return configurator.configure_mesh_ca(MESH_NAMESPACE, MESH_CA_ACCOUNT)


def _ensure_cluster_role(kube: Kube, run_id: str) -> None:
    """What istio-csr's chart grants it (deploy/charts/istio-csr/templates/clusterrole.yaml, v0.17.0) for its
    ConfigMap controller; TokenReview comes from the system:auth-delegator binding."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    body = client.V1ClusterRole(
        metadata=client.V1ObjectMeta(name=MESH_CA_CLUSTER_ROLE, labels=labels(run_id)),
        rules=[client.V1PolicyRule(api_groups=[""], resources=["configmaps"],
                                   verbs=["get", "list", "create", "update", "watch"]),
               client.V1PolicyRule(api_groups=[""], resources=["namespaces"], verbs=["get", "list", "watch"])],
    )
    try:
        kube.rbac.create_cluster_role(body)
    except ApiException as err:
        if err.status != 409:
            raise
        kube.rbac.replace_cluster_role(MESH_CA_CLUSTER_ROLE, body)


def declare_mesh_ca_issuer(kube: Kube, layout: VaultLayout, vault_addr: str, role: str, run_id: str) -> None:
    """Record the mesh CA's Vault login as the cert-manager Issuer that istio-csr would use.

    The local CA is configured from the same values; the Issuer is what
    conformance reads, from the API server, to find the Vault token that
    certificate renewal depends on. The local CA signs through the calling
    pod's namespace role, hence the {namespace} in the path.
    """
    kube.apply_custom(certmanager.GROUP, certmanager.VERSION, "issuers", certmanager.vault_issuer(
        MESH_NAMESPACE, "mesh-ca", run_id, server=vault_addr, path=f"{layout.pki_int_path}/sign/{{namespace}}",
        role=role, mount=layout.kubernetes_path, service_account=MESH_CA_ACCOUNT))


def refresh_mesh_ca_tokens(kube: Kube, setup: Setup, state: RunState) -> None:
    """New pod-bound tokens for the CA (its API token and its Vault JWT), as the kubelet projects them."""
    uid = str(kube.core.read_namespaced_pod(MESH_CA_POD, MESH_NAMESPACE).metadata.uid)
    project_mesh_ca_tokens(kube, setup, state, uid)


def project_mesh_ca_tokens(kube: Kube, setup: Setup, state: RunState, uid: str) -> None:
    for name, audience in (("api-token", SERVICE_ACCOUNT_ISSUER), ("vault-token", setup.vault.audience)):
        token = kube.request_token(MESH_NAMESPACE, MESH_CA_ACCOUNT, audience=audience, seconds=3600,
                                   bound_pod=(MESH_CA_POD, uid))
        state.write_private(f"meshca/{name}", token)


def mesh_ca_process(state: RunState, api: ApiServerEndpoint, layout: VaultLayout, setup: Setup, *,
                    node_ip: str, vault_addr: str, role: str, owner: bool) -> tuple[ManagedProcess, str]:
    """The mesh CA, configured; returns it and its address, pilot-agent's CA_ADDR (host:port)."""
    pki = state.file("pki")
    config = MeshCaConfig(
        listen_host=node_ip, listen_port=claim_port(0, "--mesh-ca-port"), health_port=claim_port(0, "--mesh-ca-port"),
        serving_cert=str(pki / "vault.crt"), serving_key=str(pki / "vault.key"), serving_ca=str(api.ca),
        ca_bundle=str(api.ca), apiserver=api.url, api_token_file=str(state.file("meshca/api-token")),
        vault_addr=vault_addr, vault_token_file=str(state.file("meshca/vault-token")),
        vault_auth_path=layout.kubernetes_path, vault_role=role, pki_int_path=layout.pki_int_path,
        pki_root_path=layout.pki_root_path, trust_domain=setup.trust_domain,
        max_cert_duration_s=int(setup.mesh.cert_ttl.total_seconds()),  # as kind's istio-csr maxCertificateDuration
        proto_dir=str(caproto.ensure_stubs(cache_dir(), load_pins())),
        status_file=str(state.file("meshca/status.json")),
    )
    state.write_private(CONFIG_FILE, json.dumps(asdict(config)))
    return mesh_ca_from_config(state, owner=owner), f"{config.listen_host}:{config.listen_port}"


def mesh_ca_config(state: RunState) -> MeshCaConfig:
    return MeshCaConfig(**json.loads(state.file(CONFIG_FILE).read_text()))


def mesh_ca_address(state: RunState) -> str:
    """host:port of the gRPC certificate service: pilot-agent's CA_ADDR (values.global.caAddress)."""
    config = mesh_ca_config(state)
    return f"{config.listen_host}:{config.listen_port}"


def mesh_ca_from_config(state: RunState, *, owner: bool) -> ManagedProcess:
    """The mesh CA from the configuration its first start wrote (also for restarts)."""
    argv = [sys.executable, "-m", "cluster.local.meshca", "--config", str(state.file(CONFIG_FILE))]
    return ManagedProcess("mesh-ca", argv, state, die_with_parent=owner)


def mesh_ca_ready(config: MeshCaConfig) -> bool:
    """/readyz answers 200, and the gRPC port completes a TLS handshake as pilot-agent checks it.

    pilot-agent verifies the CA's certificate with istio-ca-root-cert and the host part of CA_ADDR
    as the server name: an IP literal must be an IP SAN (pilot/pkg/grpc/tls.go getTLSDialOption).
    """
    response = httpx.get(f"http://127.0.0.1:{config.health_port}/readyz", timeout=1)
    if response.status_code != 200:
        raise OSError(f"/readyz answers {response.status_code}: {response.text}")  # what wait_until reports
    context = ssl.create_default_context(cafile=config.serving_ca)
    with socket.create_connection((config.listen_host, config.listen_port), timeout=1) as raw, \
            context.wrap_socket(raw, server_hostname=config.listen_host):
        return True


def wait_mesh_ca(process: ManagedProcess) -> None:
    config = mesh_ca_config(process.state)
    process.wait_ready(lambda: mesh_ca_ready(config), timeout=30,
                       describe="the mesh CA /readyz and a TLS handshake on its gRPC port")
