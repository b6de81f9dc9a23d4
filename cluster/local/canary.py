"""Istio revisions side by side on the local platform: the canary upgrade, with the real istiod.

A revision is a second ``pilot-discovery`` with ``REVISION=R``, rendered by the same istioctl with
``spec.revision: R`` (istiod-R's service account and RBAC, the ConfigMaps istio-R and
istio-sidecar-injector-R, the webhook istio-sidecar-injector-R), listening on ports of its own on the
node. Its mesh config sends the proxies it injects to its own xDS address, so a pod's proxy is served
by the revision that injected it, as in a cluster where each revision has its Service istiod-R.

Only ``ca: istio-csr`` is built: there istiod signs nothing (the mesh CA does), so two revisions
serve one mesh with one trust. With ``ca: plugin`` each istiod would be a CA; istio.io has both
revisions read the same cacerts, which is not built here.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import dynamic
from kubernetes.client import ApiClient
from kubernetes.dynamic.exceptions import NotFoundError

from cluster.errors import PlatformUnavailable
from cluster.istio import DEFAULT_REVISION, injected_revision, namespace_labels
from cluster.kube import Kube
from cluster.local import istiod
from cluster.local.istiobuild import find_istio
from cluster.local.mesh import rendered, start_istiod
from cluster.local.pods import LocalPods
from cluster.local.process import stop_recorded
from cluster.platform import Workload
from cluster.runstate import RunState
from cluster.settings import Settings

# A canary's ports: the default's plus this, so a revision's listeners never meet another's.
PORT_STEP = 100


def revision_of(name: str) -> istiod.Revision:
    """The revision named ``name``, with its ports (the default keeps 15012 and 15017)."""
    if name == DEFAULT_REVISION:
        return istiod.DEFAULT
    return istiod.Revision(name, istiod.XDS_PORT + PORT_STEP, istiod.WEBHOOK_PORT + PORT_STEP)


class LocalCanary:
    """The platform's istiod revisions. ``pods``: the platform's pods (restart, and which pod a workload is)."""

    def __init__(self, settings: Settings, state: RunState, pods: LocalPods, api: ApiClient, *, node_ip: str,
                 apiserver_url: str, ca: Path, mesh_ca_address: str, owner: bool) -> None:
        if settings.profile.setup.mesh.ca != "istio-csr":
            raise PlatformUnavailable("the canary is built for the mesh CA istio-csr only (with ca: plugin each "
                                      "revision would be a CA of its own)", fix="run suites/upgrade with ca: istio-csr")
        self._settings = settings
        self._state = state
        self._pods = pods
        self._api = api
        self._node_ip = node_ip
        self._apiserver_url = apiserver_url
        self._ca = ca
        self._mesh_ca_address = mesh_ca_address
        self._owner = owner
        self._endpoints: dict[str, istiod.IstiodEndpoints] = {}

    def _objects(self, revision: istiod.Revision) -> list[dict[str, Any]]:
        istio = find_istio(self._settings.cache_dir)
        discovery = f"{self._node_ip}:{revision.xds_port}"
        return rendered(istio, self._settings.profile.setup, self._settings.cache_dir, discovery=discovery,
                        ca_address=self._mesh_ca_address, revision=revision.name)

    def revisions(self) -> tuple[str, ...]:
        running = [name.removeprefix("istiod").removeprefix("-") or DEFAULT_REVISION
                   for name in self._state.pids() if name == "istiod" or name.startswith("istiod-")]
        return tuple(sorted(running, key=lambda r: (r != DEFAULT_REVISION, r)))

    def install_revision(self, revision: str) -> None:
        if revision in self.revisions():
            raise PlatformUnavailable(f"revision {revision} is already running", fix="remove it first")
        chosen = revision_of(revision)
        pki = self._state.file("pki")
        tls = istiod.IstiodTls(pki / "istiod.crt", pki / "istiod.key", self._ca)
        started = start_istiod(self._state, self._api, find_istio(self._settings.cache_dir), self._objects(chosen),
                               server=self._apiserver_url, server_ca=self._ca, node_ip=self._node_ip,
                               webhook_ca=self._ca.read_text(), tls=tls, cacerts=None, owner=self._owner,
                               revision=chosen)
        try:
            started.process.start()
            istiod.wait_istiod(started.process, started.endpoints)
        except BaseException:
            self.remove_revision(revision)
            raise
        self._endpoints[revision] = started.endpoints

    def remove_revision(self, revision: str) -> None:
        chosen = revision_of(revision)
        stop_recorded(self._state, chosen.process)
        self._endpoints.pop(revision, None)
        others = {(o["kind"], o["metadata"]["name"]) for other in self.revisions()
                  for o in self._objects(revision_of(other))}
        client = dynamic.DynamicClient(self._api)
        for obj in self._objects(chosen):
            key = (obj["kind"], obj["metadata"]["name"])
            if obj["kind"] not in istiod.INSTALLED_KINDS or obj["kind"] == "CustomResourceDefinition" or key in others:
                continue
            resource = client.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
            with contextlib.suppress(NotFoundError):
                resource.delete(name=obj["metadata"]["name"], namespace=obj["metadata"].get("namespace"))

    def move_namespace(self, namespace: str, revision: str) -> None:
        if revision not in self.revisions():
            raise PlatformUnavailable(f"no revision {revision} is running (running: {', '.join(self.revisions())})",
                                      fix="install the revision before moving a namespace onto it")
        Kube(self._api).core.patch_namespace(namespace, {"metadata": {"labels": namespace_labels(revision)}})

    def restart(self, workload: Workload) -> Workload:
        return self._pods.replace(workload)

    def _pod(self, workload: Workload) -> dict[str, Any]:
        run = self._pods.run_of(workload)
        pod = Kube(self._api).core.read_namespaced_pod(run.name, run.namespace)
        return dict(self._api.sanitize_for_serialization(pod))

    def injected_by(self, workload: Workload) -> str:
        return injected_revision(self._pod(workload))

    def serving_revision(self, workload: Workload) -> str:
        run = self._pods.run_of(workload)
        proxy = f"{run.name}.{run.namespace}"
        serving = [revision for revision in self.revisions()
                   if any(entry.get("proxy") == proxy for entry in self._istiod(revision).debug("syncz") or [])]
        if len(serving) != 1:
            raise PlatformUnavailable(f"proxy {proxy} is connected to {len(serving)} istiods ({serving})",
                                      fix="wait until it has reconnected")
        return serving[0]

    def _istiod(self, revision: str) -> istiod.IstiodEndpoints:
        if revision not in self._endpoints:
            record = json.loads(self._state.file(revision_of(revision).process_file).read_text())
            chosen = revision_of(revision)
            self._endpoints[revision] = istiod.IstiodEndpoints(record["node_ip"], int(record["http_port"]),
                                                               chosen.xds_port, chosen.webhook_port)
        return self._endpoints[revision]


def stop_revisions(state: RunState, stop: Callable[[RunState, str], None] = stop_recorded) -> None:
    """Stop every canary istiod of the run (the platform's teardown: whatever a test left running)."""
    for name in state.pids():
        if name.startswith("istiod-"):
            stop(state, name)
