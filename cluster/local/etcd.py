"""etcd for the local API server: one member on loopback, data in the state dir."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from cluster.local.process import ManagedProcess, claim_port
from cluster.runstate import RunState


@dataclass(frozen=True)
class EtcdEndpoint:
    client_url: str


def etcd_process(binary: str, state: RunState, *, client_port: int = 0) -> tuple[ManagedProcess, EtcdEndpoint]:
    client = claim_port(client_port, "--etcd-port")
    peer = claim_port(0, "--etcd-port")
    client_url = f"http://127.0.0.1:{client}"
    peer_url = f"http://127.0.0.1:{peer}"
    argv = [
        binary,
        "--name", "trustgrid",
        "--data-dir", str(state.file("etcd")),
        "--listen-client-urls", client_url,
        "--advertise-client-urls", client_url,
        "--listen-peer-urls", peer_url,
        "--initial-advertise-peer-urls", peer_url,
        "--initial-cluster", f"trustgrid={peer_url}",
        # A test cluster lives for minutes and is rebuilt from nothing; fsync
        # would only slow the API server down on a busy 2-core runner.
        "--unsafe-no-fsync",
        "--log-level", "warn",
    ]
    return ManagedProcess("etcd", argv, state), EtcdEndpoint(client_url)


def etcd_healthy(endpoint: EtcdEndpoint) -> bool:
    response = httpx.get(f"{endpoint.client_url}/health", timeout=1.0)
    return response.status_code == 200 and response.json().get("health") == "true"
