"""The local platform's monitoring: the audit exporter and the Debian ``prometheus`` server, on loopback.

Prometheus scrapes, every second, the exporter (job ``vault-audit``, cluster/audit) and OpenBao's own
``/v1/sys/metrics?format=prometheus`` (job ``vault``, with a token that may read only that path), and
evaluates cluster/audit/alerts.yaml every second. Both run as processes of the run, logged and stopped
with it; the exporter can be stopped and started again on its own (the test that breaks the evidence
pipeline on purpose).
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import requests
import yaml

from cluster.errors import BinaryMissing
from cluster.local.process import ManagedProcess, free_port
from cluster.promconfig import global_config, scrape_configs
from cluster.runstate import RunState

CONFIG_FILE = "monitoring/monitoring.json"
EXPORTER = "audit-exporter"
PROMETHEUS = "prometheus"


@dataclass(frozen=True)
class MonitoringConfig:
    """Where the run's exporter and Prometheus listen (loopback ports) and what they read."""

    audit_log: str
    exporter_port: int
    prometheus_port: int
    vault_addr: str  # https://127.0.0.1:PORT, as this host reaches OpenBao
    vault_ca: str
    vault_token_file: str  # the metrics token, mode 0600, read by Prometheus at each scrape
    kv_mount: str

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    @property
    def exporter_url(self) -> str:
        return f"http://127.0.0.1:{self.exporter_port}/metrics"


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        raise BinaryMissing("the prometheus server is not installed", fix="run ./scripts/bootstrap (apt prometheus)")
    return found


def prometheus_config(config: MonitoringConfig, rules: Path) -> dict[str, object]:
    """prometheus.yml (Prometheus docs, configuration/configuration.md): both jobs and the alert rules."""
    return {"global": global_config(), "rule_files": [str(rules)],
            "scrape_configs": scrape_configs(exporter=f"127.0.0.1:{config.exporter_port}",
                                             vault=config.vault_addr.removeprefix("https://"),
                                             vault_ca=config.vault_ca, token_file=config.vault_token_file)}


def write_config(state: RunState, *, audit_log: Path, vault_addr: str, vault_ca: Path, vault_token: str,
                 kv_mount: str) -> MonitoringConfig:
    """Claim both ports, keep the metrics token (0600) and write both configurations into the state dir."""
    token_file = state.write_private("monitoring/vault-token", vault_token)
    config = MonitoringConfig(
        audit_log=str(audit_log), exporter_port=free_port(),
        prometheus_port=free_port(), vault_addr=vault_addr, vault_ca=str(vault_ca),
        vault_token_file=str(token_file), kv_mount=kv_mount)
    rules = state.file("monitoring/alerts.yaml")
    rules.write_text(resources.files("cluster.audit").joinpath("alerts.yaml").read_text())
    state.file("monitoring/prometheus.yml").write_text(yaml.safe_dump(prometheus_config(config, rules)))
    state.write_private(CONFIG_FILE, json.dumps(asdict(config)))
    return config


def read_config(state: RunState) -> MonitoringConfig | None:
    """The run's monitoring (None where the platform was started without it)."""
    path = state.file(CONFIG_FILE)
    return MonitoringConfig(**json.loads(path.read_text())) if path.exists() else None


def exporter_process(state: RunState, config: MonitoringConfig, *, owner: bool) -> ManagedProcess:
    """The audit exporter; it counts from the log's end (what Vault writes from now on)."""
    argv = [sys.executable, "-m", "cluster.audit", "--file", config.audit_log, "--port", str(config.exporter_port),
            "--kv-mount", config.kv_mount]
    return ManagedProcess(EXPORTER, argv, state, die_with_parent=owner)


def prometheus_process(state: RunState, config: MonitoringConfig, *, owner: bool) -> ManagedProcess:
    data = state.file("monitoring/tsdb")
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    argv = [prometheus_binary(), f"--config.file={state.file('monitoring/prometheus.yml')}",
            f"--storage.tsdb.path={data}", f"--web.listen-address=127.0.0.1:{config.prometheus_port}",
            "--storage.tsdb.retention.time=1d", "--log.level=warn"]
    return ManagedProcess(PROMETHEUS, argv, state, die_with_parent=owner)


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def wait_exporter(process: ManagedProcess, config: MonitoringConfig) -> None:
    process.wait_ready(lambda: answers(config.exporter_url), timeout=30, describe="the audit exporter's /metrics")


def wait_prometheus(process: ManagedProcess, config: MonitoringConfig) -> None:
    process.wait_ready(lambda: answers(f"{config.prometheus_url}/-/ready"), timeout=60,
                       describe="Prometheus /-/ready")
