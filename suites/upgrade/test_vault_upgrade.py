"""Upgrade the platform's own Vault (OpenBao FROM -> TO, --upgrade-vault) under the Monitor.

The workloads keep logging in and reading through the one address they use, and the mesh keeps
calling, while every node is upgraded the documented way (OpenBao website/content/docs/upgrading/
ha-upgrade.mdx: standbys first, then the active node, whose SIGTERM steps it down). The verdicts
come from the probes and the wire, never from the harness's own timing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager

import pytest

from cluster.settings import Settings
from reports import attach
from scenarios.gate import OUTAGE_OUTCOMES, upgrade_figures
from scenarios.upgrade import Watched, mtls_held, outage, watch_upgrade
from suites.upgrade.conftest import UpgradeStage, keep_figures

pytestmark = pytest.mark.upgrade
log = logging.getLogger("trustgrid.upgrade")
Stage = Callable[[int], AbstractContextManager[UpgradeStage]]


def _figures(watched: Watched) -> dict[str, object]:
    figures = upgrade_figures(watched)
    figures["steps"] = [{"node": s.node_id, "role": s.role, "away_s": round(s.back_in_front_at - s.left_front_at, 2),
                         "version": s.version, "lingering_connections": s.lingering} for s in watched.steps]
    return figures


def _upgrade(stage: UpgradeStage) -> Watched:
    target = stage.settings.upgrade_vault[1]
    upgrades = stage.platform.upgrades()
    return watch_upgrade(stage.platform, stage.client, stage.server,
                         lambda clock: upgrades.upgrade_vault(target, clock=clock, progress=log.info))


def test_a_rolling_upgrade_of_three_vault_nodes_fails_no_read_and_no_call(upgrade_stage: Stage,
                                                                          settings: Settings) -> None:
    with upgrade_stage(3) as stage:
        low, high = stage.settings.upgrade_vault
        upgrades = stage.platform.upgrades()
        assert {node.version for node in upgrades.vault_nodes()} == {low}  # it really started on FROM
        watched = _upgrade(stage)
        figures = _figures(watched)
        log.info("three-node upgrade %s -> %s: %s", low, high, figures)
        attach.figures("vault upgrade", figures)
        keep_figures(settings, figures)
        assert [step.role for step in watched.steps] == ["standby", "standby", "active"]  # the guide's order
        assert watched.failed("vault") == [], watched.failed("vault")[:5]
        assert watched.failed("mesh") == [], watched.failed("mesh")[:5]
        assert mtls_held(watched) == []
        # Every node says of itself that it runs TO, unsealed, and one of them leads.
        nodes = upgrades.vault_nodes()
        assert {(node.version, node.sealed) for node in nodes} == {(high, False)}, nodes
        assert sum(node.active for node in nodes) == 1, nodes
        # Reads were served during each node's absence: the probes really ran across every step.
        for step in watched.steps:
            assert [s for s in watched.during("vault") if step.left_front_at <= s.t and s.end <= step.back_in_front_at
                    and s.ok], step


def test_a_single_vault_nodes_upgrade_fails_reads_closed_and_keeps_established_mtls(upgrade_stage: Stage,
                                                                                   settings: Settings) -> None:
    with upgrade_stage(1) as stage:
        low, high = stage.settings.upgrade_vault
        watched = _upgrade(stage)
        figures = _figures(watched)
        [step] = watched.steps
        # The fault took effect: reads that ran wholly while the only node was away all failed, closed.
        away = [s for s in watched.during("vault") if step.left_front_at <= s.t and s.end <= step.unsealed_at]
        assert away, f"no read ran while the node was away ({step})"
        assert not [s for s in away if s.ok], "a read succeeded while the only node was away"
        assert {s.outcome for s in away} <= OUTAGE_OUTCOMES, away[:5]
        # Its widest extent, bracketed by the settled reads before the upgrade and after it.
        window = outage(watched.of("vault"))
        assert window is not None
        figures["vault_outage_s"] = round(window[1] - window[0], 2)
        log.info("single-node upgrade %s -> %s: %s", low, high, figures)
        attach.figures("vault upgrade", figures)
        keep_figures(settings, figures)
        bound = stage.settings.profile.policy.recovery_bound.total_seconds()
        assert window[1] - window[0] <= bound, (window, bound)
        # Established mTLS kept working: the mesh's certificates do not wait on Vault.
        assert watched.failed("mesh") == [], watched.failed("mesh")[:5]
        assert mtls_held(watched) == []
        [node] = stage.platform.upgrades().vault_nodes()
        assert (node.version, node.sealed, node.active) == (high, False, True)
