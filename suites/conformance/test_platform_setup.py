"""The platform is set up as the integration requires, judged live."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import hvac
import pytest
from cryptography import x509
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from cluster.kube import Kube
from cluster.pkitools import csr_and_key
from cluster.platform import Platform
from cluster.settings import Settings
from cluster.tenancy import Tenant
from cluster.vault import VaultConfigurator

pytestmark = pytest.mark.conformance


def _peer_authentication(namespace: str, mode: str) -> dict[str, object]:
    return {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": "default", "namespace": namespace}, "spec": {"mtls": {"mode": mode}}}


def test_the_real_istio_crds_validate_objects(kube: Kube, tenant: Tenant) -> None:
    custom = client.CustomObjectsApi(kube.api)
    create = custom.create_namespaced_custom_object
    create("security.istio.io", "v1", tenant.namespace, "peerauthentications",
           _peer_authentication(tenant.namespace, "STRICT"), dry_run="All")
    with pytest.raises(ApiException) as refused:
        create("security.istio.io", "v1", tenant.namespace, "peerauthentications",
               _peer_authentication(tenant.namespace, "MOSTLY"), dry_run="All")
    assert refused.value.status == 422 and "MOSTLY" in str(refused.value.body)


def test_the_real_cert_manager_crds_validate_a_vault_issuer(kube: Kube, tenant: Tenant) -> None:
    issuer = {
        "apiVersion": "cert-manager.io/v1", "kind": "Issuer",
        "metadata": {"name": "vault", "namespace": tenant.namespace},
        "spec": {"vault": {"server": "https://vault.vault.svc:8200", "path": f"pki_int/sign/{tenant.role}",
                           "auth": {"kubernetes": {"role": tenant.role, "mountPath": "/v1/auth/kubernetes",
                                                   "serviceAccountRef": {"name": "app"}}}}},
    }
    custom = client.CustomObjectsApi(kube.api)
    custom.create_namespaced_custom_object("cert-manager.io", "v1", tenant.namespace, "issuers", issuer, dry_run="All")
    issuer["spec"]["vault"]["auth"]["kubernetes"]["serviceAccountRef"] = {"nome": "app"}  # type: ignore[index]
    with pytest.raises(ApiException) as refused:
        custom.create_namespaced_custom_object("cert-manager.io", "v1", tenant.namespace, "issuers", issuer,
                                               dry_run="All", field_validation="Strict")
    assert refused.value.status in (400, 422)


def test_a_namespaces_pki_role_issues_only_its_own_spiffe_ids(
    platform: Platform, settings: Settings, new_tenant: Callable[..., Tenant]
) -> None:
    mine, theirs = new_tenant(), new_tenant()
    admin = platform.vault_admin()
    sign = f"/v1/{platform.vault_layout.pki_int_path}/sign/{mine.role}"
    domain = settings.profile.setup.trust_domain
    own = f"spiffe://{domain}/ns/{mine.namespace}/sa/app"
    asked_at = datetime.now(UTC)
    issued = admin.adapter.post(sign, json={"csr": csr_and_key(own)[0]})["data"]["certificate"]
    cert = x509.load_pem_x509_certificate(issued.encode())
    uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert uris.get_values_for_type(x509.UniformResourceIdentifier) == [own]
    # Vault backdates notBefore (30 s by default) for clock skew, so what a
    # workload gets is the validity left after issuance: that is the TTL.
    usable = cert.not_valid_after_utc - asked_at
    cert_ttl = settings.profile.setup.mesh.cert_ttl
    assert cert_ttl - timedelta(seconds=5) <= usable <= cert_ttl + timedelta(seconds=1)

    foreign = f"spiffe://{domain}/ns/{theirs.namespace}/sa/app"
    with pytest.raises(hvac.exceptions.InvalidRequest) as refused:
        admin.adapter.post(sign, json={"csr": csr_and_key(foreign)[0]})
    assert "not allowed" in str(refused.value) or "URI" in str(refused.value)


def test_vault_setup_is_idempotent(platform: Platform, settings: Settings, vault_config: VaultConfigurator) -> None:
    """Running the shared setup again changes nothing: what --reuse-cluster relies on."""
    admin = platform.vault_admin()
    root_before = admin.adapter.get(f"/v1/{platform.vault_layout.pki_root_path}/cert/ca")["data"]["certificate"]
    mounts_before = set(admin.sys.list_mounted_secrets_engines()["data"])
    assert vault_config.configure_pki() == root_before
    vault_config.configure_kv()
    assert set(admin.sys.list_mounted_secrets_engines()["data"]) == mounts_before
