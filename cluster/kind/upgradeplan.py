"""suites/upgrade on kind and on an existing cluster, as data: the steps ``--dry-run`` prints.

The steps are cluster/kind/plan.py's ``Step`` records, in the order the upstream guides give.

OpenBao (the kind install is one server, integrated storage): the openbao and vault charts run the
server as a StatefulSet whose ``server.updateStrategyType`` defaults to ``OnDelete`` (vault-helm
values.yaml, templates/server-statefulset.yaml). So ``helm upgrade`` changes the pod template and
restarts nothing; the guide "Upgrading Vault on Kubernetes" (vault-helm's docs, followed by
OpenBao's "Upgrading on Kubernetes") then deletes each pod, standbys before the active node, and
unseals it. A lone server is the last and only step: reads fail closed until it is unsealed.

Istio (istio.io "Canary upgrades", istioctl): TO is installed beside FROM as revision ``R``
(``istioctl install --revision canary``, R = canary: istiod-R, the ConfigMaps istio-R and istio-sidecar-injector-R,
and the webhook that injects where ``istio.io/rev=R``). A namespace moves by dropping
``istio-injection`` (it takes precedence over ``istio.io/rev``: the injector's namespaceSelector,
manifests/charts/istio-control/istio-discovery/templates/mutatingwebhook.yaml, matches the revision
label only where ``istio-injection`` DoesNotExist) and setting ``istio.io/rev=R``, then restarting its
workloads. The old control plane, installed without a revision, carries istio.io/rev=default and is
removed as that revision (``istioctl uninstall --revision default``); a rollback moves the namespaces
back and removes revision R instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from cluster.errors import SettingsError
from cluster.istio import CANARY_REVISION
from cluster.kind import manifests
from cluster.kind.charts import ChartSource
from cluster.kind.plan import Step
from cluster.profile import Setup

VAULT_UPGRADE_FLAVOR = "openbao"  # the versions pinned for an upgrade ([upgrade.openbao]) are OpenBao's


def istioctl(version: str) -> str:
    """The plan's name for the pinned istioctl of ``version`` (versions.toml [tools.istioctl], [alternatives])."""
    return f"istioctl-{version}"


def vault_upgrade_steps(flavor: str, namespace: str, chart: ChartSource, versions: tuple[str, str]) -> list[Step]:
    """OpenBao FROM -> TO on the chart's single server. Raises SettingsError for HashiCorp Vault: the pinned
    pair is OpenBao's, and no Vault pair is pinned."""
    if flavor != VAULT_UPGRADE_FLAVOR:
        raise SettingsError(f"the Vault upgrade's versions are pinned for OpenBao, and this run installs {flavor}",
                            fix="add --kind-vault openbao")
    low, high = versions
    pod = f"{flavor}-0"
    return [
        Step(f"{flavor} {low} -> {high}: the chart's image tag (Helm)",
             ("helm", "upgrade", flavor, *chart.helm_args(), "--namespace", namespace, "--reuse-values",
              "--set", f"server.image.tag={high}", "--wait"),
             notes=(f"installed at server.image.tag={low}; the StatefulSet is OnDelete, so nothing restarts yet"),
             action="upgrade-vault-chart"),
        Step(f"restart {pod} on {high} (the only server: reads fail closed until it is unsealed)",
             ("kubectl", "-n", namespace, "delete", "pod", pod, "--wait=true", "--timeout=120s"),
             notes="vault-helm's guide: delete the standbys' pods first, the active node's last",
             action="restart-vault-pod"),
        Step(f"unseal {pod} with the run's keys, and wait until it is Ready",
             ("kubectl", "-n", namespace, "wait", "--for=condition=Ready", f"pod/{pod}", "--timeout=300s"),
             notes="as the install's init-vault step unseals: through the supervised port-forward, sys/unseal "
                   "twice", action="unseal-vault"),
        Step(f"prove {pod} runs {high}",
             notes=f"GET sys/version-history: its newest entry is {high}; sys/seal-status says version {high}, "
                   "sealed false", action="check-vault-version"),
    ]


def install_revision_step(setup: Setup, version: str, revision: str) -> Step:
    """istiod ``version`` as ``revision``, beside the control plane that runs now."""
    return Step(f"istiod {version} as revision {revision}, beside the control plane that runs now",
                (istioctl(version), "install", "-y", "--revision", revision, "-f", "-"),
                (manifests.istio_operator(setup, ca=setup.mesh.ca),),
                notes=f"istiod-{revision}; the webhook istio-sidecar-injector-{revision} injects where "
                      f"istio.io/rev={revision} and istio-injection is absent", action="run")


def remove_default_step(version: str) -> Step:
    """The control plane installed without a revision, removed by its revision label: every object of it is
    labelled istio.io/rev=default (istio-discovery's templates). Not ``uninstall -f``: that selects by the
    IstioOperator's name (operator/pkg/uninstall/prune.go GetPrunedResources), which the canary's objects
    carry too, being installed from the same IstioOperator."""
    return Step(f"remove istiod {version} (installed without a revision: revision default)",
                (istioctl(version), "uninstall", "-y", "--revision", "default"),
                notes="the canary's objects share the IstioOperator's name, so FROM is selected by its revision "
                      "label alone", action="run")


def remove_revision_step(version: str, revision: str) -> Step:
    return Step(f"remove revision {revision} ({version})",
                (istioctl(version), "uninstall", "-y", "--revision", revision),
                notes="the rollback of istio.io's canary guide", action="run")


def canary_steps(setup: Setup, versions: tuple[str, str], namespaces: Sequence[str]) -> list[Step]:
    """Istio FROM -> TO as a canary, namespace by namespace, then FROM removed. ``namespaces``: the meshed
    namespaces, in the order they move."""
    low, high = versions
    revision = CANARY_REVISION
    steps = [install_revision_step(setup, high, revision)]
    for namespace in namespaces:
        steps += move_steps(namespace, revision, high, f"onto revision {revision} ({high}); the mesh runs {low} and "
                                                       f"{high} side by side until the last one moves")
    steps.append(remove_default_step(low))
    return steps


def rollback_steps(setup: Setup, versions: tuple[str, str], namespaces: Sequence[str]) -> list[Step]:
    """The way back, before FROM is removed: every namespace returns to FROM, then revision TO goes."""
    low, high = versions
    steps = [step for namespace in namespaces
             for step in move_steps(namespace, None, low, f"back to istiod {low} (istio-injection=enabled)")]
    steps.append(remove_revision_step(high, CANARY_REVISION))
    return steps


def move_steps(namespace: str, revision: str | None, version: str, where: str) -> list[Step]:
    """``namespace`` onto ``revision`` (None: back to the control plane installed without one), its workloads
    restarted onto ``version``'s proxies."""
    labels = (("istio-injection-", f"istio.io/rev={revision}") if revision
              else ("istio.io/rev-", "istio-injection=enabled"))
    return [
        Step(f"namespace {namespace} {where}",
             ("kubectl", "label", "namespace", namespace, *labels, "--overwrite"), action="run"),
        Step(f"restart {namespace}'s workloads onto {version}'s proxies",
             ("kubectl", "-n", namespace, "rollout", "restart", "deployment"), action="run"),
        Step(f"wait for {namespace}'s rollout",
             ("kubectl", "-n", namespace, "rollout", "status", "deployment", "--timeout=300s"), action="run"),
    ]


def upgrade_plan(setup: Setup, *, flavor: str, vault_ns: str, chart: ChartSource, vault_versions: tuple[str, str],
                 istio_versions: tuple[str, str], namespaces: Sequence[str]) -> list[Step]:
    """The whole suites/upgrade plan in the order it runs: OpenBao, the canary and its rollback, the canary
    again to the end. HashiCorp Vault gives one step saying why its upgrade is left out (no pinned pair)."""
    try:
        vault = vault_upgrade_steps(flavor, vault_ns, chart, vault_versions)
    except SettingsError as refused:
        vault = [Step(f"no Vault upgrade: {refused}", action="none")]
    return [*vault,
            *canary_steps(setup, istio_versions, namespaces)[:-1],
            *rollback_steps(setup, istio_versions, namespaces),
            *canary_steps(setup, istio_versions, namespaces)]
