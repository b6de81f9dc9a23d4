"""suites/upgrade on kind and on an existing cluster, as data: the steps ``--dry-run`` prints.

The steps are cluster/kind/plan.py's ``Step`` records, in the order the upstream guides give.

OpenBao (the kind install is one server, integrated storage): the openbao and vault charts run the
server as a StatefulSet whose ``server.updateStrategyType`` defaults to ``OnDelete`` (vault-helm
values.yaml, templates/server-statefulset.yaml). So ``helm upgrade`` changes the pod template and
restarts nothing; the guide "Upgrading Vault on Kubernetes" (vault-helm's docs, followed by
OpenBao's "Upgrading on Kubernetes") then deletes each pod, standbys before the active node, and
unseals it. A lone server is the last and only step: reads fail closed until it is unsealed.

Istio (istio.io "Canary upgrades", istioctl): TO is installed beside FROM as revision ``R``
(``istioctl install --revision R``: istiod-R, the ConfigMaps istio-R and istio-sidecar-injector-R,
and the webhook that injects where ``istio.io/rev=R``). A namespace moves by dropping
``istio-injection`` (it takes precedence over ``istio.io/rev``: the injector's namespaceSelector,
manifests/charts/istio-control/istio-discovery/templates/mutatingwebhook.yaml, matches the revision
label only where ``istio-injection`` DoesNotExist) and setting ``istio.io/rev=R``, then restarting its
workloads. The old control plane, installed without a revision, is removed with the options it was
installed with (``istioctl uninstall -f``); a rollback moves the namespaces back and removes
revision R instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from cluster.errors import SettingsError
from cluster.kind import manifests
from cluster.kind.charts import ChartSource
from cluster.kind.plan import Step
from cluster.profile import Setup

VAULT_UPGRADE_FLAVOR = "openbao"  # the versions pinned for an upgrade ([upgrade.openbao]) are OpenBao's


def canary_revision(version: str) -> str:
    """Istio's revision name for a version, as its docs spell them: "1.31.1" gives "1-31-1" (a DNS label)."""
    return version.replace(".", "-")


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


def canary_steps(setup: Setup, versions: tuple[str, str], namespaces: Sequence[str]) -> list[Step]:
    """Istio FROM -> TO as a canary, namespace by namespace, then FROM removed. ``namespaces``: the meshed
    namespaces, in the order they move."""
    low, high = versions
    revision = canary_revision(high)
    operator = manifests.istio_operator(setup, ca=setup.mesh.ca)
    steps = [Step(f"istiod {high} as revision {revision}, beside istiod {low}",
                  (istioctl(high), "install", "-y", "--revision", revision, "-f", "-"), (operator,),
                  notes=f"istiod-{revision}; the webhook istio-sidecar-injector-{revision} injects where "
                        f"istio.io/rev={revision} and istio-injection is absent", action="run")]
    steps += _move(namespaces, revision, f"onto revision {revision} ({high}); the mesh runs {low} and {high} "
                                         "side by side until the last one moves", high)
    steps.append(Step(f"remove istiod {low} (installed without a revision)",
                      (istioctl(low), "uninstall", "-y", "-f", "-"), (operator,),
                      notes="istio.io: an old control plane without a revision label is removed with the options "
                            "it was installed with", action="run"))
    return steps


def rollback_steps(setup: Setup, versions: tuple[str, str], namespaces: Sequence[str]) -> list[Step]:
    """The way back, before FROM is removed: every namespace returns to FROM, then revision TO goes."""
    low, high = versions
    revision = canary_revision(high)
    steps = _move(namespaces, None, f"back to istiod {low} (istio-injection=enabled)", low)
    steps.append(Step(f"remove revision {revision} ({high})",
                      (istioctl(high), "uninstall", "-y", "--revision", revision),
                      notes="the rollback of istio.io's canary guide", action="run"))
    return steps


def _move(namespaces: Sequence[str], revision: str | None, where: str, version: str) -> list[Step]:
    steps = []
    for namespace in namespaces:
        labels = (("istio-injection-", f"istio.io/rev={revision}") if revision
                  else ("istio.io/rev-", "istio-injection=enabled"))
        steps += [
            Step(f"namespace {namespace} {where}",
                 ("kubectl", "label", "namespace", namespace, *labels, "--overwrite"), action="run"),
            Step(f"restart {namespace}'s workloads onto {version}'s proxies",
                 ("kubectl", "-n", namespace, "rollout", "restart", "deployment"), action="run"),
            Step(f"wait for {namespace}'s rollout",
                 ("kubectl", "-n", namespace, "rollout", "status", "deployment", "--timeout=300s"), action="run"),
        ]
    return steps


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
