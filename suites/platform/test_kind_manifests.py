"""Every manifest the kind platform applies passes a server-side dry-run here.

The local API server has the real Istio and cert-manager CRDs, so a typo in
a field, a wrong apiVersion or a value outside an enum is refused now, on a
machine without Docker, instead of on a user's laptop.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from cluster.kind import manifests
from cluster.kind.vaulttls import make_vault_tls, tls_secret
from cluster.kube import Kube
from cluster.platform import Platform
from cluster.settings import Settings
from cluster.vault import PluginCa, VaultConfigurator

ROOT_PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"  # shape only: never parsed


def dry_run_apply(dynamic: DynamicClient, obj: dict[str, Any]) -> None:
    """Server-side apply with dryRun=All: the object is validated against its schema and stored nowhere."""
    resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    # Forced: an object the local platform already owns (the mesh-wide PeerAuthentication) is judged by its
    # schema, not refused as a conflict between field managers.
    dynamic.server_side_apply(resource, body=obj, namespace=obj["metadata"].get("namespace"),
                              field_manager="trustgrid-dry-run", dry_run="All", force_conflicts=True)


@contextlib.contextmanager
def namespaces_for(kube: Kube, objs: list[dict[str, Any]], run_id: str) -> Iterator[None]:
    """A namespaced dry-run needs its namespace to exist; create only the missing ones, remove them after."""
    existing = {ns.metadata.name for ns in kube.core.list_namespace().items}
    wanted = {o["metadata"]["namespace"] for o in objs if o["metadata"].get("namespace")}
    made = sorted(wanted - existing)
    try:
        for name in made:
            kube.ensure_namespace(name, run_id)
        yield
    finally:
        for name in made:
            kube.delete_namespace(name)


@pytest.fixture
def kind_objects(settings: Settings, platform: Platform) -> list[dict[str, Any]]:
    vault = manifests.VaultTarget(namespace="vault", address="https://vault.vault.svc:8200", flavor="vault")
    tls = make_vault_tls("vault", "vault")
    objs = manifests.all_manifests(settings.profile.setup, vault, platform.run_id, root_pem=ROOT_PEM,
                                   vault_ca=tls.ca_pem, app_ns="tg-kind-app", legacy_ns="tg-kind-legacy")
    objs.append(tls_secret("vault", tls, platform.run_id))
    objs.append(manifests.cacerts_secret(PluginCa(ROOT_PEM, "not-a-key", ROOT_PEM), platform.run_id))
    return objs


def test_every_kind_manifest_passes_a_server_side_dry_run(platform: Platform, kube: Kube,
                                                          kind_objects: list[dict[str, Any]]) -> None:
    dynamic = DynamicClient(platform.kube)
    kinds = {o["kind"] for o in kind_objects}
    assert {"Issuer", "PeerAuthentication", "AuthorizationPolicy", "Deployment", "Role"} <= kinds
    namespaced = [o for o in kind_objects if o["kind"] != "Namespace"]
    refused = []
    with namespaces_for(kube, namespaced, platform.run_id):
        for obj in kind_objects:
            try:
                dry_run_apply(dynamic, obj)
            except ApiException as err:
                refused.append(f"{obj['kind']} {obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}: "
                               f"{err.status} {err.reason}: {str(err.body)[:300]}")
    assert refused == [], "\n".join(refused)


@pytest.mark.parametrize(("kind", "path", "value"), [
    ("Issuer", ("spec", "vault", "auth", "kubernetes", "serviceAccountRef", "nmae"), "x"),
    ("PeerAuthentication", ("spec", "mtls", "mode"), "MOSTLY"),
    ("Deployment", ("spec", "replicas"), "one"),
])
def test_the_dry_run_refuses_a_broken_manifest(platform: Platform, kube: Kube, kind_objects: list[dict[str, Any]],
                                               kind: str, path: tuple[str, ...], value: object) -> None:
    """The check can fail: a misspelt field, a value outside an enum and a wrong type are each refused."""
    broken = copy.deepcopy(next(o for o in kind_objects if o["kind"] == kind))
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with namespaces_for(kube, [broken], platform.run_id), pytest.raises(ApiException) as refused:
        dry_run_apply(DynamicClient(platform.kube), broken)
    # Server-side apply reports a field outside the schema as 500 "failed to create typed patch object";
    # so the refusal must name what was broken, or it could be any server error.
    message = str(refused.value.body)
    assert refused.value.status in (400, 422, 500), message
    assert path[-1] in message or str(value) in message, message


def test_the_plugin_ca_is_an_intermediate_signed_by_the_live_vault_root(platform: Platform, settings: Settings,
                                                                        kube: Kube) -> None:
    """`ca: plugin` on kind: istiod's cacerts come from Vault's root; here with the real OpenBao and API server."""
    configurator = VaultConfigurator(platform.vault_admin(), platform.vault_layout, settings.profile.setup,
                                     platform.run_id)
    ca = configurator.sign_plugin_ca()
    cert = x509.load_pem_x509_certificate(ca.cert_pem.encode())
    root = x509.load_pem_x509_certificate(ca.root_pem.encode())
    live_root = platform.vault_admin().adapter.get(f"/v1/{platform.vault_layout.pki_root_path}/cert/ca")
    assert ca.root_pem.strip() == live_root["data"]["certificate"].strip()
    cert.verify_directly_issued_by(root)  # raises unless the root's key signed it
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0
    key = serialization.load_pem_private_key(ca.key_pem.encode(), password=None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]
    assert ca.key_pem not in repr(ca)
    secret = manifests.cacerts_secret(ca, platform.run_id)
    with namespaces_for(kube, [secret], platform.run_id):
        dry_run_apply(DynamicClient(platform.kube), secret)
