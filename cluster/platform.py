"""The one interface that suites and scenarios see.

Suites and scenarios import this module and nothing platform-specific.
Each platform lives in its own package (cluster/local, cluster/kind,
cluster/kubeconfig) and is chosen once, by cluster.select.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import hvac
from kubernetes.client import ApiClient

from cluster.profile import Setup
from cluster.vault import PluginCa
from cluster.vaultlayout import VaultLayout

ErrorClass = Literal["", "tls_handshake", "reset", "refused", "http_403", "http_5xx", "timeout", "other"]


@dataclass(frozen=True)
class Versions:
    """What is really running, as the components report it (never as pinned)."""

    platform: str
    kubernetes: str
    vault: str
    extra: Mapping[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, str]:
        return {"platform": self.platform, "kube-apiserver": self.kubernetes, "vault": self.vault, **self.extra}

    def lines(self) -> list[str]:
        parts = [f"kube-apiserver {self.kubernetes}", self.vault, *(f"{k} {v}" for k, v in self.extra.items())]
        return [f"platform {self.platform}", ", ".join(parts)]


@dataclass(frozen=True)
class Workload:
    """A deployed sample workload. ``ip`` is its pod's address; ``address`` the one clients use (its
    Service: a ClusterIP on the local platform, a DNS name on a cluster); ``meshed``: it has a sidecar."""

    namespace: str
    name: str
    service_account: str
    ip: str
    meshed: bool
    address: str = ""

    @property
    def spiffe_id(self) -> str:
        return f"ns/{self.namespace}/sa/{self.service_account}"


@dataclass(frozen=True)
class SidecarStatus:
    """The workload certificate an Istio proxy holds (Envoy's secret ``default`` and its ``ROOTCA`` bundle, as
    cluster/proxydump.py reads them on every platform), and pilot-agent's last certificate error since it.

    Instants are timezone-aware (UTC).
    """

    serial: str  # hex
    issuer: str  # the issuing CA's common name
    not_before: datetime
    not_after: datetime
    obtained_at: datetime  # when the proxy took it (Envoy's last_updated): its last renewal
    spiffe: str  # its URI SAN
    roots: int  # how many certificates its trust bundle holds
    last_error: str = ""  # pilot-agent's last "failed to sign", '' when none since this certificate

    def remaining_s(self, now: datetime | None = None) -> float:
        """Seconds until notAfter (negative once it has expired)."""
        return (self.not_after - (now or datetime.now(UTC))).total_seconds()


@dataclass(frozen=True)
class VaultRead:
    """A workload's read of its namespace's secret, with its Vault agent's current token, and the agent's state
    (the tgpod agent's /vault answer, cluster/local/pod/app.go readVault, the same on every platform)."""

    ok: bool
    error: str = ""  # why not ok: "not logged in: ...", "vault answered 403", or a connection error
    status: int | None = None  # Vault's HTTP status; None when no request was made (no token)
    elapsed_s: float | None = None
    digest: str = ""  # of the secret read (its first 8 bytes of SHA-256, hex), never the secret
    accessor: str = ""  # of the agent's current token
    logins: int = 0
    renewals: int = 0
    paused: bool = False
    expires_in: float | None = None  # seconds left of the agent's token; None while it holds none

    @classmethod
    def from_agent(cls, answer: Mapping[str, Any]) -> VaultRead:
        """From the agent's JSON; a field it leaves out takes its default."""
        return cls(ok=bool(answer.get("ok")), error=str(answer.get("error") or ""),
                   status=int(answer["status"]) if answer.get("status") is not None else None,
                   elapsed_s=float(answer["elapsed"]) if answer.get("elapsed") is not None else None,
                   digest=str(answer.get("digest") or ""), accessor=str(answer.get("accessor") or ""),
                   logins=int(answer.get("logins") or 0), renewals=int(answer.get("renewals") or 0),
                   paused=bool(answer.get("paused")),
                   expires_in=float(answer["expires_in"]) if answer.get("expires_in") is not None else None)


@dataclass(frozen=True)
class MeshCaStatus:
    """What the mesh CA shows of its own Vault access, as mesh-ca-vault-access-lost reads it.

    The local CA (like any Vault agent) logs in once and renews its token; cert-manager, behind istio-csr,
    logs in afresh for each request and holds none, so on kind its refused login is the whole evidence.
    Refusals are redacted log records or error strings, oldest first.
    """

    holds_token: bool
    token_refused: tuple[str, ...] = ()  # its held token refused (a 403 on renewal or on signing)
    login_refused: tuple[str, ...] = ()  # its login refused (its role gone: "invalid role name", a 403)
    accessor: str = ""  # of the token it holds ('' when none)
    details: Mapping[str, Any] = field(default_factory=dict)  # the CA's own report as it gave it (counters)


@dataclass(frozen=True)
class SessionStep:
    """One request of a kept-alive session (the tgpod agent's /session, cluster/local/pod/app.go)."""

    status: int  # the HTTP status (0 when the request failed)
    reused: bool  # sent on the connection the previous request used
    error: str = ""

    @classmethod
    def from_agent(cls, step: Mapping[str, Any]) -> SessionStep:
        return cls(status=int(step.get("status") or 0), reused=bool(step.get("reused")),
                   error=str(step.get("error") or ""))


@dataclass(frozen=True)
class CallResult:
    status: int | None
    error: ErrorClass
    elapsed: float
    peer_ids: tuple[str, ...] = ()
    detail: str = ""
    body: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass(frozen=True)
class FlowSummary:
    """One TCP flow seen on the wire; client is the side that opened it. ``client_records``: the TLS
    application_data records the client sent (each request a proxy forwards is at least one)."""

    client: str
    server: str
    tls: bool
    payload_bytes: int
    client_records: int = 0

    def to(self, address: str) -> bool:
        return self.server == address


class Capture:
    """What crossed a pod's interface; filled when the capture block ends."""

    def __init__(self) -> None:
        self.flows: tuple[FlowSummary, ...] = ()
        self._payload = b""
        self.done = False

    def fill(self, flows: list[FlowSummary], payload: bytes) -> None:
        self.flows = tuple(flows)
        self._payload = payload
        self.done = True

    def requests_to(self, address: str) -> int:
        """How many TLS records clients sent to ``address`` (ip:port): at least one per request, however
        the proxies pooled their connections."""
        return sum(f.client_records for f in self.flows if f.to(address))

    @property
    def plaintext_flows(self) -> tuple[FlowSummary, ...]:
        return tuple(f for f in self.flows if f.payload_bytes and not f.tls)

    def text(self) -> str:
        """Every payload byte, as text (for the secret scanners); never written anywhere."""
        if not self.done:
            raise RuntimeError("the capture is still running")
        return self._payload.decode(errors="replace")

    def contains(self, text: str) -> bool:
        """Whether these bytes crossed the wire in the clear, anywhere in any flow."""
        if not self.done:
            raise RuntimeError("the capture is still running")
        return text.encode() in self._payload


@dataclass(frozen=True)
class VaultNodeStatus:
    """What one Vault node says of itself (its own ``sys/seal-status`` and ``sys/health``)."""

    node_id: str
    version: str  # "2.7.2", as sys/seal-status reports it without the "v"
    sealed: bool
    active: bool


@dataclass(frozen=True)
class VaultUpgradeStep:
    """One node's turn in a rolling upgrade. Instants are seconds on the caller's clock."""

    node_id: str
    role: str  # "standby" or "active" when it was stopped
    left_front_at: float  # out of the address clients use (its Service's endpoints)
    stopped_at: float  # its old server exited (SIGTERM)
    unsealed_at: float  # on the new version, unsealed
    back_in_front_at: float
    version: str  # what the node reported afterwards
    lingering: int = 0  # kept-alive client connections to it still open when it was stopped


class Upgrades(Protocol):
    """In-place upgrades of the platform's own Vault (suites/upgrade). Raises PlatformUnavailable, naming
    the fix, where the platform cannot do one."""

    def vault_nodes(self) -> tuple[VaultNodeStatus, ...]:
        """Every Vault node, as each reports itself, in node order."""
        ...

    def upgrade_vault(self, version: str, *, clock: Callable[[], float],
                      progress: Callable[[str], None]) -> tuple[VaultUpgradeStep, ...]:
        """Upgrade every node to ``version`` ("2.7.2") the documented way: standbys first, then the active
        node, whose SIGTERM steps it down (OpenBao website/content/docs/upgrading/ha-upgrade.mdx); one
        node is restarted on the new binary. Returns once every node serves again, one step per node."""
        ...

    def apply_setup(self, setup: Setup) -> tuple[str, ...]:
        """Apply the upgrade's TO profile: rewrite the mesh CA's Kubernetes-auth role (its token TTL and max)
        from ``setup``, as new chart values would. Returns the keys that changed (cluster.profile.setup_changes);
        raises SettingsError, naming them, when ``setup`` changes anything else, which a live platform does
        not take."""
        ...


class Canary(Protocol):
    """Istio control planes side by side: the canary upgrade of istio.io's "Canary upgrades" (istioctl
    install --revision R, namespaces labelled istio.io/rev=R one by one, pods restarted, the old control
    plane removed). Raises PlatformUnavailable, naming the fix, where the platform cannot run one."""

    def revisions(self) -> tuple[str, ...]:
        """The control planes running now, by revision name ("default": installed without one)."""
        ...

    def install_revision(self, revision: str) -> None:
        """A second istiod as ``revision`` (a DNS label), serving beside the others; returns once it is ready."""
        ...

    def remove_revision(self, revision: str) -> None:
        """Stop the revision's istiod and delete its webhook, ConfigMaps and RBAC (what no other revision shares)."""
        ...

    def move_namespace(self, namespace: str, revision: str) -> None:
        """Label ``namespace`` so that its new pods are injected by ``revision``: istio.io/rev=R without
        istio-injection (which takes precedence), or istio-injection=enabled for "default"."""
        ...

    def restart(self, workload: Workload) -> Workload:
        """A rolling restart of the workload's pod (new pod Ready and known to callers before the old one
        leaves); returns the workload at its new pod."""
        ...

    def injected_by(self, workload: Workload) -> str:
        """The revision whose injector filled the workload's current pod (its sidecar.istio.io/status)."""
        ...

    def serving_revision(self, workload: Workload) -> str:
        """The revision whose istiod the workload's proxy is connected to now (that istiod's own list)."""
        ...


class Faults(Protocol):
    """Cluster-wide faults. Each one is undone by its counterpart; callers hold ``exclusive``."""

    def exclusive(self, what: str) -> AbstractContextManager[None]:
        """Hold the platform alone: no other test runs while a cluster-wide fault is on."""
        ...

    def shared(self) -> AbstractContextManager[None]:
        """Hold the platform alongside other ordinary tests."""
        ...

    def stop_vault(self) -> None: ...
    def start_vault(self) -> None: ...
    def restart_vault(self) -> None: ...
    def seal_vault(self) -> None: ...
    def unseal_vault(self) -> None: ...
    def mesh_ca_status(self) -> MeshCaStatus: ...
    def revoke_mesh_ca_vault_access(self) -> None: ...
    def restore_mesh_ca_vault_access(self) -> None: ...
    def stop_mesh_ca(self) -> None: ...
    def start_mesh_ca(self) -> None: ...

    def stop_audit_exporter(self) -> None:
        """Stop what turns Vault's audit log into metrics (the evidence pipeline broken on purpose)."""
        ...

    def start_audit_exporter(self) -> None:
        """Start it again; it counts what Vault writes from then on. Returns once it serves /metrics."""
        ...

    def install_plugin_ca(self, ca: PluginCa) -> None:
        """``ca: plugin``: put new cacerts where istiod reads them; return once istiod took them.

        Raises TrustgridError with istiod's own refusal when it keeps the old ones.
        """
        ...


class Platform(Protocol):
    name: str
    kube: ApiClient
    versions: Versions
    vault_layout: VaultLayout
    run_id: str
    mesh_ca_role: str  # the mesh CA's Kubernetes-auth role in Vault

    def vault_admin(self) -> hvac.Client:
        """An admin client. Its token is registered with the redactor and never logged."""
        ...

    def vault_client(self) -> hvac.Client:
        """An unauthenticated client that reaches Vault the way workloads do."""
        ...

    def faults(self) -> Faults: ...

    def prometheus_url(self) -> str:
        """The base URL (``http://host:port``) of the Prometheus that scrapes this platform's audit exporter
        and evaluates cluster/audit/alerts.yaml. Raises PlatformUnavailable, naming the fix, where none is."""
        ...

    def upgrades(self) -> Upgrades:
        """Raises PlatformUnavailable, naming the fix, where this platform cannot upgrade its Vault in place."""
        ...

    def canary(self) -> Canary:
        """Raises PlatformUnavailable, naming the fix, where this platform cannot run Istio revisions side by side."""
        ...

    def deploy(self, ns: str, name: str, sa: str, *, meshed: bool = True,
               annotations: Mapping[str, str] | None = None) -> Workload:
        """The sample workload (and its Service); ``annotations`` go on its Pod."""
        ...

    def undeploy(self, wl: Workload) -> None: ...

    def call(self, src: Workload, dst: Workload, *, canary: str, timeout: float) -> CallResult: ...

    def session(self, src: Workload, dst: Workload, *, count: int, interval: float) -> list[SessionStep]:
        """Requests over one kept-alive connection, to prove rotation does not drop it."""
        ...

    def read_vault(self, wl: Workload) -> VaultRead:
        """The workload reads its namespace's secret now, with its agent's current token."""
        ...

    def sidecar_status(self, wl: Workload) -> SidecarStatus:
        """The workload certificate the proxy holds now, and pilot-agent's last certificate error.
        Raises PlatformUnavailable (naming pilot-agent's last error) while the proxy holds none yet."""
        ...

    def renew_certificate(self, wl: Workload) -> None:
        """Have the workload's proxy hold a new certificate on return (now, or at its next scheduled renewal)."""
        ...

    def peer_certificate(self, wl: Workload) -> bytes:
        """The DER certificate the workload's proxy presents to a TLS client: observed, not configured."""
        ...

    def relogin_vault(self, wl: Workload) -> dict[str, Any]:
        """Have the workload's Vault agent log in again now: {"ok": bool, "error": str}."""
        ...

    def pause_vault_agent(self, wl: Workload, paused: bool) -> None:
        """Stop (or resume) the workload's Vault agent renewing and logging in."""
        ...

    def refresh_tokens(self, wl: Workload) -> None:
        """Project fresh service-account tokens into the workload, as the kubelet would."""
        ...

    def capture(self, wl: Workload) -> AbstractContextManager[Capture]: ...

    def dump(self, into: Path) -> None: ...


PlatformSession = Iterator[Platform]
