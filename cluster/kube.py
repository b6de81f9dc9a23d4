"""Namespaces, service accounts, RBAC and tokens: shared by every platform.

Every object created here carries ``trustgrid.io/run-id``; that label is
what the reaper and the kubeconfig platform's guard rely on.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from cluster.runstate import RUN_LABEL
from cluster.secrets import register
from cluster.wait import wait_until

AUTH_DELEGATOR = "system:auth-delegator"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def labels(run_id: str, **extra: str) -> dict[str, str]:
    return {RUN_LABEL: run_id, "app.kubernetes.io/managed-by": "trustgrid", **extra}


def namespace_name(*parts: str, max_len: int = 63) -> str:
    """A valid, readable namespace name built from free text (test names, ids)."""
    text = "-".join(parts).lower()
    text = re.sub(r"[^a-z0-9-]+", "-", text).strip("-")
    text = re.sub(r"-{2,}", "-", text)[:max_len].rstrip("-")
    if not _DNS_LABEL.match(text):
        raise ValueError(f"cannot make a namespace name from {parts!r}")
    return text


def _ignore_conflict(err: ApiException) -> None:
    if err.status != 409:
        raise err


@dataclass(frozen=True)
class Kube:
    """Typed access to the API groups the suite uses."""

    api: ApiClient

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def rbac(self) -> client.RbacAuthorizationV1Api:
        return client.RbacAuthorizationV1Api(self.api)

    @property
    def authn(self) -> client.AuthenticationV1Api:
        return client.AuthenticationV1Api(self.api)

    def apply_custom(self, group: str, version: str, plural: str, obj: Mapping[str, Any]) -> None:
        """Create or replace a namespaced custom object, server-side, so its CRD schema validates it."""
        custom = client.CustomObjectsApi(self.api)
        meta = obj["metadata"]
        try:
            custom.create_namespaced_custom_object(group, version, meta["namespace"], plural, dict(obj))
        except ApiException as err:
            _ignore_conflict(err)
            current = custom.get_namespaced_custom_object(group, version, meta["namespace"], plural, meta["name"])
            body = {**obj, "metadata": {**meta, "resourceVersion": current["metadata"]["resourceVersion"]}}
            custom.replace_namespaced_custom_object(group, version, meta["namespace"], plural, meta["name"], body)

    def delete_custom(self, group: str, version: str, plural: str, obj: Mapping[str, Any]) -> None:
        meta = obj["metadata"]
        try:
            client.CustomObjectsApi(self.api).delete_namespaced_custom_object(
                group, version, meta["namespace"], plural, meta["name"])
        except ApiException as err:
            if err.status != 404:
                raise

    def server_version(self) -> str:
        return str(client.VersionApi(self.api).get_code().git_version)

    def ensure_namespace(self, name: str, run_id: str, extra_labels: dict[str, str] | None = None) -> None:
        meta = client.V1ObjectMeta(name=name, labels=labels(run_id, **(extra_labels or {})))
        body = client.V1Namespace(metadata=meta)
        try:
            self.core.create_namespace(body)
        except ApiException as err:
            _ignore_conflict(err)

    def delete_namespace(self, name: str) -> None:
        with contextlib.suppress(ApiException):
            self.core.delete_namespace(name, propagation_policy="Background")

    def _namespace(self, name: str) -> client.V1Namespace | None:
        try:
            return self.core.read_namespace(name)
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def namespace_phase(self, name: str) -> str | None:
        """``Active`` or ``Terminating``; None when the namespace does not exist."""
        found = self._namespace(name)
        return None if found is None else str(found.status.phase)

    def wait_namespace_gone(self, name: str, timeout: float) -> None:
        """Block until the namespace no longer exists (timeout in seconds).

        A deleted namespace stays Terminating while the namespace controller empties it; anything
        created in it meanwhile is refused (403 "being terminated"), then 404 once it is gone. Raises
        WaitTimeout naming the phase and the conditions last seen."""
        def gone() -> bool:
            found = self._namespace(name)
            if found is None:
                return True
            conditions = [f"{c.type}={c.status}: {c.message}" for c in found.status.conditions or []
                          if c.status == "True"]
            raise RuntimeError(f"still {found.status.phase}; {'; '.join(conditions) or 'no conditions yet'}")

        wait_until(gone, timeout=timeout, interval=0.25, describe=f"namespace {name} to be deleted")

    def ensure_service_account(self, namespace: str, name: str, run_id: str) -> str:
        """Create the service account if missing; returns its uid."""
        body = client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name, labels=labels(run_id)))
        try:
            created = self.core.create_namespaced_service_account(namespace, body)
            return str(created.metadata.uid)
        except ApiException as err:
            _ignore_conflict(err)
        return str(self.core.read_namespaced_service_account(name, namespace).metadata.uid)

    def delete_service_account(self, namespace: str, name: str) -> None:
        self.core.delete_namespaced_service_account(name, namespace)

    def bind_cluster_role(self, binding: str, role: str, subjects: Iterable[tuple[str, str]], run_id: str) -> None:
        """Bind a ClusterRole to service accounts given as (namespace, name)."""
        body = client.V1ClusterRoleBinding(
            metadata=client.V1ObjectMeta(name=binding, labels=labels(run_id)),
            role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=role),
            subjects=[client.RbacV1Subject(kind="ServiceAccount", namespace=ns, name=sa) for ns, sa in subjects],
        )
        try:
            self.rbac.create_cluster_role_binding(body)
        except ApiException as err:
            _ignore_conflict(err)
            self.rbac.replace_cluster_role_binding(binding, body)

    def request_token(
        self,
        namespace: str,
        service_account: str,
        *,
        audience: str | None,
        seconds: int = 600,
        bound_pod: tuple[str, str] | None = None,
    ) -> str:
        """A TokenRequest JWT, as a kubelet would project it; registered as a secret.

        ``audience`` None asks for the API server's own audiences (its --api-audiences)."""
        bound = None
        if bound_pod is not None:
            name, uid = bound_pod
            bound = client.V1BoundObjectReference(api_version="v1", kind="Pod", name=name, uid=uid)
        spec = client.V1TokenRequestSpec(audiences=[audience] if audience else [], expiration_seconds=seconds,
                                         bound_object_ref=bound)
        response = self.core.create_namespaced_service_account_token(
            service_account, namespace, client.AuthenticationV1TokenRequest(spec=spec)
        )
        return register(str(response.status.token))

    def review_token(self, token: str, audience: str | None) -> bool:
        """Ask the API server itself whether a token is valid for an audience (None or "": its own)."""
        spec = client.V1TokenReviewSpec(token=token, audiences=[audience] if audience else None)
        review = self.authn.create_token_review(client.V1TokenReview(spec=spec))
        return bool(review.status.authenticated)

    def delete_namespaces_of_run(self, run_id: str) -> list[str]:
        """Delete the namespaces that carry this run's label, and only those; returns their names."""
        listed = self.core.list_namespace(label_selector=f"{RUN_LABEL}={run_id}")
        names = [ns.metadata.name for ns in listed.items]
        for name in names:
            self.delete_namespace(name)
        return names

    def namespaces_of_other_runs(self, run_id: str) -> list[str]:
        listed = self.core.list_namespace(label_selector=RUN_LABEL)
        return [ns.metadata.name for ns in listed.items if ns.metadata.labels.get(RUN_LABEL) != run_id]
