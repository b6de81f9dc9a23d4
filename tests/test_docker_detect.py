"""Whether a Docker engine answers is the Docker client's answer (`docker version`), not one socket path.

A fake `docker` on PATH stands in for the client (unit test of pure logic): the client honours
contexts, DOCKER_HOST and Docker Desktop's socket, which a socket probe cannot see.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cluster import select
from cluster.errors import PlatformUnavailable


def _client(tmp_path: Path, script: str) -> None:
    binary = tmp_path / "bin" / "docker"
    binary.parent.mkdir(exist_ok=True)
    binary.write_text("#!/bin/sh\n" + script)
    binary.chmod(0o755)


@pytest.fixture
def path_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/absent.sock")  # a socket probe would say no
    return tmp_path


def test_an_engine_the_client_reaches_through_its_context_counts(path_only: Path) -> None:
    # Docker Desktop and `docker context use` put the engine where no socket probe looks.
    _client(path_only, 'echo "28.5.1"\n')
    assert select.docker_engine() is None
    select.check_available("kind")  # no error: kind may go on


def test_the_clients_own_reason_is_the_one_line(path_only: Path) -> None:
    _client(path_only, 'echo "Cannot connect to the Docker daemon at unix:///x.sock. Is the docker daemon '
                       'running?" >&2\nexit 1\n')
    with pytest.raises(PlatformUnavailable) as err:
        select.check_available("kind")
    assert str(err.value) == ("the kind platform needs a Docker engine, and none answers: Cannot connect to the "
                              "Docker daemon at unix:///x.sock. Is the docker daemon running?; start Docker, "
                              "or use --platform local")


def test_no_client_on_path_is_named(path_only: Path) -> None:
    assert select.docker_engine() == "there is no docker command on PATH"


def test_a_client_that_hangs_is_bounded(path_only: Path) -> None:
    _client(path_only, "exec /bin/sleep 30\n")
    started = time.monotonic()
    assert select.docker_engine(timeout=0.5) == "`docker version` did not answer in 0.5 s"
    assert time.monotonic() - started < 5, "the probe must not wait for the client"


def test_a_client_only_answer_is_not_an_engine(path_only: Path) -> None:
    # `docker version` prints the client part and exits 1 when the server is missing.
    _client(path_only, 'echo ""\necho "error during connect: no engine" >&2\nexit 1\n')
    assert select.docker_engine() == "error during connect: no engine"
    assert os.environ["PATH"] == str(path_only / "bin")
