"""The one interface that suites and scenarios see.

Suites and scenarios import this module and nothing platform-specific.
Each platform lives in its own package (cluster/local, cluster/kind,
cluster/kubeconfig) and is chosen once, by cluster.select.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import hvac
from kubernetes.client import ApiClient

from cluster.vault import PluginCa, VaultLayout

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
    def mesh_ca_status(self) -> dict[str, Any]: ...
    def revoke_mesh_ca_vault_access(self) -> None: ...
    def restore_mesh_ca_vault_access(self) -> None: ...
    def stop_mesh_ca(self) -> None: ...
    def start_mesh_ca(self) -> None: ...

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

    def vault_admin(self) -> hvac.Client:
        """An admin client. Its token is registered with the redactor and never logged."""
        ...

    def vault_client(self) -> hvac.Client:
        """An unauthenticated client that reaches Vault the way workloads do."""
        ...

    def faults(self) -> Faults: ...

    def deploy(self, ns: str, name: str, sa: str, *, meshed: bool = True,
               annotations: Mapping[str, str] | None = None) -> Workload:
        """The sample workload (and its Service); ``annotations`` go on its Pod."""
        ...

    def undeploy(self, wl: Workload) -> None: ...

    def call(self, src: Workload, dst: Workload, *, canary: str, timeout: float) -> CallResult: ...

    def session(self, src: Workload, dst: Workload, *, count: int, interval: float) -> list[dict[str, Any]]:
        """Requests over one kept-alive connection, to prove rotation does not drop it."""
        ...

    def read_vault(self, wl: Workload) -> dict[str, Any]:
        """The workload reads its namespace's secret now, with its agent's current token."""
        ...

    def sidecar_status(self, wl: Workload) -> dict[str, Any]:
        """The workload certificate the proxy holds: serial, not_before, not_after, issuer, obtained_at (when
        the proxy took it: its last renewal), last_error. Instants are ISO 8601 strings."""
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
