"""The audit exporter on what the real OpenBao wrote (tests/fixtures/audit, scripts/record_audit.py): each
refusal counted with its reason, namespace and role; no secret or HMAC as a label; bounded label values;
the log followed across rotation and truncation; the exporter as a process, scraped over HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from cluster.audit.exporter import MAX_VALUES, NONE, OTHER, AuditMetrics, Denial, denial
from cluster.audit.follow import Follower
from cluster.audit.reasons import OTHER as OTHER_REASON
from cluster.audit.reasons import REASONS, reason
from cluster.secrets import find_secrets
from cluster.wait import wait_until

FIXTURES = Path(__file__).parent / "fixtures" / "audit"
LINES = (FIXTURES / "openbao-audit.jsonl").read_bytes().splitlines()
EXPECTED: list[dict[str, str]] = json.loads((FIXTURES / "expected.json").read_text())
ROOT = Path(__file__).resolve().parents[1]


def samples(metrics: AuditMetrics, name: str) -> list[tuple[dict[str, str], float]]:
    return [(dict(s.labels), s.value) for family in metrics.registry.collect() for s in family.samples
            if s.name == name]


def test_each_refusal_openbao_wrote_is_classified_as_recorded() -> None:
    entries = [json.loads(line) for line in LINES]
    found = [(e["request"]["path"], d) for e in entries if (d := denial(e)) is not None]
    polling = "auth/token/lookup"  # the script's own polling of the expiring token, refused once it expired
    known = [(path, d) for path, d in found if path != polling]
    assert [(path, d.reason) for path, d in known] == [(e["path"], e["reason"]) for e in EXPECTED]
    for (_, got), want in zip(known, EXPECTED, strict=True):
        assert got.namespace == want.get("namespace", got.namespace)
        assert got.role == want.get("role", got.role)
        assert got.login == want["path"].endswith("/login")
    assert len(known) < len(found)  # the polling's refusals are in the log, and were told apart by path


def test_the_counters_hold_each_refusal_under_its_labels() -> None:
    metrics = AuditMetrics()
    for line in LINES:
        metrics.observe(line)
    denials = samples(metrics, "vault_audit_denials_total")
    for want in EXPECTED:
        assert any(labels["reason"] == want["reason"] and labels["namespace"] == want.get("namespace",
                                                                                           labels["namespace"])
                   and labels["role"] == want.get("role", labels["role"]) and value >= 1
                   for labels, value in denials), (want, denials)
    logins = samples(metrics, "vault_audit_login_refusals_total")
    assert sum(value for _, value in logins) == sum(e["path"].endswith("/login") for e in EXPECTED)
    assert samples(metrics, "vault_audit_lines_total") == [({}, float(len(LINES)))]
    assert samples(metrics, "vault_audit_unparsed_lines_total") == [({}, 0.0)]


def test_no_label_is_a_token_an_accessor_or_an_hmac() -> None:
    metrics = AuditMetrics()
    for line in LINES:
        metrics.observe(line)
    hmacs = {value for line in LINES for value in _strings(json.loads(line)) if value.startswith("hmac-")}
    assert hmacs, "the recorded lines hold HMACed values: the check below means something"
    values = {v for family in metrics.registry.collect() for s in family.samples for v in s.labels.values()}
    assert not values & hmacs
    assert not [v for v in values if v.startswith("hmac-") or find_secrets(v)]


def _strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for value in node.values() for s in _strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in _strings(value)]
    return [node] if isinstance(node, str) else []


def test_a_message_no_rule_knows_is_other_and_every_reason_is_in_the_closed_set() -> None:
    assert reason("something new went wrong") == OTHER_REASON
    assert reason("2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n") == "token_invalid"
    assert {reason(e["reason"]) for e in EXPECTED} <= set(REASONS)
    # A renewal after the role was deleted (seen in the role-revocation scenario, where it was "other" before).
    assert reason("1 error occurred:\n\t* role t-app does not exist during renewal\n\n") == "role_missing"


label = st.text(alphabet="abcdefgh-", min_size=1, max_size=6)  # values a label may take (cluster/audit/exporter.py)
refusal = st.fixed_dictionaries({
    "type": st.just("response"),
    "error": st.sampled_from(["permission denied", 'invalid role name "x"', "boom"]),
    "auth": st.fixed_dictionaries({"metadata": st.fixed_dictionaries({
        "role": label, "service_account_namespace": label})}),
    "request": st.fixed_dictionaries({"path": st.just("auth/kubernetes/login"), "mount_point": label,
                                      "operation": label}),
})


def _given(entry: dict[str, Any], name: str) -> str:
    metadata, request = entry["auth"]["metadata"], entry["request"]
    return str({"namespace": metadata["service_account_namespace"], "role": metadata["role"],
                "mount": request["mount_point"].strip("/"), "operation": request["operation"]}[name])


@settings(max_examples=30, deadline=None)
@given(st.lists(refusal, min_size=1, max_size=300))
def test_label_values_stay_bounded_whatever_the_log_holds(entries: list[dict[str, Any]]) -> None:
    limit = 5
    metrics = AuditMetrics(max_values=limit)
    for entry in entries:
        metrics.observe(json.dumps(entry))
    mesh_ca = {**entries[0], "auth": {"metadata": {"role": "mesh-ca"}}}
    metrics.observe(json.dumps(mesh_ca))  # the mesh CA's role is itself, however many came first
    found = samples(metrics, "vault_audit_denials_total") + samples(metrics, "vault_audit_requests_total")
    for name in ("namespace", "mount", "role", "operation"):
        values = {labels[name] for labels, _ in found if name in labels}
        kept = {"mesh-ca"} if name == "role" else set()
        assert len(values - {OTHER} - kept) <= limit, (name, values)  # "-" is one of the limit
        distinct = {_given(e, name) for e in entries} - kept - {NONE}
        if len(distinct) >= limit:  # more than the limit - 1 real values beside "-": the overflow shows
            assert OTHER in values, (name, values)
    assert any(labels.get("role") == "mesh-ca" for labels, _ in found)
    assert all(labels.get("reason", REASONS[0]) in REASONS for labels, _ in found)


def _login_refusal(namespace: str, role: str) -> str:
    return json.dumps({"type": "response", "error": "permission denied",
                       "auth": {"metadata": {"role": role, "service_account_namespace": namespace}},
                       "request": {"path": "auth/kubernetes/login", "mount_point": "auth/kubernetes/",
                                   "operation": "update"}})


def test_an_idle_value_gives_its_place_and_its_series_to_a_new_one() -> None:
    """A long-lived exporter (kind: beside Vault for the cluster's life) keeps naming new tenant namespaces:
    at the limit, a value idle idle_s or more is forgotten (its series removed); a recent one never is."""
    now = [1000.0]
    metrics = AuditMetrics(max_values=3, idle_s=60, clock=lambda: now[0])  # "-" and two more
    metrics.observe(_login_refusal("ns-a", "mesh-ca"))
    now[0] += 30
    metrics.observe(_login_refusal("ns-b", "mesh-ca"))
    metrics.observe(_login_refusal("ns-c", "mesh-ca"))  # ns-a is 30 s idle: not yet
    namespaces = {labels["namespace"] for labels, _ in samples(metrics, "vault_audit_denials_total")}
    assert namespaces == {"ns-a", "ns-b", OTHER}
    now[0] += 31  # ns-a is 61 s idle, ns-b 31 s
    metrics.observe(_login_refusal("ns-d", "mesh-ca"))
    found = samples(metrics, "vault_audit_denials_total")
    assert {labels["namespace"] for labels, _ in found} == {"ns-b", "ns-d", OTHER}  # ns-a's series is gone
    assert ({"reason": "permission_denied", "namespace": "ns-d", "mount": "kubernetes", "role": "mesh-ca"}, 1.0) \
        in found
    assert all(labels["role"] == "mesh-ca" for labels, _ in samples(metrics, "vault_audit_login_refusals_total"))
    now[0] += 3600  # everything idle: "-" and the mesh CA's role stay; ns-b goes before ns-d
    metrics.observe(_login_refusal("ns-e", "mesh-ca"))
    assert {labels["namespace"] for labels, _ in samples(metrics, "vault_audit_denials_total")} == {
        "ns-d", "ns-e", OTHER}


def test_age_of_the_newest_line_is_measured_from_its_own_time() -> None:
    now = [0.0]
    metrics = AuditMetrics(clock=lambda: now[0])
    first = next(json.loads(line) for line in LINES)
    metrics.observe(json.dumps(first))
    written = metrics.newest_line_time()
    now[0] = written + 7.5
    assert samples(metrics, "vault_audit_newest_line_age_seconds") == [({}, 7.5)]
    assert samples(metrics, "vault_audit_newest_line_timestamp_seconds") == [({}, written)]
    metrics.observe(b"not json")
    assert samples(metrics, "vault_audit_unparsed_lines_total") == [({}, 1.0)]


def test_a_log_that_appears_after_the_exporter_starts_is_read_from_its_first_line(tmp_path: Path) -> None:
    """The exporter's own mode (python -m cluster.audit: only what is written from now on). On kind it starts
    beside Vault before the audit device exists; the file Vault then creates holds nothing old."""
    log = tmp_path / "audit.log"
    follower = Follower(log, from_start=False)
    assert follower.poll() == []
    log.write_bytes(b"first entry\n")
    assert follower.poll() == [b"first entry"]
    follower.close()
    log.write_bytes(b"old\n")  # but a log that is there already is followed from its end
    follower = Follower(log, from_start=False)
    assert follower.poll() == []
    with log.open("ab") as out:
        out.write(b"new\n")
    assert follower.poll() == [b"new"]
    follower.close()


def test_the_follower_reads_across_rotation_truncation_and_a_partial_line(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    follower = Follower(log)
    assert follower.poll() == []  # not there yet
    log.write_bytes(b"a\nb\npart")
    assert follower.poll() == [b"a", b"b"]
    with log.open("ab") as out:
        out.write(b"ial\n")
    assert follower.poll() == [b"partial"]
    # Rotated (renamed, as logrotate does before Vault's SIGHUP reopens the path): the old file's tail,
    # then the new file from its start.
    with log.open("ab") as out:
        out.write(b"last old\n")
    log.rename(tmp_path / "audit.log.1")
    log.write_bytes(b"first new\n")
    assert follower.poll() == [b"last old", b"first new"] and follower.rotations == 1
    # Truncated in place (copytruncate): read again from the start.
    log.write_bytes(b"")
    assert follower.poll() == [] and follower.truncations == 1
    with log.open("ab") as out:
        out.write(b"after truncation\n")
    assert follower.poll() == [b"after truncation"]
    follower.close()


def test_the_exporter_process_serves_what_it_follows_and_stops_on_sigterm(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_bytes(b"")
    log.write_bytes(LINES[0] + b"\n")  # there before the exporter: not counted (it starts at the end)
    process = subprocess.Popen([sys.executable, "-m", "cluster.audit", "--file", str(log), "--port", "0"],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().split(" on ")[-1].strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics"), url
        with log.open("ab") as out:
            out.write(b"\n".join(LINES) + b"\n")

        def counted() -> float:
            text = httpx.get(url, timeout=5).text
            return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
                       if s.name == "vault_audit_lines_total")

        wait_until(lambda: counted() >= len(LINES), timeout=30, interval=0.2,
                   describe="the exporter to count every line written")
        assert counted() == len(LINES)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


def test_a_namespace_is_read_from_the_kv_path_and_a_refusal_without_a_token_is_an_unknown_token() -> None:
    entry: dict[str, Any] = {"type": "response", "error": "1 error occurred:\n\t* permission denied\n\n",
                             "auth": {"accessor": "hmac-sha256:00", "policies": ["default"]},
                             "request": {"path": "secret/data/team-a/app", "mount_point": "secret/",
                                         "operation": "read"}}
    found = denial(entry)
    assert found is not None and (found.reason, found.namespace, found.mount, found.role) == (
        "permission_denied", "team-a", "secret", NONE)
    entry["auth"] = {"token_type": "default"}  # as OpenBao wrote it for a revoked and an expired token...
    entry["request"]["client_token"] = "hmac-sha256:01"  # ...which the request did present
    assert denial(entry) == Denial("token_invalid", "team-a", "secret", NONE, False)
    del entry["request"]["client_token"]  # no token presented at all: a plain refusal
    assert denial(entry) is not None and denial(entry).reason == "permission_denied"  # type: ignore[union-attr]
    entry["type"] = "request"  # the request entry carries the error too; only the response is counted
    assert denial(entry) is None
    assert MAX_VALUES >= 10


def test_a_file_in_a_folder_that_does_not_exist_is_one_line_not_a_wait(tmp_path: Path) -> None:
    # In a process of its own: the exporter sets its SIGTERM handler, which must not replace pytest's.
    result = subprocess.run([sys.executable, "-m", "cluster.audit", "--file", str(tmp_path / "typo" / "audit.log"),
                             "--port", "0"], capture_output=True, text=True, timeout=60, check=False)
    said = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(said) == 1, result.stderr
    assert "is not a folder" in said[0] and "fix: pass the audit device's file_path" in said[0]
