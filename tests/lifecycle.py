"""Helpers for tests that run the whole suite in a child pytest and inspect what it left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from cluster.runstate import our_processes, runs_root

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Leftovers:
    pids: frozenset[int]
    run_dirs: frozenset[str]
    listening_ports: frozenset[int]
    netns: frozenset[str] = frozenset()
    links: frozenset[str] = frozenset()
    forward_rules: frozenset[str] = frozenset()
    pod_dirs: frozenset[str] = frozenset()

    def problems(self) -> list[str]:
        named: dict[str, frozenset[int] | frozenset[str]] = {
            "processes": self.pids, "state directories": self.run_dirs, "listening ports": self.listening_ports,
            "network namespaces": self.netns, "links": self.links, "FORWARD rules": self.forward_rules,
            "pod directories": self.pod_dirs}
        return [f"{what} left: {sorted(items)}" for what, items in named.items() if items]


def _listening_ports() -> frozenset[int]:
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            parts = line.split()
            if parts[3] == "0A":
                ports.add(int(parts[1].rsplit(":", 1)[1], 16))
    return frozenset(ports)


def _names(argv: list[str]) -> frozenset[str]:
    out = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
    return frozenset(line.split()[0].rstrip(":").split("@")[0] for line in out.splitlines()
                     if line.strip() and line.split()[0].startswith("tg"))


def snapshot() -> Leftovers:
    root = runs_root()
    dirs = frozenset(p.name for p in root.iterdir()) if root.is_dir() else frozenset()
    links = frozenset(
        line.split(": ")[1].split("@")[0] for line in subprocess.run(
            ["ip", "-o", "link", "show"], capture_output=True, text=True, check=False).stdout.splitlines()
        if line.split(": ")[1].startswith("tg"))
    rules = frozenset(line for line in subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True,
                                                      check=False).stdout.splitlines() if "trustgrid:" in line)
    pods = Path("/run/trustgrid")
    return Leftovers(frozenset(our_processes()), dirs, _listening_ports(), _names(["ip", "netns", "list"]), links,
                     rules, frozenset(p.name for p in pods.iterdir()) if pods.is_dir() else frozenset())


def new_since(before: Leftovers) -> Leftovers:
    now = snapshot()
    return Leftovers(now.pids - before.pids, now.run_dirs - before.run_dirs,
                     now.listening_ports - before.listening_ports, now.netns - before.netns,
                     now.links - before.links, now.forward_rules - before.forward_rules,
                     now.pod_dirs - before.pod_dirs)


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "TRUSTGRID_"))}
    env.pop("KUBEBUILDER_ASSETS", None)
    return {**env, **extra}


def pytest_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", *args]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_pytest(*args: str, env: dict[str, str] | None = None, timeout: float = 300,
               prelude: str = "") -> subprocess.CompletedProcess[str]:
    argv = pytest_argv(*args)
    if prelude:
        argv = [sys.executable, "-c", f"{prelude}\nimport sys, pytest\nsys.exit(pytest.main({list(argv[3:])!r}))"]
    return subprocess.run(argv, cwd=ROOT, env=env or child_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)


@dataclass
class Child:
    """A child pytest whose output is collected line by line as it runs."""

    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, *args: str) -> Child:
        # A shell that starts jobs in the background (nohup, `&` without job control) hands them SIGINT
        # ignored, and Python then installs no KeyboardInterrupt handler: give the child a Ctrl-C it can feel.
        process = subprocess.Popen(pytest_argv(*args), cwd=ROOT, env=child_env(), text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   preexec_fn=_default_sigint)  # noqa: PLW1509 - only resets a signal
        child = cls(process)
        threading.Thread(target=child._pump, daemon=True).start()
        return child

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def said(self, text: str) -> bool:
        return any(text in line for line in self.lines)
