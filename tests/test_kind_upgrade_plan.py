"""suites/upgrade on kind, as a plan: the upstream guides' order, and both upgrades in --dry-run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.errors import SettingsError
from cluster.istio import CANARY_REVISION
from cluster.kind.charts import plan_sources
from cluster.kind.manifests import APP_NS
from cluster.kind.plan import Step
from cluster.kind.upgradeplan import (
    canary_steps,
    rollback_steps,
    upgrade_plan,
    vault_upgrade_steps,
)
from cluster.profile import DEFAULT_PROFILE, load_profile
from cluster.runstate import cache_dir
from cluster.secrets import find_secrets
from tests.lifecycle import ROOT

SETUP = load_profile(DEFAULT_PROFILE).setup
CHART = plan_sources(cache_dir(), None, fetch=False)["openbao"]
NAMESPACES = ("team-a", "team-b")


def _index(steps: list[Step], *words: str) -> int:
    """The first step whose command line holds every word; ValueError naming the steps otherwise."""
    for number, step in enumerate(steps):
        if all(word in step.argv for word in words):
            return number
    raise ValueError(f"no step runs {' '.join(words)}: {[' '.join(s.argv) for s in steps]}")


def test_openbao_goes_to_to_by_the_charts_image_tag_then_its_pod_is_restarted_unsealed_and_checked() -> None:
    steps = vault_upgrade_steps("openbao", "openbao", CHART, ("2.6.2", "2.7.2"))
    helm = steps[_index(steps, "helm", "upgrade")]
    assert "--reuse-values" in helm.argv and "server.image.tag=2.7.2" in helm.argv
    # OnDelete: the pod restarts only when deleted, after the chart changed, and is unsealed before the check.
    assert _index(steps, "helm") < _index(steps, "delete", "pod", "openbao-0")
    actions = [step.action for step in steps]
    assert actions.index("restart-vault-pod") < actions.index("unseal-vault") < actions.index("check-vault-version")
    assert "2.7.2" in steps[-1].notes


def test_hashicorp_vault_is_one_line_naming_the_flavour_that_has_pins() -> None:
    with pytest.raises(SettingsError) as refused:
        vault_upgrade_steps("vault", "vault", CHART, ("2.6.2", "2.7.2"))
    assert "\n" not in str(refused.value) and "--kind-vault openbao" in str(refused.value)


def test_the_canary_installs_the_revision_first_moves_each_namespace_then_removes_the_old_plane() -> None:
    steps = canary_steps(SETUP, ("1.30.3", "1.31.1"), NAMESPACES)
    revision = CANARY_REVISION
    assert revision == "canary"
    install = _index(steps, "istioctl-1.31.1", "install", "--revision", revision)
    assert install == 0 and steps[0].documents  # the same IstioOperator as the install
    last = install
    for namespace in NAMESPACES:
        label = _index(steps, "label", namespace, "istio-injection-", f"istio.io/rev={revision}")
        restart = _index(steps, "-n", namespace, "rollout", "restart")
        status = _index(steps, "-n", namespace, "rollout", "status")
        assert last < label < restart < status  # one namespace at a time, in the order given
        last = status
    # By its revision label, not -f: the canary's objects carry the same IstioOperator name.
    assert _index(steps, "istioctl-1.30.3", "uninstall", "--revision", "default") == len(steps) - 1 > last
    assert not steps[-1].documents


def test_the_rollback_moves_every_namespace_back_before_it_removes_the_revision() -> None:
    steps = rollback_steps(SETUP, ("1.30.3", "1.31.1"), NAMESPACES)
    removed = _index(steps, "istioctl-1.31.1", "uninstall", "--revision", "canary")
    assert removed == len(steps) - 1
    for namespace in NAMESPACES:
        assert _index(steps, "label", namespace, "istio.io/rev-", "istio-injection=enabled") < removed


def test_the_whole_plan_is_openbao_then_canary_rollback_and_canary_again() -> None:
    steps = upgrade_plan(SETUP, flavor="openbao", vault_ns="openbao", chart=CHART, vault_versions=("2.6.2", "2.7.2"),
                         istio_versions=("1.30.3", "1.31.1"), namespaces=NAMESPACES)
    installs = [n for n, s in enumerate(steps) if s.argv[1:3] == ("install", "-y")]
    uninstalls = [n for n, s in enumerate(steps) if s.argv[1:2] == ("uninstall",)]
    assert _index(steps, "helm", "upgrade") < installs[0] < uninstalls[0] < installs[1] < uninstalls[1]
    assert steps[uninstalls[0]].argv[-1] == "canary" and steps[uninstalls[1]].argv[-1] == "default"
    plain = upgrade_plan(SETUP, flavor="vault", vault_ns="vault", chart=CHART, vault_versions=("2.6.2", "2.7.2"),
                         istio_versions=("1.30.3", "1.31.1"), namespaces=(APP_NS,))
    assert plain[0].action == "none" and "--kind-vault openbao" in plain[0].title


def test_dry_run_prints_both_upgrades_with_the_chosen_versions(tmp_path: Path) -> None:
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/none.sock", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "pytest", "suites/", "--platform", "kind", "--dry-run",
                             "--kind-vault", "openbao", "--upgrade-istio", "1.30.3:1.31.1", "-p", "no:cacheprovider",
                             "--report-dir", str(tmp_path / "reports")],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "# suites/upgrade: on a cluster of its own" in out
    assert "--reuse-values --set server.image.tag=2.7.2" in out
    assert "$ istioctl-1.31.1 install -y --revision canary -f -" in out
    assert f"$ kubectl label namespace {APP_NS} istio-injection- istio.io/rev=canary --overwrite" in out
    assert "$ istioctl-1.31.1 uninstall -y --revision canary" in out
    assert "$ istioctl-1.30.3 uninstall -y --revision default" in out
    assert find_secrets(out) == []
    assert not (tmp_path / "reports").exists()
