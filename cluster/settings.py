"""One frozen Settings, built once per run.

Configuration flows one way: CLI option, then environment, then profile,
then default. Nothing reads options or the environment after this.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cluster.errors import SettingsError
from cluster.guard import DEFAULT_ALLOWLIST
from cluster.profile import DEFAULT_PROFILE, Profile, load_profile
from cluster.runstate import cache_dir, new_run_id
from cluster.targets import ExistingCluster, existing_cluster
from cluster.versions import istio_upgrade_pair, istioctl_versions, upgrade_pair, upgrade_wheels

PLATFORMS = ("auto", "local", "kind", "kubeconfig")

# option name -> environment variable that may supply it
ENVIRONMENT = {
    "platform": "TRUSTGRID_PLATFORM",
    "profile": "TRUSTGRID_PROFILE",
    "report_dir": "TRUSTGRID_REPORT_DIR",
    "vault_binary": "TRUSTGRID_VAULT_BINARY",
    "apiserver_port": "TRUSTGRID_APISERVER_PORT",
    "vault_port": "TRUSTGRID_VAULT_PORT",
    "pod_cidr": "TRUSTGRID_POD_CIDR",
    "kind_vault": "TRUSTGRID_KIND_VAULT",
    "istio_version": "TRUSTGRID_ISTIO_VERSION",
    "istio_csr_chart": "TRUSTGRID_ISTIO_CSR_CHART",
    "vault_addr": "VAULT_ADDR",
    "workload_image": "TRUSTGRID_WORKLOAD_IMAGE",
    "vault_ca": "VAULT_CACERT",
    "upgrade_vault": "TRUSTGRID_UPGRADE_VAULT",
    "upgrade_istio": "TRUSTGRID_UPGRADE_ISTIO",
    "attach": "TRUSTGRID_ATTACH",
    "gate_tests": "TRUSTGRID_GATE_TESTS",
    "prometheus_url": "TRUSTGRID_PROMETHEUS_URL",
}

# What the upgrade gate (suites/upgrade/test_gate.py) runs before and after the upgrade, as pytest arguments:
# three conformance modules (Vault restarted among them) without the 30 s rotation test, and two chaos
# scenarios, about 70 s a run so that CI stays short. --gate-tests replaces it ("suites/conformance
# suites/chaos" for a whole certification).
GATE_TESTS = (
    "suites/conformance/test_live_policy.py", "suites/conformance/test_kubernetes_auth.py",
    "suites/conformance/test_mtls.py", "suites/chaos/test_scenarios.py::test_chaos[policy-revocation]",
    "suites/chaos/test_scenarios.py::test_chaos[vault-token-revocation]",
    "-k", "not rotation_keeps",
)
EXISTING_OPTIONS = ("vault_addr", "vault_cluster_addr", "vault_layout", "vault_workload", "mesh_ca", "mesh_ca_role",
                    "workload_image", "vault_unseal_keys", "vault_ca")
KIND_VAULTS = ("vault", "openbao")
VAULT_PLACEMENTS = ("in-cluster", "external")


Resolve = Callable[[str], tuple[str, str]]  # "auto" -> (a concrete platform, why it was chosen)


@dataclass(frozen=True)
class Settings:
    platform: str  # local, kind or kubeconfig once resolved (build_settings with a resolver); "auto" only unresolved
    profile: Profile
    keep_cluster: bool
    report_dir: Path
    vault_binary: Path | None
    apiserver_port: int
    vault_port: int
    pod_cidr: str | None
    run_id: str
    cache_dir: Path
    dry_run: bool = False
    # --platform kind: keep one cluster across runs, reset to the profile's baseline before each.
    reuse_cluster: bool = False
    # --platform kubeconfig: which context, and what it may do there.
    context: str | None = None
    context_allowlist: str = DEFAULT_ALLOWLIST
    allow_live_cluster: bool = False
    allow_disruptive: bool = False
    # --platform kind: which Vault in the cluster, and which pinned Istio.
    kind_vault: str = "vault"
    vault_placement: str = "in-cluster"  # --vault external: a container beside the kind nodes
    istio_version: str | None = None
    istio_csr_chart: str | None = None  # --platform kind: the istio-csr chart's oci:// reference, or a local copy
    platform_reason: str = ""  # why this platform: "chosen with --platform", or what auto found
    # --platform kubeconfig: where the existing cluster's Vault, mesh CA and image are.
    existing: ExistingCluster | None = None
    # The local platform runs this pinned OpenBao release (versions.toml [upgrade.openbao]) instead of the
    # bundled one: an upgrade's platform starts on its FROM version.
    vault_release: str | None = None
    # --upgrade-vault FROM:TO (suites/upgrade): pinned OpenBao versions, TO newer than FROM.
    upgrade_vault: tuple[str, str] = field(default_factory=upgrade_pair)
    # --upgrade-istio FROM:TO (suites/upgrade): Istio versions with a pinned istioctl, TO newer than FROM.
    upgrade_istio: tuple[str, str] = field(default_factory=istio_upgrade_pair)
    # --attach RUN_ID (local): run the tests on a local platform another process owns (a run kept with
    # --keep-cluster, or the upgrade gate's platform); this run neither starts nor stops it.
    attach: str | None = None
    # --gate-tests "ARGS" (suites/upgrade's gate): the pytest arguments run before and after the upgrade.
    gate_tests: tuple[str, ...] = GATE_TESTS
    # --prometheus-url URL (kubeconfig; kind, instead of the one it installs beside Vault): the Prometheus the
    # audit evidence is read from; the local platform runs its own.
    prometheus_url: str | None = None

    @property
    def run_report_dir(self) -> Path:
        return self.report_dir / self.run_id


def _pick(options: Mapping[str, object], env: Mapping[str, str], name: str) -> object | None:
    value = options.get(name)
    if value is None and name in ENVIRONMENT:
        value = env.get(ENVIRONMENT[name]) or None
    return value


def _port(value: object | None, option: str) -> int:
    if value is None:
        return 0
    try:
        port = int(str(value))
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise SettingsError(f"{option} {value!r} is not a port",
                            fix=f"pass {option} N with 0 <= N <= 65535 (0 picks a free port)")
    return port


def _prometheus_url(value: object | None, platform: str) -> str | None:
    if not value:
        return None
    url = str(value).rstrip("/")
    if platform == "local":
        raise SettingsError("--prometheus-url is for --platform kind and kubeconfig: the local platform runs its own "
                            "Prometheus", fix="drop --prometheus-url")
    if not url.startswith(("http://", "https://")) or not url.split("://", 1)[1]:
        raise SettingsError(f"--prometheus-url {value!r} is not a URL",
                            fix="pass the server's base URL, such as http://127.0.0.1:9090")
    if "@" in url.split("://", 1)[1].split("/", 1)[0]:
        # The URL goes into the timeline with every query; credentials in it would go into the reports.
        raise SettingsError("--prometheus-url carries credentials (user:password@), which the reports would keep",
                            fix="reach Prometheus without them, e.g. through `kubectl port-forward`")
    return url


def _kind_vault(value: object | None) -> str:
    chosen = str(value or "vault")
    if chosen not in KIND_VAULTS:
        raise SettingsError(f"unknown --kind-vault {chosen!r}", fix=f"choose one of {', '.join(KIND_VAULTS)}")
    return chosen


def _vault_placement(value: object | None) -> str:
    chosen = str(value or "in-cluster")
    if chosen not in VAULT_PLACEMENTS:
        raise SettingsError(f"unknown --vault {chosen!r}", fix=f"choose one of {', '.join(VAULT_PLACEMENTS)}")
    return chosen


def _attach(value: object | None, platform: str, keep: bool) -> str | None:
    if not value:
        return None
    run_id = str(value)
    if platform != "local":
        raise SettingsError(f"--attach {run_id} names a local run, and this run's platform is {platform}",
                            fix="add --platform local (kind keeps a cluster with --reuse-cluster; an existing "
                                "cluster is --platform kubeconfig)")
    if keep:
        raise SettingsError(f"--attach {run_id} uses a platform this run does not own, so there is nothing to keep",
                            fix="drop --keep-cluster (the run's owner decides when it ends)")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", run_id):
        raise SettingsError(f"--attach {run_id!r} is not a run id", fix="pass a run id such as tg-20261202-101500-ab12")
    return run_id


def _gate_tests(value: object | None) -> tuple[str, ...]:
    if not value:
        return GATE_TESTS
    try:
        args = tuple(shlex.split(str(value)))
    except ValueError as err:
        raise SettingsError(f"--gate-tests {value!r} cannot be split into arguments ({err})",
                            fix="close its quotes, as a shell would") from None
    paths = [arg.rstrip("/") for arg in args if arg.startswith("suites")]
    if any(path == "suites" or path.startswith("suites/upgrade") for path in paths):
        raise SettingsError(f"--gate-tests {value!r} includes suites/upgrade, so the gate would run itself",
                            fix="name the suites to compare, e.g. --gate-tests 'suites/conformance suites/chaos'")
    if not any(path.startswith("suites/") for path in paths):
        raise SettingsError(f"--gate-tests {value!r} selects nothing under suites/",
                            fix="name suites to run, e.g. --gate-tests 'suites/conformance suites/chaos'")
    return args


def _release(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def _pair(value: object, option: str, product: str, pinned: Collection[str]) -> tuple[str, str]:
    low, sep, high = str(value).partition(":")
    fix = f"pass {option} FROM:TO with pinned versions ({', '.join(sorted(pinned, key=_release))})"
    if not sep or low not in pinned or high not in pinned:
        raise SettingsError(f"{option} {value!r} is not two pinned {product} versions", fix=fix)
    if _release(high) <= _release(low):
        raise SettingsError(f"{option} {value!r} does not go to a newer version", fix=fix)
    return low, high


def parse_upgrade_vault(value: object | None) -> tuple[str, str]:
    """``FROM:TO`` (e.g. "2.6.2:2.7.2"), both pinned in versions.toml [upgrade.openbao.wheels], TO newer:
    OpenBao does not support downgrades (its storage may have moved on). None: the pinned pair."""
    if value is None or value == "":
        return upgrade_pair()
    return _pair(value, "--upgrade-vault", "OpenBao", upgrade_wheels())


def parse_upgrade_istio(value: object | None) -> tuple[str, str]:
    """``FROM:TO`` (e.g. "1.30.3:1.31.1"), both Istio versions with a pinned istioctl, TO newer: the canary
    goes forward, and its rollback is the way back (Istio's canary upgrade docs). None: the pinned pair."""
    if value is None or value == "":
        return istio_upgrade_pair()
    return _pair(value, "--upgrade-istio", "Istio", istioctl_versions())


def build_settings(
    options: Mapping[str, object],
    env: Mapping[str, str] | None = None,
    *,
    rootdir: Path | None = None,
    run_id: str | None = None,
    resolve: Resolve | None = None,
) -> Settings:
    """The run's settings from options (pytest's), then the environment (TRUSTGRID_*), then defaults.

    ``resolve`` turns --platform auto into a concrete platform, once: the caller that may look for a
    Docker engine passes it (conftest, cluster/select.py resolve), and xdist workers pass the answer
    their controller got. Raises SettingsError (one line, with the fix) for a bad value.
    """
    env = os.environ if env is None else env
    root = rootdir or Path.cwd()

    platform = str(_pick(options, env, "platform") or "auto")
    if platform not in PLATFORMS:
        raise SettingsError(f"unknown --platform {platform!r}", fix=f"choose one of {', '.join(PLATFORMS)}")
    platform, reason = resolve(platform) if resolve else (platform, "")

    profile_value = _pick(options, env, "profile")
    profile_path = Path(str(profile_value)) if profile_value else DEFAULT_PROFILE
    profile = load_profile(profile_path)

    existing = None
    if platform == "kubeconfig":
        picked = {name: str(_pick(options, env, name) or "") or None for name in EXISTING_OPTIONS}
        existing = existing_cluster(
            env, vault_addr=picked["vault_addr"], vault_cluster_addr=picked["vault_cluster_addr"],
            layout=picked["vault_layout"], vault_workload=picked["vault_workload"], mesh_ca=picked["mesh_ca"],
            mesh_ca_role=picked["mesh_ca_role"], image=picked["workload_image"],
            unseal_keys=picked["vault_unseal_keys"], vault_ca=picked["vault_ca"])

    attach = _attach(_pick(options, env, "attach"), platform, bool(options.get("keep_cluster")))
    vault_value = _pick(options, env, "vault_binary")
    report_value = _pick(options, env, "report_dir")
    return Settings(
        platform=platform,
        platform_reason=reason,
        profile=profile,
        keep_cluster=bool(options.get("keep_cluster")),
        dry_run=bool(options.get("dry_run")),
        reuse_cluster=bool(options.get("reuse_cluster")),
        context=str(options.get("context") or "") or None,
        context_allowlist=str(options.get("context_allowlist") or DEFAULT_ALLOWLIST),
        allow_live_cluster=bool(options.get("allow_live_cluster")),
        allow_disruptive=bool(options.get("allow_disruptive")),
        kind_vault=_kind_vault(_pick(options, env, "kind_vault")),
        vault_placement=_vault_placement(options.get("vault")),
        istio_version=str(_pick(options, env, "istio_version") or "") or None,
        istio_csr_chart=str(_pick(options, env, "istio_csr_chart") or "") or None,
        existing=existing,
        report_dir=Path(str(report_value)) if report_value else root / "reports" / "out",
        vault_binary=Path(str(vault_value)) if vault_value else None,
        apiserver_port=_port(_pick(options, env, "apiserver_port"), "--apiserver-port"),
        vault_port=_port(_pick(options, env, "vault_port"), "--vault-port"),
        pod_cidr=str(_pick(options, env, "pod_cidr") or "") or None,
        run_id=run_id or new_run_id(),
        cache_dir=cache_dir(),
        upgrade_vault=parse_upgrade_vault(_pick(options, env, "upgrade_vault")),
        upgrade_istio=parse_upgrade_istio(_pick(options, env, "upgrade_istio")),
        attach=attach,
        gate_tests=_gate_tests(_pick(options, env, "gate_tests")),
        prometheus_url=_prometheus_url(_pick(options, env, "prometheus_url"), platform),
    )
