"""The local platform's workloads: tgpod as the shared Pod template, run by the local kubelet.

A workload is a Pod (Istio's injector adds its sidecar when the namespace asks for one) and a
Service in front of it, so that istiod knows it as an endpoint (EndpointSlices from
kube-controller-manager). Meshed clients call the Service's address through their Envoy; a
naked client has no Envoy and no kube-proxy to turn a Service address into a pod, so it calls
the pod itself, which is where a plaintext call would land on a cluster too.

Probes reach the app's agent over its Unix socket, through the app container's root
(/proc/<pid>/root); the proxy's certificate is read from Envoy's admin inside the pod.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
from kubernetes.client.exceptions import ApiException

from cluster import istio
from cluster.agent import APP_PORT, call_request, call_result
from cluster.errors import PlatformUnavailable, TrustgridError
from cluster.kube import Kube, labels
from cluster.local.capture import tcpdump
from cluster.local.kubelet import Kubelet, PodRun, PodStartError, http_in_pod
from cluster.local.network import validate_pod_name
from cluster.platform import CallResult, Capture, SessionStep, SidecarStatus, VaultRead, Workload
from cluster.proxydump import NoWorkloadCertificate, last_certificate_error, workload_secret
from cluster.secrets import redact
from cluster.wait import wait_until
from cluster.workloads import AGENT_SOCKET_DIR, APP_IMAGE, VaultTarget, fresh_connections, pod_template, service

ENVOY_ADMIN_PORT = 15000
MINIMUM_DRAIN_S = 5.0  # pilot-agent's MINIMUM_DRAIN_DURATION default
# The sidecar's virtual inbound listener: istio-iptables redirects every connection into the pod to it.
INBOUND_PORT = 15006
PROXY = "istio-proxy"
CLUSTER_DOMAIN = "svc.cluster.local"


def inbound_connections(pid: int) -> int:
    """Connections into the pod held by its sidecar, from the TCP tables of the network namespace ``pid`` is
    in (/proc/<pid>/net/tcp and tcp6). Envoy's own listener stats are left out of Istio's stats inclusion
    list, so the kernel is asked."""
    tables = []
    for table in (f"/proc/{pid}/net/tcp", f"/proc/{pid}/net/tcp6"):
        with contextlib.suppress(OSError):
            tables.append(Path(table).read_text())
    return sum(count_inbound(text) for text in tables)


def count_inbound(table: str) -> int:
    """Rows of a /proc/net/tcp table whose local port is the inbound listener's and whose state is
    established (01) or being accepted (03, SYN_RECV) (include/net/tcp_states.h); 0A is the listener."""
    count = 0
    for row in table.splitlines()[1:]:
        fields = row.split()
        if len(fields) > 3 and int(fields[1].rsplit(":", 1)[1], 16) == INBOUND_PORT and fields[3] in ("01", "03"):
            count += 1
    return count


def _host(status: dict[str, Any]) -> str:
    """An Envoy /clusters host status's address as ip:port."""
    address = status["address"]["socket_address"]
    return f"{address['address']}:{address['port_value']}"


def _agent(socket: str, timeout: float) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(uds=socket), base_url="http://agent", timeout=timeout)


class LocalPods:
    def __init__(self, kube: Kube, kubelet: Kubelet, vault: VaultTarget, *, run_id: str, audience: str) -> None:
        self.kube = kube
        self.kubelet = kubelet
        self.vault = vault
        self.run_id = run_id
        self.audience = audience
        self._running: dict[tuple[str, str], tuple[PodRun, Workload]] = {}
        # What each workload was deployed with, and how many pods it has had, for replace().
        self._specs: dict[tuple[str, str], tuple[str, bool, Mapping[str, str] | None]] = {}
        self._generation: dict[tuple[str, str], int] = {}

    # -- lifecycle ----------------------------------------------------------------
    def deploy(self, namespace: str, name: str, service_account: str, *, meshed: bool = True,
               annotations: Mapping[str, str] | None = None, timeout: float = 60) -> Workload:
        validate_pod_name(namespace, name)  # before anything is made: the Service and DR carry the name too
        address = self._service(namespace, name)
        manifest = self._manifest(namespace, name, name, service_account, meshed=meshed, annotations=annotations)
        self._specs[(namespace, name)] = (service_account, meshed, annotations)
        proxy_log = self.kubelet.state.file(f"logs/pod-{namespace}-{name}-{PROXY}.log")
        seen = proxy_log.stat().st_size if proxy_log.exists() else 0  # an earlier pod of that name logged there too
        try:
            run = self.kubelet.run(namespace, manifest, timeout=timeout)
        except PodStartError:
            self._remove_service(namespace, name)  # nothing half-made stays behind
            reason = ""
            if proxy_log.exists():
                with proxy_log.open("rb") as log:
                    log.seek(seen)
                    reason = last_certificate_error(log.read().decode(errors="replace"))
            if reason:  # say why pilot-agent never became ready, in its own words
                raise PodStartError(f"pod {namespace}/{name}: the sidecar has no certificate: {redact(reason)}",
                                    fix="check that the mesh CA is up and that Vault lets it sign") from None
            raise
        except BaseException:
            self._remove_service(namespace, name)
            raise
        injected = any(c["name"] == PROXY for c in run.pod["spec"]["containers"])
        workload = Workload(namespace, name, service_account, run.ip, injected, address=address)
        self._running[(namespace, name)] = (run, workload)
        try:
            self._wait_mesh_knows(workload)
        except BaseException:
            self.delete(workload)
            raise
        return workload

    def _manifest(self, namespace: str, pod: str, app: str, service_account: str, *, meshed: bool,
                  annotations: Mapping[str, str] | None) -> dict[str, Any]:
        template = pod_template(namespace, app, service_account, self.vault, meshed=meshed, audience=self.audience,
                                image=APP_IMAGE, annotations=annotations)
        meta = template["metadata"]
        return {"apiVersion": "v1", "kind": "Pod", "spec": template["spec"],
                "metadata": {**meta, "name": pod, "namespace": namespace,
                             "labels": {**meta["labels"], **labels(self.run_id, app=app)}}}

    def replace(self, workload: Workload, *, timeout: float = 60) -> Workload:
        """A rolling restart of one pod, as a Deployment's (maxSurge 1, maxUnavailable 0): a new pod of the
        workload, created now (so the injector of its namespace's revision fills it), joins the Service and
        every meshed caller's Envoy; then the old pod leaves the endpoints (not Ready), every caller's Envoy
        drops it, and only then its containers stop. Returns the workload at its new pod (same name, Service
        and service account). Raises PodStartError when the new pod does not start; the old one then stays."""
        key = (workload.namespace, workload.name)
        old_run = self.run_of(workload)
        service_account, meshed, annotations = self._specs[key]
        generation = self._generation.get(key, 1) + 1
        pod = f"{workload.name}-{generation}"
        validate_pod_name(workload.namespace, pod)
        manifest = self._manifest(workload.namespace, pod, workload.name, service_account, meshed=meshed,
                                  annotations=annotations)
        run = self.kubelet.run(workload.namespace, manifest, timeout=timeout)
        self._generation[key] = generation
        injected = any(c["name"] == PROXY for c in run.pod["spec"]["containers"])
        new = replace(workload, ip=run.ip, meshed=injected)
        self._running[key] = (run, new)
        try:
            self._wait_mesh_knows(new)
            self.kubelet.set_ready(old_run, False)
            self._wait_mesh_forgets(new, old_run.ip)
            if meshed:
                self._wait_drained(old_run)
        finally:
            self.kubelet.stop(old_run)
        return new

    def _wait_drained(self, run: PodRun) -> None:
        """The old pod serves on while its proxy drains, as pilot-agent does on SIGTERM with
        EXIT_ON_ZERO_ACTIVE_CONNECTIONS (pkg/envoy/agent.go terminate): at least MINIMUM_DRAIN_DURATION
        (5 s, pilot/cmd/pilot-agent/options/options.go), then until Envoy's inbound listener has no
        active downstream connection. A caller that chose the pod just before its Envoy heard it left
        still reaches a live pod; stopping it sooner left such a call hanging on a vanished address."""
        def active() -> int:
            return inbound_connections(run.container_pid(PROXY))

        since = time.monotonic()
        wait_until(lambda: time.monotonic() - since >= MINIMUM_DRAIN_S and active() == 0,
                   timeout=MINIMUM_DRAIN_S + 30, interval=0.1,
                   describe=f"{run.namespace}/{run.name}'s proxy to drain its inbound connections")

    def _wait_mesh_forgets(self, workload: Workload, ip: str) -> None:
        """No meshed workload's Envoy still sends to the pod at ``ip`` (its endpoint gone or not HEALTHY)."""
        cluster = f"outbound|{APP_PORT}||{workload.name}.{workload.namespace}.{CLUSTER_DOMAIN}"
        endpoint = f"{ip}:{APP_PORT}"

        callers = [w for _, w in self._running.values() if w.meshed]
        wait_until(lambda: not any(self._routes_to(c, cluster, endpoint) for c in callers), timeout=30, interval=0.1,
                   describe=f"every meshed pod's Envoy to stop sending to {workload.namespace}'s old pod at {endpoint}")

    def _service(self, namespace: str, name: str) -> str:
        istio.apply(self.kube, fresh_connections(namespace, name, self.run_id))
        body = service(namespace, name, self.run_id)
        try:
            created = self.kube.core.create_namespaced_service(namespace, body)
        except ApiException as err:
            if err.status != 409:
                raise
            created = self.kube.core.read_namespaced_service(name, namespace)
        return str(created.spec.cluster_ip)

    def delete(self, workload: Workload) -> None:
        entry = self._running.pop((workload.namespace, workload.name), None)
        if entry is not None:
            self.kubelet.stop(entry[0])
        self._remove_service(workload.namespace, workload.name)

    def _remove_service(self, namespace: str, name: str) -> None:
        with contextlib.suppress(ApiException):
            self.kube.core.delete_namespaced_service(name, namespace)
        istio.delete(self.kube, fresh_connections(namespace, name, self.run_id))

    def delete_all(self) -> None:
        for _, workload in list(self._running.values()):
            self.delete(workload)

    def run_of(self, workload: Workload) -> PodRun:
        entry = self._running.get((workload.namespace, workload.name))
        if entry is None:
            raise PodStartError(f"pod {workload.namespace}/{workload.name} is not running in this process")
        return entry[0]

    # -- the mesh knows a new workload ------------------------------------------------
    def envoy(self, workload: Workload, path: str) -> Any:
        """GET from the workload's Envoy admin (127.0.0.1:15000 inside the pod), as JSON."""
        status, body = http_in_pod(self.run_of(workload).net.netns, ENVOY_ADMIN_PORT, path)
        if status != 200:
            raise PodStartError(f"Envoy admin of {workload.namespace}/{workload.name} answered {status} to {path}")
        return json.loads(body)

    def _wait_mesh_knows(self, new: Workload) -> None:
        """Every meshed workload of this process has the new one's endpoint, healthy, in its Envoy
        (the cluster istiod builds for its Service): a call made now goes through mTLS, never to the
        passthrough cluster."""
        cluster = f"outbound|{APP_PORT}||{new.name}.{new.namespace}.{CLUSTER_DOMAIN}"
        endpoint = f"{new.ip}:{APP_PORT}"

        callers = [w for _, w in self._running.values() if w.meshed]
        wait_until(lambda: all(self._routes_to(c, cluster, endpoint) for c in callers), timeout=30, interval=0.1,
                   describe=f"every meshed pod's Envoy to know {new.namespace}/{new.name} at {endpoint}")

    def _routes_to(self, caller: Workload, cluster: str, endpoint: str) -> bool:
        """Whether ``caller``'s Envoy has ``endpoint`` (ip:port) in ``cluster`` as HEALTHY. Listed is not
        enough: a pod not Ready is sent as an unhealthy endpoint (its EndpointSlice condition), which Envoy
        does not route to (Istio disables panic mode for it: cluster_traffic_policy.go)."""
        for status in self.envoy(caller, "/clusters?format=json").get("cluster_statuses") or []:
            if status.get("name") == cluster:
                return any(_host(h) == endpoint
                           and (h.get("health_status") or {}).get("eds_health_status", "HEALTHY") == "HEALTHY"
                           for h in status.get("host_statuses") or [])
        return False

    # -- probes -------------------------------------------------------------------------
    def agent_socket(self, workload: Workload) -> str:
        # The app's agent socket, through its container's root: host paths of pod folders are longer
        # than a Unix socket path may be.
        return f"/proc/{self.run_of(workload).container_pid('app')}/root{AGENT_SOCKET_DIR}/agent.sock"

    def url(self, src: Workload, dst: Workload, path: str) -> str:
        host = dst.address if src.meshed and dst.address else dst.ip
        return f"http://{host}:{APP_PORT}{path}"

    def call(self, src: Workload, dst: Workload, *, canary: str, timeout: float) -> CallResult:
        request = call_request(self.url(src, dst, f"/?canary={canary}"), canary, timeout)
        with _agent(self.agent_socket(src), timeout + 5) as agent:
            return call_result(agent.post("/call", json=request).json())

    def session(self, src: Workload, dst: Workload, *, count: int, interval: float) -> list[SessionStep]:
        request = {"url": self.url(src, dst, "/session"), "count": count, "interval": interval}
        with _agent(self.agent_socket(src), count * (interval + 6) + 5) as agent:
            return [SessionStep.from_agent(s) for s in agent.post("/session", json=request).json()["steps"]]

    def read_vault(self, workload: Workload) -> VaultRead:
        with _agent(self.agent_socket(workload), 10) as agent:
            return VaultRead.from_agent(agent.get("/vault").json())

    def relogin_vault(self, workload: Workload) -> dict[str, Any]:
        with _agent(self.agent_socket(workload), 15) as agent:
            return dict(agent.post("/vault/relogin").json())

    def pause_vault_agent(self, workload: Workload, paused: bool) -> None:
        with _agent(self.agent_socket(workload), 5) as agent:
            agent.post("/vault/pause" if paused else "/vault/resume").raise_for_status()

    def refresh_tokens(self, workload: Workload) -> None:
        """New projected tokens now, as the kubelet makes them (after the service account was made again)."""
        self.kubelet.sync(self.run_of(workload), force_tokens=True)

    def sidecar_status(self, workload: Workload) -> SidecarStatus:
        """The certificate Envoy holds (cluster/proxydump.py) and pilot-agent's last certificate error."""
        run = self.run_of(workload)
        log = run.processes[PROXY].log_path if PROXY in run.processes else None
        last_error = last_certificate_error(log.read_text(errors="replace")) if log and log.exists() else ""
        try:
            status = workload_secret(self.envoy(workload, "/config_dump?resource=dynamic_active_secrets"))
        except NoWorkloadCertificate as err:
            raise PlatformUnavailable(f"{err} in {workload.namespace}/{workload.name}; pilot-agent's last error: "
                                      f"{last_error or 'none'}",
                                      fix="check the mesh CA: the proxy's CSR was not signed") from None
        return replace(status, last_error=last_error)

    def renew_certificate(self, workload: Workload) -> None:
        """Istio's proxy cannot be told to renew: wait for its scheduled rotation (SECRET_GRACE_PERIOD_RATIO
        of the lifetime left), bounded by what is left of the current certificate's lifetime."""
        before = self.sidecar_status(workload)
        left = max(1.0, before.remaining_s())
        wait_until(lambda: self.sidecar_status(workload).serial != before.serial, timeout=left + 5,
                   interval=0.2, describe=f"the proxy of {workload.namespace}/{workload.name} to rotate its "
                                          f"certificate (serial {before.serial})")

    @contextlib.contextmanager
    def capture(self, workload: Workload) -> Iterator[Capture]:
        run = self.run_of(workload)
        with tempfile.TemporaryDirectory(prefix="tg-capture-") as folder, \
                tcpdump(run.net.host_veth, Path(folder) / "wire.pcap", marker_to=run.ip) as capture:
            yield capture


__all__ = ["LocalPods", "PodStartError", "TrustgridError"]
