"""The kind platform's install plan: the documented order, the documented values, and --dry-run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster.kind import manifests
from cluster.kind.plan import install_plan
from cluster.profile import DEFAULT_PROFILE, load_profile
from cluster.runstate import RUN_LABEL
from cluster.secrets import find_secrets
from tests.lifecycle import ROOT

SETUP = load_profile(DEFAULT_PROFILE).setup


def test_the_plan_follows_the_istio_csr_install_order() -> None:
    titles = [step.title for step in install_plan(SETUP, "tg-1", flavor="openbao")]
    order = ["kind cluster", "cert-manager", "openbao's TLS certificate", "audit exporter's image", "openbao",
             "initialize and unseal", "configure Vault", "Prometheus's token for sys/metrics", "prometheus",
             "Vault Issuer", "root CA", "cert-manager-istio-csr", "istiod's serving certificate",
             "Istio with istio-csr", "workload image",
             "mesh policy and workloads"]
    assert len(titles) == len(order)
    for title, expected in zip(titles, order, strict=True):
        assert expected in title


def test_istio_uses_istio_csr_and_the_profiles_renewal_and_trust_domain() -> None:
    operator = manifests.istio_operator(SETUP, ca="istio-csr")["spec"]
    assert operator["values"]["global"]["caAddress"] == manifests.ISTIO_CSR_ADDRESS
    assert {"name": "ENABLE_CA_SERVER", "value": "false"} in operator["components"]["pilot"]["k8s"]["env"]
    assert operator["meshConfig"]["trustDomain"] == SETUP.trust_domain
    assert operator["meshConfig"]["defaultConfig"]["proxyMetadata"]["SECRET_GRACE_PERIOD_RATIO"] == "0.5"
    plugin = manifests.istio_operator(SETUP, ca="plugin")["spec"]
    assert "values" not in plugin and "components" not in plugin  # istiod keeps its CA, fed by cacerts


def test_istio_csr_is_given_the_root_and_the_issuer() -> None:
    values = manifests.istio_csr_values(SETUP)
    assert values["app"]["tls"]["rootCAFile"] == f"{manifests.ROOT_CA_MOUNT}/ca.pem"
    assert values["volumes"] == [{"name": "root-ca", "secret": {"secretName": manifests.ROOT_CA_SECRET}}]
    assert values["app"]["certmanager"]["issuer"]["name"] == manifests.ISSUER
    assert values["app"]["server"]["maxCertificateDuration"] == "30s"


def test_vault_runs_in_server_mode_never_dev() -> None:
    for flavor in ("vault", "openbao"):
        values = manifests.vault_values(flavor)
        assert values["server"]["dev"]["enabled"] is False and values["injector"]["enabled"] is False
        assert f'path = "/{flavor}/data"' in values["server"]["standalone"]["config"]


def test_dry_run_prints_the_whole_plan_redacted_and_creates_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/none.sock", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "pytest", "suites/", "--platform", "kind", "--dry-run",
                             "-p", "no:cacheprovider", "--report-dir", str(tmp_path / "reports")],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "$ kind create cluster" in result.stdout and "$ istioctl install -y -f -" in result.stdout
    assert "kind: Issuer" in result.stdout and "serviceAccountRef" in result.stdout
    assert find_secrets(result.stdout) == []
    assert "# 16. mesh policy and workloads" in result.stdout
    assert "kind: Secret" in result.stdout and "tls.key: [REDACTED]" in result.stdout  # Vault's key, made here
    assert not (tmp_path / "reports").exists()


def test_dry_run_on_the_local_platform_is_one_line_naming_kind() -> None:
    result = subprocess.run([sys.executable, "-m", "pytest", "suites/", "--platform", "local", "--dry-run",
                             "-p", "no:cacheprovider"], cwd=ROOT, capture_output=True, text=True, timeout=30,
                            check=False)
    assert result.returncode == 4
    assert result.stderr.strip() == ("ERROR: trustgrid: --dry-run prints the kind platform's plan; this run's "
                                     "platform is local; add --platform kind")


def test_the_nightly_matrix_matches_the_pins() -> None:
    import tomllib

    import yaml

    from cluster.kubectl.tools import load_tools
    from cluster.versions import VERSIONS_FILE

    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "nightly.yml").read_text())
    matrix = workflow["jobs"]["kind"]["strategy"]["matrix"]
    pinned = tomllib.loads(VERSIONS_FILE.read_text())["matrix"]
    assert matrix["istio"] == pinned["istio"] and matrix["vault"] == pinned["vault"]
    for version in matrix["istio"]:
        assert load_tools(versions={"istioctl": version})["istioctl"].version == version


def _plugin_profile(tmp_path: Path) -> Path:
    profile = tmp_path / "plugin.yaml"
    profile.write_text(f"extends: {DEFAULT_PROFILE}\nsetup:\n  mesh:\n    ca: plugin\n")
    return profile


def test_ca_plugin_puts_a_vault_intermediate_in_cacerts_instead_of_istio_csr(tmp_path: Path) -> None:
    setup = load_profile(_plugin_profile(tmp_path)).setup
    plan = install_plan(setup, "tg-1")
    titles = " | ".join(step.title for step in plan)
    assert "istio-csr" not in titles and "cert-manager" not in titles and "Issuer" not in titles
    actions = [step.action for step in plan]
    assert actions.index("configure-vault") < actions.index("plugin-ca")
    plugin_step = plan[actions.index("plugin-ca")]
    assert [d["metadata"]["name"] for d in plugin_step.documents] == [manifests.ISTIO_NS, "cacerts"]
    istio = next(step for step in plan if step.argv[:2] == ("istioctl", "install"))
    assert actions.index("plugin-ca") < plan.index(istio)
    assert "components" not in istio.documents[0]["spec"]  # istiod keeps its CA server


def test_the_reuse_plan_shows_its_reset_and_keeps_one_cluster_name() -> None:
    from cluster.kind.plan import REUSED_CLUSTER, render

    plan = install_plan(SETUP, "tg-1", reuse=True)
    assert REUSED_CLUSTER in plan[0].argv and plan[0].reset
    assert install_plan(SETUP, "tg-2", reuse=True)[0].argv == plan[0].argv  # the same cluster every run
    text = render(plan)
    assert "$ helm uninstall vault --namespace vault --ignore-not-found --wait   # only on a reused cluster" in text
    assert "delete namespace -l trustgrid" in text
    assert not install_plan(SETUP, "tg-1")[0].reset


def test_an_external_vault_replaces_the_chart_and_gets_its_address_once_it_runs() -> None:
    from cluster.kind.plan import EXTERNAL_PLACEHOLDER

    before = install_plan(SETUP, "tg-1", external=True)
    after = install_plan(SETUP, "tg-1", external=True, external_address="http://172.18.0.9:8200")
    assert [s.title for s in before] == [s.title for s in after]  # bring-up swaps plans at the same index
    titles = " | ".join(step.title for step in before)
    assert "(Helm)" in titles and "vault 0.34.1 (Helm)" not in titles and "initialize and unseal vault" not in titles
    external = next(step for step in before if step.action == "external-vault")
    kinds = [d["kind"] for d in external.documents]
    assert kinds == ["Namespace", "ServiceAccount", "Secret", "ClusterRoleBinding"]
    assert external.documents[3]["roleRef"]["name"] == "system:auth-delegator"

    def addresses(plan: list[Any]) -> set[str]:
        text = json.dumps([d for step in plan for d in step.documents])
        return {address for address in (EXTERNAL_PLACEHOLDER, "http://172.18.0.9:8200") if address in text}

    assert addresses(before) == {EXTERNAL_PLACEHOLDER} and addresses(after) == {"http://172.18.0.9:8200"}


def test_the_kind_api_server_keeps_its_own_audience_alone() -> None:
    """A token minted for Vault must never be an API credential: --api-audiences stays the issuer."""
    patch = manifests.kind_config("tg-1", "https://kubernetes.default.svc.cluster.local", "kindest/node@x")
    text = patch["nodes"][0]["kubeadmConfigPatches"][0]
    assert "service-account-issuer" in text
    assert "api-audiences" not in text and SETUP.vault.audience not in text


def test_vault_listens_with_tls_and_everything_that_reaches_it_trusts_its_ca() -> None:
    plan = install_plan(SETUP, "tg-1", flavor="vault")
    values = manifests.vault_values("vault")
    assert values["global"]["tlsDisable"] is False
    assert 'tls_cert_file = "/vault/userconfig/vault-tls/tls.crt"' in values["server"]["standalone"]["config"]
    assert "tls_disable" not in values["server"]["standalone"]["config"]
    documents = [d for step in plan for d in step.documents]
    issuer = next(d for d in documents if d.get("kind") == "Issuer")
    assert issuer["spec"]["vault"]["server"].startswith("https://") and issuer["spec"]["vault"]["caBundle"]
    deployments = [d for d in documents if d.get("kind") == "Deployment"]
    assert all("--vault-addr=https://vault.vault.svc:8200" in d["spec"]["template"]["spec"]["containers"][0]["args"]
               for d in deployments)
    namespaces = {d["metadata"]["namespace"] for d in deployments}
    cas = {d["metadata"]["namespace"] for d in documents if d.get("kind") == "ConfigMap"
           and d["metadata"]["name"] == "trustgrid-vault-ca"}
    assert namespaces <= cas  # every workload's namespace has Vault's CA


@pytest.mark.parametrize("flavor", ["vault", "openbao"])
def test_reuse_resets_both_vault_flavours_and_the_external_reviewer_binding(flavor: str) -> None:
    """A reused cluster may hold the other flavour, or --vault external's cluster-scoped reviewer binding,
    from an earlier run: none of it may survive into this run."""
    from cluster.kind.plan import reset_commands

    commands = [" ".join(c) for c in reset_commands(flavor, flavor)]
    for name in ("vault", "openbao"):
        assert f"helm uninstall {name} --namespace {name} --ignore-not-found --wait" in commands
        assert any(c.startswith(f"kubectl delete pvc --namespace {name} --all") for c in commands)
    binding = manifests.token_reviewer("tg-x")[-1]
    assert binding["kind"] == "ClusterRoleBinding" and RUN_LABEL in binding["metadata"]["labels"]
    assert f"kubectl delete clusterrolebinding -l {RUN_LABEL} --ignore-not-found" in commands


def test_the_workload_image_has_no_base_image_to_pin_and_copies_only_what_its_context_holds() -> None:
    """FROM scratch: nothing is pulled, so there is no tag or digest to pin; the binary is built on the host."""
    dockerfile = [line.split() for line in (ROOT / "cluster" / "kind" / "Dockerfile").read_text().splitlines()
                  if line.strip() and not line.startswith("#")]
    assert [words[1:] for words in dockerfile if words[0] == "FROM"] == [["scratch"]]
    assert [words[1] for words in dockerfile if words[0] == "COPY"] == ["tgpod"]


def test_the_nightly_job_exports_kinds_logs_on_failure_and_removes_its_clusters() -> None:
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "nightly.yml").read_text())
    steps = workflow["jobs"]["kind"]["steps"]
    run = next(s for s in steps if s.get("name") == "Run the suite on kind")
    assert "--keep-cluster" in run["run"], "the cluster must outlive the run for its logs to be exported"
    export = next(s for s in steps if "export logs" in s.get("run", ""))
    assert export["if"] == "failure()" and "reports/kind-logs/" in export["run"]
    remove = next(s for s in steps if "delete cluster" in s.get("run", ""))
    assert remove["if"] == "always()" and steps.index(export) < steps.index(remove)
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
    assert steps.index(remove) < steps.index(upload) and "reports/kind-logs" in upload["with"]["path"]
