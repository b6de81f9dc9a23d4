"""Bring the local platform up, attach to it, and reap what dead runs left.

``start_local`` is the owner's bring-up: a context manager that tears down whatever it started,
in reverse order, even when interrupted half-way. ``attach_local`` gives xdist workers the same
Platform over the owner's state directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

from cluster.errors import PlatformUnavailable
from cluster.istio import ROOT_NAMESPACE, apply, peer_authentication
from cluster.kube import Kube
from cluster.local import istiod
from cluster.local import pki as local_pki
from cluster.local.apiserver import ApiServerEndpoint, apiserver_process, apiserver_ready, write_kubeconfig
from cluster.local.binaries import find_control_plane, find_crds, find_pod_binary, find_vault
from cluster.local.canary import stop_revisions
from cluster.local.controllermanager import (
    controller_manager_healthy,
    controller_manager_process,
    controller_manager_version,
)
from cluster.local.crds import install_crds
from cluster.local.etcd import etcd_healthy, etcd_process
from cluster.local.istiobuild import find_envoy, find_istio
from cluster.local.janitor import janitor
from cluster.local.kubelet import Kubelet
from cluster.local.mesh import node_images, rendered, start_istiod, write_cacerts
from cluster.local.meshservices import (
    declare_mesh_ca_issuer,
    mesh_ca_identity,
    mesh_ca_process,
    refresh_mesh_ca_tokens,
    wait_mesh_ca,
)
from cluster.local.monitoring import (
    EXPORTER,
    PROMETHEUS,
    exporter_process,
    prometheus_process,
    wait_exporter,
    wait_prometheus,
    write_config,
)
from cluster.local.network import NodeNetwork, pick_pod_cidr, reap_networks, remove_run_network, run_tag
from cluster.local.openbao import LocalVault, VaultEndpoint
from cluster.local.platform import (
    CONNECTION_FILE,
    PODS_BASE,
    Connection,
    LocalPlatform,
    api_client,
    images_record,
)
from cluster.local.process import claim_port, stop_recorded
from cluster.local.raftcluster import RaftCluster
from cluster.local.vaultpod import TokenRefresher, VaultPod
from cluster.local.vaultrelease import openbao_release
from cluster.promconfig import METRICS_POLICY
from cluster.runstate import RunState, owner_alive, reap_dead_runs, run_is_live, runs_root, terminate_run
from cluster.settings import Settings
from cluster.tenancy import install_setup_namespaces
from cluster.vault import KubernetesAuthTarget, VaultConfigurator
from cluster.vaultlayout import VaultLayout
from cluster.versions import load_pins

Progress = Callable[[str], None]


def _require_root() -> None:
    if os.geteuid() != 0:
        raise PlatformUnavailable(
            "the local platform needs root (mount and network namespaces, iptables)",
            fix="run as root, or use --platform kind on a machine with Docker",
        )


def _require_tools() -> None:
    missing = [tool for tool in ("unshare", "mount", "iptables") if shutil.which(tool) is None]
    if missing:
        raise PlatformUnavailable(f"{', '.join(missing)} not found", fix="apt-get install util-linux mount iptables")


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
            if not owner_alive(owner):
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


def _pods_root(run_id: str, owner: str) -> Path:
    """The run's pod folders; their volumes are read by container users (1337, the app's)."""
    root = PODS_BASE / run_id
    (root / "pods").mkdir(parents=True, mode=0o755)
    (root / "owner").write_text(owner)
    for folder in (PODS_BASE, root):
        folder.chmod(0o755)
    return root / "pods"


def configure_vault(configurator: VaultConfigurator, api: ApiServerEndpoint, audit_log: str | None) -> None:
    """The shared Vault setup, pointed at this platform's API server."""
    configurator.configure_kubernetes_auth(KubernetesAuthTarget(
        host=api.url, ca_pem=api.ca.read_text(), issuer=api.issuer))
    configurator.configure_kv()
    configurator.configure_pki()
    if audit_log is not None:
        configurator.ensure_audit(audit_log)


@contextlib.contextmanager
def start_local(settings: Settings, progress: Progress) -> Iterator[LocalPlatform]:
    """Bring the local platform up; on any failure or interrupt, tear down what started."""
    _require_root()
    _require_tools()
    _reap(progress)
    pins = load_pins()
    setup = settings.profile.setup
    binaries = find_control_plane(settings.cache_dir, pins, progress=progress)
    crds = find_crds(settings.cache_dir, pins, progress=progress)
    tgpod = find_pod_binary(settings.cache_dir, progress=progress)
    istio = find_istio(settings.cache_dir, progress=progress)
    envoy = find_envoy(istio.pins)
    # An upgrade's platform starts on the pinned FROM release; every other run on the bundled server.
    vault_binary = (openbao_release(settings.vault_release, settings.cache_dir) if settings.vault_release
                    else find_vault(settings.vault_binary))
    # Raft nodes behind one front (an Envoy on the address pods use, as a Service): what an in-place upgrade
    # needs, for one node as for three. Otherwise the one server is that address itself.
    raft_nodes = setup.vault.nodes if settings.vault_release or setup.vault.nodes > 1 else 0
    cidr = pick_pod_cidr(settings.run_id, settings.pod_cidr)
    owner = not settings.keep_cluster  # kept processes must outlive pytest

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
        stack.callback(terminate_run, settings.run_id)  # after every stop below: whatever slipped through
        network.up(state.owner)
        pki = local_pki.generate(state, extra_ips=(network.host_ip,))
        stack.callback(shutil.rmtree, PODS_BASE / settings.run_id, True)
        pods_root = _pods_root(settings.run_id, state.owner)
        # Claim every port before starting anything: a taken port fails cleanly.
        etcd, etcd_endpoint = etcd_process(str(binaries.etcd), state)
        apiserver, api_endpoint = apiserver_process(str(binaries.kube_apiserver), state, pki, etcd_endpoint,
                                                    port=settings.apiserver_port)
        controller_manager, controller_manager_endpoint = controller_manager_process(
            str(binaries.kube_controller_manager), state, pki, api_endpoint, owner=owner)
        vault_port = claim_port(settings.vault_port, "--vault-port")
        vault_endpoint = VaultEndpoint(f"https://127.0.0.1:{vault_port}", api_endpoint.ca,
                                       vault_binary.flavor, vault_binary.version)
        vault_cluster_port = claim_port(0, "--vault-port")
        vault = LocalVault(vault_binary, state, vault_endpoint, vault_port,
                           cluster_port=vault_cluster_port, node_ip=network.host_ip, audit=setup.vault.audit)
        raft = RaftCluster(state, envoy.path, pki.vault, pki.ca.cert, size=raft_nodes, front_port=vault_port,
                           hosts=("127.0.0.1", network.host_ip), pod_token_dir=vault.token_dir,
                           audit_log=vault.audit_log if setup.vault.audit else None,
                           drain_timeout=5, drain_required=False, owner=owner) if raft_nodes else None

        progress("starting etcd, OpenBao, kube-apiserver and kube-controller-manager")
        for process in (etcd, apiserver):
            process.die_with_parent = owner
        stack.callback(etcd.stop)
        etcd.start()
        if raft is None:
            # Armed before the start: an interrupt while Vault comes up must still stop it.
            stack.callback(vault.stop)
            vault.start(owner=owner)
        etcd.wait_ready(lambda: etcd_healthy(etcd_endpoint), timeout=20, describe="etcd /health")
        apiserver.start()
        stack.callback(apiserver.stop)
        if raft is None:
            vault.initialize()
            vault.unseal()
        else:
            vault.token_dir.mkdir(mode=0o700, exist_ok=True)
            stack.enter_context(raft.running(vault_binary, progress=progress))  # started, initialized, unsealed
        apiserver.wait_ready(lambda: apiserver_ready(api_endpoint), timeout=60, describe="kube-apiserver /readyz")
        write_kubeconfig(state, api_endpoint)
        stack.callback(controller_manager.stop)  # armed before the start, as Vault's
        controller_manager.start()
        controller_manager.wait_ready(lambda: controller_manager_healthy(controller_manager_endpoint),
                                      timeout=60, describe="kube-controller-manager /healthz")
        timings["control_plane_up_s"] = time.monotonic() - started

        api = api_client(api_endpoint)
        kube = Kube(api)
        progress("installing the cert-manager CRDs and Vault's pod identity")
        install_crds(api, [path for path in crds if path.name.startswith("cert-manager")])
        vault_pod = VaultPod(kube, settings.run_id, vault.token_dir, api_endpoint.ca.read_text())
        vault_pod.ensure_identity()
        vault_pod.new_incarnation()

        configure_started = time.monotonic()
        progress("configuring Vault: Kubernetes auth, KV, PKI root and intermediate, audit")
        layout = VaultLayout()
        # A raft cluster is configured on its active node, as the Vault chart's "-active" Service offers: a
        # standby behind the front may not have applied a mount yet when the next request writes into it
        # (seen: 404 "no handler for route auth/kubernetes/config" right after enabling the mount).
        admin = raft.admin(raft.active_node()) if raft else vault_endpoint.client(vault.root_token())
        configurator = VaultConfigurator(admin, layout, setup, settings.run_id)
        configure_vault(configurator, api_endpoint, str(vault.audit_log) if setup.vault.audit else None)
        timings["vault_configure_s"] = time.monotonic() - configure_started
        progress("starting the audit exporter and Prometheus on loopback")
        monitoring = write_config(state, audit_log=vault.audit_log, vault_addr=vault_endpoint.addr,
                                  vault_ca=api_endpoint.ca, vault_token=configurator.metrics_token(METRICS_POLICY),
                                  kv_mount=layout.kv_path)
        exporter, prometheus = (exporter_process(state, monitoring, owner=owner),
                                prometheus_process(state, monitoring, owner=owner))
        for name in (EXPORTER, PROMETHEUS):
            stack.callback(stop_recorded, state, name)  # armed before the starts, as Vault's
        exporter.start()
        prometheus.start()

        mesh_started = time.monotonic()
        refreshers = [vault_pod.project_token]
        vault_addr = f"https://{network.host_ip}:{vault_port}"
        xds = f"{network.host_ip}:{istiod.XDS_PORT}"
        if setup.mesh.ca == "istio-csr":
            progress(f"starting the mesh CA and istiod (Istio {istio.pins.release}, Envoy {envoy.version})")
            role = mesh_ca_identity(kube, configurator, state, settings.run_id)
            mesh_ca, ca_address = mesh_ca_process(state, api_endpoint, layout, setup, node_ip=network.host_ip,
                                                  vault_addr=vault_addr, role=role, owner=owner)
            mesh_ca.start()
            stack.callback(stop_recorded, state, "mesh-ca")  # whichever incarnation is running then
            declare_mesh_ca_issuer(kube, layout, vault_addr, role, settings.run_id)
            refreshers.append(lambda: refresh_mesh_ca_tokens(kube, setup, state))
            tls: istiod.IstiodTls | None = istiod.IstiodTls(pki.istiod.cert, pki.istiod.key, pki.ca.cert)
            cacerts, webhook_ca = None, pki.ca.cert.read_text()
        else:
            progress(f"starting istiod with a Vault-signed CA (Istio {istio.pins.release}, Envoy {envoy.version})")
            plugin = configurator.sign_plugin_ca()
            tls, cacerts, webhook_ca, ca_address = None, write_cacerts(state, plugin), plugin.root_pem, xds
        objects = rendered(istio, setup, settings.cache_dir, discovery=xds, ca_address=ca_address)
        started_istiod = start_istiod(state, api, istio, objects, server=api_endpoint.url, server_ca=api_endpoint.ca,
                                      node_ip=network.host_ip, webhook_ca=webhook_ca, tls=tls, cacerts=cacerts,
                                      owner=owner)
        stack.callback(stop_recorded, state, "istiod")  # whichever incarnation is running then
        stack.callback(stop_revisions, state)  # canary istiods (suites/upgrade) a test left running
        started_istiod.process.start()
        apply(kube, peer_authentication(ROOT_NAMESPACE, "default", setup.mesh.mtls.default, settings.run_id))
        install_setup_namespaces(kube, configurator)
        if setup.mesh.ca == "istio-csr":
            wait_mesh_ca(mesh_ca)
        istiod.wait_istiod(started_istiod.process, started_istiod.endpoints)
        wait_exporter(exporter, monitoring)  # both started before Istio: they came up meanwhile
        wait_prometheus(prometheus, monitoring)
        timings["mesh_up_s"] = time.monotonic() - mesh_started
        if owner:
            stack.enter_context(TokenRefresher(*refreshers))

        images = node_images(istio, envoy, tgpod)
        connection = Connection(
            apiserver_url=api_endpoint.url, ca=str(api_endpoint.ca), client_cert=str(api_endpoint.client_cert),
            client_key=str(api_endpoint.client_key), issuer=api_endpoint.issuer,
            vault_addr=vault_endpoint.addr, vault_port=vault_port, vault_cluster_port=vault_cluster_port,
            vault_binary=str(vault_binary.path), vault_flavor=vault_binary.flavor,
            vault_version=vault_binary.version, kubernetes_version=kube.server_version(),
            etcd_version=pins.etcd,
            controller_manager_version=controller_manager_version(str(binaries.kube_controller_manager)),
            pod_cidr=str(cidr), node_ip=network.host_ip, node_name=f"trustgrid-{run_tag(settings.run_id)}",
            pods_root=str(pods_root), images=images_record(images), mesh_ca_address=ca_address,
            istiod_http_port=started_istiod.endpoints.http_port, istio_release=istio.pins.release,
            envoy_version=envoy.version, ca_mode=setup.mesh.ca, timings=timings, vault_nodes=raft_nodes,
            prometheus_url=monitoring.prometheus_url,
        )
        Kubelet(state, network, kube, connection.node, pods_root).register_node()
        platform = LocalPlatform(settings, state, connection, owner=owner, raft=raft)
        stack.callback(platform.close)
        timings["platform_up_s"] = time.monotonic() - started
        state.write_private(CONNECTION_FILE, json.dumps(asdict(connection)))
        if settings.keep_cluster:
            stack.pop_all()  # disarm: the cluster outlives this run on purpose
            state.mark_kept({"kubeconfig": str(state.file("kubeconfig")), "vault_addr": vault_endpoint.addr})
            progress(f"--keep-cluster: kept run {state.run_id}; KUBECONFIG={state.file('kubeconfig')}; "
                     f"remove it with: python -m cluster down {state.run_id}")
        yield platform


def attach_live(settings: Settings, run_id: str) -> tuple[LocalPlatform, Path]:
    """Another process's live run (--attach): its platform, never owned here, and its state directory."""
    path = runs_root() / run_id
    if not (path / CONNECTION_FILE).exists():
        known = sorted(p.name for p in runs_root().glob("*/" + CONNECTION_FILE) if run_is_live(p.parent))
        raise PlatformUnavailable(f"--attach {run_id}: no local platform of that run is up",
                                  fix="keep one with --keep-cluster" + (f", or pass one of {', '.join(known)}"
                                                                         if known else ""))
    if not run_is_live(path):
        raise PlatformUnavailable(f"--attach {run_id}: its owner process has exited, so its platform is going",
                                  fix="remove what is left with: python -m cluster reap")
    return attach_local(settings, path), path


def attach_local(settings: Settings, state_path: Path) -> LocalPlatform:
    state = RunState.attach(state_path)
    data = json.loads(state.file(CONNECTION_FILE).read_text())
    return LocalPlatform(settings, state, Connection(**data), owner=False)
