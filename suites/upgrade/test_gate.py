"""The pre-upgrade gate: the same tests before and after an upgrade, judged as a pair.

On a platform of its own, started on --upgrade-vault's FROM, the gate runs --gate-tests (conformance and
chaos scenarios) as a child pytest attached to it (--attach): run A. It upgrades Vault to TO under the
Monitor and applies the TO profile, writing upgrade.json (scenarios/gate.py). It runs the same tests
again: run B. ``python -m reports compare A B --upgrade upgrade.json`` is the verdict: exit 1 on a changed
verdict, a timing regression or a failed upgrade.

The gate must be able to fail. On the same platform, a second upgrade step applies a broken TO profile,
the mutant that shortens the mesh CA's Vault token below the certificates' renewal window
(cluster/profiles/mutants/short-ca-token.yaml); the tests run again, and the gate must turn red,
naming the conformance test that caught it.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from cluster.interrupts import terminate_with_parent
from cluster.platform import VaultUpgradeStep
from cluster.profile import PROFILES_DIR, Setup, load_profile
from cluster.runstate import runs_root
from cluster.secrets import find_secrets, redact
from cluster.settings import Settings
from reports import attach
from scenarios.gate import upgrade_record, vault_upgrade_problems
from scenarios.upgrade import watch_upgrade
from suites.upgrade.conftest import UpgradeStage, keep_figures, upgrade_refusal

pytestmark = pytest.mark.upgrade
log = logging.getLogger("trustgrid.upgrade")
Stage = Callable[[int], AbstractContextManager[UpgradeStage]]

ROOT = Path(__file__).resolve().parents[2]
BROKEN_TO = PROFILES_DIR / "mutants" / "short-ca-token.yaml"
CAUGHT_BY = "test_the_mesh_ca_token_outlives_the_renewal_window"  # the mutant's must_fail
CHILD_TIMEOUT_S = 1200  # a whole conformance and chaos run, on a loaded machine
# A scenario runs once per run, so its times are single samples, measured to within its clients' retry
# intervals: the app's Vault agent retries a failed login each second (cluster/local/pod/app.go loop), and
# pilot-agent backs off between certificate requests for seconds. Seen here: vault-seal's time to recover
# 2.62 s on FROM and 5.16 s on TO with nothing changed. A slow-down is a regression past 25 % and 5 s.
MIN_DELTA_S = 5.0


def _tests(stage: UpgradeStage, profile: Path, into: Path, outputs: list[str]) -> Path:
    """Run --gate-tests attached to the stage's platform with ``profile``; its report directory. Its whole
    output goes to ``outputs``, for the secret scan."""
    into.mkdir(parents=True)
    command = [sys.executable, "-m", "pytest", *stage.settings.gate_tests, "--platform", "local",
               "--attach", stage.platform.run_id, "--profile", str(profile), "--report-dir", str(into),
               "-p", "no:cacheprovider", "-q"]
    try:
        # It gets SIGTERM (a KeyboardInterrupt there) if this process dies: it never outlives the platform.
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S,
                                check=False, preexec_fn=terminate_with_parent)
    except subprocess.TimeoutExpired as err:
        tail = redact(str(err.stdout or "")[-3000:])
        outputs.append(str(err.stdout or ""))
        pytest.fail(f"the gate's tests ran past {CHILD_TIMEOUT_S} s and were stopped; their output ended:\n{tail}",
                    pytrace=False)
    outputs.append(result.stdout + result.stderr)
    said = redact(result.stdout[-3000:] + result.stderr[-2000:])
    runs = [path for path in into.iterdir() if path.is_dir() and not path.is_symlink()]  # not "latest"
    assert len(runs) == 1 and (runs[0] / "junit.xml").exists(), f"the gate's tests left no report:\n{said}"
    # 0: all passed; 1: some failed, which is what the comparison judges. Anything else is not a run.
    assert result.returncode in (0, 1), f"the gate's tests did not run (exit {result.returncode}):\n{said}"
    log.info("gate tests with %s: exit %s, %s", profile.name, result.returncode, said.strip().splitlines()[-1:])
    return runs[0]


def _upgrade(stage: UpgradeStage, target: str | None, to_setup: Setup, record: Path) -> dict[str, Any]:
    """Under the Monitor: Vault to ``target`` (None: no binary change), then the TO profile. Writes ``record``."""
    upgrades = stage.platform.upgrades()
    offset, applied_at = 0.0, (0.0, 0.0)
    keys: tuple[str, ...] = ()

    def upgrade(clock: Callable[[], float]) -> tuple[VaultUpgradeStep, ...]:
        nonlocal offset, keys, applied_at
        offset = time.time() - clock()  # the monitor's clock to the epoch, for the runs' run.json times
        steps = upgrades.upgrade_vault(target, clock=clock, progress=log.info) if target else ()
        begun = clock()
        keys = upgrades.apply_setup(to_setup)
        applied_at = (begun, clock())
        return steps

    watched = watch_upgrade(stage.platform, stage.client, stage.server, upgrade)
    low, high = stage.settings.upgrade_vault
    problems = vault_upgrade_problems(watched, upgrades.vault_nodes(), high,
                                      outage_bound_s=stage.settings.profile.policy.recovery_bound.total_seconds())
    title = f"OpenBao {low} -> {high}" if target else f"OpenBao {high}, TO profile only"
    data = upgrade_record(title, watched, epoch_offset=offset, problems=problems, applied=keys,
                          applied_at=applied_at)
    record.write_text(json.dumps(data, indent=1))
    return data


def _gate(before: Path, after: Path, record: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reports", "compare", str(before), str(after), "--upgrade",
                           str(record), "--min-delta", str(MIN_DELTA_S)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def _kept_secrets(run_id: str) -> list[str]:
    """The root token and unseal keys the stage's platform kept at init (vault-init.json, or
    vault-raft-init.json on raft, in its run's state directory)."""
    kept = [json.loads(path.read_text()) for path in (runs_root() / run_id).glob("vault*init.json")]
    return [value for data in kept for value in (data["root_token"], *data["keys_base64"])]


def _secrets_in(outputs: list[str], folder: Path, exact: list[str]) -> list[str]:
    """Where a secret shows: in the runs' outputs or any file of their reports (the patterns of
    cluster/secrets.py, and the stage's own root token and unseal keys, as values)."""
    texts = [(f"output {n}", text) for n, text in enumerate(outputs)]
    texts += [(str(p), p.read_text(errors="replace")) for p in folder.rglob("*") if p.is_file()]
    return [f"{name}: {what}" for name, text in texts
            for what in find_secrets(text) + ["a root token or unseal key" for value in exact if value in text]]


def test_the_gate_passes_the_plain_upgrade_and_fails_a_broken_one(upgrade_stage: Stage, settings: Settings,
                                                                   request: pytest.FixtureRequest) -> None:
    if reason := upgrade_refusal(settings, attach=True):
        pytest.skip(reason)
    folder = settings.run_report_dir / "gate" / request.node.name
    outputs: list[str] = []
    with upgrade_stage(1) as stage:
        exact = _kept_secrets(stage.platform.run_id)
        low, high = stage.settings.upgrade_vault
        setup = stage.settings.profile.setup  # the run's profile, as the stage installed it
        short = load_profile(BROKEN_TO).setup.mesh  # the mutant's mesh CA token, on the run's own setup
        broken = replace(setup, mesh=replace(setup.mesh, ca_token_ttl=short.ca_token_ttl,
                                             ca_token_max_ttl=short.ca_token_max_ttl))
        assert {node.version for node in stage.platform.upgrades().vault_nodes()} == {low}
        before = _tests(stage, settings.profile.path, folder / "before", outputs)
        plain = _upgrade(stage, high, setup, folder / "upgrade.json")
        after = _tests(stage, settings.profile.path, folder / "after", outputs)
        green = _gate(before, after, folder / "upgrade.json")
        # The broken-on-purpose step, on the upgraded platform: only the TO profile changes.
        broke = _upgrade(stage, None, broken, folder / "upgrade-broken.json")
        after_broken = _tests(stage, BROKEN_TO, folder / "after-broken", outputs)
        red = _gate(before, after_broken, folder / "upgrade-broken.json")
    figures: dict[str, object] = {"gate": {
        "plain": {"exit": green.returncode, "upgrade": plain["figures"], "phases": plain["phases"]},
                        "broken": {"exit": red.returncode, "applied": broke["phases"][-1]["name"]}}}
    attach.figures("upgrade gate", figures)
    keep_figures(settings, figures)
    log.info("gate, plain upgrade:\n%s", green.stdout)
    log.info("gate, broken upgrade:\n%s", red.stdout)
    # The plain upgrade: its own verdicts held, and nothing that passed before fails after it.
    assert plain["problems"] == [], plain["problems"]
    assert green.returncode == 0, green.stdout + green.stderr
    assert "upgrade verdict: passed" in green.stdout and "gate: passed" in green.stdout
    # The broken one: the conformance test that guards the renewal window caught it, and the gate is red.
    assert broke["phases"][-1]["name"] == "TO profile: mesh.ca_token_ttl, mesh.ca_token_max_ttl"
    assert red.returncode == 1, red.stdout + red.stderr
    regression = [line for line in red.stdout.splitlines() if CAUGHT_BY in line]
    assert regression and "regression" in regression[0], red.stdout
    assert "gate: FAILED" in red.stdout
    # No token, key or JWT in anything the three runs and the two comparisons printed or reported.
    assert len(exact) >= 2  # the scan really knows the stage's root token and unseal keys
    hits = _secrets_in([*outputs, green.stdout + green.stderr, red.stdout + red.stderr], folder, exact)
    assert hits == [], "\n".join(hits[:20])
