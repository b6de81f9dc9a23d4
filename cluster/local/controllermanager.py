"""The real kube-controller-manager, running only the controllers a cluster without kubelets wants.

It authenticates as ``system:kube-controller-manager`` with a client certificate
from the run's CA (the user the bootstrap RBAC policy binds to the ClusterRole of
that name: plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go), and each
controller then runs under its own service account in kube-system
(``--use-service-account-credentials``: cmd/kube-controller-manager/app/
controllermanager.go createClientBuilders, tokens through TokenRequest), so that
RBAC sees the same identities as on a real cluster.

Controllers are named as in cmd/kube-controller-manager/names/controller_names.go
(v1.35.4). Left out on purpose: node-lifecycle-controller and
taint-eviction-controller (no kubelet ever reports, so every Node would be tainted
and its pods evicted), the service, route and cloud controllers, and every
workload controller (no Deployments here; the local runtime creates its Pods).
"""

from __future__ import annotations

import re
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from cluster.local.apiserver import ApiServerEndpoint
from cluster.local.pki import ControlPlanePki
from cluster.local.process import ManagedProcess, claim_port
from cluster.runstate import RunState

NAME = "kube-controller-manager"
CONTROLLERS = (
    # pkg/controller/namespace: deletes a Terminating namespace's content, then the namespace.
    "namespace-controller",
    # pkg/controller/garbagecollector: ownerReferences (cascading deletion).
    "garbage-collector-controller",
    # pkg/controller/endpointslice: a Service's selector and its Pods' IPs become EndpointSlices,
    # which istiod reads.
    "endpointslice-controller",
    # pkg/controller/certificates/rootcacertpublisher: kube-root-ca.crt in every namespace,
    # from --root-ca-file.
    "root-ca-certificate-publisher-controller",
    # pkg/controller/serviceaccount (serviceaccounts_controller.go): the "default" account per namespace.
    "serviceaccount-controller",
    # pkg/controller/serviceaccount (tokens_controller.go): fills kubernetes.io/service-account-token
    # Secrets, signed with --service-account-private-key-file, the only reader of that key
    # (cmd/kube-controller-manager/app/service_accounts.go). The kind platform's external-Vault
    # reviewer token is such a Secret.
    "serviceaccount-token-controller",
    # pkg/controller/podgc: removes terminating pods never bound to a node, orphans of deleted
    # Nodes (after 40 s) and terminated pods beyond the threshold.
    "pod-garbage-collector-controller",
)


@dataclass(frozen=True)
class ControllerManagerEndpoint:
    url: str
    ca: Path


def write_controller_manager_kubeconfig(state: RunState, api: ApiServerEndpoint, pki: ControlPlanePki) -> Path:
    """Its identity towards the API server; 0600 because it names its key."""
    user = "system:kube-controller-manager"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "trustgrid-local", "cluster": {"server": api.url, "certificate-authority": str(api.ca)}}],
        "users": [{"name": user, "user": {"client-certificate": str(pki.controller_manager.cert),
                                          "client-key": str(pki.controller_manager.key)}}],
        "contexts": [{"name": user, "context": {"cluster": "trustgrid-local", "user": user}}],
        "current-context": user,
    }
    return state.write_private("controller-manager.kubeconfig", yaml.safe_dump(config))


def controller_manager_process(
    binary: str, state: RunState, pki: ControlPlanePki, api: ApiServerEndpoint, *, owner: bool
) -> tuple[ManagedProcess, ControllerManagerEndpoint]:
    """The process (not started) and its /healthz endpoint; the port is claimed now."""
    port = claim_port(0, "--secure-port of kube-controller-manager")
    kubeconfig = write_controller_manager_kubeconfig(state, api, pki)
    argv = [
        binary,
        "--kubeconfig", str(kubeconfig),
        # Delegated authn/authz of its own secure port, as kubeadm sets it up: /healthz is in
        # --authorization-always-allow-paths; anything else needs a client the API server accepts.
        "--authentication-kubeconfig", str(kubeconfig),
        "--authorization-kubeconfig", str(kubeconfig),
        "--client-ca-file", str(pki.ca.cert),
        # Otherwise it looks up the request-header CA in configmap kube-system/extension-apiserver-
        # authentication and logs an error every few seconds: our API server has no front proxy, so
        # that key is absent (k8s.io/apiserver pkg/server/options/authentication.go ApplyTo).
        "--authentication-skip-lookup=true",
        "--bind-address", "127.0.0.1",
        "--secure-port", str(port),
        "--tls-cert-file", str(pki.controller_manager.cert),
        "--tls-private-key-file", str(pki.controller_manager.key),
        "--use-service-account-credentials=true",
        "--service-account-private-key-file", str(pki.service_account_key),
        "--root-ca-file", str(pki.ca.cert),
        "--leader-elect=false",
        "--controllers", ",".join(CONTROLLERS),
        "--v", "1",
    ]
    endpoint = ControllerManagerEndpoint(url=f"https://127.0.0.1:{port}", ca=pki.ca.cert)
    return ManagedProcess(NAME, argv, state, die_with_parent=owner), endpoint


def controller_manager_healthy(endpoint: ControllerManagerEndpoint) -> bool:
    context = ssl.create_default_context(cafile=str(endpoint.ca))
    with httpx.Client(verify=context) as client:
        response = client.get(f"{endpoint.url}/healthz", timeout=2.0)
    return response.status_code == 200 and response.text == "ok"


def controller_manager_version(binary: str) -> str:
    """What the binary says it is (``Kubernetes v1.35.4``), set by the build's ldflags."""
    result = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False, timeout=20)
    match = re.search(r"Kubernetes (v\S+)", result.stdout)
    return match.group(1) if match else "unknown"
