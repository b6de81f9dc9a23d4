"""The local istiod: watches Istio policy and pods, pushes each sidecar its config.

    python -m cluster.local.istiod --config CONFIG.json

It lists pods, PeerAuthentications and AuthorizationPolicies every 200 ms
(the API server is local; a list is cheaper than keeping three watches
healthy) and, when anything changed, rewrites ``mesh.json`` in each meshed
pod's directory, atomically, then ``istiod.json`` with the generation and
the pods it covers. Sidecars reload within 100 ms.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client

from cluster.local.meshpolicy import PodView, compile_pod, peers
from cluster.secrets import install_record_factory

log = logging.getLogger("istiod")
MESHED_LABEL = "sidecar.istio.io/inject"
POLL_SECONDS = 0.2


@dataclass(frozen=True)
class IstiodConfig:
    apiserver: str
    ca_bundle: str
    client_cert: str
    client_key: str
    pods_root: str
    trust_domain: str


def pod_dir(pods_root: Path, namespace: str, name: str) -> Path:
    return pods_root / namespace / name


def _write_atomic(path: Path, data: dict[str, Any], uid: int | None = None) -> None:
    tmp = path.with_name(f".{path.name}.new")
    tmp.write_text(json.dumps(data, sort_keys=True))
    tmp.chmod(0o644)
    tmp.rename(path)


class Istiod:
    def __init__(self, config: IstiodConfig) -> None:
        self.config = config
        api_config = client.Configuration()
        api_config.host = config.apiserver
        api_config.ssl_ca_cert = config.ca_bundle
        api_config.cert_file = config.client_cert
        api_config.key_file = config.client_key
        api = client.ApiClient(api_config)
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.generation = 0
        self.last_digest = ""
        self.missing: list[str] = []

    def _list_custom(self, plural: str) -> list[dict[str, Any]]:
        return list(self.custom.list_cluster_custom_object("security.istio.io", "v1", plural)["items"])

    def snapshot(self) -> tuple[list[PodView], list[str], list[dict[str, Any]], list[dict[str, Any]]]:
        """Pods, their uids, PeerAuthentications and AuthorizationPolicies.

        The uids are part of what "changed" means: a pod deleted and made again under
        the same name and address between two polls is a new pod with a new
        directory, and it needs its own push even though its view is the same.
        """
        pods = []
        uids = []
        for pod in self.core.list_pod_for_all_namespaces().items:
            labels = pod.metadata.labels or {}
            if pod.metadata.deletion_timestamp:
                continue
            pods.append(PodView(pod.metadata.namespace, pod.metadata.name, labels,
                                (pod.status.pod_ip or "") if pod.status else "",
                                pod.spec.service_account_name or "default", labels.get(MESHED_LABEL) == "true"))
            uids.append(pod.metadata.uid or "")
        return pods, uids, self._list_custom("peerauthentications"), self._list_custom("authorizationpolicies")

    def push(self) -> None:
        pods, uids, peer_auth, authz = self.snapshot()
        digest = hashlib.sha256(json.dumps(
            [[p.__dict__ for p in pods], uids, peer_auth, authz], sort_keys=True, default=str).encode()).hexdigest()
        root = Path(self.config.pods_root)
        arrived = any((root / pod).is_dir() for pod in self.missing)
        if digest == self.last_digest and not arrived:
            return
        self.generation += 1
        peer_map = peers(pods, self.config.trust_domain)
        covered = []
        missing = []
        for pod in pods:
            folder = pod_dir(root, pod.namespace, pod.name)
            if not pod.meshed:
                continue
            if not folder.is_dir():
                missing.append(f"{pod.namespace}/{pod.name}")  # pushed to once its directory appears
                continue
            compiled = compile_pod(pod, self.config.trust_domain, peer_auth, authz)
            for problem in compiled.broken:
                log.error("refused for %s/%s: %s", pod.namespace, pod.name, problem)
            _write_atomic(folder / "mesh.json", compiled.as_json(self.generation, self.config.trust_domain, peer_map))
            covered.append(f"{pod.namespace}/{pod.name}")
        _write_atomic(root / "istiod.json", {"generation": self.generation, "pods": covered,
                                             "peers": sorted(peer_map)})
        self.last_digest = digest
        self.missing = missing
        log.info("pushed generation %d to %d sidecars", self.generation, len(covered))

    def run(self) -> None:
        stop = threading.Event()
        while not stop.wait(POLL_SECONDS):
            try:
                self.push()
            except Exception as err:  # noqa: BLE001 - keep serving; the next round retries
                log.warning("push failed: %s", err)


def main() -> None:
    parser = argparse.ArgumentParser(description="trustgrid local istiod")
    parser.add_argument("--config", required=True)
    args = parser.parse_args()
    install_record_factory()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s istiod %(levelname)s %(message)s")
    os.umask(0o022)
    Istiod(IstiodConfig(**json.loads(Path(args.config).read_text()))).run()


if __name__ == "__main__":
    main()
