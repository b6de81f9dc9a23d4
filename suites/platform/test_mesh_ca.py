"""The local mesh CA, live: Istio's certificate API over gRPC, as pilot-agent calls it.

Nothing is brought up here and no meshed pod is deployed: each test calls the running CA with
the generated stubs (cluster/local/caproto.py), a real projected token of a tenant's service
account, and the CA's trust anchor as pilot-agent reads it (ConfigMap istio-ca-root-cert). The
rules are istio-csr's (cluster/local/meshcasign.py cites them); tests/test_meshca.py holds the
network-free cases.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import PolicyBuilder, Store
from kubernetes.client.exceptions import ApiException

from cluster.kube import Kube
from cluster.local import caproto
from cluster.local.meshservices import mesh_ca_address
from cluster.local.platform import LocalPlatform
from cluster.local.rootcerts import CONFIGMAP, KEY, LABEL
from cluster.platform import Platform
from cluster.runstate import cache_dir
from cluster.tenancy import Tenant
from cluster.vault import PkiRotation
from cluster.versions import load_pins
from cluster.wait import wait_until

ISTIO_CA = "istio-ca"
PILOT_AGENT_TTL_S = 86400  # pilot-agent's default SECRET_TTL, sent as validity_duration



@pytest.fixture(scope="module")
def proto() -> caproto.CaProto:
    return caproto.load(caproto.ensure_stubs(cache_dir(), load_pins()))


def root_cert_configmap(kube: Kube, namespace: str) -> str:
    """root-cert.pem of istio-ca-root-cert, once the CA has published it (what pilot-agent mounts)."""

    def published() -> str:
        configmap = kube.core.read_namespaced_config_map(CONFIGMAP, namespace)
        assert configmap.metadata.labels.get(LABEL) == "true"
        return str(configmap.data.get(KEY, ""))

    return wait_until(published, timeout=15, interval=0.1, describe=f"{CONFIGMAP} in {namespace}")


@pytest.fixture
def ca_client(local: LocalPlatform, tenant: Tenant, proto: caproto.CaProto) -> Iterator[caproto.CaClient]:
    client = caproto.CaClient(proto, mesh_ca_address(local.state), root_cert_configmap(tenant.kube, tenant.namespace))
    yield client
    client.close()


def vault_roots(platform: Platform) -> list[x509.Certificate]:
    """Every issuer of Vault's root mount, read as an administrator (not through the CA)."""
    admin = platform.vault_admin()
    mount = platform.vault_layout.pki_root_path
    keys = admin.adapter.list(f"/v1/{mount}/issuers")["data"]["keys"]
    return [x509.load_pem_x509_certificate(admin.adapter.get(f"/v1/{mount}/issuer/{key}")["data"]["certificate"]
                                           .encode()) for key in keys]


def csr_for(uri: str) -> str:
    """A CSR as pilot-agent makes it: an EC P-256 key, an empty subject, one URI SAN."""
    key = ec.generate_private_key(ec.SECP256R1())
    return (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=True)
            .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode())


def spiffe(tenant: Tenant, namespace: str | None = None, service_account: str = "app") -> str:
    return f"spiffe://{tenant.setup.trust_domain}/ns/{namespace or tenant.namespace}/sa/{service_account}"


def test_a_service_account_gets_its_spiffe_certificate_chained_to_vaults_root(
        local: LocalPlatform, tenant: Tenant, ca_client: caproto.CaClient) -> None:
    asked = dt.datetime.now(dt.UTC)
    chain = ca_client.create_certificate(tenant.token("app", audience=ISTIO_CA), csr_for(spiffe(tenant)),
                                         PILOT_AGENT_TTL_S)
    assert len(chain) >= 3, "leaf, the intermediate(s), and the root bundle last"
    leaf = x509.load_pem_x509_certificate(chain[0].encode())
    intermediates = [x509.load_pem_x509_certificate(pem.encode()) for pem in chain[1:-1]]
    bundle = x509.load_pem_x509_certificates(chain[-1].encode())
    roots = vault_roots(local)
    assert {c.fingerprint(hashes.SHA256()) for c in bundle} == {c.fingerprint(hashes.SHA256()) for c in roots}, \
        "the last element is Vault's whole root set, and nothing else"
    assert len(bundle) == len(roots), "each root once"
    verified = PolicyBuilder().store(Store(roots)).build_client_verifier().verify(leaf, intermediates)
    assert verified.subjects == [x509.UniformResourceIdentifier(spiffe(tenant))]
    assert all(c.subject != c.issuer for c in intermediates), "no self-signed certificate before the bundle"
    # pilot-agent asks for 24h; the CA grants at most its cap, the profile's certificate lifetime.
    cap = tenant.setup.mesh.cert_ttl.total_seconds()
    assert (leaf.not_valid_after_utc - asked).total_seconds() <= cap + 5


def test_a_csr_naming_another_namespace_is_refused(local: LocalPlatform, new_tenant: Callable[..., Tenant],
                                                   proto: caproto.CaProto) -> None:
    mine, other = new_tenant(), new_tenant()
    client = caproto.CaClient(proto, mesh_ca_address(local.state), root_cert_configmap(mine.kube, mine.namespace))
    try:
        with pytest.raises(grpc.RpcError) as refused:
            client.create_certificate(mine.token("app", audience=ISTIO_CA), csr_for(spiffe(mine, other.namespace)),
                                      PILOT_AGENT_TTL_S)
    finally:
        client.close()
    # istio-csr answers every authentication or CSR failure alike (pkg/server/server.go CreateCertificate).
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert refused.value.details() == "request authenticate failure"
    reasons = local.faults().mesh_ca_status().details["recent_refusals"]
    assert any(spiffe(mine, other.namespace) in reason and "match URIs" in reason for reason in reasons), reasons


def test_a_token_for_another_audience_is_refused(local: LocalPlatform, tenant: Tenant,
                                                 ca_client: caproto.CaClient) -> None:
    vault_token = tenant.token("app")  # the profile's Vault audience, valid for Vault, not for the CA
    with pytest.raises(grpc.RpcError) as refused:
        ca_client.create_certificate(vault_token, csr_for(spiffe(tenant)), PILOT_AGENT_TTL_S)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    reasons = local.faults().mesh_ca_status().details["recent_refusals"]
    assert any("not authenticated" in reason or "audience" in reason for reason in reasons), reasons


def test_a_new_namespace_gets_istio_ca_root_cert_with_vaults_root(local: LocalPlatform, kube: Kube) -> None:
    namespace = f"tg-rootcert-{secrets.token_hex(3)}"
    kube.ensure_namespace(namespace, local.run_id)
    try:
        published = x509.load_pem_x509_certificates(root_cert_configmap(kube, namespace).encode())
    finally:
        kube.delete_namespace(namespace)
    fingerprints = {c.fingerprint(hashes.SHA256()) for c in published}
    assert {c.fingerprint(hashes.SHA256()) for c in vault_roots(local)} <= fingerprints
    # and the CA that issued the mesh CA's (and istiod's) serving certificate, which pilot-agent verifies with it
    control_plane = x509.load_pem_x509_certificate(Path(local.connection.ca).read_bytes())
    assert control_plane.fingerprint(hashes.SHA256()) in fingerprints


def test_the_configmap_is_put_back_when_edited(local: LocalPlatform, tenant: Tenant) -> None:
    kube = tenant.kube
    expected = root_cert_configmap(kube, tenant.namespace)
    kube.core.patch_namespaced_config_map(CONFIGMAP, tenant.namespace, {"data": {KEY: "tampered", "extra": "x"}})

    def restored() -> bool:
        try:
            data = kube.core.read_namespaced_config_map(CONFIGMAP, tenant.namespace).data
        except ApiException:
            return False
        return bool(data == {KEY: expected})

    wait_until(restored, timeout=20, interval=0.2, describe=f"{CONFIGMAP} restored in {tenant.namespace}")


@pytest.mark.cluster_fault  # a second root and a new default intermediate: every CSR of the run is affected
def test_during_a_root_overlap_both_roots_are_the_last_element_and_in_the_configmap(
        local: LocalPlatform, tenant: Tenant, ca_client: caproto.CaClient) -> None:
    layout = local.vault_layout
    rotation = PkiRotation(local.vault_admin(), layout, local.run_id)
    old_intermediate = rotation.default_issuer(layout.pki_int_path)
    new_root = rotation.new_root(f"overlap-{secrets.token_hex(3)}")
    try:
        _, common_name = rotation.new_intermediate(f"overlap-{secrets.token_hex(3)}", root_issuer=new_root)
        chain = ca_client.create_certificate(tenant.token("app", audience=ISTIO_CA), csr_for(spiffe(tenant)),
                                             PILOT_AGENT_TTL_S)
        roots = vault_roots(local)
        assert len(roots) == 2
        bundle = x509.load_pem_x509_certificates(chain[-1].encode())
        assert {c.fingerprint(hashes.SHA256()) for c in bundle} == {c.fingerprint(hashes.SHA256()) for c in roots}
        intermediates = [x509.load_pem_x509_certificate(pem.encode()) for pem in chain[1:-1]]
        assert [c.subject.rfc4514_string() for c in intermediates] == [f"CN={common_name}"]
        newest = next(c for c in roots if c.subject == intermediates[0].issuer)
        leaf = x509.load_pem_x509_certificate(chain[0].encode())
        PolicyBuilder().store(Store([newest])).build_client_verifier().verify(leaf, intermediates)

        def both_published() -> bool:
            data = tenant.kube.core.read_namespaced_config_map(CONFIGMAP, tenant.namespace).data[KEY]
            published = {c.fingerprint(hashes.SHA256()) for c in x509.load_pem_x509_certificates(data.encode())}
            return {c.fingerprint(hashes.SHA256()) for c in roots} <= published

        wait_until(both_published, timeout=10, interval=0.2, describe=f"both roots in {CONFIGMAP}")
    finally:
        local.vault_admin().adapter.post(f"/v1/{layout.pki_int_path}/config/issuers",
                                         json={"default": old_intermediate})
        rotation.remove_root(new_root)
