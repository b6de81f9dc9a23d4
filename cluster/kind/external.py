"""`--vault external`: Vault or OpenBao in a container beside the kind nodes, on kind's Docker network.

This is the topology where Vault lives outside the cluster: pods reach it by
its address on the network, and it reaches the API server's container by
name for TokenReview, with a reviewer service account's token (it has no pod
identity of its own). The container runs in server mode with file storage
(never dev mode: seal, unseal and restart must be real), started by
testcontainers, whose reaper also removes it if the run is killed.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass

from cluster.kind.commands import Runner

KIND_NETWORK = "kind"
PORT = 8200


@dataclass(frozen=True)
class ExternalVault:
    container: str  # the container's name: docker stop/start act on it for vault-down
    cluster_addr: str  # as pods reach it: its address on the kind network
    local_addr: str  # as this process reaches it: a fixed published loopback port (kept across restarts)


def server_config(flavor: str) -> str:
    """Server mode, file storage inside the container (it survives docker stop/start), no TLS on the network."""
    return ('disable_mlock = true\nui = false\n'
            f'listener "tcp" {{\n  address = "0.0.0.0:{PORT}"\n  tls_disable = 1\n}}\n'
            f'storage "file" {{\n  path = "/tmp/trustgrid-{flavor}-data"\n}}\n')


def server_command(flavor: str) -> list[str]:
    """Write the config and exec the server; no image-specific entrypoint variables are relied on."""
    binary = "bao" if flavor == "openbao" else "vault"
    return ["sh", "-c", f'printf "%s" "$TRUSTGRID_CONFIG" > /tmp/trustgrid.hcl && '
                        f"exec {binary} server -config=/tmp/trustgrid.hcl"]


def container_name(run_id: str) -> str:
    return f"trustgrid-vault-{run_id.removeprefix('tg-')}"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def network_address(runner: Runner, container: str) -> str:
    """The container's IPv4 address on the kind network, from `docker inspect`."""
    template = "{{(index .NetworkSettings.Networks \"" + KIND_NETWORK + "\").IPAddress}}"
    return runner(["docker", "inspect", "--format", template, container], timeout=30).strip()


@contextlib.contextmanager
def external_vault(flavor: str, run_id: str, image: str, runner: Runner) -> Iterator[ExternalVault]:
    """Start the container on the kind network; it is removed when the block ends."""
    from testcontainers.core.container import DockerContainer  # imported here: only this path needs Docker

    name = container_name(run_id)
    local_port = _free_port()
    container = (DockerContainer(image)
                 .with_name(name)
                 .with_command(server_command(flavor))
                 .with_env("TRUSTGRID_CONFIG", server_config(flavor))
                 .with_bind_ports(PORT, local_port)
                 .with_kwargs(network=KIND_NETWORK, labels={"trustgrid.io/run-id": run_id}))
    container.start()
    try:
        yield ExternalVault(container=name, cluster_addr=f"http://{network_address(runner, name)}:{PORT}",
                            local_addr=f"http://127.0.0.1:{local_port}")
    finally:
        container.stop()
