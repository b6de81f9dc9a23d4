"""The kind platform's command shapes and parsers, with a recording runner (no Docker here).

These prove what the platform asks kubectl, istioctl and kind to do, and how
it reads their answers; the live behaviour needs a kind cluster (its issue).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cluster.errors import PlatformUnavailable
from cluster.kind import manifests, monitoring
from cluster.kind.bringup import KindBringUp
from cluster.kind.exporterimage import EXPORTER_MODULES
from cluster.kind.plan import cluster_name, install_plan
from cluster.kind.platform import KindPlatform
from cluster.kubectl.commands import CommandFailed, Kubectl, run
from cluster.kubectl.platform import ClusterVault
from cluster.platform import MeshCaStatus, SidecarStatus, Workload
from cluster.proxydump import workload_secret
from cluster.runstate import RUN_LABEL, RunState
from cluster.settings import build_settings
from cluster.wire import MARKER_PORT
from tests.test_capture import _frame, _tcpdump_hex, _udp_frame

KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: k, cluster: {server: "https://127.0.0.1:6443", certificate-authority-data: %s}}]
users: [{name: u, user: {token: not-a-real-token}}]
contexts: [{name: kind-x, context: {cluster: k, user: u}}]
current-context: kind-x
"""


Answer = str | Callable[[Sequence[str]], str]


class Recorder:
    """Records each command; answers with the first answer whose key is in the command line
    (a string, or a function of the command for answers that change as the test goes)."""

    def __init__(self, answers: dict[str, Answer]) -> None:
        self.answers = answers
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str], *, stdin: str | None = None, timeout: float = 120) -> str:
        self.calls.append(list(argv))
        line = " ".join(argv)
        answer = next((answer for key, answer in self.answers.items() if key in line), "")
        return answer if isinstance(answer, str) else answer(argv)


def certificate() -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "trustgrid test")])
    now = datetime.now(UTC)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(0xABC).not_valid_before(now).not_valid_after(now + timedelta(seconds=30))
            .sign(key, hashes.SHA256()))


@pytest.fixture
def kind_platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[KindPlatform, Recorder]]:
    monkeypatch.setenv("HOME", str(tmp_path))  # the run state goes under this test's home
    ca = base64.b64encode(certificate().public_bytes(serialization.Encoding.PEM)).decode()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG % ca)
    settings = build_settings({"platform": "kind"}, {}, rootdir=tmp_path)
    monkeypatch.setattr(KindPlatform, "_server_version", lambda self: "v1.36.4")
    istiods = ["registry.example/istio/pilot:1.30.3-distroless"]
    monkeypatch.setattr(KindPlatform, "_istiod_images", lambda self: list(istiods))
    recorder = Recorder({"version --short": "1.31.1"})
    state = RunState.create(settings.run_id)
    target = manifests.VaultTarget("vault", "http://vault.vault.svc:8200", "vault")
    made = KindPlatform(settings, state, kubectl=Kubectl(recorder, Path("/bin/kubectl"), kubeconfig),
                            istioctl=Path("/bin/istioctl"), vault=ClusterVault(target, "http://127.0.0.1:1"),
                            debug_image="netshoot@sha256:abc", runner=recorder)
    yield made, recorder
    state.remove()


CLIENT = Workload("app", "client", "client", "10.0.0.3", True)
SERVER = Workload("app", "server", "server", "10.0.0.2", True)


def test_versions_come_from_the_live_cluster(kind_platform: tuple[KindPlatform, Recorder]) -> None:
    """The header names the Istio the cluster runs (istiod's image), not the istioctl the run downloaded."""
    kind, _ = kind_platform
    assert kind.versions.as_dict() == {"platform": "kind", "kube-apiserver": "v1.36.4", "vault": "vault",
                                       "istio": "1.30.3"}
    images = ["r/pilot:1.31.1", "r/pilot:1.30.3"]  # two revisions during an upgrade
    kind._istiod_images = lambda: images  # type: ignore[method-assign]
    assert kind._istio_version() == "1.30.3, 1.31.1"
    images.clear()
    assert kind._istio_version() == "1.31.1 (istioctl's; no istiod found)"


def test_image_tags() -> None:
    from cluster.kubectl.platform import image_tag

    assert image_tag("registry.example/istio/pilot:1.31.1") == "1.31.1"
    assert image_tag("localhost:5000/istio/pilot:1.31.1-distroless") == "1.31.1"
    assert image_tag("registry.example/istio-release/pilot@sha256:abc") == ""
    assert image_tag("pilot:1.29.0@sha256:abc") == "1.29.0"


def test_a_call_goes_through_the_clients_agent_and_reads_xfcc(kind_platform: tuple[KindPlatform, Recorder]) -> None:
    kind, recorder = kind_platform
    xfcc = 'By=spiffe://cluster.local/ns/app/sa/server;URI=spiffe://cluster.local/ns/app/sa/client'
    recorder.answers["/call"] = json.dumps({"status": 200, "elapsed": 0.01,
                                            "body": {"headers": {"X-Forwarded-Client-Cert": [xfcc]}}})
    result = kind.call(CLIENT, SERVER, canary="tg-canary-1", timeout=5)
    assert result.status == 200
    assert result.peer_ids == ("spiffe://cluster.local/ns/app/sa/server", "spiffe://cluster.local/ns/app/sa/client")
    argv = recorder.calls[-1]
    assert argv[:3] == ["/bin/kubectl", "--kubeconfig", str(kind.kubectl.kubeconfig)]
    assert argv[3:12] == ["exec", "-n", "app", "deploy/client", "-c", "app", "--", "/tgpod", "agent"]
    request = json.loads(argv[-1])
    assert request["url"] == "http://server.app.svc:8080/?canary=tg-canary-1" and request["timeout"] == 5


def test_a_capture_runs_tcpdump_on_eth0_in_an_ephemeral_container_and_judges_the_flows(
        kind_platform: tuple[KindPlatform, Recorder], monkeypatch: pytest.MonkeyPatch) -> None:
    kind, recorder = kind_platform
    monkeypatch.setattr(kind, "_pod", lambda ns, name: type("P", (), {"metadata": type("M", (), {"name": "srv-1"})}))
    frames: list[bytes] = []

    def mark(argv: Sequence[str]) -> str:
        """Each `tgpod mark` sends a datagram out of eth0, and tcpdump's log shows it."""
        frames.append(_udp_frame("10.0.0.2", "192.0.2.1", 40999, MARKER_PORT, argv[-1].encode()))
        return ""

    recorder.answers[" mark "] = mark
    recorder.answers[" logs "] = lambda _: "tg-tcpdump-pid 7\n" + _tcpdump_hex(*frames)
    with kind.capture(SERVER) as wire:
        assert len(frames) == 1  # the start marker was seen before the block ran
        frames.append(_frame("10.0.0.3", "10.0.0.2", 40000, 8080, 0x02, b""))
        frames.append(_frame("10.0.0.3", "10.0.0.2", 40000, 8080, 0x18, b"GET /?canary=tg-canary-9 HTTP/1.1"))
    assert len(frames) == 4  # ...and the end marker after it, before the capture was judged
    debug = next(c for c in recorder.calls if "debug" in c)
    assert "--image=netshoot@sha256:abc" in debug and "--profile=netadmin" in debug
    command = debug[debug.index("--") + 1:]
    assert command[:2] == ["sh", "-c"] and command[4:7] == ["tcpdump", "-i", "eth0"]  # never loopback: plaintext
    assert debug[-1] == "tcp or (udp and dst port 9)"  # every TCP flow, Vault's too, and the markers
    assert len(wire.flows) == 1  # markers are never flows
    assert wire.plaintext_flows and wire.contains("tg-canary-9")
    # An ephemeral container stays in its pod: its tcpdump is stopped by the pid it printed first.
    container = debug[debug.index("-c") + 1]
    assert recorder.calls[-1][3:] == ["-n", "app", "exec", "srv-1", "-c", container, "--", "kill", "-INT", "7"]


def test_the_capture_shell_prints_its_pid_then_becomes_tcpdump(tmp_path: Path) -> None:
    """The wrapper as the ephemeral container runs it, with a stand-in tcpdump that prints its own pid."""
    import subprocess

    fake = tmp_path / "tcpdump"
    fake.write_text('#!/bin/sh\necho "tcpdump pid $$ args $*"\n')
    fake.chmod(0o755)
    from cluster.kubectl.platform import CAPTURE_SHELL

    out = subprocess.run(["sh", "-c", CAPTURE_SHELL, "sh", str(fake), "-i", "eth0"], capture_output=True, text=True,
                         check=True, timeout=10).stdout.splitlines()
    printed = out[0].split()[1]
    assert out[1] == f"tcpdump pid {printed} args -i eth0", out  # the pid printed is tcpdump's own


FIXTURES = Path(__file__).parent / "fixtures" / "istio"


def test_the_proxy_certificate_is_read_from_istioctl_and_the_proxys_log(
        kind_platform: tuple[KindPlatform, Recorder], monkeypatch: pytest.MonkeyPatch) -> None:
    """Fed what istioctl really printed for a real proxy (recorded on the local platform: the same proxies)."""
    kind, recorder = kind_platform
    monkeypatch.setattr(kind, "_pod", lambda ns, name: type("P", (), {"metadata": type("M", (), {"name": "srv-1"})}))
    recorder.answers["proxy-config secret"] = (FIXTURES / "istioctl-proxy-config-secret-server.json").read_text()
    recorder.answers[" logs "] = ("2026-12-01T01:51:03.734367Z\terror\tcache\tresource:default failed to sign: "
                                  "create certificate: rpc error: code = Unavailable desc = connection error")
    status = kind.sidecar_status(SERVER)
    envoy = workload_secret(json.loads((FIXTURES / "envoy-secrets-server.json").read_text()))
    assert replace(status, last_error="") == envoy  # what the local platform reads from Envoy's admin
    assert "Unavailable" in status.last_error
    istioctl = next(c for c in recorder.calls if "proxy-config" in c)
    assert istioctl[-4:] == ["secret", "srv-1.app", "-o", "json"]


def test_cluster_wide_faults_scale_and_seal_the_real_components(kind_platform: tuple[KindPlatform, Recorder]) -> None:
    kind, recorder = kind_platform
    faults = kind.faults()
    faults.stop_mesh_ca()
    faults.stop_vault()
    scaled = [c[3:] for c in recorder.calls if "scale" in c]
    assert scaled == [["-n", "cert-manager", "scale", "deploy/cert-manager-istio-csr", "--replicas=0"],
                      ["-n", "vault", "scale", "statefulset/vault", "--replicas=0"]]


def test_bring_up_runs_each_tool_with_the_runs_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    settings = build_settings({"platform": "kind"}, {}, rootdir=tmp_path)
    state = RunState.create(settings.run_id)
    try:
        tools = {name: Path(f"/cache/{name}") for name in ("kind", "kubectl", "helm", "istioctl")}
        up = KindBringUp(settings, state, tools, Recorder({}), contextlib.ExitStack())
        kubeconfig = str(state.file("kubeconfig"))
        assert up.tool_argv(("kind", "create", "cluster", "--name", "x")) == [
            "/cache/kind", "create", "cluster", "--name", "x", "--kubeconfig", kubeconfig]
        assert up.tool_argv(("kind", "load", "docker-image", "i")) == ["/cache/kind", "load", "docker-image", "i"]
        assert up.tool_argv(("helm", "upgrade", "--install")) == [
            "/cache/helm", "--kubeconfig", kubeconfig, "upgrade", "--install"]
    finally:
        state.remove()


def test_a_failing_or_hanging_command_is_one_line() -> None:
    with pytest.raises(CommandFailed) as failed:
        run(["sh", "-c", "echo first >&2; echo 'the last line hvs.AAAAAAAAAAAAAAAAAAAAAAAA' >&2; exit 3"])
    message = str(failed.value)
    assert "\n" not in message and "failed (3)" in message and "the last line" in message
    assert "hvs.AAAA" not in message  # redacted
    with pytest.raises(CommandFailed, match=r"did not finish in 0\.5 s"):
        run(["sleep", "5"], timeout=0.5)


@pytest.mark.parametrize("exists", [True, False])
def test_reuse_cluster_resets_an_existing_cluster_and_creates_a_missing_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exists: bool) -> None:
    import contextlib

    from cluster.kind.plan import REUSED_CLUSTER, install_plan

    monkeypatch.setenv("HOME", str(tmp_path))
    settings = build_settings({"platform": "kind", "reuse_cluster": True}, {}, rootdir=tmp_path)
    state = RunState.create(settings.run_id)
    try:
        tools = {name: Path(f"/cache/{name}") for name in ("kind", "kubectl", "helm", "istioctl")}
        recorder = Recorder({"get clusters": f"kind\n{REUSED_CLUSTER}\n" if exists else "kind\n"})
        up = KindBringUp(settings, state, tools, recorder, contextlib.ExitStack())
        first = install_plan(settings.profile.setup, settings.run_id, reuse=True)[0]
        up.execute(first)
        verbs = [" ".join(call[1:4]) if call[0] == "/cache/kind" else " ".join(call[3:6]) for call in recorder.calls]
        if exists:
            assert verbs == ["get clusters", "export kubeconfig --name", "delete namespace -l",
                             "delete clusterrolebinding -l", "uninstall vault --namespace", "delete pvc --namespace",
                             "uninstall openbao --namespace", "delete pvc --namespace"]
            assert recorder.calls[1][-2:] == ["--kubeconfig", str(state.file("kubeconfig"))]
            assert not any("create" in call for call in recorder.calls)
        else:
            assert verbs == ["get clusters", "create cluster --name"]
            assert REUSED_CLUSTER in recorder.calls[1]
    finally:
        state.remove()


def test_the_mesh_ca_role_is_restored_exactly_as_it_was_read(kind_platform: tuple[KindPlatform, Recorder],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    kind, _ = kind_platform
    role = {"bound_service_account_names": ["vault-mesh-ca"], "token_ttl": 17, "policies": ["mesh-ca"]}
    stored: dict[str, Any] = {"/v1/auth/kubernetes/role/mesh-ca": dict(role)}

    tokens = {"a1": {"path": "auth/kubernetes/login", "meta": {"role": "mesh-ca"}},
              "a2": {"path": "auth/kubernetes/login", "meta": {"role": "trustgrid-app"}},
              "a3": {"path": "auth/other/login", "meta": {"role": "mesh-ca"}}}
    revoked: list[str] = []

    class Adapter:
        def get(self, path: str) -> dict[str, Any]:
            return {"data": stored[path]}

        def delete(self, path: str) -> None:
            del stored[path]

        def list(self, path: str) -> dict[str, Any]:
            assert path == "/v1/auth/token/accessors"
            return {"data": {"keys": list(tokens)}}

        def post(self, path: str, json: dict[str, Any]) -> dict[str, Any] | None:
            if path == "/v1/auth/token/lookup-accessor":
                return {"data": tokens[json["accessor"]]}
            if path == "/v1/auth/token/revoke-accessor":
                revoked.append(json["accessor"])
                return None
            stored[path] = json
            return None

    admin = type("Admin", (), {"adapter": Adapter()})()
    monkeypatch.setattr(kind, "vault_admin", lambda: admin)
    faults = kind.faults()
    faults.revoke_mesh_ca_vault_access()
    # Only the mesh CA's own logins on its mount; a workload's token of the same mount stays.
    assert stored == {} and revoked == ["a1"]
    kind.faults().restore_mesh_ca_vault_access()  # another Faults object: the role was kept in the run state
    assert stored == {"/v1/auth/kubernetes/role/mesh-ca": role}
    kind.faults().restore_mesh_ca_vault_access()  # and a second restore is a no-op
    assert stored == {"/v1/auth/kubernetes/role/mesh-ca": role}


def test_an_external_vault_runs_in_server_mode_on_the_kind_network_and_is_always_removed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from testcontainers.core import container as tc

    from cluster.kind.external import external_vault, server_command, server_config

    made: list[Any] = []

    class FakeContainer:  # pure wiring: there is no Docker engine here (the live run is the kind issue's)
        def __init__(self, image: str) -> None:
            self.image = image
            self.calls: dict[str, Any] = {}
            self.stopped = False
            self.ports: dict[str, Any] = {}
            made.append(self)

        def __getattr__(self, name: str) -> Any:
            def record(*args: Any, **kwargs: Any) -> FakeContainer:
                self.calls[name] = (args, kwargs)
                return self
            return record

        def stop(self) -> None:
            self.stopped = True

    monkeypatch.setattr(tc, "DockerContainer", FakeContainer)
    recorder = Recorder({"docker inspect": "172.18.0.9\n"})
    with pytest.raises(RuntimeError), external_vault("openbao", "tg-abc", "openbao/openbao:2.7.1", recorder) as vault:
        assert vault.container == "trustgrid-vault-abc" and vault.cluster_addr == "http://172.18.0.9:8200"
        assert vault.local_addr.startswith("http://127.0.0.1:")
        raise RuntimeError("a failure mid-run")
    container = made[0]
    assert container.stopped, "the container goes even when the block fails"
    assert container.calls["with_kwargs"][1]["network"] == "kind"
    assert list(container.ports) == ["8200/tcp"] and container.ports["8200/tcp"][0] == "127.0.0.1", \
        "Vault's plaintext port is published on loopback only"
    assert vault.local_addr == f"http://127.0.0.1:{container.ports['8200/tcp'][1]}"
    assert container.calls["with_command"][0][0] == server_command("openbao")
    config = server_config("openbao")
    assert 'storage "raft"' in config and "tls_disable = 1" in config  # OpenBao 2.7 has no file storage
    assert 'storage "file"' in server_config("vault")
    assert "-dev" not in " ".join(server_command("vault"))
    assert "exec bao server -config=" in server_command("openbao")[2]


def test_vault_down_stops_and_starts_an_external_vaults_container(kind_platform: tuple[KindPlatform, Recorder],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    kind, recorder = kind_platform
    monkeypatch.setattr(kind, "vault_container", "trustgrid-vault-abc")
    monkeypatch.setattr(kind, "unseal_keys", lambda: [])
    running = {"vault": True}  # the container, as docker stop and start leave it

    def seal_status() -> dict[str, bool]:
        if not running["vault"]:
            raise ConnectionRefusedError("the container is stopped")
        return {"sealed": False}

    recorder.answers["docker stop"] = lambda argv: running.update(vault=False) or ""
    recorder.answers["docker start"] = lambda argv: running.update(vault=True) or ""
    client = SimpleNamespace(sys=SimpleNamespace(read_seal_status=seal_status))
    monkeypatch.setattr(kind, "vault_client", lambda: client)
    faults = kind.faults()
    faults.stop_vault()  # returns once Vault no longer answers
    assert not running["vault"]
    faults.start_vault()  # and once it answers unsealed again
    docker = [call for call in recorder.calls if call[0] == "docker"]
    assert docker == [["docker", "stop", "trustgrid-vault-abc"], ["docker", "start", "trustgrid-vault-abc"]]
    assert not any("scale" in call for call in recorder.calls)


def test_the_kind_reaper_deletes_only_clusters_of_dead_runs_recorded_here(tmp_path: Path) -> None:
    from cluster.kind.bringup import reap_kind_runs
    from cluster.runstate import KIND_CLUSTER_MARK, reap_dead_runs

    dead_pid = 2**22 + 12345  # above pid_max's default: no such process
    runs = {"tg-dead": (dead_pid, "trustgrid-dead"), "tg-live": (os.getpid(), "trustgrid-live"),
            "tg-local": (dead_pid, None)}
    for run_id, (owner, cluster) in runs.items():
        (tmp_path / run_id).mkdir()
        (tmp_path / run_id / "owner").write_text(str(owner))
        if cluster:
            (tmp_path / run_id / KIND_CLUSTER_MARK).write_text(cluster)
    reap_dead_runs(tmp_path)  # a local run's reaper: it leaves the kind run's directory to the kind reaper
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tg-dead", "tg-live"]
    recorder = Recorder({})
    said: list[str] = []
    assert reap_kind_runs(Path("/cache/kind"), recorder, said.append, tmp_path) == ["trustgrid-dead"]
    assert recorder.calls == [["/cache/kind", "delete", "cluster", "--name", "trustgrid-dead"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tg-live"] and "dead run tg-dead" in said[0]


def test_a_renewal_on_kind_waits_for_the_proxys_scheduled_one(kind_platform: tuple[KindPlatform, Recorder],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    kind, _ = kind_platform
    serials = iter(["a1", "a1", "a1", "b2"])
    seen: list[str] = []

    def status(wl: Workload) -> SidecarStatus:
        seen.append(next(serials))
        now = datetime.now(UTC)
        return SidecarStatus(serial=seen[-1], issuer="ca", not_before=now, not_after=now + timedelta(seconds=30),
                             obtained_at=now, spiffe="", roots=1)

    monkeypatch.setattr(kind, "sidecar_status", status)
    kind.renew_certificate(SERVER)
    assert seen == ["a1", "a1", "a1", "b2"]


def test_the_mesh_ca_losing_vault_is_read_from_the_issuers_logs_on_kind(
        kind_platform: tuple[KindPlatform, Recorder]) -> None:
    kind, recorder = kind_platform
    recorder.answers["logs deploy/cert-manager "] = (
        'E1128 sign.go:1] "failed to sign" err="while requesting a Vault token using the Kubernetes auth: '
        'Code: 400. Errors: * invalid role name \\"mesh-ca\\""\nI1128 all fine\n')
    status = kind.faults().mesh_ca_status()
    assert status.holds_token is False and status.token_refused == ()
    assert len(status.login_refused) == 1 and "invalid role name" in status.login_refused[0]


@pytest.mark.parametrize(("status", "proven"), [
    (MeshCaStatus(True, ("renewal refused (403): permission denied, token",),
                  ("login of the CA refused (400): invalid role name",)), True),
    (MeshCaStatus(True, (), ("login of the CA refused (400): invalid role name",)), False),
    (MeshCaStatus(False, (), ("invalid role name",)), True),
    (MeshCaStatus(False, ("403",), ()), False),
])
def test_mesh_ca_vault_access_lost_needs_the_refused_login_and_a_held_tokens_refusal(
        status: MeshCaStatus, proven: bool) -> None:
    from scenarios.faults import fault_class

    platform = SimpleNamespace(faults=lambda: SimpleNamespace(mesh_ca_status=lambda: status))
    fault = fault_class("mesh-ca-vault-access-lost")(platform, SimpleNamespace(setup=None), None, None)  # type: ignore[arg-type]
    assert bool(fault.took_effect()) is proven


def test_a_long_session_gives_the_agent_its_whole_time(kind_platform: tuple[KindPlatform, Recorder]) -> None:
    """`tgpod agent` gives up after 30 s unless told otherwise; a rotation session runs far longer."""
    kind, recorder = kind_platform
    recorder.answers["/session"] = json.dumps({"steps": []})
    kind.session(CLIENT, SERVER, count=20, interval=2.0)
    argv = recorder.calls[-1]
    agent = argv[argv.index("agent") + 1]
    assert agent.startswith("--timeout=") and agent.endswith("s")
    assert float(agent.removeprefix("--timeout=").removesuffix("s")) >= 20 * 2.0, agent
    assert argv[argv.index("agent") + 2] == "/session"


# cert-manager's refusal as klog writes it: Vault's error spans lines, and the record's remaining
# key-values follow the end delimiter on its line. Printed by k8s.io/klog/v2 v2.130.1's ErrorS itself
# (internal/serialize/keyvalues.go writeStringValue), given cert-manager's wrapping of Vault's error
# (cert-manager internal/vault/vault.go).
KLOG_LOGIN_403 = (
    'E1201 09:17:32.200161     562 main.go:15] "failed to sign" err=<\n'
    '\twhile requesting a Vault token using the Kubernetes auth: error calling Vault server: Error making API '
    'request.\n\t\n\tURL: POST https://vault.vault.svc:8200/v1/auth/kubernetes/login\n\tCode: 403. Errors:\n\t\n'
    '\t* permission denied\n'
    ' > logger="cert-manager.controller" resource_name="istio-csr-abc" resource_namespace="istio-system"\n'
    'I1201 09:17:32.200259     562 main.go:16] "all fine" logger="cert-manager.controller"\n')
KLOG_SIGN_403 = (
    'E1201 08:02:02.000000       1 sync.go:120] "failed to sign" err=<\n'
    '\tfailed to sign certificate by vault: Error making API request.\n\t\n'
    '\tURL: PUT https://vault.vault.svc:8200/v1/pki_int/sign/mesh\n\tCode: 403. Errors:\n\t\n\t* permission denied\n'
    ' > logger="cert-manager.controller"\n'
    'I1201 08:02:03.000000       1 sync.go:80] "all fine" logger="cert-manager.controller"\n')


def test_a_refusal_written_over_several_lines_is_one_record(kind_platform: tuple[KindPlatform, Recorder]) -> None:
    kind, recorder = kind_platform
    recorder.answers["logs deploy/cert-manager "] = KLOG_LOGIN_403
    status = kind.faults().mesh_ca_status()
    assert len(status.login_refused) == 1 and status.token_refused == ()
    record = status.login_refused[0]
    assert "auth/kubernetes/login" in record and "Code: 403" in record and "permission denied" in record
    assert record.endswith('resource_namespace="istio-system"') and "all fine" not in record  # one record each
    recorder.answers["logs deploy/cert-manager "] = KLOG_SIGN_403
    status = kind.faults().mesh_ca_status()
    assert status.login_refused == () and len(status.token_refused) == 1
    assert "pki_int/sign/mesh" in status.token_refused[0]


def test_klog_records_keep_single_lines_and_a_value_cut_by_tail() -> None:
    from cluster.kubectl.klog import klog_records

    assert klog_records('I1 a.go:1] "one"\n\nI2 a.go:2] "two" key="v"\n') == ['I1 a.go:1] "one"',
                                                                           'I2 a.go:2] "two" key="v"']
    assert klog_records('E1 a.go:1] "x" err=<\n\tfirst\n\t >\n >\n') == ['E1 a.go:1] "x" err=<first >>']
    assert klog_records('E1 a.go:1] "x" err=<\n\ta\n\tb\n > k="v"\nI2 b.go:2] "y"\n') == [
        'E1 a.go:1] "x" err=<a b> k="v"', 'I2 b.go:2] "y"']
    assert klog_records('E1 a.go:1] "x" err=<\n\tcut here') == ['E1 a.go:1] "x" err=<cut here']


@pytest.mark.parametrize("presented", [True, False])
def test_the_handshake_from_outside_the_mesh_runs_in_a_pod_of_its_own_that_always_goes(
        kind_platform: tuple[KindPlatform, Recorder], presented: bool) -> None:
    """No naked pod of ours exists on someone else's cluster: the handshake brings its own, uninjected."""
    kind, recorder = kind_platform
    der = certificate().public_bytes(serialization.Encoding.DER)
    recorder.answers["jsonpath={.status.phase}"] = "Succeeded"
    recorder.answers[" logs tg-handshake-"] = base64.b64encode(der).decode() + "\n" if presented else "\n"
    if presented:
        assert kind.peer_certificate(SERVER) == der
    else:
        with pytest.raises(PlatformUnavailable, match="presented no certificate"):
            kind.peer_certificate(SERVER)
    lines = [" ".join(call[3:]) for call in recorder.calls]
    started = next(line for line in lines if " run tg-handshake-" in line)
    pod = started.split(" run ")[1].split()[0]
    assert started.startswith(f"-n {SERVER.namespace} run {pod} --image=") and "--restart=Never" in started
    assert f"--labels={RUN_LABEL}={kind.run_id},sidecar.istio.io/inject=false" in started
    assert "-alpn istio" in started and f"{SERVER.ip}:8080" in started
    assert lines[-1] == f"-n {SERVER.namespace} delete pod {pod} --ignore-not-found --wait=false"
    assert not any("trustgrid-legacy" in line for line in lines)


def test_fresh_tokens_after_a_service_account_is_made_again_come_with_a_new_pod(
        kind_platform: tuple[KindPlatform, Recorder]) -> None:
    """The kubelet keeps the deleted account's token until 80 % of its lifetime: sa-deletion could not recover."""
    kind, recorder = kind_platform
    recorder.calls.clear()
    kind.refresh_tokens(CLIENT)
    assert [call[3:] for call in recorder.calls] == [
        ["-n", "app", "rollout", "restart", "deploy/client"],
        ["-n", "app", "rollout", "status", "deploy/client", "--timeout=180s"]]


def test_every_bring_up_workload_logs_in_through_a_role_configure_vault_makes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan's workloads log in through the role named after their namespace (--vault-role) as their
    service account, and read their namespace's secret: configure-vault must make each of those."""
    import contextlib

    from cluster.kind import bringup
    from cluster.kind.plan import install_plan

    monkeypatch.setenv("HOME", str(tmp_path))
    settings = build_settings({"platform": "kind"}, {}, rootdir=tmp_path)
    state = RunState.create(settings.run_id)
    made: dict[str, list[str]] = {}
    written: list[str] = []

    class Configurator:  # records what configure-vault asks of Vault (the real one is tests' live suites)
        def __init__(self, *args: Any) -> None:
            pass

        def __getattr__(self, name: str) -> Callable[..., None]:
            return lambda *args, **kwargs: None

        def configure_namespace(self, namespace: str, accounts: Sequence[str]) -> str:
            made[namespace] = list(accounts)
            return namespace

        def write_secret(self, binding: str, value: dict[str, str]) -> None:
            written.append(binding)

    monkeypatch.setattr(bringup, "VaultConfigurator", Configurator)
    try:
        ca = base64.b64encode(certificate().public_bytes(serialization.Encoding.PEM)).decode()
        state.file("kubeconfig").write_text(KUBECONFIG % ca)
        state.write_private("vault-init.json", json.dumps({"root_token": "t", "unseal_keys_b64": []}))
        tools = {name: Path(f"/cache/{name}") for name in ("kind", "kubectl", "helm", "istioctl")}
        bringup.KindBringUp(settings, state, tools, Recorder({}), contextlib.ExitStack()).configure_vault()
    finally:
        state.remove()
    plan = install_plan(settings.profile.setup, settings.run_id)
    deployments = [d for d in plan[-1].documents if d["kind"] == "Deployment"]
    assert deployments
    for deployment in deployments:
        spec = deployment["spec"]["template"]["spec"]
        args = dict(a.split("=", 1) for a in spec["containers"][0]["args"] if "=" in a)
        role, namespace = args["--vault-role"], deployment["metadata"]["namespace"]
        assert spec["serviceAccountName"] in made.get(role, []), (namespace, role, made)
    assert sorted(written) == sorted(made)


def test_kind_reads_the_prometheus_it_installed_unless_told_another(
        kind_platform: tuple[KindPlatform, Recorder]) -> None:
    platform, _ = kind_platform
    with pytest.raises(PlatformUnavailable, match="--prometheus-url"):
        platform.prometheus_url()  # a view with no forward to its own (--vault external: no audit volume)
    platform.prometheus_addr = "http://127.0.0.1:40000"  # bring-up's port-forward to svc/prometheus-server
    assert platform.prometheus_url() == "http://127.0.0.1:40000"
    platform.settings = dataclasses.replace(platform.settings, prometheus_url="http://theirs.example:9090")
    assert platform.prometheus_url() == "http://theirs.example:9090"


def test_the_exporter_image_is_built_from_its_own_context_then_loaded(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    settings = build_settings({"platform": "kind"}, {}, rootdir=tmp_path)
    state = RunState.create(settings.run_id)
    contexts: list[list[str]] = []

    def build(argv: Sequence[str]) -> str:
        context = Path(argv[-1])  # the context exists while docker builds it
        contexts.append(sorted(str(p.relative_to(context)) for p in context.rglob("*.py")))
        return ""

    recorder = Recorder({"docker build": build})
    try:
        tools = {name: Path(f"/cache/{name}") for name in ("kind", "kubectl", "helm", "istioctl")}
        up = KindBringUp(settings, state, tools, recorder, contextlib.ExitStack())
        step = next(s for s in install_plan(settings.profile.setup, settings.run_id, flavor="vault")
                    if s.action == "load-exporter-image")
        up.execute(step)
    finally:
        state.remove()
    docker, kind = recorder.calls
    assert docker[:4] == ["docker", "build", "-t", monitoring.EXPORTER_IMAGE]
    assert contexts == [sorted(f"cluster/{m}" for m in EXPORTER_MODULES)]
    assert kind == ["/cache/kind", "load", "docker-image", monitoring.EXPORTER_IMAGE, "--name",
                    cluster_name(settings.run_id)]
    assert not Path(docker[-1]).exists()  # the context is gone afterwards
