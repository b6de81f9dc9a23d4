"""The local mesh CA: plays istio-csr's part between the sidecars and Vault.

    python -m cluster.local.meshca --config CONFIG.json

It authenticates each CSR by TokenReview (audience istio-ca), checks that
the CSR asks for exactly the caller's SPIFFE ID, and signs it through
``pki_int/sign/<namespace role>`` with its own Vault identity: Kubernetes
auth as istio-system/mesh-ca, a short token TTL, renewal, and a new login
when renewal is refused. When Vault refuses it, it answers 503 and
certificates simply run out: fail closed by construction.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import ssl
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509

from cluster.secrets import install_record_factory, register

log = logging.getLogger("meshca")
CSR_AUDIENCE = "istio-ca"


@dataclass(frozen=True)
class MeshCaConfig:
    listen_host: str
    listen_port: int
    serving_cert: str
    serving_key: str
    ca_bundle: str  # trusts the API server's and Vault's serving certificates
    apiserver: str
    api_token_file: str
    vault_addr: str
    vault_token_file: str
    vault_auth_path: str
    vault_role: str
    pki_int_path: str
    pki_root_path: str
    trust_domain: str
    status_file: str


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
        jwt = Path(self.config.vault_token_file).read_text().strip()
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


class SignError(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


class MeshCa:
    def __init__(self, config: MeshCaConfig) -> None:
        self.config = config
        self.http = httpx.Client(verify=ssl.create_default_context(cafile=config.ca_bundle), timeout=5)
        self.vault = VaultIdentity(config, self.http)
        self.signed = 0
        self.refused = 0

    def review(self, token: str) -> tuple[str, str]:
        """TokenReview the caller's token; returns (namespace, service account)."""
        api_token = Path(self.config.api_token_file).read_text().strip()
        response = self.http.post(
            f"{self.config.apiserver}/apis/authentication.k8s.io/v1/tokenreviews",
            headers={"Authorization": f"Bearer {api_token}"},
            json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                  "spec": {"token": token, "audiences": [CSR_AUDIENCE]}},
        )
        if response.status_code != 201:
            raise SignError(503, f"TokenReview failed with HTTP {response.status_code}")
        status = response.json().get("status") or {}
        username = (status.get("user") or {}).get("username", "")
        if not status.get("authenticated") or not username.startswith("system:serviceaccount:"):
            raise SignError(401, f"token not authenticated: {status.get('error', 'no error given')}")
        _, _, namespace, service_account = username.split(":", 3)
        return namespace, service_account

    def sign(self, token: str, csr_pem: str) -> dict[str, list[str]]:
        namespace, service_account = self.review(token)
        expected = f"spiffe://{self.config.trust_domain}/ns/{namespace}/sa/{service_account}"
        try:
            csr = x509.load_pem_x509_csr(csr_pem.encode())
            sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
        except (ValueError, x509.ExtensionNotFound):
            raise SignError(400, "the CSR must carry exactly one SPIFFE URI SAN") from None
        if uris != [expected]:
            raise SignError(403, f"the CSR asks for {uris}, the caller is {expected}")
        for attempt in range(2):
            try:
                vault_token = self.vault.token()
            except (PermissionError, httpx.HTTPError, OSError) as err:
                raise SignError(503, f"mesh CA has no Vault access: {err}") from None
            response = self.http.post(
                f"{self.config.vault_addr}/v1/{self.config.pki_int_path}/sign/{namespace}",
                headers={"X-Vault-Token": vault_token}, json={"csr": csr_pem},
            )
            if response.status_code != 403 or attempt:
                break
            self.vault.note_error(f"Vault answered 403 to the CA's token: {response.text.strip()[:200]}")
            self.vault.forget()  # a revoked or expired token: log in once more, then give up
        body = response.json() if response.content else {}
        if response.status_code != 200:
            raise SignError(503, f"Vault refused to sign ({response.status_code}): {'; '.join(body.get('errors', []))}")
        data = body["data"]
        roots = self.roots()
        chain = [data["certificate"], *[c for c in data.get("ca_chain", []) if c.strip() not in roots]]
        return {"cert_chain": chain, "roots": roots}

    def roots(self) -> list[str]:
        """The trust bundle: every issuer of the root mount (two while a root rotation overlaps).

        Read through the unauthenticated issuer endpoints, as istio-csr reads a
        root bundle it is given: the bundle must not depend on the CA's token.
        """
        base = f"{self.config.vault_addr}/v1/{self.config.pki_root_path}"
        listed = self.http.request("LIST", f"{base}/issuers")
        if listed.status_code != 200:
            raise SignError(503, f"cannot list the root issuers in Vault ({listed.status_code})")
        roots = []
        for issuer_id in listed.json()["data"]["keys"]:
            response = self.http.get(f"{base}/issuer/{issuer_id}/pem")
            if response.status_code == 200:
                roots.append(response.text.strip())
        if not roots:
            raise SignError(503, "Vault has no root issuer")
        return roots

    def write_status(self) -> None:
        status = {"signed": self.signed, "refused": self.refused, **self.vault.status()}
        path = Path(self.config.status_file)
        path.with_suffix(".new").write_text(json.dumps(status))
        path.with_suffix(".new").rename(path)


def make_handler(ca: MeshCa) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            log.info("%s %s", self.address_string(), format % args)

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/healthz":
                self._answer(200, {"ok": True})
            else:
                self._answer(404, {"error": "not found"})

        def do_POST(self) -> None:
            if self.path != "/v1/sign":
                self._answer(404, {"error": "not found"})
                return
            auth = self.headers.get("Authorization", "")
            length = int(self.headers.get("Content-Length", "0"))
            try:
                request = json.loads(self.rfile.read(length) or b"{}")
                if not auth.startswith("Bearer "):
                    raise SignError(401, "no bearer token")
                answer = ca.sign(register(auth.removeprefix("Bearer ").strip()), str(request.get("csr", "")))
            except SignError as err:
                ca.refused += 1
                log.warning("refused: %s", err)
                self._answer(err.status, {"error": str(err)})
            except (ValueError, httpx.HTTPError) as err:
                ca.refused += 1
                log.warning("failed: %s", err)
                self._answer(503, {"error": str(err)})
            else:
                ca.signed += 1
                self._answer(200, answer)
            ca.write_status()

    return Handler


def serve(config: MeshCaConfig) -> None:
    ca = MeshCa(config)
    server = ThreadingHTTPServer((config.listen_host, config.listen_port), make_handler(ca))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.serving_cert, config.serving_key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    ca.write_status()
    log.info("mesh CA listening on %s:%s", config.listen_host, config.listen_port)
    server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description="trustgrid local mesh CA")
    parser.add_argument("--config", required=True)
    args = parser.parse_args()
    install_record_factory()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s meshca %(levelname)s %(message)s")
    serve(MeshCaConfig(**json.loads(Path(args.config).read_text())))


if __name__ == "__main__":
    main()
