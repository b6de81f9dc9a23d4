"""The upgrade gate's pure parts: --attach and --gate-tests, what a TO profile changes, the upgrade's own
verdicts, and `python -m reports compare --upgrade` (its timeline and exit code)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from cluster.errors import PlatformUnavailable, SettingsError
from cluster.local.bringup import attach_live
from cluster.local.platform import LocalUpgrades
from cluster.local.raftcluster import RaftCluster
from cluster.platform import Capture, FlowSummary, VaultNodeStatus, VaultUpgradeStep
from cluster.profile import DEFAULT_PROFILE, PROFILES_DIR, UPGRADABLE_SETUP, load_profile, setup_changes
from cluster.runstate import RunState
from cluster.settings import GATE_TESTS, build_settings
from reports.__main__ import main as reports_main
from reports.run import ReportError
from reports.upgrade import load_upgrade
from scenarios.gate import settled_reads, upgrade_record, vault_upgrade_problems
from scenarios.monitor import Sample
from scenarios.upgrade import Watched

SERVER = "10.250.0.3:8080"


# -- --attach and --gate-tests --------------------------------------------------

def test_attach_is_a_local_run_id_and_nothing_to_keep(tmp_path: Path) -> None:
    settings = build_settings({"platform": "local", "attach": "tg-20261202-101500-ab12"}, {}, rootdir=tmp_path)
    assert settings.attach == "tg-20261202-101500-ab12"
    assert build_settings({"platform": "local"}, {"TRUSTGRID_ATTACH": "tg-x"}, rootdir=tmp_path).attach == "tg-x"
    for options, needle in (({"platform": "kind", "attach": "tg-x"}, "add --platform local"),
                            ({"platform": "local", "attach": "tg-x", "keep_cluster": True}, "drop --keep-cluster"),
                            ({"platform": "local", "attach": "../etc"}, "is not a run id")):
        with pytest.raises(SettingsError) as raised:
            build_settings(options, {}, rootdir=tmp_path)
        assert needle in str(raised.value) and "\n" not in str(raised.value)


def test_attaching_to_a_run_that_is_not_up_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRUSTGRID_CACHE", str(tmp_path))
    settings = build_settings({"platform": "local", "attach": "tg-gone"}, {}, rootdir=tmp_path)
    with pytest.raises(PlatformUnavailable, match="no local platform of that run is up; keep one with --keep-cluster"):
        attach_live(settings, "tg-gone")
    # Its owner exited (a pid that cannot be alive): refused, with the reaper named, before anything is read.
    run = tmp_path / "runs" / "tg-gone"
    run.mkdir(parents=True)
    (run / "connection.json").write_text("{}")
    (run / "owner").write_text(str(2**22 + 1))
    with pytest.raises(PlatformUnavailable, match=r"its owner process has exited.*python -m cluster reap"):
        attach_live(settings, "tg-gone")
    assert sorted(os.listdir(run)) == ["connection.json", "owner"]  # nothing of the dead run was touched


def test_the_gate_runs_conformance_and_chaos_unless_told_otherwise(tmp_path: Path) -> None:
    assert build_settings({}, {}, rootdir=tmp_path).gate_tests == GATE_TESTS
    assert any(a.startswith("suites/conformance") for a in GATE_TESTS)
    assert any(a.startswith("suites/chaos") for a in GATE_TESTS)
    chosen = build_settings({"gate_tests": "suites/conformance -k 'not slow'"}, {}, rootdir=tmp_path)
    assert chosen.gate_tests == ("suites/conformance", "-k", "not slow")
    for value, needle in (("suites/conformance -k 'open", "cannot be split"), ("-k x", "selects nothing"),
                          ("suites/", "the gate would run itself"), ("suites/upgrade/test_gate.py", "run itself"),
                          ("suites/conformance suites", "run itself")):
        with pytest.raises(SettingsError, match=needle):
            build_settings({"gate_tests": value}, {}, rootdir=tmp_path)


# -- the TO profile ----------------------------------------------------------------

def test_a_to_profile_changes_exactly_the_keys_it_overrides() -> None:
    default = load_profile(DEFAULT_PROFILE).setup
    broken = load_profile(PROFILES_DIR / "mutants" / "short-ca-token.yaml").setup
    assert setup_changes(default, default) == ()
    assert setup_changes(default, broken) == UPGRADABLE_SETUP
    permissive = load_profile(PROFILES_DIR / "mutants" / "permissive-mesh.yaml").setup
    assert setup_changes(default, permissive) and not set(setup_changes(default, permissive)) & set(UPGRADABLE_SETUP)


# -- the upgrade's own verdicts -------------------------------------------------------

def _sample(t: float, probe: str, outcome: str = "ok") -> Sample:
    return Sample(t, t + 0.1, probe, outcome, "")


def _watched(vault_outcomes: dict[float, str], *, mesh_failed_at: float | None = None,
             plaintext: bool = False, started: float = 2.0) -> Watched:
    times = [t / 2 for t in range(0, 21)]  # 0 .. 10 s, every 0.5 s; the upgrade runs from 2 to 8
    samples = [_sample(t, "vault", vault_outcomes.get(t, "ok")) for t in times]
    samples += [_sample(t, "mesh", "timeout" if t == mesh_failed_at else "ok") for t in times]
    wire = Capture()
    flows = [FlowSummary("10.250.0.2:40000", SERVER, True, 9000, client_records=len(times))]
    if plaintext:
        flows.append(FlowSummary("10.250.0.2:40001", SERVER, False, 120))
    wire.fill(flows, b"")
    step = VaultUpgradeStep("node-0", "active", 3.0, 3.1, 5.0, 5.2, "2.7.2")
    return Watched(tuple(samples), (step,), started, 8.0, wire, SERVER)


ONE_NODE = (VaultNodeStatus("node-0", "2.7.2", False, True),)


def test_a_single_nodes_short_outage_that_fails_closed_is_no_problem() -> None:
    # The agent holding no token (its renewal failed in the outage) fails closed too; a 403 would not.
    watched = _watched({3.0: "refused", 3.5: "refused", 4.0: "http_5xx", 4.5: "no_token"})
    assert vault_upgrade_problems(watched, ONE_NODE, "2.7.2", outage_bound_s=30) == []


def test_each_broken_upgrade_verdict_is_named() -> None:
    outage = {3.0: "refused", 3.5: "refused", 4.0: "http_403"}
    problems = vault_upgrade_problems(_watched(outage, mesh_failed_at=4.0, plaintext=True),
                                      (VaultNodeStatus("node-0", "2.6.2", True, False),), "2.7.2", outage_bound_s=0.5)
    text = "\n".join(problems)
    for needle in ("1 mesh call(s) failed", "above the recovery bound 0.5 s", "failed as http_403",
                   "plaintext flows", "not on 2.7.2 and unsealed: node-0 2.6.2 sealed"):
        assert needle in text, problems
    three = (*ONE_NODE, VaultNodeStatus("node-1", "2.7.2", False, False))
    assert vault_upgrade_problems(_watched({3.0: "refused"}), three, "2.7.2", outage_bound_s=30) == [
        "1 Vault read(s) failed during an HA upgrade (first: refused)"]
    assert "never recovered" in " ".join(vault_upgrade_problems(
        _watched({t / 2: "refused" for t in range(6, 21)}), ONE_NODE, "2.7.2", outage_bound_s=30))


def test_a_failure_while_the_monitor_warmed_up_is_not_the_upgrades() -> None:
    """watch_upgrade starts the upgrade once five reads in a row succeeded: a failure before those is not judged."""
    warm = _watched({0.0: "refused", 0.5: "refused", 4.5: "refused"}, started=4.0)
    assert [s.t for s in settled_reads(warm)][:2] == [1.5, 2.0]  # the five before the upgrade's start at 4.0
    # Judged from 1.5 on, the outage is the one failure at 4.5 (4.0 .. 5.1); from 0.0 on it would have had no
    # success before its first failure: "never recovered".
    assert vault_upgrade_problems(warm, ONE_NODE, "2.7.2", outage_bound_s=30) == []
    assert vault_upgrade_problems(warm, ONE_NODE, "2.7.2", outage_bound_s=1.0) == [
        "Vault reads failed for 1.10 s, above the recovery bound 1 s"]


def test_the_record_puts_the_monitors_clock_on_the_epoch() -> None:
    record = upgrade_record("OpenBao 2.6.2 -> 2.7.2", _watched({3.0: "refused"}), epoch_offset=1000.0,
                            problems=[], applied=("mesh.ca_token_ttl",), applied_at=(8.0, 8.1))
    assert (record["started"], record["finished"]) == (1002.0, 1008.0)
    assert record["phases"] == [{"name": "node-0 (active) out of the front", "start": 1003.0, "end": 1005.2},
                                {"name": "TO profile: mesh.ca_token_ttl", "start": 1008.0, "end": 1008.1}]
    assert record["figures"]["vault"]["failed"] == 1 and record["figures"]["mesh"]["failed"] == 0


# -- reports compare --upgrade ----------------------------------------------------------

def _run(folder: Path, outcome: str, started: float) -> Path:
    folder.mkdir()
    body = "" if outcome == "passed" else '<failure message="fix: x">x</failure>'
    (folder / "junit.xml").write_text(
        '<testsuites><testsuite name="pytest">'
        f'<testcase classname="suites.conformance.test_live_policy" name="test_x" time="1">{body}</testcase>'
        "</testsuite></testsuites>")
    (folder / "run.json").write_text(json.dumps({"run_id": folder.name, "started": started,
                                                 "finished": started + 60}))
    return folder


def _record(path: Path, problems: list[str]) -> Path:
    path.write_text(json.dumps({"upgrade": "OpenBao 2.6.2 -> 2.7.2", "started": 1070.0, "finished": 1073.0,
                                "phases": [{"name": "node-0 (active) out of the front", "start": 1071.0,
                                            "end": 1072.5}],
                                "figures": {"vault_outage_s": 1.5}, "problems": problems}))
    return path


def test_the_gate_shows_the_upgrade_between_the_runs_and_passes_when_all_held(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = _run(tmp_path / "tg-a", "passed", 1000.0), _run(tmp_path / "tg-b", "passed", 1080.0)
    assert reports_main(["compare", str(a), str(b), "--upgrade", str(_record(tmp_path / "u.json", []))]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    order = [next(i for i, line in enumerate(lines) if needle in line)
             for needle in ("A tg-a", "upgrade OpenBao", "node-0 (active)", "B tg-b")]
    assert order == sorted(order), out
    assert "  0.0 ..     60.0" in out and "71.0 ..     72.5  (1.5 s)" in out
    assert "upgrade verdict: passed" in out and out.rstrip().endswith("gate: passed")


def test_the_gate_fails_on_a_failed_upgrade_even_when_the_runs_agree(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = _run(tmp_path / "tg-a", "passed", 1000.0), _run(tmp_path / "tg-b", "passed", 1080.0)
    record = _record(tmp_path / "u.json", ["2 mesh call(s) failed during the upgrade (first: timeout)"])
    assert reports_main(["compare", str(a), str(b), "--upgrade", str(record)]) == 1
    out = capsys.readouterr().out
    assert "upgrade verdict: failed: 2 mesh call(s) failed" in out and "gate: FAILED" in out
    # And on a verdict that changed, with a clean upgrade.
    worse = _run(tmp_path / "tg-c", "failed", 1080.0)
    assert reports_main(["compare", str(a), str(worse), "--upgrade", str(_record(tmp_path / "v.json", []))]) == 1


def test_a_missing_or_corrupt_upgrade_record_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _run(tmp_path / "tg-a", "passed", 1000.0)
    assert reports_main(["compare", str(a), str(a), "--upgrade", str(tmp_path / "none.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("reports: no upgrade record at") and "\n" not in err
    (tmp_path / "bad.json").write_text('{"upgrade": "x"}')
    with pytest.raises(ReportError, match="is not an upgrade record"):
        load_upgrade(tmp_path / "bad.json")


def test_a_to_profile_that_changes_what_a_live_platform_does_not_take_is_refused_in_one_line(
        tmp_path: Path) -> None:
    settings = build_settings({"platform": "local"}, {}, rootdir=tmp_path)
    platform = SimpleNamespace(settings=settings)  # refused before anything of the platform is used
    upgrades = LocalUpgrades(platform, raft=None)  # type: ignore[arg-type]
    permissive = load_profile(PROFILES_DIR / "mutants" / "permissive-mesh.yaml").setup
    with pytest.raises(SettingsError) as raised:
        upgrades.apply_setup(permissive)
    message = str(raised.value)
    assert "changes setup.mesh.mtls.default" in message and "setup.mesh.ca_token_ttl" in message
    assert "\n" not in message


def test_a_run_without_a_readable_raft_layout_is_one_line(tmp_path: Path) -> None:
    state = RunState("tg-old", tmp_path)
    with pytest.raises(PlatformUnavailable, match="run tg-old saved no readable raft layout") as raised:
        RaftCluster.attach(state)
    (tmp_path / "vault-raft").mkdir()
    (tmp_path / "vault-raft" / "layout.json").write_text('{"nodes": [')  # half-written
    with pytest.raises(PlatformUnavailable, match="JSONDecodeError"):
        RaftCluster.attach(state)
    assert "\n" not in str(raised.value)
