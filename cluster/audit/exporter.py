"""Audit entries as Prometheus metrics (prometheus_client), with bounded labels and no secret in any.

Metrics (one registry per exporter):
- ``vault_audit_lines_total`` and ``vault_audit_unparsed_lines_total``;
- ``vault_audit_requests_total{type, operation}``: type "request" or "response" (internal/audit/format.go
  AuditRequestEntry, AuditResponseEntry), operation Vault's (sdk/logical/request.go: create, read, update,
  delete, list, ...);
- ``vault_audit_denials_total{reason, namespace, mount, role}``: a response entry with an error, on any path;
- ``vault_audit_login_refusals_total{reason, mount, role}``: the same, on an auth mount's login path;
- ``vault_audit_newest_line_timestamp_seconds`` (its ``time``, RFC 3339) and ``..._age_seconds`` (now minus
  that, at scrape time): a stale pipeline shows as a growing age.

Labels come only from fields Vault does not HMAC (the path, the mount, the auth metadata, the error
message) and are checked again: a value that looks like an HMAC, a token or a JWT is never a label
(``-``). Each label keeps at most ``max_values`` distinct values; a new one takes the place of the value
seen longest ago, once that one has been idle ``idle_s`` (its series are removed, as a tenant namespace a
run made and deleted is never seen again), and otherwise counts as ``_other``; the mesh CA's role is always
itself. An exporter beside a long-lived Vault thus keeps naming new namespaces. Not bounded: the product of
the labels (a series cap).
"""

from __future__ import annotations

import functools
import json
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from cluster.audit.reasons import reason
from cluster.secrets import find_secrets
from cluster.targets import DEFAULT_MESH_CA_ROLE

OTHER = "_other"
NONE = "-"
MAX_VALUES = 200  # per label: the namespaces, mounts and roles of one cluster's tenants (a suite run makes many)
# A value unseen this long may give its place to a new one: far beyond any evidence window (tens of seconds) and
# Prometheus's staleness (5 min), so no query the suite asks loses a series it needs.
IDLE_S = 3600.0
REQUEST_LABELS = ("type", "operation")
DENIAL_LABELS = ("reason", "namespace", "mount", "role")
LOGIN_LABELS = ("reason", "mount", "role")
_SAFE = re.compile(r"[A-Za-z0-9_.:/-]{1,63}")
_INVALID_ROLE = re.compile(r'invalid role name "([^"]{1,63})"')  # path_login.go: ErrorResponse("invalid role name %q")


@dataclass(frozen=True)
class Denial:
    """One refused request, as labels: ``reason`` (cluster.audit.reasons), the tenant ``namespace``, the
    ``mount`` it went to ("kubernetes" for auth/kubernetes/login, "secret" for secret/data/...), the
    ``role`` (the auth role, "-" when none is known), and whether it was a ``login``."""

    reason: str
    namespace: str
    mount: str
    role: str
    login: bool


@dataclass(frozen=True)
class Paths:
    """Where the namespace of a refused request is read from when its token names none: the KV mount whose
    first path segment after data/ or metadata/ is the tenant's namespace (cluster/vaultlayout.py
    secret_path). A refused login has no token, so no namespace: its ``role`` label says whose it was."""

    kv: str = "secret"


def _safe(value: object) -> str:
    return _safe_text(value if isinstance(value, str) else "")


@functools.lru_cache(maxsize=4096)  # label values repeat: each is checked once
def _safe_text(text: str) -> str:
    if not text or text.startswith("hmac-") or find_secrets(text) or not _SAFE.fullmatch(text):
        return NONE
    return text


def denial(entry: Mapping[str, Any], paths: Paths = Paths()) -> Denial | None:
    """The refusal an audit entry records (None for a request entry or a success). Only the response entry
    is counted: Vault writes the request entry too, and both may carry the error.

    The message is the entry's ``error``, or, for a refusal a backend answers as a response (HTTP 400,
    logical.ErrorResponse: a login to a missing role), the response's ``data.error`` where the mount keeps
    it in plain text (cluster/vault.py AUDIT_PLAIN_RESPONSE_KEYS); an HMACed one says nothing."""
    if entry.get("type") != "response":
        return None
    answered = ((entry.get("response") or {}).get("data") or {}).get("error")
    error = str(entry.get("error") or (answered if isinstance(answered, str) and not answered.startswith("hmac-")
                                       else ""))
    if not error:
        return None
    request = entry.get("request") or {}
    auth = entry.get("auth") or {}
    path = str(request.get("path") or "")
    metadata = auth.get("metadata") or {}
    parts = path.split("/")
    login = len(parts) >= 3 and parts[0] == "auth" and parts[-1] == "login"
    # The mount Vault routed the request to ("auth/kubernetes/", "secret/"), not the path's first segment:
    # a path to no mount has none, so a scanner cannot mint mount labels.
    mount = str(request.get("mount_point") or "").removeprefix("auth/").strip("/")
    asked = (request.get("data") or {}).get("role")  # plain where the mount says so (AUDIT_PLAIN_REQUEST_KEYS)
    role = metadata.get("role") or (asked if isinstance(asked, str) and not asked.startswith("hmac-") else "") \
        or next(iter(_INVALID_ROLE.findall(error)), "")
    namespace = metadata.get("service_account_namespace") or ""
    if not namespace and parts[0] == paths.kv and len(parts) > 2 and parts[1] in ("data", "metadata"):
        namespace = parts[2]
    # A token was presented (the request's client_token, HMACed) but the store did not know it: the entry's
    # auth then names no token. No token presented at all is a plain refusal.
    # A login is judged on its JWT, never on a token sent along with it: its plain "permission denied" is
    # the JWT's review refused (path_login.go, "login unauthorized").
    unknown = bool(request.get("client_token")) and not (auth.get("accessor") or auth.get("client_token"))
    return Denial(reason(error, token_known=login or not unknown), _safe(namespace), _safe(mount), _safe(role),
                  login)


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


class _Bounded:
    """At most ``limit`` distinct values of a label ("-" among them). A new value at the limit replaces the one
    seen longest ago if that one is idle ``idle_s`` or more (``evict`` is told, to remove its series), and is
    OTHER if none is. ``kept`` values are always themselves, however many others came first (the mesh CA's role,
    which an alert names); "-" is never evicted."""

    def __init__(self, limit: int, clock: Callable[[], float], evict: Callable[[str], None], *,
                 idle_s: float = IDLE_S, kept: frozenset[str] = frozenset()) -> None:
        self.limit, self.kept, self.clock, self.evict, self.idle_s = limit, kept, clock, evict, idle_s
        self.last_seen: dict[str, float] = {NONE: math.inf}  # insertion order is no help: values recur

    def __call__(self, value: str) -> str:
        if value in self.kept:
            return value
        now = self.clock()
        if value not in self.last_seen and len(self.last_seen) >= self.limit:
            oldest = min(self.last_seen, key=self.last_seen.__getitem__)
            if now - self.last_seen[oldest] < self.idle_s:
                return OTHER
            del self.last_seen[oldest]
            self.evict(oldest)
        self.last_seen[value] = now
        return value


@dataclass
class AuditMetrics:
    """Counts audit lines into its own registry. ``observe`` takes one raw line, from one thread (the
    follower's); scrapes may run concurrently (prometheus_client's values are thread-safe)."""

    paths: Paths = Paths()
    max_values: int = MAX_VALUES
    idle_s: float = IDLE_S
    kept_roles: frozenset[str] = frozenset({DEFAULT_MESH_CA_ROLE})
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    clock: Any = time.time

    def __post_init__(self) -> None:
        r = self.registry
        self.lines = Counter("vault_audit_lines", "Audit log lines read", registry=r)
        self.unparsed = Counter("vault_audit_unparsed_lines", "Audit log lines that are not a JSON object",
                                registry=r)
        self.requests = Counter("vault_audit_requests", "Audit entries by type and operation",
                                REQUEST_LABELS, registry=r)
        self.denials = Counter("vault_audit_denials", "Refused requests by reason, namespace, mount and role",
                               DENIAL_LABELS, registry=r)
        self.logins = Counter("vault_audit_login_refusals", "Refused logins by reason, auth mount and role",
                              LOGIN_LABELS, registry=r)
        newest = Gauge("vault_audit_newest_line_timestamp_seconds", "The time of the newest entry read",
                       registry=r)
        newest.set_function(self.newest_line_time)
        age = Gauge("vault_audit_newest_line_age_seconds", "Seconds since the newest entry read was written",
                    registry=r)
        age.set_function(self._age)
        self._bounds = {name: _Bounded(self.max_values, self.clock, functools.partial(self._forget, name),
                                       idle_s=self.idle_s, kept=self.kept_roles if name == "role" else frozenset())
                        for name in ("namespace", "mount", "operation", "role")}
        # Every series made, by its label values: the child is cached (labels() costs a lock and a lookup on
        # each line), and a forgotten value's series can be found and removed.
        self._series: dict[Counter, tuple[tuple[str, ...], dict[tuple[str, ...], Any]]] = {
            self.requests: (REQUEST_LABELS, {}), self.denials: (DENIAL_LABELS, {}), self.logins: (LOGIN_LABELS, {})}
        self._stamp = ""  # the newest line's "time", parsed only when scraped

    def newest_line_time(self) -> float:
        """The newest line's ``time`` in seconds since the epoch (NaN before the first). Vault appends in
        the order it audits, so the newest line is the last one read."""
        try:
            return _epoch(self._stamp) if self._stamp else float("nan")
        except ValueError:
            return float("nan")

    def _age(self) -> float:
        newest = self.newest_line_time()
        return float("nan") if math.isnan(newest) else max(0.0, self.clock() - newest)

    def observe(self, line: bytes | str) -> Denial | None:
        """Count one line; returns the refusal it records, if any."""
        self.lines.inc()
        try:
            entry = json.loads(line)
            if not isinstance(entry, dict) or not isinstance(entry.get("request") or {}, dict) \
                    or not isinstance(entry.get("auth") or {}, dict):
                raise ValueError("not an audit entry")
            return self._count(entry)
        except (ValueError, TypeError, AttributeError):  # a line no Vault wrote: counted, never fatal
            self.unparsed.inc()
            return None

    def _count(self, entry: dict[str, Any]) -> Denial | None:
        kind = "response" if entry.get("type") == "response" else "request"
        operation = self._bounds["operation"](_safe((entry.get("request") or {}).get("operation")))
        self._inc(self.requests, (kind, operation))
        if stamp := entry.get("time"):
            self._stamp = str(stamp)
        found = denial(entry, self.paths)
        if found is None:
            return None
        namespace, mount, role = (self._bounds[n](v) for n, v in
                                  (("namespace", found.namespace), ("mount", found.mount), ("role", found.role)))
        self._inc(self.denials, (found.reason, namespace, mount, role))
        if found.login:
            self._inc(self.logins, (found.reason, mount, role))
        return found

    def _inc(self, counter: Counter, values: tuple[str, ...]) -> None:
        made = self._series[counter][1]
        child = made.get(values)
        if child is None:
            child = made[values] = counter.labels(*values)
        child.inc()

    def _forget(self, label: str, value: str) -> None:
        """Remove every series whose ``label`` is ``value`` (prometheus_client Counter.remove)."""
        for counter, (names, made) in self._series.items():
            if label not in names:
                continue
            at = names.index(label)
            for values in [v for v in made if v[at] == value]:
                counter.remove(*values)
                del made[values]
