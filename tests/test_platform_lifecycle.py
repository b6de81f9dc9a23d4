"""The local platform's promises about bad input and cleanup, checked on the real thing.

Each test runs the suite in a child pytest, exactly as a user would, then
checks its exit code, its one-line error, and that nothing of its own is
left: no labelled process, no state directory (which holds the keys), no
listening port.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.runstate import our_processes, reap_dead_runs, runs_root
from cluster.secrets import find_secrets
from cluster.wait import wait_until
from tests.lifecycle import ROOT, Child, child_env, new_since, run_pytest, snapshot

pytestmark = pytest.mark.platform

SUITE = "suites/conformance/test_kubernetes_auth.py"


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got: {lines}"
    assert lines[0].startswith("ERROR: trustgrid: "), lines[0]
    return lines[0]


@pytest.fixture
def nothing_left() -> Iterator[None]:
    before = snapshot()
    yield
    assert new_since(before).problems() == []


def test_a_port_in_use_is_one_line_naming_the_owner(nothing_left: None) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        result = run_pytest(SUITE, "--apiserver-port", str(port))
    assert result.returncode == 4
    line = _one_error_line(result.stderr)
    assert f"port {port} on 127.0.0.1 is already in use by pid" in line and "--apiserver-port 0" in line


def test_vault_that_fails_to_start_is_one_line_with_its_log(nothing_left: None, tmp_path: Path) -> None:
    fake = tmp_path / "vault"
    fake.write_text('#!/bin/sh\n[ "$1" = version ] && { echo "Vault v1.99.0 (test)"; exit 0; }\n'
                    'echo "error loading configuration: broken on purpose" >&2\nexit 1\n')
    fake.chmod(0o755)
    result = run_pytest(SUITE, "--vault-binary", str(fake))
    assert result.returncode == 4
    line = _one_error_line(result.stderr)
    assert "vault exited with code 1 before it was ready" in line and "broken on purpose" in line


def test_no_go_and_no_binaries_is_one_line_naming_both_fixes(nothing_left: None, tmp_path: Path) -> None:
    env = child_env(PATH="/usr/sbin:/usr/bin:/sbin:/bin", TRUSTGRID_CACHE=str(tmp_path))
    result = run_pytest(SUITE, env=env)
    assert result.returncode == 4
    line = _one_error_line(result.stderr)
    assert "Go is not installed" in line and "KUBEBUILDER_ASSETS" in line


def test_not_root_is_one_line_naming_the_fix(nothing_left: None) -> None:
    # Pretend to be an ordinary user: the real check reads os.geteuid().
    result = run_pytest(SUITE, prelude="import os\nos.geteuid = lambda: 1000")
    assert result.returncode == 4
    line = _one_error_line(result.stderr)
    assert "needs root" in line and "--platform kind" in line


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupt_during_bring_up_leaves_nothing(nothing_left: None, sig: signal.Signals) -> None:
    before = snapshot()
    child = Child.start(SUITE)
    # Interrupt once the control plane really runs, while bring-up is still going on.
    wait_until(lambda: len(new_since(before).pids) >= 2, timeout=120, interval=0.02,
               describe="the child's etcd and Vault processes to start")
    assert not child.said("trustgrid: kube-apiserver"), "bring-up already finished"
    child.process.send_signal(sig)
    code = child.process.wait(timeout=60)
    assert code != 0, child.output
    assert not child.said(" passed"), child.output


def _running(before_pids: frozenset[int], program: str) -> bool:
    """A process of ours started since ``before`` runs ``program`` (its argv[0] ends with it)."""
    for pid in snapshot().pids - before_pids:
        try:
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        except OSError:
            continue
        if argv0.endswith(program):
            return True
    return False


@pytest.mark.parametrize("program", ["pilot-discovery", "envoy"], ids=["istiod-up", "sidecars-up"])
def test_ctrl_c_while_istio_runs_leaves_nothing(nothing_left: None, program: str) -> None:
    """Interrupted once istiod runs (with the mesh CA and kube-controller-manager), or once a pod's
    pilot-agent has started Envoy: every one of them goes, Envoy included (pilot-agent's child)."""
    before = snapshot()
    child = Child.start("suites/conformance/test_mtls.py", "-v")
    wait_until(lambda: _running(before.pids, program), timeout=120, interval=0.05,
               describe=f"the child's {program} to run")
    child.process.send_signal(signal.SIGINT)
    code = child.process.wait(timeout=60)
    assert code != 0, child.output


@pytest.mark.parametrize("suite", [SUITE, "suites/conformance/test_mtls.py"], ids=["vault", "mesh"])
def test_ctrl_c_during_a_test_leaves_nothing(nothing_left: None, suite: str) -> None:
    child = Child.start(suite, "-v")
    wait_until(lambda: child.said("PASSED"), timeout=120, describe="the first test to pass")
    child.process.send_signal(signal.SIGINT)
    code = child.process.wait(timeout=60)
    assert code == 2, child.output  # pytest's "interrupted"
    assert child.said("KeyboardInterrupt"), child.output


def test_keep_cluster_keeps_a_working_platform_until_cluster_down(nothing_left: None) -> None:
    result = run_pytest(f"{SUITE}::test_workload_token_logs_in_and_reads_its_own_secret", "--keep-cluster")
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"trustgrid: run (tg-[\w-]+),", result.stdout)
    assert match, result.stdout
    run_id = match.group(1)
    kept = runs_root() / run_id
    try:
        assert (kept / "kept.json").exists() and (kept / "kubeconfig").exists()
        # etcd, kube-apiserver, kube-controller-manager, vault, mesh CA, istiod, the audit exporter and
        # Prometheus: still serving
        assert len(our_processes(run_id)) == 8
        assert run_id not in reap_dead_runs()  # the reaper leaves a kept run alone
        assert our_processes(run_id)
    finally:
        down = subprocess.run([sys.executable, "-m", "cluster", "down", run_id], cwd=ROOT,
                              capture_output=True, text=True, check=False)
    assert down.returncode == 0, down.stderr
    assert our_processes(run_id) == [] and not kept.exists()


def test_no_secret_appears_in_any_output(nothing_left: None) -> None:
    """Run the suite as chatty as pytest goes, then look for every secret the run held."""
    result = run_pytest(SUITE, "--keep-cluster", "-v", "-s", "-rA", "--log-cli-level=DEBUG")
    output = result.stdout + result.stderr
    match = re.search(r"trustgrid: run (tg-[\w-]+),", output)
    assert match, output[-2000:]
    kept = runs_root() / match.group(1)
    try:
        assert result.returncode == 0, output[-3000:]
        init = json.loads((kept / "vault-init.json").read_text())
        secrets = [init["root_token"], *init["keys_base64"], (kept / "vault-pod" / "token").read_text()]
        secrets += [path.read_text() for path in (kept / "pki").glob("*.key")]
        assert "DEBUG" in output and "PASSED" in output  # the output really was chatty
        leaked = [i for i, secret in enumerate(secrets) if secret.strip() in output]
        assert leaked == [], f"secrets number {leaked} appear in the output"
        assert find_secrets(output) == []
    finally:
        subprocess.run([sys.executable, "-m", "cluster", "down", match.group(1)], cwd=ROOT,
                       capture_output=True, check=False)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_ctrl_c_during_a_chaos_fault_restores_then_leaves_nothing(nothing_left: None, tmp_path: Path) -> None:
    before = snapshot()
    child = Child.start("suites/chaos/test_scenarios.py", "-k", "mesh-ca-down", "--report-dir", str(tmp_path))

    def mesh_ca_pids() -> list[int]:
        return [p for p in new_since(before).pids if "cluster.local.meshca" in _cmdline(p)]

    wait_until(mesh_ca_pids, timeout=120, describe="the child's mesh CA to start")
    # The fault is in: the child stopped its mesh CA. Interrupt it now.
    wait_until(lambda: not mesh_ca_pids(), timeout=120, interval=0.05, describe="the child to stop its mesh CA")
    child.process.send_signal(signal.SIGINT)
    assert child.process.wait(timeout=120) == 2, child.output
    timeline = json.loads(next(tmp_path.glob("*/timelines/mesh-ca-down.json")).read_text())
    assert timeline["restored_at"] is not None, timeline["notes"]
    assert any(note.startswith("interrupted: KeyboardInterrupt") for note in timeline["notes"]), timeline["notes"]
    assert not any("restore failed" in note for note in timeline["notes"]), timeline["notes"]


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGKILL], ids=["closed-terminal", "sigkill"])
def test_an_owner_that_dies_in_a_wait_leaves_nothing(sig: signal.Signals) -> None:
    """SIGHUP unwinds like Ctrl-C; SIGKILL cannot be caught, and the run's janitor reaps at once what
    the next run would have: the state directory with the unseal keys, the pod files, the bridge."""
    before = snapshot()
    child = Child.start(SUITE, "-v")
    wait_until(lambda: child.said("PASSED"), timeout=120, describe="the first test to pass")
    assert new_since(before).run_dirs and new_since(before).links, "the platform is not up"
    child.process.send_signal(sig)
    child.process.wait(timeout=60)
    # The janitor's own bounds (cluster/local/janitor.py OWNER_EXIT_S, then a 5 s grace per process
    # group) on a loaded machine, not a speed target.
    wait_until(lambda: not new_since(before).problems(), timeout=60, interval=0.2,
               describe=f"nothing left after {sig.name}: {new_since(before).problems()}")
