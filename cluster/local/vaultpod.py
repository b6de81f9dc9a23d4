"""Vault's identity in the cluster, played as a kubelet would play it.

Vault reviews workload tokens with its own service account, ``vault/vault``,
bound to system:auth-delegator. Its token is bound to the Pod object
``vault/vault-0``: a new Vault "pod" (a restart) gets a new Pod uid and a
new token, and the old token dies with the old pod, exactly as on kind.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from cluster.kube import AUTH_DELEGATOR, Kube, labels
from cluster.local.openbao import write_pod_token
from cluster.wait import wait_until

log = logging.getLogger(__name__)

NAMESPACE = "vault"
SERVICE_ACCOUNT = "vault"
POD = "vault-0"
# The kubelet's default projected-token lifetime, refreshed at 80% as it does.
TOKEN_SECONDS = 3600
APISERVER_AUDIENCE = "https://kubernetes.default.svc.cluster.local"


@dataclass(frozen=True)
class VaultPod:
    kube: Kube
    run_id: str
    token_dir: Path
    ca_pem: str

    def ensure_identity(self) -> None:
        self.kube.ensure_namespace(NAMESPACE, self.run_id)
        self.kube.ensure_service_account(NAMESPACE, SERVICE_ACCOUNT, self.run_id)
        self.kube.bind_cluster_role("trustgrid-vault-tokenreview", AUTH_DELEGATOR,
                                    [(NAMESPACE, SERVICE_ACCOUNT)], self.run_id)

    def replace_pod(self) -> str:
        """Delete vault-0 if present and create it anew; returns the new uid."""
        core = self.kube.core
        try:
            core.delete_namespaced_pod(POD, NAMESPACE, grace_period_seconds=0)
        except ApiException as err:
            if err.status != 404:
                raise

        def create() -> str:
            pod = client.V1Pod(
                metadata=client.V1ObjectMeta(name=POD, labels=labels(self.run_id, app="vault")),
                spec=client.V1PodSpec(
                    service_account_name=SERVICE_ACCOUNT,
                    containers=[client.V1Container(name="vault", image="local/openbao")],
                ),
            )
            return str(core.create_namespaced_pod(NAMESPACE, pod).metadata.uid)

        # Deletion with grace 0 is immediate without a kubelet, but give it a deadline anyway.
        return wait_until(create, timeout=10, describe="the vault-0 Pod object to be recreated")

    def project_token(self) -> None:
        """Write a fresh pod-bound token where Vault reads it."""
        uid = str(self.kube.core.read_namespaced_pod(POD, NAMESPACE).metadata.uid)
        token = self.kube.request_token(NAMESPACE, SERVICE_ACCOUNT, audience=APISERVER_AUDIENCE,
                                        seconds=TOKEN_SECONDS, bound_pod=(POD, uid))
        write_pod_token(self.token_dir, token, self.ca_pem, NAMESPACE)

    def new_incarnation(self) -> None:
        self.replace_pod()
        self.project_token()


class TokenRefresher:
    """Refresh projected tokens at 80% of their lifetime, like the kubelet: Vault's pod token and the
    mesh CA's (each ``project`` writes fresh ones where the process reads them at each use)."""

    def __init__(self, *project: Callable[[], None]) -> None:
        self._project = project
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="token-refresher", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(TOKEN_SECONDS * 0.8):
            for project in self._project:
                try:
                    project()
                except Exception as err:  # noqa: BLE001 - the next period retries; the old token still works
                    log.warning("could not refresh a projected token: %s", err)

    def __enter__(self) -> TokenRefresher:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
