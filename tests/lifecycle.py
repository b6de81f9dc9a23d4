"""Helpers for tests that run the whole suite in a child pytest and inspect what it left."""

from __future__ import annotations

import os
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


def _listening_ports() -> frozenset[int]:
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            parts = line.split()
            if parts[3] == "0A":
                ports.add(int(parts[1].rsplit(":", 1)[1], 16))
    return frozenset(ports)


def snapshot() -> Leftovers:
    root = runs_root()
    dirs = frozenset(p.name for p in root.iterdir()) if root.is_dir() else frozenset()
    return Leftovers(frozenset(our_processes()), dirs, _listening_ports())


def new_since(before: Leftovers) -> Leftovers:
    now = snapshot()
    return Leftovers(now.pids - before.pids, now.run_dirs - before.run_dirs,
                     now.listening_ports - before.listening_ports)


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "TRUSTGRID_"))}
    env.pop("KUBEBUILDER_ASSETS", None)
    return {**env, **extra}


def pytest_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", *args]


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
        process = subprocess.Popen(pytest_argv(*args), cwd=ROOT, env=child_env(), text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
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
