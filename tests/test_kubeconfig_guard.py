"""The existing-cluster platform refuses what it was not allowed to touch, in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.errors import SettingsError
from cluster.guard import (
    DEFAULT_ALLOWLIST,
    Attachment,
    LiveClusterRefused,
    check_context,
    current_context,
    disruptive_refusal,
)
from tests.lifecycle import ROOT


@pytest.mark.parametrize("context", ["kind-trustgrid", "k3d-dev", "minikube"])
def test_local_throwaway_contexts_are_allowed(context: str) -> None:
    check_context(Attachment(context))


@pytest.mark.parametrize("context", ["prod-eu-1", "minikube-old", "arn:aws:eks:eu-west-1:1:cluster/staging"])
def test_any_other_context_is_refused_without_allow_live_cluster(context: str) -> None:
    with pytest.raises(LiveClusterRefused) as refused:
        check_context(Attachment(context))
    message = str(refused.value)
    assert "\n" not in message and repr(context) in message and DEFAULT_ALLOWLIST in message
    assert "--allow-live-cluster" in message
    check_context(Attachment(context, allow_live_cluster=True))


def test_a_custom_allowlist_is_honoured_and_a_bad_one_is_one_line() -> None:
    check_context(Attachment("staging-eu", allowlist=r"^staging-"))
    with pytest.raises(SettingsError, match="not a regular expression"):
        check_context(Attachment("x", allowlist="("))


def test_cluster_wide_faults_need_allow_disruptive() -> None:
    refusal = disruptive_refusal(Attachment("kind-x"), "vault-seal")
    assert "vault-seal is a cluster-wide fault" in refusal and "--allow-disruptive" in refusal
    assert disruptive_refusal(Attachment("kind-x", allow_disruptive=True), "vault-seal") == ""


def test_the_current_context_comes_from_the_kubeconfig(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text("apiVersion: v1\nkind: Config\ncurrent-context: kind-a\ncontexts: []\n")
    assert current_context(config) == "kind-a"
    config.write_text("apiVersion: v1\nkind: Config\n")
    with pytest.raises(SettingsError, match="no current-context"):
        current_context(config)
    with pytest.raises(SettingsError, match="cannot read the kubeconfig"):
        current_context(tmp_path / "missing")


def test_the_suite_refuses_a_live_context_before_touching_anything(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text("apiVersion: v1\nkind: Config\ncurrent-context: prod-eu\n")
    env = {**os.environ, "KUBECONFIG": str(config), "PYTHONPATH": str(ROOT), "VAULT_TOKEN": "not-used"}
    result = subprocess.run([sys.executable, "-m", "pytest", "suites/", "--platform", "kubeconfig",
                             "--vault-addr", "https://127.0.0.1:1", "--workload-image", "x/tgpod:dev",
                             "-p", "no:cacheprovider", "--report-dir", str(tmp_path / "reports")],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 4
    assert result.stderr.strip().startswith("ERROR: trustgrid: refusing kube context 'prod-eu'")
    assert not (tmp_path / "reports").exists()


@pytest.mark.parametrize("allowed", [False, True])
def test_the_existing_cluster_platforms_faults_refuse_a_cluster_wide_fault_unless_allowed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, allowed: bool) -> None:
    """The guard is the platform's own (its Faults), so whatever asks for a cluster-wide fault meets it."""
    from types import SimpleNamespace

    from cluster.errors import FaultRefused
    from cluster.kubeconfig.platform import ExistingClusterFaults
    from cluster.runstate import RunState

    monkeypatch.setenv("HOME", str(tmp_path))
    state = RunState.create("tg-guard-test", root=tmp_path / "runs")
    platform = SimpleNamespace(settings=SimpleNamespace(context="kind-staging", allow_disruptive=allowed), state=state)
    faults = ExistingClusterFaults(platform)  # type: ignore[arg-type]
    if allowed:
        with faults.exclusive("vault-seal"):
            pass
    else:
        with pytest.raises(FaultRefused) as refused:
            faults.exclusive("vault-seal")
        assert str(refused.value) == ("vault-seal is a cluster-wide fault and context 'kind-staging' is an existing "
                                      "cluster; pass --allow-disruptive to run it")
    with faults.shared():  # the rest of the suite shares the platform either way
        pass
