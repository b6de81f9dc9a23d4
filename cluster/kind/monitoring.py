"""The kind platform's audit pipeline (issue 15): Vault's audit log on its audit volume, the exporter beside
Vault, and Prometheus from the pinned prometheus-community chart, in Vault's namespace.

- The Vault (or OpenBao) chart mounts a volume at ``/<flavor>/audit`` (``server.auditStorage``); the file
  audit device writes ``audit.log`` there.
- The exporter (python -m cluster.audit, image ``trustgrid/audit-exporter:dev``, cluster/kind/exporterimage.py)
  runs as a second container of Vault's pod (``server.extraContainers``) with that volume mounted read-only.
  It has no securityContext of its own: it runs as the pod's user, Vault's, so it may read a log that Vault
  writes mode 0600 (the file device's default ``mode``).
- A Service of ours, ``vault-audit-exporter``, selects Vault's pod on the exporter's port (the chart's Services
  expose only 8200 and 8201).
- Prometheus (release ``prometheus``, Service ``prometheus-server`` on port 80) scrapes both jobs of
  cluster/promconfig.py every second and evaluates cluster/audit/alerts.yaml; it reads Vault's CA (only ``ca.crt`` of
  the Secret ``vault-tls``, never its key) and the metrics token (``vault-metrics-token``) as mounted files. The chart's
  own jobs and its four subcharts are off: only what the evidence reads is scraped.

Pure functions of the flavor and namespace, so that the render and server-side dry-run checks see what bring-up
installs. Not with ``--vault external``: that Vault is a container beside the nodes, with no audit volume.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

from cluster.kind import vaulttls
from cluster.kube import labels
from cluster.promconfig import global_config, scrape_configs

EXPORTER_IMAGE = "trustgrid/audit-exporter:dev"
EXPORTER_PORT = 9102
EXPORTER_SERVICE = "vault-audit-exporter"
PROMETHEUS_RELEASE = "prometheus"
PROMETHEUS_SERVICE = "prometheus-server"  # the chart's prometheus.server.fullname for release "prometheus"
PROMETHEUS_PORT = 80  # the chart's server.service.servicePort
METRICS_TOKEN_SECRET = "vault-metrics-token"  # noqa: S105 - a Secret object's name
METRICS_MOUNT = "/etc/vault-metrics"  # where the metrics token file is mounted
CA_MOUNT = "/etc/vault-tls"
# The chart's default jobs (values.yaml scrapeConfigs), each turned off.
CHART_JOBS = ("prometheus", "kubernetes-api-servers", "kubernetes-nodes", "kubernetes-nodes-cadvisor",
              "kubernetes-service-endpoints", "kubernetes-service-endpoints-slow", "prometheus-pushgateway",
              "kubernetes-services", "kubernetes-pods", "kubernetes-pods-slow")
SUBCHARTS = ("alertmanager", "kube-state-metrics", "prometheus-node-exporter", "prometheus-pushgateway")


def audit_dir(flavor: str) -> str:
    """Where the chart mounts the audit volume: ``/vault/audit`` or ``/openbao/audit``."""
    return f"/{flavor}/audit"


def audit_log(flavor: str) -> str:
    """The file audit device's path in Vault's pod."""
    return f"{audit_dir(flavor)}/audit.log"


def server_pod_labels(flavor: str) -> dict[str, str]:
    """The labels both charts put on the server's pod (templates/server-statefulset.yaml)."""
    return {"app.kubernetes.io/name": flavor, "app.kubernetes.io/instance": flavor, "component": "server"}


def vault_server_values(flavor: str) -> dict[str, Any]:
    """The part of the Vault chart's ``server`` values that adds the audit volume and the exporter beside Vault."""
    exporter = {
        "name": "audit-exporter", "image": EXPORTER_IMAGE, "imagePullPolicy": "IfNotPresent",
        "args": ["--file", audit_log(flavor), "--port", str(EXPORTER_PORT), "--host", "0.0.0.0"],  # noqa: S104
        "ports": [{"name": "audit-metrics", "containerPort": EXPORTER_PORT}],
        "volumeMounts": [{"name": "audit", "mountPath": audit_dir(flavor), "readOnly": True}],
        "readinessProbe": {"httpGet": {"path": "/metrics", "port": EXPORTER_PORT}, "periodSeconds": 2},
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
    }
    return {"auditStorage": {"enabled": True, "size": "1Gi", "mountPath": audit_dir(flavor)},
            "extraContainers": [exporter]}


def exporter_service(namespace: str, flavor: str, run_id: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": EXPORTER_SERVICE, "namespace": namespace, "labels": labels(run_id)},
            # Vault's pod is not Ready while sealed (its readiness is `vault status`), yet the exporter beside it
            # keeps counting: Prometheus must scrape it then too, as vault-helm's own Services do for Vault.
            "spec": {"selector": server_pod_labels(flavor), "publishNotReadyAddresses": True,
                     "ports": [{"name": "audit-metrics", "port": EXPORTER_PORT, "targetPort": EXPORTER_PORT}]}}


def metrics_token_secret(namespace: str, token: str, run_id: str) -> dict[str, Any]:
    """The token that may read only sys/metrics (VaultConfigurator.metrics_token), as Prometheus reads it."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": METRICS_TOKEN_SECRET, "namespace": namespace, "labels": labels(run_id)},
            "stringData": {"token": token}}


def alert_rules() -> dict[str, Any]:
    """cluster/audit/alerts.yaml, the rules the local platform's Prometheus loads too."""
    return dict(yaml.safe_load(resources.files("cluster.audit").joinpath("alerts.yaml").read_text()))


def prometheus_values(flavor: str, namespace: str) -> dict[str, Any]:
    """Values for the prometheus chart: the server alone, no persistent volume, both jobs, the alert rules."""
    jobs = scrape_configs(exporter=f"{EXPORTER_SERVICE}.{namespace}.svc:{EXPORTER_PORT}",
                          vault=f"{flavor}.{namespace}.svc:8200", vault_ca=f"{CA_MOUNT}/ca.crt",
                          token_file=f"{METRICS_MOUNT}/token")
    # Only ca.crt of Vault's TLS Secret: its key stays in Vault's pod.
    volumes = [{"name": "vault-metrics-token", "secret": {"secretName": METRICS_TOKEN_SECRET}},
               {"name": "vault-ca", "secret": {"secretName": vaulttls.SECRET,
                                               "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]
    mounts = [{"name": "vault-metrics-token", "mountPath": METRICS_MOUNT, "readOnly": True},
              {"name": "vault-ca", "mountPath": CA_MOUNT, "readOnly": True}]
    return {
        **{name: {"enabled": False} for name in SUBCHARTS},
        # Static targets only: no Kubernetes service discovery, so no ClusterRole, and nothing cluster-wide that
        # the namespace's deletion (--reuse-cluster's reset, cluster/kind/plan.py) would leave behind.
        "rbac": {"create": False},
        "server": {"global": global_config(), "persistentVolume": {"enabled": False}, "retention": "1d",
                   "extraVolumes": volumes, "extraVolumeMounts": mounts},
        "scrapeConfigs": {name: {"enabled": False} for name in CHART_JOBS},
        "extraScrapeConfigs": yaml.safe_dump(jobs, sort_keys=False),
        "serverFiles": {"alerting_rules.yml": alert_rules()},
    }
