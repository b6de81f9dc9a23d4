"""The pure rules of an upgrade run: which versions may be asked for, and how probes are judged across it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cluster.errors import SettingsError
from cluster.local.pki import KeyPair
from cluster.local.raftcluster import RaftNode, front_config, node_config
from cluster.session import PlatformSession
from cluster.settings import build_settings, parse_upgrade_istio, parse_upgrade_vault
from cluster.versions import istio_upgrade_pair, istioctl_versions, upgrade_pair, upgrade_wheels
from scenarios.monitor import Sample
from scenarios.upgrade import longest_gap, outage


def test_the_default_upgrade_is_the_pinned_pair_and_both_are_pinned_wheels(tmp_path: Path) -> None:
    low, high = upgrade_pair()
    assert build_settings({}, {}, rootdir=tmp_path).upgrade_vault == (low, high)
    assert {low, high} <= set(upgrade_wheels())


@pytest.mark.parametrize("value", ["2.7.2", "2.6.2:9.9.9", "latest:2.7.2", "2.7.2:2.6.2", "2.7.2:2.7.2"])
def test_an_upgrade_that_is_not_two_pinned_versions_upwards_is_one_line_naming_the_pins(value: str) -> None:
    with pytest.raises(SettingsError) as raised:
        parse_upgrade_vault(value)
    message = str(raised.value)
    assert "\n" not in message and "--upgrade-vault FROM:TO" in message
    assert all(version in message for version in upgrade_wheels())


def test_the_environment_supplies_the_upgrade(tmp_path: Path) -> None:
    low, high = upgrade_pair()
    settings = build_settings({}, {"TRUSTGRID_UPGRADE_VAULT": f"{low}:{high}"}, rootdir=tmp_path)
    assert settings.upgrade_vault == (low, high)


def test_the_default_canary_is_the_pinned_istio_pair_and_both_have_a_pinned_istioctl(tmp_path: Path) -> None:
    low, high = istio_upgrade_pair()
    settings = build_settings({}, {"TRUSTGRID_UPGRADE_ISTIO": f"{low}:{high}"}, rootdir=tmp_path)
    assert settings.upgrade_istio == (low, high) == build_settings({}, {}, rootdir=tmp_path).upgrade_istio
    assert {low, high} <= istioctl_versions()


@pytest.mark.parametrize("value", ["1.31.1", "1.30.3:1.99.0", "1.31.1:1.30.3", "1.31.1:1.31.1", "canary:1.31.1"])
def test_a_canary_that_is_not_two_pinned_istio_versions_upwards_is_one_line_naming_the_pins(value: str) -> None:
    with pytest.raises(SettingsError) as raised:
        parse_upgrade_istio(value)
    message = str(raised.value)
    assert "\n" not in message and "--upgrade-istio FROM:TO" in message
    assert all(version in message for version in istioctl_versions())


def test_the_run_header_names_both_upgrades(tmp_path: Path) -> None:
    settings = build_settings({"upgrade_vault": "2.6.2:2.7.2", "upgrade_istio": "1.30.3:1.31.1"}, {},
                              rootdir=tmp_path)
    lines = PlatformSession(settings, lambda _: None).header_lines()
    assert any("OpenBao 2.6.2 -> 2.7.2" in line and "Istio 1.30.3 -> 1.31.1" in line for line in lines), lines


def _sample(t: float, ok: bool, end: float | None = None) -> Sample:
    return Sample(t, t + 0.05 if end is None else end, "vault", "ok" if ok else "http_5xx", "")


def test_the_outage_runs_from_the_last_success_before_to_the_first_answer_after() -> None:
    samples = [_sample(0.0, True), _sample(1.0, True), _sample(2.0, False), _sample(3.0, False),
               _sample(4.0, True, end=4.5), _sample(5.0, True)]
    assert outage(samples) == (1.0, 4.5)
    assert outage([_sample(0.0, True)]) is None
    with pytest.raises(ValueError, match="no success"):
        outage([_sample(0.0, True), _sample(1.0, False)])


def test_the_longest_gap_is_between_answers_of_successive_successes() -> None:
    samples = [_sample(0.0, True), _sample(1.0, False), _sample(2.0, True), _sample(2.5, True)]
    assert longest_gap(samples) == pytest.approx(2.0)
    assert math.isnan(longest_gap([_sample(0.0, True)]))


@given(st.lists(st.tuples(st.floats(0, 100), st.booleans()), min_size=1, max_size=40))
def test_the_outage_window_contains_every_failure(raw: list[tuple[float, bool]]) -> None:
    samples = [_sample(t, ok) for t, ok in sorted(raw)]
    try:
        window = outage(samples)
    except ValueError:
        return  # no success on one side: no recovery was seen, which the suite reports as such
    failed = [s for s in samples if not s.ok]
    if window is None:
        assert not failed
        return
    assert all(window[0] <= s.t and s.end <= window[1] for s in failed)


def test_the_front_listens_on_every_address_pods_and_the_harness_use(tmp_path: Path) -> None:
    config = front_config(8200, 9901, tmp_path, ("127.0.0.1", "10.250.3.1"))
    addresses = [listener["address"]["socket_address"] for listener in config["static_resources"]["listeners"]]
    assert addresses == [{"address": "127.0.0.1", "port_value": 8200}, {"address": "10.250.3.1", "port_value": 8200}]


def test_each_node_declares_the_audit_device_in_its_configuration(tmp_path: Path) -> None:
    node = RaftNode("node-0", 1, 2, 3)
    tls = KeyPair(tmp_path / "c", tmp_path / "k")
    with_audit = node_config(node, [], data_dir=tmp_path, tls=tls, ca=tmp_path / "ca", audit_log=tmp_path / "a.log")
    assert f'file_path = "{tmp_path / "a.log"}"' in with_audit and 'audit "file" "file"' in with_audit
    assert "audit" not in node_config(node, [], data_dir=tmp_path, tls=tls, ca=tmp_path / "ca")
