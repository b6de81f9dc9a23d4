"""The existing-cluster platform: the kind platform's methods on a cluster someone else runs.

Nothing is installed. The cluster already runs Istio (with istio-csr or a
plugged-in CA) and Vault; options say where they are (cluster/kubeconfig/
targets.py). What the run creates carries its run label (namespaces, and the
Vault roles and policies named after them) and is all that it deletes; the
mesh CA's role, taken away by one fault, is put back exactly as it was read.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import hvac

from cluster.errors import FaultRefused, PlatformUnavailable, SettingsError
from cluster.guard import Attachment, current_context, disruptive_refusal, kubeconfig_path
from cluster.kube import Kube
from cluster.kubectl.commands import Kubectl, Runner, run
from cluster.kubectl.platform import MESH_CA_ROLE_KEPT, ClusterVault, KubectlFaults, KubectlPlatform, put_back_kept_role
from cluster.kubectl.tools import debug_image, ensure_tool, load_tools
from cluster.runstate import EXISTING_CLUSTER_MARK, RunState, run_is_live, runs_root
from cluster.secrets import register
from cluster.settings import Settings
from cluster.targets import ExistingCluster
from cluster.vault import VaultConfigurator
from cluster.workloads import VaultTarget

Progress = Callable[[str], None]


class ExistingClusterPlatform(KubectlPlatform):
    name = "kubeconfig"

    def vault_admin(self) -> hvac.Client:
        token = os.environ.get("VAULT_TOKEN", "")
        if not token:
            raise SettingsError("VAULT_TOKEN is not set", fix="export VAULT_TOKEN before the run")
        return hvac.Client(url=self.vault.local_addr, token=register(token), verify=self._verify())

    def vault_client(self) -> hvac.Client:
        # "": hvac would otherwise send VAULT_TOKEN, the admin token, from an "unauthenticated" client.
        return hvac.Client(url=self.vault.local_addr, token="", verify=self._verify())

    def faults(self) -> ExistingClusterFaults:
        return ExistingClusterFaults(self)

    def _verify(self) -> str | bool:
        return self.settings.existing.verify() if self.settings.existing else True

    def unseal_keys(self) -> list[str]:
        existing = self.settings.existing
        if existing is None or existing.unseal_keys is None:
            raise PlatformUnavailable("unsealing this cluster's Vault needs its unseal keys",
                                      fix="pass --vault-unseal-keys FILE (mode 0600), or deselect vault-seal "
                                          "and vault-down")
        return [register(k) for k in json.loads(existing.unseal_keys.read_text())["unseal_keys_b64"]]


class ExistingClusterFaults(KubectlFaults):
    """The kubectl platform's faults, guarded: someone else's cluster runs a cluster-wide fault only when the run
    was told it may (--allow-disruptive, cluster/guard.py disruptive_refusal)."""

    def exclusive(self, what: str) -> AbstractContextManager[None]:
        settings = self.platform.settings
        refusal = disruptive_refusal(Attachment(settings.context or current_context(kubeconfig_path()),
                                                allow_disruptive=settings.allow_disruptive), what)
        if refusal:
            raise FaultRefused(refusal)  # the refusal names its fix (--allow-disruptive)
        return super().exclusive(what)


def _check_vault(existing: ExistingCluster) -> None:
    """One line if Vault does not answer or the token cannot act, before anything is created."""
    client = hvac.Client(url=existing.vault_addr, token=register(os.environ.get("VAULT_TOKEN", "")),
                         verify=existing.verify(), timeout=10)
    try:
        client.auth.token.lookup_self()
    except hvac.exceptions.Forbidden:
        raise SettingsError(f"Vault at {existing.vault_addr} refuses VAULT_TOKEN",
                            fix="export a valid VAULT_TOKEN that may manage roles and policies") from None
    except (hvac.exceptions.VaultError, OSError, ValueError) as err:
        raise PlatformUnavailable(f"Vault at {existing.vault_addr} does not answer ({type(err).__name__})",
                                  fix="check --vault-addr (a port-forward to the Vault service works)") from None


def targets(settings: Settings) -> ExistingCluster:
    if settings.existing is None:  # build_settings fills it for --platform kubeconfig
        raise SettingsError("--platform kubeconfig needs its targets", fix="pass --vault-addr and --workload-image")
    return settings.existing


def build_platform(settings: Settings, state: RunState, runner: Runner,
                   tools: dict[str, Path]) -> ExistingClusterPlatform:
    existing = targets(settings)
    layout = existing.layout
    target = VaultTarget("", existing.vault_cluster_addr, settings.kind_vault,
                                   pki_int_path=layout.pki_int_path, kubernetes_path=layout.kubernetes_path,
                                   kv_path=layout.kv_path)
    kubectl = Kubectl(runner, tools["kubectl"], kubeconfig_path(), settings.context)
    return ExistingClusterPlatform(
        settings, state, kubectl=kubectl, istioctl=tools["istioctl"], vault=ClusterVault(target, existing.vault_addr),
        debug_image=debug_image(), runner=runner, layout=layout,
        mesh_ca=(existing.mesh_ca.namespace, existing.mesh_ca.resource), mesh_ca_role=existing.mesh_ca_role,
        vault_workload=(existing.vault_workload.namespace, existing.vault_workload.resource), image=existing.image)


def pinned_tools(settings: Settings) -> dict[str, Path]:
    versions = {"istioctl": settings.istio_version} if settings.istio_version else None
    wanted = load_tools(versions=versions)
    return {name: ensure_tool(wanted[name], settings.cache_dir / "bin") for name in ("kubectl", "istioctl")}


def remove_run(platform: ExistingClusterPlatform, run_id: str) -> list[str]:
    """Everything a run made here: its labelled namespaces, the Vault roles, policies and KV paths
    named after them, and the mesh CA's role put back if the run took it away."""
    configurator = VaultConfigurator(platform.vault_admin(), platform.vault_layout, platform.settings.profile.setup,
                                     run_id)
    removed = Kube(platform.kube).delete_namespaces_of_run(run_id)
    for namespace in removed:
        configurator.remove_namespace(namespace)
    return removed


def attachment_target(settings: Settings) -> str:
    """Which cluster and Vault a run attached to: a dead run is reaped only by a run on the same pair."""
    existing = settings.existing
    return json.dumps({"context": settings.context or current_context(kubeconfig_path()),
                       "vault_addr": existing.vault_addr if existing else ""}, sort_keys=True)


def reap_existing_runs(platform: ExistingClusterPlatform, progress: Progress, root: Path | None = None) -> list[str]:
    """Runs on this cluster that were killed outright: remove what they made, restore what they took."""
    target = attachment_target(platform.settings)
    reaped = []
    for mark in sorted((root or runs_root()).glob("*/" + EXISTING_CLUSTER_MARK)):
        run_dir = mark.parent
        if run_dir.name == platform.run_id or run_is_live(run_dir) or mark.read_text() != target:
            continue
        progress(f"cleaning up after dead run {run_dir.name} on this cluster")
        put_back_kept_role(platform.vault_admin(), run_dir / MESH_CA_ROLE_KEPT)
        remove_run(platform, run_dir.name)
        shutil.rmtree(run_dir, ignore_errors=True)
        reaped.append(run_dir.name)
    return reaped


@contextlib.contextmanager
def attach_existing(settings: Settings, progress: Progress, runner: Runner = run,
                    tools: dict[str, Path] | None = None) -> Iterator[ExistingClusterPlatform]:
    """Attach; at the end remove what carries this run's label, and nothing else."""
    existing = targets(settings)
    progress(f"attaching to context {settings.context or '(current)'}; Vault at {existing.vault_addr}")
    _check_vault(existing)
    found = tools or pinned_tools(settings)
    with contextlib.ExitStack() as stack:
        state = RunState.create(settings.run_id)
        stack.callback(state.remove)
        platform = build_platform(settings, state, runner, found)
        reap_existing_runs(platform, progress)
        if not settings.keep_cluster:
            state.write_private(EXISTING_CLUSTER_MARK, attachment_target(settings))  # for the next run's reaper
            stack.callback(remove_run, platform, settings.run_id)
            stack.callback(platform.faults().restore_mesh_ca_vault_access)  # a no-op unless a fault is still on
        yield platform


def attach_existing_worker(settings: Settings, state_path: Path, runner: Runner = run) -> ExistingClusterPlatform:
    """An xdist worker's view: the same targets, the controller's run state."""
    return build_platform(settings, RunState.attach(state_path), runner, pinned_tools(settings))
