"""How the kind platform reaches and initializes Vault: a port-forward that outlives Vault's pod, and
`operator init` only once Vault answers sealed (checked against a real OpenBao server).

The port-forward is exercised with a stand-in for kubectl (unit test of the supervisor): each
"forward" serves the port and then exits, as `kubectl port-forward` does with "lost connection to
pod" when Vault's pod goes (client-go tools/portforward/portforward.go, ErrLostConnectionToPod).
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import hvac
import pytest

from cluster.errors import PlatformUnavailable
from cluster.kind import manifests
from cluster.kind.bringup import KindBringUp, VaultAlreadyInitialized, awaiting_init
from cluster.kind.external import PORT, server_config
from cluster.kind.vaulttls import make_vault_tls
from cluster.kubectl.commands import Kubectl, run
from cluster.kubectl.forward import free_port, listening, port_forward
from cluster.kubectl.platform import VAULT_INIT
from cluster.local.binaries import find_vault
from cluster.runstate import RunState
from cluster.settings import build_settings
from cluster.wait import wait_until

# Serves its port ("LOCAL:REMOTE" as its last argument) and counts its starts in a file; exits when
# the test removes its pod (creates the file "gone"), as a forward whose pod went away.
FAKE_KUBECTL = """#!{python}
import pathlib, socket, sys
local = int(sys.argv[-1].split(":")[0])
starts, gone = pathlib.Path({starts!r}), pathlib.Path({gone!r})
count = int(starts.read_text()) + 1 if starts.exists() else 1
starts.write_text(str(count))
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", local))
server.listen()
server.settimeout(0.1)
while not gone.exists():
    try:
        conn, _ = server.accept()
    except TimeoutError:
        continue
    conn.sendall(b"pod-%d" % count)
    conn.close()
gone.unlink()
"""


def _read(url: str) -> bytes:
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        return sock.recv(64)


def test_the_vault_port_forward_comes_back_on_the_same_port_after_the_pod_goes(tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    kubectl = tmp_path / "kubectl"
    gone = tmp_path / "gone"
    kubectl.write_text(FAKE_KUBECTL.format(python=sys.executable, starts=str(starts), gone=str(gone)))
    kubectl.chmod(0o755)
    with port_forward(Kubectl(run, kubectl, tmp_path / "kubeconfig"), "vault", "vault", 8200,
                      restart_after=0.1) as url:
        assert _read(url) == b"pod-1"
        gone.touch()  # Vault's pod goes: that forward exits; the same address reaches the next one
        wait_until(lambda: _safe_read(url) == b"pod-2", timeout=30, interval=0.2,
                   describe="the port-forward to come back after its pod went")
        assert starts.read_text() == "2"
    port = int(url.rsplit(":", 1)[1])
    assert not listening(port), "the forward outlived its block"


def _safe_read(url: str) -> bytes:
    try:
        return _read(url)
    except OSError:
        return b""


def _running(program: Path) -> list[int]:
    """Pids whose command line runs ``program`` (the stand-in kubectl)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if str(program).encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


def test_a_forward_that_never_listens_is_one_line_with_kubectls_error_and_leaves_no_process(tmp_path: Path) -> None:
    kubectl = tmp_path / "kubectl"
    kubectl.write_text("#!/bin/sh\necho 'error: no pods for service vault' >&2\nexit 1\n")
    kubectl.chmod(0o755)
    with pytest.raises(PlatformUnavailable) as refused, \
            port_forward(Kubectl(run, kubectl, tmp_path / "kubeconfig"), "vault", "vault", 8200, restart_after=0.1,
                         ready_within=2):
        pass
    message = str(refused.value)
    assert "port-forward to vault/vault did not listen in 2 s: error: no pods for service vault" in message
    assert "\n" not in message
    assert _running(kubectl) == []


def test_the_supervised_forward_leaves_no_process_after_its_block(tmp_path: Path) -> None:
    starts, gone, kubectl = tmp_path / "starts", tmp_path / "gone", tmp_path / "kubectl"
    kubectl.write_text(FAKE_KUBECTL.format(python=sys.executable, starts=str(starts), gone=str(gone)))
    kubectl.chmod(0o755)
    with port_forward(Kubectl(run, kubectl, tmp_path / "kubeconfig"), "vault", "vault", 8200) as url:
        assert _read(url) == b"pod-1" and _running(kubectl)
    assert _running(kubectl) == [], "the forward outlived its block"


@contextlib.contextmanager
def openbao(config: str, tmp_path: Path) -> Iterator[None]:
    """The real OpenBao server with ``config`` (already pointed at loopback and tmp_path)."""
    (tmp_path / "bao.hcl").write_text(config)
    with (tmp_path / "bao.log").open("w") as log:
        process = subprocess.Popen([str(find_vault(None).path), "server", f"-config={tmp_path / 'bao.hcl'}"],
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)


def external_config(tmp_path: Path, port: int) -> str:
    """--vault external's container config, on loopback with its storage in tmp_path."""
    return (server_config("openbao").replace(f"0.0.0.0:{PORT}", f"127.0.0.1:{port}")
            .replace("/tmp/trustgrid-openbao-data", str(tmp_path / "data")))


def chart_config(tmp_path: Path, port: int) -> str:
    """The OpenBao chart's server config as vault_values gives it, with its TLS files and storage in tmp_path."""
    tls = make_vault_tls("openbao", "openbao")
    for name, pem in (("tls.crt", tls.cert_pem), ("tls.key", tls.key_pem), ("ca.crt", tls.ca_pem)):
        (tmp_path / name).write_text(pem)
    config = str(manifests.vault_values("openbao")["server"]["standalone"]["config"])
    return (config.replace("/openbao/userconfig/vault-tls", str(tmp_path))
            .replace("/openbao/data", str(tmp_path / "data"))
            .replace("[::]:8200", f"127.0.0.1:{port}").replace("[::]:8201", f"127.0.0.1:{free_port()}")
            .replace('file_path = "stdout"', f'file_path = "{tmp_path / "audit.log"}"'))


@pytest.mark.parametrize("where", ["chart", "external"])
def test_openbao_starts_from_our_config_and_init_waits_for_it_to_answer_sealed(
        where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenBao 2.7 has no file storage ("unknown storage type file"): both configs we give it must start
    the real server, and bring-up initializes it only once it answers sealed and uninitialized."""
    port = free_port()
    (tmp_path / "data").mkdir()
    config = chart_config(tmp_path, port) if where == "chart" else external_config(tmp_path, port)
    scheme = "https" if where == "chart" else "http"
    client = hvac.Client(url=f"{scheme}://127.0.0.1:{port}", timeout=30,
                         verify=str(tmp_path / "ca.crt") if where == "chart" else True)
    assert awaiting_init(client) is False, "nothing listens yet: not ready for init"
    monkeypatch.setenv("HOME", str(tmp_path))
    settings = build_settings({"platform": "kind"}, {}, rootdir=tmp_path)
    state = RunState.create(settings.run_id)
    try:
        with openbao(config, tmp_path), contextlib.ExitStack() as stack:
            tools = {name: Path(f"/cache/{name}") for name in ("kind", "kubectl", "helm", "istioctl")}
            up = KindBringUp(settings, state, tools, run, stack)
            up.flavor = "openbao"
            up._initialize(client)  # polls until the real server answers sealed and uninitialized
            kept = json.loads(state.file(VAULT_INIT).read_text())
            assert len(kept["unseal_keys_b64"]) == 3 and kept["root_token"]
            assert oct(state.file(VAULT_INIT).stat().st_mode & 0o777) == "0o600"
            status = client.sys.read_seal_status()
            assert status["initialized"] is True and status["sealed"] is False, status
            with pytest.raises(PlatformUnavailable, match="already initialized"):
                awaiting_init(client)
            # A second bring-up on it stops at once with that line, not after the wait's 180 s as a timeout.
            with pytest.raises(VaultAlreadyInitialized):
                up._initialize(client)
    finally:
        state.remove()
