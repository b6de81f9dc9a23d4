"""The workload image's binary and build context (cluster/podbinary.py), built by the real Go toolchain.

The image is FROM scratch, so the binary must be static and built for the Docker engine's OS and
architecture (a Mac's engine runs linux/arm64 or linux/amd64), and the context must hold nothing
but the Dockerfile and the binary.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from cluster.errors import BinaryMissing
from cluster.podbinary import engine_target, image_context, pod_binary
from cluster.runstate import cache_dir

MACHINES = {"linux/amd64": "EM_X86_64", "linux/arm64": "EM_AARCH64"}


@pytest.mark.parametrize("target", sorted(MACHINES))
def test_the_image_binary_is_static_and_for_the_engines_architecture(target: str) -> None:
    binary = pod_binary(cache_dir(), target=target)
    with binary.open("rb") as handle:
        elf = ELFFile(handle)
        assert elf["e_machine"] == MACHINES[target]
        # No program interpreter: nothing to load from an image that has no libc.
        assert not [segment for segment in elf.iter_segments() if segment["p_type"] == "PT_INTERP"]


def test_the_build_context_holds_only_the_dockerfile_and_tgpod() -> None:
    binary = pod_binary(cache_dir(), target="linux/amd64")
    with image_context(binary) as context:
        assert sorted(p.name for p in context.iterdir()) == ["Dockerfile", "tgpod"]
        assert (context / "tgpod").read_bytes() == binary.read_bytes()
        assert (context / "tgpod").stat().st_mode & 0o111
    assert not context.exists()


def test_an_engine_that_does_not_answer_is_one_line(tmp_path: Path) -> None:
    fake = tmp_path / "docker"
    fake.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock.' >&2\n"
                    "echo 'linux/' \nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(BinaryMissing) as err:
        engine_target(str(fake))
    assert "Cannot connect to the Docker daemon" in str(err.value) and "\n" not in str(err.value)
