"""The local mesh CA: istio-csr's part between pilot-agent and Vault.

    python -m cluster.local.meshca --config CONFIG.json

It serves Istio's certificate API, ``istio.v1.auth.IstioCertificateService/CreateCertificate``
(the real ca.proto, stubs from cluster/local/caproto.py), over TLS on the node's bridge address,
as istio-csr does (pkg/server/server.go). Each request is authenticated like Istio's kube
authenticator: the ``authorization: Bearer <jwt>`` metadata is TokenReviewed for audience istio-ca,
the CSR must ask for exactly the caller's SPIFFE ID, and it is signed through
``pki_int/sign/<namespace role>`` with the CA's own Kubernetes-auth identity (login, renewal,
new login when refused: meshcasign.py). When Vault refuses it, it answers INTERNAL and
certificates simply run out: fail closed by construction. It also publishes istio-ca-root-cert
(rootcerts.py) and answers readiness on 127.0.0.1 (``GET /readyz``, like istio-csr's
--readiness-probe-path on its own port).
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import ssl
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import httpx

from cluster.local import caproto
from cluster.local.meshcasign import Refused, Signer, root_bundle, unauthenticated
from cluster.local.rootcerts import RootPublisher, api_client
from cluster.secrets import install_record_factory, redact, register

log = logging.getLogger("meshca")
# security.ImpersonatedIdentity (Istio pkg/security/security.go): allowed only with trusted node accounts,
# which istio-csr leaves off by default (--ca-trusted-node-accounts) and so do we.
IMPERSONATED_IDENTITY = "ImpersonatedIdentity"


@dataclass(frozen=True)
class MeshCaConfig:
    listen_host: str  # the node's bridge address: pods reach it, and CA_ADDR names it (an IP SAN of serving_cert)
    listen_port: int  # gRPC over TLS: CA_ADDR = listen_host:listen_port
    health_port: int  # GET http://127.0.0.1:<health_port>/readyz
    serving_cert: str
    serving_key: str
    serving_ca: str  # what issued serving_cert (and istiod's): published in istio-ca-root-cert with the Vault roots
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
    max_cert_duration_s: int  # istio-csr --max-client-certificate-duration
    proto_dir: str  # the generated stubs (caproto.ensure_stubs)
    status_file: str
    cluster_id: str = "Kubernetes"  # istio-csr --cluster-id


class MeshCa:
    """Counts, logs and reports each request; ``signer`` decides, ``publisher`` keeps istio-ca-root-cert."""

    def __init__(self, config: MeshCaConfig, signer: Signer, publisher: RootPublisher) -> None:
        self.config = config
        self.signer = signer
        self.publisher = publisher
        self.serving = False
        self.signed = 0
        self.refused = 0
        self.recent_refusals: collections.deque[str] = collections.deque(maxlen=20)
        self._status_lock = threading.Lock()

    def sign(self, token: str, csr: str, requested_s: int, *, cluster_id: str = "", impersonated: str = "",
             peer: str = "") -> list[str]:
        """The cert_chain for a request, or Refused (counted, logged without the token, in the status)."""
        started = time.monotonic()
        try:
            if not token:
                raise unauthenticated("no bearer token exists in the authorization metadata")
            if impersonated:
                raise unauthenticated("impersonation not allowed: no trusted node accounts are configured")
            identity, chain = self.signer.sign(register(token), csr, requested_s, cluster_id)
        except Refused as refused:
            self.refused += 1
            self.recent_refusals.append(redact(f"{refused.code.name}: {refused.reason}"))
            log.warning("refused %s: %s: %s", peer, refused.code.name, refused.reason)
            raise
        finally:
            self.write_status()
        self.signed += 1
        log.info("signed %s for %s (requested %ss, cap %ss, %d intermediate(s), %.0f ms)", identity, peer,
                 requested_s, self.config.max_cert_duration_s, len(chain) - 2, (time.monotonic() - started) * 1000)
        return chain

    def ready(self) -> dict[str, bool]:
        return {"grpc_serving": self.serving, "roots_published": self.publisher.synced.is_set()}

    def write_status(self) -> None:
        status = {"signed": self.signed, "refused": self.refused, "recent_refusals": list(self.recent_refusals),
                  "address": f"{self.config.listen_host}:{self.config.listen_port}",
                  "configmaps_published": self.publisher.published, "publisher_error": self.publisher.last_error,
                  **self.ready(), **self.signer.vault.status()}
        path = Path(self.config.status_file)
        with self._status_lock:
            path.with_suffix(".new").write_text(json.dumps(status))
            path.with_suffix(".new").rename(path)


class CertificateService:
    """The servicer of istio.v1.auth.IstioCertificateService (istio-csr pkg/server/server.go CreateCertificate)."""

    def __init__(self, ca: MeshCa, proto: caproto.CaProto) -> None:
        self.ca = ca
        self.proto = proto

    def CreateCertificate(self, request: Any, context: grpc.ServicerContext) -> Any:  # the proto's name
        metadata = [(str(key), str(value)) for key, value in context.invocation_metadata()]
        # Istio pkg/security/security.go ExtractBearerToken: the first "Bearer " value of "authorization".
        token = next((v.removeprefix("Bearer ") for k, v in metadata if k == "authorization" and
                      v.startswith("Bearer ")), "")
        # kubeauth/kube_jwt.go ExtractClusterID: exactly one clusterid value counts, several are as none.
        cluster_ids = [v for k, v in metadata if k == "clusterid"]
        fields = request.metadata.fields
        impersonated = fields[IMPERSONATED_IDENTITY].string_value if IMPERSONATED_IDENTITY in fields else ""
        try:
            chain = self.ca.sign(token, request.csr, int(request.validity_duration),
                                 cluster_id=cluster_ids[0] if len(cluster_ids) == 1 else "",
                                 impersonated=impersonated, peer=context.peer())
        except Refused as refused:
            context.abort(refused.code, refused.public)
        return self.proto.pb2.IstioCertificateResponse(cert_chain=chain)


class Readiness(BaseHTTPRequestHandler):
    """GET /readyz on 127.0.0.1: 200 once gRPC serves and istio-ca-root-cert was published everywhere once."""

    ca: MeshCa

    def log_message(self, format: str, *args: Any) -> None:
        pass  # polled ten times a second at start: not worth a log line each

    def do_GET(self) -> None:
        ready = self.ca.ready()
        ok = self.path == "/readyz" and all(ready.values())
        body = json.dumps({**ready, "publisher_error": self.ca.publisher.last_error}).encode()
        self.send_response(200 if ok else 503 if self.path == "/readyz" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _http_server(host: str, port: int, handler: type[BaseHTTPRequestHandler], ca: MeshCa,
                 tls: ssl.SSLContext | None = None) -> ThreadingHTTPServer:
    bound = type(handler.__name__, (handler,), {"ca": ca})
    server = ThreadingHTTPServer((host, port), bound)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, name=handler.__name__, daemon=True).start()
    return server


def serve(config: MeshCaConfig) -> None:
    proto = caproto.load(Path(config.proto_dir))
    signer = Signer(config, httpx.Client(verify=ssl.create_default_context(cafile=config.ca_bundle), timeout=5))
    serving_ca = Path(config.serving_ca).read_text().strip() + "\n"
    # istio-csr publishes its --root-ca-file bundle, the roots that issued both the workload
    # certificates and the serving certificates of istio-csr and istiod. pilot-agent verifies the
    # CA's and istiod's serving certificates with this file (FindRootCAForCA / FindRootCAForXDS in
    # pkg/istio-agent/agent.go), and here both are issued by the run's control-plane CA, not by
    # Vault: so the ConfigMap holds the Vault roots plus that CA. Workload trust (ROOTCA) is the
    # last element of each answer: Vault's roots alone.
    publisher = RootPublisher(api_client(config.apiserver, config.ca_bundle, config.api_token_file),
                              lambda: root_bundle(signer.roots()) + serving_ca)
    ca = MeshCa(config, signer, publisher)
    ca.write_status()
    _http_server("127.0.0.1", config.health_port, Readiness, ca)
    publisher.start()
    # No SO_REUSEPORT: a port still held by another process must fail here, not share the traffic.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="grpc"),
                         options=[("grpc.so_reuseport", 0)])
    proto.grpc.add_IstioCertificateServiceServicer_to_server(CertificateService(ca, proto), server)
    credentials = grpc.ssl_server_credentials(
        [(Path(config.serving_key).read_bytes(), Path(config.serving_cert).read_bytes())])
    address = f"{config.listen_host}:{config.listen_port}"
    try:
        server.add_secure_port(address, credentials)
    except RuntimeError as err:
        raise SystemExit(f"mesh CA: cannot listen on {address}: {err}") from None
    server.start()
    ca.serving = True
    ca.write_status()
    log.info("serving %s on %s (TLS); readiness on 127.0.0.1:%s/readyz", caproto.SERVICE, address,
             config.health_port)
    server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description="trustgrid local mesh CA")
    parser.add_argument("--config", required=True)
    args = parser.parse_args()
    install_record_factory()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s meshca %(levelname)s %(message)s")
    for chatty in ("httpx", "httpcore", "urllib3", "kubernetes"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    serve(MeshCaConfig(**json.loads(Path(args.config).read_text())))


if __name__ == "__main__":
    main()
