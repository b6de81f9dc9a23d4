"""The thirteen faults. Each one breaks one thing, says how it knows it broke,
when access must have failed closed, and how to undo it."""

from __future__ import annotations

import contextlib
import secrets
import socket
import ssl
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import hvac
import requests
from kubernetes.client.exceptions import ApiException

from cluster.audit.reasons import PERMISSION_DENIED, ROLE_MISSING, TOKEN_INVALID
from cluster.errors import PlatformUnavailable, TrustgridError
from cluster.kube import Kube
from cluster.meshconfig import read_mesh_config
from cluster.pkitools import common_name, csr_and_key
from cluster.platform import Platform, Workload
from cluster.targets import DEFAULT_MESH_CA_ROLE
from cluster.tenancy import Tenant
from cluster.tokenlife import DELETION_MARGIN_S, TOKEN_REVIEW_CACHE_S, TokenLifetime, token_end, token_lifetime
from cluster.vault import PkiRotation, VaultConfigurator
from scenarios.evidence import ExpectedDenial
from scenarios.scenario import Fault


def _cert_expiry(platform: Platform, *workloads: Workload) -> float:
    """Seconds until the first of these proxies' certificates expires: then calls between them fail."""
    return max(0.0, min(platform.sidecar_status(w).remaining_s() for w in workloads))


def _token_expiry(platform: Platform, app: Workload) -> float:
    return max(0.0, platform.read_vault(app).expires_in or 0.0)


class UnboundedFault(TrustgridError):
    """The live setup gives the fault no end to wait for (a periodic token without an explicit max)."""


def while_cached(end: float, next_at: float, life: float, every: float, *, cached_until: float) -> float:
    """When a credential whose identity was taken away really ends (Unix seconds).

    It ends at ``end``, unless it is renewed (or its holder logs in again) at ``next_at`` and every
    ``every`` seconds after, each success living ``life``: those still succeed while the API server
    holds the last review of the identity's token, made at ``cached_until``, in its cache.
    """
    cache_ends = cached_until + TOKEN_REVIEW_CACHE_S + DELETION_MARGIN_S
    while next_at < cache_ends and every > 0:
        end = next_at + life
        next_at += every
    return end


def accessor_lookup(admin: hvac.Client, accessor: str) -> dict[str, Any] | None:
    """What ``auth/token/lookup-accessor`` says of a token, or None once Vault no longer knows it (400 "invalid
    accessor", or 403). A timeout or a 5xx is raised: that is no answer, so the caller's wait goes on."""
    try:
        data: dict[str, Any] = admin.adapter.post("/v1/auth/token/lookup-accessor", json={"accessor": accessor})["data"]
    except (hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden):
        return None
    return data


def expiry_evidence(looked_up: Mapping[str, Any] | None) -> str:
    """Vault's own word that a token has expired, from its lookup-accessor answer (None: it is gone); "" if none.

    OpenBao vault/token_store.go ``lookupInternal``: an expired token is refused to its holder at once (the
    request path looks it up with tainted=false and gets nothing past ``ExpireTime``), but lookup-accessor
    looks it up with tainted=true and still returns it until the expiration manager has revoked it: queued
    work that retries with backoff (vault/expiration.go), so on a busy server "gone" can come long after
    "expired". Its ``ttl`` is ``leaseEntry.ttl()``, ExpireTime minus now rounded to the second, truncated:
    0 can still be up to a second before the expiry, and only a negative one is past it.
    """
    if looked_up is None:
        return "Vault no longer knows the app's token: it expired and was revoked"
    ttl = looked_up.get("ttl")
    if isinstance(ttl, int) and ttl < 0 and looked_up.get("expire_time"):
        return (f"Vault reports the app's token expired at {looked_up['expire_time']} (ttl {ttl} s); "
                "its revocation is still queued")
    return ""


def _accessor_gone(admin: hvac.Client, accessor: str) -> bool:
    try:
        admin.adapter.post("/v1/auth/token/lookup-accessor", json={"accessor": accessor})
    except (hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden):
        return True
    return False


@dataclass
class _Base:
    platform: Platform
    tenant: Tenant
    client: Workload
    server: Workload
    id: str = ""
    memo: dict[str, Any] = field(default_factory=dict)
    must_fail: ClassVar[tuple[str, ...]] = ("vault",)
    zero_failures: ClassVar[bool] = False

    def __post_init__(self) -> None:
        """Where a scenario's expectations depend on the setup (dataclass calls it only if _Base has it)."""

    @property
    def admin(self) -> hvac.Client:
        return self.platform.vault_admin()

    @property
    def configurator(self) -> VaultConfigurator:
        return VaultConfigurator(self.admin, self.platform.vault_layout, self.tenant.setup, self.platform.run_id)

    def _role_lifetime(self) -> TokenLifetime:
        """The app's role's tokens, by Vault's rule, from the live role and mount (cluster/tokenlife.py)."""
        mount = self.platform.vault_layout.kubernetes_path
        where = f"auth/{mount}/role/{self.tenant.role}"
        role = self.admin.adapter.get(f"/v1/{where}")["data"]
        return token_lifetime(where, role, self.admin.adapter.get(f"/v1/sys/auth/{mount}/tune")["data"])

    def _app_token_end(self, lifetime: TokenLifetime) -> float:
        """When the app's current token stops being renewable (Unix seconds): its creation, as Vault's
        lookup reports it, plus its effective max. Not its current TTL: renewals go on until then."""
        accessor = self.platform.read_vault(self.client).accessor
        looked_up = self.admin.adapter.post("/v1/auth/token/lookup-accessor", json={"accessor": accessor})["data"]
        end = token_end(looked_up, lifetime)
        if end is None:
            raise UnboundedFault(f"{lifetime.where} issues periodic tokens with no explicit max: the app's token "
                                 f"renews for ever, so {self.id} can never fail closed on the Vault side",
                                 fix="set token_explicit_max_ttl on the role (conformance flags it too)")
        return end

    def inject(self) -> None:
        raise NotImplementedError

    def took_effect(self) -> str:
        raise NotImplementedError

    def fail_closed_in(self) -> float | None:
        raise NotImplementedError

    def restore(self) -> None:
        return None

    @property
    def expected_denial(self) -> ExpectedDenial | None:
        return None

    def _refused(self, reason: str, *, alert: str = "", login: bool = False) -> ExpectedDenial:
        return ExpectedDenial(reason, namespace=self.tenant.namespace, role=self.tenant.role, alert=alert,
                              login=login)


class VaultTokenExpiry(_Base):
    """The app's agent stops renewing (stuck): its token simply runs out."""

    def inject(self) -> None:
        self.memo["accessor"] = self.platform.read_vault(self.client).accessor
        self.platform.pause_vault_agent(self.client, True)
        self.memo["expires_in"] = _token_expiry(self.platform, self.client)

    def took_effect(self) -> str:
        return expiry_evidence(accessor_lookup(self.admin, self.memo["accessor"]))

    def fail_closed_in(self) -> float | None:
        return 0.0  # measured from the moment Vault reports the token expired (or gone)

    def restore(self) -> None:
        self.platform.pause_vault_agent(self.client, False)

    @property
    def expected_denial(self) -> ExpectedDenial | None:
        # The store forgets an expired or revoked token: reads with it are refused as a token it does not know.
        return self._refused(TOKEN_INVALID, alert="VaultTokenDenials")


class VaultTokenRevocation(_Base):
    def inject(self) -> None:
        self.memo["accessor"] = accessor = self.platform.read_vault(self.client).accessor
        self.admin.adapter.post("/v1/auth/token/revoke-accessor", json={"accessor": accessor})

    def took_effect(self) -> str:
        return "Vault reports the app's token revoked" if _accessor_gone(self.admin, self.memo["accessor"]) else ""

    def fail_closed_in(self) -> float | None:
        return 0.0

    # Restore is the agent's own: renewal is refused and it logs in again.

    @property
    def expected_denial(self) -> ExpectedDenial | None:
        # The store forgets an expired or revoked token: reads with it are refused as a token it does not know.
        return self._refused(TOKEN_INVALID, alert="VaultTokenDenials")


class RoleRevocation(_Base):
    def inject(self) -> None:
        self.memo["expires_in"] = _token_expiry(self.platform, self.client)
        path = f"/v1/auth/{self.platform.vault_layout.kubernetes_path}/role/{self.tenant.role}"
        self.memo["path"] = path
        self.admin.adapter.delete(path)

    def took_effect(self) -> str:
        try:
            self.admin.adapter.get(self.memo["path"])
        except hvac.exceptions.InvalidPath:
            return f"Vault reports {self.memo['path'].removeprefix('/v1/')} missing"
        return ""

    def fail_closed_in(self) -> float | None:
        return float(self.memo["expires_in"])  # at the latest when the current token runs out

    def restore(self) -> None:
        self.configurator.configure_namespace(self.tenant.namespace, self.tenant.binding.service_accounts)

    @property
    def expected_denial(self) -> ExpectedDenial | None:
        # The agent logs in again when its token runs out: path_login.go "invalid role name".
        return self._refused(ROLE_MISSING, login=True)


class PolicyRevocation(_Base):
    def inject(self) -> None:
        self.memo["policy"] = policy = self.tenant.binding.policy
        self.admin.sys.create_or_update_policy(policy, 'path "sys/nothing" { capabilities = ["deny"] }')

    def took_effect(self) -> str:
        accessor = self.platform.read_vault(self.client).accessor
        path = f"{self.platform.vault_layout.kv_path}/data/{self.tenant.binding.secret_path}"
        caps = self.admin.adapter.post("/v1/sys/capabilities-accessor",
                                       json={"accessor": accessor, "paths": [path]})["data"].get(path, [])
        return f"Vault reports capabilities {caps} on {path}" if "read" not in caps else ""

    def fail_closed_in(self) -> float | None:
        return 0.0

    def restore(self) -> None:
        self.configurator.configure_namespace(self.tenant.namespace, self.tenant.binding.service_accounts)

    @property
    def expected_denial(self) -> ExpectedDenial | None:
        # The token lives on, but its policy grants nothing: sdk/logical/error.go ErrPermissionDenied.
        return self._refused(PERMISSION_DENIED)


class ServiceAccountDeletion(_Base):
    """The client's service account is deleted: Vault logins and certificate renewals are refused.

    Neither running credential notices at once. On HashiCorp Vault the app's token renews until
    its effective max TTL (renewal never reviews the JWT again); OpenBao 2.7 reviews it at each
    renewal and fails earlier (cluster/tokenlife.py renewal_reviews_the_jwt), so the max TTL bounds
    both. The client's certificate lives until its notAfter. And while the API server's token cache
    still holds the account's last review (10 s), a login or a certificate renewal may still
    succeed, with a full new lifetime.
    """

    must_fail: ClassVar[tuple[str, ...]] = ("vault", "mesh")

    def inject(self) -> None:
        self.memo["deleted_at"] = time.time()
        Kube(self.platform.kube).delete_service_account(self.client.namespace, self.client.service_account)

    def took_effect(self) -> str:
        try:
            Kube(self.platform.kube).core.read_namespaced_service_account(self.client.service_account,
                                                                          self.client.namespace)
        except ApiException as err:
            if err.status == 404:
                return f"the API server reports {self.client.namespace}/{self.client.service_account} gone"
        return ""

    def fail_closed_in(self) -> float | None:
        lifetime = self._role_lifetime()
        accessor = self.platform.read_vault(self.client).accessor
        created = float(self.admin.adapter.post("/v1/auth/token/lookup-accessor",
                                                json={"accessor": accessor})["data"]["creation_time"])
        token_ends = self._app_token_end(lifetime)
        max_s = float(lifetime.max_s or 0)
        # The agent logs in again when its token ends; that login passes only while the review of its
        # JWT, made at its last login (the token's creation), is still cached.
        vault_end = while_cached(token_ends, token_ends, max_s, max_s, cached_until=created)
        status = self.platform.sidecar_status(self.client)
        obtained, not_after = status.obtained_at.timestamp(), status.not_after.timestamp()
        life = not_after - obtained
        # The proxy renews with grace_ratio of its lifetime left (SECRET_GRACE_PERIOD_RATIO, with a
        # jitter of a percent); the CA reviewed its token when it signed the current certificate.
        grace = read_mesh_config(self.platform.kube).grace_ratio
        renews_at = not_after - life * grace - 1
        mesh_end = while_cached(not_after, renews_at, life, life * (1 - grace), cached_until=obtained)
        now = time.time()
        self.memo["bounds"] = {"vault": round(vault_end - now, 1), "mesh": round(mesh_end - now, 1)}
        return max(0.0, max(vault_end, mesh_end) - now)

    def restore(self) -> None:
        kube = Kube(self.platform.kube)
        kube.ensure_service_account(self.client.namespace, self.client.service_account, self.platform.run_id)
        self.platform.refresh_tokens(self.client)  # the kubelet's part: new tokens for the new account

    @property
    def expected_denial(self) -> ExpectedDenial | None:
        # The agent's next login: the TokenReview of a deleted account's JWT fails, and path_login.go answers
        # ErrPermissionDenied ("login unauthorized").
        return self._refused(PERMISSION_DENIED, login=True)


class RolePolicyDetach(_Base):
    """A GitOps-style edit takes the namespace's KV policy off its role.

    New logins lose access at once; the running token keeps the policies it got at login
    and renews until its effective max TTL (renewal does not re-read the role's policies:
    path_login.go pathLoginRenew). That revocation latency is what this measures and bounds.
    The restore puts the policy back and revokes the token minted while it was off, as an
    operator would; otherwise the agent would renew a token without it until its max TTL.
    """

    def inject(self) -> None:
        self.memo["end"] = self._app_token_end(self._role_lifetime())
        where = f"/v1/auth/{self.platform.vault_layout.kubernetes_path}/role/{self.tenant.role}"
        role = self.admin.adapter.get(where)["data"]
        kept = [p for p in role.get("token_policies") or [] if p != self.tenant.binding.policy] or ["default"]
        self.admin.adapter.post(where, json={"token_policies": kept})

    def took_effect(self) -> str:
        jwt = self.tenant.token(self.client.service_account)
        try:
            self.tenant.read_secret(self.tenant.login(jwt))
        except hvac.exceptions.Forbidden:
            return (f"a new login through {self.tenant.role} is refused {self.tenant.binding.secret_path}; "
                    f"the app's running token keeps its policies until its max TTL")
        return ""

    def fail_closed_in(self) -> float | None:
        return max(0.0, float(self.memo["end"]) - time.time())

    def restore(self) -> None:
        self.configurator.configure_namespace(self.tenant.namespace, self.tenant.binding.service_accounts)
        accessor = self.platform.read_vault(self.client).accessor
        if accessor:
            with contextlib.suppress(hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden):
                self.admin.adapter.post("/v1/auth/token/revoke-accessor", json={"accessor": accessor})

    @property
    def expected_denial(self) -> ExpectedDenial | None:
        # The token minted while the policy was off reads nothing (and the probe's new login, too).
        return self._refused(PERMISSION_DENIED)


class CertRotation(_Base):
    """Certificates rotate under load: zero failed requests."""

    must_fail: ClassVar[tuple[str, ...]] = ()
    zero_failures: ClassVar[bool] = True

    def _serials(self) -> dict[str, str]:
        return {w.name: self.platform.sidecar_status(w).serial for w in (self.client, self.server)}

    def _renew_all(self) -> None:
        """Both proxies hold a new certificate on return. Istio's proxy renews on its own schedule, which
        renew_certificate may have to wait for: both wait at once, not one after the other."""
        with ThreadPoolExecutor(max_workers=2) as pool:
            for done in [pool.submit(self.platform.renew_certificate, w) for w in (self.client, self.server)]:
                done.result()

    def inject(self) -> None:
        self.memo["before"] = self._serials()
        self._renew_all()

    def took_effect(self) -> str:
        after = self._serials()
        changed = all(after[name] != serial for name, serial in self.memo["before"].items())
        return f"new certificate serials {after}" if changed else ""

    def fail_closed_in(self) -> float | None:
        return None


def _plugged_in(tenant: Tenant) -> bool:
    """istiod's own CA signs, from cacerts (``ca: plugin``), rather than Vault's pki_int through a mesh CA."""
    return tenant.setup.mesh.ca == "plugin"


class IntermediateRotation(CertRotation):
    """A new intermediate from Vault, then every proxy renews onto it: zero failed requests.

    With ``ca: plugin`` the new intermediate is istiod's: Vault's root signs it, and istiod takes it from
    its cacerts (pilot/pkg/bootstrap/istio_ca.go handleEvent) without a restart.
    """

    def inject(self) -> None:
        rotation = PkiRotation(self.admin, self.platform.vault_layout, self.platform.run_id)
        if _plugged_in(self.tenant):
            root = rotation.root_pem(rotation.default_issuer(self.platform.vault_layout.pki_root_path))
            ca = rotation.plugin_ca(f"gen-{secrets.token_hex(3)}", trusted_roots=[root])
            self.memo["cn"] = common_name(ca.cert_pem)
            self.platform.faults().install_plugin_ca(ca)
        else:
            generation = len(rotation.issuers(self.platform.vault_layout.pki_int_path))
            self.memo["issuer_id"], self.memo["cn"] = rotation.new_intermediate(f"gen{generation}")
        super().inject()

    def took_effect(self) -> str:
        issuers = {w.name: self.platform.sidecar_status(w).issuer for w in (self.client, self.server)}
        if super().took_effect() and set(issuers.values()) == {self.memo["cn"]}:
            return f"every proxy's certificate is issued by {self.memo['cn']}"
        return ""


def present_certificate(ip: str, cert_pem: str, key_pem: str, port: int = 8080) -> str:
    """Connect to a sidecar with a given client certificate; 'accepted' or why it was refused."""
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".pem") as bundle:
        bundle.write(cert_pem + "\n" + key_pem)
        bundle.flush()
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.load_cert_chain(bundle.name)
    try:
        with socket.create_connection((ip, port), timeout=5) as raw, context.wrap_socket(raw) as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = tls.recv(64)
    except (OSError, ssl.SSLError) as err:
        return f"refused: {type(err).__name__}: {err}"
    return "accepted" if answer.startswith(b"HTTP/1.1") else f"refused: {answer!r}"


class RootRotation(CertRotation):
    """A new root with an overlap bundle, proxies move to it, then the old root is removed."""

    def inject(self) -> None:
        layout = self.platform.vault_layout
        rotation = PkiRotation(self.admin, layout, self.platform.run_id)
        old_root = rotation.default_issuer(layout.pki_root_path)
        old_intermediate = rotation.default_issuer(layout.pki_int_path)
        plugged_in = _plugged_in(self.tenant)
        # 1. Overlap: a second root joins the bundle; proxies renew and trust both. With ca: plugin,
        #    istiod's root-cert.pem takes both (it accepts a bundle that contains the current one).
        new_root = rotation.new_root("root-next")
        both = [rotation.root_pem(old_root), rotation.root_pem(new_root)]
        if plugged_in:
            self.platform.faults().install_plugin_ca(rotation.plugin_ca("overlap", root_issuer=old_root,
                                                                        trusted_roots=both))
        self._renew_all()
        # 2. A new intermediate from the new root; proxies renew onto the new chain.
        if plugged_in:
            next_ca = rotation.plugin_ca("next", root_issuer=new_root, trusted_roots=both)
            self.memo["cn"] = common_name(next_ca.cert_pem)
            self.platform.faults().install_plugin_ca(next_ca)
        else:
            _, self.memo["cn"] = rotation.new_intermediate("next", root_issuer=new_root)
        rotation.make_default_root(new_root)
        self._renew_all()
        # A certificate from the old chain, made now, is still accepted during the overlap.
        csr, key = csr_and_key(f"spiffe://{self.tenant.setup.trust_domain}/ns/{self.tenant.namespace}/sa/"
                               f"{self.client.service_account}")
        old_chain = rotation.sign_with(old_intermediate, self.tenant.role, csr)
        self.memo["old_chain"], self.memo["old_key"] = old_chain, key
        self.memo["during_overlap"] = present_certificate(self.server.ip, old_chain, key)
        # 3. The old root leaves the bundle; proxies renew and trust only the new root. With ca: plugin,
        #    istiod keeps its intermediate and its root-cert.pem shrinks to the new root.
        rotation.remove_root(old_root)
        if plugged_in:
            self.platform.faults().install_plugin_ca(replace(next_ca, root_pem=both[1]))
        self.memo["before"] = self._serials()
        self._renew_all()

    def took_effect(self) -> str:
        statuses = [self.platform.sidecar_status(w) for w in (self.client, self.server)]
        moved = all(s.issuer == self.memo["cn"] and s.roots == 1 for s in statuses)
        if not (moved and super().took_effect()):
            return ""
        self.memo["after_removal"] = present_certificate(self.server.ip, self.memo["old_chain"],
                                                         self.memo["old_key"])
        return (f"proxies on {self.memo['cn']} trusting one root; an old-chain certificate was "
                f"{self.memo['during_overlap']} during the overlap and {self.memo['after_removal']} after")


class VaultSeal(_Base):
    must_fail: ClassVar[tuple[str, ...]] = ("vault", "mesh")

    def __post_init__(self) -> None:
        if self.tenant.setup.mesh.ca == "plugin":
            # istiod signs with its own Vault-issued key: the mesh does not depend on Vault being up.
            self.must_fail = ("vault",)  # type: ignore[misc]

    def inject(self) -> None:
        self.platform.faults().seal_vault()

    def took_effect(self) -> str:
        try:
            return "Vault reports sealed=true" if self.platform.vault_client().sys.read_seal_status()["sealed"] else ""
        except requests.ConnectionError:
            # Raft nodes behind a front (a Service): once every node is sealed none is ready, and the address
            # refuses. Then each node says it of itself.
            return every_node_sealed(self.platform)

    def fail_closed_in(self) -> float | None:
        if "mesh" not in self.must_fail:
            return 0.0  # Vault reads fail at once
        # Established mTLS keeps working until the certificates expire; Vault reads fail at once.
        return _cert_expiry(self.platform, self.client, self.server)

    def restore(self) -> None:
        self.platform.faults().unseal_vault()


def every_node_sealed(platform: Platform) -> str:
    """Evidence that every raft node of the platform's Vault is sealed, from each node's own seal-status ("" when
    one is not, or the platform has no raft nodes to ask)."""
    try:
        nodes = platform.upgrades().vault_nodes()
    except (PlatformUnavailable, requests.RequestException):
        return ""
    return f"each of the {len(nodes)} Vault nodes reports sealed=true" if all(n.sealed for n in nodes) else ""


class VaultDown(VaultSeal):
    def inject(self) -> None:
        self.platform.faults().stop_vault()

    def took_effect(self) -> str:
        try:
            self.platform.vault_client().sys.read_health_status(method="GET")
        except requests.ConnectionError as err:
            return f"Vault does not answer: {type(err).__name__}"
        return ""

    def restore(self) -> None:
        self.platform.faults().start_vault()


class MeshCaVaultAccessLost(_Base):
    """The TTL-mismatch case: the CA's Vault token is gone and its re-login is refused."""

    must_fail: ClassVar[tuple[str, ...]] = ("mesh",)

    def inject(self) -> None:
        self.platform.faults().revoke_mesh_ca_vault_access()

    def took_effect(self) -> str:
        """The CA's re-login is refused; a CA that holds a token must also have had that token refused.

        The local CA keeps a token and renews it (the TTL-mismatch trap itself); cert-manager logs in
        afresh for each request, so on kind the refused login is the whole evidence.
        """
        status = self.platform.faults().mesh_ca_status()
        token_refused, login_refused = status.token_refused, status.login_refused
        if not login_refused or (status.holds_token and not token_refused):
            return ""
        first = f"{token_refused[-1]}; then: " if token_refused else ""
        return f"the mesh CA reports: {first}{login_refused[-1]}"

    def fail_closed_in(self) -> float | None:
        return _cert_expiry(self.platform, self.client, self.server)

    def restore(self) -> None:
        self.platform.faults().restore_mesh_ca_vault_access()

    @property
    def expected_denial(self) -> ExpectedDenial | None:
        # The CA's re-login to its deleted role: path_login.go "invalid role name". The alert names the default
        # role only (cluster/audit/alerts.yaml); another role's refusal is still proven, without it.
        role = self.platform.mesh_ca_role
        return ExpectedDenial(ROLE_MISSING, role=role, login=True,
                              alert="MeshCaVaultLoginRefused" if role == DEFAULT_MESH_CA_ROLE else "")


class MeshCaDown(_Base):
    must_fail: ClassVar[tuple[str, ...]] = ("mesh",)

    def inject(self) -> None:
        self.platform.faults().stop_mesh_ca()

    def took_effect(self) -> str:
        """The client's proxy tried to renew and could not reach the CA (pilot-agent's own error)."""
        error = self.platform.sidecar_status(self.client).last_error
        unreachable = any(sign in error for sign in ("Unavailable", "connection refused", "connection error"))
        return f"the client's proxy reports: {error}" if unreachable else ""

    def fail_closed_in(self) -> float | None:
        return _cert_expiry(self.platform, self.client, self.server)

    def restore(self) -> None:
        self.platform.faults().start_mesh_ca()


FAULTS: dict[str, type[_Base]] = {
    "vault-token-expiry": VaultTokenExpiry,
    "vault-token-revocation": VaultTokenRevocation,
    "role-revocation": RoleRevocation,
    "policy-revocation": PolicyRevocation,
    "sa-deletion": ServiceAccountDeletion,
    "role-policy-detach": RolePolicyDetach,
    "cert-rotation": CertRotation,
    "intermediate-rotation": IntermediateRotation,
    "root-rotation": RootRotation,
    "vault-seal": VaultSeal,
    "vault-down": VaultDown,
    "mesh-ca-vault-access-lost": MeshCaVaultAccessLost,
    "mesh-ca-down": MeshCaDown,
}
CLUSTER_WIDE = frozenset({"intermediate-rotation", "root-rotation", "vault-seal", "vault-down",
                          "mesh-ca-vault-access-lost", "mesh-ca-down"})


class UnknownScenario(TrustgridError):
    """A scenario id that is not one of the thirteen."""


def fault_class(scenario_id: str) -> type[_Base]:
    if scenario_id not in FAULTS:
        raise UnknownScenario(f"unknown scenario {scenario_id!r}", fix=f"choose one of {', '.join(FAULTS)}")
    return FAULTS[scenario_id]


def make_fault(scenario_id: str, platform: Platform, tenant: Tenant, client: Workload, server: Workload) -> Fault:
    return fault_class(scenario_id)(platform, tenant, client, server, id=scenario_id)
