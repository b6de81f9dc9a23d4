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
PROXY = "istio-proxy"
CLUSTER_DOMAIN = "svc.cluster.local"


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

    # -- lifecycle ----------------------------------------------------------------
    def deploy(self, namespace: str, name: str, service_account: str, *, meshed: bool = True,
               annotations: Mapping[str, str] | None = None, timeout: float = 60) -> Workload:
        validate_pod_name(namespace, name)  # before anything is made: the Service and DR carry the name too
        address = self._service(namespace, name)
        template = pod_template(namespace, name, service_account, self.vault, meshed=meshed, audience=self.audience,
                                image=APP_IMAGE, annotations=annotations)
        meta = template["metadata"]
        manifest = {"apiVersion": "v1", "kind": "Pod", "spec": template["spec"],
                    "metadata": {**meta, "name": name, "namespace": namespace,
                                 "labels": {**meta["labels"], **labels(self.run_id, app=name)}}}
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

        def knows(caller: Workload) -> bool:
            dump = self.envoy(caller, "/clusters?format=json")
            for status in dump.get("cluster_statuses") or []:
                if status.get("name") == cluster:
                    # Listed is not enough: a pod not yet Ready is sent as an unhealthy endpoint (its
                    # EndpointSlice condition), and a call then gets "no healthy upstream".
                    return any(f"{h['address']['socket_address']['address']}:"
                               f"{h['address']['socket_address']['port_value']}" == endpoint
                               and (h.get("health_status") or {}).get("eds_health_status", "HEALTHY") == "HEALTHY"
                               for h in status.get("host_statuses") or [])
            return False

        callers = [w for _, w in self._running.values() if w.meshed]
        wait_until(lambda: all(knows(c) for c in callers), timeout=30, interval=0.1,
                   describe=f"every meshed pod's Envoy to know {new.namespace}/{new.name} at {endpoint}")

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
