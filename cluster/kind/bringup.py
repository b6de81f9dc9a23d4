"""Bring the kind platform up by executing the plan; tear down whatever was created, in reverse.

Each step of cluster/kind/plan.py is run by its action: a tool's command
line (kind, helm, istioctl, kubectl with the run's kubeconfig), objects to
apply, or one of the steps only Python can do (initialize and unseal Vault,
configure it with cluster/vault.py, hand istio-csr the root CA).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import hvac
import yaml

from cluster.errors import PlatformUnavailable
from cluster.kind import manifests, monitoring
from cluster.kind.charts import ChartSource, plan_sources
from cluster.kind.exporterimage import build_argv, exporter_context
from cluster.kind.external import ExternalVault, external_vault
from cluster.kind.plan import SA_ISSUER, KindPins, Step, cluster_name, install_plan, load_kind_pins
from cluster.kind.platform import KindPlatform
from cluster.kind.upgrade import UpgradeTools, pinned_istioctl
from cluster.kind.vaulttls import make_vault_tls
from cluster.kubectl.commands import Kubectl, Runner, documents, run
from cluster.kubectl.forward import port_forward
from cluster.kubectl.platform import ISTIO_CSR, VAULT_INIT, ClusterVault, vault_answers
from cluster.kubectl.tools import ensure_tool, load_tools
from cluster.podbinary import engine_target, image_context, pod_binary
from cluster.promconfig import METRICS_POLICY
from cluster.runstate import KIND_CLUSTER_MARK, RunState, run_is_live, runs_root
from cluster.secrets import register
from cluster.settings import Settings
from cluster.vault import KubernetesAuthTarget, VaultConfigurator
from cluster.vaultlayout import VaultLayout
from cluster.wait import Abort, wait_until

Progress = Callable[[str], None]
CONNECTION = "kind-connection.json"


def _cluster_ca(kubeconfig: Path) -> str:
    data = yaml.safe_load(kubeconfig.read_text())
    return base64.b64decode(data["clusters"][0]["cluster"]["certificate-authority-data"]).decode()


class KindBringUp:
    def __init__(self, settings: Settings, state: RunState, tools: dict[str, Path], runner: Runner,
                 stack: contextlib.ExitStack, *, pins: KindPins | None = None) -> None:
        self.settings = settings
        self.state = state
        self.tools = tools
        self.runner = runner
        self.stack = stack
        self.kubeconfig = state.file("kubeconfig")
        self.kubectl = Kubectl(runner, tools["kubectl"], self.kubeconfig)
        self.flavor = settings.kind_vault
        self.vault_ns = settings.kind_vault
        self.vault_addr = ""
        self.monitored = False  # the audit pipeline is installed (cluster/kind/monitoring.py)
        self.pins = pins
        self.external: ExternalVault | None = None
        # Vault's TLS for the run: its CA is what this process, the Issuer and the workloads trust.
        self.vault_tls = make_vault_tls(self.flavor, self.vault_ns)
        self.vault_ca_file = state.write_private("vault-ca.crt", self.vault_tls.ca_pem)

    @property
    def verify(self) -> str | bool:
        """Vault's CA for this process's clients (the external container listens in plaintext)."""
        return str(self.vault_ca_file) if self.external is None else True

    def tool_argv(self, argv: tuple[str, ...]) -> list[str]:
        """The plan's command with the pinned binary and this run's kubeconfig."""
        name, rest = argv[0], list(argv[1:])
        binary = str(self.tools[name])
        if name != "kind":
            return [binary, "--kubeconfig", str(self.kubeconfig), *rest]
        creating = rest[:2] == ["create", "cluster"]
        return [binary, *rest, *(["--kubeconfig", str(self.kubeconfig)] if creating else [])]

    def execute(self, step: Step) -> None:
        if step.action == "cluster":
            self.create_or_reset(step)
        elif step.action == "run":
            self.runner(self.tool_argv(step.argv), stdin=documents(step.documents) if step.documents else None,
                        timeout=900)
        elif step.action == "apply":
            self.kubectl.apply(step.documents)
        elif step.action == "init-vault":
            self.init_vault(step)
        elif step.action == "external-vault":
            self.start_external_vault(step)
        elif step.action == "configure-vault":
            self.configure_vault()
        elif step.action == "load-image":
            target = engine_target()
            with image_context(pod_binary(self.settings.cache_dir, target=target)) as context:
                self.runner(["docker", "build", "-t", manifests.APP_IMAGE, "-f", str(context / "Dockerfile"),
                             str(context)], timeout=900)
            self.runner(self.tool_argv(step.argv), timeout=300)
        elif step.action == "load-exporter-image":
            with exporter_context() as context:
                self.runner(build_argv(monitoring.EXPORTER_IMAGE, context), timeout=900)
            self.runner(self.tool_argv(step.argv), timeout=300)
        elif step.action == "monitoring":
            token = VaultConfigurator(self.admin(), VaultLayout(), self.settings.profile.setup,
                                      self.settings.run_id).metrics_token(METRICS_POLICY)
            self.kubectl.apply([monitoring.metrics_token_secret(self.vault_ns, token, self.settings.run_id),
                                *step.documents])
            self.monitored = True
        elif step.action == "plugin-ca":
            ca = VaultConfigurator(self.admin(), VaultLayout(), self.settings.profile.setup,
                                   self.settings.run_id).sign_plugin_ca()
            self.kubectl.apply([step.documents[0],
                                manifests.cacerts_secret(ca, self.settings.run_id)])
        elif step.action == "root-ca":
            root = VaultConfigurator(self.admin(), VaultLayout(), self.settings.profile.setup,
                                     self.settings.run_id).configure_pki()
            self.kubectl.apply([manifests.root_ca_secret(root, self.settings.run_id)])

    def create_or_reset(self, step: Step) -> None:
        """Create the cluster; with --reuse-cluster and a cluster of that name, reset it to the baseline."""
        name = step.argv[step.argv.index("--name") + 1]
        if step.reset and name in self.runner([str(self.tools["kind"]), "get", "clusters"], timeout=60).split():
            self.runner([str(self.tools["kind"]), "export", "kubeconfig", "--name", name,
                         "--kubeconfig", str(self.kubeconfig)], timeout=60)
            for command in step.reset:
                self.runner(self.tool_argv(command), timeout=400)
            return
        self.runner(self.tool_argv(step.argv), stdin=documents(step.documents), timeout=900)

    def init_vault(self, step: Step) -> None:
        """Reach Vault through a supervised port-forward, wait until it answers sealed and uninitialized, then
        initialize and unseal it through the API (as Vault's chart tests do: status first, then init)."""
        self.kubectl("-n", self.vault_ns, "wait", "--for=jsonpath={.status.phase}=Running",
                     f"pod/{self.flavor}-0", "--timeout=300s", timeout=310)
        self.vault_addr = self.stack.enter_context(port_forward(self.kubectl, self.vault_ns, self.flavor, 8200,
                                                                scheme="https"))
        self._initialize(hvac.Client(url=self.vault_addr, token="", verify=self.verify, timeout=30))

    def start_external_vault(self, step: Step) -> None:
        """--vault external: the container, the reviewer account, then init and unseal through the API."""
        image = (self.pins or load_kind_pins()).vault_images[self.flavor]
        self.external = self.stack.enter_context(external_vault(self.flavor, self.settings.run_id, image,
                                                                self.runner))
        self.vault_ns = manifests.EXTERNAL_VAULT_NS
        self.vault_addr = self.external.local_addr
        self.kubectl.apply(step.documents)
        self._initialize(hvac.Client(url=self.vault_addr, token="", timeout=30))

    def _initialize(self, client: hvac.Client) -> None:
        """`operator init` only once Vault answers its seal status, sealed and not yet initialized (an
        init sent earlier fails with a refused connection or a 503); then unseal with two of three keys."""
        wait_until(lambda: awaiting_init(client), timeout=180, interval=1,
                   describe=f"{self.flavor} to answer its seal status, sealed and not yet initialized")
        answer = client.sys.initialize(secret_shares=3, secret_threshold=2)
        init = {"root_token": register(answer["root_token"]),
                "unseal_keys_b64": [register(key) for key in answer["keys_base64"]]}
        self.state.write_private(VAULT_INIT, json.dumps(init))  # 0600, in the run's state directory
        for key in init["unseal_keys_b64"][:2]:
            client.sys.submit_unseal_key(key)

    def reviewer_token(self) -> str:
        """The reviewer account's token, once the token controller has filled its Secret."""
        def filled() -> str:
            return self.kubectl("-n", manifests.EXTERNAL_VAULT_NS, "get", "secret", manifests.REVIEWER,
                                "-o", "jsonpath={.data.token}", timeout=30).strip()

        encoded = wait_until(filled, timeout=60, interval=1, describe="the reviewer account's token")
        return register(base64.b64decode(encoded).decode())

    def admin(self) -> hvac.Client:
        token = json.loads(self.state.file(VAULT_INIT).read_text())["root_token"]
        return hvac.Client(url=self.vault_addr, token=register(token), verify=self.verify)

    def configure_vault(self) -> None:
        setup = self.settings.profile.setup
        configurator = VaultConfigurator(self.admin(), VaultLayout(), setup, self.settings.run_id)
        if self.external is None:
            target = KubernetesAuthTarget(host="https://kubernetes.default.svc", ca_pem=_cluster_ca(self.kubeconfig),
                                          issuer=SA_ISSUER)
        else:  # outside the cluster: the API server's container by name on the kind network
            name = cluster_name(self.settings.run_id, reuse=self.settings.reuse_cluster)
            target = KubernetesAuthTarget(host=f"https://{name}-control-plane:6443",
                                          ca_pem=_cluster_ca(self.kubeconfig), issuer=SA_ISSUER,
                                          reviewer_jwt=self.reviewer_token())
        configurator.configure_kubernetes_auth(target)
        configurator.configure_kv()
        configurator.configure_pki()
        # The bring-up's own workloads log in through their namespace's role and read its secret.
        for namespace, accounts in manifests.BRINGUP_WORKLOADS.items():
            configurator.write_secret(configurator.configure_namespace(namespace, accounts),
                                      {"canary": f"canary-{secrets.token_hex(8)}"})
        if setup.vault.audit and self.flavor == "vault":
            # On the chart's audit volume, where the exporter beside Vault reads it (cluster/kind/monitoring.py);
            # the external container has no such volume, and its log goes to its stdout.
            configurator.ensure_audit(monitoring.audit_log(self.flavor) if self.external is None else "stdout")
        if setup.mesh.ca == "istio-csr":
            configurator.configure_mesh_pki_role(manifests.MESH_PKI_ROLE)
            configurator.configure_mesh_ca(manifests.ISTIO_NS, manifests.ISSUER, audience=manifests.issuer_audience())


class VaultAlreadyInitialized(PlatformUnavailable, Abort):
    """Vault answers already initialized: its keys are not this run's. Ends a wait at once (cluster/wait.py Abort)."""


def awaiting_init(client: hvac.Client) -> bool:
    """True once Vault answers GET sys/seal-status as sealed and uninitialized; False while it does not answer.
    Raises VaultAlreadyInitialized when it answers already initialized: that Vault is not this run's to set up."""
    if not vault_answers(client):
        return False
    status = client.sys.read_seal_status()
    if status.get("initialized"):
        raise VaultAlreadyInitialized("Vault answers already initialized, so this run cannot hold its keys",
                                      fix="remove its storage (--reuse-cluster resets it), or use a fresh cluster")
    return bool(status.get("sealed"))


def reap_kind_runs(kind: Path, runner: Runner, progress: Progress, root: Path | None = None) -> list[str]:
    """Delete the kind clusters of runs that died without cleaning up (SIGKILL, a lost terminal).

    Only clusters recorded in a run's own state directory, and only when that run's owner process
    is gone: a cluster of a live run, of a kept one, or one this machine's runs did not make is
    never touched.
    """
    base = root or runs_root()
    reaped = []
    for path in sorted(base.glob("*/" + KIND_CLUSTER_MARK)):
        run_dir = path.parent
        if run_is_live(run_dir):
            continue
        name = path.read_text().strip()
        progress(f"removing kind cluster {name} of dead run {run_dir.name}")
        runner([str(kind), "delete", "cluster", "--name", name], timeout=300)
        shutil.rmtree(run_dir, ignore_errors=True)
        reaped.append(name)
    return reaped


@contextlib.contextmanager
def start_kind(settings: Settings, progress: Progress, runner: Runner = run) -> Iterator[KindPlatform]:
    """Tools, cluster, charts, Vault, Istio, workloads; on any failure (or at the end) the cluster goes."""
    pins = load_kind_pins()
    progress("the charts: cert-manager and Prometheus from their Go modules (hash-checked), istio-csr, "
             "Vault or OpenBao (pinned)")
    charts = plan_sources(settings.cache_dir, settings.istio_csr_chart, fetch=True,
                          istio_csr_needed=settings.profile.setup.mesh.ca == "istio-csr")
    progress("checking kind, kubectl, helm and istioctl (pinned, sha256)")
    versions = {"istioctl": settings.istio_version} if settings.istio_version else None
    tools = {name: ensure_tool(tool, settings.cache_dir / "bin")
             for name, tool in load_tools(versions=versions).items()}
    reap_kind_runs(tools["kind"], runner, progress)
    with contextlib.ExitStack() as stack:
        state = RunState.create(settings.run_id)
        stack.callback(state.remove)
        up = KindBringUp(settings, state, tools, runner, stack, pins=pins)
        name = cluster_name(settings.run_id, reuse=settings.reuse_cluster)
        external = settings.vault_placement == "external"
        plan = install_plan(settings.profile.setup, settings.run_id, flavor=up.flavor, pins=pins,
                            reuse=settings.reuse_cluster, external=external, vault_tls=up.vault_tls, charts=charts,
                            vault_tag=settings.vault_release)
        if not (settings.keep_cluster or settings.reuse_cluster):  # armed first: a failed create leaves nothing
            state.write_private(KIND_CLUSTER_MARK, name)  # a run killed outright: the next run's reaper sees it
            stack.callback(runner, [str(tools["kind"]), "delete", "cluster", "--name", name], timeout=300)
        for number in range(len(plan)):
            step = plan[number]
            progress(f"kind {number + 1}/{len(plan)}: {step.title}")
            up.execute(step)
            if up.external is not None and step.action == "external-vault":
                # Vault's address on the kind network is known now: the Issuer and workloads need it.
                plan = install_plan(settings.profile.setup, settings.run_id, flavor=up.flavor, pins=pins,
                                    reuse=settings.reuse_cluster, external=True,
                                    external_address=up.external.cluster_addr, vault_tls=up.vault_tls,
                                    charts=charts, vault_tag=settings.vault_release)
        prometheus = (stack.enter_context(port_forward(up.kubectl, up.vault_ns, monitoring.PROMETHEUS_SERVICE,
                                                       monitoring.PROMETHEUS_PORT)) if up.monitored else None)
        address = up.external.cluster_addr if up.external else f"https://{up.flavor}.{up.vault_ns}.svc:8200"
        ca_file = None if up.external else str(up.vault_ca_file)
        vault = ClusterVault(manifests.VaultTarget(up.vault_ns, address, up.flavor), up.vault_addr, ca_file)
        container = up.external.container if up.external else None
        vault_chart = charts[up.flavor]
        platform = KindPlatform(settings, state, kubectl=up.kubectl, istioctl=tools["istioctl"], vault=vault,
                                debug_image=pins.debug_image, runner=runner, mesh_ca=mesh_ca(settings),
                                vault_container=container, prometheus_addr=prometheus,
                                upgrade_tools=UpgradeTools(tools["helm"], vault_chart,
                                                           pinned_istioctl(settings.cache_dir)))
        state.write_private(CONNECTION, json.dumps({
            "tools": {k: str(v) for k, v in tools.items()}, "vault_addr": up.vault_addr, "flavor": up.flavor,
            "vault_ns": up.vault_ns, "debug_image": pins.debug_image, "vault_cluster_addr": address,
            "vault_ca_file": ca_file,
            "vault_container": container, "vault_chart": dataclasses.asdict(vault_chart),
            "prometheus_addr": prometheus}))
        if settings.keep_cluster or settings.reuse_cluster:
            state.mark_kept({"kubeconfig": str(up.kubeconfig), "kind_cluster": name})
        yield platform


def attach_kind(settings: Settings, state_path: Path, runner: Runner = run) -> KindPlatform:
    """An xdist worker's view of the controller's cluster (the controller holds the port-forward)."""
    state = RunState.attach(state_path)
    data = json.loads(state.file(CONNECTION).read_text())
    tools = {k: Path(v) for k, v in data["tools"].items()}
    target = manifests.VaultTarget(data["vault_ns"], data["vault_cluster_addr"], data["flavor"])
    return KindPlatform(settings, state, kubectl=Kubectl(runner, tools["kubectl"], state.file("kubeconfig")),
                        istioctl=tools["istioctl"],
                        vault=ClusterVault(target, data["vault_addr"], data.get("vault_ca_file")),
                        debug_image=data["debug_image"], runner=runner, mesh_ca=mesh_ca(settings),
                        vault_container=data["vault_container"], prometheus_addr=data.get("prometheus_addr"),
                        upgrade_tools=UpgradeTools(tools["helm"], ChartSource(**data["vault_chart"]),
                                                   pinned_istioctl(settings.cache_dir))
                        if data.get("vault_chart") else None)  # a run started before upgrades were recorded


def mesh_ca(settings: Settings) -> tuple[str, str]:
    """What signs workload certificates, scaled for mesh-ca-down: istio-csr, or istiod with ca: plugin."""
    return (manifests.ISTIO_NS, "deployment/istiod") if settings.profile.setup.mesh.ca == "plugin" else ISTIO_CSR
