"""The local pod runtime: it plays the kubelet's part for the suite's pods.

A pod is a real Pod object in the API server (so istiod and TokenRequest
see it), a network namespace with a veth on the bridge, projected
service-account tokens bound to that Pod object, and two processes: the
app (echo server, client agent and Vault agent) and, for meshed pods, the
sidecar running as uid 1337 behind istio-init style iptables rules.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from cluster.agent import APP_PORT, call_request, call_result
from cluster.errors import TrustgridError
from cluster.kube import Kube, labels
from cluster.local.capture import tcpdump
from cluster.local.istiod import MESHED_LABEL, pod_dir
from cluster.local.network import SIDECAR_UID, NodeNetwork, PodNet
from cluster.local.process import ManagedProcess
from cluster.meshconfig import read_mesh_config
from cluster.platform import CallResult, Capture, Workload
from cluster.runstate import RunState
from cluster.vault import VaultLayout
from cluster.wait import Abort, wait_until

TOKEN_SECONDS = 3600
CA_AUDIENCE = "istio-ca"


class PodStartError(TrustgridError):
    """A pod did not become ready; says which part and why."""


@dataclass(frozen=True)
class MeshEndpoints:
    """Where pods find the node's services, as pods reach them (the bridge address)."""

    pods_root: Path
    tgpod: Path
    ca_bundle: Path
    mesh_ca_url: str
    vault_addr: str
    vault_audience: str


@dataclass(frozen=True)
class LocalPod:
    workload: Workload
    net: PodNet
    folder: Path

    @property
    def agent_socket(self) -> Path:
        # Unix socket paths stop at 107 bytes; pod folders named after tests are longer.
        digest = hashlib.sha256(str(self.folder).encode()).hexdigest()[:16]
        return self.folder.parents[2] / "sockets" / f"{digest}.sock"


def _agent(socket: Path, timeout: float) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(socket)), base_url="http://agent", timeout=timeout)


def _status(folder: Path) -> dict[str, Any]:
    path = folder / "sidecar-status.json"
    return dict(json.loads(path.read_text())) if path.exists() else {}


class LocalPods:
    def __init__(self, state: RunState, network: NodeNetwork, kube: Kube, mesh: MeshEndpoints, *,
                 layout: VaultLayout, run_id: str) -> None:
        self.state = state
        self.network = network
        self.kube = kube
        self.mesh = mesh
        self.layout = layout
        self.run_id = run_id
        self._running: dict[tuple[str, str], tuple[LocalPod, list[ManagedProcess]]] = {}

    # -- lifecycle ----------------------------------------------------------------
    def deploy(self, namespace: str, name: str, service_account: str, *, meshed: bool = True,
               timeout: float = 20) -> Workload:
        net = self.network.add_pod(namespace, name, intercept=meshed)
        processes: list[ManagedProcess] = []
        folder = pod_dir(self.mesh.pods_root, namespace, name)
        try:
            uid = self._create_pod_object(namespace, name, service_account, meshed)
            folder.mkdir(parents=True, exist_ok=True)
            (self.mesh.pods_root.parent / "sockets").mkdir(exist_ok=True)
            os.chown(folder, SIDECAR_UID, SIDECAR_UID)  # the sidecar writes its status here
            self._set_running(namespace, name, net.ip)
            workload = Workload(namespace, name, service_account, net.ip, meshed)
            pod = LocalPod(workload, net, folder)
            vault_token = self.kube.request_token(namespace, service_account, audience=self.mesh.vault_audience,
                                                  seconds=TOKEN_SECONDS, bound_pod=(name, uid))
            self._write(folder / "vault-token", vault_token, owner=0)
            if meshed:
                # The proxy first, then the app (Istio's holdApplicationUntilProxyStarts):
                # otherwise the app's first connections hit a closed 15001.
                ca_token = self.kube.request_token(namespace, service_account, audience=CA_AUDIENCE,
                                                   seconds=TOKEN_SECONDS, bound_pod=(name, uid))
                self._write(folder / "istio-token", ca_token, owner=SIDECAR_UID)
                processes.append(self._start_sidecar(pod))
                self._wait_sidecar(pod, processes[0], timeout)
            processes.append(self._start_app(pod))
            self._wait_ready(pod, processes, timeout)
        except BaseException:
            for process in processes:
                process.stop()
            self._delete_pod_object(namespace, name)
            self.network.remove_pod(net)
            shutil.rmtree(folder, ignore_errors=True)
            raise
        self._running[(namespace, name)] = (pod, processes)
        return workload

    def delete(self, workload: Workload) -> None:
        entry = self._running.pop((workload.namespace, workload.name), None)
        if entry is None:
            return
        pod, processes = entry
        for process in processes:
            process.stop(grace=2)
        self._delete_pod_object(workload.namespace, workload.name)
        self.network.remove_pod(pod.net)
        shutil.rmtree(pod.folder, ignore_errors=True)
        pod.agent_socket.unlink(missing_ok=True)

    def delete_all(self) -> None:
        for pod, _ in list(self._running.values()):
            self.delete(pod.workload)

    def pod(self, workload: Workload) -> LocalPod:
        entry = self._running.get((workload.namespace, workload.name))
        if entry is None:
            folder = pod_dir(self.mesh.pods_root, workload.namespace, workload.name)
            raise PodStartError(f"pod {workload.namespace}/{workload.name} is not running here ({folder})")
        return entry[0]

    # -- probes -------------------------------------------------------------------
    def call(self, src: Workload, dst: Workload, *, canary: str, timeout: float, port: int = APP_PORT) -> CallResult:
        pod = self.pod(src)
        request = call_request(f"http://{dst.ip}:{port}/?canary={canary}", canary, timeout)
        with _agent(pod.agent_socket, timeout + 5) as agent:
            return call_result(agent.post("/call", json=request).json())

    def session(self, src: Workload, dst: Workload, *, count: int, interval: float,
                port: int = APP_PORT) -> list[dict[str, Any]]:
        """Requests over one kept-alive connection: [{status, error, reused}, ...]."""
        request = {"url": f"http://{dst.ip}:{port}/session", "count": count, "interval": interval}
        with _agent(self.pod(src).agent_socket, count * (interval + 6) + 5) as agent:
            return list(agent.post("/session", json=request).json()["steps"])

    def renew_certificate(self, workload: Workload) -> None:
        """Make the sidecar renew its certificate now (SIGHUP), as a rotation would."""
        _, processes = self._running[(workload.namespace, workload.name)]
        sidecar = next(p for p in processes if p.name.endswith("-sidecar"))
        os.kill(sidecar.pid, signal.SIGHUP)

    def pause_vault_agent(self, workload: Workload, paused: bool) -> None:
        with _agent(self.pod(workload).agent_socket, 5) as agent:
            agent.post("/vault/pause" if paused else "/vault/resume").raise_for_status()

    def refresh_tokens(self, workload: Workload) -> None:
        """Project fresh tokens for the pod, as the kubelet does (after its service account was recreated)."""
        pod = self.pod(workload)
        uid = str(self.kube.core.read_namespaced_pod(workload.name, workload.namespace).metadata.uid)
        bound = (workload.name, uid)
        token = self.kube.request_token(workload.namespace, workload.service_account,
                                        audience=self.mesh.vault_audience, seconds=TOKEN_SECONDS, bound_pod=bound)
        self._write(pod.folder / "vault-token", token, owner=0)
        if workload.meshed:
            token = self.kube.request_token(workload.namespace, workload.service_account, audience=CA_AUDIENCE,
                                            seconds=TOKEN_SECONDS, bound_pod=bound)
            self._write(pod.folder / "istio-token", token, owner=SIDECAR_UID)

    def read_vault(self, workload: Workload) -> dict[str, Any]:
        with _agent(self.pod(workload).agent_socket, 10) as agent:
            return dict(agent.get("/vault").json())

    def sidecar_status(self, workload: Workload) -> dict[str, Any]:
        return _status(pod_dir(self.mesh.pods_root, workload.namespace, workload.name))

    @contextlib.contextmanager
    def capture(self, workload: Workload) -> Iterator[Capture]:
        pod = self.pod(workload)
        with tempfile.TemporaryDirectory(prefix="tg-capture-") as folder, \
                tcpdump(pod.net.host_veth, Path(folder) / "wire.pcap", marker_to=pod.net.ip) as capture:
            yield capture

    # -- internals ---------------------------------------------------------------
    def _create_pod_object(self, namespace: str, name: str, service_account: str, meshed: bool) -> str:
        pod_labels = labels(self.run_id, app=name, **{MESHED_LABEL: "true" if meshed else "false"})
        body = client.V1Pod(
            metadata=client.V1ObjectMeta(name=name, labels=pod_labels),
            spec=client.V1PodSpec(service_account_name=service_account, automount_service_account_token=False,
                                  containers=[client.V1Container(name="app", image="local/tgpod")]),
        )
        created = self.kube.core.create_namespaced_pod(namespace, body)
        return str(created.metadata.uid)

    def _set_running(self, namespace: str, name: str, ip: str) -> None:
        status = {"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                             "conditions": [{"type": "Ready", "status": "True"}]}}
        self.kube.core.patch_namespaced_pod_status(name, namespace, status)

    def _delete_pod_object(self, namespace: str, name: str) -> None:
        with contextlib.suppress(ApiException):
            self.kube.core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)

    def _write(self, path: Path, content: str, *, owner: int) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(content)
        os.chown(path, owner, owner)

    def _start_app(self, pod: LocalPod) -> ManagedProcess:
        w = pod.workload
        argv = ["ip", "netns", "exec", pod.net.netns, str(self.mesh.tgpod), "app",
                "--listen", f"0.0.0.0:{APP_PORT}", "--agent-socket", str(pod.agent_socket),
                "--namespace", w.namespace, "--service-account", w.service_account, "--pod", w.name,
                "--vault-addr", self.mesh.vault_addr, "--vault-ca", str(self.mesh.ca_bundle),
                "--vault-auth-path", self.layout.kubernetes_path, "--vault-role", self.layout.role(w.namespace),
                "--vault-token-file", str(pod.folder / "vault-token"),
                "--vault-secret", f"{self.layout.kv_path}/data/{self.layout.secret_path(w.namespace)}"]
        process = ManagedProcess(f"pod-{w.namespace}-{w.name}-app", argv, self.state, die_with_parent=False)
        process.start()
        return process

    def _start_sidecar(self, pod: LocalPod) -> ManagedProcess:
        w = pod.workload
        # Read at each start, as Istio's injector does: the live mesh config, not the profile.
        mesh = read_mesh_config(self.kube.api)
        spiffe = f"spiffe://{mesh.trust_domain}/ns/{w.namespace}/sa/{w.service_account}"
        argv = ["ip", "netns", "exec", pod.net.netns,
                "setpriv", f"--reuid={SIDECAR_UID}", f"--regid={SIDECAR_UID}", "--clear-groups", "--",
                str(self.mesh.tgpod), "sidecar", "--ca-url", self.mesh.mesh_ca_url,
                "--ca-bundle", str(self.mesh.ca_bundle), "--token-file", str(pod.folder / "istio-token"),
                "--spiffe", spiffe, "--mesh-config", str(pod.folder / "mesh.json"),
                "--status-file", str(pod.folder / "sidecar-status.json"),
                "--renew-fraction", str(mesh.renew_fraction)]
        process = ManagedProcess(f"pod-{w.namespace}-{w.name}-sidecar", argv, self.state, die_with_parent=False)
        process.start()
        return process

    def _wait_sidecar(self, pod: LocalPod, sidecar: ManagedProcess, timeout: float) -> None:
        w = pod.workload

        def ready() -> bool:
            if not sidecar.running():
                raise Abort(f"the sidecar exited: {sidecar.log_tail()}")
            return bool(_status(pod.folder).get("ready"))

        try:
            wait_until(ready, timeout=timeout, interval=0.05, describe=f"the sidecar of {w.namespace}/{w.name}")
        except Abort as err:
            raise PodStartError(f"pod {w.namespace}/{w.name} failed to start: {err}") from None
        except TrustgridError:
            reason = _status(pod.folder).get("last_error") or "no status from the sidecar"
            raise PodStartError(f"pod {w.namespace}/{w.name}: the sidecar has no certificate after "
                                f"{timeout:.0f}s: {reason}",
                                fix="check that the mesh CA is up and that Vault lets it sign") from None

    def _wait_ready(self, pod: LocalPod, processes: list[ManagedProcess], timeout: float) -> None:
        w = pod.workload

        def ready() -> bool:
            for process in processes:
                if not process.running():
                    raise Abort(f"{process.name} exited: {process.log_tail()}")
            with _agent(pod.agent_socket, 1) as agent:
                agent.get("/healthz").raise_for_status()
            return self._known_to_istiod(w)

        try:
            wait_until(ready, timeout=timeout, interval=0.05, describe=f"pod {w.namespace}/{w.name} to be ready")
        except Abort as err:
            raise PodStartError(f"pod {w.namespace}/{w.name} failed to start: {err}") from None
        except TrustgridError:
            status = self.sidecar_status(w) if w.meshed else {}
            reason = status.get("last_error") or "the app did not answer"
            raise PodStartError(f"pod {w.namespace}/{w.name} not ready after {timeout:.0f}s: {reason}",
                                fix="check the mesh CA and istiod logs in the run's state directory") from None
        self._wait_mesh_converged(pod)

    def _known_to_istiod(self, w: Workload) -> bool:
        status_file = self.mesh.pods_root / "istiod.json"
        if not status_file.exists():
            return False
        return w.ip in json.loads(status_file.read_text()).get("peers", [])

    def _wait_mesh_converged(self, new: LocalPod) -> None:
        """Every sidecar of this process knows the new pod: its pushed config lists the pod's
        address and the sidecar has loaded that config's generation."""
        pods = [p for p, _ in self._running.values() if p.workload.meshed]
        pods += [new] if new.workload.meshed else []

        def knows_new_pod(pod: LocalPod) -> bool:
            pushed = json.loads((pod.folder / "mesh.json").read_text())
            loaded = int(_status(pod.folder).get("config_generation", 0))
            return new.workload.ip in pushed.get("peers", {}) and loaded >= int(pushed["generation"])

        wait_until(lambda: all(knows_new_pod(pod) for pod in pods), timeout=10, interval=0.05,
                   describe=f"sidecars to learn about {new.workload.namespace}/{new.workload.name}")
