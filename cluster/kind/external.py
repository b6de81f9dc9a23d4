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
from collections.abc import Iterator
from dataclasses import dataclass

from cluster.kind.manifests import storage_config
from cluster.kubectl.commands import Runner
from cluster.kubectl.forward import free_port

KIND_NETWORK = "kind"
PORT = 8200


@dataclass(frozen=True)
class ExternalVault:
    container: str  # the container's name: docker stop/start act on it for vault-down
    cluster_addr: str  # as pods reach it: its address on the kind network
    local_addr: str  # as this process reaches it: a fixed published loopback port (kept across restarts)


def server_config(flavor: str) -> str:
    """Server mode, storage inside the container (it survives docker stop/start), no TLS on the network.
    File storage for Vault, integrated storage for OpenBao, which has no file backend (manifests.storage_config)."""
    storage = storage_config(flavor, f"/tmp/trustgrid-{flavor}-data", "http://127.0.0.1")  # noqa: S108 - in the container
    return ('disable_mlock = true\nui = false\n'
            f'listener "tcp" {{\n  address = "0.0.0.0:{PORT}"\n  tls_disable = 1\n}}\n' + storage)


def server_command(flavor: str) -> list[str]:
    """Write the config and exec the server; no image-specific entrypoint variables are relied on."""
    binary = "bao" if flavor == "openbao" else "vault"
    return ["sh", "-c", f'printf "%s" "$TRUSTGRID_CONFIG" > /tmp/trustgrid.hcl && '
                        f"exec {binary} server -config=/tmp/trustgrid.hcl"]


def container_name(run_id: str) -> str:
    return f"trustgrid-vault-{run_id.removeprefix('tg-')}"


def network_address(runner: Runner, container: str) -> str:
    """The container's IPv4 address on the kind network, from `docker inspect`."""
    template = "{{(index .NetworkSettings.Networks \"" + KIND_NETWORK + "\").IPAddress}}"
    return runner(["docker", "inspect", "--format", template, container], timeout=30).strip()


@contextlib.contextmanager
def external_vault(flavor: str, run_id: str, image: str, runner: Runner) -> Iterator[ExternalVault]:
    """Start the container on the kind network; it is removed when the block ends."""
    from testcontainers.core.container import DockerContainer  # imported here: only this path needs Docker

    name = container_name(run_id)
    local_port = free_port()
    container = (DockerContainer(image)
                 .with_name(name)
                 .with_command(server_command(flavor))
                 .with_env("TRUSTGRID_CONFIG", server_config(flavor))
                 .with_kwargs(network=KIND_NETWORK, labels={"trustgrid.io/run-id": run_id}))
    # Published on loopback only: Vault's API (plaintext on this port) is not offered to the host's network.
    # docker-py takes a host address only as an (ip, port) tuple (docker/utils/utils.py _convert_port_binding),
    # which testcontainers' with_bind_ports does not type.
    container.ports[f"{PORT}/tcp"] = ("127.0.0.1", local_port)  # type: ignore[assignment]
    container.start()
    try:
        yield ExternalVault(container=name, cluster_addr=f"http://{network_address(runner, name)}:{PORT}",
                            local_addr=f"http://127.0.0.1:{local_port}")
    finally:
        container.stop()
