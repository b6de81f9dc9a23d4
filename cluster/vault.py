"""Vault/OpenBao configuration shared by every platform, written with hvac.

Every step is idempotent (safe to run against a Vault that is already set
up, which is what --reuse-cluster and the kubeconfig platform need) and
uses only API paths that OpenBao and HashiCorp Vault share. Mount
descriptions carry the run id so that a reaper can tell ours apart.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import hvac
from hvac.exceptions import InvalidRequest

from cluster.errors import VaultSetupError
from cluster.pkitools import ca_csr_and_key
from cluster.profile import Setup, spiffe_pattern
from cluster.secrets import register
from cluster.vaultlayout import VaultLayout

# What the audit log keeps in plain text on the Kubernetes auth mount (configure_kubernetes_auth).
AUDIT_PLAIN_REQUEST_KEYS = ("role",)
AUDIT_PLAIN_RESPONSE_KEYS = ("error",)


def hmaced_login_keys(client: hvac.Client, mount: str) -> list[str]:
    """Which of the keys a refused login is told by (AUDIT_PLAIN_*) the mount's audit log still HMACs
    ([] when all are plain): ``sys/auth/<mount>/tune``'s audit_non_hmac_request_keys and ..._response_keys."""
    tune = client.adapter.get(f"/v1/sys/auth/{mount}/tune")
    tune = tune.get("data", tune) if isinstance(tune, dict) else {}
    plain = {*(tune.get("audit_non_hmac_request_keys") or []), *(tune.get("audit_non_hmac_response_keys") or [])}
    return [key for key in (*AUDIT_PLAIN_REQUEST_KEYS, *AUDIT_PLAIN_RESPONSE_KEYS) if key not in plain]


@dataclass(frozen=True)
class PluginCa:
    """Istio's ``cacerts``: its signing certificate and key, the roots the mesh trusts, and the root
    that signed the certificate (the same as ``root_pem`` except while a root rotation overlaps)."""

    cert_pem: str
    key_pem: str = field(repr=False)
    root_pem: str  # the trust bundle: one root, or two during a rotation's overlap
    signing_root_pem: str = ""

    def files(self) -> dict[str, str]:
        """File name -> PEM, as istiod reads them from its cacerts directory, key first.

        The names are Istio's (security/pkg/pki/ca/ca.go: ca-cert.pem, ca-key.pem, cert-chain.pem,
        root-cert.pem; root-cert.pem may hold several roots). cert-chain.pem is the signing certificate
        and the root it chains to. istiod reloads on every write (pilot/pkg/bootstrap/istio_ca.go
        handleEvent), so a certificate without its key would be refused: the key goes first.
        """
        chain_root = self.signing_root_pem or self.root_pem
        return {"ca-key.pem": self.key_pem, "ca-cert.pem": self.cert_pem, "root-cert.pem": self.root_pem,
                "cert-chain.pem": f"{self.cert_pem.rstrip()}\n{chain_root}"}


@dataclass(frozen=True)
class KubernetesAuthTarget:
    """How Vault reaches the API server for TokenReview."""

    host: str
    ca_pem: str
    issuer: str
    # Vault outside the cluster has no pod token to review with: a reviewer service account's token.
    reviewer_jwt: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class NamespaceBinding:
    namespace: str
    role: str
    policy: str
    secret_path: str
    service_accounts: tuple[str, ...]


class VaultConfigurator:
    """Installs the integration of DESIGN.md section 1 into one Vault."""

    def __init__(self, client: hvac.Client, layout: VaultLayout, setup: Setup, run_id: str) -> None:
        self.client = client
        self.layout = layout
        self.setup = setup
        self.run_id = run_id

    # -- low-level helpers -------------------------------------------------
    def _post(self, path: str, data: dict[str, Any]) -> Any:
        try:
            return self.client.adapter.post(f"/v1/{path}", json=data)
        except InvalidRequest as err:
            raise VaultSetupError(f"Vault refused POST {path}: {'; '.join(err.errors or [str(err)])}") from None

    def _read(self, path: str) -> dict[str, Any] | None:
        # A fresh PKI mount answers 400 "no default issuer", not 404.
        with contextlib.suppress(hvac.exceptions.InvalidPath, InvalidRequest):
            response = self.client.adapter.get(f"/v1/{path}")
            if isinstance(response, dict):
                return response
        return None

    @property
    def _description(self) -> str:
        return f"trustgrid run {self.run_id}"

    def _ensure_engine(self, path: str, engine: str, **kwargs: Any) -> None:
        mounts = self.client.sys.list_mounted_secrets_engines()["data"]
        if f"{path}/" not in mounts:
            self.client.sys.enable_secrets_engine(engine, path=path, description=self._description, **kwargs)

    # -- cluster-wide ------------------------------------------------------
    def configure_kubernetes_auth(self, target: KubernetesAuthTarget) -> None:
        """Kubernetes auth against the API server.

        In the cluster no reviewer JWT is pinned: Vault reviews with its own pod's
        service-account token (bound to system:auth-delegator), which it rereads as
        the kubelet rotates it. Outside it (``--vault external``) it has none, and
        reviews with the reviewer token given.
        """
        path = self.layout.kubernetes_path
        if f"{path}/" not in self.client.sys.list_auth_methods()["data"]:
            self.client.sys.enable_auth_method("kubernetes", path=path, description=self._description)
        # The audit log HMACs every request and response value by default, the login's role and a refused
        # login's message among them ("invalid role name ..." is a response, not an error: path_login.go
        # logical.ErrorResponse). Neither is a secret; in plain text they say which role a refusal was for
        # and why (cluster/audit). The mount's own tune (sys/auth/<path>/tune, audit_non_hmac_*_keys; sudo).
        self.client.sys.tune_auth_method(path, audit_non_hmac_request_keys=list(AUDIT_PLAIN_REQUEST_KEYS),
                                         audit_non_hmac_response_keys=list(AUDIT_PLAIN_RESPONSE_KEYS))
        self._post(f"auth/{path}/config", {
            "kubernetes_host": target.host,
            "kubernetes_ca_cert": target.ca_pem,
            "issuer": target.issuer,
            "disable_local_ca_jwt": target.reviewer_jwt is not None,
            **({"token_reviewer_jwt": target.reviewer_jwt} if target.reviewer_jwt else {}),
        })

    def configure_kv(self) -> None:
        self._ensure_engine(self.layout.kv_path, "kv", options={"version": "2"})

    def configure_pki(self) -> str:
        """A root and an intermediate from it; returns the root certificate PEM."""
        root, inter = self.layout.pki_root_path, self.layout.pki_int_path
        self._ensure_engine(root, "pki", config={"max_lease_ttl": "87600h"})
        self._ensure_engine(inter, "pki", config={"max_lease_ttl": "43800h"})
        existing = self._read(f"{root}/cert/ca")
        root_pem = str(((existing or {}).get("data") or {}).get("certificate") or "")
        if not root_pem:
            generated = self._post(f"{root}/root/generate/internal", {
                "common_name": f"trustgrid root {self.run_id}", "ttl": "87600h", "key_type": "ec",
                "key_bits": 256, "issuer_name": "root",
            })
            root_pem = str(generated["data"]["certificate"])
        current = self._read(f"{inter}/cert/ca")
        if not ((current or {}).get("data") or {}).get("certificate"):
            csr = self._post(f"{inter}/intermediate/generate/internal", {
                "common_name": f"trustgrid intermediate {self.run_id}", "key_type": "ec", "key_bits": 256,
            })["data"]["csr"]
            signed = self._post(f"{root}/root/sign-intermediate", {
                "csr": csr, "format": "pem", "ttl": "43800h", "use_csr_values": False,
                "common_name": f"trustgrid intermediate {self.run_id}",
            })["data"]["certificate"]
            self._post(f"{inter}/intermediate/set-signed", {"certificate": f"{signed}\n{root_pem}"})
        return root_pem

    def sign_plugin_ca(self) -> PluginCa:
        """`ca: plugin`: an intermediate signed by Vault's root whose key Istio holds (for ``cacerts``)."""
        root_pem = self.configure_pki()
        return PkiRotation(self.client, self.layout, self.run_id).plugin_ca(None, trusted_roots=[root_pem])

    def ensure_audit(self, file_path: str) -> str:
        """A file audit device. OpenBao only accepts declarative ones from its
        server config; then this checks that one is there instead of adding one.
        """
        devices = self.client.sys.list_enabled_audit_devices()["data"]
        if devices:
            return str(next(iter(devices)))
        try:
            self.client.sys.enable_audit_device(
                "file", path=self.layout.audit_path, description=self._description, options={"file_path": file_path}
            )
        except InvalidRequest as err:
            raise VaultSetupError(
                f"Vault refused to enable the audit device via the API ({'; '.join(err.errors or [])})",
                fix="declare an audit \"file\" stanza in the server configuration",
            ) from None
        return f"{self.layout.audit_path}/"

    def metrics_token(self, policy_hcl: str, ttl: str = "720h") -> str:
        """A token that may only read ``sys/metrics``, for Prometheus to scrape Vault with (Vault docs,
        "Prometheus" telemetry: a token with read on sys/metrics). An orphan, so a revoked parent never
        takes it along; without the default policy; it outlives a kept cluster's month (the token mount's
        default max_lease_ttl is 768h). Registered with the redactor."""
        name = "trustgrid-metrics"
        self.client.sys.create_or_update_policy(name, policy_hcl)
        created = self._post("auth/token/create-orphan", {
            "policies": [name], "no_default_policy": True, "ttl": ttl, "display_name": "prometheus",
            "meta": {"trustgrid-run": self.run_id}})
        return register(str(created["auth"]["client_token"]))

    # -- per namespace -----------------------------------------------------
    def configure_namespace(self, namespace: str, service_accounts: Sequence[str]) -> NamespaceBinding:
        """One role, one policy, one KV path and one PKI role for a namespace."""
        vault = self.setup.vault
        layout = self.layout
        policy = layout.policy(namespace)
        kv = layout.kv_path
        self.client.sys.create_or_update_policy(policy, "\n".join([
            f'path "{kv}/data/{namespace}/*" {{ capabilities = ["read"] }}',
            f'path "{kv}/metadata/{namespace}/*" {{ capabilities = ["read", "list"] }}',
        ]))
        names = ["*"] if vault.bound_service_accounts == "wildcard" else list(service_accounts)
        namespaces = ["*"] if vault.role_scope == "cluster" else [namespace]
        self._post(f"auth/{layout.kubernetes_path}/role/{layout.role(namespace)}", {
            "bound_service_account_names": names,
            "bound_service_account_namespaces": namespaces,
            "audience": vault.audience,
            "token_policies": [policy],
            "token_ttl": int(vault.token_ttl.total_seconds()),
            "token_max_ttl": int(vault.token_max_ttl.total_seconds()),
        })
        self._post(f"{layout.pki_int_path}/roles/{layout.role(namespace)}", {
            "allowed_uri_sans": [spiffe_pattern(self.setup, namespace)],
            "allowed_domains": [],
            "allow_any_name": False,
            "allow_bare_domains": False,
            "enforce_hostnames": True,
            "require_cn": False,
            "use_csr_common_name": False,
            "use_csr_sans": True,
            "key_type": "any",
            "server_flag": True,
            "client_flag": True,
            "ttl": int(self.setup.mesh.cert_ttl.total_seconds()),
            "max_ttl": int(self.setup.mesh.cert_ttl.total_seconds()),
            "no_store": True,
        })
        path = layout.secret_path(namespace)
        return NamespaceBinding(namespace, layout.role(namespace), policy, path, tuple(service_accounts))

    def configure_mesh_ca(self, namespace: str, service_account: str, *, audience: str | None = None) -> str:
        """The mesh CA's own Vault identity: may sign through any namespace's PKI role, nothing else.

        ``audience``: cert-manager asks for ``vault://<namespace>/<issuer>`` tokens (kind); the local CA for the
        profile's Vault audience.
        """
        policy = "mesh-ca"
        self.client.sys.create_or_update_policy(
            policy, f'path "{self.layout.pki_int_path}/sign/*" {{ capabilities = ["update"] }}')
        mesh = self.setup.mesh
        role = "mesh-ca"
        self._post(f"auth/{self.layout.kubernetes_path}/role/{role}", {
            "bound_service_account_names": [service_account],
            "bound_service_account_namespaces": [namespace],
            "audience": audience or self.setup.vault.audience,
            "token_policies": [policy],
            "token_ttl": int(mesh.ca_token_ttl.total_seconds()),
            "token_max_ttl": int(mesh.ca_token_max_ttl.total_seconds()),
        })
        return role

    def configure_mesh_pki_role(self, name: str) -> None:
        """One PKI role for a CA that signs every namespace (istio-csr): identity is its TokenReview's job."""
        ttl = int(self.setup.mesh.cert_ttl.total_seconds())
        self._post(f"{self.layout.pki_int_path}/roles/{name}", {
            "allowed_uri_sans": [f"spiffe://{self.setup.trust_domain}/ns/*/sa/*"], "allow_any_name": True,
            "require_cn": False, "use_csr_common_name": False, "use_csr_sans": True, "key_type": "any",
            "server_flag": True, "client_flag": True, "ttl": ttl, "max_ttl": ttl, "no_store": True,
        })

    def write_secret(self, binding: NamespaceBinding, value: dict[str, str]) -> None:
        self.client.secrets.kv.v2.create_or_update_secret(
            path=binding.secret_path, secret=value, mount_point=self.layout.kv_path
        )
        with contextlib.suppress(InvalidRequest):
            self.client.secrets.kv.v2.update_metadata(
                path=binding.secret_path, mount_point=self.layout.kv_path,
                custom_metadata={"trustgrid.io/run-id": self.run_id},
            )

    def remove_namespace(self, namespace: str) -> None:
        """Undo configure_namespace; missing pieces are fine (idempotent)."""
        layout = self.layout
        for path in (
            f"/v1/auth/{layout.kubernetes_path}/role/{layout.role(namespace)}",
            f"/v1/{layout.pki_int_path}/roles/{layout.role(namespace)}",
            f"/v1/{layout.kv_path}/metadata/{layout.secret_path(namespace)}",
        ):
            with contextlib.suppress(hvac.exceptions.InvalidPath):
                self.client.adapter.delete(path)
        self.client.sys.delete_policy(layout.policy(namespace))

    # -- reading the live configuration (conformance never reads the profile) --
    def kubernetes_roles(self) -> dict[str, dict[str, Any]]:
        path = self.layout.kubernetes_path
        try:
            listed = self.client.adapter.list(f"/v1/auth/{path}/role")
        except hvac.exceptions.InvalidPath:
            return {}
        names = listed["data"]["keys"] if isinstance(listed, dict) else []
        roles = {}
        for name in names:
            # A role removed between the list and the read (a finished tenant) is simply not there.
            with contextlib.suppress(hvac.exceptions.InvalidPath):
                roles[name] = self.client.adapter.get(f"/v1/auth/{path}/role/{name}")["data"]
        return roles


def login_kubernetes(client: hvac.Client, layout: VaultLayout, role: str, jwt: str) -> str:
    """Log a workload in with its service-account JWT; returns (and registers) its Vault token."""
    response = client.auth.kubernetes.login(role=role, jwt=jwt, mount_point=layout.kubernetes_path)
    return register(str(response["auth"]["client_token"]))


def revoke_role_tokens(admin: hvac.Client, mount: str, role: str) -> int:
    """Revoke the live tokens that logins to ``auth/<mount>/login`` with ``role`` created; every other token
    stays. Returns how many were revoked.

    A Kubernetes-auth login records its role in the token's metadata (``meta.role``:
    vault-plugin-auth-kubernetes path_login.go, Auth.Metadata) and its login path in ``path``.
    Tokens have no index by role, so each accessor is looked up (LIST auth/token/accessors needs
    sudo: the admin token). A token that ends between the list and the lookup is skipped.
    Scoped this way, a fault on someone else's Vault revokes only the mesh CA's own logins, not
    every workload's token of the mount (which ``sys/leases/revoke-prefix`` of the login path would).
    """
    login = f"auth/{mount}/login"
    accessors = (admin.adapter.list("/v1/auth/token/accessors") or {}).get("data", {}).get("keys", [])
    revoked = 0
    for accessor in accessors:
        try:
            data = admin.adapter.post("/v1/auth/token/lookup-accessor", json={"accessor": accessor})["data"]
        except (hvac.exceptions.InvalidRequest, hvac.exceptions.InvalidPath, hvac.exceptions.Forbidden):
            continue  # ended meanwhile
        if str(data.get("path", "")).startswith(login) and (data.get("meta") or {}).get("role") == role:
            with contextlib.suppress(hvac.exceptions.InvalidRequest, hvac.exceptions.InvalidPath):
                admin.adapter.post("/v1/auth/token/revoke-accessor", json={"accessor": accessor})
                revoked += 1
    return revoked


class PkiRotation:
    """Intermediate and root rotation through Vault's multi-issuer PKI API (Vault >= 1.11, OpenBao)."""

    def __init__(self, client: hvac.Client, layout: VaultLayout, run_id: str) -> None:
        self.client = client
        self.layout = layout
        self.run_id = run_id

    def _post(self, path: str, data: dict[str, Any]) -> dict[str, Any]:
        try:
            return dict(self.client.adapter.post(f"/v1/{path}", json=data))
        except InvalidRequest as err:
            raise VaultSetupError(f"Vault refused POST {path}: {'; '.join(err.errors or [str(err)])}") from None

    def issuers(self, mount: str) -> dict[str, str]:
        """issuer id -> PEM, for every issuer of a PKI mount."""
        listed = self.client.adapter.list(f"/v1/{mount}/issuers")
        out = {}
        for issuer_id in (listed or {}).get("data", {}).get("keys", []):
            out[issuer_id] = self.client.adapter.get(f"/v1/{mount}/issuer/{issuer_id}/json")["data"]["certificate"]
        return out

    def default_issuer(self, mount: str) -> str:
        return str(self.client.adapter.get(f"/v1/{mount}/config/issuers")["data"]["default"])

    def new_root(self, name: str) -> str:
        """A second root in the root mount (the overlap); returns its issuer id. The old one stays default."""
        data = self._post(f"{self.layout.pki_root_path}/root/generate/internal", {
            "common_name": f"trustgrid root {name} {self.run_id}", "ttl": "87600h", "key_type": "ec",
            "key_bits": 256, "issuer_name": name,
        })["data"]
        return str(data["issuer_id"])

    def new_intermediate(self, name: str, root_issuer: str | None = None) -> tuple[str, str]:
        """A new intermediate in pki_int, signed by a root issuer, made the default; returns (id, CN)."""
        common_name = f"trustgrid intermediate {name} {self.run_id}"
        csr = self._post(f"{self.layout.pki_int_path}/intermediate/generate/internal",
                         {"common_name": common_name, "key_type": "ec", "key_bits": 256})["data"]["csr"]
        signer = f"issuer/{root_issuer}" if root_issuer else "root"
        sign_path = f"{self.layout.pki_root_path}/{signer}/sign-intermediate"
        signed = self._post(sign_path, {"csr": csr, "format": "pem", "ttl": "43800h",
                                        "common_name": common_name})["data"]["certificate"]
        imported = self._post(f"{self.layout.pki_int_path}/intermediate/set-signed",
                              {"certificate": signed})["data"]["imported_issuers"]
        issuer_id = str(imported[0])
        self._post(f"{self.layout.pki_int_path}/config/issuers", {"default": issuer_id})
        return issuer_id, common_name

    def plugin_ca(self, name: str | None, *, root_issuer: str | None = None,
                  trusted_roots: list[str]) -> PluginCa:
        """An intermediate for istiod's plugged-in CA, signed by a root issuer (the default when None).

        The key is made here, never in Vault: Vault signs the CSR through ``sign-intermediate``, with
        max_path_length 0 (istiod signs leaves only). ``trusted_roots`` become root-cert.pem, the mesh's
        trust bundle; the signing root must be one of them. Common name: ``trustgrid istiod CA
        [<name> ]<run id>``.
        """
        common_name = f"trustgrid istiod CA {name} {self.run_id}" if name else f"trustgrid istiod CA {self.run_id}"
        csr, key = ca_csr_and_key(common_name)
        signer = f"issuer/{root_issuer}" if root_issuer else "root"
        data = self._post(f"{self.layout.pki_root_path}/{signer}/sign-intermediate", {
            "csr": csr, "format": "pem", "ttl": "8760h", "use_csr_values": False, "common_name": common_name,
            "max_path_length": 0,
        })["data"]
        signing_root = str(data["issuing_ca"])
        if signing_root.strip() not in [root.strip() for root in trusted_roots]:
            raise VaultSetupError(f"the plugged-in CA {common_name} is signed by a root outside its trust bundle")
        return PluginCa(cert_pem=str(data["certificate"]), key_pem=key,
                        root_pem="\n".join(root.strip() for root in trusted_roots) + "\n",
                        signing_root_pem=signing_root.strip() + "\n")

    def root_pem(self, issuer_id: str) -> str:
        return str(self.client.adapter.get(f"/v1/{self.layout.pki_root_path}/issuer/{issuer_id}/json")
                   ["data"]["certificate"])

    def make_default_root(self, issuer_id: str) -> None:
        self._post(f"{self.layout.pki_root_path}/config/issuers", {"default": issuer_id})

    def remove_root(self, issuer_id: str) -> None:
        self.client.adapter.delete(f"/v1/{self.layout.pki_root_path}/issuer/{issuer_id}")

    def sign_with(self, issuer_id: str, role: str, csr_pem: str) -> str:
        """Sign through one named intermediate issuer (to present an old chain on purpose).

        Returns the leaf followed by its issuing intermediate, as a proxy presents them.
        """
        data = self._post(f"{self.layout.pki_int_path}/issuer/{issuer_id}/sign/{role}", {"csr": csr_pem})["data"]
        return f"{data['certificate']}\n{data['issuing_ca']}"
