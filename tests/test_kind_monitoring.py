"""The kind platform's audit pipeline as values and plan steps (cluster/kind/monitoring.py): the exporter beside
Vault reads the log the audit device writes, Prometheus scrapes only the evidence's two jobs, and nothing of it
is planned where there is no audit volume. The chart renders and server-side dry-runs are in
suites/platform/test_kind_manifests.py."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest
import yaml

from cluster.kind import manifests, monitoring
from cluster.kind.plan import install_plan
from cluster.kind.vaulttls import SECRET as VAULT_TLS_SECRET
from cluster.profile import DEFAULT_PROFILE, load_profile
from cluster.promconfig import AUDIT_JOB, VAULT_JOB

SETUP = load_profile(DEFAULT_PROFILE).setup


def _exporter(values: dict[str, Any]) -> dict[str, Any]:
    (container,) = values["server"]["extraContainers"]
    return dict(container)


@pytest.mark.parametrize("flavor", ["vault", "openbao"])
def test_the_exporter_beside_vault_reads_the_log_the_audit_device_writes(flavor: str) -> None:
    values = manifests.vault_values(flavor)
    storage = values["server"]["auditStorage"]
    assert storage["enabled"] is True and storage["mountPath"] == f"/{flavor}/audit"
    exporter = _exporter(values)
    # The chart names its audit volumeClaimTemplate "audit" (vault-helm templates/_helpers.tpl).
    assert exporter["volumeMounts"] == [{"name": "audit", "mountPath": f"/{flavor}/audit", "readOnly": True}]
    args = exporter["args"]
    assert args[args.index("--file") + 1] == monitoring.audit_log(flavor)
    assert args[args.index("--port") + 1] == str(monitoring.EXPORTER_PORT)
    assert "securityContext" not in exporter  # the pod's user is Vault's: it may read the 0600 log
    config = values["server"]["standalone"]["config"]
    assert "prometheus_retention_time" in config and "disable_hostname = true" in config
    if flavor == "openbao":  # declarative only; Vault's is enabled through the API at the same path
        assert re.search(r'audit "file" "file" \{\s*options \{\s*file_path = "' + re.escape(
            monitoring.audit_log(flavor)) + '"', config), config


def test_without_audit_there_is_no_volume_and_no_exporter() -> None:
    server = manifests.vault_values("vault", audit=False)["server"]
    assert "auditStorage" not in server and "extraContainers" not in server


def test_the_exporter_service_selects_vaults_server_pod() -> None:
    service = monitoring.exporter_service("openbao", "openbao", "tg-1")
    assert service["spec"]["selector"] == {"app.kubernetes.io/name": "openbao",
                                           "app.kubernetes.io/instance": "openbao", "component": "server"}
    assert service["spec"]["ports"][0]["port"] == monitoring.EXPORTER_PORT
    assert service["spec"]["publishNotReadyAddresses"] is True  # scraped while Vault is sealed, so not Ready


def test_prometheus_scrapes_the_two_evidence_jobs_every_second_with_the_token_and_ca_as_files() -> None:
    values = monitoring.prometheus_values("vault", "vault")
    jobs = {job["job_name"]: job for job in yaml.safe_load(values["extraScrapeConfigs"])}
    assert set(jobs) == {AUDIT_JOB, VAULT_JOB}
    assert jobs[AUDIT_JOB]["static_configs"] == [{"targets": ["vault-audit-exporter.vault.svc:9102"]}]
    vault = jobs[VAULT_JOB]
    assert vault["static_configs"] == [{"targets": ["vault.vault.svc:8200"]}] and vault["scheme"] == "https"
    volumes = {v["name"]: v["secret"] for v in values["server"]["extraVolumes"]}
    mounts = {volumes[m["name"]]["secretName"]: m["mountPath"] for m in values["server"]["extraVolumeMounts"]}
    assert vault["authorization"] == {"credentials_file": f"{mounts[monitoring.METRICS_TOKEN_SECRET]}/token"}
    assert vault["tls_config"] == {"ca_file": f"{mounts[VAULT_TLS_SECRET]}/ca.crt"}
    # Of Vault's TLS Secret, Prometheus gets the CA only, never Vault's key.
    assert next(v for v in volumes.values() if v["secretName"] == VAULT_TLS_SECRET)["items"] == [
        {"key": "ca.crt", "path": "ca.crt"}]
    assert values["server"]["global"]["scrape_interval"] == "1s"
    assert all(not values[name]["enabled"] for name in monitoring.SUBCHARTS)
    assert {alert["alert"] for group in values["serverFiles"]["alerting_rules.yml"]["groups"]
            for alert in group["rules"]} >= {"VaultAuditPipelineStale"}


def test_the_metrics_token_is_made_at_bring_up_and_never_in_the_plan() -> None:
    secret = monitoring.metrics_token_secret("vault", "hvs.not-a-real-token-0123456789abcdef", "tg-1")
    assert secret["kind"] == "Secret" and secret["stringData"] == {"token": "hvs.not-a-real-token-0123456789abcdef"}
    # The plan (what --dry-run prints) holds no such Secret: bring-up makes the token through the API at the
    # "monitoring" step and applies it there.
    steps = install_plan(SETUP, "tg-1", flavor="vault")
    assert not [d for step in steps for d in step.documents
                if d.get("kind") == "Secret" and d["metadata"]["name"] == monitoring.METRICS_TOKEN_SECRET]
    assert [step.action for step in steps].count("monitoring") == 1


@pytest.mark.parametrize(("external", "audit"), [(True, True), (False, False)])
def test_no_pipeline_is_planned_without_the_charts_audit_volume(external: bool, audit: bool) -> None:
    setup = SETUP if audit else dataclasses.replace(SETUP, vault=dataclasses.replace(SETUP.vault, audit=False))
    actions = [step.action for step in install_plan(setup, "tg-1", flavor="vault", external=external)]
    assert "monitoring" not in actions and "load-exporter-image" not in actions


def test_the_exporter_image_is_loaded_before_vaults_pod_needs_it() -> None:
    titles = [step.title for step in install_plan(SETUP, "tg-1", flavor="vault")]
    image = next(i for i, t in enumerate(titles) if "audit exporter's image" in t)
    vault = next(i for i, t in enumerate(titles) if t.startswith("vault ") and "(Helm)" in t)
    prometheus = next(i for i, t in enumerate(titles) if t.startswith("prometheus "))
    configure = next(i for i, t in enumerate(titles) if t.startswith("configure Vault"))
    assert image < vault < configure < prometheus
