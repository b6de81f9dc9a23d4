"""Vault's audit log flows: a refusal made on purpose is in Prometheus, with its reason, within the policy's bound.

An audit device that is on but writes where nothing reads is no audit at all at 3 a.m.; so the check is
end to end: Vault refuses a login to a role that does not exist (path_login.go, "invalid role name"), the
exporter counts it as ``role_missing`` under that role, and Prometheus has the sample within
``policy.audit_visible_within`` (scenarios/evidence.py). The answers, and the exporter's own metrics page
as Prometheus scrapes it, are kept in the run's reports (``audit/``), where the secret scan reads them.
"""

from __future__ import annotations

import json
import secrets
import time

import hvac
import pytest
import requests

from cluster.audit.reasons import ROLE_MISSING
from cluster.errors import PlatformUnavailable
from cluster.platform import Platform
from cluster.promapi import PrometheusApi
from cluster.secrets import redact
from cluster.settings import Settings
from reports import attach
from scenarios.evidence import Bounds, ExpectedDenial, Window, prove

pytestmark = pytest.mark.conformance


def _prometheus(platform: Platform) -> str:
    try:
        return platform.prometheus_url()
    except PlatformUnavailable as err:
        pytest.skip(str(err))


def refuse_login(platform: Platform, role: str) -> None:
    """Have Vault refuse a Kubernetes-auth login to ``role``, which does not exist."""
    client = platform.vault_client()
    with pytest.raises((hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden)):
        client.auth.kubernetes.login(role, "not-a-service-account-token",
                                     mount_point=platform.vault_layout.kubernetes_path)


def exporter_page(url: str) -> str:
    """The audit exporter's metrics page, fetched where Prometheus scrapes it (its vault-audit target)."""
    targets = requests.get(f"{url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
    scraped = [t["scrapeUrl"] for t in targets if t.get("labels", {}).get("job") == "vault-audit"]
    if not scraped:
        return "no vault-audit target in Prometheus"
    try:
        return requests.get(scraped[0], timeout=5).text
    except requests.RequestException as err:
        return f"{scraped[0]} did not answer this process: {type(err).__name__}"


def test_a_refusal_made_on_purpose_is_in_prometheus_within_the_bound(platform: Platform, settings: Settings) -> None:
    url = _prometheus(platform)
    role = f"tg-audit-probe-{secrets.token_hex(4)}"
    expected = ExpectedDenial(ROLE_MISSING, role=role, login=True)
    at = time.time()
    refuse_login(platform, role)
    policy = settings.profile.policy
    evidence = prove(url, expected, Window(at, time.time()),
                     Bounds(policy.audit_visible_within.total_seconds(), policy.alert_within.total_seconds()))
    folder = settings.run_report_dir / "audit"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "conformance-refusal.json").write_text(redact(json.dumps(evidence.as_json(), indent=1)))
    (folder / "exporter-metrics.txt").write_text(redact(exporter_page(url)))
    attach.figures("audit refusal", evidence.as_json())
    assert evidence.proven, (f"{evidence.judgement.detail}; fix: enable a file audit device and run the exporter "
                             "on its file (setup.vault.audit, python -m cluster.audit)")


def test_prometheus_evaluates_the_audit_alerts(platform: Platform) -> None:
    """The four alerts of cluster/audit/alerts.yaml are loaded, and the pipeline is not stale."""
    url = _prometheus(platform)
    rules = requests.get(f"{url}/api/v1/rules", timeout=5).json()["data"]["groups"]
    loaded = {rule["name"] for group in rules for rule in group["rules"] if rule.get("type") == "alerting"}
    assert {"MeshCaVaultLoginRefused", "VaultTokenDenials", "VaultDenialSpike", "VaultAuditPipelineStale"} <= loaded
    up = PrometheusApi(url).instant('up{job="vault-audit"}', time.time())
    assert up and up[0].points[-1][1] == 1, f"Prometheus does not scrape the audit exporter: {up}"
