from __future__ import annotations

from pathlib import Path

import pytest

from cluster.errors import ProfileError, SettingsError
from cluster.profile import DEFAULT_PROFILE
from cluster.settings import build_settings


def test_defaults(tmp_path: Path) -> None:
    settings = build_settings({}, {}, rootdir=tmp_path, run_id="tg-test")
    assert settings.platform == "auto"
    assert settings.profile.path == DEFAULT_PROFILE
    assert settings.report_dir == tmp_path / "reports" / "out"
    assert settings.run_report_dir == tmp_path / "reports" / "out" / "tg-test"
    assert (settings.apiserver_port, settings.vault_port) == (0, 0)
    assert not settings.keep_cluster


def test_option_beats_environment_beats_default(tmp_path: Path) -> None:
    env = {"TRUSTGRID_PLATFORM": "local", "TRUSTGRID_REPORT_DIR": str(tmp_path / "env"),
           "TRUSTGRID_APISERVER_PORT": "16443"}
    from_env = build_settings({}, env, rootdir=tmp_path)
    assert (from_env.platform, from_env.report_dir, from_env.apiserver_port) == ("local", tmp_path / "env", 16443)
    from_cli = build_settings({"platform": "kind", "report_dir": str(tmp_path / "cli")}, env, rootdir=tmp_path)
    assert (from_cli.platform, from_cli.report_dir) == ("kind", tmp_path / "cli")


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = build_settings({}, {}, rootdir=tmp_path)
    with pytest.raises(AttributeError):
        settings.platform = "kind"  # type: ignore[misc]


def test_unknown_platform_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as raised:
        build_settings({"platform": "minikube"}, {}, rootdir=tmp_path)
    assert str(raised.value) == "unknown --platform 'minikube'; choose one of auto, local, kind, kubeconfig"


@pytest.mark.parametrize("port", ["http", "70000", "-1"])
def test_bad_ports_are_refused(tmp_path: Path, port: str) -> None:
    with pytest.raises(SettingsError, match="--vault-port"):
        build_settings({"vault_port": port}, {}, rootdir=tmp_path)


def test_profile_from_environment_is_loaded_and_checked(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("setup: {vault: {audit: maybe}}\n")
    with pytest.raises(ProfileError, match=r"setup\.vault\.audit"):
        build_settings({}, {"TRUSTGRID_PROFILE": str(bad)}, rootdir=tmp_path)


def test_kind_vault_is_vault_or_openbao(tmp_path: Path) -> None:
    assert build_settings({"kind_vault": "openbao"}, {}, rootdir=tmp_path).kind_vault == "openbao"
    assert build_settings({}, {"TRUSTGRID_KIND_VAULT": "openbao"}, rootdir=tmp_path).kind_vault == "openbao"
    with pytest.raises(SettingsError) as raised:
        build_settings({"kind_vault": "consul"}, {}, rootdir=tmp_path)
    assert str(raised.value) == "unknown --kind-vault 'consul'; choose one of vault, openbao"


def test_auto_is_resolved_once_into_a_concrete_platform(tmp_path: Path) -> None:
    """Settings carry the platform the run really uses, and why; the resolver is asked once."""
    asked: list[str] = []

    def resolve(name: str) -> tuple[str, str]:
        asked.append(name)
        return ("local", "auto: no Docker engine answers") if name == "auto" else (name, "chosen with --platform")

    settings = build_settings({}, {}, rootdir=tmp_path, resolve=resolve)
    assert (settings.platform, settings.platform_reason) == ("local", "auto: no Docker engine answers")
    assert asked == ["auto"]
    chosen = build_settings({"platform": "kind"}, {}, rootdir=tmp_path, resolve=resolve)
    assert (chosen.platform, chosen.platform_reason) == ("kind", "chosen with --platform")
    # A worker takes its controller's answer: whatever Docker says meanwhile, the run has one platform.
    worker = build_settings({}, {}, rootdir=tmp_path, resolve=lambda _: ("kind", "auto: a Docker engine answers"))
    assert worker.platform == "kind"
