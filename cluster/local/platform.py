"""The local platform: real etcd, kube-apiserver and OpenBao on this machine.

``start_local`` is the owner's bring-up: a context manager that tears down
whatever it started, in reverse order, even when interrupted half-way.
``attach_local`` gives xdist workers the same Platform over the owner's
state directory.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import hvac
from kubernetes import client as k8s
from kubernetes.client import ApiClient

from cluster.agent import APP_PORT
from cluster.errors import PlatformUnavailable
from cluster.istio import ROOT_NAMESPACE, apply, peer_authentication
from cluster.kube import Kube
from cluster.local import pki as local_pki
from cluster.local.apiserver import ApiServerEndpoint, apiserver_process, apiserver_ready, write_kubeconfig
from cluster.local.binaries import VaultBinary, find_control_plane, find_crds, find_pod_binary, find_vault
from cluster.local.crds import install_crds
from cluster.local.etcd import etcd_healthy, etcd_process
from cluster.local.janitor import janitor
from cluster.local.meshservices import (
    MESH_CA_ACCOUNT,
    MESH_NAMESPACE,
    declare_mesh_ca_issuer,
    istiod_process,
    mesh_ca_from_config,
    mesh_ca_identity,
    mesh_ca_process,
    wait_istiod,
    wait_mesh_ca,
)
from cluster.local.network import NodeNetwork, pick_pod_cidr, reap_networks, remove_run_network
from cluster.local.openbao import LocalVault, VaultEndpoint
from cluster.local.pods import LocalPods, MeshEndpoints
from cluster.local.process import claim_port, stop_recorded
from cluster.local.vaultpod import TokenRefresher, VaultPod
from cluster.meshconfig import write_mesh_config
from cluster.platform import CallResult, Capture, Versions, Workload
from cluster.runstate import RunState, reap_dead_runs
from cluster.secrets import redact
from cluster.settings import Settings
from cluster.tenancy import install_setup_namespaces
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
    pod_cidr: str
    node_ip: str
    pods_root: str
    tgpod: str
    mesh_ca_url: str
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

    def mesh_ca_status(self) -> dict[str, Any]:
        """The CA's own status, plus its Vault refusals sorted the way scenarios read them."""
        path = self._platform.state.file("meshca/status.json")
        status: dict[str, Any] = dict(json.loads(path.read_text())) if path.exists() else {}
        errors = [str(e) for e in status.get("vault_recent_errors", [])]
        status["vault_holds_token"] = True  # it logs in once and renews, as a Vault agent would
        status["vault_token_refused"] = [e for e in errors if "403" in e and "token" in e]
        status["vault_login_refused"] = [e for e in errors if "login of the CA refused" in e]
        return status

    def revoke_mesh_ca_vault_access(self) -> None:
        """Remove the CA's Vault role (re-login refused) and revoke its current token."""
        admin = self._platform.vault_admin()
        layout = self._platform.vault_layout
        admin.adapter.delete(f"/v1/auth/{layout.kubernetes_path}/role/{MESH_CA_ROLE}")
        accessor = self.mesh_ca_status().get("vault_accessor")
        if accessor:
            admin.adapter.post("/v1/auth/token/revoke-accessor", json={"accessor": accessor})

    def restore_mesh_ca_vault_access(self) -> None:
        platform = self._platform
        VaultConfigurator(platform.vault_admin(), platform.vault_layout, platform.settings.profile.setup,
                          platform.run_id).configure_mesh_ca(MESH_NAMESPACE, MESH_CA_ACCOUNT)

    def stop_mesh_ca(self) -> None:
        stop_recorded(self._platform.state, "mesh-ca")

    def start_mesh_ca(self) -> None:
        platform = self._platform
        process = mesh_ca_from_config(platform.state, owner=platform.owner)
        process.start()
        wait_mesh_ca(process, platform.connection.mesh_ca_url, Path(platform.connection.ca))


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
        pins = load_pins()
        self.versions = Versions(
            platform=self.name,
            kubernetes=connection.kubernetes_version,
            vault=connection.vault_endpoint.display,
            # Istio and cert-manager are here as their real CRDs (the API); the data plane is tgpod.
            extra={"etcd": connection.etcd_version, "istio": f"{pins.istio} API, tgpod sidecar",
                   "cert-manager": f"{pins.cert_manager} API"},
        )
        binary = VaultBinary(Path(connection.vault_binary), connection.vault_flavor, connection.vault_version)
        self.vault = LocalVault(binary, state, connection.vault_endpoint, connection.vault_port,
                                cluster_port=connection.vault_cluster_port, node_ip=connection.node_ip)
        ca_pem = Path(connection.ca).read_text()
        self.vault_pod = VaultPod(Kube(self.kube), self.run_id, self.vault.token_dir, ca_pem)
        self.network = NodeNetwork(self.run_id, ipaddress.ip_network(connection.pod_cidr),  # type: ignore[arg-type]
                                   state.file("ipam.json"))
        pods_root = Path(connection.pods_root)
        self.pods = LocalPods(state, self.network, Kube(self.kube), MeshEndpoints(
            pods_root=pods_root / "pods", tgpod=pods_root / "bin" / "tgpod", ca_bundle=pods_root / "ca.crt",
            mesh_ca_url=connection.mesh_ca_url,
            vault_addr=f"https://{connection.node_ip}:{connection.vault_port}",
            vault_audience=settings.profile.setup.vault.audience,
        ), layout=self.vault_layout, run_id=self.run_id)

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
        return self.pods.deploy(ns, name, sa, meshed=meshed)

    def undeploy(self, wl: Workload) -> None:
        self.pods.delete(wl)

    def call(self, src: Workload, dst: Workload, *, canary: str, timeout: float) -> CallResult:
        return self.pods.call(src, dst, canary=canary, timeout=timeout)

    def session(self, src: Workload, dst: Workload, *, count: int, interval: float) -> list[dict[str, Any]]:
        return self.pods.session(src, dst, count=count, interval=interval)

    def read_vault(self, wl: Workload) -> dict[str, Any]:
        return self.pods.read_vault(wl)

    def sidecar_status(self, wl: Workload) -> dict[str, Any]:
        return self.pods.sidecar_status(wl)

    def renew_certificate(self, wl: Workload) -> None:
        self.pods.renew_certificate(wl)

    def peer_certificate(self, wl: Workload) -> bytes:
        """Handshake with the pod's proxy from the node, as any TLS client would, and keep its certificate."""
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # callers verify it against Vault's own chain
        with socket.create_connection((wl.ip, APP_PORT), timeout=5) as raw, context.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
        if not der:
            raise PlatformUnavailable(f"the proxy of {wl.namespace}/{wl.name} presented no certificate")
        return der

    def pause_vault_agent(self, wl: Workload, paused: bool) -> None:
        self.pods.pause_vault_agent(wl, paused)

    def refresh_tokens(self, wl: Workload) -> None:
        self.pods.refresh_tokens(wl)

    def capture(self, wl: Workload) -> AbstractContextManager[Capture]:
        return self.pods.capture(wl)

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


PODS_BASE = Path("/run/trustgrid")
MESH_CA_ROLE = "mesh-ca"


def reap_local() -> list[str]:
    """Remove what dead local runs left: processes, state, network namespaces, links, rules, pod files.

    Each piece is judged by the owner it records (a pid, or "kept"), never by
    which cache directory this process happens to use.
    """
    reaped = reap_dead_runs()
    reaped += reap_networks()
    if PODS_BASE.is_dir():
        for folder in PODS_BASE.iterdir():
            owner_file = folder / "owner"
            owner = owner_file.read_text().strip() if owner_file.exists() else ""
            if owner != "kept" and not (owner.isdigit() and Path(f"/proc/{owner}").exists()):
                shutil.rmtree(folder, ignore_errors=True)
                reaped.append(str(folder))
    return reaped


def remove_run(run_id: str) -> None:
    """Remove a kept run's network and pod files (its processes and state go by the state dir)."""
    remove_run_network(run_id)
    shutil.rmtree(PODS_BASE / run_id, ignore_errors=True)


def _reap(progress: Progress) -> None:
    reaped = reap_local()
    if reaped:
        progress(f"reaped what dead runs left: {', '.join(reaped)}")


def _pods_root(run_id: str, tgpod: Path, ca: Path, owner: str) -> Path:
    """World-readable home of the pods' binary and CA bundle: the sidecar runs as uid 1337."""
    root = PODS_BASE / run_id
    (root / "bin").mkdir(parents=True, mode=0o755)
    (root / "owner").write_text(owner)
    (root / "pods").mkdir(mode=0o755)
    for folder in (PODS_BASE, root):
        folder.chmod(0o755)
    shutil.copy(tgpod, root / "bin" / "tgpod")
    (root / "bin" / "tgpod").chmod(0o755)
    shutil.copy(ca, root / "ca.crt")
    (root / "ca.crt").chmod(0o644)
    return root


@contextlib.contextmanager
def start_local(settings: Settings, progress: Progress) -> Iterator[LocalPlatform]:
    """Bring the local platform up; on any failure or interrupt, tear down what started."""
    _require_root()
    _require_tools()
    _reap(progress)
    pins = load_pins()
    binaries = find_control_plane(settings.cache_dir, pins, progress=progress)
    crds = find_crds(settings.cache_dir, pins, progress=progress)
    tgpod = find_pod_binary(settings.cache_dir, progress=progress)
    vault_binary = find_vault(settings.vault_binary)
    cidr = pick_pod_cidr(settings.run_id, settings.pod_cidr)
    owner = not settings.keep_cluster  # kept processes must outlive pytest
    setup = settings.profile.setup

    timings: dict[str, float] = {}
    started = time.monotonic()
    # Teardown is always armed while coming up, so that a failed or interrupted
    # bring-up never leaves a half-created cluster, even with --keep-cluster.
    with contextlib.ExitStack() as stack:
        state = RunState.create(settings.run_id)
        stack.callback(state.remove)
        stack.enter_context(janitor(state))  # reaps the run if this process dies without its teardown
        if settings.keep_cluster:
            state.mark_kept({"kubeconfig": str(state.file("kubeconfig"))})
        network = NodeNetwork(settings.run_id, cidr, state.file("ipam.json"))
        stack.callback(network.down)
        network.up(state.owner)
        pki = local_pki.generate(state, extra_ips=(network.host_ip,))
        stack.callback(shutil.rmtree, PODS_BASE / settings.run_id, True)
        pods_root = _pods_root(settings.run_id, tgpod, pki.ca.cert, state.owner)
        # Claim every port before starting anything: a taken port fails cleanly.
        etcd, etcd_endpoint = etcd_process(str(binaries.etcd), state)
        apiserver, api_endpoint = apiserver_process(str(binaries.kube_apiserver), state, pki, etcd_endpoint,
                                                    port=settings.apiserver_port)
        vault_port = claim_port(settings.vault_port, "--vault-port")
        vault_endpoint = VaultEndpoint(f"https://127.0.0.1:{vault_port}", api_endpoint.ca,
                                       vault_binary.flavor, vault_binary.version)
        vault_cluster_port = claim_port(0, "--vault-port")
        vault = LocalVault(vault_binary, state, vault_endpoint, vault_port,
                           cluster_port=vault_cluster_port, node_ip=network.host_ip, audit=setup.vault.audit)

        progress("starting etcd, OpenBao and kube-apiserver")
        for process in (etcd, apiserver):
            process.die_with_parent = owner
        stack.callback(etcd.stop)
        etcd.start()
        # Armed before the start: an interrupt while Vault comes up must still stop it.
        stack.callback(vault.stop)
        vault.start(owner=owner)
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
        progress("installing Istio and cert-manager CRDs, and Vault's pod identity")
        install_crds(api, crds)
        vault_pod = VaultPod(kube, settings.run_id, vault.token_dir, api_endpoint.ca.read_text())
        vault_pod.ensure_identity()
        vault_pod.new_incarnation()
        if owner:
            stack.enter_context(TokenRefresher(vault_pod))

        configure_started = time.monotonic()
        progress("configuring Vault: Kubernetes auth, KV, PKI root and intermediate, audit")
        layout = VaultLayout()
        configurator = VaultConfigurator(vault_endpoint.client(vault.root_token()), layout, setup, settings.run_id)
        configure_vault(configurator, api_endpoint, str(vault.audit_log) if setup.vault.audit else None)
        timings["vault_configure_s"] = time.monotonic() - configure_started

        progress("starting the mesh CA and istiod")
        role = mesh_ca_identity(kube, configurator, state, settings.run_id)
        mesh_ca, mesh_ca_url = mesh_ca_process(state, api_endpoint, layout, setup, node_ip=network.host_ip,
                                               vault_addr=f"https://{network.host_ip}:{vault_port}", role=role,
                                               owner=owner)
        mesh_ca.start()
        stack.callback(stop_recorded, state, "mesh-ca")  # whichever incarnation is running then
        istiod = istiod_process(state, api_endpoint, pods_root / "pods", setup, owner=owner)
        istiod.start()
        stack.callback(istiod.stop)
        apply(kube, peer_authentication(ROOT_NAMESPACE, "default", setup.mesh.mtls.default, settings.run_id))
        write_mesh_config(kube, setup, settings.run_id)
        declare_mesh_ca_issuer(kube, layout, f"https://{network.host_ip}:{vault_port}", role, settings.run_id)
        install_setup_namespaces(kube, configurator)
        wait_mesh_ca(mesh_ca, mesh_ca_url, api_endpoint.ca)
        wait_istiod(istiod, pods_root / "pods")

        connection = Connection(
            apiserver_url=api_endpoint.url, ca=str(api_endpoint.ca), client_cert=str(api_endpoint.client_cert),
            client_key=str(api_endpoint.client_key), issuer=api_endpoint.issuer,
            vault_addr=vault_endpoint.addr, vault_port=vault_port, vault_cluster_port=vault_cluster_port,
            vault_binary=str(vault_binary.path), vault_flavor=vault_binary.flavor,
            vault_version=vault_binary.version, kubernetes_version=kube.server_version(),
            etcd_version=pins.etcd, pod_cidr=str(cidr), node_ip=network.host_ip, pods_root=str(pods_root),
            tgpod=str(tgpod), mesh_ca_url=mesh_ca_url, timings=timings,
        )
        platform = LocalPlatform(settings, state, connection, owner=owner)
        stack.callback(platform.pods.delete_all)
        timings["platform_up_s"] = time.monotonic() - started
        state.write_private(CONNECTION_FILE, json.dumps(asdict(connection)))
        if settings.keep_cluster:
            stack.pop_all()  # disarm: the cluster outlives this run on purpose
            state.mark_kept({"kubeconfig": str(state.file("kubeconfig")), "vault_addr": vault_endpoint.addr})
            progress(f"--keep-cluster: kept run {state.run_id}; KUBECONFIG={state.file('kubeconfig')}; "
                     f"remove it with: python -m cluster down {state.run_id}")
        yield platform


def configure_vault(configurator: VaultConfigurator, api: ApiServerEndpoint, audit_log: str | None) -> None:
    """The shared Vault setup, pointed at this platform's API server."""
    configurator.configure_kubernetes_auth(KubernetesAuthTarget(
        host=api.url, ca_pem=api.ca.read_text(), issuer=api.issuer))
    configurator.configure_kv()
    configurator.configure_pki()
    if audit_log is not None:
        configurator.ensure_audit(audit_log)


def attach_local(settings: Settings, state_path: Path) -> LocalPlatform:
    state = RunState.attach(state_path)
    data = json.loads(state.file(CONNECTION_FILE).read_text())
    return LocalPlatform(settings, state, Connection(**data), owner=False)
