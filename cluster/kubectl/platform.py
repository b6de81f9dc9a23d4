"""The kubectl-driven platform: the Platform protocol on a cluster with real Istio, istio-csr and Vault.

kind (cluster/kind/platform.py) and an existing cluster (cluster/kubeconfig) are this platform
with other credentials. Thin on purpose. On kind, bring-up executes cluster/kind/plan.py; Vault is
configured by the shared cluster/vault.py; workloads are the same tgpod app as on the local
platform, with Istio's own sidecar. Probes go through `kubectl exec
... tgpod agent`, captures through an ephemeral debug container running
tcpdump in the server pod's network namespace, faults through the Vault API
and by scaling Vault and istio-csr to zero and back.

Not yet run against a live kind cluster (the machine that wrote it has no
Docker engine): every command shape and parser is unit-tested with a
recording runner in tests/test_kind_platform.py.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import hvac
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from cluster.agent import APP_PORT, call_request, call_result
from cluster.errors import PlatformUnavailable
from cluster.istio import ROOT_NAMESPACE
from cluster.istiodlog import cacerts_reloads, wait_cacerts_taken
from cluster.kubectl.commands import Kubectl, Runner
from cluster.kubectl.klog import klog_records
from cluster.kubectl.objects import MESH_CA_ROLE, ca_configmap, cacerts_secret
from cluster.meshrules import IN_MESH_ALPN
from cluster.platform import (
    CallResult,
    Canary,
    Capture,
    MeshCaStatus,
    SessionStep,
    SidecarStatus,
    Upgrades,
    VaultRead,
    Versions,
    Workload,
)
from cluster.proxydump import NoWorkloadCertificate, last_certificate_error, workload_secret
from cluster.runstate import RUN_LABEL, RunState
from cluster.secrets import redact, register
from cluster.settings import Settings
from cluster.vault import PluginCa, revoke_role_tokens
from cluster.vaultlayout import VaultLayout
from cluster.wait import wait_until
from cluster.wire import CAPTURE_FILTER, flows_from_ip_packets, ip_packets_from_hex_dump, new_marker
from cluster.workloads import APP_IMAGE, VaultTarget, workload

ISTIO_CSR = ("cert-manager", "deploy/cert-manager-istio-csr")
AGENT_MARGIN_S = 15  # kubectl exec's own start and stream, beyond the agent's timeout
TCPDUMP_PID = "tg-tcpdump-pid"  # the line a capture's ephemeral container prints first: its tcpdump's pid
CAPTURE_SHELL = f'echo "{TCPDUMP_PID} $$"; exec "$@"'  # $$ is kept by exec: the pid printed is tcpdump's
VAULT_INIT = "vault-init.json"
MESH_CA_ROLE_KEPT = "mesh-ca-role.json"


@dataclass(frozen=True)
class ClusterVault:
    """Vault as the test process reaches it (a port-forward) and as pods reach it (its Service)."""

    target: VaultTarget
    local_addr: str
    ca_file: str | None = None  # the CA of Vault's TLS certificate (None: it listens in plaintext)

    @property
    def verify(self) -> str | bool:
        return self.ca_file or True


class KubectlPlatform:
    """The kubectl-driven platform; kind and the existing-cluster platform name it and bring their credentials."""

    name = "kubectl"

    def __init__(self, settings: Settings, state: RunState, *, kubectl: Kubectl, istioctl: Path, vault: ClusterVault,
                 debug_image: str, runner: Runner, layout: VaultLayout | None = None,
                 mesh_ca: tuple[str, str] = ISTIO_CSR, mesh_ca_role: str = MESH_CA_ROLE,
                 vault_workload: tuple[str, str] | None = None, image: str = APP_IMAGE,
                 vault_container: str | None = None, prometheus_addr: str | None = None) -> None:
        self.settings = settings
        self.state = state
        self.kubectl = kubectl
        self.istioctl = istioctl
        self.vault = vault
        self.debug_image = debug_image
        self.runner = runner
        self.run_id = settings.run_id
        self.vault_layout = layout or VaultLayout()
        self.mesh_ca = mesh_ca  # (namespace, deploy/name) of istio-csr, scaled for the mesh-CA faults
        self.mesh_ca_role = mesh_ca_role  # its Kubernetes-auth role in Vault
        self.vault_workload = vault_workload or (vault.target.namespace, f"statefulset/{vault.target.flavor}")
        self.image = image
        self.vault_container = vault_container  # --vault external: the container docker stops and starts
        self.prometheus_addr = prometheus_addr  # kind: a port-forward to the Prometheus it installed
        self.kube = k8s_config.new_client_from_config(config_file=str(kubectl.kubeconfig), context=kubectl.context)
        self.versions = Versions(platform=self.name, kubernetes=self._server_version(), vault=vault.target.flavor,
                                 extra={"istio": self._istio_version()})

    def _server_version(self) -> str:
        return str(k8s.VersionApi(self.kube).get_code().git_version)

    def _istio_version(self) -> str:
        """The Istio the cluster runs: the tag of each istiod's image (every revision's, app=istiod), not the
        version of the istioctl this run downloaded. istioctl's own version, marked so, when no istiod is found."""
        tags = sorted({image_tag(image) for image in self._istiod_images() if image_tag(image)})
        if tags:
            return ", ".join(tags)
        client = self.runner([str(self.istioctl), "version", "--short", "--remote=false"], timeout=30).strip()
        return f"{client} (istioctl's; no istiod found)"

    def _istiod_images(self) -> list[str]:
        """istiod's images ([] when none, or when these credentials may not list Deployments in istio-system)."""
        try:
            deployments = k8s.AppsV1Api(self.kube).list_namespaced_deployment(ROOT_NAMESPACE,
                                                                              label_selector="app=istiod").items
        except ApiException:
            return []
        return [str(d.spec.template.spec.containers[0].image) for d in deployments]

    # -- Vault -----------------------------------------------------------------
    def vault_admin(self) -> hvac.Client:
        token = register(str(json.loads(self.state.file(VAULT_INIT).read_text())["root_token"]))
        return hvac.Client(url=self.vault.local_addr, token=token, verify=self.vault.verify)

    def unseal_keys(self) -> list[str]:
        """The keys the platform kept at init (0600 in the run's state directory)."""
        return [register(k) for k in json.loads(self.state.file(VAULT_INIT).read_text())["unseal_keys_b64"]]

    def vault_client(self) -> hvac.Client:
        return hvac.Client(url=self.vault.local_addr, token="", verify=self.vault.verify)  # "": not VAULT_TOKEN

    def faults(self) -> KubectlFaults:
        return KubectlFaults(self)

    def prometheus_url(self) -> str:
        if self.settings.prometheus_url:
            return self.settings.prometheus_url
        if self.prometheus_addr:
            return self.prometheus_addr
        raise PlatformUnavailable(f"--platform {self.name} has no Prometheus of the suite's that reads Vault's audit "
                                  "log", fix="pass --prometheus-url URL: a Prometheus that scrapes the audit exporter "
                                             "(python -m cluster.audit) and loads cluster/audit/alerts.yaml")

    def upgrades(self) -> Upgrades:
        # An existing cluster's Vault is not this run's: the suite upgrades only what it installed (kind,
        # cluster/kind/upgrade.py). `--dry-run` prints the plan to run on a copy of that cluster.
        raise PlatformUnavailable(f"suites/upgrade upgrades only a Vault it installed, and --platform {self.name} "
                                  "uses one it did not", fix="certify the same versions on --platform kind or local; "
                                                             "--dry-run prints the upgrade's plan")

    def canary(self) -> Canary:
        raise PlatformUnavailable(f"suites/upgrade swaps only an Istio it installed, and --platform {self.name} "
                                  "uses one it did not", fix="certify the same versions on --platform kind or local; "
                                                             "--dry-run prints the canary's plan")

    # -- workloads ---------------------------------------------------------------
    def deploy(self, ns: str, name: str, sa: str, *, meshed: bool = True,
               annotations: Mapping[str, str] | None = None) -> Workload:
        # The workload trusts Vault through a ConfigMap of its namespace (cluster/workloads.py).
        ca_pem = Path(self.vault.ca_file).read_text() if self.vault.ca_file else ""
        self.kubectl.apply([ca_configmap(ns, ca_pem, self.run_id)])
        self.kubectl.apply(workload(ns, name, sa, self.vault.target, self.run_id, meshed=meshed,
                                              audience=self.settings.profile.setup.vault.audience, image=self.image,
                                              annotations=annotations))
        self.kubectl("-n", ns, "rollout", "status", f"deploy/{name}", "--timeout=120s", timeout=130)
        pod = self._pod(ns, name)
        return Workload(namespace=ns, name=name, service_account=sa, ip=str(pod.status.pod_ip), meshed=meshed,
                        address=f"{name}.{ns}.svc")

    def _pod(self, ns: str, name: str) -> Any:
        pods = k8s.CoreV1Api(self.kube).list_namespaced_pod(ns, label_selector=f"app={name}").items
        running = [p for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp]
        if not running:
            raise PlatformUnavailable(f"no running pod for {ns}/{name}", fix="see `kubectl describe deploy`")
        return running[0]

    def undeploy(self, wl: Workload) -> None:
        self.kubectl("-n", wl.namespace, "delete", f"deploy/{wl.name}", f"svc/{wl.name}", "--ignore-not-found",
                     "--wait=false")

    def _agent(self, wl: Workload, path: str, body: dict[str, Any] | None = None, timeout: float = 60) -> Any:
        """`tgpod agent` in the app container, given the whole ``timeout`` (its own default is 30 s, shorter than
        a rotation session); kubectl gets a margin beyond it, so that the agent's answer, not kubectl's, ends it."""
        argv = ["/tgpod", "agent", f"--timeout={timeout:g}s", path] + ([json.dumps(body)] if body is not None else [])
        return self.kubectl.exec_json(wl.namespace, f"deploy/{wl.name}", argv, timeout=timeout + AGENT_MARGIN_S)

    def call(self, src: Workload, dst: Workload, *, canary: str, timeout: float) -> CallResult:
        url = f"http://{dst.name}.{dst.namespace}.svc:{APP_PORT}/?canary={canary}"
        return call_result(self._agent(src, "/call", call_request(url, canary, timeout), timeout + 30))

    def session(self, src: Workload, dst: Workload, *, count: int, interval: float) -> list[SessionStep]:
        url = f"http://{dst.name}.{dst.namespace}.svc:{APP_PORT}/session"
        answer = self._agent(src, "/session", {"url": url, "count": count, "interval": interval},
                             count * (interval + 6) + 30)
        return [SessionStep.from_agent(s) for s in answer["steps"]]

    def read_vault(self, wl: Workload) -> VaultRead:
        # Short, as on the local platform: the monitor reads Vault at 6 Hz, and the agent's read takes 5 s at most.
        return VaultRead.from_agent(self._agent(wl, "/vault", timeout=10))

    def pause_vault_agent(self, wl: Workload, paused: bool) -> None:
        self._agent(wl, "/vault/pause" if paused else "/vault/resume")

    def relogin_vault(self, wl: Workload) -> dict[str, Any]:
        return dict(self._agent(wl, "/vault/relogin", {}))

    def refresh_tokens(self, wl: Workload) -> None:
        """Tokens of the service account as it is now (after it was made again), by a new pod.

        The kubelet replaces a projected token only once it is 80 % through its lifetime
        (pkg/kubelet/token/token_manager.go requiresRefresh), and until then keeps the token of the
        deleted account, which the API server no longer accepts: a pod would not recover for minutes.
        A restarted Deployment's new pod gets tokens of the new account; rollout status returns once
        the old pod is gone, so the next `kubectl exec deploy/…` reaches the new one."""
        target = f"deploy/{wl.name}"
        self.kubectl("-n", wl.namespace, "rollout", "restart", target)
        self.kubectl("-n", wl.namespace, "rollout", "status", target, "--timeout=180s", timeout=190)

    def sidecar_status(self, wl: Workload) -> SidecarStatus:
        pod = self._pod(wl.namespace, wl.name).metadata.name
        context = ["--context", self.kubectl.context] if self.kubectl.context else []
        dump = self.runner([str(self.istioctl), "--kubeconfig", str(self.kubectl.kubeconfig), *context,
                            "proxy-config", "secret", f"{pod}.{wl.namespace}", "-o", "json"], timeout=30)
        log = self.kubectl("-n", wl.namespace, "logs", pod, "-c", "istio-proxy", "--tail=300", timeout=30)
        try:
            status = workload_secret(json.loads(dump))
        except NoWorkloadCertificate as err:
            raise PlatformUnavailable(f"{err} in {wl.namespace}/{pod}; pilot-agent's last error: "
                                      f"{last_certificate_error(log) or 'none'}",
                                      fix="check the mesh CA's logs: the proxy's CSR was not signed") from None
        return replace(status, last_error=last_certificate_error(log))

    def renew_certificate(self, wl: Workload) -> None:
        """Istio's proxy cannot be told to renew: it renews on its own schedule (SECRET_GRACE_PERIOD_RATIO
        of the profile's short cert_ttl), so this waits, bounded by one certificate lifetime, for that."""
        before = self.sidecar_status(wl).serial
        lifetime = self.settings.profile.setup.mesh.cert_ttl.total_seconds()
        wait_until(lambda: self.sidecar_status(wl).serial != before, timeout=lifetime + 30, interval=1,
                   describe=f"the proxy of {wl.namespace}/{wl.name} to renew its certificate (serial {before})")

    # -- evidence ------------------------------------------------------------------
    def _ephemeral(self, wl: Workload, argv: list[str]) -> tuple[str, str]:
        """An ephemeral debug container (pinned image) in the pod's network namespace; returns (pod, container)."""
        pod = self._pod(wl.namespace, wl.name).metadata.name
        container = f"tg-{secrets.token_hex(3)}"
        self.kubectl("-n", wl.namespace, "debug", pod, "-c", container, f"--image={self.debug_image}",
                     "--profile=netadmin", "--target=app", "--image-pull-policy=IfNotPresent", "--", *argv)
        return pod, container

    @contextlib.contextmanager
    def capture(self, wl: Workload) -> Iterator[Capture]:
        """tcpdump on eth0 only (the loopback between Istio's proxy and the app is plaintext by design),
        every TCP flow (the app's Vault traffic too), synchronized by marker datagrams that the app
        container sends out of eth0 (`tgpod mark`): the start marker is in the log before the block
        runs, the end marker before the capture is judged."""
        capture = Capture()
        # An ephemeral container cannot be removed from its pod, so tcpdump is stopped by its pid at the end; the
        # shell prints that pid ($$, kept by exec) before it becomes tcpdump.
        tcpdump = ["tcpdump", "-i", "eth0", "-nn", "-l", "-x", "-s", "0", CAPTURE_FILTER]
        pod, container = self._ephemeral(wl, ["sh", "-c", CAPTURE_SHELL, "sh", *tcpdump])

        def logs() -> str:
            return self.kubectl("-n", wl.namespace, "logs", pod, "-c", container, timeout=30)

        def synchronized(which: str) -> str:
            marker = new_marker(which)

            def seen() -> str:
                self.kubectl("-n", wl.namespace, "exec", pod, "-c", "app", "--", "/tgpod", "mark", marker.decode(),
                             timeout=30)
                text = logs()
                return text if any(marker in packet for packet in ip_packets_from_hex_dump(text)) else ""

            return str(wait_until(seen, timeout=60, interval=0.5,
                                  describe=f"the capture in {wl.namespace}/{pod} to see its {which} marker"))

        try:
            wait_until(lambda: "listening on" in logs(), timeout=60, interval=0.5,
                       describe=f"tcpdump in {wl.namespace}/{pod}")
            synchronized("start")
            yield capture
            flows, payload = flows_from_ip_packets(ip_packets_from_hex_dump(synchronized("end")))
            capture.fill(flows, payload)
        finally:
            self._stop_tcpdump(wl.namespace, pod, container, logs)

    def _stop_tcpdump(self, namespace: str, pod: str, container: str, logs: Callable[[], str]) -> None:
        """Stop a capture's tcpdump (best effort: the pod may be gone); it would run as long as its pod."""
        with contextlib.suppress(PlatformUnavailable):
            pid = next((line.split()[1] for line in logs().splitlines() if line.startswith(TCPDUMP_PID + " ")), "")
            if pid.isdigit():
                self.kubectl("-n", namespace, "exec", pod, "-c", container, "--", "kill", "-INT", pid, timeout=30)

    def peer_certificate(self, wl: Workload) -> bytes:
        """A TLS handshake with the pod's proxy from outside the mesh, offering the in-mesh ALPN so that a
        PERMISSIVE listener terminates it too (see IN_MESH_ALPN).

        From a short-lived pod of its own, uninjected, in the workload's namespace: an existing cluster has
        no naked pod of ours to borrow. The pod is deleted whatever happens."""
        pod = f"tg-handshake-{secrets.token_hex(3)}"
        labels = ",".join(f"{k}={v}" for k, v in {RUN_LABEL: self.run_id, "sidecar.istio.io/inject": "false"}.items())
        script = (f"openssl s_client -connect {wl.ip}:{APP_PORT} -alpn {','.join(IN_MESH_ALPN)} </dev/null "
                  "2>/dev/null | openssl x509 -outform DER | base64 -w0; echo")
        self.kubectl("-n", wl.namespace, "run", pod, f"--image={self.debug_image}", "--restart=Never",
                     f"--labels={labels}", "--image-pull-policy=IfNotPresent", "--command", "--", "sh", "-c", script)
        try:
            def finished() -> str:
                phase = self.kubectl("-n", wl.namespace, "get", "pod", pod, "-o", "jsonpath={.status.phase}").strip()
                return phase if phase in ("Succeeded", "Failed") else ""

            wait_until(finished, timeout=120, interval=1, describe=f"the handshake pod {wl.namespace}/{pod}")
            text = self.kubectl("-n", wl.namespace, "logs", pod).strip()
        finally:
            self.kubectl("-n", wl.namespace, "delete", "pod", pod, "--ignore-not-found", "--wait=false")
        if not text:
            raise PlatformUnavailable(f"the proxy of {wl.namespace}/{wl.name} presented no certificate to a "
                                      "handshake from outside the mesh", fix="see its istio-proxy log")
        return base64.b64decode(text)

    def dump(self, into: Path) -> None:
        """Pod logs, events, the proxies' secrets and Vault's status, redacted."""
        into.mkdir(parents=True, exist_ok=True)
        pieces = {
            "events.log": ("get", "events", "-A", "--sort-by=.lastTimestamp"),
            "pods.log": ("get", "pods", "-A", "-o", "wide"),
            "istio-csr.log": ("-n", self.mesh_ca[0], "logs", self.mesh_ca[1], "--tail=500"),
            "vault.log": ("-n", self.vault.target.namespace, "logs", f"{self.vault.target.flavor}-0", "--tail=500"),
        }
        for name, args in pieces.items():
            try:
                text = self.kubectl(*args, timeout=30)
            except PlatformUnavailable as err:
                text = str(err)
            (into / name).write_text(redact(text))
        if self.vault_container:  # --vault external: its log is the container's, not a pod's
            with contextlib.suppress(PlatformUnavailable):
                text = self.runner(["docker", "logs", "--tail", "500", self.vault_container], timeout=30)
                (into / "vault.log").write_text(redact(text))
        with contextlib.suppress(hvac.exceptions.VaultError, OSError):
            (into / "vault-status.log").write_text(redact(json.dumps(self.vault_client().sys.read_seal_status())))


class KubectlFaults:
    """Cluster-wide faults through the Vault API and by scaling to zero and back."""

    def __init__(self, platform: KubectlPlatform) -> None:
        self.platform = platform

    def exclusive(self, what: str) -> AbstractContextManager[None]:
        return self.platform.state.lock("platform")

    def shared(self) -> AbstractContextManager[None]:
        return self.platform.state.lock("platform", shared=True)

    def _scale(self, namespace: str, target: str, replicas: int) -> None:
        self.platform.kubectl("-n", namespace, "scale", target, f"--replicas={replicas}")

    def stop_vault(self) -> None:
        """Stop Vault, and return once it no longer answers: scaling to zero returns while the old pod is still
        terminating, and a supervised port-forward could still reach it."""
        if self.platform.vault_container:
            self.platform.runner(["docker", "stop", self.platform.vault_container], timeout=60)
        else:
            self._scale(*self.platform.vault_workload, 0)
        client = self.platform.vault_client()
        wait_until(lambda: not vault_answers(client), timeout=180, interval=1,
                   describe=f"Vault ({'/'.join(self.platform.vault_workload)}) to stop answering")

    def start_vault(self) -> None:
        if self.platform.vault_container:
            self.platform.runner(["docker", "start", self.platform.vault_container], timeout=60)
        else:
            self._scale(*self.platform.vault_workload, 1)
        self.unseal_vault()

    def restart_vault(self) -> None:
        self.stop_vault()
        self.start_vault()

    def seal_vault(self) -> None:
        self.platform.vault_admin().sys.seal()

    def unseal_vault(self) -> None:
        """Unseal whichever Vault answers, until it reports unsealed: a pod that answered sealed may be replaced
        while its keys go in, so the keys are sent again to what answers next, bounded at 180 s."""
        keys = self.platform.unseal_keys()
        client = self.platform.vault_client()

        def unsealed() -> bool:
            if not vault_answers(client):
                return False
            for key in keys:
                if not client.sys.read_seal_status()["sealed"]:
                    return True
                client.sys.submit_unseal_key(key)
            return not client.sys.read_seal_status()["sealed"]

        wait_until(unsealed, timeout=180, interval=1, describe="Vault to answer unsealed after its start")

    def mesh_ca_status(self) -> MeshCaStatus:
        """istio-csr and cert-manager keep no status of their Vault access; their recent log lines do.

        cert-manager's Vault issuer logs in for each request, so a removed role shows as a refused
        login ("invalid role name", or a 403 on the Kubernetes auth login) and there is no held token.
        Read record by record: Vault's errors span lines (cluster/kind/klog.py).
        Not yet matched against a live cluster's log lines (no kind run where this was written).
        """
        namespace, deployment = self.platform.mesh_ca
        text = self.platform.kubectl("-n", namespace, "logs", deployment, "--since=120s", timeout=30)
        with contextlib.suppress(PlatformUnavailable):
            text += self.platform.kubectl("-n", "cert-manager", "logs", "deploy/cert-manager", "--since=120s",
                                          timeout=30)
        lines = [redact(record) for record in klog_records(text)]
        login = [line for line in lines if "invalid role name" in line
                 or ("auth" in line and "login" in line and ("403" in line or "permission denied" in line))]
        denied = [line for line in lines if ("403" in line or "permission denied" in line) and line not in login]
        return MeshCaStatus(holds_token=False, token_refused=tuple(denied[-10:]), login_refused=tuple(login[-10:]))

    def _mesh_ca_role_path(self) -> str:
        return f"/v1/auth/{self.platform.vault_layout.kubernetes_path}/role/{self.platform.mesh_ca_role}"

    def revoke_mesh_ca_vault_access(self) -> None:
        """Delete the mesh CA's role, kept first as it was: restore puts back exactly that, not our idea of it."""
        admin = self.platform.vault_admin()
        role = admin.adapter.get(self._mesh_ca_role_path())["data"]
        # Kept with its path: if this run dies mid-fault, the next run's reaper puts it back from here.
        self.platform.state.write_private(MESH_CA_ROLE_KEPT, json.dumps({"path": self._mesh_ca_role_path(),
                                                                          "data": role}))
        admin.adapter.delete(self._mesh_ca_role_path())
        # Only the mesh CA's own logins: the mount's other tokens are every workload's (on an existing
        # cluster, someone else's), and revoking them is not this fault.
        revoke_role_tokens(admin, self.platform.vault_layout.kubernetes_path, self.platform.mesh_ca_role)

    def restore_mesh_ca_vault_access(self) -> None:
        put_back_kept_role(self.platform.vault_admin(), self.platform.state.file(MESH_CA_ROLE_KEPT))

    def install_plugin_ca(self, ca: PluginCa) -> None:
        """Replace istio-system/cacerts. The kubelet updates the mounted files on its own sync (up to
        about a minute and a half: its sync period plus the Secret cache's TTL), then istiod reloads."""
        if self.platform.name == "kubeconfig":  # scenarios/bounds.py skips the rotations there; never reached
            raise PlatformUnavailable("an existing cluster's istio-system/cacerts is its own CA, not ours to replace",
                                      fix="certify plugin-CA rotation on kind")

        def istiod_log() -> str:
            return self.platform.kubectl("-n", ROOT_NAMESPACE, "logs", "deploy/istiod", timeout=30)

        before = cacerts_reloads(istiod_log())
        self.platform.kubectl.apply([cacerts_secret(ca, self.platform.run_id)])
        wait_cacerts_taken(istiod_log, before, timeout=180, interval=3)

    def stop_audit_exporter(self) -> None:
        raise PlatformUnavailable(f"the audit exporter on --platform {self.platform.name} is not the suite's to stop",
                                  fix="run the broken-exporter test on --platform local")

    def start_audit_exporter(self) -> None:
        self.stop_audit_exporter()

    def stop_mesh_ca(self) -> None:
        self._scale(*self.platform.mesh_ca, 0)

    def start_mesh_ca(self) -> None:
        namespace, deployment = self.platform.mesh_ca
        self._scale(namespace, deployment, 1)
        self.platform.kubectl("-n", namespace, "rollout", "status", deployment, "--timeout=120s", timeout=130)


def put_back_kept_role(admin: hvac.Client, kept: Path) -> bool:
    """Write a role kept by revoke_mesh_ca_vault_access back where it was; False when none was kept."""
    if not kept.exists():
        return False  # never revoked (the fault failed before it): nothing to put back
    saved = json.loads(kept.read_text())
    admin.adapter.post(saved["path"], json=saved["data"])
    kept.unlink()
    return True


def image_tag(image: str) -> str:
    """An image reference's tag without a -distroless style variant ("registry.example/istio/pilot:1.31.1-distroless"
    gives "1.31.1"); '' when it has none (a digest alone)."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1].split("-distroless")[0] if ":" in last else ""


def vault_answers(client: hvac.Client) -> bool:
    """True once Vault answers its seal status (sealed or not)."""
    try:
        client.sys.read_seal_status()
    except (hvac.exceptions.VaultError, OSError, ValueError):
        return False
    return True
