"""What `istioctl install` would apply on kind, rendered offline by the real istioctl (built from the
istio.io/istio module, the one the local platform runs), read for what our plan depends on.

A value name istioctl does not know fails the render; a value it ignores fails an assertion here.
The server-side dry-run of every rendered object is in suites/platform/test_kind_manifests.py.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from cluster.kind import manifests
from cluster.kind.helmbuild import cert_manager_chart, find_helm, vault_chart
from cluster.kind.plan import install_plan, load_kind_pins
from cluster.kind.render import container_args, container_env, find, node_kube_version, render_chart, render_istio
from cluster.kubectl.commands import CommandFailed
from cluster.local.istiobuild import find_istio
from cluster.meshconfig import CONFIGMAP, parse_mesh_config
from cluster.profile import DEFAULT_PROFILE, load_profile
from cluster.runstate import cache_dir
from cluster.versions import VERSIONS_FILE


@pytest.fixture(scope="module")
def istioctl() -> Path:
    return find_istio(cache_dir()).istioctl


def test_istio_csr_as_the_ca_turns_istiods_ca_server_off_and_points_proxies_at_istio_csr(istioctl: Path) -> None:
    setup = load_profile(DEFAULT_PROFILE).setup
    rendered = render_istio(istioctl, manifests.istio_operator(setup, ca="istio-csr"))
    istiod = find(rendered, "Deployment", "istiod")
    assert container_env(istiod)["ENABLE_CA_SERVER"] == "false"
    # istiod serves with the certificate istio-csr has issued: the Secret the plan waits for before the install.
    secrets = {v["secret"]["secretName"] for v in istiod["spec"]["template"]["spec"]["volumes"] if "secret" in v}
    assert manifests.ISTIOD_TLS_SECRET in secrets
    plan = install_plan(setup, "tg-x")
    waits = [i for i, step in enumerate(plan) if f"secret/{manifests.ISTIOD_TLS_SECRET}" in step.argv]
    installs = [i for i, step in enumerate(plan) if step.argv[:2] == ("istioctl", "install")]
    helm_csr = [i for i, step in enumerate(plan) if "cert-manager-istio-csr" in step.argv]
    assert len(waits) == 1 and helm_csr[0] < waits[0] < installs[0], [step.title for step in plan]
    # The proxies' CA address is in the injector's values, which the injection template reads (CA_ADDR).
    injector = find(rendered, "ConfigMap", "istio-sidecar-injector")
    assert f'"caAddress": "{manifests.ISTIO_CSR_ADDRESS}"' in injector["data"]["values"]


def test_the_mesh_configmap_istioctl_writes_says_what_the_profile_says(istioctl: Path) -> None:
    """istioctl owns istio-system/istio: the plan does not apply its own copy (a server-side apply of it
    conflicts with istioctl's), so what conformance reads back must come from our IstioOperator."""
    setup = load_profile(DEFAULT_PROFILE).setup
    for ca in ("istio-csr", "plugin"):
        rendered = render_istio(istioctl, manifests.istio_operator(setup, ca=ca))
        mesh = find(rendered, "ConfigMap", CONFIGMAP)["data"]["mesh"]
        parsed = parse_mesh_config(mesh)
        assert parsed.trust_domain == setup.trust_domain
        assert parsed.renew_fraction == pytest.approx(setup.mesh.renew_fraction)
        assert f"SECRET_TTL: {int(setup.mesh.cert_ttl.total_seconds())}s" in mesh
    plan_objects = manifests.mesh_and_workloads(setup, manifests.VaultTarget("vault", "https://v:8200", "vault"),
                                                "tg-x", vault_ca="")
    assert not [o for o in plan_objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == CONFIGMAP], \
        "the plan applies its own istio-system/istio, which istioctl owns"


def test_a_value_istioctl_does_not_know_fails_the_render(istioctl: Path) -> None:
    setup = load_profile(DEFAULT_PROFILE).setup
    operator = manifests.istio_operator(setup, ca="istio-csr")
    operator["spec"]["values"]["global"]["caAdress"] = "typo:443"
    with pytest.raises(CommandFailed, match="caAdress"):
        render_istio(istioctl, operator)


@pytest.fixture(scope="module")
def cert_manager_objects() -> list[dict[str, Any]]:
    """The cert-manager chart from its Go module, rendered by helm built from its module, with our values."""
    return render_chart(find_helm(cache_dir()), cert_manager_chart(), "cert-manager", manifests.CERT_MANAGER_NS,
                        manifests.cert_manager_values(), kube_version=node_kube_version(load_kind_pins().node_image))


def test_cert_manager_installs_its_crds_and_runs_as_the_account_our_issuer_rbac_names(
        cert_manager_objects: list[dict[str, Any]]) -> None:
    crds = {o["metadata"]["name"] for o in cert_manager_objects if o["kind"] == "CustomResourceDefinition"}
    assert {"issuers.cert-manager.io", "certificaterequests.cert-manager.io", "certificates.cert-manager.io"} <= crds
    controller = find(cert_manager_objects, "Deployment", "cert-manager")
    account = controller["spec"]["template"]["spec"]["serviceAccountName"]
    # The Issuer's serviceAccountRef works only if the controller's account may request that account's tokens.
    binding = next(o for o in manifests.issuer_identity("tg-x") if o["kind"] == "RoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account,
                                    "namespace": manifests.CERT_MANAGER_NS}]
    assert "--cluster-resource-namespace=$(POD_NAMESPACE)" in container_args(controller)


def test_a_value_the_cert_manager_chart_does_not_define_fails_the_render() -> None:
    """values.schema.json refuses an unknown name, so a misspelt value cannot be silently ignored."""
    with pytest.raises(CommandFailed, match="additional properties 'enabeld' not allowed"):
        render_chart(find_helm(cache_dir()), cert_manager_chart(), "cert-manager", manifests.CERT_MANAGER_NS,
                     {"crds": {"enabeld": True}}, kube_version="v1.36.4")


def test_the_kind_node_image_names_its_kubernetes_version() -> None:
    assert node_kube_version("kindest/node:v1.36.4@sha256:0123") == "v1.36.4"
    assert node_kube_version(load_kind_pins().node_image).startswith("v1.")


def test_cert_managers_images_are_the_pinned_release_not_the_modules_placeholder(
        cert_manager_objects: list[dict[str, Any]]) -> None:
    """The module's Chart.yaml says v0.0.0 (the release tool stamps it), and its images default to appVersion:
    an unstamped chart would pull images tagged v0.0.0, which do not exist."""
    pinned = tomllib.loads(VERSIONS_FILE.read_text())["charts"]["cert_manager"]["version"]
    images = {c["image"] for o in cert_manager_objects if o["kind"] in ("Deployment", "Job")
              for c in o["spec"]["template"]["spec"]["containers"]}
    assert images and all(image.endswith(f":{pinned}") for image in images), images


def test_the_vault_chart_runs_our_server_config_with_the_runs_tls_and_no_injector() -> None:
    """What bring-up relies on from the Vault chart (vault-helm module, our values): one server, not dev
    mode, our listener and storage config, the TLS Secret mounted where that config reads it, the CLI's CA."""
    values = manifests.vault_values("vault")
    objs = render_chart(find_helm(cache_dir()), vault_chart(), "vault", "vault", values,
                        kube_version=node_kube_version(load_kind_pins().node_image))
    server = find(objs, "StatefulSet", "vault")
    assert server["spec"]["replicas"] == 1
    assert not [o for o in objs if o["kind"] == "Deployment"], "the agent injector must be off"
    config = find(objs, "ConfigMap", "vault-config")["data"]["extraconfig-from-values.hcl"]
    assert 'tls_cert_file = "/vault/userconfig/vault-tls/tls.crt"' in config and "storage" in config
    pod = server["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    volume = mounts["/vault/userconfig/vault-tls"]
    assert next(v for v in pod["volumes"] if v["name"] == volume)["secret"]["secretName"] == "vault-tls"
    env = container_env(server)
    assert env["VAULT_CACERT"] == "/vault/userconfig/vault-tls/ca.crt"
    assert "-dev" not in " ".join(pod["containers"][0].get("args") or [])
