"""The existing-cluster platform, attached to the local platform's real API server and Vault.

The local platform stands in for "a cluster someone else runs": the
kubeconfig platform reaches it through a kubeconfig, VAULT_ADDR, VAULT_CACERT
and VAULT_TOKEN, as a user's staging cluster would be reached. kubectl and
istioctl are not needed by what is proven here (namespaces and Vault are
driven through their APIs), and a recording runner shows that they were not
asked to do anything but report a version.
"""

from __future__ import annotations

import json
import secrets
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import hvac
import pytest

from cluster.errors import PlatformUnavailable
from cluster.kube import Kube
from cluster.kubeconfig.platform import ExistingClusterPlatform, attach_existing, attachment_target
from cluster.kubectl.platform import MESH_CA_ROLE_KEPT
from cluster.local.platform import LocalPlatform
from cluster.runstate import EXISTING_CLUSTER_MARK, RUN_LABEL, new_run_id, runs_root
from cluster.settings import Settings, build_settings
from cluster.tenancy import open_tenant
from cluster.vault import VaultConfigurator
from suites.conformance.test_audit_pipeline import refusal_proven

TOOLS = {"kubectl": Path("/nonexistent/kubectl"), "istioctl": Path("/nonexistent/istioctl")}


class Recorder:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str], *, stdin: str | None = None, timeout: float = 120) -> str:
        self.calls.append(list(argv))
        return "1.31.1"



@pytest.fixture
def existing_settings(local: LocalPlatform, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    endpoint = local.connection.vault_endpoint
    monkeypatch.setenv("KUBECONFIG", str(local.state.file("kubeconfig")))
    monkeypatch.setenv("VAULT_TOKEN", local.vault.root_token())
    return build_settings({"platform": "kubeconfig", "vault_addr": endpoint.addr, "vault_ca": str(endpoint.ca),
                           "workload_image": "trustgrid/tgpod:dev", "profile": str(settings.profile.path),
                           "report_dir": str(settings.report_dir)})


def _role(admin: hvac.Client, path: str) -> dict[str, Any] | None:
    try:
        return dict(admin.adapter.get(path)["data"])
    except hvac.exceptions.InvalidPath:
        return None


def _mesh_ca_role(local: LocalPlatform) -> tuple[Kube, hvac.Client, str, dict[str, Any]]:
    """The live cluster's mesh CA role (what a fault takes away), and the clients to check it with."""
    admin = local.vault_admin()
    role_path = f"/v1/auth/{local.vault_layout.kubernetes_path}/role/mesh-ca"
    role = _role(admin, role_path)
    assert role, "the local platform's mesh CA has a Kubernetes-auth role to take away"
    return Kube(local.kube), admin, role_path, role


def _gone_or_going(kube: Kube, name: str) -> bool:
    return kube.namespace_phase(name) != "Active"  # None (gone) or Terminating (deleted, being emptied)


@pytest.fixture
def attached(existing_settings: Settings) -> Iterator[tuple[ExistingClusterPlatform, Recorder]]:
    recorder = Recorder()
    with attach_existing(existing_settings, lambda _: None, runner=recorder, tools=TOOLS) as existing:
        yield existing, recorder


@pytest.mark.cluster_fault  # taking the mesh CA's role away stops the signing of every CSR meanwhile
def test_a_run_on_an_existing_cluster_leaves_nothing_of_its_own_and_touches_nothing_else(
        local: LocalPlatform, existing_settings: Settings) -> None:
    kube, admin, role_path, mesh_ca_role = _mesh_ca_role(local)
    # The cluster's own namespaces, minus those already on their way out (a finished test's tenant).
    theirs = [ns.metadata.name for ns in kube.core.list_namespace(label_selector=f"{RUN_LABEL}={local.run_id}").items
              if ns.metadata.deletion_timestamp is None]
    assert theirs, "the cluster already has namespaces of its own (the local run's)"

    recorder = Recorder()
    with attach_existing(existing_settings, lambda _: None, runner=recorder, tools=TOOLS) as existing:
        assert existing.name == "kubeconfig" and existing.run_id != local.run_id
        with open_tenant(existing, existing.settings.profile.setup, "existing") as tenant:
            labels = kube.core.read_namespace(tenant.namespace).metadata.labels
            assert labels[RUN_LABEL] == existing.run_id
            assert _role(admin, f"/v1/auth/{existing.vault_layout.kubernetes_path}/role/{tenant.role}")
        assert _role(admin, f"/v1/auth/{existing.vault_layout.kubernetes_path}/role/{tenant.role}") is None
        # What a test killed mid-way leaves: a namespace of this run, and the mesh CA's role taken away.
        left = f"t-left-{existing.run_id.removeprefix('tg-')}"[:63]
        kube.ensure_namespace(left, existing.run_id)
        existing.faults().revoke_mesh_ca_vault_access()
        assert _role(admin, role_path) is None, "the fault took effect: Vault has no mesh-ca role"
    assert _role(admin, role_path) == mesh_ca_role, "the role is back exactly as it was read"
    assert _gone_or_going(kube, left), f"namespace {left} of the attached run was left behind"
    assert not any(_gone_or_going(kube, name) for name in theirs), "a namespace of the cluster's own was deleted"
    assert [call[1:2] for call in recorder.calls] == [["version"]], recorder.calls


def test_the_attached_platform_reads_the_live_cluster(
        attached: tuple[ExistingClusterPlatform, Recorder], local: LocalPlatform) -> None:
    existing, _ = attached
    assert existing.versions.kubernetes == local.versions.kubernetes
    assert existing.vault_admin().sys.read_health_status(method="GET")["sealed"] is False
    with pytest.raises(PlatformUnavailable, match="--vault-unseal-keys"):
        existing.unseal_keys()


def test_the_audit_evidence_on_an_existing_cluster_reads_the_prometheus_it_is_given(
        attached: tuple[ExistingClusterPlatform, Recorder], local: LocalPlatform, existing_settings: Settings) -> None:
    """--prometheus-url: a refusal made through the existing-cluster platform is proven from that Prometheus
    (here the local platform's, which scrapes the cluster's audit exporter); without it, one line names it."""
    existing, _ = attached
    with pytest.raises(PlatformUnavailable, match="--prometheus-url"):
        existing.prometheus_url()
    given = replace(existing.settings, prometheus_url=local.prometheus_url(), run_id=new_run_id())  # another run
    with attach_existing(given, lambda _: None, runner=Recorder(), tools=TOOLS) as told:
        evidence = refusal_proven(told, told.prometheus_url(), given.profile.policy)
    assert evidence.proven, evidence.judgement.detail


@pytest.mark.cluster_fault  # takes the mesh CA's Vault role away, as a run killed mid-fault would have left it
def test_the_next_run_cleans_up_after_a_run_killed_on_the_cluster(
        local: LocalPlatform, existing_settings: Settings) -> None:
    kube, admin, role_path, mesh_ca_role = _mesh_ca_role(local)
    # What `kill -9` in the middle of mesh-ca-vault-access-lost leaves: a run directory whose owner is gone,
    # the CA's role kept there and missing from Vault, and a tenant namespace with its Vault role.
    dead = f"tg-dead-{secrets.token_hex(3)}"
    run_dir = runs_root() / dead
    run_dir.mkdir(parents=True)
    (run_dir / "owner").write_text(str(2**22 + 4242))  # above pid_max's default: no such process
    (run_dir / EXISTING_CLUSTER_MARK).write_text(attachment_target(existing_settings))
    (run_dir / MESH_CA_ROLE_KEPT).write_text(json.dumps({"path": role_path, "data": mesh_ca_role}))
    namespace = f"t-killed-{dead.removeprefix('tg-')}"
    configurator = VaultConfigurator(admin, local.vault_layout, existing_settings.profile.setup, dead)
    try:
        kube.ensure_namespace(namespace, dead)
        configurator.configure_namespace(namespace, ["app"])
        admin.adapter.delete(role_path)
        said: list[str] = []
        with attach_existing(existing_settings, said.append, runner=Recorder(), tools=TOOLS):
            assert _role(admin, role_path) == mesh_ca_role, "the dead run's fault was undone"
            assert _gone_or_going(kube, namespace)
            assert _role(admin, f"/v1/auth/{local.vault_layout.kubernetes_path}/role/{namespace}") is None
            assert not run_dir.exists() and any(dead in line for line in said), said
    finally:
        if _role(admin, role_path) is None:
            admin.adapter.post(role_path, json=mesh_ca_role)
        configurator.remove_namespace(namespace)
        kube.delete_namespace(namespace)
        shutil.rmtree(run_dir, ignore_errors=True)
