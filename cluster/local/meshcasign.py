"""What the mesh CA decides for each certificate request, and how it signs through Vault.

The rules are istio-csr's (cert-manager/istio-csr v0.17.0) and the Istio code it calls; each
function names the source it follows. The pure parts (identity from a TokenReview, the CSR
checks, the duration cap, the shape of the chain) take no network and are unit-tested in
tests/test_meshca.py; ``Signer`` and ``VaultIdentity`` do the TokenReview and the Vault calls.
"""

from __future__ import annotations

import collections
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import grpc
import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from cluster.secrets import register

if TYPE_CHECKING:
    from cluster.local.meshca import MeshCaConfig

# Istio's TOKEN_AUDIENCES default (pkg/security/security.go), which istio-csr's kube authenticator uses.
CSR_AUDIENCE = "istio-ca"
# istio-csr --cluster-id default; kubeauth/kube_jwt.go getKubeClient accepts it or no clusterid at all.
CLUSTER_ID = "Kubernetes"
# istio-csr answers every authentication or CSR failure with this one opaque message
# (pkg/server/server.go CreateCertificate); the reason goes to the log only.
AUTH_FAILURE = "request authenticate failure"
SIGN_FAILURE = "failed to sign certificate request"
VERIFY_FAILURE = "failed to parse and verify signed certificate from issuer"
ALLOWED_EXTENSIONS = {ExtensionOID.SUBJECT_ALTERNATIVE_NAME, ExtensionOID.KEY_USAGE, ExtensionOID.EXTENDED_KEY_USAGE}
ALLOWED_KEY_USAGES = {"digital_signature", "key_encipherment"}
KEY_USAGES = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
              "key_cert_sign", "crl_sign")
ALLOWED_EXT_KEY_USAGES = {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH}


class Refused(Exception):
    """A request the CA refuses: ``code`` and ``public`` go to the caller, ``reason`` to the log."""

    def __init__(self, code: grpc.StatusCode, public: str, reason: str) -> None:
        self.code = code
        self.public = public
        self.reason = reason
        super().__init__(reason)


def unauthenticated(reason: str) -> Refused:
    return Refused(grpc.StatusCode.UNAUTHENTICATED, AUTH_FAILURE, reason)


class Caller(NamedTuple):
    namespace: str
    service_account: str
    identity: str  # spiffe://<trust domain>/ns/<namespace>/sa/<service account>


# -- pure rules --------------------------------------------------------------

def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    """Istio's pkg/spiffe/spiffe.go genSpiffeURI."""
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


def caller_from_review(status: dict[str, Any], trust_domain: str) -> Caller:
    """The caller from a TokenReview status, or Refused.

    Istio security/pkg/k8s/tokenreview/k8sauthn.go getTokenReviewResult: no error, authenticated,
    in group system:serviceaccounts, username system:serviceaccount:<ns>:<sa>. The audience is the
    API server's to check (the review asked for istio-ca only); kube_jwt.go then requires both parts.
    """
    if status.get("error"):
        raise unauthenticated(f"the service account authentication returns an error: {status['error']}")
    if not status.get("authenticated"):
        raise unauthenticated("the token is not authenticated")
    user = status.get("user") or {}
    if "system:serviceaccounts" not in (user.get("groups") or []):
        raise unauthenticated("the token is not a service account")
    parts = str(user.get("username", "")).split(":")
    if len(parts) != 4 or not parts[2] or not parts[3]:
        raise unauthenticated("invalid username field in the token review result")
    return Caller(parts[2], parts[3], spiffe_id(trust_domain, parts[2], parts[3]))


def check_csr(csr_pem: str, identity: str) -> x509.CertificateSigningRequest:
    """istio-csr pkg/server/auth.go authRequest and internal/extensions/extensions.go ValidateCSRExtentions.

    The signature must verify; no common name, DNS, IP or e-mail names; only the SAN (URI names only),
    key usage (digitalSignature, keyEncipherment) and extended key usage (client/server auth)
    extensions; and the URI SANs must be exactly the caller's identity (identitiesMatch).
    """
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
    except ValueError as err:
        raise unauthenticated(f"failed to decode CSR: {err}") from None
    if not csr.is_signature_valid:
        raise unauthenticated("CSR failed signature check")
    if csr.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME):
        raise unauthenticated("forbidden extensions: the CSR has a common name")
    uris: list[str] = []
    for extension in csr.extensions:
        value = extension.value
        if extension.oid not in ALLOWED_EXTENSIONS:
            raise unauthenticated(f"forbidden extension: {extension.oid.dotted_string}")
        if isinstance(value, x509.SubjectAlternativeName):
            others = [name for name in value if not isinstance(name, x509.UniformResourceIdentifier)]
            if others:
                raise unauthenticated(f"forbidden extensions: non URI SANs {[str(n.value) for n in others]}")
            uris = value.get_values_for_type(x509.UniformResourceIdentifier)
        elif isinstance(value, x509.KeyUsage):
            used = {name for name in KEY_USAGES if getattr(value, name)}
            if used - ALLOWED_KEY_USAGES:
                raise unauthenticated(f"forbidden key usage: {sorted(used)}")
        elif isinstance(value, x509.ExtendedKeyUsage) and set(value) - ALLOWED_EXT_KEY_USAGES:
            raise unauthenticated(f"forbidden extended key usage: {[u.dotted_string for u in value]}")
    if sorted(uris) != [identity]:
        raise unauthenticated(f"failed to match URIs with identities: [{identity}] != {uris}")
    return csr


def validity_seconds(requested: int, cap: int) -> int:
    """istio-csr: min(requested validity_duration, --max-client-certificate-duration).

    A request without a duration (0 or less) gets the cap, as istiod's CA gives its default TTL then
    (security/pkg/pki/ca/ca.go); istio-csr would pass 0 on to cert-manager.
    """
    return cap if requested <= 0 else min(requested, cap)


def _load_all(pems: list[str]) -> list[x509.Certificate]:
    return [cert for pem in pems for cert in x509.load_pem_x509_certificates(pem.encode())]


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _issued_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    if child.issuer != parent.subject:
        return False
    try:
        child.verify_directly_issued_by(parent)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def root_bundle(roots: list[str]) -> str:
    """Several roots as ONE PEM string (each once): the last element of cert_chain and istio-ca-root-cert."""
    unique = {cert.fingerprint(hashes.SHA256()): cert for cert in _load_all(roots)}
    return "".join(_pem(cert) for cert in unique.values())


def shape_chain(leaf_pem: str, ca_chain: list[str], roots: list[str]) -> list[str]:
    """[leaf, intermediates..., the whole root bundle as ONE element], verified against the roots.

    istio-csr pkg/server/server.go parseCertificateBundle: self-signed certificates are dropped
    from what the issuer returned (cert-manager pkg/util/pki ParseSingleCertificateChainPEM), the
    leaf must verify up to one of the current roots for client and server auth, and the roots are
    appended as one string. Istio's own CA answers the same shape (security/pkg/server/ca/server.go:
    "we do not want to flatten the root cert"); pilot-agent takes the last element as ROOTCA.
    Raises ValueError when the chain does not lead to a root.
    """
    leaf = x509.load_pem_x509_certificate(leaf_pem.encode())
    pool = [cert for cert in _load_all(ca_chain) if not _issued_by(cert, cert)]
    anchors = _load_all(roots)
    if not anchors:
        raise ValueError("no root certificate to verify against")
    try:
        usages = set(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        usages = set()
    if not usages >= ALLOWED_EXT_KEY_USAGES:
        raise ValueError("the signed certificate is not for both client and server auth")
    path: list[x509.Certificate] = []
    current = leaf
    while not any(_issued_by(current, root) for root in anchors):
        parent = next((cert for cert in pool if cert not in path and _issued_by(current, cert)), None)
        if parent is None:
            raise ValueError(f"the chain of {leaf.subject.rfc4514_string() or 'the leaf'} leads to none of "
                             f"{len(anchors)} root(s) (issuer {current.issuer.rfc4514_string()})")
        path.append(parent)
        current = parent
    return [_pem(leaf), *(_pem(cert) for cert in path), root_bundle(roots)]


# -- Vault and the API server -------------------------------------------------

class VaultIdentity:
    """The CA's own Vault token: login, renew at 2/3 of the lease, login again when refused."""

    def __init__(self, config: MeshCaConfig, http: httpx.Client) -> None:
        self.config = config
        self.http = http
        self._lock = threading.Lock()
        self._token = ""
        self._expires = 0.0
        self._renew_at = 0.0
        self.last_error = ""
        self.logins = 0
        self.renewals = 0
        self.accessor = ""
        self.recent_errors: collections.deque[str] = collections.deque(maxlen=6)

    def note_error(self, message: str) -> None:
        self.last_error = message
        self.recent_errors.append(message)

    def _login(self) -> None:
        jwt = register(Path(self.config.vault_token_file).read_text().strip())
        response = self.http.post(f"{self.config.vault_addr}/v1/auth/{self.config.vault_auth_path}/login",
                                  json={"role": self.config.vault_role, "jwt": jwt})
        self._take(response, "login of the CA")
        self.logins += 1

    def _renew(self) -> None:
        response = self.http.post(f"{self.config.vault_addr}/v1/auth/token/renew-self",
                                  headers={"X-Vault-Token": self._token}, json={})
        self._take(response, "renewal of the CA's token")
        self.renewals += 1

    def _take(self, response: httpx.Response, what: str) -> None:
        body = response.json() if response.content else {}
        auth = body.get("auth") or {}
        if response.status_code != 200 or not auth.get("client_token"):
            errors = "; ".join(body.get("errors") or [f"HTTP {response.status_code}"])
            raise PermissionError(f"Vault {what} refused ({response.status_code}): {errors}")
        lease = float(auth.get("lease_duration") or 0)
        now = time.monotonic()
        self._token = register(str(auth["client_token"]))
        self.accessor = str(auth.get("accessor") or "")
        self._expires = now + lease
        self._renew_at = now + lease * 2 / 3

    def token(self) -> str:
        with self._lock:
            now = time.monotonic()
            try:
                if not self._token or now >= self._expires:
                    self._login()
                elif now >= self._renew_at:
                    try:
                        self._renew()
                    except (PermissionError, httpx.HTTPError) as err:
                        self.note_error(str(err))
                        self._login()
                    # A lease that renewal could not extend (max TTL) is replaced early.
                    if self._expires - time.monotonic() < 2:
                        self._login()
                self.last_error = ""
            except (PermissionError, httpx.HTTPError, OSError) as err:
                self._token = ""
                self.note_error(str(err))
                raise
            return self._token

    def forget(self) -> None:
        """Drop a token that Vault refused (revoked, expired): the next use logs in again."""
        with self._lock:
            self._token = ""

    def status(self) -> dict[str, Any]:
        return {"vault_logins": self.logins, "vault_renewals": self.renewals,
                "vault_token_valid_s": max(0.0, self._expires - time.monotonic()) if self._token else 0.0,
                "vault_last_error": self.last_error, "vault_recent_errors": list(self.recent_errors),
                "vault_accessor": self.accessor}


class Signer:
    """TokenReview the caller, check its CSR, sign through ``pki_int/sign/<namespace role>``."""

    def __init__(self, config: MeshCaConfig, http: httpx.Client) -> None:
        self.config = config
        self.http = http
        self.vault = VaultIdentity(config, http)
        self._roots_lock = threading.Lock()
        self._pem_by_issuer: dict[str, str] = {}

    def review(self, token: str, cluster_id: str = "") -> Caller:
        """The caller (Istio kubeauth/kube_jwt.go authenticate), reviewed with the CA's own API token."""
        if cluster_id not in ("", self.config.cluster_id):
            raise unauthenticated(f"client claims to be in cluster {cluster_id!r}, but we only know about local "
                                  f"cluster {self.config.cluster_id!r}")
        try:
            api_token = register(Path(self.config.api_token_file).read_text().strip())
            response = self.http.post(
                f"{self.config.apiserver}/apis/authentication.k8s.io/v1/tokenreviews",
                headers={"Authorization": f"Bearer {api_token}"},
                json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                      "spec": {"token": token, "audiences": [CSR_AUDIENCE]}},
            )
        except (httpx.HTTPError, OSError) as err:  # istio-csr: any authenticator error is Unauthenticated
            raise unauthenticated(f"TokenReview failed: {err}") from None
        if response.status_code != 201:
            raise unauthenticated(f"TokenReview failed with HTTP {response.status_code}: {response.text[:200]}")
        return caller_from_review(response.json().get("status") or {}, self.config.trust_domain)

    def roots(self) -> list[str]:
        """Every issuer of the root mount (two while a root rotation overlaps), read unauthenticated.

        As istio-csr reads the --root-ca-file it is given: the bundle must not depend on the CA's token.
        The list is read at every call, so a removed root leaves the very next answer; an issuer's
        certificate never changes under its id, so each is fetched once.
        """
        base = f"{self.config.vault_addr}/v1/{self.config.pki_root_path}"
        listed = self.http.request("LIST", f"{base}/issuers")
        if listed.status_code != 200:
            raise OSError(f"cannot list the root issuers in Vault ({listed.status_code})")
        roots = []
        for issuer_id in listed.json()["data"]["keys"]:
            with self._roots_lock:
                pem = self._pem_by_issuer.get(issuer_id)
            if pem is None:
                response = self.http.get(f"{base}/issuer/{issuer_id}/pem")
                if response.status_code != 200:
                    continue  # removed between the list and the read
                pem = response.text.strip() + "\n"
                with self._roots_lock:
                    self._pem_by_issuer[issuer_id] = pem
            roots.append(pem)
        if not roots:
            raise OSError("Vault has no root issuer")
        return roots

    def sign(self, token: str, csr_pem: str, requested_s: int, cluster_id: str = "") -> tuple[str, list[str]]:
        """(identity, cert_chain) for a request, or Refused with istio-csr's code."""
        caller = self.review(token, cluster_id)
        check_csr(csr_pem, caller.identity)
        ttl = validity_seconds(requested_s, self.config.max_cert_duration_s)
        response: httpx.Response | None = None
        for attempt in range(2):
            try:
                vault_token = self.vault.token()
                response = self.http.post(
                    f"{self.config.vault_addr}/v1/{self.config.pki_int_path}/sign/{caller.namespace}",
                    headers={"X-Vault-Token": vault_token}, json={"csr": csr_pem, "ttl": f"{ttl}s"},
                )
            except (PermissionError, httpx.HTTPError, OSError) as err:
                raise Refused(grpc.StatusCode.INTERNAL, SIGN_FAILURE, f"mesh CA has no Vault access: {err}") from None
            if response.status_code != 403 or attempt:
                break
            self.vault.note_error(f"Vault answered 403 to the CA's token: {response.text.strip()[:200]}")
            self.vault.forget()  # a revoked or expired token: log in once more, then give up
        assert response is not None
        body = response.json() if response.content else {}
        if response.status_code != 200:
            raise Refused(grpc.StatusCode.INTERNAL, SIGN_FAILURE,
                          f"Vault refused to sign ({response.status_code}): {'; '.join(body.get('errors', []))}")
        data = body["data"]
        try:
            chain = shape_chain(data["certificate"], data.get("ca_chain") or [], self.roots())
        except (ValueError, OSError, httpx.HTTPError) as err:
            raise Refused(grpc.StatusCode.INTERNAL, VERIFY_FAILURE, str(err)) from None
        return caller.identity, chain
