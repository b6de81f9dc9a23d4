"""Managed local processes: started labelled, logged to the state dir, always stopped.

Each process runs in its own session so that a Ctrl-C at the terminal
reaches pytest (which then tears down in order) rather than killing the
control plane mid-write. Processes the session owner starts also get
PR_SET_PDEATHSIG, so a SIGKILLed pytest takes them along; the reaper covers
the rest at the next run.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import socket
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cluster.errors import PortInUse, ProcessFailed, WaitTimeout
from cluster.interrupts import terminate_with_parent
from cluster.runstate import OWNER_ENV, RUN_ENV, RunState, group_members, process_run_id, terminate, terminate_group
from cluster.secrets import redact
from cluster.wait import Abort, wait_until


@dataclass
class ManagedProcess:
    name: str
    argv: Sequence[str]
    state: RunState
    env: dict[str, str] = field(default_factory=dict)
    die_with_parent: bool = True
    # "kept" for a --keep-cluster run; otherwise the pid that owns the run.
    owner: str = ""
    popen: subprocess.Popen[bytes] | None = None
    cwd: Path | None = None  # pilot-discovery reads relative paths (./etc/cacerts, ./var/lib/istio)

    @property
    def log_path(self) -> Path:
        return self.state.file(f"logs/{self.name}.log")

    def start(self) -> None:
        self.owner = self.owner or self.state.owner
        self.log_path.parent.mkdir(mode=0o700, exist_ok=True)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.state.path), **self.env}
        env[RUN_ENV] = self.state.run_id
        env[OWNER_ENV] = self.owner
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                list(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=terminate_with_parent if self.die_with_parent else None,  # noqa: PLW1509
            )
        self.state.record_pid(self.name, self.popen.pid)
        _children[(str(self.state.path), self.name)] = self

    @property
    def pid(self) -> int:
        if self.popen is None:
            raise ProcessFailed(self.name, "was never started")
        return self.popen.pid

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        tail = [line.strip() for line in text.strip().splitlines()[-lines:]]
        return redact(" | ".join(tail))[-400:]

    def wait_ready(self, check: Callable[[], bool], *, timeout: float, describe: str) -> None:
        """Wait for ``check``; fail at once, with the log tail, if the process dies."""

        def ready() -> bool:
            if not self.running():
                raise Abort(f"exited with code {self.popen.returncode if self.popen else None}")
            return check()

        try:
            wait_until(ready, timeout=timeout, interval=0.1, describe=describe)
        except Abort as exited:
            raise ProcessFailed(self.name, f"{exited} before it was ready", self.log_tail()) from None
        except WaitTimeout as err:
            raise ProcessFailed(self.name, f"was not ready in {timeout:.0f}s ({err.last_error or err.last_state})",
                                self.log_tail()) from None

    def stop(self, grace: float = 10.0) -> None:
        if self.popen is None:
            return
        # The whole group: it is the session we started it in, and its children (pilot-agent's Envoy)
        # must not outlive it.
        if self.popen.poll() is None or group_members(self.popen.pid):
            terminate_group(self.popen.pid, grace=grace)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=1)
        with contextlib.suppress(FileNotFoundError):
            self.state.file(f"pids/{self.name}").unlink()

    def peak_rss_kib(self) -> int:
        """VmHWM: the peak resident set of the live process, in KiB."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return 0
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return 0

    @contextlib.contextmanager
    def running_context(self) -> Iterator[ManagedProcess]:
        self.start()
        try:
            yield self
        finally:
            self.stop()


# Processes this Python process started, so that stopping one also reaps it.
_children: dict[tuple[str, str], ManagedProcess] = {}


def stop_recorded(state: RunState, name: str, grace: float = 10.0) -> None:
    """Stop a process of the run by its pid file, whichever process started it."""
    pid = state.pids().get(name)
    # Any incarnation this process started (a restart replaces the entry by name), so it is reaped
    # and does not linger as a zombie for the rest of the session.
    child = next((c for c in _children.values() if c.popen is not None and c.popen.pid == pid), None)
    if child is not None:
        child.stop(grace=grace)
    elif pid and process_run_id(pid) == state.run_id:
        terminate([pid], grace=grace)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # ours after all (started by an object since forgotten): reap it
    state.file(f"pids/{name}").unlink(missing_ok=True)


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A free port below the kernel's ephemeral range. A port the kernel picks (bind to 0) is from that
    range, and between this check and the server's own bind any outgoing connection may take it as its
    source port; below the range only another listener could, and the bind check sees those."""
    low, _ = _ephemeral_range()
    for _ in range(200):
        port = random.randrange(10000, max(10001, low))  # noqa: S311 - a port, not a secret
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_owner(port: int) -> str:
    """Name the process listening on a TCP port, from /proc, for error messages."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                if int(parts[1].rsplit(":", 1)[1], 16) == port and parts[3] == "0A":
                    inodes.add(parts[9])
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    comm = (proc / "comm").read_text().strip()
                    return f"pid {proc.name} ({comm})"
    return "another process"


def claim_port(port: int, option: str) -> int:
    """Return ``port`` (or a free one for 0) after proving it can be bound."""
    if port == 0:
        return free_port()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise PortInUse(port, port_owner(port), option) from None
            raise
    return port
