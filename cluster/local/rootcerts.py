"""istio-ca-root-cert in every namespace, kept current: istio-csr's ConfigMap controller.

istio-csr pkg/controller/configmap.go (v0.17.0): watch every Namespace and reconcile
ConfigMap ``istio-ca-root-cert`` there, skipping namespaces that are Terminating: create it
when missing; otherwise drop data keys other than ``root-cert.pem``, set ``root-cert.pem`` to
the current roots, ensure the label ``istio.io/config: "true"``, and Update. Every namespace is
reconciled again when the roots change. Here a namespace watch (kubernetes client) creates the
ConfigMap as soon as a namespace appears; a one-second poll of Vault's root issuers re-publishes
on a root rotation, and a resync every RESYNC_S puts back an edited or deleted ConfigMap (istio-csr
watches the ConfigMaps themselves). All of it with the CA's own service-account token: RBAC as
istio-csr's chart grants it (mesh_ca_identity in meshservices.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from cluster.secrets import register
from cluster.wait import pause

log = logging.getLogger("meshca.rootcerts")
CONFIGMAP = "istio-ca-root-cert"
KEY = "root-cert.pem"
LABEL = "istio.io/config"
ROOTS_POLL_S = 1.0
RESYNC_S = 10.0
WATCH_S = 30


def api_client(apiserver: str, ca_bundle: str, token_file: str) -> client.ApiClient:
    """A client that authenticates with the token file as it is at each request (it may be re-projected)."""
    config = client.Configuration()
    config.host = apiserver
    config.ssl_ca_cert = ca_bundle

    def refresh(configuration: client.Configuration) -> None:
        configuration.api_key = {"authorization": register(Path(token_file).read_text().strip())}

    refresh(config)  # auth_settings() offers the bearer token only when a key is already set
    config.api_key_prefix = {"authorization": "Bearer"}
    config.refresh_api_key_hook = refresh
    return client.ApiClient(config)


def wanted(current: dict[str, Any] | None, bundle: str) -> dict[str, Any] | None:
    """What to write: None when the ConfigMap is already right (istio-csr configmap.go Reconcile)."""
    if current is None:
        return {"labels": {LABEL: "true"}, "data": {KEY: bundle}}
    data = dict(current.get("data") or {})
    labels = dict(current.get("labels") or {})
    if set(data) - {KEY}:
        data = {}
    if data.get(KEY) == bundle and labels.get(LABEL) == "true":
        return None
    return {"labels": {**labels, LABEL: "true"}, "data": {**data, KEY: bundle}}


class RootPublisher:
    """Publishes ``bundle()`` (read afresh at each call) as istio-ca-root-cert; ``synced`` once every
    namespace had it once."""

    def __init__(self, api: client.ApiClient, bundle: Callable[[], str]) -> None:
        self.core = client.CoreV1Api(api)
        self.bundle = bundle
        self.synced = threading.Event()
        self.published = 0
        self.last_error = ""
        self._last_bundle = ""
        self._lock = threading.Lock()  # one reconcile at a time: the watch and the poll share the API

    def current(self) -> str:
        """The roots now; while Vault cannot be read, the last ones read (istio-csr keeps its roots too)."""
        try:
            self._last_bundle = self.bundle()
        except Exception:
            if not self._last_bundle:
                raise
        return self._last_bundle

    def _failed(self, where: str, err: Exception) -> None:
        message = f"{where}: {type(err).__name__}: {str(err)[:300]}"
        if message != self.last_error:  # once per distinct failure, not once a second
            log.warning("%s", message)
        self.last_error = message

    def reconcile(self, namespace: Any, bundle: str) -> None:
        name = namespace.metadata.name
        if namespace.status is not None and namespace.status.phase == "Terminating":
            return
        with self._lock:
            try:
                current = self.core.read_namespaced_config_map(CONFIGMAP, name)
            except ApiException as err:
                if err.status != 404:
                    raise
                current = None
            change = wanted(None if current is None else {"data": current.data, "labels": current.metadata.labels},
                            bundle)
            if change is None:
                return
            meta = client.V1ObjectMeta(name=CONFIGMAP, namespace=name, labels=change["labels"])
            try:
                if current is None:
                    self.core.create_namespaced_config_map(name, client.V1ConfigMap(metadata=meta, data=change["data"]))
                else:
                    meta.resource_version = current.metadata.resource_version
                    self.core.replace_namespaced_config_map(CONFIGMAP, name,
                                                            client.V1ConfigMap(metadata=meta, data=change["data"]))
            except ApiException as err:
                # A namespace that went away or began terminating meanwhile; a conflict is redone at the resync.
                if err.status not in (403, 404, 409):
                    raise
                log.info("%s/%s not written (%s); retried at the next resync", name, CONFIGMAP, err.status)
                return
            self.published += 1
            log.info("%s %s/%s", "created" if current is None else "updated", name, CONFIGMAP)

    def resync(self) -> str:
        """Reconcile every namespace; returns the list's resourceVersion (for the watch)."""
        bundle = self.current()
        listed = self.core.list_namespace()
        for namespace in listed.items:
            self.reconcile(namespace, bundle)
        self.synced.set()
        return str(listed.metadata.resource_version)

    def _watch(self) -> None:
        while True:
            try:
                version = self.resync()
                stream = watch.Watch().stream(self.core.list_namespace, resource_version=version,
                                              timeout_seconds=WATCH_S, _request_timeout=WATCH_S + 10)
                for event in stream:
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self.reconcile(event["object"], self.current())
            except Exception as err:  # noqa: BLE001 - the API server or Vault may be away for a while
                self._failed("namespace watch", err)
                pause(1.0)

    def _poll(self) -> None:
        """Re-read the roots every second; republish everywhere when they change, and every RESYNC_S."""
        last, resynced = "", time.monotonic()
        while True:
            pause(ROOTS_POLL_S)
            try:
                bundle = self.bundle()
                if bundle != last or time.monotonic() - resynced >= RESYNC_S:
                    if last and bundle != last:
                        log.info("the root set changed: republishing %s everywhere", CONFIGMAP)
                    self.resync()
                    last, resynced = bundle, time.monotonic()
                self.last_error = ""
            except Exception as err:  # noqa: BLE001 - keep publishing the last roots until Vault answers
                self._failed("root poll", err)

    def start(self) -> None:
        threading.Thread(target=self._watch, name="namespace-watch", daemon=True).start()
        threading.Thread(target=self._poll, name="root-poll", daemon=True).start()
