"""The run's janitor (cluster/local/janitor.py) reaps a run whose owner died, even when it wakes in the
moment between the owner's files closing and the kernel marking it dead; it leaves a live owner's run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cluster.wait import wait_until
from tests.lifecycle import ROOT


def _janitor(state: Path, cache: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TRUSTGRID_CACHE": str(cache)}
    return subprocess.Popen([sys.executable, "-m", "cluster.local.janitor", str(state)], stdin=subprocess.PIPE,
                            cwd=ROOT, env=env)


_READ = {"x86_64": "0", "aarch64": "63"}  # read(2)'s number (unistd_64.h; asm-generic/unistd.h)


def _blocked_in(pid: int) -> str:
    """The system call a sleeping process is blocked in, as "read 0x0" (read on fd 0); "" when it runs
    or is gone (/proc/<pid>/syscall)."""
    try:
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "S":
            return ""
        fields = Path(f"/proc/{pid}/syscall").read_text().split()
    except (OSError, IndexError):
        return ""
    if not fields or not fields[0].isdigit():
        return ""
    name = "read" if fields[0] == _READ.get(os.uname().machine) else fields[0]
    return f"{name} {fields[1]}" if len(fields) > 1 else name


def _run_owned_by(tmp_path: Path, pid: int) -> Path:
    state = tmp_path / "runs" / "tg-unit-janitor"
    state.mkdir(parents=True)
    (state / "owner").write_text(str(pid))
    (state / "vault-init.json").write_text("{}")  # what must not outlive a dead owner
    return state


def test_a_janitor_woken_while_its_owner_is_still_dying_reaps_the_run(tmp_path: Path) -> None:
    # The owner stands in for a killed pytest in its last moment: the pipe already reads EOF, the
    # process is not yet a zombie. Before the fix the janitor saw it alive, left, and the keys stayed.
    owner = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    state = _run_owned_by(tmp_path, owner.pid)
    janitor = _janitor(state, tmp_path)
    assert janitor.stdin is not None and owner.stdin is not None
    wait_until(lambda: _blocked_in(janitor.pid) == "read 0x0", timeout=60, interval=0.01,
               describe="the janitor to wait on its pipe")
    janitor.stdin.close()  # EOF while the owner lives
    # The janitor has judged the owner once it exits (the old code: alive, so it left the run) or sleeps
    # between polls (waiting for the owner's end): only then does the owner end.
    wait_until(lambda: janitor.poll() is not None or _blocked_in(janitor.pid) not in ("", "read 0x0"),
               timeout=60, interval=0.01, describe="the janitor to judge the owner")
    owner.stdin.close()
    owner.wait(timeout=30)
    assert janitor.wait(timeout=60) == 0
    assert not state.exists()


def _dead_run(tmp_path: Path) -> Path:
    """Another run whose owner is gone: a janitor that reaps (it must not here) removes it too."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=30)
    other = tmp_path / "runs" / "tg-unit-other"
    other.mkdir(parents=True)
    (other / "owner").write_text(str(gone.pid))
    return other


def test_a_janitor_released_by_a_live_owner_leaves_its_teardown_to_it(tmp_path: Path) -> None:
    other = _dead_run(tmp_path)
    state = _run_owned_by(tmp_path, os.getpid())
    janitor = _janitor(state, tmp_path)
    assert janitor.stdin is not None
    wait_until(lambda: _blocked_in(janitor.pid) == "read 0x0", timeout=60, interval=0.01,
               describe="the janitor to wait on its pipe")
    janitor.stdin.close()  # the owner's teardown released it; the owner removes its state next
    (state / "vault-init.json").unlink()
    (state / "owner").unlink()
    state.rmdir()
    assert janitor.wait(timeout=60) == 0
    assert other.exists(), "the janitor reaped during a live owner's teardown"


def test_a_kept_run_is_left_alone_when_its_owner_exits(tmp_path: Path) -> None:
    other = _dead_run(tmp_path)
    owner = subprocess.Popen([sys.executable, "-c", "pass"])
    owner.wait(timeout=30)
    state = _run_owned_by(tmp_path, owner.pid)
    (state / "kept.json").write_text("{}")
    janitor = _janitor(state, tmp_path)
    assert janitor.stdin is not None
    janitor.stdin.close()
    assert janitor.wait(timeout=60) == 0
    assert (state / "vault-init.json").exists()
    assert other.exists(), "the janitor of a kept run reaped"
