"""What Prometheus is told to scrape, on every platform: the audit exporter and Vault's own metrics.

Two jobs, the names the evidence queries and cluster/audit/alerts.yaml use:

- ``vault-audit``: the audit exporter's ``/metrics`` (cluster/audit);
- ``vault``: Vault's ``/v1/sys/metrics?format=prometheus`` (Vault docs, "Prometheus" telemetry), with a token
  that may read only that path, read from a file at each scrape (``authorization.credentials_file``,
  Prometheus docs configuration/configuration.md), so it never sits in the configuration.

Both every second, as are the rules: the issue's goal is a denial in Prometheus within 2 s.
"""

from __future__ import annotations

SCRAPE_INTERVAL_S = 1
AUDIT_JOB = "vault-audit"
VAULT_JOB = "vault"
# Vault and OpenBao serve sys/metrics in Prometheus's format only with a retention set (website docs,
# configuration/telemetry: prometheus_retention_time, default 0 = off); no hostname prefix on the names.
TELEMETRY = 'telemetry {\n  prometheus_retention_time = "1h"\n  disable_hostname = true\n}\n'
METRICS_POLICY = 'path "sys/metrics" {\n  capabilities = ["read"]\n}\n'


def global_config() -> dict[str, str]:
    """prometheus.yml's ``global``: scrape and evaluate every SCRAPE_INTERVAL_S seconds."""
    every = f"{SCRAPE_INTERVAL_S}s"
    return {"scrape_interval": every, "evaluation_interval": every, "scrape_timeout": every}


def scrape_configs(*, exporter: str, vault: str, vault_ca: str | None, token_file: str) -> list[dict[str, object]]:
    """Both jobs. ``exporter`` and ``vault``: ``host:port``; ``vault_ca``: the CA file of Vault's TLS
    certificate (None: Vault listens in plaintext); ``token_file``: the metrics token's path as Prometheus sees it."""
    vault_job: dict[str, object] = {
        "job_name": VAULT_JOB, "metrics_path": "/v1/sys/metrics", "params": {"format": ["prometheus"]},
        "authorization": {"credentials_file": token_file}, "static_configs": [{"targets": [vault]}]}
    if vault_ca is not None:
        vault_job.update(scheme="https", tls_config={"ca_file": vault_ca})
    return [{"job_name": AUDIT_JOB, "static_configs": [{"targets": [exporter]}]}, vault_job]
