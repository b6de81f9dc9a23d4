"""suites/upgrade on kind: the steps ``--dry-run`` prints (cluster/kind/upgradeplan.py), executed.

The same Step records are printed by the plan and run here, so what a user reads in ``--dry-run`` is
what the suite does. OpenBao: ``helm upgrade`` of the chart's image tag, the server's pod deleted (the
StatefulSet is OnDelete), unsealed with the run's keys, its version proven. Istio: ``istioctl install
--revision`` of TO beside FROM, namespaces relabelled and restarted, the old control plane removed, each
istioctl the pinned one of its version.

Not yet run against a live kind cluster (the machine that wrote it has no Docker engine): the command
shapes and parsers are unit-tested with a recording runner (tests/test_kind_upgrade.py), the parsers on
answers recorded from the local platform's real istiod and OpenBao.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

from cluster.errors import PlatformUnavailable, TrustgridError, WaitTimeout
from cluster.istio import DEFAULT_REVISION, ROOT_NAMESPACE, injected_revision, syncz_proxies
from cluster.kind import manifests
from cluster.kind.charts import ChartSource
from cluster.kind.plan import Step
from cluster.kind.upgradeplan import (
    install_revision_step,
    move_steps,
    remove_default_step,
    remove_revision_step,
    vault_upgrade_steps,
)
from cluster.kubectl.commands import documents
from cluster.kubectl.tools import ensure_tool, load_tools
from cluster.platform import VaultNodeStatus, VaultUpgradeStep, Workload
from cluster.profile import Setup, upgradable_changes
from cluster.vault import VaultConfigurator
from cluster.wait import wait_until

if TYPE_CHECKING:
    from cluster.kind.platform import KindPlatform

STEP_TIMEOUT_S = 900  # helm --wait and istioctl install wait for their own rollouts
VERSION_CHECK_S = 60.0  # an unsealed, Ready server answers its version at once; this bounds a slow port-forward


@dataclass(frozen=True)
class UpgradeTools:
    """What the upgrade runs beyond kubectl: the pinned helm, the chart the run installed Vault from, and the
    pinned istioctl of a version (versions.toml [tools.istioctl] or [alternatives.istioctl])."""

    helm: Path
    vault_chart: ChartSource
    istioctl: Callable[[str], Path]


def pinned_istioctl(cache_dir: Path) -> Callable[[str], Path]:
    """The checked istioctl of a version, downloaded into the cache once. Raises DownloadFailed (one line)
    for a version that is not pinned."""
    @functools.cache  # checked once a run: ensure_tool hashes the binary
    def of(version: str) -> Path:
        return ensure_tool(load_tools(versions={"istioctl": version})["istioctl"], cache_dir / "bin")
    return of


def newest_version(history: Mapping[str, Any]) -> str:
    """The version a server installed last, from its ``LIST sys/version-history`` answer: ``data.keys`` with
    ``data.key_info[version].timestamp_installed`` (RFC 3339; vault/logical_system.go handleVersionHistoryList)."""
    info = history["data"]["key_info"]
    return str(max(history["data"]["keys"], key=lambda version: str(info[version]["timestamp_installed"])))


class KindSteps:
    """Runs plan steps with the pinned binaries and this run's kubeconfig."""

    def __init__(self, platform: KindPlatform, tools: UpgradeTools) -> None:
        self.platform = platform
        self.tools = tools

    def argv(self, planned: tuple[str, ...]) -> list[str]:
        name, rest = planned[0], list(planned[1:])
        if name == "kubectl":
            return self.platform.kubectl.argv(*rest)
        if name == "helm":
            binary = self.tools.helm
        elif name.startswith("istioctl-"):
            binary = self.tools.istioctl(name.removeprefix("istioctl-"))
        else:
            raise TrustgridError(f"the upgrade plan names an unknown tool {name}",
                                 fix="see cluster/kind/upgradeplan.py")
        flag = "--kube-context" if name == "helm" else "--context"  # helm's name for kubectl's --context
        context = [flag, self.platform.kubectl.context] if self.platform.kubectl.context else []
        return [str(binary), "--kubeconfig", str(self.platform.kubectl.kubeconfig), *context, *rest]

    def run(self, step: Step) -> str:
        stdin = documents(step.documents) if step.documents else None
        return self.platform.runner(self.argv(step.argv), stdin=stdin, timeout=STEP_TIMEOUT_S)


class KindUpgrades:
    """The chart's single OpenBao server, upgraded the way vault-helm's "Upgrading Vault on Kubernetes"
    prescribes (cluster/kind/upgradeplan.py); the mesh CA's role rewritten for a TO profile."""

    def __init__(self, platform: KindPlatform, tools: UpgradeTools) -> None:
        self.platform = platform
        self.steps = KindSteps(platform, tools)
        self.tools = tools
        self.pod = f"{platform.vault.target.flavor}-0"

    def _get(self, path: str) -> Any:
        """A sys endpoint's JSON as the server answers it, whatever its status code (sys/health answers 503
        while sealed, with the same body)."""
        return requests.get(f"{self.platform.vault.local_addr}/v1/{path}", verify=self.platform.vault.verify,
                            timeout=10).json()

    def vault_nodes(self) -> tuple[VaultNodeStatus, ...]:
        seal, health = self._get("sys/seal-status"), self._get("sys/health")
        active = bool(health.get("initialized")) and not health.get("sealed") and not health.get("standby")
        return (VaultNodeStatus(self.pod, str(seal["version"]).removeprefix("v"), bool(seal["sealed"]), active),)

    def upgrade_vault(self, version: str, *, clock: Callable[[], float],
                      progress: Callable[[str], None]) -> tuple[VaultUpgradeStep, ...]:
        target = self.platform.vault.target
        current = self.vault_nodes()[0].version
        plan = vault_upgrade_steps(target.flavor, target.namespace, self.tools.vault_chart, (current, version))
        times: dict[str, float] = {}
        for step in plan:
            progress(f"kind upgrade: {step.title}")
            times[step.action] = clock()
            if step.action == "unseal-vault":
                self.platform.faults().unseal_vault()  # whatever answers, until unsealed (bounded)
                times["unsealed"] = clock()
                self.steps.run(step)  # then Ready: back behind the Service
            elif step.action == "check-vault-version":
                self._check_version(version)
            else:
                self.steps.run(step)
            times[f"{step.action} done"] = clock()
        node = self.vault_nodes()[0]
        # The pod leaves the Service's endpoints somewhere between its delete and the delete's return, and may
        # serve through its preStop sleep until kube-proxy catches up: it is surely away once the delete returns.
        # So "away" starts there, and the step's time away is a lower bound; the outage the suite judges is
        # measured from the reads themselves (scenarios/upgrade.py outage).
        gone = times["restart-vault-pod done"]
        return (VaultUpgradeStep(node_id=self.pod, role="active", left_front_at=gone, stopped_at=gone,
                                 unsealed_at=times["unsealed"],
                                 back_in_front_at=times["unseal-vault done"], version=node.version),)

    def _check_version(self, version: str) -> None:
        """The server says ``version`` in its seal status, and installed it last (LIST sys/version-history)."""
        seen: list[tuple[str, str]] = []

        def answered() -> bool:
            history = self.platform.vault_admin().adapter.list("/v1/sys/version-history")
            seen.append((self.vault_nodes()[0].version, newest_version(history)))
            return seen[-1] == (version, version)

        try:
            wait_until(answered, timeout=VERSION_CHECK_S, interval=1, describe=f"{self.pod} to answer on {version}")
        except WaitTimeout:
            said = f"runs {seen[-1][0]} (installed last: {seen[-1][1]})" if seen else "does not answer"
            raise PlatformUnavailable(f"{self.pod} {said}, not {version}",
                                      fix=f"see `kubectl describe pod {self.pod}`: the image tag the chart set"
                                      ) from None

    def apply_setup(self, setup: Setup) -> tuple[str, ...]:
        changed = upgradable_changes(self.platform.settings.profile.setup, setup)
        if setup.mesh.ca == "istio-csr":
            VaultConfigurator(self.platform.vault_admin(), self.platform.vault_layout, setup,
                              self.platform.run_id).configure_mesh_ca(manifests.ISTIO_NS, manifests.ISSUER,
                                                                      audience=manifests.issuer_audience())
        return changed


class KindCanary:
    """istio.io's canary upgrade on kind: FROM (settings.upgrade_istio) installed without a revision, TO as a
    revision beside it (cluster/kind/upgradeplan.py's steps)."""

    def __init__(self, platform: KindPlatform, tools: UpgradeTools) -> None:
        self.platform = platform
        self.steps = KindSteps(platform, tools)
        self.setup = platform.settings.profile.setup
        self.low, self.high = platform.settings.upgrade_istio

    def revisions(self) -> tuple[str, ...]:
        answer = json.loads(self.platform.kubectl("-n", ROOT_NAMESPACE, "get", "deployments", "-l", "app=istiod",
                                                  "-o", "json", timeout=30))
        running = {str((item["metadata"].get("labels") or {}).get("istio.io/rev") or DEFAULT_REVISION)
                   for item in answer["items"] if not item["metadata"].get("deletionTimestamp")}
        return tuple(sorted(running, key=lambda r: (r != DEFAULT_REVISION, r)))

    def install_revision(self, revision: str) -> None:
        if revision in self.revisions():
            raise PlatformUnavailable(f"revision {revision} is already running", fix="remove it first")
        self.steps.run(install_revision_step(self.setup, self.high, revision))

    def remove_revision(self, revision: str) -> None:
        self.steps.run(remove_default_step(self.low) if revision == DEFAULT_REVISION
                       else remove_revision_step(self.high, revision))
        # istioctl deletes without waiting: the revision is gone once its istiod Deployment is.
        istiod = "deploy/istiod" if revision == DEFAULT_REVISION else f"deploy/istiod-{revision}"
        self.platform.kubectl("-n", ROOT_NAMESPACE, "wait", "--for=delete", istiod, "--timeout=120s", timeout=130)

    def move_namespace(self, namespace: str, revision: str) -> None:
        label = move_steps(namespace, None if revision == DEFAULT_REVISION else revision,
                           self.low if revision == DEFAULT_REVISION else self.high, f"onto {revision}")[0]
        self.steps.run(label)

    def restart(self, workload: Workload) -> Workload:
        # A Deployment of one replica rolls with maxSurge 1 and maxUnavailable 0 (25 % of one, rounded up and
        # down): the new pod is Ready before the old one goes.
        deploy = f"deploy/{workload.name}"
        self.platform.kubectl("-n", workload.namespace, "rollout", "restart", deploy, timeout=60)
        self.platform.kubectl("-n", workload.namespace, "rollout", "status", deploy, "--timeout=300s", timeout=310)
        pod = self.platform._pod(workload.namespace, workload.name)
        return Workload(workload.namespace, workload.name, workload.service_account, str(pod.status.pod_ip),
                        workload.meshed, workload.address)

    def _pod_json(self, workload: Workload) -> dict[str, Any]:
        name = self.platform._pod(workload.namespace, workload.name).metadata.name
        return dict(json.loads(self.platform.kubectl("-n", workload.namespace, "get", "pod", name, "-o", "json",
                                                     timeout=30)))

    def injected_by(self, workload: Workload) -> str:
        return injected_revision(self._pod_json(workload))

    def serving_revision(self, workload: Workload) -> str:
        """The revision whose istiod lists the workload's proxy in its syncz (``istioctl x internal-debug syncz
        --revision R``, through istiod's XDS debug type: istioctl/pkg/internaldebug/internal-debug.go)."""
        proxy = f"{self._pod_json(workload)['metadata']['name']}.{workload.namespace}"
        istioctl = f"istioctl-{self.high}"
        serving = [revision for revision in self.revisions()
                   if proxy in syncz_proxies(self.steps.run(Step(f"syncz of {revision}", (
                       istioctl, "x", "internal-debug", "syncz", "--revision", revision))))]
        if len(serving) != 1:
            raise PlatformUnavailable(f"proxy {proxy} is connected to {len(serving)} istiods ({serving})",
                                      fix="wait until it has reconnected")
        return serving[0]
