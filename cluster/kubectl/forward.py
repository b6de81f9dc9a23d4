"""Vault as this process reaches it on kind: a `kubectl port-forward` that outlives Vault's pod.

`kubectl port-forward svc/X` binds to one pod, picked when it starts, and exits with "lost
connection to pod" once that pod's stream closes (client-go tools/portforward/portforward.go,
ErrLostConnectionToPod). After vault-down (scaled to zero and back) or a restart, a plain
forward is gone and Vault is never reached, nor unsealed, again. This one is supervised: the
same loopback port, forwarded again to whichever pod the Service has, until the block ends.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator

from cluster.errors import PlatformUnavailable, WaitTimeout
from cluster.kubectl.commands import Kubectl
from cluster.secrets import redact
from cluster.wait import wait_until

RESTART_AFTER_S = 1.0  # between a forward's exit and the next attempt (no pod yet while scaled to zero)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


class _Supervisor:
    """Runs the forward, and runs it again each time it exits, until stopped."""

    def __init__(self, argv: list[str], restart_after: float) -> None:
        self.argv = argv
        self.restart_after = restart_after
        self.stopped = threading.Event()
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0  # how many forwards were started (1 + the restarts)
        self.last_error = ""  # the last stderr line of a forward that exited (redacted), or why none started
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._loop, name="vault-port-forward", daemon=True)

    def _loop(self) -> None:
        while not self.stopped.is_set():
            with tempfile.TemporaryFile() as errors:
                with self.lock:
                    if self.stopped.is_set():
                        return
                    try:
                        self.process = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=errors,
                                                        stdin=subprocess.DEVNULL)
                    except OSError as err:
                        self.last_error = f"kubectl could not start: {err.strerror}"
                        return
                    self.starts += 1
                while self.process.poll() is None:
                    if self.stopped.wait(0.5):
                        return
                errors.seek(0)
                lines = [line.strip() for line in errors.read().decode(errors="replace").splitlines() if line.strip()]
                self.last_error = redact(lines[-1]) if lines else f"kubectl exited {self.process.returncode}"
            self.stopped.wait(self.restart_after)

    def stop(self) -> None:
        with self.lock:
            self.stopped.set()
            process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.thread.join(timeout=15)


@contextlib.contextmanager
def port_forward(kubectl: Kubectl, namespace: str, service: str, port: int, *, scheme: str = "http",
                 restart_after: float = RESTART_AFTER_S, ready_within: float = 30) -> Iterator[str]:
    """``scheme://127.0.0.1:PORT`` forwarded to ``service``'s ``port`` for as long as the block runs,
    across pod restarts. Raises PlatformUnavailable, with kubectl's last error, when no forward listens
    within ``ready_within`` seconds."""
    local = free_port()
    supervisor = _Supervisor(kubectl.argv("-n", namespace, "port-forward", "--address", "127.0.0.1",
                                          f"svc/{service}", f"{local}:{port}"), restart_after)
    supervisor.thread.start()
    try:
        try:
            wait_until(lambda: listening(local), timeout=ready_within, interval=0.2,
                       describe=f"port-forward to {namespace}/{service} on 127.0.0.1:{local}")
        except WaitTimeout:
            raise PlatformUnavailable(
                f"kubectl port-forward to {namespace}/{service} did not listen in {ready_within:g} s: "
                f"{supervisor.last_error or 'no error from kubectl'}",
                fix=f"check that {namespace}/{service} has a running pod, and kubectl's access to it") from None
        yield f"{scheme}://127.0.0.1:{local}"
    finally:
        supervisor.stop()
