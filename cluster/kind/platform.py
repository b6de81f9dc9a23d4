"""The kind platform: the kubectl-driven platform (cluster/kubectl/platform.py) on the kind cluster
this run brought up (cluster/kind/bringup.py), with its own Vault's keys in the run's state, and the
upgrades of its own Vault and Istio (cluster/kind/upgrade.py).

Not yet run against a live kind cluster (the machine that wrote it has no Docker engine): every
command shape and parser is unit-tested with a recording runner in tests/test_kind_platform.py.
"""

from __future__ import annotations

from typing import Any

from cluster.errors import PlatformUnavailable
from cluster.kind.upgrade import KindCanary, KindUpgrades, UpgradeTools
from cluster.kubectl.platform import KubectlPlatform


class KindPlatform(KubectlPlatform):
    name = "kind"

    def __init__(self, *args: Any, upgrade_tools: UpgradeTools | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.upgrade_tools = upgrade_tools  # None: a platform that cannot upgrade (a unit test's)

    def _tools(self, what: str) -> UpgradeTools:
        if self.upgrade_tools is None:
            raise PlatformUnavailable(f"{what} needs the run's helm, chart and istioctl, which this view lacks",
                                      fix="run suites/upgrade in the process that brought the kind cluster up")
        return self.upgrade_tools

    def upgrades(self) -> KindUpgrades:
        if self.vault_container:
            raise PlatformUnavailable("with --vault external, Vault runs in a container, not from the chart that "
                                      "helm upgrades", fix="drop --vault external for suites/upgrade")
        return KindUpgrades(self, self._tools("an in-place Vault upgrade"))

    def canary(self) -> KindCanary:
        return KindCanary(self, self._tools("the Istio canary"))
