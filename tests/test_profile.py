from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from cluster.errors import ProfileError
from cluster.profile import DEFAULT_PROFILE, load_profile, parse_duration, spiffe_pattern


def write(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_default_profile_is_the_recommended_integration() -> None:
    profile = load_profile(DEFAULT_PROFILE)
    assert profile.setup.vault.token_ttl == timedelta(seconds=20)
    assert profile.setup.mesh.renewal_window == timedelta(seconds=15)
    assert profile.setup.mesh.ca_token_ttl > profile.setup.mesh.renewal_window
    assert profile.policy.require_strict_mtls
    assert spiffe_pattern(profile.setup, "team-a") == "spiffe://cluster.local/ns/team-a/sa/*"


@pytest.mark.parametrize(("text", "expected"), [
    ("20s", timedelta(seconds=20)), ("5m", timedelta(minutes=5)), ("1h30m", timedelta(minutes=90)),
    ("500ms", timedelta(milliseconds=500)), ("1.5h", timedelta(minutes=90)),
])
def test_durations_parse_like_go(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "20", "twenty", "5 m", "-1s", "1d"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration(text)


@pytest.mark.parametrize(("body", "key", "problem"), [
    ("setup:\n  vault:\n    token_tll: 20s\n", "setup.vault.token_tll", "unknown key"),
    ("setup:\n  vault:\n    token_ttl: soon\n", "setup.vault.token_ttl", "bad duration"),
    ("setup:\n  vault:\n    token_ttl: 2m\n    token_max_ttl: 1m\n", "setup.vault.token_ttl", "longer than"),
    ("setup:\n  mesh:\n    renew_fraction: 1.5\n", "setup.mesh.renew_fraction", "between 0 and 1"),
    ("setup:\n  mesh:\n    mtls: {default: LOOSE}\n", "setup.mesh.mtls.default", "not one of"),
    ("policy:\n  require_audit_device: yes please\n", "policy.require_audit_device", "true or false"),
    ("polcy: {}\n", "polcy", "unknown key"),
    ("setup:\n  vault:\n    nodes: 2\n", "setup.vault.nodes", "odd count"),
])
def test_profile_errors_name_the_file_and_the_key(tmp_path: Path, body: str, key: str, problem: str) -> None:
    path = write(tmp_path, body)
    with pytest.raises(ProfileError) as raised:
        load_profile(path)
    message = str(raised.value)
    assert str(path) in message and key in message and problem in message
    assert "\n" not in message


def test_unreadable_and_invalid_files_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="cannot be read"):
        load_profile(tmp_path / "missing.yaml")
    with pytest.raises(ProfileError, match="not valid YAML at line"):
        load_profile(write(tmp_path, "setup:\n  vault: [unclosed\n"))


def test_a_profile_can_extend_another_and_override_a_little(tmp_path: Path) -> None:
    base = write(tmp_path, DEFAULT_PROFILE.read_text(), "base.yaml")
    mutant = write(tmp_path, "extends: base.yaml\nmutant: {must_fail: [x]}\n"
                             "setup:\n  mesh:\n    mtls: {namespaces: {legacy: PERMISSIVE}}\n", "m.yaml")
    profile = load_profile(mutant)
    assert profile.setup.mesh.mtls.namespaces == {"legacy": "PERMISSIVE"}
    assert profile.setup.mesh.mtls.default == "STRICT"  # inherited
    assert profile.setup.vault == load_profile(base).setup.vault


def test_unsafe_but_possible_setups_stay_installable(tmp_path: Path) -> None:
    """The suite judges a bad setup; it never refuses or 'fixes' it at load time."""
    profile = load_profile(write(tmp_path, "setup:\n  vault: {role_scope: cluster, bound_service_accounts: wildcard}\n"
                                           "  mesh: {ca_token_ttl: 5s, pki_allowed_uri_sans: '*'}\n"))
    assert profile.setup.vault.role_scope == "cluster"
    assert profile.setup.mesh.ca_token_ttl < profile.setup.mesh.renewal_window
