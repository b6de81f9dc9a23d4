"""A run's identity and its private state directory, and the reaper of dead runs.

Every process we start carries ``TRUSTGRID_RUN_ID`` in its environment and
is recorded in ``<state>/pids``; every Kubernetes object carries the
``trustgrid.io/run-id`` label. A run whose owner process is gone is dead,
and the next run removes what it left: that is what makes a SIGKILL safe.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets as _random
import shutil
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

RUN_ENV = "TRUSTGRID_RUN_ID"
# The pid of the process that owns the run, or "kept": lets the reaper judge a
# stray process by itself, wherever its run's state directory lives.
OWNER_ENV = "TRUSTGRID_RUN_OWNER"
RUN_LABEL = "trustgrid.io/run-id"


def new_run_id() -> str:
    return time.strftime("tg-%Y%m%d-%H%M%S-", time.gmtime()) + _random.token_hex(2)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive flock on ``path`` (made if missing) for the block: one builder of a cached binary at a time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cache_dir() -> Path:
    return Path(os.environ.get("TRUSTGRID_CACHE", Path.home() / ".cache" / "trustgrid"))


def runs_root() -> Path:
    return cache_dir() / "runs"


@dataclass(frozen=True)
class RunState:
    """The 0700 directory that holds a run's keys, logs and pid files."""

    run_id: str
    path: Path

    @classmethod
    def create(cls, run_id: str, root: Path | None = None) -> RunState:
        base = root or runs_root()
        base.mkdir(parents=True, exist_ok=True)
        path = base / run_id
        path.mkdir(mode=0o700)
        (path / "owner").write_text(str(os.getpid()))
        return cls(run_id, path)

    @classmethod
    def attach(cls, path: Path) -> RunState:
        return cls(path.name, path)

    @property
    def owner(self) -> str:
        """The owner pid as text, or "kept" once the run was kept on purpose."""
        if (self.path / "kept.json").exists():
            return "kept"
        return (self.path / "owner").read_text().strip()

    def file(self, name: str) -> Path:
        return self.path / name

    def write_private(self, name: str, data: str | bytes) -> Path:
        """Write a file that only root may read (keys, tokens, kubeconfig)."""
        target = self.path / name
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
        os.chmod(target, 0o600)
        return target

    def record_pid(self, name: str, pid: int) -> None:
        (self.path / "pids").mkdir(mode=0o700, exist_ok=True)
        (self.path / "pids" / name).write_text(str(pid))

    def pids(self) -> dict[str, int]:
        folder = self.path / "pids"
        if not folder.is_dir():
            return {}
        return {p.name: int(p.read_text() or 0) for p in folder.iterdir()}

    def mark_kept(self, note: dict[str, str]) -> None:
        (self.path / "kept.json").write_text(json.dumps(note, indent=2))

    @contextlib.contextmanager
    def lock(self, name: str, *, shared: bool = False) -> Iterator[None]:
        """A cross-process reader-writer lock (flock) over the run's platform.

        Ordinary tests hold it shared; a cluster-wide fault (Vault down, CA
        rotation) holds it exclusive, so no other xdist worker's test sees
        the fault. Re-entrant within a process; a shared holder cannot
        upgrade, which would deadlock against itself.
        """
        key = (str(self.path), name)
        held = _held_locks.get(key)
        if held is not None:
            if held == "shared" and not shared:
                raise RuntimeError(f"lock {name} is held shared; mark the test cluster_fault to hold it exclusive")
            yield
            return
        handle = (self.path / f"{name}.lock").open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            _held_locks[key] = "shared" if shared else "exclusive"
            yield
        finally:
            _held_locks.pop(key, None)
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    def remove(self) -> None:
        """Delete the directory (keys included). A process that was still writing
        a log as it died can make one pass miss a file, so retry briefly."""
        from cluster.wait import pause

        deadline = time.monotonic() + 5
        while self.path.exists() and time.monotonic() < deadline:
            shutil.rmtree(self.path, ignore_errors=True)
            if self.path.exists():
                pause(0.05)


def _environ_value(pid: int, name: str) -> str | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    for entry in environ.split(b"\0"):
        if entry.startswith(name.encode() + b"="):
            return entry.split(b"=", 1)[1].decode()
    return None


_held_locks: dict[tuple[str, str], str] = {}


def process_run_id(pid: int) -> str | None:
    """The run id in a live process's environment, or None."""
    return _environ_value(pid, RUN_ENV)


def _orphaned(pid: int) -> bool:
    """A labelled process whose run owner is gone (never a kept run's)."""
    owner = _environ_value(pid, OWNER_ENV)
    return owner is not None and owner.isdigit() and not process_alive(int(owner))


def our_processes(run_id: str | None = None) -> list[int]:
    """Pids of processes labelled with a run id (any run when run_id is None)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            label = process_run_id(int(entry.name))
            if label and (run_id is None or label == run_id):
                found.append(int(entry.name))
    return found


def terminate_run(run_id: str) -> None:
    """Stop every process still labelled with the run: the last step of a teardown, for any process
    that was started but never tracked (a child that outlived its parent, a hook cut short)."""
    terminate(our_processes(run_id))


def terminate(pids: list[int], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL whatever is still there after ``grace`` seconds."""
    from cluster.wait import pause  # local import: wait imports errors only

    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(process_alive(pid) for pid in pids):
        pause(0.05)
    for pid in pids:
        if process_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def group_members(pgid: int) -> list[int]:
    """Live processes of a process group (/proc/<pid>/stat field 5)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def terminate_group(pgid: int, grace: float = 5.0) -> None:
    """SIGTERM a whole process group (a process we started in its own session, and every child it
    made: pilot-agent's Envoy), then SIGKILL what is left after ``grace`` seconds."""
    from cluster.wait import pause

    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and group_members(pgid):
        pause(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def process_alive(pid: int) -> bool:
    """The pid exists and is not a zombie (/proc/<pid>/stat state)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def owner_alive(owner: str) -> bool:
    """A recorded owner ("kept", or a pid as text) still holds what it owns.

    The one liveness rule for every record of an owner (run directories, bridge aliases, pod
    folders): a zombie is dead. Its /proc entry stays until its parent waits for it, which an
    interrupted parent may not do for a while; a reaper that read that entry as alive left the dead
    run's network namespaces behind.
    """
    if owner == "kept":
        return True
    return owner.isdigit() and process_alive(int(owner))


def run_is_live(path: Path) -> bool:
    """A run is live while its owner process exists, or when it was kept on purpose."""
    if (path / "kept.json").exists():
        return True
    try:
        owner = int((path / "owner").read_text())
    except (OSError, ValueError):
        return False
    return process_alive(owner)


# A run directory with one of these files records what the run made outside this machine (a kind
# cluster; namespaces and Vault paths on an existing cluster): only that platform's reaper, which
# removes those first, removes the directory, so nothing is orphaned by a local run's reaping.
KIND_CLUSTER_MARK = "kind-cluster"
EXISTING_CLUSTER_MARK = "existing-cluster"
EXTERNAL_MARKS = (KIND_CLUSTER_MARK, EXISTING_CLUSTER_MARK)


def reap_dead_runs(root: Path | None = None, *, include_kept: bool = False) -> list[str]:
    """Remove the processes and state directories of runs whose owner is gone."""
    base = root or runs_root()
    reaped: list[str] = []
    live: set[str] = set()
    if base.is_dir():
        for path in sorted(base.iterdir()):
            if not path.is_dir():
                continue
            if run_is_live(path) and not (include_kept and (path / "kept.json").exists()):
                live.add(path.name)
                continue
            terminate(our_processes(path.name))
            if any((path / mark).exists() for mark in EXTERNAL_MARKS):
                continue
            shutil.rmtree(path, ignore_errors=True)
            reaped.append(path.name)
    # Labelled processes whose owner is dead, wherever their state directory was.
    orphans = [pid for pid in our_processes() if process_run_id(pid) not in live and _orphaned(pid)]
    orphan_runs = {process_run_id(pid) for pid in orphans}
    terminate(orphans)
    reaped += sorted(r for r in orphan_runs if r and r not in reaped)
    return reaped
