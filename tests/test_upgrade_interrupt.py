"""Ctrl-C in the middle of suites/upgrade: nothing of the upgrade's platform is left, and the next run starts clean."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path

import pytest

from cluster.local.canary import revision_of
from cluster.versions import upgrade_pair
from cluster.wait import Abort, wait_until
from tests.lifecycle import Child, new_since, snapshot

pytestmark = pytest.mark.platform
FROM, TO = upgrade_pair()


def _runs_to(pids: frozenset[int]) -> bool:
    for pid in pids:
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode().endswith(f"openbao-{TO}/bao"):
                return True
    return False


def test_ctrl_c_while_the_platforms_vault_runs_mixed_versions_leaves_nothing() -> None:
    """Interrupted once one node runs TO and the others FROM, with the platform's pods, istiod, mesh CA and
    network up: every process, namespace, link, rule, pod folder and the run's state go."""
    before = snapshot()
    child = Child.start("suites/upgrade", "-k", "three_vault_nodes", "-v")

    def mixed() -> bool:
        if child.process.poll() is not None:
            raise Abort(f"the child ended before its upgrade began:\n{child.output[-4000:]}")
        return _runs_to(snapshot().pids - before.pids)

    wait_until(mixed, timeout=300, interval=0.05, describe=f"a node of the child's platform to run OpenBao {TO}")
    child.process.send_signal(signal.SIGINT)
    code = child.process.wait(timeout=120)
    assert code == 2, child.output  # pytest's "interrupted"
    assert new_since(before).problems() == []


def _runs_canary_istiod(pids: frozenset[int]) -> bool:
    port = f":{revision_of('canary').xds_port}"
    for pid in pids:
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if argv[0].decode().endswith("pilot-discovery") and any(port.encode() in arg for arg in argv):
                return True
    return False


def test_ctrl_c_while_two_istiod_revisions_serve_the_mesh_leaves_nothing() -> None:
    """Interrupted once the canary revision's istiod runs beside the default one: both go, with everything else."""
    before = snapshot()
    child = Child.start("suites/upgrade", "-k", "takes_the_mesh_over", "-v")

    def mixed() -> bool:
        if child.process.poll() is not None:
            raise Abort(f"the child ended before its canary began:\n{child.output[-4000:]}")
        return _runs_canary_istiod(snapshot().pids - before.pids)

    wait_until(mixed, timeout=300, interval=0.05, describe="the child's canary istiod to run")
    child.process.send_signal(signal.SIGINT)
    code = child.process.wait(timeout=120)
    assert code == 2, child.output  # pytest's "interrupted"
    assert new_since(before).problems() == []


def _attached_pytests() -> list[int]:
    """Every pytest whose arguments include --attach (the gate's own)."""
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
            if b"--attach" in argv and b"pytest" in argv:
                found.append(int(entry.name))
    return found


def test_ctrl_c_while_the_gates_tests_run_attached_leaves_nothing() -> None:
    """Interrupted while the gate's own pytest runs attached to the upgrade's platform (with its pods up): that
    pytest, the platform and everything of both go."""
    before = snapshot()
    child = Child.start("suites/upgrade/test_gate.py", "-v")

    def attached() -> bool:
        if child.process.poll() is not None:
            raise Abort(f"the child ended before its gate ran its tests:\n{child.output[-4000:]}")
        return bool(_attached_pytests())

    wait_until(attached, timeout=300, interval=0.05, describe="the gate's attached pytest to run")
    child.process.send_signal(signal.SIGINT)
    code = child.process.wait(timeout=120)
    assert code == 2, child.output  # pytest's "interrupted"
    assert new_since(before).problems() == []
    assert _attached_pytests() == []
