"""Vault's audit log flows: a refusal made on purpose is in Prometheus, with its reason, within the policy's bound.

An audit device that is on but writes where nothing reads is no audit at all at 3 a.m.; so the check is
end to end: Vault refuses a read without a token under a namespace of the test's own, the exporter counts it
as ``permission_denied`` in that namespace, and Prometheus has the sample within
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

from cluster.audit.reasons import PERMISSION_DENIED
from cluster.errors import PlatformUnavailable
from cluster.platform import Platform
from cluster.profile import Policy
from cluster.promapi import PrometheusApi
from cluster.promconfig import AUDIT_JOB
from cluster.secrets import redact
from cluster.settings import Settings
from reports import attach
from scenarios.evidence import AuditEvidence, Bounds, ExpectedDenial, Window, prove

pytestmark = pytest.mark.conformance


def _prometheus(platform: Platform) -> str:
    try:
        return platform.prometheus_url()
    except PlatformUnavailable as err:
        pytest.skip(str(err))


def refuse_read(platform: Platform) -> ExpectedDenial:
    """Have Vault refuse, on purpose, a read without a token of a KV path under a namespace of its own
    (sdk/logical/error.go ErrPermissionDenied), and return the refusal the audit log must then show. The path
    is never HMACed, so this works on any cluster's audit device, tuned or not."""
    namespace = f"tg-audit-probe-{secrets.token_hex(4)}"
    with pytest.raises(hvac.exceptions.Forbidden):
        platform.vault_client().secrets.kv.v2.read_secret_version(
            path=f"{namespace}/probe", mount_point=platform.vault_layout.kv_path, raise_on_deleted_version=True)
    return ExpectedDenial(PERMISSION_DENIED, namespace=namespace)


def refusal_proven(platform: Platform, prometheus_url: str, policy: Policy) -> AuditEvidence:
    """refuse_read, then the refusal proven from that Prometheus within the policy's bounds (scenarios/evidence.py):
    the fault window is the refusal itself."""
    at = time.time()
    expected = refuse_read(platform)
    return prove(prometheus_url, expected, Window(at, time.time()), Bounds.from_policy(policy))


def exporter_page(url: str) -> str:
    """The audit exporter's metrics page, fetched where Prometheus scrapes it (its vault-audit target); where
    this process cannot reach that address (kind: the Service's cluster DNS name), the same series as
    Prometheus holds them, from its /federate endpoint."""
    targets = requests.get(f"{url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
    scraped = [t["scrapeUrl"] for t in targets if t.get("labels", {}).get("job") == AUDIT_JOB]
    if not scraped:
        return f"no {AUDIT_JOB} target in Prometheus"
    try:
        return requests.get(scraped[0], timeout=5).text
    except requests.RequestException as err:
        federated = requests.get(f"{url}/federate", params={"match[]": f'{{job="{AUDIT_JOB}"}}'}, timeout=5)
        return (f"# {scraped[0]} did not answer this process ({type(err).__name__}); the series Prometheus "
                f"scraped from it (/federate):\n{federated.text}")


def test_a_refusal_made_on_purpose_is_in_prometheus_within_the_bound(platform: Platform, settings: Settings) -> None:
    url = _prometheus(platform)
    evidence = refusal_proven(platform, url, settings.profile.policy)
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
    up = PrometheusApi(url).instant(f'up{{job="{AUDIT_JOB}"}}', time.time())
    assert up and up[0].points[-1][1] == 1, f"Prometheus does not scrape the audit exporter: {up}"
