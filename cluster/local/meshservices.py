"""Start the local mesh control plane: the mesh CA (istio-csr's part) and istiod.

Both are separate processes on the node, labelled like every process of
the run, with identities in the API server and Vault as on a real cluster:
the CA is the service account istio-system/mesh-ca, bound to
system:auth-delegator for TokenReview and to its own Vault role.
"""

from __future__ import annotations

import json
import ssl
import sys
from dataclasses import asdict
from pathlib import Path

import httpx

from cluster import certmanager
from cluster.kube import AUTH_DELEGATOR, Kube, labels
from cluster.local.apiserver import SERVICE_ACCOUNT_ISSUER, ApiServerEndpoint
from cluster.local.istiod import IstiodConfig
from cluster.local.meshca import MeshCaConfig
from cluster.local.process import ManagedProcess, claim_port
from cluster.profile import Setup
from cluster.runstate import RunState
from cluster.vault import VaultConfigurator, VaultLayout

MESH_NAMESPACE = "istio-system"
MESH_CA_ACCOUNT = "mesh-ca"
MESH_CA_POD = "mesh-ca-0"


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
    uid = _pod_object(kube, run_id)
    project_mesh_ca_tokens(kube, configurator.setup, state, uid)
    return configurator.configure_mesh_ca(MESH_NAMESPACE, MESH_CA_ACCOUNT)


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


def project_mesh_ca_tokens(kube: Kube, setup: Setup, state: RunState, uid: str) -> None:
    for name, audience in (("api-token", SERVICE_ACCOUNT_ISSUER), ("vault-token", setup.vault.audience)):
        token = kube.request_token(MESH_NAMESPACE, MESH_CA_ACCOUNT, audience=audience, seconds=3600,
                                   bound_pod=(MESH_CA_POD, uid))
        state.write_private(f"meshca/{name}", token)


def mesh_ca_process(state: RunState, api: ApiServerEndpoint, layout: VaultLayout, setup: Setup, *,
                    node_ip: str, vault_addr: str, role: str, owner: bool) -> tuple[ManagedProcess, str]:
    port = claim_port(0, "--mesh-ca-port")
    pki = state.file("pki")
    config = MeshCaConfig(
        listen_host=node_ip, listen_port=port, serving_cert=str(pki / "vault.crt"), serving_key=str(pki / "vault.key"),
        ca_bundle=str(api.ca), apiserver=api.url, api_token_file=str(state.file("meshca/api-token")),
        vault_addr=vault_addr, vault_token_file=str(state.file("meshca/vault-token")),
        vault_auth_path=layout.kubernetes_path, vault_role=role, pki_int_path=layout.pki_int_path,
        pki_root_path=layout.pki_root_path, trust_domain=setup.trust_domain,
        status_file=str(state.file("meshca/status.json")),
    )
    config_file = state.write_private("meshca/config.json", json.dumps(asdict(config)))
    argv = [sys.executable, "-m", "cluster.local.meshca", "--config", str(config_file)]
    return ManagedProcess("mesh-ca", argv, state, die_with_parent=owner), f"https://{node_ip}:{port}"


def mesh_ca_from_config(state: RunState, *, owner: bool) -> ManagedProcess:
    """The mesh CA again, from the configuration its first start wrote (for restarts)."""
    argv = [sys.executable, "-m", "cluster.local.meshca", "--config", str(state.file("meshca/config.json"))]
    return ManagedProcess("mesh-ca", argv, state, die_with_parent=owner)


def wait_mesh_ca(process: ManagedProcess, url: str, ca_bundle: Path) -> None:
    def healthy() -> bool:
        context = ssl.create_default_context(cafile=str(ca_bundle))
        return httpx.get(f"{url}/healthz", verify=context, timeout=1).status_code == 200

    process.wait_ready(healthy, timeout=30, describe="the mesh CA /healthz")


def istiod_process(state: RunState, api: ApiServerEndpoint, pods_root: Path, setup: Setup, *,
                   owner: bool) -> ManagedProcess:
    config = IstiodConfig(apiserver=api.url, ca_bundle=str(api.ca), client_cert=str(api.client_cert),
                          client_key=str(api.client_key), pods_root=str(pods_root), trust_domain=setup.trust_domain)
    config_file = state.write_private("istiod.json", json.dumps(asdict(config)))
    argv = [sys.executable, "-m", "cluster.local.istiod", "--config", str(config_file)]
    return ManagedProcess("istiod", argv, state, die_with_parent=owner)


def wait_istiod(process: ManagedProcess, pods_root: Path) -> None:
    process.wait_ready((pods_root / "istiod.json").exists, timeout=30, describe="istiod's first push")


