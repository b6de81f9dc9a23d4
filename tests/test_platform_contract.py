"""Every platform parses the same real answers into the same typed records.

The inputs were recorded from the local platform's real proxies and tgpod agents
(scripts/record_fixtures.py). The local platform reads the agent over its unix socket (served here
by a real HTTP server on a unix socket) and Envoy's admin; kind and an existing cluster read the
same through `kubectl exec ... tgpod agent` and istioctl (a recording runner here). A platform whose
record lacks a field the faults read fails here, not in a scenario on someone's laptop.
"""

from __future__ import annotations

import http.server
import json
import socketserver
import threading
from collections.abc import Iterator
from dataclasses import fields, replace
from pathlib import Path

import pytest

from cluster.kubectl.platform import KubectlPlatform
from cluster.local.pods import LocalPods
from cluster.platform import SidecarStatus, VaultRead, Workload
from cluster.proxydump import workload_secret
from tests import test_kind_platform as kind_tests
from tests.test_kind_platform import SERVER, Recorder

FIXTURES = Path(__file__).parent / "fixtures"
kind_platform = kind_tests.kind_platform  # the kind platform with a recording runner, as a fixture here too
AGENT_ANSWERS = sorted((FIXTURES / "agent").glob("vault-read-*.json"))


class _UnixHTTPServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True


@pytest.fixture
def agent_socket(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """A real HTTP server on a unix socket answering /vault with the recorded answer."""
    answer = Path(request.param).read_bytes()

    class Agent(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: object) -> None:
            pass

        def address_string(self) -> str:
            return "agent"

    path = tmp_path / "agent.sock"
    server = _UnixHTTPServer(str(path), Agent)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield path
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("agent_socket", AGENT_ANSWERS, ids=[p.stem for p in AGENT_ANSWERS], indirect=True)
def test_read_vault_is_the_same_record_on_every_platform(agent_socket: Path, kind_platform: tuple[KubectlPlatform,
                                                         Recorder], monkeypatch: pytest.MonkeyPatch) -> None:
    pods = LocalPods.__new__(LocalPods)
    monkeypatch.setattr(pods, "agent_socket", lambda workload: str(agent_socket), raising=False)
    local = pods.read_vault(SERVER)
    kind, recorder = kind_platform
    recorder.answers["/vault"] = _served(agent_socket)  # what `tgpod agent /vault` prints, through kubectl exec
    assert kind.read_vault(SERVER) == local
    # What the faults and probes read is there, with its type.
    assert isinstance(local, VaultRead) and local.accessor and local.logins == 1
    assert local.expires_in is not None and local.expires_in > 0
    assert local.status in (200, 403) and local.ok == (local.status == 200)
    assert (local.error == "") == local.ok


def _served(socket: Path) -> str:
    import httpx

    with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket)), base_url="http://agent", timeout=5) as client:
        return client.get("/vault").text


def test_sidecar_status_is_the_same_record_on_every_platform(kind_platform: tuple[KubectlPlatform, Recorder],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The local platform reads Envoy's admin dump, kind istioctl's JSON of the same proxy: one record."""
    envoy = json.loads((FIXTURES / "istio" / "envoy-secrets-server.json").read_text())
    pods = LocalPods.__new__(LocalPods)
    run = type("Run", (), {"processes": {}})()
    monkeypatch.setattr(pods, "run_of", lambda workload: run, raising=False)
    monkeypatch.setattr(pods, "envoy", lambda workload, path: envoy, raising=False)
    local = pods.sidecar_status(SERVER)
    kind, recorder = kind_platform
    monkeypatch.setattr(kind, "_pod", lambda ns, name: type("P", (), {"metadata": type("M", (), {"name": "srv-1"})}))
    istioctl = FIXTURES / "istio" / "istioctl-proxy-config-secret-server.json"
    recorder.answers["proxy-config secret"] = istioctl.read_text()
    recorder.answers[" logs "] = ""
    assert kind.sidecar_status(SERVER) == local == workload_secret(envoy)
    assert isinstance(local, SidecarStatus)
    for field in fields(SidecarStatus):  # every field the faults read is filled
        assert getattr(local, field.name) not in (None, "") or field.name == "last_error", field.name
    assert local.not_after.tzinfo is not None and replace(local, last_error="x").last_error == "x"


def test_a_workload_is_the_platforms_own_type() -> None:
    assert Workload("app", "server", "server", "10.0.0.2", True) == SERVER
