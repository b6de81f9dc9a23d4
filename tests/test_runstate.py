from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.runstate import OWNER_ENV, RUN_ENV, RunState, our_processes, process_run_id, reap_dead_runs, run_is_live
from cluster.wait import wait_until


def _spawn_labelled(run_id: str, owner: str | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, RUN_ENV: run_id}
    if owner is not None:
        env[OWNER_ENV] = owner
    return subprocess.Popen(["sleep", "120"], env=env, start_new_session=True)


def test_state_dir_is_private_and_keys_are_0600(tmp_path: Path) -> None:
    state = RunState.create("tg-unit-1", root=tmp_path)
    assert stat.S_IMODE(state.path.stat().st_mode) == 0o700
    secret = state.write_private("vault-init.json", "{}")
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert run_is_live(state.path)  # owned by this live process


def test_reaper_removes_a_dead_runs_processes_and_state(tmp_path: Path) -> None:
    state = RunState.create("tg-unit-dead", root=tmp_path)
    (state.path / "owner").write_text("999999999")  # an owner that cannot exist
    child = _spawn_labelled("tg-unit-dead")
    try:
        # /proc/<pid>/environ is empty for a moment while exec completes.
        wait_until(lambda: child.pid in our_processes("tg-unit-dead"), timeout=5,
                   describe="the labelled child to show its environment")
        assert "tg-unit-dead" in reap_dead_runs(tmp_path)
        child.wait(timeout=10)  # it was terminated, so this returns
        assert not state.path.exists()
        assert our_processes("tg-unit-dead") == []
    finally:
        if child.poll() is None:
            child.kill()


def test_reaper_leaves_live_and_kept_runs_alone(tmp_path: Path) -> None:
    live = RunState.create("tg-unit-live", root=tmp_path)
    kept = RunState.create("tg-unit-kept", root=tmp_path)
    (kept.path / "owner").write_text("999999999")
    kept.mark_kept({"kubeconfig": "x"})
    child = _spawn_labelled("tg-unit-live")
    try:
        assert reap_dead_runs(tmp_path) == []
        assert live.path.exists() and kept.path.exists() and child.poll() is None
        assert "tg-unit-kept" in reap_dead_runs(tmp_path, include_kept=True)
    finally:
        child.kill()
        child.wait()


def test_a_stray_whose_owner_died_is_reaped_wherever_its_state_lived(tmp_path: Path) -> None:
    orphan = _spawn_labelled("tg-unit-orphan", owner="999999999")
    owned = _spawn_labelled("tg-unit-owned", owner=str(os.getpid()))  # its state dir lives elsewhere
    kept = _spawn_labelled("tg-unit-kept2", owner="kept")
    try:
        reaped = reap_dead_runs(tmp_path)
        assert "tg-unit-orphan" in reaped
        orphan.wait(timeout=10)
        assert owned.poll() is None and kept.poll() is None
        assert not {"tg-unit-owned", "tg-unit-kept2"} & set(reaped)
    finally:
        for child in (orphan, owned, kept):
            child.kill()
            child.wait()


def _other_process_can_lock(path: Path, *, shared: bool) -> bool:
    flag = ["-s"] if shared else ["-x"]
    return subprocess.run(["flock", *flag, "-n", str(path), "true"], check=False).returncode == 0


def test_platform_lock_is_shared_for_tests_and_exclusive_for_faults(tmp_path: Path) -> None:
    state = RunState.create("tg-unit-lock", root=tmp_path)
    lock_file = state.path / "platform.lock"
    with state.lock("platform", shared=True):
        assert _other_process_can_lock(lock_file, shared=True)  # other tests run alongside
        assert not _other_process_can_lock(lock_file, shared=False)  # a fault waits
        with state.lock("platform", shared=True):
            pass  # re-entrant
        with pytest.raises(RuntimeError, match="cluster_fault"), state.lock("platform"):
            pass  # no upgrade: it would deadlock against itself
    with state.lock("platform"):
        assert not _other_process_can_lock(lock_file, shared=True)  # nobody runs during a fault
        with state.lock("platform", shared=True):
            pass  # the fault's own helpers may ask for it again
    assert _other_process_can_lock(lock_file, shared=False)


@pytest.fixture(autouse=True)
def _no_strays() -> Iterator[None]:
    yield
    strays = [pid for pid in our_processes() if (process_run_id(pid) or "").startswith("tg-unit")]
    assert not strays


def _state_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_a_process_stopped_by_its_pid_file_is_reaped_not_left_a_zombie(tmp_path: Path) -> None:
    """Whatever object started it: a platform attached later stops Vault by its pid file."""
    from cluster.local.process import ManagedProcess, stop_recorded

    state = RunState.create("tg-unit-reap", root=tmp_path)
    started = ManagedProcess("sleeper", ["sleep", "60"], state)
    started.start()
    pid = started.pid
    stop_recorded(state, "sleeper", grace=5)
    assert _state_of(pid) == "gone", "stopped but not reaped"
    # A process of the run this one started without a ManagedProcess that knows it.
    env = {**os.environ, RUN_ENV: state.run_id}
    stray = subprocess.Popen(["sleep", "60"], env=env, start_new_session=True)
    state.record_pid("stray", stray.pid)
    stop_recorded(state, "stray", grace=5)
    assert _state_of(stray.pid) == "gone", "stopped but not reaped"
    assert stray.poll() is not None
