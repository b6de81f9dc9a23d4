"""The local platform: real etcd, kube-apiserver and OpenBao on this machine.

``start_local`` is the owner's bring-up: a context manager that tears down
whatever it started, in reverse order, even when interrupted half-way.
``attach_local`` gives xdist workers the same Platform over the owner's
state directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import hvac
from kubernetes import client as k8s
from kubernetes.client import ApiClient

from cluster.errors import PlatformNotImplemented, PlatformUnavailable
from cluster.kube import Kube
from cluster.local import pki as local_pki
from cluster.local.apiserver import ApiServerEndpoint, apiserver_process, apiserver_ready, write_kubeconfig
from cluster.local.binaries import VaultBinary, find_control_plane, find_crds, find_vault
from cluster.local.crds import install_crds
from cluster.local.etcd import etcd_healthy, etcd_process
from cluster.local.openbao import LocalVault, VaultEndpoint
from cluster.local.process import claim_port
from cluster.local.vaultpod import TokenRefresher, VaultPod
from cluster.platform import CallResult, Capture, Versions, Workload
from cluster.runstate import RunState, reap_dead_runs
from cluster.secrets import redact
from cluster.settings import Settings
from cluster.vault import KubernetesAuthTarget, VaultConfigurator, VaultLayout
from cluster.versions import load_pins

Progress = Callable[[str], None]
CONNECTION_FILE = "connection.json"


@dataclass(frozen=True)
class Connection:
    """What a worker needs to reach the owner's platform; no secrets in here."""

    apiserver_url: str
    ca: str
    client_cert: str
    client_key: str
    issuer: str
    vault_addr: str
    vault_port: int
    vault_cluster_port: int
    vault_binary: str
    vault_flavor: str
    vault_version: str
    kubernetes_version: str
    etcd_version: str
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def apiserver(self) -> ApiServerEndpoint:
        return ApiServerEndpoint(self.apiserver_url, Path(self.ca), Path(self.client_cert),
                                 Path(self.client_key), self.issuer)

    @property
    def vault_endpoint(self) -> VaultEndpoint:
        return VaultEndpoint(self.vault_addr, Path(self.ca), self.vault_flavor, self.vault_version)


def _api_client(endpoint: ApiServerEndpoint) -> ApiClient:
    config = k8s.Configuration()
    config.host = endpoint.url
    config.ssl_ca_cert = str(endpoint.ca)
    config.cert_file = str(endpoint.client_cert)
    config.key_file = str(endpoint.client_key)
    return ApiClient(config)


class LocalFaults:
    """Cluster-wide faults on the local Vault. Callers hold ``exclusive``."""

    def __init__(self, platform: LocalPlatform) -> None:
        self._platform = platform

    def exclusive(self, what: str) -> AbstractContextManager[None]:
        return self._platform.state.lock("platform")

    def shared(self) -> AbstractContextManager[None]:
        return self._platform.state.lock("platform", shared=True)

    def stop_vault(self) -> None:
        self._platform.vault.stop()

    def start_vault(self) -> None:
        platform = self._platform
        platform.vault_pod.new_incarnation()  # a restarted Vault is a new pod with a new token
        platform.vault.start(owner=platform.owner)
        platform.vault.unseal()

    def restart_vault(self) -> None:
        self.stop_vault()
        self.start_vault()

    def seal_vault(self) -> None:
        self._platform.vault.seal()

    def unseal_vault(self) -> None:
        self._platform.vault.unseal()


class LocalPlatform:
    name = "local"

    def __init__(self, settings: Settings, state: RunState, connection: Connection, *, owner: bool) -> None:
        self.settings = settings
        self.state = state
        self.connection = connection
        self.owner = owner
        self.run_id = state.run_id
        self.kube = _api_client(connection.apiserver)
        self.vault_layout = VaultLayout()
        self.versions = Versions(
            platform=self.name,
            kubernetes=connection.kubernetes_version,
            vault=connection.vault_endpoint.display,
            extra={"etcd": connection.etcd_version},
        )
        binary = VaultBinary(Path(connection.vault_binary), connection.vault_flavor, connection.vault_version)
        self.vault = LocalVault(binary, state, connection.vault_endpoint, connection.vault_port,
                                connection.vault_cluster_port)
        ca_pem = Path(connection.ca).read_text()
        self.vault_pod = VaultPod(Kube(self.kube), self.run_id, self.vault.token_dir, ca_pem)

    @property
    def timings(self) -> dict[str, float]:
        return self.connection.timings

    def vault_admin(self) -> hvac.Client:
        return self.connection.vault_endpoint.client(self.vault.root_token())

    def vault_client(self) -> hvac.Client:
        return self.connection.vault_endpoint.client()

    def faults(self) -> LocalFaults:
        return LocalFaults(self)

    def deploy(self, ns: str, name: str, sa: str, *, meshed: bool = True) -> Workload:
        raise PlatformNotImplemented("local pods arrive with the local mesh", fix="run the Kubernetes-auth suites only")

    def call(self, src: Workload, dst: Workload, *, canary: str, timeout: float) -> CallResult:
        raise PlatformNotImplemented("local pods arrive with the local mesh", fix="run the Kubernetes-auth suites only")

    def capture(self, wl: Workload) -> AbstractContextManager[Capture]:
        raise PlatformNotImplemented("local pods arrive with the local mesh", fix="run the Kubernetes-auth suites only")

    def dump(self, into: Path) -> None:
        """Copy every component log, redacted, for a failure report."""
        into.mkdir(parents=True, exist_ok=True)
        for log in sorted(self.state.file("logs").glob("*.log")):
            (into / log.name).write_text(redact(log.read_text(errors="replace")))


def _require_root() -> None:
    if os.geteuid() != 0:
        raise PlatformUnavailable(
            "the local platform needs root (mount and network namespaces, iptables)",
            fix="run as root, or use --platform kind on a machine with Docker",
        )


def _require_tools() -> None:
    missing = [tool for tool in ("unshare", "mount") if shutil.which(tool) is None]
    if missing:
        raise PlatformUnavailable(f"{', '.join(missing)} not found", fix="apt-get install util-linux mount")


@contextlib.contextmanager
def start_local(settings: Settings, progress: Progress) -> Iterator[LocalPlatform]:
    """Bring the local platform up; on any failure or interrupt, tear down what started."""
    _require_root()
    _require_tools()
    reaped = reap_dead_runs()
    if reaped:
        progress(f"reaped {len(reaped)} leftover run(s): {', '.join(reaped)}")
    pins = load_pins()
    binaries = find_control_plane(settings.cache_dir, pins, progress=progress)
    crds = find_crds(settings.cache_dir, pins, progress=progress)
    vault_binary = find_vault(settings.vault_binary)
    owner = not settings.keep_cluster  # kept processes must outlive pytest

    timings: dict[str, float] = {}
    started = time.monotonic()
    # Teardown is always armed while coming up, so that a failed or interrupted
    # bring-up never leaves a half-created cluster, even with --keep-cluster.
    with contextlib.ExitStack() as stack:
        state = RunState.create(settings.run_id)
        stack.callback(state.remove)
        if settings.keep_cluster:
            state.mark_kept({"kubeconfig": str(state.file("kubeconfig"))})
        # Claim every port before starting anything: a taken port fails cleanly.
        etcd, etcd_endpoint = etcd_process(str(binaries.etcd), state)
        apiserver, api_endpoint = apiserver_process(str(binaries.kube_apiserver), state,
                                                    local_pki.generate(state), etcd_endpoint,
                                                    port=settings.apiserver_port)
        vault_port = claim_port(settings.vault_port, "--vault-port")
        vault_endpoint = VaultEndpoint(f"https://127.0.0.1:{vault_port}", api_endpoint.ca,
                                       vault_binary.flavor, vault_binary.version)
        vault_cluster_port = claim_port(0, "--vault-port")
        vault = LocalVault(vault_binary, state, vault_endpoint, vault_port, vault_cluster_port)

        progress("starting etcd, OpenBao and kube-apiserver")
        for process in (etcd, apiserver):
            process.die_with_parent = owner
        etcd.start()
        stack.callback(etcd.stop)
        vault.start(owner=owner)
        stack.callback(vault.stop)
        etcd.wait_ready(lambda: etcd_healthy(etcd_endpoint), timeout=20, describe="etcd /health")
        apiserver.start()
        stack.callback(apiserver.stop)
        vault.initialize()
        vault.unseal()
        apiserver.wait_ready(lambda: apiserver_ready(api_endpoint), timeout=60, describe="kube-apiserver /readyz")
        write_kubeconfig(state, api_endpoint)
        timings["control_plane_up_s"] = time.monotonic() - started

        api = _api_client(api_endpoint)
        kube = Kube(api)
        connection = Connection(
            apiserver_url=api_endpoint.url, ca=str(api_endpoint.ca), client_cert=str(api_endpoint.client_cert),
            client_key=str(api_endpoint.client_key), issuer=api_endpoint.issuer,
            vault_addr=vault_endpoint.addr, vault_port=vault_port, vault_cluster_port=vault_cluster_port,
            vault_binary=str(vault_binary.path), vault_flavor=vault_binary.flavor,
            vault_version=vault_binary.version, kubernetes_version=kube.server_version(),
            etcd_version=pins.etcd, timings=timings,
        )
        platform = LocalPlatform(settings, state, connection, owner=owner)
        progress("installing Istio and cert-manager CRDs, and Vault's pod identity")
        install_crds(api, crds)
        platform.vault_pod.ensure_identity()
        platform.vault_pod.new_incarnation()
        if owner:
            stack.enter_context(TokenRefresher(platform.vault_pod))

        configure_started = time.monotonic()
        progress("configuring Vault: Kubernetes auth, KV, PKI root and intermediate, audit")
        configure_vault(platform)
        timings["vault_configure_s"] = time.monotonic() - configure_started
        timings["platform_up_s"] = time.monotonic() - started
        state.write_private(CONNECTION_FILE, json.dumps(asdict(connection)))
        if settings.keep_cluster:
            stack.pop_all()  # disarm: the cluster outlives this run on purpose
            state.mark_kept({"kubeconfig": str(state.file("kubeconfig")), "vault_addr": vault_endpoint.addr})
            progress(f"--keep-cluster: kept run {state.run_id}; KUBECONFIG={state.file('kubeconfig')}; "
                     f"remove it with: python -m cluster down {state.run_id}")
        yield platform


def configure_vault(platform: LocalPlatform) -> None:
    """The shared Vault setup, pointed at this platform's API server."""
    endpoint = platform.connection.apiserver
    configurator = VaultConfigurator(platform.vault_admin(), platform.vault_layout,
                                     platform.settings.profile.setup, platform.run_id)
    configurator.configure_kubernetes_auth(KubernetesAuthTarget(
        host=endpoint.url, ca_pem=endpoint.ca.read_text(), issuer=endpoint.issuer))
    configurator.configure_kv()
    configurator.configure_pki()
    if platform.settings.profile.setup.vault.audit:
        configurator.ensure_audit(str(platform.vault.audit_log))


def attach_local(settings: Settings, state_path: Path) -> LocalPlatform:
    state = RunState.attach(state_path)
    data = json.loads(state.file(CONNECTION_FILE).read_text())
    return LocalPlatform(settings, state, Connection(**data), owner=False)
