"""Istio's canary upgrade under the Monitor: a second istiod revision beside the first, namespaces moved
one by one with their pods restarted, the mixed mesh judged on the wire, then the old revision removed
(or, rolled back, the new one). istio.io "Canary upgrades"; the steps are the platform's (Canary).

On the local platform both revisions are the one istiod build from the pinned istio.io/istio module:
the module proxy refuses every release-1.30 version, so FROM and TO differ in revision, not in version.
What is proven is the canary's mechanics with the real istiod, injector and Envoy: which control plane
injects and serves each proxy, and that calls, mTLS and authorization hold while they change hands.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager

import pytest

from cluster.istio import CANARY_REVISION
from cluster.settings import Settings
from reports import attach
from scenarios.canary import DEFAULT, CanaryRun, mixed_wire_problems, run_canary
from scenarios.upgrade import longest_gap
from suites.upgrade.conftest import CanaryStage, keep_figures

pytestmark = pytest.mark.upgrade
log = logging.getLogger("trustgrid.upgrade")
Stage = Callable[[], AbstractContextManager[CanaryStage]]
REVISION = CANARY_REVISION  # istio.io's canary guide names its revision so


def _figures(run: CanaryRun) -> dict[str, object]:
    mesh = run.of("mesh")
    return {"phases": {p.name: [round(p.started, 2), round(p.done, 2)] for p in run.phases},
            "mesh": {"samples": len(mesh), "failed": len(run.failed("mesh")),
                     "longest_gap_s": round(longest_gap(mesh), 3)},
            "vault": {"samples": len(run.of("vault")), "failed": len(run.failed("vault"))},
            "failed_at": [[round(s.t, 2), s.outcome] for s in run.failed("mesh") + run.failed("vault")][:10],
            "mixed_calls": run.mixed_calls, "foreign_status": run.foreign.status, "serving": run.serving,
            "revisions_after": list(run.revisions_after)}


def _run(stage: CanaryStage, settings: Settings, *, rollback: bool) -> CanaryRun:
    run = run_canary(stage.platform, stage.client, stage.server, stage.foreign, revision=REVISION,
                     rollback=rollback, progress=log.info)
    figures = _figures(run)
    log.info("istio canary (%s): %s", "rollback" if rollback else "forward", figures)
    attach.figures("istio canary rollback" if rollback else "istio canary", figures)
    keep_figures(settings, {"canary": "rollback" if rollback else "forward", **figures})
    return run


def _mixed_phase_held(run: CanaryRun) -> None:
    # The mixed mesh really was mixed: the server's proxy injected by and connected to the canary, the client's
    # still to the default revision.
    assert (run.serving["mixed server"], run.serving["mixed client"]) == (REVISION, DEFAULT), run.serving
    assert run.serving["mixed server injected by"] == REVISION, run.serving
    assert mixed_wire_problems(run) == []
    # Authorization still enforced across the two control planes: another namespace's principal is refused.
    assert (run.foreign.status, run.foreign.error) == (403, "http_403"), run.foreign
    assert run.failed("mesh") == [], run.failed("mesh")[:5]


def test_a_canary_revision_takes_the_mesh_over_namespace_by_namespace_with_no_failed_call(
        canary_stage: Stage, settings: Settings) -> None:
    with canary_stage() as stage:
        assert stage.platform.canary().revisions() == (DEFAULT,)
        run = _run(stage, settings, rollback=False)
        _mixed_phase_held(run)
        assert run.serving["moved client"] == run.serving["moved foreign"] == REVISION
        assert (run.serving["after server"], run.serving["after client"]) == (REVISION, REVISION)
        assert run.revisions_after == (REVISION,)  # the old control plane is gone, and the mesh went on
        assert run.failed("vault") == [], run.failed("vault")[:5]


def test_a_canary_rolled_back_returns_every_pod_to_the_old_revision_with_no_failed_call(
        canary_stage: Stage, settings: Settings) -> None:
    with canary_stage() as stage:
        run = _run(stage, settings, rollback=True)
        _mixed_phase_held(run)
        assert run.serving["moved client"] == REVISION
        assert (run.serving["back server"], run.serving["back client"]) == (DEFAULT, DEFAULT)
        assert (run.serving["after server"], run.serving["after client"]) == (DEFAULT, DEFAULT)
        assert run.revisions_after == (DEFAULT,)
        assert run.failed("vault") == [], run.failed("vault")[:5]
