"""The audit evidence's judgement (scenarios/evidence.py), its PromQL, the Prometheus API's answers
(cluster/promapi.py) and the local Prometheus's configuration: pure logic, no server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from cluster.audit.exporter import denial
from cluster.errors import SettingsError
from cluster.local.monitoring import MonitoringConfig, prometheus_config
from cluster.promapi import PrometheusUnavailable, parse_answer
from cluster.settings import build_settings
from scenarios.evidence import Bounds, ExpectedDenial, Window, counted, judge

FIXTURES = Path(__file__).parent / "fixtures" / "audit"
TOKEN = ExpectedDenial("token_invalid", namespace="t-app-1", role="t-app-1", alert="VaultTokenDenials")
LOGIN = ExpectedDenial("role_missing", namespace="t-app-1", role="t-app-1", login=True)
WINDOW = Window(fault_at=1000.0, restored_at=1020.0)
BOUNDS = Bounds(visible_s=10, alert_s=10, before_s=30)


def steps(values: dict[float, float], start: float = 970, end: float = 1045) -> list[tuple[float, float]]:
    """A step-evaluated counter: each step holds the last value set at or before it (absent before the first)."""
    points, current = [], None
    for t in range(int(start), int(end) + 1):
        current = values.get(float(t), current)
        if current is not None:
            points.append((float(t), current))
    return points


def test_a_rise_inside_the_window_with_its_alert_is_proven() -> None:
    verdict = judge(TOKEN, steps({1004: 1, 1006: 5}), [1005.0, 1006.0], WINDOW, BOUNDS)
    assert verdict.proven, verdict.detail
    assert verdict.seen_after_fault_s == 4 and verdict.alert_after_seen_s == 1


def test_a_counter_that_rose_before_the_fault_is_not_the_faults() -> None:
    verdict = judge(TOKEN, steps({980: 1, 1004: 3}), [1005.0], WINDOW, BOUNDS)
    assert not verdict.proven and "1 counted in the 30 s before the fault" in verdict.detail


def test_an_older_count_that_stayed_flat_is_a_baseline() -> None:
    verdict = judge(LOGIN, steps({970: 7, 1010: 8}), [], WINDOW, BOUNDS)
    assert verdict.proven, verdict.detail
    assert "(1 counted by then)" in verdict.detail


def test_a_restarted_exporter_counting_afresh_is_a_rise_not_a_drop() -> None:
    """The exporter restarted: its series went stale and came back at 1 (Prometheus's reset rule)."""
    points = [p for p in steps({970: 3, 1008: 1}) if not 995 <= p[0] < 1008]  # absent while it was down
    assert counted(points)[-1] == (1045.0, 4.0)
    verdict = judge(LOGIN, points, [], WINDOW, BOUNDS)
    assert verdict.proven and verdict.seen_after_fault_s == 8, verdict.detail


def test_times_off_the_second_judge_a_flat_counter_flat() -> None:
    """A fault between two whole seconds: the points are asked for from fault - 30 s, and a counter flat
    since long before is no rise before the fault."""
    window = Window(fault_at=1000.124, restored_at=1020.5)
    points = [(1000.124 - 30 + i, 3.0) for i in range(60)] + [(1000.124 + 30 + i, 4.0) for i in range(3)]
    assert judge(LOGIN, sorted(points), [], window, BOUNDS).proven


def test_no_rise_means_not_audited() -> None:
    verdict = judge(TOKEN, [], [], WINDOW, BOUNDS)
    assert not verdict.proven and "not in Prometheus" in verdict.detail


def test_a_rise_first_seen_beyond_the_visibility_bound_fails() -> None:
    verdict = judge(LOGIN, steps({1031: 1}), [], WINDOW, BOUNDS)
    assert not verdict.proven and "audit_visible_within" in verdict.detail


def test_an_alert_that_fires_late_or_never_fails() -> None:
    late = judge(TOKEN, steps({1004: 1}), [1020.0], WINDOW, BOUNDS)
    never = judge(TOKEN, steps({1004: 1}), [], WINDOW, BOUNDS)
    assert not late.proven and "first at 16.0 s" in late.detail
    assert not never.proven and "(never)" in never.detail


@given(refused=st.floats(1000.01, 1020), scraped=st.floats(0, 8.9), alerted=st.integers(0, 10))
def test_any_refusal_in_the_window_seen_and_alerted_within_the_bounds_is_proven(
        refused: float, scraped: float, alerted: int) -> None:
    at = float(int(refused + scraped) + 1)  # the first step that sees the scraped sample
    verdict = judge(TOKEN, steps({at: 2}), [at + alerted], WINDOW, BOUNDS)
    assert verdict.proven, verdict.detail


def test_the_queries_name_the_reason_and_who() -> None:
    assert TOKEN.counter == 'sum(vault_audit_denials_total{reason="token_invalid",namespace="t-app-1"})'
    assert LOGIN.counter == 'sum(vault_audit_login_refusals_total{reason="role_missing",role="t-app-1"})'
    assert TOKEN.alert_query == 'ALERTS{alertname="VaultTokenDenials",alertstate="firing",namespace="t-app-1"}'
    # The scenario's refusals by reason: its namespace's requests, and its role's logins, never both twice.
    assert LOGIN.scopes == ('namespace="t-app-1"', 'namespace="-",role="t-app-1"')
    tricky = ExpectedDenial("other", namespace='a"b')
    assert 'namespace="a\\"b"' in tricky.counter


def test_prometheus_answers_are_parsed_and_refusals_raised() -> None:
    vector = {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"reason": "sealed"}, "value": [1000.5, "3"]}]}}
    matrix = {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {}, "values": [[1000, "1"], [1001, "NaN"]]}]}}
    assert parse_answer(vector)[0].labels == {"reason": "sealed"}
    assert parse_answer(vector)[0].points == ((1000.5, 3.0),)
    assert parse_answer(matrix)[0].points[0] == (1000.0, 1.0)
    with pytest.raises(PrometheusUnavailable, match="bad_data: parse error"):
        parse_answer({"status": "error", "errorType": "bad_data", "error": "parse error"})
    with pytest.raises(PrometheusUnavailable, match="not a JSON object"):
        parse_answer(["nope"])


def test_the_local_prometheus_scrapes_both_and_loads_the_rules(tmp_path: Path) -> None:
    config = MonitoringConfig(audit_log="/x/audit.log", exporter_port=9101, prometheus_port=9090,
                              vault_addr="https://127.0.0.1:8200", vault_ca="/x/ca.crt",
                              vault_token_file="/x/token", kv_mount="secret")
    rendered = yaml.safe_load(yaml.safe_dump(prometheus_config(config, tmp_path / "alerts.yaml")))
    jobs = {job["job_name"]: job for job in rendered["scrape_configs"]}
    assert jobs["vault-audit"]["static_configs"][0]["targets"] == ["127.0.0.1:9101"]
    vault = jobs["vault"]
    assert vault["metrics_path"] == "/v1/sys/metrics" and vault["params"] == {"format": ["prometheus"]}
    assert vault["authorization"] == {"credentials_file": "/x/token"}  # the token never in the config itself
    assert rendered["rule_files"] == [str(tmp_path / "alerts.yaml")]
    assert rendered["global"]["scrape_interval"] == "1s"


def test_a_refused_login_is_never_an_unknown_token() -> None:
    """A login's plain "permission denied" is its JWT refused (a deleted service account), even when the
    client sent a stale token along."""
    lines = [json.loads(line) for line in (FIXTURES / "openbao-audit.jsonl").read_bytes().splitlines()]
    login = next(e for e in lines if e["type"] == "response" and e["request"]["path"].endswith("/login")
                 and e.get("error"))
    login = {**login, "error": "permission denied", "request": {**login["request"], "client_token": "hmac-sha256:x"}}
    found = denial(login)
    assert found is not None and found.login and found.reason == "permission_denied"


def test_a_prometheus_url_with_credentials_is_refused_before_they_reach_a_report() -> None:
    with pytest.raises(SettingsError, match="carries credentials") as refused:
        build_settings({"platform": "kind", "prometheus_url": "http://user:pass@prom:9090"}, {})
    assert "pass" not in str(refused.value).replace("password", "")


@pytest.mark.parametrize("url", ["prometheus:9090", "http://", "ftp://x"])
def test_a_bad_prometheus_url_gets_one_line(url: str) -> None:
    with pytest.raises(SettingsError, match="is not a URL"):
        build_settings({"platform": "kind", "prometheus_url": url}, {})


def test_the_local_platform_runs_its_own_prometheus() -> None:
    with pytest.raises(SettingsError, match="drop --prometheus-url"):
        build_settings({"platform": "local", "prometheus_url": "http://127.0.0.1:9090"}, {})
    kind = build_settings({"platform": "kind", "prometheus_url": "http://127.0.0.1:9090/"}, {})
    assert kind.prometheus_url == "http://127.0.0.1:9090"
