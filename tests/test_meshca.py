"""The local mesh CA's decisions, without a network: istio-csr's rules on made-up certificates.

Fakes only here: a throwaway PKI (two roots, an intermediate), hand-made TokenReview answers,
and a fake gRPC context. The live counterpart is suites/platform/test_mesh_ca.py.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes.client import ApiClient

from cluster.local import caproto
from cluster.local.meshca import CertificateService, MeshCa, MeshCaConfig
from cluster.local.meshcasign import (
    AUTH_FAILURE,
    Caller,
    Refused,
    caller_from_review,
    check_csr,
    root_bundle,
    shape_chain,
    validity_seconds,
)
from cluster.local.rootcerts import KEY, LABEL, RootPublisher, wanted
from cluster.runstate import cache_dir
from cluster.secrets import REDACTED, install_record_factory
from cluster.versions import load_pins

ME = "spiffe://cluster.local/ns/shop/sa/app"
NOW = dt.datetime.now(dt.UTC)


@dataclass
class Authority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()


def _authority(name: str, parent: Authority | None = None) -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject)
            .issuer_name(parent.cert.subject if parent else subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(NOW - dt.timedelta(minutes=1))
            .not_valid_after(NOW + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(parent.key if parent else key, hashes.SHA256()))
    return Authority(cert, key)


def _leaf(issuer: Authority, *, usages: Sequence[x509.ObjectIdentifier] = (
        ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(issuer.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(minutes=1)).not_valid_after(NOW + dt.timedelta(minutes=5))
            .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(ME)]), critical=True)
            .sign(issuer.key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="module")
def pki() -> dict[str, Authority]:
    root = _authority("root 1")
    return {"root": root, "root2": _authority("root 2"), "inter": _authority("intermediate", root)}


def _csr(*names: x509.GeneralName, cn: str | None = None, extensions: Sequence[x509.ExtensionType] = ()) -> str:
    """A CSR as pilot-agent makes one (empty subject, a URI SAN), or with what the test adds."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else [])
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=True)
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def _usage(**on: bool) -> x509.KeyUsage:
    flags = dict.fromkeys(("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                           "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"), False)
    return x509.KeyUsage(**{**flags, **on})


# -- the TokenReview answer ------------------------------------------------------

REVIEWED: dict[str, Any] = {"authenticated": True, "audiences": ["istio-ca"],
            "user": {"username": "system:serviceaccount:shop:app",
                     "groups": ["system:serviceaccounts", "system:serviceaccounts:shop", "system:authenticated"]}}


def test_a_reviewed_service_account_is_its_spiffe_id() -> None:
    assert caller_from_review(REVIEWED, "cluster.local") == Caller("shop", "app", ME)
    assert caller_from_review(REVIEWED, "example.org").identity == "spiffe://example.org/ns/shop/sa/app"


@pytest.mark.parametrize("status", [
    {**REVIEWED, "authenticated": False},
    {**REVIEWED, "error": "[invalid bearer token, token audiences [\"vault\"] is invalid for the target audiences]"},
    {**REVIEWED, "user": {**REVIEWED["user"], "groups": ["system:authenticated"]}},  # a user, not an account
    {**REVIEWED, "user": {**REVIEWED["user"], "username": "system:serviceaccount:shop"}},
    {},
])
def test_a_review_that_is_not_a_service_account_is_unauthenticated(status: dict[str, Any]) -> None:
    with pytest.raises(Refused) as refused:
        caller_from_review(status, "cluster.local")
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert refused.value.public == AUTH_FAILURE  # istio-csr tells the caller nothing more


# -- the CSR -----------------------------------------------------------------------

def test_a_csr_for_exactly_the_callers_identity_passes() -> None:
    check_csr(_csr(x509.UniformResourceIdentifier(ME)), ME)
    allowed = (_usage(digital_signature=True, key_encipherment=True),
               x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]))
    check_csr(_csr(x509.UniformResourceIdentifier(ME), extensions=allowed), ME)


@pytest.mark.parametrize(("csr", "reason"), [
    (lambda: _csr(x509.UniformResourceIdentifier("spiffe://cluster.local/ns/other/sa/app")), "match URIs"),
    (lambda: _csr(x509.UniformResourceIdentifier(ME), x509.UniformResourceIdentifier(ME + "2")), "match URIs"),
    (_csr, "match URIs"),
    (lambda: _csr(x509.UniformResourceIdentifier(ME), x509.DNSName("app.shop.svc")), "non URI SANs"),
    (lambda: _csr(x509.UniformResourceIdentifier(ME), cn="app"), "common name"),
    (lambda: _csr(x509.UniformResourceIdentifier(ME), extensions=[_usage(key_cert_sign=True)]), "key usage"),
    (lambda: _csr(x509.UniformResourceIdentifier(ME), extensions=[
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING])]), "extended key usage"),
    (lambda: _csr(x509.UniformResourceIdentifier(ME), extensions=[
        x509.BasicConstraints(ca=True, path_length=None)]), "forbidden extension"),
    (lambda: "-----BEGIN CERTIFICATE REQUEST-----\nnot a csr\n-----END CERTIFICATE REQUEST-----\n", "decode"),
])
def test_a_csr_istio_csr_would_refuse_is_unauthenticated(csr: Any, reason: str) -> None:
    with pytest.raises(Refused) as refused:
        check_csr(csr(), ME)
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert reason in refused.value.reason


# -- the duration ----------------------------------------------------------------------

@pytest.mark.parametrize(("requested", "cap", "granted"), [
    (86400, 30, 30),  # pilot-agent's default SECRET_TTL (24h) is cut to the cap
    (20, 30, 20),
    (30, 30, 30),
    (0, 30, 30),  # no duration asked: the cap, as istiod's CA gives its default
    (-5, 30, 30),
])
def test_the_validity_is_the_request_up_to_the_cap(requested: int, cap: int, granted: int) -> None:
    assert validity_seconds(requested, cap) == granted


# -- the chain -----------------------------------------------------------------------

def _count(pem: str) -> int:
    return pem.count("BEGIN CERTIFICATE")


def test_the_chain_is_leaf_intermediates_and_the_root_bundle_last(pki: dict[str, Authority]) -> None:
    leaf = _leaf(pki["inter"])
    # Vault's ca_chain carries the intermediate and its (self-signed) root: the root is dropped there.
    chain = shape_chain(leaf, [pki["inter"].pem, pki["root"].pem], [pki["root"].pem])
    assert chain[0] == leaf
    assert chain[1] == pki["inter"].pem
    assert chain[2] == pki["root"].pem
    assert len(chain) == 3


def test_during_a_root_rotation_both_roots_are_the_one_last_element(pki: dict[str, Authority]) -> None:
    roots = [pki["root"].pem, pki["root2"].pem]
    chain = shape_chain(_leaf(pki["inter"]), [pki["inter"].pem], roots)
    assert len(chain) == 3
    assert _count(chain[-1]) == 2
    assert chain[-1] == root_bundle(roots) == pki["root"].pem + pki["root2"].pem
    assert root_bundle([*roots, pki["root"].pem]) == chain[-1], "a root listed twice is there once"


def test_a_chain_given_in_a_single_string_and_out_of_order_is_sorted(pki: dict[str, Authority]) -> None:
    root = pki["root"]
    inter2 = _authority("intermediate 2", pki["inter"])
    chain = shape_chain(_leaf(inter2), [root.pem + pki["inter"].pem + inter2.pem], [root.pem])
    assert chain[1:3] == [inter2.pem, pki["inter"].pem]


def test_a_leaf_that_leads_to_no_current_root_is_not_answered(pki: dict[str, Authority]) -> None:
    with pytest.raises(ValueError, match="leads to none"):
        shape_chain(_leaf(pki["inter"]), [pki["inter"].pem], [pki["root2"].pem])
    with pytest.raises(ValueError, match="leads to none"):
        shape_chain(_leaf(pki["inter"]), [], [pki["root"].pem])  # the intermediate is missing


def test_a_leaf_not_for_client_and_server_auth_is_not_answered(pki: dict[str, Authority]) -> None:
    with pytest.raises(ValueError, match="client and server"):
        shape_chain(_leaf(pki["inter"], usages=[ExtendedKeyUsageOID.SERVER_AUTH]), [pki["inter"].pem],
                    [pki["root"].pem])


# -- istio-ca-root-cert ----------------------------------------------------------------

def test_the_configmap_is_made_and_corrected_as_istio_csr_does() -> None:
    assert wanted(None, "B") == {"labels": {LABEL: "true"}, "data": {KEY: "B"}}
    assert wanted({"data": {KEY: "B"}, "labels": {LABEL: "true", "x": "y"}}, "B") is None
    assert wanted({"data": {KEY: "A"}, "labels": {"x": "y"}}, "B") == {"labels": {"x": "y", LABEL: "true"},
                                                                      "data": {KEY: "B"}}
    # Any other key is dropped (istio-csr configmap.go Reconcile).
    assert wanted({"data": {KEY: "B", "extra": "1"}, "labels": {LABEL: "true"}}, "B") == {
        "labels": {LABEL: "true"}, "data": {KEY: "B"}}


def test_while_vault_cannot_be_read_the_last_roots_are_published() -> None:
    answers: list[str | Exception] = [OSError("sealed"), "R1", OSError("sealed"), "R2"]

    def bundle() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    publisher = RootPublisher(ApiClient(), bundle)
    with pytest.raises(OSError):
        publisher.current()  # nothing read yet: nothing to publish
    assert [publisher.current(), publisher.current(), publisher.current()] == ["R1", "R1", "R2"]


# -- the gRPC handler over a fake context -------------------------------------------------

@pytest.fixture(scope="module")
def proto() -> caproto.CaProto:
    return caproto.load(caproto.ensure_stubs(cache_dir(), load_pins()))


def test_the_stubs_are_istios_certificate_api(proto: caproto.CaProto) -> None:
    service = proto.pb2.DESCRIPTOR.services_by_name["IstioCertificateService"]
    assert service.full_name == caproto.SERVICE == "istio.v1.auth.IstioCertificateService"
    assert [m.name for m in service.methods] == ["CreateCertificate"]
    request = proto.pb2.IstioCertificateRequest.DESCRIPTOR.fields_by_name
    assert (request["csr"].number, request["validity_duration"].number, request["metadata"].number) == (1, 3, 4)
    assert proto.pb2.IstioCertificateResponse.DESCRIPTOR.fields_by_name["cert_chain"].number == 1


class Aborted(Exception):
    pass


@dataclass
class FakeContext:
    metadata: list[tuple[str, str]]
    aborted: tuple[grpc.StatusCode, str] | None = None

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return self.metadata

    def peer(self) -> str:
        return "ipv4:10.0.0.5:41000"

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = (code, details)
        raise Aborted


@dataclass
class FakeCa:
    """MeshCa.sign's contract: what the handler passes on, and a refusal when told."""

    refuse: Refused | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)

    def sign(self, token: str, csr: str, requested_s: int, **kwargs: str) -> list[str]:
        self.calls.append({"token": token, "csr": csr, "requested_s": requested_s, **kwargs})
        if self.refuse:
            raise self.refuse
        return ["leaf", "inter", "roots"]


def _call(proto: caproto.CaProto, ca: FakeCa, metadata: list[tuple[str, str]], **fields: str) -> FakeContext:
    request = proto.pb2.IstioCertificateRequest(csr="CSR", validity_duration=86400)
    for key, value in fields.items():
        request.metadata.fields[key].string_value = value
    context = FakeContext(metadata)
    service = CertificateService(cast(Any, ca), proto)
    try:
        answer = service.CreateCertificate(request, cast(Any, context))
    except Aborted:
        return context
    assert list(answer.cert_chain) == ["leaf", "inter", "roots"]
    return context


def test_the_handler_passes_on_the_bearer_token_cluster_and_duration(proto: caproto.CaProto) -> None:
    ca = FakeCa()
    context = _call(proto, ca, [("authorization", "Basic x"), ("authorization", "Bearer JWT"),
                                ("clusterid", "Kubernetes"), ("user-agent", "grpc-go")], CertSigner="")
    assert context.aborted is None
    assert ca.calls == [{"token": "JWT", "csr": "CSR", "requested_s": 86400, "cluster_id": "Kubernetes",
                         "impersonated": "", "peer": "ipv4:10.0.0.5:41000"}]


def test_the_handler_answers_a_refusal_with_its_code(proto: caproto.CaProto) -> None:
    ca = FakeCa(refuse=Refused(grpc.StatusCode.UNAUTHENTICATED, AUTH_FAILURE, "why"))
    context = _call(proto, ca, [], ImpersonatedIdentity="spiffe://cluster.local/ns/x/sa/y")
    assert context.aborted == (grpc.StatusCode.UNAUTHENTICATED, AUTH_FAILURE)
    assert ca.calls[0]["token"] == ""
    assert ca.calls[0]["impersonated"] == "spiffe://cluster.local/ns/x/sa/y"


class RefusingSigner:
    """Signer's contract for MeshCa.sign: refuses, naming the token in its reason (as a careless one would)."""

    def __init__(self) -> None:
        self.vault = self

    def status(self) -> dict[str, Any]:
        return {"vault_accessor": ""}

    def sign(self, token: str, *_: Any) -> tuple[str, list[str]]:
        raise Refused(grpc.StatusCode.UNAUTHENTICATED, AUTH_FAILURE, f"the token {token} is not authenticated")


class IdlePublisher:
    published = 0
    last_error = ""
    synced = threading.Event()


def _config(tmp_path: Path) -> MeshCaConfig:
    return MeshCaConfig(
        listen_host="10.0.0.1", listen_port=1, health_port=2, serving_cert="", serving_key="", serving_ca="",
        ca_bundle="", apiserver="", api_token_file="", vault_addr="", vault_token_file="", vault_auth_path="",
        vault_role="", pki_int_path="", pki_root_path="", trust_domain="cluster.local", max_cert_duration_s=30,
        proto_dir="", status_file=str(tmp_path / "status.json"))


def test_a_refusal_is_counted_and_reported_without_the_token(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    install_record_factory()
    ca = MeshCa(_config(tmp_path), cast(Any, RefusingSigner()), cast(Any, IdlePublisher()))
    token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
    with caplog.at_level(logging.WARNING, logger="meshca"), pytest.raises(Refused):
        ca.sign(token, "CSR", 0, peer="ipv4:10.0.0.5:41000")
    with pytest.raises(Refused, match="no bearer token"):
        ca.sign("", "CSR", 0)
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["refused"] == 2
    assert status["signed"] == 0
    assert token not in caplog.text
    assert REDACTED in caplog.text
    assert token not in json.dumps(status)
    assert status["recent_refusals"][-1] == "UNAUTHENTICATED: no bearer token exists in the authorization metadata"
