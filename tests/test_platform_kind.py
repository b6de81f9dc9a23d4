"""--platform kind where no Docker engine answers: one line, nothing left behind.

How fast it fails (the goal: under 2 s) is measured by bench/refusal.py, not judged here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from cluster.runstate import runs_root
from tests.lifecycle import ROOT


def test_kind_without_docker_fails_fast_in_one_line_naming_local(tmp_path: Path) -> None:
    runs_before = set(runs_root().glob("*")) if runs_root().exists() else set()
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "pytest", "suites/", "--platform", "kind", "-p", "no:cacheprovider",
                             "--report-dir", str(tmp_path / "reports")], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=30, check=False)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode == 4, lines
    # The Docker client's own words, whichever way it is missing here (no client, or no engine at DOCKER_HOST).
    assert len(lines) == 1 and lines[0].startswith("ERROR: trustgrid: the kind platform needs a Docker engine, "
                                                   "and none answers: "), lines
    assert lines[0].endswith("; start Docker, or use --platform local"), lines
    assert shutil.which("docker") is None or f"unix://{tmp_path}/no-docker.sock" in lines[0], lines
    assert not (tmp_path / "reports").exists()
    runs_after = set(runs_root().glob("*")) if runs_root().exists() else set()
    assert runs_after <= runs_before, f"left run state behind: {runs_after - runs_before}"
