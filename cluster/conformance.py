"""Conformance checks that read the live configuration and judge it against a policy.

They never read the profile's setup: the same checks judge a cluster that
someone else configured. Each finding says what was found, where, and the fix.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import hvac
from cryptography import x509
from kubernetes import client

from cluster.kube import Kube
from cluster.meshconfig import MeshConfig
from cluster.pkitools import csr_and_key
from cluster.profile import Policy
from cluster.tokenlife import TOKEN_REVIEW_CACHE_S, TokenLifetime, token_lifetime

# Namespaces Kubernetes itself owns; never application namespaces.
SYSTEM_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})
# How a namespace joins the mesh: (label, value), None for any value.
INJECTION_LABELS = (("istio-injection", "enabled"), ("istio.io/rev", None))


@dataclass(frozen=True)
class Finding:
    what: str
    where: str
    fix: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}; fix: {self.fix}"


def _seconds(value: float) -> str:
    """Durations the way Vault and Istio write them (Go's time.Duration): 720h, 5m, 15s, 12h0m10s."""
    if value == math.inf:
        return "for ever"
    for unit, size in (("h", 3600), ("m", 60)):
        if value >= size and value % size == 0:
            return f"{int(value // size)}{unit}"
    hours, rest = divmod(value, 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{seconds:g}s"
    if hours or minutes:
        text = f"{int(minutes)}m{text}"
    return f"{int(hours)}h{text}" if hours else text


def application_namespaces(kube: Kube, policy: Policy) -> list[str]:
    """Live namespaces that join the mesh (injection label), outside the exempt ones."""
    found = []
    for namespace in kube.core.list_namespace().items:
        meta = namespace.metadata
        if meta.name in policy.exempt_namespaces or meta.name in SYSTEM_NAMESPACES or meta.deletion_timestamp:
            continue
        marks = meta.labels or {}
        if any(key in marks and (value is None or marks[key] == value) for key, value in INJECTION_LABELS):
            found.append(meta.name)
    return sorted(found)


# -- Vault tokens --------------------------------------------------------------
def read_role(admin: hvac.Client, mount: str, name: str) -> dict[str, Any] | None:
    try:
        return dict(admin.adapter.get(f"/v1/auth/{mount}/role/{name}")["data"])
    except hvac.exceptions.InvalidPath:
        return None


def token_lifetimes(admin: hvac.Client, mount: str, roles: Mapping[str, Mapping[str, Any]]) -> list[TokenLifetime]:
    """Each role's tokens by Vault's rule (cluster/tokenlife.py), against its mount's live tune."""
    tune = admin.adapter.get(f"/v1/sys/auth/{mount}/tune")["data"]
    return [token_lifetime(f"auth/{mount}/role/{name}", role, tune) for name, role in sorted(roles.items())]


def _shortened_by(found: TokenLifetime) -> str:
    return " (token_explicit_max_ttl)" if found.explicit_max_s and found.max_s == found.explicit_max_s else ""


def ttl_ceiling_findings(lifetimes: Iterable[TokenLifetime], policy: Policy) -> list[Finding]:
    """Tokens whose effective max TTL (the mount clamps the role) passes the ceiling, or that never end."""
    ceiling = policy.max_vault_token_ttl.total_seconds()
    findings = []
    for found in lifetimes:
        if found.max_s is None:
            findings.append(Finding(f"periodic tokens (token_period {_seconds(found.period_s)}) with no "
                                    "token_explicit_max_ttl are renewable for ever", found.where,
                                    f"set token_explicit_max_ttl to {_seconds(ceiling)} or less, or drop token_period"))
        elif found.max_s > ceiling:
            findings.append(Finding(
                f"tokens live up to {_seconds(found.max_s)} (the smallest of the mount's max_lease_ttl, "
                f"token_max_ttl and token_explicit_max_ttl), above the ceiling {_seconds(ceiling)}", found.where,
                f"set token_max_ttl to {_seconds(ceiling)} or less"))
    return findings


def revocation_latency_findings(lifetimes: Iterable[TokenLifetime], policy: Policy) -> list[Finding]:
    """Roles whose tokens outlive the revocation latency ceiling once their identity is taken away.

    Renewal re-checks only that the role exists (path_login.go pathLoginRenew): a token keeps its
    policies and survives its service account's deletion until its max TTL. A deleted service
    account may also still log in while the API server's token cache holds it (10 s).
    """
    ceiling = policy.max_revocation_latency.total_seconds()
    findings = []
    for found in lifetimes:
        latency = math.inf if found.max_s is None else found.max_s + TOKEN_REVIEW_CACHE_S
        if latency > ceiling:
            keeps = "for ever (periodic, no explicit max)" if found.max_s is None else (
                f"up to {_seconds(latency)}: its tokens' max TTL {_seconds(found.max_s)}{_shortened_by(found)}, "
                f"plus the API server's {_seconds(TOKEN_REVIEW_CACHE_S)} token cache")
            findings.append(Finding(
                f"an identity whose role policies or service account are taken away keeps access {keeps}, "
                f"above the revocation latency ceiling {_seconds(ceiling)}", found.where,
                f"lower token_max_ttl (or token_explicit_max_ttl) to "
                f"{_seconds(max(ceiling - TOKEN_REVIEW_CACHE_S, 1))} or less"))
    return findings


def audience_findings(roles: Mapping[str, Mapping[str, Any]], mount: str) -> list[Finding]:
    """Roles that check no audience: a token minted for any audience (the API server's own, another
    service's) logs in. The plugin then sends the TokenReview with the token's own audiences
    (path_login.go serviceAccount.lookup: "wantAud := s.Audience")."""
    return [Finding("checks no audience: a service-account token minted for any audience logs in",
                    f"auth/{mount}/role/{name}", "set audience to the one audience workloads mint for Vault")
            for name, role in sorted(roles.items()) if not str(role.get("audience") or "").strip()]


@dataclass(frozen=True)
class RenewalDependency:
    """A Vault login that certificate renewal depends on, as a cert-manager issuer declares it."""

    where: str
    mount: str
    role: str
    sign_path: str = ""  # the issuer's spec.vault.path: "<pki mount>/sign/<role>", or a per-namespace template


def renewal_dependencies(api: client.ApiClient) -> list[RenewalDependency]:
    """Every cert-manager Issuer and ClusterIssuer that logs in to Vault with Kubernetes auth."""
    custom = client.CustomObjectsApi(api)
    found = []
    for plural, kind in (("issuers", "Issuer"), ("clusterissuers", "ClusterIssuer")):
        for obj in custom.list_cluster_custom_object("cert-manager.io", "v1", plural)["items"]:
            auth = (((obj.get("spec") or {}).get("vault") or {}).get("auth") or {}).get("kubernetes")
            if not auth:
                continue
            meta = obj["metadata"]
            name = f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else meta["name"]
            mount = str(auth.get("mountPath") or "/v1/auth/kubernetes").strip("/").removeprefix("v1/")
            found.append(RenewalDependency(f"{kind} {name}", mount.removeprefix("auth/"), str(auth["role"]),
                                           str(obj["spec"]["vault"].get("path") or "")))
    return found


def renewal_safety_findings(dependency: RenewalDependency, lifetime: TokenLifetime | None,
                            cert_lifetime_s: float, mesh: MeshConfig) -> list[Finding]:
    """The token must outlive the renewal window, or be renewable to an effective max beyond it
    (the mount's max and token_explicit_max_ttl count: cluster/tokenlife.py)."""
    if lifetime is None:
        return [Finding(f"{dependency.where} logs in with role {dependency.role!r}, which Vault does not have",
                        f"auth/{dependency.mount}/role", "create the role or point the issuer at an existing one")]
    window = cert_lifetime_s * mesh.grace_ratio
    if lifetime.max_s is None or lifetime.ttl_s >= window or lifetime.max_s > window:
        return []
    return [Finding(
        f"the token of {dependency.where}, which renews the mesh certificates, lives {_seconds(lifetime.ttl_s)} "
        f"and renews only to {_seconds(lifetime.max_s)}{_shortened_by(lifetime)}, inside the renewal window of "
        f"{_seconds(window)} (certificates live {_seconds(cert_lifetime_s)} on the wire and renew with "
        f"{mesh.grace_ratio:g} of it left, per {mesh.found_at})", lifetime.where,
        f"set token_ttl to at least {_seconds(window)}, or its effective max TTL above it")]


def role_scope_findings(roles: Mapping[str, Mapping[str, Any]], mount: str, policy: Policy) -> list[Finding]:
    findings = []
    for name, role in sorted(roles.items()):
        where = f"auth/{mount}/role/{name}"
        namespaces = list(role.get("bound_service_account_namespaces") or [])
        selector = role.get("bound_service_account_namespace_selector") or ""
        accounts = list(role.get("bound_service_account_names") or [])
        if policy.require_namespace_scoped_roles and (len(namespaces) != 1 or "*" in namespaces[0] or selector):
            findings.append(Finding(f"bound to namespaces {namespaces}, selector {selector!r}", where,
                                    "bind each role to exactly one namespace"))
        if policy.require_named_service_accounts and (not accounts or any("*" in a for a in accounts)):
            findings.append(Finding(f"bound to service accounts {accounts}", where,
                                    "name the service accounts, never '*'"))
    return findings


# -- PKI -----------------------------------------------------------------------
_POLICY_PATH = re.compile(r'path\s+"([^"]+)"\s*\{[^}]*?capabilities\s*=\s*\[([^\]]*)\]', re.S)
_SIGNING = {"create", "update", "sudo"}


def policy_grants(pattern: str, path: str) -> bool:
    """Vault's path matching: ``+`` is one segment, a trailing ``*`` any suffix."""
    glob = pattern.endswith("*")
    body = re.escape(pattern[:-1] if glob else pattern).replace(r"\+", "[^/]+")
    return re.fullmatch(body + (".*" if glob else ""), path) is not None


def signing_policies(admin: hvac.Client, path: str) -> set[str]:
    """The ACL policies that let their holder write to ``path`` (root aside: it is not for workloads)."""
    found = set()
    for name in admin.sys.list_acl_policies()["data"]["keys"]:
        if name == "root":
            continue
        try:
            text = str(admin.sys.read_acl_policy(name)["data"]["policy"])
        except hvac.exceptions.InvalidPath:
            continue  # removed since the list (a finished tenant's)
        for pattern, capabilities in _POLICY_PATH.findall(text):
            if policy_grants(pattern, path) and _SIGNING & set(re.findall(r'"([a-z]+)"', capabilities)):
                found.add(name)
    return found


@dataclass(frozen=True)
class MeshCaIdentity:
    """The mesh CA as Vault and the API server show it: its Kubernetes-auth roles (name -> role data)
    and the PKI roles its issuers sign every namespace through (none where it signs per namespace)."""

    auth_roles: Mapping[str, Mapping[str, Any]]
    pki_roles: frozenset[str]


def pki_scope_findings(admin: hvac.Client, mount: str, trust_domain: str, *,
                       ca: MeshCaIdentity | None = None) -> list[Finding]:
    """Ask every PKI role, for real, to sign a SPIFFE ID of a namespace that exists nowhere.

    One role may: the one a CA-wide issuer signs through (istio-csr signs every namespace through
    one role and authenticates each workload itself), and only while every policy that lets anyone
    sign through it is held by the CA's own identities and nobody else. A per-namespace role that
    signs outside its namespace is always a finding: it is the scope Vault itself enforces.
    """
    try:
        names = admin.adapter.list(f"/v1/{mount}/roles")["data"]["keys"]
    except hvac.exceptions.InvalidPath:
        return []
    stranger = f"spiffe://{trust_domain}/ns/tg-nobody-{secrets.token_hex(4)}/sa/app"
    findings = []
    for name in names:
        try:
            admin.adapter.post(f"/v1/{mount}/sign/{name}", json={"csr": csr_and_key(stranger)[0], "ttl": "10s"})
        except (hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden, hvac.exceptions.InvalidPath):
            continue  # refused (or the role went away meanwhile): as it must be
        if ca and name in ca.pki_roles and _only_the_ca_signs_with(admin, f"{mount}/sign/{name}", ca.auth_roles):
            continue
        allowed = admin.adapter.get(f"/v1/{mount}/roles/{name}")["data"].get("allowed_uri_sans")
        alone = "" if ca and name in ca.pki_roles else "; it is not a CA-wide issuer's role"
        findings.append(Finding(f"signed {stranger} (allowed_uri_sans {allowed}){alone}", f"{mount}/roles/{name}",
                                "limit allowed_uri_sans to spiffe://<trust domain>/ns/<its namespace>/sa/*; a CA-wide "
                                "role must be usable by the mesh CA's policy alone"))
    return findings


def mesh_ca_identity(admin: hvac.Client, api: client.ApiClient, mount: str) -> MeshCaIdentity:
    """The mesh CA, found from the live Issuers that log in to Vault: their roles, and the PKI role of
    each whose path names one role of ``mount`` (not a per-namespace template)."""
    auth_roles: dict[str, dict[str, Any]] = {}
    pki_roles = set()
    for dependency in renewal_dependencies(api):
        prefix = f"{mount}/sign/"
        if dependency.sign_path.startswith(prefix) and "{" not in dependency.sign_path:
            pki_roles.add(dependency.sign_path.removeprefix(prefix))
        try:
            path = f"/v1/auth/{dependency.mount}/role/{dependency.role}"
            auth_roles[dependency.role] = dict(admin.adapter.get(path)["data"])
        except hvac.exceptions.InvalidPath:
            continue  # renewal safety reports a missing role
    return MeshCaIdentity(auth_roles, frozenset(pki_roles))


def _only_the_ca_signs_with(admin: hvac.Client, sign_path: str, ca: Mapping[str, Mapping[str, Any]]) -> bool:
    granting = signing_policies(admin, sign_path)
    ca_policies = {str(p) for role in ca.values() for p in (role.get("token_policies") or role.get("policies") or [])}
    if not granting or not granting <= ca_policies:
        return False
    # ...and no other Kubernetes-auth role holds one of those policies.
    for mount in _kubernetes_mounts(admin):
        try:
            others = admin.adapter.list(f"/v1/auth/{mount}/role")["data"]["keys"]
        except hvac.exceptions.InvalidPath:
            continue
        for other in others:
            if other in ca:
                continue
            try:
                data = admin.adapter.get(f"/v1/auth/{mount}/role/{other}")["data"]
            except hvac.exceptions.InvalidPath:
                continue  # removed since the list (a finished tenant)
            if granting & {str(p) for p in (data.get("token_policies") or data.get("policies") or [])}:
                return False
    return True


def _kubernetes_mounts(admin: hvac.Client) -> list[str]:
    methods = admin.sys.list_auth_methods()["data"]
    return [path.rstrip("/") for path, method in methods.items() if method.get("type") == "kubernetes"]


def cert_lifetime_findings(where: str, cert: x509.Certificate, backdate_s: float, policy: Policy) -> list[Finding]:
    lifetime = (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds() - backdate_s
    ceiling = policy.max_cert_ttl.total_seconds()
    if lifetime <= ceiling:
        return []
    return [Finding(f"presents a certificate valid for {_seconds(lifetime)}, above the ceiling {_seconds(ceiling)}",
                    where, "lower the PKI role's ttl and max_ttl (and the duration the CA asks for)")]


# -- Vault audit -----------------------------------------------------------------
def audit_findings(admin: hvac.Client, policy: Policy) -> list[Finding]:
    if not policy.require_audit_device or admin.sys.list_enabled_audit_devices()["data"]:
        return []
    return [Finding("no audit device is enabled", "sys/audit",
                    "enable a file or socket audit device (declared in the server config on OpenBao)")]
