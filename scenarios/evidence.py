"""The denial a chaos scenario expects Vault's audit log to show, proven from Prometheus.

A scenario that makes Vault refuse something states what the audit exporter (cluster/audit) must count:
the reason, the tenant's namespace (or, for a refused login, which carries no token, the role), and the
alert of cluster/audit/alerts.yaml that must fire. The proof is read from Prometheus's HTTP API after the
scenario, over the fault window on the wall clock:
- the counter did not rise in the ``before_s`` seconds before the fault (the refusal is the fault's);
- it rose after the fault, and was in Prometheus by the restore plus ``policy.audit_visible_within``;
- the alert, where one is expected, was firing within ``policy.alert_within`` of the counter's rise.
Every question and its answer are kept (the timeline's ``audit``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cluster.errors import WaitTimeout
from cluster.profile import Policy
from cluster.promapi import Asked, PrometheusApi, PrometheusUnavailable, Series
from cluster.wait import wait_until

BEFORE_S = 30.0  # the steady state before a fault in which the same denial must not already be rising
STEP_S = 1.0  # the range queries' resolution: the scrape and rule evaluation interval
GRACE_SCRAPES = 3  # the last answer is taken this many intervals after everything judged was due
MAX_POINTS = 10_000  # per series of a range query; Prometheus refuses over 11,000


def _quoted(value: str) -> str:
    # A PromQL string literal: Go's escapes, of which JSON's are a subset (non-ASCII kept as it is: PromQL
    # refuses the surrogate pairs JSON would write).
    return json.dumps(value, ensure_ascii=False)


@dataclass(frozen=True)
class ExpectedDenial:
    """A refusal the audit log must show. ``reason``: one of cluster.audit.reasons.REASONS. A refused request
    is counted by its tenant's ``namespace``; a refused ``login`` has no token, so its ``role`` names it.
    ``alert``: the alert that must fire ("" where none is expected: a few refusals are no spike)."""

    reason: str
    namespace: str = ""
    role: str = ""
    alert: str = ""
    login: bool = False

    @property
    def scopes(self) -> tuple[str, ...]:
        """PromQL matchers of every refusal that is the scenario's, for its count by reason: its namespace's
        requests, and its role's logins (which name no namespace)."""
        return tuple(scope for scope, given in ((f"namespace={_quoted(self.namespace)}", self.namespace),
                                                 (f'namespace="-",role={_quoted(self.role)}', self.role)) if given)

    @property
    def matchers(self) -> str:
        who = f"role={_quoted(self.role)}" if self.login else f"namespace={_quoted(self.namespace)}"
        return f"reason={_quoted(self.reason)},{who}"

    @property
    def counter(self) -> str:
        """PromQL: the refusals counted so far (one series, or none before the first)."""
        metric = "vault_audit_login_refusals_total" if self.login else "vault_audit_denials_total"
        return f"sum({metric}{{{self.matchers}}})"

    @property
    def alert_query(self) -> str:
        """PromQL: the expected alert's firing series for this namespace or role (ALERTS, Prometheus's own)."""
        who = f"role={_quoted(self.role)}" if self.login else f"namespace={_quoted(self.namespace)}"
        return f'ALERTS{{alertname={_quoted(self.alert)},alertstate="firing",{who}}}'

    def describe(self) -> str:
        who = f"login refusals of role {self.role}" if self.login else f"denials in namespace {self.namespace}"
        return f"{self.reason} {who}" + (f", alert {self.alert}" if self.alert else "")


@dataclass(frozen=True)
class Window:
    """The fault window on the wall clock (Unix seconds): injected at ``fault_at``, undone at ``restored_at``."""

    fault_at: float
    restored_at: float


@dataclass(frozen=True)
class Bounds:
    """``visible_s``: a refusal made before the restore is in Prometheus by the restore plus this.
    ``alert_s``: the alert fires within this of the refusal's first sample."""

    visible_s: float
    alert_s: float
    before_s: float = BEFORE_S

    @classmethod
    def from_policy(cls, policy: Policy) -> Bounds:
        """The profile's ``audit_visible_within`` and ``alert_within``, in seconds."""
        return cls(policy.audit_visible_within.total_seconds(), policy.alert_within.total_seconds())


@dataclass(frozen=True)
class Judgement:
    proven: bool
    detail: str
    seen_after_fault_s: float | None = None
    alert_after_seen_s: float | None = None


def counted(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """A counter's points as the refusals counted since its first point, across resets: a value below the one
    before is a restarted exporter counting afresh (Prometheus's own rule for rate() and increase()), and a
    series absent for a while and back (stale, then scraped again) continues from its last value."""
    total, previous, found = 0.0, 0.0, []
    for t, value in points:
        if math.isnan(value):
            continue
        total += value - previous if value >= previous else value
        previous = value
        found.append((t, total))
    return found


def _at(points: Sequence[tuple[float, float]], at: float) -> float:
    """The running count at ``at``: the last point at or before it (0 before the first)."""
    found = [v for t, v in points if t <= at]
    return found[-1] if found else 0.0


def judge(expected: ExpectedDenial, counter: Sequence[tuple[float, float]], alerts: Sequence[float],
          window: Window, bounds: Bounds) -> Judgement:
    """The verdict on one expected refusal. ``counter``: the summed counter's (time, value) points, one per
    step, from ``bounds.before_s`` before the fault; ``alerts``: the times at which the expected alert was
    firing. The same times must be those the points were asked for (prove() rounds them once). Pure: tested
    in tests/."""
    running = counted(counter)
    start = window.fault_at - bounds.before_s
    at_start, at_fault = _at(running, start), _at(running, window.fault_at)
    what = expected.describe()
    if at_fault > at_start:
        return Judgement(False, f"{what}: {at_fault - at_start:g} counted in the {bounds.before_s:g} s before the "
                                "fault: the refusal was there before it, not the fault's")
    visible_by = window.restored_at + bounds.visible_s
    risen = [(t, v) for t, v in running if t > window.fault_at and v > at_fault]
    if not risen:
        return Judgement(False, f"{what}: not in Prometheus from the fault until {bounds.visible_s:g} s after the "
                                "restore: the refusal was not audited, or the audit pipeline is broken")
    seen_at, value = risen[0]
    seen_s = round(seen_at - window.fault_at, 3)
    if seen_at > visible_by:
        return Judgement(False, f"{what}: first in Prometheus {seen_at - window.restored_at:.1f} s after the restore, "
                                f"beyond policy.audit_visible_within {bounds.visible_s:g} s", seen_s)
    detail = f"{what}: in Prometheus {seen_s:.1f} s after the fault ({value - at_fault:g} counted by then)"
    if not expected.alert:
        return Judgement(True, detail, seen_s)
    firing = [t for t in alerts if t >= seen_at - STEP_S]
    if not firing or firing[0] > seen_at + bounds.alert_s:
        late = f"first at {firing[0] - seen_at:.1f} s" if firing else "never"
        return Judgement(False, f"{detail}; but {expected.alert} did not fire within policy.alert_within "
                                f"{bounds.alert_s:g} s of it ({late})", seen_s)
    alert_s = round(max(0.0, firing[0] - seen_at), 3)
    return Judgement(True, f"{detail}; {expected.alert} firing {alert_s:.1f} s after it", seen_s, alert_s)


@dataclass(frozen=True)
class AuditEvidence:
    """The proof of one expected refusal: the judgement, the refusals by reason in the scenario's scope over
    the window, and every question put to Prometheus with its answer."""

    expected: ExpectedDenial
    judgement: Judgement
    by_reason: dict[str, float] = field(default_factory=dict)
    asked: tuple[Asked, ...] = ()

    @property
    def proven(self) -> bool:
        return self.judgement.proven

    def as_json(self) -> dict[str, Any]:
        e, j = self.expected, self.judgement
        return {"expected": {"reason": e.reason, "namespace": e.namespace, "role": e.role, "alert": e.alert},
                "proven": j.proven, "detail": j.detail, "seen_after_fault_s": j.seen_after_fault_s,
                "alert_after_seen_s": j.alert_after_seen_s, "denials_by_reason": self.by_reason,
                "asked": [a.as_json() for a in self.asked]}


def _points(series: tuple[Series, ...]) -> tuple[tuple[float, float], ...]:
    return series[0].points if series else ()


def denials_by_reason(api: PrometheusApi, scope: str, window: Window, end: float, step: float) -> dict[str, float]:
    """Refusals in ``scope`` (PromQL matchers, such as ``namespace="t-x"``) counted between the fault and
    ``end``, by reason, across exporter restarts (``counted``): what the summary page shows per scenario."""
    expr = f"sum by (reason) (vault_audit_denials_total{{{scope}}})"
    found: dict[str, float] = {}
    for series in api.range(expr, round(window.fault_at - step, 3), end, step):
        running = counted(series.points)
        count = running[-1][1] - _at(running, window.fault_at) if running else 0.0
        if count > 0:
            found[series.labels.get("reason", "")] = count
    return found


def prove(url: str, expected: ExpectedDenial, window: Window, bounds: Bounds, *,
          clock: Callable[[], float] = time.time) -> AuditEvidence:
    """Ask Prometheus at ``url`` until the refusal (and its alert) is proven, or until everything the bounds
    allow has been evaluated (the restore plus both bounds) and stored (a few scrapes later), then judge what
    it answered last. A Prometheus that stops answering is a failed proof naming its error, never a hang."""
    # Rounded once, as the API is asked: the judgement must compare the very times the points were asked for.
    window = Window(round(window.fault_at, 3), round(window.restored_at, 3))
    start = round(window.fault_at - bounds.before_s, 3)
    settle = round(window.restored_at + bounds.visible_s + bounds.alert_s + STEP_S, 3)
    grace = settle + GRACE_SCRAPES * STEP_S  # samples and rule results stamped before settle, stored late
    step = max(STEP_S, math.ceil((settle - start) / MAX_POINTS))  # Prometheus answers at most 11,000 points
    last: list[AuditEvidence] = []
    errors: list[str] = []

    def attempt() -> bool:
        api = PrometheusApi(url)
        try:
            end = round(min(clock(), settle), 3)
            counter = _points(api.range(expected.counter, start, end, step))
            alerts = ([t for s in api.range(expected.alert_query, start, end, step) for t, v in s.points if v == 1]
                      if expected.alert else [])
            judged = judge(expected, counter, sorted(alerts), window, Bounds(bounds.visible_s, bounds.alert_s,
                                                                            window.fault_at - start))
            by_reason: dict[str, float] = {}
            for scope in expected.scopes:
                for reason, count in denials_by_reason(api, scope, window, end, step).items():
                    by_reason[reason] = by_reason.get(reason, 0.0) + count
        except PrometheusUnavailable as err:
            errors.append(str(err))
            raise
        finally:
            api.session.close()
        errors.clear()
        last[:] = [AuditEvidence(expected, judged, by_reason, tuple(api.asked))]
        return judged.proven or clock() >= grace

    try:
        wait_until(attempt, timeout=max(1.0, grace - clock()) + 30, interval=0.5,
                   describe=f"Prometheus to show {expected.describe()}", clock=clock)
    except WaitTimeout as err:
        if not last or errors:
            return AuditEvidence(expected, Judgement(False, f"{expected.describe()}: Prometheus at {url} stopped "
                                                            f"answering ({err.last_error or err.last_state})"),
                                 asked=last[0].asked if last else ())
    return last[0]
