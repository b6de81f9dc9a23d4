"""The kind platform's command shapes and parsers, with a recording runner (no Docker here).

These prove what the platform asks kubectl, istioctl and kind to do, and how
it reads their answers; the live behaviour needs a kind cluster (its issue).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cluster.kind import manifests
from cluster.kind.bringup import KindBringUp
from cluster.kind.commands import CommandFailed, Kubectl, run
from cluster.kind.platform import KindPlatform, KindVault
from cluster.platform import Workload
from cluster.proxydump import workload_secret
from cluster.runstate import RunState
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
    recorder = Recorder({"version --short": "1.31.1"})
    state = RunState.create(settings.run_id)
    target = manifests.VaultTarget("vault", "http://vault.vault.svc:8200", "vault")
    made = KindPlatform(settings, state, kubectl=Kubectl(recorder, Path("/bin/kubectl"), kubeconfig),
                            istioctl=Path("/bin/istioctl"), vault=KindVault(target, "http://127.0.0.1:1"),
                            debug_image="netshoot@sha256:abc", runner=recorder)
    yield made, recorder
    state.remove()


CLIENT = Workload("app", "client", "client", "10.0.0.3", True)
SERVER = Workload("app", "server", "server", "10.0.0.2", True)


def test_versions_come_from_the_live_cluster_and_istioctl(kind_platform: tuple[KindPlatform, Recorder]) -> None:
    kind, _ = kind_platform
    assert kind.versions.as_dict() == {"platform": "kind", "kube-apiserver": "v1.36.4", "vault": "vault",
                                       "istio": "1.31.1"}


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
    recorder.answers[" logs "] = lambda _: _tcpdump_hex(*frames)
    with kind.capture(SERVER) as wire:
        assert len(frames) == 1  # the start marker was seen before the block ran
        frames.append(_frame("10.0.0.3", "10.0.0.2", 40000, 8080, 0x02, b""))
        frames.append(_frame("10.0.0.3", "10.0.0.2", 40000, 8080, 0x18, b"GET /?canary=tg-canary-9 HTTP/1.1"))
    assert len(frames) == 4  # ...and the end marker after it, before the capture was judged
    debug = next(c for c in recorder.calls if "debug" in c)
    assert "--image=netshoot@sha256:abc" in debug and "--profile=netadmin" in debug
    assert debug[debug.index("--") + 1:][:3] == ["tcpdump", "-i", "eth0"]  # never loopback: plaintext by design
    assert debug[-1] == "tcp or (udp and dst port 9)"  # every TCP flow, Vault's too, and the markers
    assert len(wire.flows) == 1  # markers are never flows
    assert wire.plaintext_flows and wire.contains("tg-canary-9")


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
    assert {k: status[k] for k in envoy} == envoy  # what the local platform reads from Envoy's admin
    assert "Unavailable" in status["last_error"]
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
        import contextlib

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
                             "uninstall vault --namespace", "delete pvc --namespace"]
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

    class Adapter:
        def get(self, path: str) -> dict[str, Any]:
            return {"data": stored[path]}

        def delete(self, path: str) -> None:
            del stored[path]

        def post(self, path: str, json: dict[str, Any]) -> None:
            stored[path] = json

    revoked: list[str] = []

    class Sys:
        def revoke_prefix(self, prefix: str) -> None:
            revoked.append(prefix)

    admin = type("Admin", (), {"adapter": Adapter(), "sys": Sys()})()
    monkeypatch.setattr(kind, "vault_admin", lambda: admin)
    faults = kind.faults()
    faults.revoke_mesh_ca_vault_access()
    assert stored == {} and revoked == ["auth/kubernetes/login"]
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
    assert container.calls["with_bind_ports"][0][0] == 8200
    assert container.calls["with_command"][0][0] == server_command("openbao")
    config = server_config("openbao")
    assert 'storage "file"' in config and "tls_disable = 1" in config
    assert "-dev" not in " ".join(server_command("vault"))
    assert "exec bao server -config=" in server_command("openbao")[2]


def test_vault_down_stops_and_starts_an_external_vaults_container(kind_platform: tuple[KindPlatform, Recorder],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    kind, recorder = kind_platform
    monkeypatch.setattr(kind, "vault_container", "trustgrid-vault-abc")
    monkeypatch.setattr(kind, "unseal_keys", lambda: [])
    unsealed = SimpleNamespace(sys=SimpleNamespace(read_seal_status=lambda: {"sealed": False}))
    monkeypatch.setattr(kind, "vault_client", lambda: unsealed)
    faults = kind.faults()
    faults.stop_vault()
    faults.start_vault()
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

    def status(wl: Workload) -> dict[str, str]:
        seen.append(next(serials))
        return {"serial": seen[-1]}

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
    assert status["vault_holds_token"] is False and status["vault_token_refused"] == []
    assert len(status["vault_login_refused"]) == 1 and "invalid role name" in status["vault_login_refused"][0]


@pytest.mark.parametrize(("status", "proven"), [
    ({"vault_holds_token": True, "vault_token_refused": ["renewal refused (403): permission denied, token"],
      "vault_login_refused": ["login of the CA refused (400): invalid role name"]}, True),
    ({"vault_holds_token": True, "vault_token_refused": [],
      "vault_login_refused": ["login of the CA refused (400): invalid role name"]}, False),
    ({"vault_holds_token": False, "vault_token_refused": [], "vault_login_refused": ["invalid role name"]}, True),
    ({"vault_holds_token": False, "vault_token_refused": ["403"], "vault_login_refused": []}, False),
])
def test_mesh_ca_vault_access_lost_needs_the_refused_login_and_a_held_tokens_refusal(
        status: dict[str, Any], proven: bool) -> None:
    from scenarios.faults import fault_class

    platform = SimpleNamespace(faults=lambda: SimpleNamespace(mesh_ca_status=lambda: status))
    fault = fault_class("mesh-ca-vault-access-lost")(platform, SimpleNamespace(setup=None), None, None)  # type: ignore[arg-type]
    assert bool(fault.took_effect()) is proven
