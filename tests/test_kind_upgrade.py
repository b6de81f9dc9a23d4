"""suites/upgrade on kind, with a recording runner (no Docker here): the commands are the ones ``--dry-run``
prints (cluster/kind/upgradeplan.py), with the pinned binaries and the run's kubeconfig, in the order the
upstream guides give; the answers are parsed as real servers give them, recorded from the local platform's
OpenBao (upgraded from FROM to TO) and istiod by scripts/record_fixtures.py."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from cluster.errors import PlatformUnavailable, SettingsError, TrustgridError
from cluster.istio import syncz_proxies
from cluster.kind import manifests
from cluster.kind.charts import ChartSource
from cluster.kind.plan import install_plan
from cluster.kind.platform import KindPlatform
from cluster.kind.upgrade import KindCanary, KindUpgrades, UpgradeTools, newest_version
from cluster.kubeconfig.platform import ExistingClusterPlatform
from cluster.kubectl.commands import Kubectl
from cluster.kubectl.platform import ClusterVault, KubectlPlatform
from cluster.platform import Workload
from cluster.runstate import RunState
from cluster.settings import build_settings
from suites.upgrade.conftest import upgrade_refusal
from tests.test_kind_platform import KUBECONFIG, Recorder, certificate

FIXTURES = Path(__file__).parent / "fixtures"
LOW, HIGH = "2.6.2", "2.7.2"
ISTIO_LOW, ISTIO_HIGH = "1.30.3", "1.31.1"
CHART = ChartSource("0.30.2", "/cache/charts/openbao", "release archive 0.30.2 (no checksum)")


def recorded(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


class VaultAnswers:
    """The server's sys endpoints, as the recorded OpenBao answered them before and after its upgrade."""

    def __init__(self) -> None:
        self.version = LOW

    def get(self, path: str) -> Any:
        if path == "sys/seal-status":
            return recorded(f"openbao/seal-status-{self.version}.json")
        assert path == "sys/health", path
        return recorded(f"openbao/health-{HIGH}.json")


@pytest.fixture
def kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[KindPlatform, Recorder, list[str]]]:
    monkeypatch.setenv("HOME", str(tmp_path))
    ca = base64.b64encode(certificate().public_bytes(serialization.Encoding.PEM)).decode()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG % ca)
    settings = build_settings({"platform": "kind", "kind_vault": "openbao"}, {}, rootdir=tmp_path)
    monkeypatch.setattr(KindPlatform, "_server_version", lambda self: "v1.36.4")
    monkeypatch.setattr(KindPlatform, "_istiod_images", lambda self: [f"r/pilot:{ISTIO_LOW}"])
    recorder = Recorder({})
    state = RunState.create(settings.run_id)
    target = manifests.VaultTarget("openbao", "https://openbao.openbao.svc:8200", "openbao")
    tools = UpgradeTools(Path("/cache/bin/helm-v3"), CHART, lambda version: Path(f"/cache/bin/istioctl-{version}"))
    made = KindPlatform(settings, state, kubectl=Kubectl(recorder, Path("/bin/kubectl"), kubeconfig),
                        istioctl=Path("/bin/istioctl"), vault=ClusterVault(target, "https://127.0.0.1:1"),
                        debug_image="netshoot@sha256:abc", runner=recorder, upgrade_tools=tools)
    events: list[str] = []  # what the upgrade did outside the runner, in order with it
    yield made, recorder, events
    state.remove()


def _upgrades(kind: KindPlatform, recorder: Recorder, events: list[str],
              monkeypatch: pytest.MonkeyPatch) -> tuple[KindUpgrades, VaultAnswers]:
    answers = VaultAnswers()
    history = recorded(f"openbao/version-history-{LOW}-{HIGH}.json")
    monkeypatch.setattr(KindUpgrades, "_get", lambda self, path: answers.get(path))
    monkeypatch.setattr(type(kind.faults()), "unseal_vault",
                        lambda self: events.append(f"unseal after {len(recorder.calls)} commands"))
    monkeypatch.setattr(KindPlatform, "vault_admin",
                        lambda self: SimpleNamespace(adapter=SimpleNamespace(list=lambda path: history)))

    def deleted(argv: Sequence[str]) -> str:
        answers.version = HIGH  # the StatefulSet's new pod runs the image helm set
        return ""

    recorder.answers["delete pod"] = deleted
    return kind.upgrades(), answers


def test_the_recorded_server_says_its_version_and_that_it_installed_the_new_one_last() -> None:
    assert recorded(f"openbao/seal-status-{LOW}.json")["version"].removeprefix("v") == LOW
    assert newest_version(recorded(f"openbao/version-history-{LOW}-{HIGH}.json")) == HIGH


def test_the_vault_upgrade_runs_the_dry_runs_steps_with_the_pinned_helm_and_unseals_between_delete_and_ready(
        kind: tuple[KindPlatform, Recorder, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    platform, recorder, events = kind
    upgrades, _ = _upgrades(platform, recorder, events, monkeypatch)
    assert [(n.node_id, n.version, n.sealed, n.active) for n in upgrades.vault_nodes()] == [
        ("openbao-0", LOW, False, True)]
    ticks = iter(range(100))
    steps = upgrades.upgrade_vault(HIGH, clock=lambda: float(next(ticks)), progress=lambda _: None)
    kubeconfig = str(platform.kubectl.kubeconfig)
    helm, delete, ready = recorder.calls
    assert helm == ["/cache/bin/helm-v3", "--kubeconfig", kubeconfig, "upgrade", "openbao", "/cache/charts/openbao",
                    "--namespace", "openbao", "--reuse-values", "--set", f"server.image.tag={HIGH}", "--wait"]
    assert delete[3:] == ["-n", "openbao", "delete", "pod", "openbao-0", "--wait=true", "--timeout=120s"]
    assert ready[3:] == ["-n", "openbao", "wait", "--for=condition=Ready", "pod/openbao-0", "--timeout=300s"]
    assert events == ["unseal after 2 commands"]  # after the delete, before the wait for Ready
    (step,) = steps
    assert (step.node_id, step.role, step.version) == ("openbao-0", "active", HIGH)
    assert step.left_front_at == step.stopped_at < step.unsealed_at < step.back_in_front_at  # gone once deleted


def test_a_server_that_did_not_take_the_new_image_fails_the_upgrade_in_one_line(
        kind: tuple[KindPlatform, Recorder, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    platform, recorder, events = kind
    upgrades, _ = _upgrades(platform, recorder, events, monkeypatch)
    recorder.answers["delete pod"] = ""  # the pod came back on the old image
    monkeypatch.setattr("cluster.kind.upgrade.VERSION_CHECK_S", 0.5)
    with pytest.raises(PlatformUnavailable) as refused:
        upgrades.upgrade_vault(HIGH, clock=lambda: 0.0, progress=lambda _: None)
    assert f"runs {LOW}" in str(refused.value) and f"not {HIGH}" in str(refused.value)
    assert "\n" not in str(refused.value)


def test_hashicorp_vault_has_no_pinned_upgrade_pair(kind: tuple[KindPlatform, Recorder, list[str]],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    platform, recorder, events = kind
    upgrades, _ = _upgrades(platform, recorder, events, monkeypatch)
    platform.vault = ClusterVault(manifests.VaultTarget("vault", "https://vault.vault.svc:8200", "vault"),
                                  "https://127.0.0.1:1")
    with pytest.raises(SettingsError, match="--kind-vault openbao"):
        upgrades.upgrade_vault(HIGH, clock=lambda: 0.0, progress=lambda _: None)
    assert recorder.calls == []


def test_the_kind_install_starts_openbao_on_the_upgrades_from_version() -> None:
    from cluster.profile import DEFAULT_PROFILE, load_profile

    setup = load_profile(DEFAULT_PROFILE).setup
    plain = [s for s in install_plan(setup, "tg-1", flavor="openbao") if s.argv[:2] == ("helm", "upgrade")]
    staged = [s for s in install_plan(setup, "tg-1", flavor="openbao", vault_tag=LOW)
              if s.argv[:2] == ("helm", "upgrade")]
    values = {step.argv[3]: step.documents[0] for step in staged}
    assert values["openbao"]["server"]["image"] == {"tag": LOW}
    assert "image" not in {step.argv[3]: step.documents[0] for step in plain}["openbao"]["server"]


CANARY_NS = recorded("istio/pod-server-injected.json")["metadata"]["namespace"]  # syncz is of the same run


KIND_POD = "server-7d9f8c5b4-x2k8q"  # a Deployment's pod on kind; the local platform names pods as workloads


def _canary(platform: KindPlatform, recorder: Recorder, monkeypatch: pytest.MonkeyPatch,
            revisions: list[str]) -> KindCanary:
    pod = recorded("istio/pod-server-injected.json")
    pod["metadata"]["name"] = KIND_POD

    def deployments(argv: Sequence[str]) -> str:
        items = [{"metadata": {"name": "istiod" if r == "default" else f"istiod-{r}",
                               "labels": {"app": "istiod", **({} if r == "default" else {"istio.io/rev": r})}}}
                 for r in revisions]
        return json.dumps({"items": items})

    recorder.answers["get deployments -l app=istiod"] = deployments
    recorder.answers["get pod"] = json.dumps(pod)
    monkeypatch.setattr(KindPlatform, "_pod", lambda self, ns, name: SimpleNamespace(
        metadata=SimpleNamespace(name=pod["metadata"]["name"]), status=SimpleNamespace(pod_ip="10.244.0.9")))
    return platform.canary()


def test_a_canary_revision_is_installed_by_the_new_istioctl_and_the_old_one_removed_by_its_own(
        kind: tuple[KindPlatform, Recorder, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    platform, recorder, _ = kind
    canary = _canary(platform, recorder, monkeypatch, ["default"])
    assert canary.revisions() == ("default",)
    canary.install_revision("canary")
    canary.move_namespace("app", "canary")
    canary.remove_revision("default")
    canary.move_namespace("app", "default")
    canary.remove_revision("canary")
    kubeconfig = str(platform.kubectl.kubeconfig)
    commands = [call for call in recorder.calls if "deployments" not in call]
    assert commands[0] == [f"/cache/bin/istioctl-{ISTIO_HIGH}", "--kubeconfig", kubeconfig, "install", "-y",
                           "--revision", "canary", "-f", "-"]
    assert commands[1][3:] == ["label", "namespace", "app", "istio-injection-", "istio.io/rev=canary", "--overwrite"]
    assert commands[2] == [f"/cache/bin/istioctl-{ISTIO_LOW}", "--kubeconfig", kubeconfig, "uninstall", "-y",
                           "--revision", "default"]
    assert commands[3][3:] == ["-n", "istio-system", "wait", "--for=delete", "deploy/istiod", "--timeout=120s"]
    assert commands[4][3:] == ["label", "namespace", "app", "istio.io/rev-", "istio-injection=enabled", "--overwrite"]
    assert commands[5] == [f"/cache/bin/istioctl-{ISTIO_HIGH}", "--kubeconfig", kubeconfig, "uninstall", "-y",
                           "--revision", "canary"]
    assert commands[6][-2:] == ["deploy/istiod-canary", "--timeout=120s"]


def test_a_revision_already_running_is_not_installed_again(kind: tuple[KindPlatform, Recorder, list[str]],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    platform, recorder, _ = kind
    canary = _canary(platform, recorder, monkeypatch, ["default", "canary"])
    assert canary.revisions() == ("default", "canary")
    with pytest.raises(PlatformUnavailable, match="already running"):
        canary.install_revision("canary")
    assert not any("install" in call for call in recorder.calls)


def test_which_revision_injected_and_serves_a_proxy_comes_from_the_pod_and_istiods_syncz(
        kind: tuple[KindPlatform, Recorder, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    platform, recorder, _ = kind
    canary = _canary(platform, recorder, monkeypatch, ["default", "canary"])
    # The recorded answer, with the server's proxy as kind names it: pod name, not workload name.
    syncz = (FIXTURES / "istio" / "istiod-syncz.json").read_text().replace(
        f'"server.{CANARY_NS}"', f'"{KIND_POD}.{CANARY_NS}"')
    assert KIND_POD in syncz
    recorder.answers["--revision default"] = syncz
    recorder.answers["--revision canary"] = "[]"
    server = Workload(CANARY_NS, "server", "server", "10.0.0.2", True)
    assert canary.injected_by(server) == "default"
    assert canary.serving_revision(server) == "default"
    asked = [call for call in recorder.calls if "internal-debug" in call]
    assert asked[0][3:] == ["x", "internal-debug", "syncz", "--revision", "default"]
    recorder.answers["--revision canary"] = syncz  # connected to both: not yet settled
    with pytest.raises(PlatformUnavailable, match="2 istiods"):
        canary.serving_revision(server)


def test_the_recorded_syncz_lists_both_proxies_and_two_istiods_answers_are_read_one_after_another() -> None:
    syncz = (FIXTURES / "istio" / "istiod-syncz.json").read_text()
    proxies = syncz_proxies(syncz)
    assert {proxy.split(".", 1)[1] for proxy in proxies} == {CANARY_NS} and len(proxies) == 2
    assert syncz_proxies(syncz + "\n" + syncz) == proxies
    assert syncz_proxies("[]") == set()


def test_a_restart_rolls_the_deployment_and_returns_the_new_pod(kind: tuple[KindPlatform, Recorder, list[str]],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    platform, recorder, _ = kind
    canary = _canary(platform, recorder, monkeypatch, ["default"])
    moved = canary.restart(Workload("app", "server", "server", "10.0.0.2", True))
    assert moved.ip == "10.244.0.9" and moved.name == "server"
    assert [call[3:6] for call in recorder.calls] == [["-n", "app", "rollout"]] * 2
    assert recorder.calls[0][6:] == ["restart", "deploy/server"]
    assert recorder.calls[1][6:] == ["status", "deploy/server", "--timeout=300s"]


def test_helm_gets_its_own_name_for_the_context_and_an_unknown_tool_is_refused(
        kind: tuple[KindPlatform, Recorder, list[str]]) -> None:
    from cluster.kind.upgrade import KindSteps

    platform, _, _ = kind
    platform.kubectl = Kubectl(platform.kubectl.runner, platform.kubectl.binary, platform.kubectl.kubeconfig,
                               context="kind-staging")
    steps = KindSteps(platform, platform._tools("test"))
    assert steps.argv(("helm", "status", "x"))[3:5] == ["--kube-context", "kind-staging"]
    assert steps.argv(("istioctl-1.31.1", "version"))[3:5] == ["--context", "kind-staging"]
    with pytest.raises(TrustgridError, match="unknown tool docker"):
        steps.argv(("docker", "ps"))


def test_an_external_vault_and_an_existing_cluster_are_not_upgraded(
        kind: tuple[KindPlatform, Recorder, list[str]]) -> None:
    platform, _, _ = kind
    platform.vault_container = "tg-vault"
    with pytest.raises(PlatformUnavailable, match="drop --vault external"):
        platform.upgrades()
    assert ExistingClusterPlatform.upgrades is KubectlPlatform.upgrades  # the existing cluster keeps the refusal
    for method in (KubectlPlatform.upgrades, KubectlPlatform.canary):
        with pytest.raises(PlatformUnavailable, match="--platform kind") as refused:
            method(platform)
        assert "did not" in str(refused.value)


def test_a_revision_whose_istiod_is_being_deleted_is_not_running(
        kind: tuple[KindPlatform, Recorder, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    platform, recorder, _ = kind
    canary = _canary(platform, recorder, monkeypatch, ["default", "canary"])
    items = json.loads(recorder.answers["get deployments -l app=istiod"](["x"]))  # type: ignore[operator]
    items["items"][0]["metadata"]["deletionTimestamp"] = "2026-12-02T06:00:00Z"
    recorder.answers["get deployments -l app=istiod"] = json.dumps(items)
    assert canary.revisions() == ("canary",)


def test_which_platforms_open_an_upgrade_stage(tmp_path: Path) -> None:
    def settings(platform: str) -> Any:
        return build_settings({"platform": platform}, {}, rootdir=tmp_path)

    assert upgrade_refusal(settings("local"), nodes=3, attach=True) is None
    assert upgrade_refusal(settings("kind")) is None
    assert "three-node" in str(upgrade_refusal(settings("kind"), nodes=3))
    assert "--platform local" in str(upgrade_refusal(settings("kind"), attach=True))
    assert "--vault external" in str(upgrade_refusal(replace(settings("kind"), vault_placement="external")))
    existing = replace(settings("kind"), platform="kubeconfig")  # the refusal reads the platform's name alone
    assert "--platform kind" in str(upgrade_refusal(existing))
