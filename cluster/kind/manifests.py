"""Every object the kind platform applies itself (Helm charts bring their own).

Pure functions of the profile's setup and the pins, so that each one can be
validated here by a server-side dry-run against the local API server with
the real Istio and cert-manager CRDs, without Docker. The values follow the
upstream docs and e2e configs of cert-manager, istio-csr, Istio and the Vault
and OpenBao charts; the shared pieces (Istio policies, the Vault Issuer) come
from cluster/istio.py and cluster/certmanager.py, as on the local platform.
"""

from __future__ import annotations

import base64
from typing import Any

from cluster import certmanager, istio
from cluster.kind import monitoring, vaulttls
from cluster.kube import labels
from cluster.kubectl.objects import MESH_CA_ROLE, ca_configmap, cacerts_secret
from cluster.meshconfig import proxy_metadata
from cluster.profile import Setup
from cluster.promconfig import TELEMETRY
from cluster.workloads import APP_IMAGE, VaultTarget, workload

# The shared pieces, as the kind platform names them.
__all__ = ["APP_IMAGE", "MESH_CA_ROLE", "VaultTarget", "ca_configmap", "cacerts_secret", "workload"]

Manifest = dict[str, Any]

CERT_MANAGER_NS = "cert-manager"
ISTIO_NS = istio.ROOT_NAMESPACE
ISSUER = "vault-mesh-ca"  # the Issuer istio-csr signs through, and the service account it logs in as
MESH_PKI_ROLE = "mesh"  # istio-csr signs every namespace through one PKI role
ISTIO_CSR_ADDRESS = "cert-manager-istio-csr.cert-manager.svc:443"
ROOT_CA_SECRET = "istio-root-ca"  # noqa: S105 - a Secret object's name; it holds only the public root
ROOT_CA_MOUNT = "/var/run/secrets/istio-csr"
ISTIOD_TLS_SECRET = "istiod-tls"  # noqa: S105 - a Secret's name: istiod's serving certificate, made by istio-csr


def kind_config(cluster_name: str, issuer: str, node_image: str) -> Manifest:
    """The service-account issuer, as an unversioned ClusterConfiguration patch.

    The API server's audiences stay its default, the issuer alone
    (pkg/kubeapiserver/options/authentication.go: --api-audiences defaults to the issuers):
    adding Vault's audience there would make every token minted for Vault a valid API
    credential. Unversioned on purpose: kind applies a patch pinned to an older kubeadm
    apiVersion silently not at all on v1beta4 node images (Kubernetes >= 1.36).
    """
    patch = (f"kind: ClusterConfiguration\napiServer:\n  extraArgs:\n"
             f'    service-account-issuer: "{issuer}"\n')
    return {"kind": "Cluster", "apiVersion": "kind.x-k8s.io/v1alpha4", "name": cluster_name,
            "nodes": [{"role": "control-plane", "image": node_image, "kubeadmConfigPatches": [patch]}]}


def namespace(name: str, run_id: str, *, meshed: bool = False) -> Manifest:
    extra = {"istio-injection": "enabled"} if meshed else {}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels(run_id, **extra)}}


def issuer_identity(run_id: str) -> list[Manifest]:
    """The service account the Issuer logs in to Vault as, and cert-manager's right to request its tokens."""
    meta = {"namespace": ISTIO_NS, "labels": labels(run_id)}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": ISSUER, **meta}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": ISSUER, **meta},
         "rules": [{"apiGroups": [""], "resources": ["serviceaccounts/token"], "resourceNames": [ISSUER],
                    "verbs": ["create"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": ISSUER, **meta},
         "subjects": [{"kind": "ServiceAccount", "name": "cert-manager", "namespace": CERT_MANAGER_NS}],
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ISSUER}},
    ]


EXTERNAL_VAULT_NS = "trustgrid-vault"
REVIEWER = "vault-token-reviewer"


def token_reviewer(run_id: str) -> list[Manifest]:
    """`--vault external`: a service account Vault reviews tokens with, and its long-lived token Secret."""
    meta = {"namespace": EXTERNAL_VAULT_NS, "labels": labels(run_id)}
    return [
        namespace(EXTERNAL_VAULT_NS, run_id),
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": REVIEWER, **meta}},
        {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
         "metadata": {"name": REVIEWER, "annotations": {"kubernetes.io/service-account.name": REVIEWER}, **meta}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": f"{REVIEWER}-{run_id}", "labels": labels(run_id)},
         "subjects": [{"kind": "ServiceAccount", "name": REVIEWER, "namespace": EXTERNAL_VAULT_NS}],
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"}},
    ]


def issuer_audience() -> str:
    """cert-manager asks for tokens with this audience for a namespaced Issuer; the Vault role must require it."""
    return f"vault://{ISTIO_NS}/{ISSUER}"


def mesh_issuer(vault: VaultTarget, role: str, run_id: str, ca_pem: str | None = None) -> Manifest:
    return certmanager.vault_issuer(ISTIO_NS, ISSUER, run_id, server=vault.address,
                                    path=f"{vault.pki_int_path}/sign/{MESH_PKI_ROLE}", role=role,
                                    mount=vault.kubernetes_path, service_account=ISSUER, ca_pem=ca_pem)


def root_ca_secret(root_pem: str, run_id: str) -> Manifest:
    """Vault returns only the intermediate; istio-csr is given the root explicitly."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": ROOT_CA_SECRET, "namespace": CERT_MANAGER_NS, "labels": labels(run_id)},
            "data": {"ca.pem": base64.b64encode(root_pem.encode()).decode()}}


def istio_operator(setup: Setup, *, ca: str) -> Manifest:
    """istioctl's input. With istio-csr the CA server is off and workloads ask istio-csr."""
    spec: dict[str, Any] = {"profile": "minimal", "meshConfig": {
        "trustDomain": setup.trust_domain, "defaultConfig": {"proxyMetadata": proxy_metadata(setup)}}}
    if ca == "istio-csr":
        spec["values"] = {"global": {"caAddress": ISTIO_CSR_ADDRESS}}
        spec["components"] = {"pilot": {"k8s": {"env": [{"name": "ENABLE_CA_SERVER", "value": "false"}]}}}
    return {"apiVersion": "install.istio.io/v1alpha1", "kind": "IstioOperator",
            "metadata": {"namespace": ISTIO_NS, "name": "trustgrid"}, "spec": spec}


# -- Helm values (not manifests: the charts render them) -----------------------
def cert_manager_values() -> dict[str, Any]:
    return {"crds": {"enabled": True}}


def vault_values(flavor: str, *, audit: bool = True, image_tag: str | None = None) -> dict[str, Any]:
    """Server mode (never dev: seal, unseal and restart must be real), standalone, file storage, no injector,
    TLS from the Secret vault-tls (cluster/kind/vaulttls.py), which the chart mounts under userconfig.
    ``image_tag``: the server's version (server.image.tag), where it is not the chart's own.

    With ``audit``: the audit volume, the file device's log on it and the exporter beside Vault
    (cluster/kind/monitoring.py). OpenBao only accepts declarative audit devices, so its device is declared
    here; Vault's is enabled through the API at configure time, at the same path. Telemetry is on for both:
    Prometheus scrapes sys/metrics (cluster/promconfig.py).
    """
    data = f"/{flavor}/data"
    tls = f"/{flavor}/userconfig/{vaulttls.SECRET}"
    config = (f'ui = true\nlistener "tcp" {{\n  address = "[::]:8200"\n  cluster_address = "[::]:8201"\n'
              f'  tls_cert_file = "{tls}/tls.crt"\n  tls_key_file = "{tls}/tls.key"\n}}\n')
    config += storage_config(flavor, data, f"https://{flavor}-0.{flavor}-internal")
    config += TELEMETRY
    if audit and flavor == "openbao":
        config += f'audit "file" "file" {{\n  options {{\n    file_path = "{monitoring.audit_log(flavor)}"\n  }}\n}}\n'
    # The CLI in the pod (operator init, unseal) talks TLS to 127.0.0.1: it trusts the run's CA.
    ca_env = {"VAULT_CACERT": f"{tls}/ca.crt", "BAO_CACERT": f"{tls}/ca.crt"}
    server: dict[str, Any] = {
        "dev": {"enabled": False}, "standalone": {"enabled": True, "config": config},
        "dataStorage": {"enabled": True}, "authDelegator": {"enabled": True},
        "extraVolumes": [{"type": "secret", "name": vaulttls.SECRET, "path": f"/{flavor}/userconfig"}],
        "extraEnvironmentVars": ca_env}
    if audit:
        server.update(monitoring.vault_server_values(flavor))
    if image_tag:
        server["image"] = {"tag": image_tag}
    return {"global": {"tlsDisable": False}, "injector": {"enabled": False}, "server": server}


def storage_config(flavor: str, path: str, node: str) -> str:
    """Vault keeps the chart's file storage; OpenBao removed the file backend in 2.7.0 (its server now
    says "unknown storage type file"; the backends it registers are in command/commands.go), so
    OpenBao runs integrated storage (raft), a single node, which needs its own API and cluster
    addresses: ``node`` is its scheme and host (ports 8200 and 8201)."""
    if flavor != "openbao":
        return f'storage "file" {{\n  path = "{path}"\n}}\n'
    # performance_multiplier 1 is raft's production tuning; the default (5) makes a single node wait
    # seconds for its own election, and `operator init` with it (as on the local platform, cluster/local/openbao.py).
    return (f'storage "raft" {{\n  path = "{path}"\n  node_id = "{flavor}-0"\n  performance_multiplier = 1\n}}\n'
            f'api_addr = "{node}:8200"\ncluster_addr = "{node}:8201"\n')


def istio_csr_values(setup: Setup) -> dict[str, Any]:
    cert_ttl = f"{int(setup.mesh.cert_ttl.total_seconds())}s"
    return {
        "app": {
            "certmanager": {"namespace": ISTIO_NS,
                            "issuer": {"enabled": True, "name": ISSUER, "kind": "Issuer", "group": "cert-manager.io"}},
            "tls": {"trustDomain": setup.trust_domain, "rootCAFile": f"{ROOT_CA_MOUNT}/ca.pem"},
            "server": {"clusterID": "Kubernetes", "maxCertificateDuration": cert_ttl},
            # istiod's serving certificate names each revision's Service (istiod-canary.istio-system.svc for
            # suites/upgrade's canary); the chart's default names only "default"'s.
            "istio": {"revisions": [istio.DEFAULT_REVISION, istio.CANARY_REVISION]},
        },
        "volumes": [{"name": "root-ca", "secret": {"secretName": ROOT_CA_SECRET}}],
        "volumeMounts": [{"name": "root-ca", "mountPath": ROOT_CA_MOUNT}],
    }


# -- workloads: cluster/workloads.py ---------------------------------------------


APP_NS = "trustgrid-app"
LEGACY_NS = "trustgrid-legacy"
# The bring-up's workloads: namespace -> the service accounts that log in to Vault there (through the role
# named after the namespace, cluster/workloads.py --vault-role), so configure-vault makes those roles.
BRINGUP_WORKLOADS: dict[str, tuple[str, ...]] = {APP_NS: ("server", "client"), LEGACY_NS: ("naked",)}


def mesh_and_workloads(setup: Setup, vault: VaultTarget, run_id: str, *, vault_ca: str,
                       app_ns: str = APP_NS, legacy_ns: str = LEGACY_NS) -> list[Manifest]:
    """The mesh policy, a meshed namespace with server and client, a legacy one with a naked client;
    each namespace gets Vault's CA, which its workloads mount."""
    found = [namespace(app_ns, run_id, meshed=True), namespace(legacy_ns, run_id)]
    found += [ca_configmap(ns, vault_ca, run_id) for ns in (app_ns, legacy_ns)]
    # No istio-system/istio here: istioctl writes it from istio_operator's meshConfig and owns it (a server-side
    # apply of our own copy conflicts with istioctl's field manager); conformance reads what istioctl wrote.
    found.append(istio.peer_authentication(ISTIO_NS, "default", setup.mesh.mtls.default, run_id))
    found += istio.namespace_policies(app_ns, run_id, mtls_mode=setup.mesh.mtls.namespaces.get(app_ns),
                                      authz=setup.mesh.authz == "namespace")
    found += workload(app_ns, "server", "server", vault, run_id)
    found += workload(app_ns, "client", "client", vault, run_id)
    found += workload(legacy_ns, "naked", "naked", vault, run_id, meshed=False)
    return found


def all_manifests(setup: Setup, vault: VaultTarget, run_id: str, *, root_pem: str, vault_ca: str,
                  app_ns: str = APP_NS, legacy_ns: str = LEGACY_NS) -> list[Manifest]:
    """Everything the kind platform applies itself, in order (the API server validates each)."""
    found = [namespace(name, run_id) for name in (CERT_MANAGER_NS, ISTIO_NS, vault.namespace)]
    found += issuer_identity(run_id)
    found += token_reviewer(run_id)
    found.append(mesh_issuer(vault, MESH_CA_ROLE, run_id, ca_pem=vault_ca))
    found.append(root_ca_secret(root_pem, run_id))
    return found + mesh_and_workloads(setup, vault, run_id, vault_ca=vault_ca, app_ns=app_ns, legacy_ns=legacy_ns)
