"""Every istio-csr value the kind plan sets is one the istio-csr chart reads.

istio-csr's Go module is refused by the module proxy, so its chart cannot be rendered here (as the
cert-manager chart and Istio's install are, tests/test_kind_render.py). Instead, the value paths that
the chart's templates read were taken from the istio-csr chart v0.17.0 (tag v0.17.0, commit
241510c127d6c481619951c4cdd2b2c7a2434e67, deploy/charts/istio-csr/templates/*.yaml: every
``.Values.…`` reference). A value name the chart does not read would be silently ignored by helm.
Bump this list with the chart version in cluster/versions.toml [charts.istio_csr].
"""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from cluster.kind import manifests
from cluster.profile import DEFAULT_PROFILE, load_profile
from cluster.versions import VERSIONS_FILE

CHART_VERSION = "v0.17.0"
# .Values paths the v0.17.0 templates read; a map read whole (volumes, nodeSelector, ...) ends the path.
READ_BY_THE_CHART = frozenset((
    "affinity", "app.certmanager.additionalAnnotations", "app.certmanager.issuer.enabled",
    "app.certmanager.issuer.group", "app.certmanager.issuer.kind", "app.certmanager.issuer.name",
    "app.certmanager.namespace", "app.certmanager.preserveCertificateRequests",
    "app.controller.configmapNamespaceSelector", "app.controller.disableKubernetesClientRateLimiter",
    "app.controller.leaderElectionNamespace", "app.controller.maxConcurrentReconciles", "app.istio.namespace",
    "app.istio.revisions", "app.logFormat", "app.logLevel", "app.metrics.port", "app.metrics.service.enabled",
    "app.metrics.service.servicemonitor.enabled", "app.metrics.service.servicemonitor.interval",
    "app.metrics.service.servicemonitor.labels", "app.metrics.service.servicemonitor.prometheusInstance",
    "app.metrics.service.servicemonitor.scrapeTimeout", "app.metrics.service.type", "app.readinessProbe.path",
    "app.readinessProbe.port", "app.runtimeConfiguration.create", "app.runtimeConfiguration.issuer.group",
    "app.runtimeConfiguration.issuer.kind", "app.runtimeConfiguration.issuer.name", "app.runtimeConfiguration.name",
    "app.runtimeIssuanceConfigMap", "app.server.authenticators.enableClientCert",
    "app.server.caTrustedNodeAccounts", "app.server.clusterID", "app.server.maxCertificateDuration",
    "app.server.serving.address", "app.server.serving.certificateKeySize", "app.server.serving.port",
    "app.server.serving.signatureAlgorithm", "app.tls.certificateDNSNames", "app.tls.certificateDuration",
    "app.tls.istiodAdditionalDNSNames", "app.tls.istiodCertificateDuration", "app.tls.istiodCertificateEnable",
    "app.tls.istiodCertificateRenewBefore", "app.tls.istiodPrivateKeyAlgorithm", "app.tls.istiodPrivateKeySize",
    "app.tls.rootCAFile", "app.tls.trustDomain", "commonLabels", "deploymentAnnotations", "deploymentLabels",
    "extraObjects", "image", "image.pullPolicy", "imageNamespace", "imagePullSecrets", "imageRegistry",
    "nameOverride", "nodeSelector", "podAnnotations", "podDisruptionBudget.enabled",
    "podDisruptionBudget.maxUnavailable", "podDisruptionBudget.minAvailable", "podLabels", "priorityClassName",
    "replicaCount", "resources", "securityContext", "service.nodePort", "service.port", "service.type",
    "tolerations", "topologySpreadConstraints", "volumeMounts", "volumes",
))
# Where the values become istio-csr's flags (deploy/charts/istio-csr/templates/deployment.yaml at v0.17.0).
FLAGS = {"app.certmanager.issuer.name": "--issuer-name", "app.tls.rootCAFile": "--root-ca-file",
         "app.tls.trustDomain": "--trust-domain", "app.server.clusterID": "--cluster-id",
         "app.server.maxCertificateDuration": "--max-client-certificate-duration"}


def leaves(values: dict[str, Any], prefix: str = "") -> set[str]:
    """Value paths, down to a value the chart reads whole (a list, a scalar, or a map it reads as one)."""
    found = set()
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and path not in READ_BY_THE_CHART:
            found |= leaves(value, path + ".")
        else:
            found.add(path)
    return found


def test_the_pinned_chart_is_the_one_the_list_was_read_from() -> None:
    pinned = tomllib.loads(VERSIONS_FILE.read_text())["charts"]["istio_csr"]["version"]
    assert pinned == CHART_VERSION, f"re-read the value paths from the istio-csr chart {pinned} and update this test"


def test_every_istio_csr_value_we_set_is_read_by_the_chart() -> None:
    values = manifests.istio_csr_values(load_profile(DEFAULT_PROFILE).setup)
    unread = sorted(leaves(values) - READ_BY_THE_CHART)
    assert unread == [], f"istio-csr {CHART_VERSION} reads none of {unread}: helm would ignore them"


def test_the_values_our_plan_depends_on_reach_istio_csrs_flags() -> None:
    """The issuer, the root CA file, the trust domain and the largest certificate it may sign."""
    setup = load_profile(DEFAULT_PROFILE).setup
    values = manifests.istio_csr_values(setup)
    assert set(FLAGS) <= leaves(values)
    app = values["app"]
    assert app["certmanager"]["issuer"]["name"] == manifests.ISSUER
    assert app["certmanager"]["namespace"] == manifests.ISTIO_NS  # where the Issuer is
    assert app["tls"]["rootCAFile"].startswith(manifests.ROOT_CA_MOUNT + "/")
    assert {m["mountPath"] for m in values["volumeMounts"]} == {manifests.ROOT_CA_MOUNT}
    assert app["tls"]["trustDomain"] == setup.trust_domain
    assert app["server"]["maxCertificateDuration"] == f"{int(setup.mesh.cert_ttl.total_seconds())}s"


@pytest.mark.parametrize("typo", ["app.tls.trustdomain", "app.server.maxCertDuration"])
def test_a_value_name_the_chart_does_not_read_is_caught(typo: str) -> None:
    values = manifests.istio_csr_values(load_profile(DEFAULT_PROFILE).setup)
    node = values
    *parents, last = typo.split(".")
    for key in parents:
        node = node[key]
    node[last] = "x"
    assert typo in leaves(values) - READ_BY_THE_CHART
