"""The real kube-apiserver, configured so that TokenRequest and TokenReview work
as on a real cluster: a service-account issuer, a signing key, RBAC, and
client-certificate auth for the suite's admin identity.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from cluster.local.etcd import EtcdEndpoint
from cluster.local.pki import ControlPlanePki
from cluster.local.process import ManagedProcess, claim_port
from cluster.runstate import RunState

SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CIDR = "10.96.0.0/12"


@dataclass(frozen=True)
class ApiServerEndpoint:
    url: str
    ca: Path
    client_cert: Path
    client_key: Path
    issuer: str

    def get(self, path: str, timeout: float = 2.0) -> httpx.Response:
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(str(self.client_cert), str(self.client_key))
        with httpx.Client(verify=context) as client:
            return client.get(f"{self.url}{path}", timeout=timeout)


def apiserver_process(
    binary: str, state: RunState, pki: ControlPlanePki, etcd: EtcdEndpoint, *, port: int = 0
) -> tuple[ManagedProcess, ApiServerEndpoint]:
    secure_port = claim_port(port, "--apiserver-port")
    argv = [
        binary,
        "--bind-address", "127.0.0.1",
        "--advertise-address", "127.0.0.1",
        "--secure-port", str(secure_port),
        "--etcd-servers", etcd.client_url,
        "--tls-cert-file", str(pki.apiserver.cert),
        "--tls-private-key-file", str(pki.apiserver.key),
        "--client-ca-file", str(pki.ca.cert),
        "--service-account-issuer", SERVICE_ACCOUNT_ISSUER,
        "--service-account-key-file", str(pki.service_account_pub),
        "--service-account-signing-key-file", str(pki.service_account_key),
        "--service-account-lookup=true",
        "--service-cluster-ip-range", SERVICE_CIDR,
        "--authorization-mode", "RBAC",
        "--allow-privileged=true",
        "--enable-priority-and-fairness=false",
        "--cert-dir", str(state.file("apiserver-certs")),
        "--v", "1",
    ]
    endpoint = ApiServerEndpoint(
        url=f"https://127.0.0.1:{secure_port}",
        ca=pki.ca.cert,
        client_cert=pki.admin.cert,
        client_key=pki.admin.key,
        issuer=SERVICE_ACCOUNT_ISSUER,
    )
    return ManagedProcess("kube-apiserver", argv, state), endpoint


def apiserver_ready(endpoint: ApiServerEndpoint) -> bool:
    return endpoint.get("/readyz").status_code == 200


def write_kubeconfig(state: RunState, endpoint: ApiServerEndpoint) -> Path:
    """A kubeconfig for people and kubectl; 0600 because it names the admin key."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "trustgrid-local", "cluster": {"server": endpoint.url,
                                                             "certificate-authority": str(endpoint.ca)}}],
        "users": [{"name": "trustgrid-admin", "user": {"client-certificate": str(endpoint.client_cert),
                                                       "client-key": str(endpoint.client_key)}}],
        "contexts": [{"name": "trustgrid-local", "context": {"cluster": "trustgrid-local",
                                                             "user": "trustgrid-admin"}}],
        "current-context": "trustgrid-local",
    }
    return state.write_private("kubeconfig", yaml.safe_dump(config))
