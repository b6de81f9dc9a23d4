"""The local kubelet: runs a Pod exactly as the API server holds it, after Istio's injector.

There is no scheduler and no container runtime here, so this plays both for the Pods the
platform creates, the way the kubelet does it (pkg/kubelet in the pinned k8s.io/kubernetes):

1. the Pod is created through the API server, so the injection webhook mutates it, and read back;
2. its network: a network namespace on the node's bridge with an address from the pod CIDR;
   its status gets podIP and hostIP before anything starts (istiod matches a proxy to its Pod by IP);
3. its volumes, as per-pod directories: emptyDir, configMap, secret, downwardAPI and projected
   service-account tokens (TokenRequest, bound to the Pod, refreshed at 80 % of their lifetime as
   the kubelet's token manager does, pkg/kubelet/token/token_manager.go);
4. its init containers, each to completion (istio-init: pilot-agent istio-iptables, Istio's own
   interception rules in the pod's network namespace), then its containers in order, each in its
   own root (cluster/local/sandbox.py) as the user its securityContext names, a postStart hook
   run to completion before the next container starts (pkg/kubelet/kuberuntime: Istio's
   holdApplicationUntilProxyStarts relies on it);
5. readiness from the containers' readiness and startup probes, then the Ready condition.

Images are what the node knows how to run: ``local/proxyv2:<tag>`` is pilot-agent with Envoy and
its bootstrap template where the proxyv2 image keeps them; the app image is the cached tgpod.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import http.client
import json
import os
import re
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes.client.exceptions import ApiException

from cluster.errors import TrustgridError
from cluster.kube import Kube, labels
from cluster.local.network import NodeNetwork, PodNet
from cluster.local.podspec import container_argv, container_env, field_value
from cluster.local.process import ManagedProcess
from cluster.runstate import OWNER_ENV, RUN_ENV, RunState
from cluster.wait import Abort, wait_until

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_CLONE_NEWNET = 0x40000000
TOKEN_REFRESH_SHARE = 0.8  # the kubelet's token manager renews at 80 % of the lifetime
SYNC_SECONDS = 5.0

Manifest = dict[str, Any]


class PodStartError(TrustgridError):
    """A pod did not start; says which part and why."""


_WEBHOOK = re.compile(r'failed calling webhook "([^"]+)": (.*)')


def create_refused(namespace: str, name: str, err: ApiException) -> PodStartError:
    """The API server refused the Pod: one line, naming the admission webhook when one failed.

    The API server words a webhook call that failed as ``failed calling webhook "<name>": <cause>``
    (k8s.io/apiserver pkg/admission/plugin/webhook/errors: ErrCallingWebhook); with the injector's
    failurePolicy Fail, a Pod cannot be created while istiod does not answer.
    """
    try:
        message = str(json.loads(err.body or "{}").get("message") or err.reason)
    except ValueError:
        message = str(err.body or err.reason)
    hook = _WEBHOOK.search(message)
    if hook is not None:
        cause = hook.group(2).strip().rstrip(".")
        return PodStartError(f"pod {namespace}/{name}: the API server could not call the sidecar injector "
                             f"{hook.group(1)}: {cause}",
                             fix="istiod must be running and serve the injection webhook; its log is "
                                 "logs/istiod.log in the run's folder under ~/.cache/trustgrid/runs")
    return PodStartError(f"pod {namespace}/{name}: the API server refused it ({err.status}): {message}")


@dataclass(frozen=True)
class Image:
    """What a container image amounts to on this node: its entrypoint, its files (container path ->
    host file, bind-mounted read-only) and its environment."""

    entrypoint: tuple[str, ...]
    files: Mapping[str, str]
    env: Mapping[str, str] = field(default_factory=lambda: {"PATH": DEFAULT_PATH})


@dataclass(frozen=True)
class Node:
    name: str
    ip: str  # the bridge address: every pod's hostIP, where Vault, istiod and the mesh CA listen
    images: Mapping[str, Image]
    cpus: int = os.cpu_count() or 1
    memory: int = 8 << 30


@dataclass(frozen=True)
class ProjectedToken:
    path: Path
    service_account: str
    audience: str | None
    seconds: int


@dataclass
class PodRun:
    """A running pod: its object as the API server returned it, its network, folder and processes."""

    namespace: str
    name: str
    pod: Manifest
    net: PodNet
    folder: Path
    processes: dict[str, ManagedProcess] = field(default_factory=dict)
    tokens: list[tuple[ProjectedToken, float]] = field(default_factory=list)  # token, issued at (monotonic)
    configmaps: list[tuple[str, Path, Manifest]] = field(default_factory=list)  # name, folder, source spec

    @property
    def uid(self) -> str:
        return str(self.pod["metadata"]["uid"])

    @property
    def ip(self) -> str:
        return self.net.ip

    def container_pid(self, name: str) -> int:
        return self.processes[name].pid


def in_pod_network(netns: str, host: str, port: int, timeout: float = 5) -> socket.socket:
    """A TCP connection made from inside a pod's network namespace (to its loopback, say).

    setns(2) moves only the calling thread, so a short-lived thread enters the namespace and
    connects; the socket stays in that namespace after the thread is gone.
    """
    outcome: dict[str, Any] = {}

    def connect() -> None:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        try:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
            try:
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {netns}")
                outcome["socket"] = socket.create_connection((host, port), timeout=timeout)
            finally:
                os.close(fd)
        except OSError as err:
            outcome["error"] = err

    thread = threading.Thread(target=connect, name=f"netns-{netns}", daemon=True)
    thread.start()
    thread.join(timeout + 5)
    if "socket" not in outcome:
        raise outcome.get("error") or TimeoutError(f"connecting to {host}:{port} in {netns}")
    sock: socket.socket = outcome["socket"]
    return sock


def http_in_pod(netns: str, port: int, path: str, timeout: float = 5) -> tuple[int, bytes]:
    """GET http://127.0.0.1:<port><path> inside the pod (Envoy's admin, pilot-agent's status port)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    connection.sock = in_pod_network(netns, "127.0.0.1", port, timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Atomically, as the kubelet's atomic writer does: a reader never sees half a token."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(mode)
    tmp.rename(path)


class Kubelet:
    def __init__(self, state: RunState, network: NodeNetwork, kube: Kube, node: Node, pods_root: Path) -> None:
        self.state = state
        self.network = network
        self.kube = kube
        self.node = node
        self.pods_root = pods_root
        self._runs: dict[tuple[str, str], PodRun] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._syncer: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------
    def run(self, namespace: str, manifest: Manifest, *, timeout: float = 60) -> PodRun:
        """Create the Pod and run it until every container is ready; on any failure, undo all of it."""
        name = manifest["metadata"]["name"]
        net = self.network.add_pod(namespace, name, intercept=False)
        folder = self.pods_root / namespace / name
        run: PodRun | None = None
        try:
            # Bound to this node, as a scheduler would: the EndpointSlice controller lists only Pods whose
            # Node exists (pkg/controller/endpointslice reconciler: "skipping Pod ... Node ... Not Found").
            manifest = {**manifest, "spec": {**manifest["spec"], "nodeName": self.node.name}}
            try:
                created = self.kube.core.create_namespaced_pod(namespace, manifest)
            except ApiException as err:
                raise create_refused(namespace, name, err) from None
            pod = self.kube.api.sanitize_for_serialization(created)
            folder.mkdir(parents=True, exist_ok=True)
            run = PodRun(namespace, name, pod, net, folder)
            self._set_status(run, ready=False)
            self._volumes(run, timeout)
            deadline = time.monotonic() + timeout
            for container in pod["spec"].get("initContainers") or []:
                self._run_init(run, container, deadline)
            for container in pod["spec"]["containers"]:
                run.processes[container["name"]] = self._start(run, container)
                hook = ((container.get("lifecycle") or {}).get("postStart") or {}).get("exec")
                if hook:
                    self._hook(run, container, list(hook["command"]), deadline)
            self._wait_ready(run, deadline)
            self._set_status(run, ready=True)
        except BaseException:
            if run is not None:
                self._stop_processes(run)
            self._delete_object(namespace, name)
            self.network.remove_pod(net)
            shutil.rmtree(folder, ignore_errors=True)
            raise
        with self._lock:
            self._runs[(namespace, name)] = run
        self._ensure_syncer()
        return run

    def stop(self, run: PodRun) -> None:
        with self._lock:
            self._runs.pop((run.namespace, run.name), None)
        self._stop_processes(run)
        self._delete_object(run.namespace, run.name)
        self.network.remove_pod(run.net)
        shutil.rmtree(run.folder, ignore_errors=True)

    def close(self) -> None:
        self._stop.set()

    def register_node(self) -> None:
        """The Node object this kubelet runs pods on: Ready, at the bridge address (no heartbeats: the
        node lifecycle controller is not running, so nothing taints it)."""
        body = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.node.name, "labels": {**labels(self.state.run_id),
                                                                 "kubernetes.io/hostname": self.node.name}}}
        with contextlib.suppress(ApiException):
            self.kube.core.create_node(body)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        status = {"addresses": [{"type": "InternalIP", "address": self.node.ip},
                                {"type": "Hostname", "address": self.node.name}],
                  "capacity": {"cpu": str(self.node.cpus), "memory": str(self.node.memory), "pods": "250"},
                  "allocatable": {"cpu": str(self.node.cpus), "memory": str(self.node.memory), "pods": "250"},
                  "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                  "lastHeartbeatTime": now, "lastTransitionTime": now}]}
        self.kube.core.patch_node_status(self.node.name, {"status": status})

    def _stop_processes(self, run: PodRun) -> None:
        for process in reversed(list(run.processes.values())):
            process.stop(grace=2)

    def _delete_object(self, namespace: str, name: str) -> None:
        with contextlib.suppress(ApiException):
            self.kube.core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)

    # -- status --------------------------------------------------------------------
    def set_ready(self, run: PodRun, ready: bool) -> None:
        """Report the pod Ready or not, as a kubelet does when its readiness probe flips (a terminating pod
        leaves its Service's endpoints this way before its containers stop)."""
        self._set_status(run, ready=ready)

    def _set_status(self, run: PodRun, *, ready: bool) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        flag = "True" if ready else "False"
        conditions = [{"type": kind, "status": status, "lastTransitionTime": now}
                      for kind, status in (("PodScheduled", "True"), ("Initialized", flag),
                                           ("ContainersReady", flag), ("Ready", flag))]
        status = {"phase": "Running", "podIP": run.ip, "podIPs": [{"ip": run.ip}], "hostIP": self.node.ip,
                  "hostIPs": [{"ip": self.node.ip}], "startTime": now, "conditions": conditions}
        updated = self.kube.core.patch_namespaced_pod_status(run.name, run.namespace, {"status": status})
        run.pod = self.kube.api.sanitize_for_serialization(updated)

    # -- volumes -------------------------------------------------------------------
    def _volumes(self, run: PodRun, timeout: float) -> None:
        for volume in run.pod["spec"].get("volumes") or []:
            target = run.folder / "volumes" / volume["name"]
            target.mkdir(parents=True, exist_ok=True)
            target.chmod(0o777 if "emptyDir" in volume else 0o755)  # an emptyDir is writable by any container user
            if "configMap" in volume:
                run.configmaps.append((volume["configMap"]["name"], target, volume["configMap"]))
                self._configmap(run, volume["configMap"], target, timeout)
            elif "secret" in volume:
                self._secret(run, volume["secret"], target)
            elif "downwardAPI" in volume:
                self._downward(run, volume["downwardAPI"], target)
            elif "projected" in volume:
                mode = int(volume["projected"].get("defaultMode", 0o644))
                for source in volume["projected"].get("sources") or []:
                    if "serviceAccountToken" in source:
                        spec = source["serviceAccountToken"]
                        token = ProjectedToken(target / spec["path"], run.pod["spec"]["serviceAccountName"],
                                               spec.get("audience") or None, int(spec.get("expirationSeconds", 3600)))
                        self._token(run, token, mode)
                        run.tokens.append((token, time.monotonic()))
                    elif "configMap" in source:
                        run.configmaps.append((source["configMap"]["name"], target, source["configMap"]))
                        self._configmap(run, source["configMap"], target, timeout)
                    elif "downwardAPI" in source:
                        self._downward(run, source["downwardAPI"], target)
                    elif "secret" in source:
                        self._secret(run, source["secret"], target)
            elif "emptyDir" not in volume:
                raise PodStartError(f"pod {run.namespace}/{run.name}: volume {volume['name']} has a source the local "
                                    f"kubelet does not support ({sorted(set(volume) - {'name'})})")

    def _token(self, run: PodRun, token: ProjectedToken, mode: int = 0o644) -> None:
        jwt = self.kube.request_token(run.namespace, token.service_account, audience=token.audience,
                                      seconds=max(token.seconds, 600), bound_pod=(run.name, run.uid))
        _write(token.path, jwt.encode(), mode)

    def _items(self, data: Mapping[str, bytes], spec: Manifest, target: Path) -> None:
        mode = int(spec.get("defaultMode", 0o644))
        items = spec.get("items") or [{"key": key, "path": key} for key in data]
        for item in items:
            if item["key"] in data:
                _write(target / item["path"], data[item["key"]], int(item.get("mode", mode)))

    def _configmap(self, run: PodRun, spec: Manifest, target: Path, timeout: float) -> None:
        name = spec["name"]

        def read() -> Any:
            return self.kube.core.read_namespaced_config_map(name, run.namespace)

        try:
            found = read() if spec.get("optional") else wait_until(read, timeout=timeout, interval=0.2,
                                                                     describe=f"ConfigMap {run.namespace}/{name}")
        except ApiException:
            return  # optional and absent
        except TrustgridError:
            who = {"istio-ca-root-cert": "the mesh CA (istio-csr's part) or istiod's CA",
                   "kube-root-ca.crt": "kube-controller-manager"}.get(name, "nobody")
            raise PodStartError(f"pod {run.namespace}/{run.name}: ConfigMap {name} is missing in {run.namespace}",
                                fix=f"it is published by {who}; check that it runs") from None
        self._items({k: v.encode() for k, v in (found.data or {}).items()}, spec, target)

    def _secret(self, run: PodRun, spec: Manifest, target: Path) -> None:
        name = spec.get("secretName") or spec.get("name")
        found = self.kube.core.read_namespaced_secret(name, run.namespace)
        self._items({k: base64.b64decode(v) for k, v in (found.data or {}).items()}, spec, target)

    def _downward(self, run: PodRun, spec: Manifest, target: Path) -> None:
        mode = int(spec.get("defaultMode", 0o644))
        for item in spec.get("items") or []:
            if "fieldRef" not in item:
                raise PodStartError(f"pod {run.namespace}/{run.name}: downward API item {item.get('path')} is not a "
                                    "fieldRef, which the local kubelet does not support")
            _write(target / item["path"], field_value(run.pod, item["fieldRef"]["fieldPath"]).encode(), mode)

    # -- the syncer: tokens and ConfigMaps, as the kubelet keeps them current --------
    def _ensure_syncer(self) -> None:
        if self._syncer is None:
            self._syncer = threading.Thread(target=self._sync_loop, name="local-kubelet-sync", daemon=True)
            self._syncer.start()

    def _sync_loop(self) -> None:
        while not self._stop.wait(SYNC_SECONDS):
            with self._lock:
                runs = list(self._runs.values())
            for run in runs:
                with contextlib.suppress(ApiException, OSError, TrustgridError):
                    self.sync(run)

    def sync(self, run: PodRun, *, force_tokens: bool = False) -> None:
        """Refresh the pod's projected tokens that are due (or all of them), and its ConfigMap files."""
        for index, (token, issued) in enumerate(run.tokens):
            if force_tokens or time.monotonic() - issued > token.seconds * TOKEN_REFRESH_SHARE:
                self._token(run, token)
                run.tokens[index] = (token, time.monotonic())
        for name, target, spec in run.configmaps:
            with contextlib.suppress(ApiException):
                found = self.kube.core.read_namespaced_config_map(name, run.namespace)
                self._items({k: v.encode() for k, v in (found.data or {}).items()}, spec, target)

    # -- containers ------------------------------------------------------------------
    def _image(self, run: PodRun, container: Manifest) -> Image:
        image = self.node.images.get(str(container["image"]))
        if image is None:
            raise PodStartError(f"pod {run.namespace}/{run.name}: container {container['name']} wants image "
                                f"{container['image']}, which this node cannot run",
                                fix=f"use one of {', '.join(sorted(self.node.images))}")
        return image

    def _sandbox(self, run: PodRun, container: Manifest, name: str, argv: list[str] | None = None) -> ManagedProcess:
        image = self._image(run, container)
        env = {**image.env, **container_env(run.pod, container, node_cpus=self.node.cpus,
                                            node_memory=self.node.memory)}
        command = argv or container_argv(container, list(image.entrypoint), env)
        volumes = run.folder / "volumes"
        mounts = [{"source": str(volumes / m["name"] / m.get("subPath", "")).rstrip("/"), "target": m["mountPath"],
                   "readonly": bool(m.get("readOnly"))} for m in container.get("volumeMounts") or []]
        mounts += [{"source": host, "target": path, "readonly": True} for path, host in image.files.items()]
        context = {**(run.pod["spec"].get("securityContext") or {}), **(container.get("securityContext") or {})}
        uid = int(context.get("runAsUser", 0))
        workdir = run.folder / "containers" / name
        workdir.mkdir(parents=True, exist_ok=True)
        spec = {"workdir": str(workdir), "mounts": mounts, "argv": command, "cwd": container.get("workingDir") or "/",
                "uid": uid, "gid": int(context.get("runAsGroup", uid)),
                # The run's labels go with the process, so that a reaper can tell whose it is.
                "env": {**env, RUN_ENV: self.state.run_id, OWNER_ENV: self.state.owner}}
        spec_file = run.folder / "containers" / f"{name}.json"
        spec_file.write_text(json.dumps(spec))
        argv_host = ["ip", "netns", "exec", run.net.netns, "unshare", "-m", "--propagation", "private",
                     sys.executable, "-m", "cluster.local.sandbox", str(spec_file)]
        return ManagedProcess(f"pod-{run.namespace}-{run.name}-{name}", argv_host, self.state, die_with_parent=False)

    def _start(self, run: PodRun, container: Manifest) -> ManagedProcess:
        process = self._sandbox(run, container, container["name"])
        process.start()
        return process

    def _to_completion(self, run: PodRun, process: ManagedProcess, what: str, deadline: float) -> None:
        process.start()

        def finished() -> bool:
            return process.popen is not None and process.popen.poll() is not None

        try:
            wait_until(finished, timeout=max(1.0, deadline - time.monotonic()), interval=0.05, describe=what)
        except TrustgridError:
            process.stop(grace=1)
            raise PodStartError(f"pod {run.namespace}/{run.name}: {what} did not finish: {process.log_tail()}",
                                fix="see the pod's logs in the run's state directory") from None
        except BaseException:
            # Ctrl-C while an init container or a postStart hook (pilot-agent wait) runs: it is not one of
            # the pod's containers, so the pod's own teardown would not stop it.
            process.stop(grace=1)
            raise
        code = process.popen.returncode if process.popen else None
        if code != 0:
            raise PodStartError(f"pod {run.namespace}/{run.name}: {what} exited with code {code}: {process.log_tail()}",
                                fix="see the pod's logs in the run's state directory")

    def _run_init(self, run: PodRun, container: Manifest, deadline: float) -> None:
        process = self._sandbox(run, container, container["name"])
        self._to_completion(run, process, f"init container {container['name']}", deadline)

    def _hook(self, run: PodRun, container: Manifest, command: list[str], deadline: float) -> None:
        process = self._sandbox(run, container, f"{container['name']}-poststart", argv=command)
        self._to_completion(run, process, f"the postStart hook of {container['name']} ({' '.join(command)})", deadline)

    # -- readiness --------------------------------------------------------------------
    def _probe(self, run: PodRun, container: Manifest, probe: Manifest) -> Callable[[], bool]:
        ports = {p.get("name"): p["containerPort"] for p in container.get("ports") or []}

        def port(value: Any) -> int:
            return int(ports.get(value, value))

        if "httpGet" in probe:
            get = probe["httpGet"]

            def http_ok() -> bool:
                connection = http.client.HTTPConnection(run.ip, port(get["port"]), timeout=2)
                try:
                    connection.request("GET", get.get("path", "/"))
                    return 200 <= connection.getresponse().status < 400
                finally:
                    connection.close()

            return http_ok
        if "tcpSocket" in probe:
            def tcp_ok() -> bool:
                with socket.create_connection((run.ip, port(probe["tcpSocket"]["port"])), timeout=2):
                    return True

            return tcp_ok
        return lambda: True

    def _wait_ready(self, run: PodRun, deadline: float) -> None:
        for container in run.pod["spec"]["containers"]:
            process = run.processes[container["name"]]
            for kind in ("startupProbe", "readinessProbe"):
                probe = container.get(kind)
                if not probe:
                    continue
                check = self._probe(run, container, probe)

                def ready(check: Callable[[], bool] = check, process: ManagedProcess = process) -> bool:
                    if not process.running():
                        raise Abort(f"{process.name} exited: {process.log_tail()}")
                    return check()

                try:
                    wait_until(ready, timeout=max(1.0, deadline - time.monotonic()), interval=0.05,
                               describe=f"the {kind} of {run.namespace}/{run.name} {container['name']}")
                except Abort as err:
                    raise PodStartError(f"pod {run.namespace}/{run.name} failed to start: {err}") from None
                except TrustgridError as err:
                    raise PodStartError(f"pod {run.namespace}/{run.name}: container {container['name']} not ready: "
                                        f"{err}; {process.log_tail()}",
                                        fix="check the mesh CA and istiod logs in the run's state directory") from None

