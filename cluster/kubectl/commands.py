"""Running kind, kubectl, helm and istioctl: one line on failure, secrets redacted, never a hang."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from cluster.errors import PlatformUnavailable
from cluster.secrets import redact


class CommandFailed(PlatformUnavailable):
    """A tool exited non-zero or timed out; the message carries its last stderr line, redacted."""


class Runner(Protocol):
    def __call__(self, argv: Sequence[str], *, stdin: str | None = None, timeout: float = 120) -> str: ...


def run(argv: Sequence[str], *, stdin: str | None = None, timeout: float = 120) -> str:
    try:
        result = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=timeout,
                                check=False)
    except subprocess.TimeoutExpired:
        raise CommandFailed(f"{Path(argv[0]).name} {argv[1] if len(argv) > 1 else ''} did not finish in {timeout:g} s",
                            fix="see the cluster's events; rerun with a longer timeout if it is just slow") from None
    if result.returncode != 0:
        last = redact((result.stderr.strip().splitlines() or ["(no output)"])[-1])
        # The whole line is redacted: a command line may carry a secret as well as its output.
        raise CommandFailed(redact(f"{Path(argv[0]).name} {' '.join(argv[1:3])} failed ({result.returncode}): {last}"),
                            fix="see the message; the platform tears down what it created")
    return result.stdout


def documents(objs: Iterable[dict[str, Any]]) -> str:
    """Objects as one multi-document YAML stream (JSON round trip: plain types only)."""
    return yaml.safe_dump_all([json.loads(json.dumps(o)) for o in objs], sort_keys=False)


@dataclass(frozen=True)
class Kubectl:
    runner: Runner
    binary: Path
    kubeconfig: Path
    context: str | None = None  # an existing cluster's context; kind's own kubeconfig has just one

    def argv(self, *args: str) -> list[str]:
        context = ["--context", self.context] if self.context else []
        return [str(self.binary), "--kubeconfig", str(self.kubeconfig), *context, *args]

    def __call__(self, *args: str, stdin: str | None = None, timeout: float = 120) -> str:
        return self.runner(self.argv(*args), stdin=stdin, timeout=timeout)

    def apply(self, objs: Iterable[dict[str, Any]], timeout: float = 120) -> None:
        self("apply", "--server-side", "--field-manager=trustgrid", "-f", "-", stdin=documents(objs),
             timeout=timeout)

    def exec_json(self, namespace: str, target: str, argv: Sequence[str], timeout: float = 60) -> Any:
        return json.loads(self("exec", "-n", namespace, target, "-c", "app", "--", *argv, timeout=timeout))
