"""tgpod, the suite's workload binary (echo app, Vault agent, capture marker), built from its Go source.

One builder for every platform: the local platform runs the binary in its pods; the kind and
existing-cluster platforms put it alone in an image ``FROM scratch`` (cluster/kind/Dockerfile), so
that image has no base image to pin and nothing in it but this build. For an image it is built
static (CGO off) for the Docker engine's OS and architecture (``docker version``), which on a Mac
is linux/arm64 or linux/amd64, not the host's. Builds are cached under ``~/.cache/trustgrid/bin``
by source hash and target. Errors: BinaryMissing, one line with the fix.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from cluster.errors import BinaryMissing
from cluster.runstate import file_lock

POD_SOURCE = Path(__file__).parent / "local" / "pod"
DOCKERFILE = Path(__file__).parent / "kind" / "Dockerfile"
GO_HINT = "install Go 1.26+; tgpod builds in seconds"
Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def pod_binary(cache: Path, *, target: str = "", progress: Progress = _quiet) -> Path:
    """The tgpod binary: for this host when ``target`` is "", else static for ``target`` ("linux/arm64")."""
    digest = hashlib.sha256()
    for source in [*sorted(POD_SOURCE.glob("*.go")), POD_SOURCE / "go.mod"]:
        digest.update(source.name.encode() + source.read_bytes())
    suffix = f"-{target.replace('/', '-')}-static" if target else ""
    path = cache / "bin" / f"tgpod-{digest.hexdigest()[:12]}{suffix}"
    env = dict(os.environ)
    if target:
        goos, _, goarch = target.partition("/")
        env.update(GOOS=goos, GOARCH=goarch, CGO_ENABLED="0")
    with file_lock(cache / "locks" / "tgpod.lock"):
        if path.exists():
            return path
        go = shutil.which("go")
        if go is None:
            raise BinaryMissing("the pod binary (tgpod) is not cached and Go is not installed", fix=GO_HINT)
        progress(f"building tgpod{' for ' + target if target else ''}")
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        result = subprocess.run([go, "build", "-trimpath", "-ldflags", "-s -w", "-o", str(partial), "."],
                                cwd=POD_SOURCE, env=env, capture_output=True, text=True, check=False, timeout=900)
        if result.returncode != 0:
            partial.unlink(missing_ok=True)
            raise BinaryMissing(f"go build of tgpod{' for ' + target if target else ''} failed: "
                                f"{(result.stderr.strip().splitlines() or ['no output'])[-1]}", fix=GO_HINT)
        partial.rename(path)  # atomic: an interrupted build leaves no half binary
        return path


@contextmanager
def image_context(binary: Path) -> Iterator[Path]:
    """A docker build context holding only the Dockerfile and ``binary`` (as ``tgpod``); removed afterwards.
    ``docker build -f CONTEXT/Dockerfile CONTEXT`` then sends nothing of the repository or the run."""
    with tempfile.TemporaryDirectory(prefix="tg-image-") as folder:
        context = Path(folder)
        shutil.copyfile(DOCKERFILE, context / "Dockerfile")
        shutil.copyfile(binary, context / "tgpod")
        (context / "tgpod").chmod(0o755)
        yield context


def engine_target(docker: str = "docker", *, timeout: float = 30) -> str:
    """The Docker engine's OS/architecture ("linux/amd64"), which images must be built for."""
    result = subprocess.run([docker, "version", "--format", "{{.Server.Os}}/{{.Server.Arch}}"], capture_output=True,
                            text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    answer = result.stdout.strip()
    if result.returncode != 0 or answer.count("/") != 1:
        why = (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1]
        raise BinaryMissing(f"the Docker engine did not say its OS and architecture: {why}",
                            fix="start Docker (`docker version` must show a Server)")
    return answer


def build_image(tag: str, cache: Path, *, docker: str = "docker", progress: Progress = _quiet) -> str:
    """``docker build`` of the workload image ``tag`` for the engine's target; returns that target."""
    target = engine_target(docker)
    binary = pod_binary(cache, target=target, progress=progress)
    with image_context(binary) as context:
        progress(f"docker build -t {tag} ({target}, FROM scratch: tgpod only)")
        result = subprocess.run([docker, "build", "-t", tag, "-f", str(context / "Dockerfile"), str(context)],
                                capture_output=True, text=True, check=False, timeout=900)
    if result.returncode != 0:
        raise BinaryMissing(f"docker build of {tag} failed: "
                            f"{(result.stderr.strip().splitlines() or ['no output'])[-1]}",
                            fix="read `docker build` above; the context is only the Dockerfile and tgpod")
    return target
