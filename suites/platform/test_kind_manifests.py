"""Every manifest the kind platform applies passes a server-side dry-run here.

The local API server has the real Istio and cert-manager CRDs, so a typo in
a field, a wrong apiVersion or a value outside an enum is refused now, on a
machine without Docker, instead of on a user's laptop.
"""

from __future__ import annotations

import contextlib
import copy
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError

from cluster.istio import CANARY_REVISION
from cluster.kind import manifests, monitoring
from cluster.kind.helmbuild import cert_manager_chart, find_helm, prometheus_chart, vault_chart
from cluster.kind.plan import load_kind_pins
from cluster.kind.render import find, node_kube_version, render_chart, render_istio
from cluster.kind.vaulttls import make_vault_tls, tls_secret
from cluster.kube import Kube
from cluster.local.istiobuild import find_istio
from cluster.platform import Platform
from cluster.promconfig import AUDIT_JOB, VAULT_JOB
from cluster.runstate import cache_dir
from cluster.settings import Settings
from cluster.vault import PluginCa, VaultConfigurator

ROOT_PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"  # shape only: never parsed
# The namespace controller empties a namespace before it goes (cluster/local/controllermanager.py).
NAMESPACE_GONE_S = 60.0


def dry_run_apply(dynamic: DynamicClient, obj: dict[str, Any]) -> None:
    """A dry-run (dryRun=All) of ``obj`` as a whole: validated against its schema and stored nowhere.

    A new object goes by server-side apply. One the local platform already has (the mesh-wide
    PeerAuthentication, istiod's webhook) goes by a replace at its resourceVersion: an apply would merge
    our fields into the live object's, and judge that mix (a webhook with both the live url and our service).
    """
    resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    namespace = obj["metadata"].get("namespace")
    try:
        live = resource.get(name=obj["metadata"]["name"], namespace=namespace)
    except NotFoundError:
        dynamic.server_side_apply(resource, body=obj, namespace=namespace, field_manager="trustgrid-dry-run",
                                  dry_run="All")
        return
    body = copy.deepcopy(obj)
    body["metadata"]["resourceVersion"] = live.metadata.resourceVersion
    resource.replace(body=body, namespace=namespace, dry_run="All")


@contextlib.contextmanager
def namespaces_for(kube: Kube, objs: list[dict[str, Any]], run_id: str) -> Iterator[None]:
    """A namespaced dry-run needs its namespace to exist; create only the missing ones, remove them after.

    A namespace that an earlier check made and deleted may still be Terminating: it is waited out and made
    again, and ours are waited out on the way out too, so the next check never meets one half gone."""
    wanted = sorted({o["metadata"]["namespace"] for o in objs if o["metadata"].get("namespace")})
    phases = {name: kube.namespace_phase(name) for name in wanted}
    for name, phase in phases.items():
        if phase == "Terminating":
            kube.wait_namespace_gone(name, NAMESPACE_GONE_S)
    made = [name for name, phase in phases.items() if phase != "Active"]
    try:
        for name in made:
            kube.ensure_namespace(name, run_id)
        yield
    finally:
        for name in made:
            kube.delete_namespace(name)
        for name in made:
            kube.wait_namespace_gone(name, NAMESPACE_GONE_S)


@pytest.fixture
def kind_objects(settings: Settings, platform: Platform) -> list[dict[str, Any]]:
    vault = manifests.VaultTarget(namespace="vault", address="https://vault.vault.svc:8200", flavor="vault")
    tls = make_vault_tls("vault", "vault")
    objs = manifests.all_manifests(settings.profile.setup, vault, platform.run_id, root_pem=ROOT_PEM,
                                   vault_ca=tls.ca_pem, app_ns="tg-kind-app", legacy_ns="tg-kind-legacy")
    objs.append(tls_secret("vault", tls, platform.run_id))
    objs.append(manifests.cacerts_secret(PluginCa(ROOT_PEM, "not-a-key", ROOT_PEM), platform.run_id))
    return objs


def test_a_namespace_made_for_a_dry_run_is_gone_before_the_next_check(platform: Platform, kube: Kube) -> None:
    """CI once failed here: one check deleted cert-manager and the next found it still Terminating (403 "being
    terminated", then 404). Two checks in a row on the same namespace both find it Active, and after them it is
    gone, not going."""
    name = f"tg-dryrun-{secrets.token_hex(3)}"
    obj = {"kind": "ConfigMap", "metadata": {"name": "probe", "namespace": name}}
    for _ in range(2):
        with namespaces_for(kube, [obj], platform.run_id):
            assert kube.namespace_phase(name) == "Active"
        assert kube.namespace_phase(name) is None


def test_every_kind_manifest_passes_a_server_side_dry_run(platform: Platform, kube: Kube,
                                                          kind_objects: list[dict[str, Any]]) -> None:
    dynamic = DynamicClient(platform.kube)
    kinds = {o["kind"] for o in kind_objects}
    assert {"Issuer", "PeerAuthentication", "AuthorizationPolicy", "Deployment", "Role"} <= kinds
    refused = refusals(dynamic, kube, kind_objects, platform.run_id)
    assert refused == [], "\n".join(refused)


def refusals(dynamic: DynamicClient, kube: Kube, objs: list[dict[str, Any]], run_id: str) -> list[str]:
    """Each object's server-side dry-run, in order; one line per refusal (kind, namespace/name, the server's words)."""
    namespaced = [o for o in objs if o["kind"] != "Namespace"]
    refused = []
    with namespaces_for(kube, namespaced, run_id):
        for obj in objs:
            try:
                dry_run_apply(dynamic, obj)
            except ApiException as err:
                refused.append(f"{obj['kind']} {obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}: "
                               f"{err.status} {err.reason}: {str(err.body)[:300]}")
    return refused


@pytest.mark.parametrize("ca", ["istio-csr", "plugin"])
def test_every_object_istioctl_would_install_passes_a_server_side_dry_run(
        platform: Platform, kube: Kube, settings: Settings, ca: str) -> None:
    """Rendered by the real istioctl from our IstioOperator (cluster/kind/render.py): its CRDs, istiod's
    Deployment, webhooks and RBAC are each validated by the API server, as `istioctl install` would send them."""
    rendered = render_istio(find_istio(cache_dir()).istioctl, manifests.istio_operator(settings.profile.setup, ca=ca))
    assert {"CustomResourceDefinition", "Deployment", "MutatingWebhookConfiguration", "ConfigMap"} <= {
        o["kind"] for o in rendered}
    refused = refusals(DynamicClient(platform.kube), kube, rendered, platform.run_id)
    assert refused == [], "\n".join(refused)


@pytest.mark.parametrize(("kind", "path", "value"), [
    ("Issuer", ("spec", "vault", "auth", "kubernetes", "serviceAccountRef", "nmae"), "x"),
    ("PeerAuthentication", ("spec", "mtls", "mode"), "MOSTLY"),
    ("Deployment", ("spec", "replicas"), "one"),
])
def test_the_dry_run_refuses_a_broken_manifest(platform: Platform, kube: Kube, kind_objects: list[dict[str, Any]],
                                               kind: str, path: tuple[str, ...], value: object) -> None:
    """The check can fail: a misspelt field, a value outside an enum and a wrong type are each refused."""
    broken = copy.deepcopy(next(o for o in kind_objects if o["kind"] == kind))
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with namespaces_for(kube, [broken], platform.run_id), pytest.raises(ApiException) as refused:
        dry_run_apply(DynamicClient(platform.kube), broken)
    # Server-side apply reports a field outside the schema as 500 "failed to create typed patch object";
    # so the refusal must name what was broken, or it could be any server error.
    message = str(refused.value.body)
    assert refused.value.status in (400, 422, 500), message
    assert path[-1] in message or str(value) in message, message


def test_the_plugin_ca_is_an_intermediate_signed_by_the_live_vault_root(platform: Platform, settings: Settings,
                                                                        kube: Kube) -> None:
    """`ca: plugin` on kind: istiod's cacerts come from Vault's root; here with the real OpenBao and API server."""
    configurator = VaultConfigurator(platform.vault_admin(), platform.vault_layout, settings.profile.setup,
                                     platform.run_id)
    ca = configurator.sign_plugin_ca()
    cert = x509.load_pem_x509_certificate(ca.cert_pem.encode())
    root = x509.load_pem_x509_certificate(ca.root_pem.encode())
    live_root = platform.vault_admin().adapter.get(f"/v1/{platform.vault_layout.pki_root_path}/cert/ca")
    assert ca.root_pem.strip() == live_root["data"]["certificate"].strip()
    cert.verify_directly_issued_by(root)  # raises unless the root's key signed it
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0
    key = serialization.load_pem_private_key(ca.key_pem.encode(), password=None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]
    assert ca.key_pem not in repr(ca)
    secret = manifests.cacerts_secret(ca, platform.run_id)
    with namespaces_for(kube, [secret], platform.run_id):
        dry_run_apply(DynamicClient(platform.kube), secret)


def test_every_object_of_the_cert_manager_chart_passes_a_server_side_dry_run(platform: Platform, kube: Kube) -> None:
    """The chart from cert-manager's Go module, rendered by helm with our values (cluster/kind/render.py):
    what `helm upgrade --install` would send, each object validated by the API server."""
    rendered = render_chart(find_helm(cache_dir()), cert_manager_chart(), "cert-manager", manifests.CERT_MANAGER_NS,
                            manifests.cert_manager_values(),
                            kube_version=node_kube_version(load_kind_pins().node_image))
    assert {"CustomResourceDefinition", "Deployment", "ValidatingWebhookConfiguration", "Job"} <= {
        o["kind"] for o in rendered}
    refused = refusals(DynamicClient(platform.kube), kube, rendered, platform.run_id)
    assert refused == [], "\n".join(refused)


def test_every_object_of_the_vault_chart_passes_a_server_side_dry_run(platform: Platform, kube: Kube) -> None:
    """The chart from the vault-helm module with our values: server mode, TLS from the run's Secret."""
    rendered = render_chart(find_helm(cache_dir()), vault_chart(), "vault", "vault", manifests.vault_values("vault"),
                            kube_version=node_kube_version(load_kind_pins().node_image))
    assert {"StatefulSet", "Service", "ConfigMap", "ClusterRoleBinding"} <= {o["kind"] for o in rendered}
    # The audit volume and the exporter beside Vault (cluster/kind/monitoring.py): the claim the exporter mounts
    # is one the chart makes, and the exporter's Service selects the pod the chart labels.
    server = find(rendered, "StatefulSet", "vault")["spec"]
    claims = {claim["metadata"]["name"] for claim in server["volumeClaimTemplates"]}
    pod = server["template"]["spec"]
    exporter = next(c for c in pod["containers"] if c["name"] == "audit-exporter")
    vault = next(c for c in pod["containers"] if c["name"] == "vault")
    assert {mount["name"] for mount in exporter["volumeMounts"]} <= claims
    assert exporter["image"] == monitoring.EXPORTER_IMAGE
    # It reads what Vault writes: the same volume at the same path, as the same user (the pod's; the file
    # device writes mode 0600), so it may read the log.
    audit_mounts = {c["name"]: next(m["mountPath"] for m in c["volumeMounts"] if m["name"] == "audit")
                    for c in (vault, exporter)}
    assert set(audit_mounts.values()) == {monitoring.audit_dir("vault")}, audit_mounts
    assert pod["securityContext"]["runAsUser"] and "runAsUser" not in exporter.get("securityContext", {})
    labels = server["template"]["metadata"]["labels"]
    service = monitoring.exporter_service("vault", "vault", platform.run_id)
    assert service["spec"]["selector"].items() <= labels.items(), labels
    refused = refusals(DynamicClient(platform.kube), kube, [*rendered, service], platform.run_id)
    assert refused == [], "\n".join(refused)


def test_the_prometheus_chart_renders_the_audit_pipeline_and_passes_a_server_side_dry_run(
        platform: Platform, kube: Kube, tmp_path: Path) -> None:
    """The chart from the prometheus-community module with our values: the server alone, both evidence jobs,
    the alert rules, the token and CA as files; promtool checks the configuration and rules it renders, and the
    API server validates each object, with the metrics token's Secret and the exporter's Service beside them."""
    rendered = render_chart(find_helm(cache_dir()), prometheus_chart(), monitoring.PROMETHEUS_RELEASE, "vault",
                            monitoring.prometheus_values("vault", "vault"),
                            kube_version=node_kube_version(load_kind_pins().node_image))
    # Nothing cluster-wide (no service discovery, so no RBAC), no subchart, no persistent volume.
    assert {o["kind"] for o in rendered} == {"ConfigMap", "Deployment", "Service", "ServiceAccount"}, rendered
    data = find(rendered, "ConfigMap", monitoring.PROMETHEUS_SERVICE)["data"]
    config = yaml.safe_load(data["prometheus.yml"])
    assert [job["job_name"] for job in config["scrape_configs"]] == [AUDIT_JOB, VAULT_JOB]
    assert config["global"]["evaluation_interval"] == "1s"
    (tmp_path / "prometheus.yml").write_text(data["prometheus.yml"])
    (tmp_path / "alerting_rules.yml").write_text(data["alerting_rules.yml"])
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is not installed: run ./scripts/bootstrap"
    checked = subprocess.run([promtool, "check", "config", "--syntax-only", str(tmp_path / "prometheus.yml")],
                             capture_output=True, text=True, timeout=60, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    rules = subprocess.run([promtool, "check", "rules", str(tmp_path / "alerting_rules.yml")],
                           capture_output=True, text=True, timeout=60, check=False)
    assert rules.returncode == 0 and "4 rules found" in rules.stdout, rules.stdout + rules.stderr
    pod = find(rendered, "Deployment", monitoring.PROMETHEUS_SERVICE)["spec"]["template"]["spec"]
    mounted = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert {monitoring.METRICS_TOKEN_SECRET, "vault-tls"} <= mounted
    assert find(rendered, "Service", monitoring.PROMETHEUS_SERVICE)["spec"]["ports"][0]["port"] == \
        monitoring.PROMETHEUS_PORT
    beside = [monitoring.metrics_token_secret("vault", "not-a-token", platform.run_id),
              monitoring.exporter_service("vault", "vault", platform.run_id)]
    refused = refusals(DynamicClient(platform.kube), kube, [*rendered, *beside], platform.run_id)
    assert refused == [], "\n".join(refused)


def test_every_object_of_the_canary_revision_passes_a_server_side_dry_run(platform: Platform, kube: Kube,
                                                                         settings: Settings) -> None:
    """suites/upgrade on kind: what `istioctl install --revision R` would add beside the running istiod
    (cluster/kind/upgradeplan.py), rendered by the real istioctl, each object validated by the API server;
    and a moved namespace as the plan's `kubectl label` leaves it."""
    revision = CANARY_REVISION
    setup = settings.profile.setup
    rendered = render_istio(find_istio(cache_dir()).istioctl, manifests.istio_operator(setup, ca=setup.mesh.ca),
                            revision=revision)
    for kind, name in [("Deployment", f"istiod-{revision}"), ("ConfigMap", f"istio-{revision}"),
                       ("ConfigMap", f"istio-sidecar-injector-{revision}"), ("Service", f"istiod-{revision}")]:
        find(rendered, kind, name)  # KeyError naming what was rendered instead
    webhook = find(rendered, "MutatingWebhookConfiguration", f"istio-sidecar-injector-{revision}")
    # The precedence the plan's relabel relies on: the revision's webhook injects only where istio-injection is gone.
    by_namespace = next(w for w in webhook["webhooks"] if w["name"].startswith("rev.namespace."))
    assert {"key": "istio.io/rev", "operator": "In", "values": [revision]} in by_namespace["namespaceSelector"][
        "matchExpressions"]
    assert {"key": "istio-injection", "operator": "DoesNotExist"} in by_namespace["namespaceSelector"][
        "matchExpressions"]
    moved = manifests.namespace("tg-kind-canary", platform.run_id)
    moved["metadata"]["labels"]["istio.io/rev"] = revision
    refused = refusals(DynamicClient(platform.kube), kube, [*rendered, moved], platform.run_id)
    assert refused == [], "\n".join(refused)
