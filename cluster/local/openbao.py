"""A real OpenBao (or HashiCorp Vault) server on loopback, in server mode.

File storage, TLS, Shamir seal: seal, unseal, stop and restart are the real
operations. The server runs as a "pod": in a private mount namespace its
/var/run/secrets/kubernetes.io/serviceaccount holds a token bound to the
Pod object ``vault/vault-0``, which the platform rotates as a kubelet
would. That is how Vault reviews tokens without a pinned reviewer JWT.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import hvac
import requests

from cluster.errors import ProcessFailed, VaultSealed, WaitTimeout
from cluster.local.binaries import VaultBinary
from cluster.local.process import ManagedProcess, stop_recorded
from cluster.promconfig import TELEMETRY
from cluster.runstate import RunState, process_run_id
from cluster.secrets import register
from cluster.wait import wait_until

KEY_SHARES = 3
KEY_THRESHOLD = 2
SA_MOUNT = "/run/secrets/kubernetes.io/serviceaccount"

# The wrapper gives the server a private /run with the projected token
# directory bind-mounted where the Kubernetes auth plugin looks for it.
# Nothing on the host is touched; the mounts vanish with the process.
_POD_WRAPPER = (
    'mount -t tmpfs tmpfs /run && mkdir -p "$4" && mount --bind "$1" "$4" && exec "$2" server -config="$3"'
)


def pod_argv(token_dir: Path, binary: Path, config: Path) -> list[str]:
    """``binary server -config=config`` as a pod: ``token_dir`` mounted where the Kubernetes auth plugin
    reads its own service-account token, in a private mount namespace."""
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", _POD_WRAPPER, "sh",
            str(token_dir), str(binary), str(config), SA_MOUNT]


@dataclass(frozen=True)
class VaultEndpoint:
    addr: str
    ca: Path
    flavor: str
    version: str

    def client(self, token: str | None = None, *, timeout: float = 5) -> hvac.Client:
        # "" rather than None: hvac would otherwise send the VAULT_TOKEN of the user's shell (their own Vault's).
        return hvac.Client(url=self.addr, token=token if token is not None else "", verify=str(self.ca),
                           timeout=timeout)

    @property
    def display(self) -> str:
        return f"{'OpenBao' if self.flavor == 'openbao' else 'Vault'} {self.version}"


def server_config(*, port: int, cluster_port: int, data_dir: Path, cert: Path, key: Path,
                  audit_log: Path | None, flavor: str, node_ip: str | None = None) -> str:
    lines = [
        "ui = false",
        f'api_addr = "https://127.0.0.1:{port}"',
        f'cluster_addr = "https://127.0.0.1:{cluster_port}"',
        # Integrated storage, as the Helm charts run it; OpenBao has no file backend.
        # performance_multiplier 1 is the production tuning; the default (5)
        # makes a single node wait seconds for its own election at init.
        f'storage "raft" {{\n  path = "{data_dir}"\n  node_id = "vault-0"\n  performance_multiplier = 1\n}}',
        "listener \"tcp\" {",
        f'  address = "127.0.0.1:{port}"',
        f'  tls_cert_file = "{cert}"',
        f'  tls_key_file = "{key}"',
        "}",
    ]
    if node_ip:
        # Pods reach Vault on the bridge address, as pods reach an in-cluster service.
        lines += ["listener \"tcp\" {", f'  address = "{node_ip}:{port}"', f'  tls_cert_file = "{cert}"',
                  f'  tls_key_file = "{key}"', "}"]
    if flavor == "vault":
        lines.append("disable_mlock = true")  # OpenBao dropped mlock; Vault needs it off for raft
    lines.append(TELEMETRY.rstrip("\n"))  # sys/metrics in Prometheus's format (cluster/local/monitoring.py)
    if audit_log is not None and flavor == "openbao":
        # OpenBao refuses API-created audit devices (CVE-2025-54997); they are declarative.
        lines += [
            'audit "file" "file" {',
            '  description = "trustgrid audit log"',
            f'  options {{ file_path = "{audit_log}" }}',
            "}",
        ]
    return "\n".join(lines) + "\n"


class LocalVault:
    """Start, initialize, unseal, seal and stop one Vault server process."""

    def __init__(self, binary: VaultBinary, state: RunState, endpoint: VaultEndpoint, port: int, *,
                 cluster_port: int, node_ip: str | None = None, audit: bool = True) -> None:
        self.node_ip = node_ip
        self.audit = audit  # a setup without audit is installed as asked, so conformance can judge it
        self.binary = binary
        self.state = state
        self.endpoint = endpoint
        self.port = port
        self.cluster_port = cluster_port
        self._process: ManagedProcess | None = None  # set when this process started the server

    @property
    def token_dir(self) -> Path:
        return self.state.file("vault-pod")

    @property
    def audit_log(self) -> Path:
        return self.state.file("logs/vault-audit.log")

    def process(self, *, owner: bool) -> ManagedProcess:
        config = self.state.file("vault.hcl")
        if not config.exists():
            pki = self.state.file("pki")
            data_dir = self.state.file("vault-data")
            data_dir.mkdir(mode=0o700, exist_ok=True)
            config.write_text(server_config(
                port=self.port, cluster_port=self.cluster_port, data_dir=data_dir, cert=pki / "vault.crt",
                key=pki / "vault.key", audit_log=self.audit_log if self.audit else None, flavor=self.binary.flavor,
                node_ip=self.node_ip,
            ))
        self.token_dir.mkdir(mode=0o700, exist_ok=True)
        return ManagedProcess("vault", pod_argv(self.token_dir, self.binary.path, config), self.state,
                              die_with_parent=owner)

    def start(self, *, owner: bool = True) -> ManagedProcess:
        process = self.process(owner=owner)
        process.start()
        self._process = process
        process.wait_ready(self.reachable, timeout=30, describe="Vault to listen")
        return process

    def reachable(self) -> bool:
        try:
            response = requests.get(f"{self.endpoint.addr}/v1/sys/health", verify=str(self.endpoint.ca), timeout=1)
        except requests.RequestException:
            return False
        return response.status_code in (200, 429, 472, 473, 501, 503)

    def stop(self) -> None:
        """Stop the server, whichever process started it (pid file, checked label); reaped if ours."""
        stop_recorded(self.state, "vault", grace=10)
        self._process = None

    def running(self) -> bool:
        pid = self.state.pids().get("vault")
        return bool(pid) and process_run_id(pid or 0) == self.state.run_id

    # -- seal lifecycle ------------------------------------------------------
    @property
    def _keys_file(self) -> Path:
        return self.state.file("vault-init.json")

    def initialize(self) -> None:
        # Raft elects its single node during init: allow it more than a normal request.
        client = self.endpoint.client(timeout=60)
        if client.sys.is_initialized():
            return
        result = client.sys.initialize(secret_shares=KEY_SHARES, secret_threshold=KEY_THRESHOLD)
        for key in result["keys_base64"] + result["keys"]:
            register(key)
        register(result["root_token"])
        self.state.write_private("vault-init.json", json.dumps(
            {"keys_base64": result["keys_base64"], "root_token": result["root_token"]}))

    def _init_data(self) -> dict[str, list[str] | str]:
        data: dict[str, list[str] | str] = json.loads(self._keys_file.read_text())
        for key in data["keys_base64"]:
            register(str(key))
        register(str(data["root_token"]))
        return data

    def root_token(self) -> str:
        return str(self._init_data()["root_token"])

    def unseal(self) -> None:
        client = self.endpoint.client()
        keys = list(self._init_data()["keys_base64"])
        for key in keys[:KEY_THRESHOLD]:
            client.sys.submit_unseal_key(key)
        try:
            wait_until(lambda: not client.sys.read_seal_status()["sealed"], timeout=15,
                       describe="Vault to report unsealed")
        except WaitTimeout as err:
            raise ProcessFailed("vault", f"did not unseal ({err.last_error or err.last_state})", "") from None

    def seal(self) -> None:
        self.endpoint.client(self.root_token()).sys.seal()

    def sealed(self) -> bool:
        return bool(self.endpoint.client().sys.read_seal_status()["sealed"])

    def require_unsealed(self) -> None:
        if self.sealed():
            raise VaultSealed("Vault is sealed", fix="unseal it (the platform keeps the keys in its state dir)")


def write_pod_token(token_dir: Path, token: str, ca_pem: str, namespace: str) -> None:
    """Atomically replace the projected token files, as the kubelet does."""
    for name, content in (("token", token), ("ca.crt", ca_pem), ("namespace", namespace)):
        partial = token_dir / f".{name}.new"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(content)
        partial.rename(token_dir / name)
