"""The pre-upgrade gate's upgrade: the Vault upgrade's own verdicts, and the record the gate compares beside
the runs before and after it (reports/upgrade.py reads it back).

The verdicts are those of suites/upgrade/test_vault_upgrade.py, as findings instead of assertions, so that a
failed upgrade turns the gate red with its reason: with several nodes no read and no call may fail (OpenBao
website/content/docs/upgrading/ha-upgrade.mdx); with one, reads may fail closed for at most the policy's
recovery bound; in both, mesh calls never fail, mTLS holds on the wire, and every node reports TO, unsealed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cluster.platform import VaultNodeStatus
from scenarios.monitor import Sample
from scenarios.upgrade import SETTLED, Watched, longest_gap, mtls_held, outage

# How a read fails while the only node is away (scenarios/monitor.py vault_probe's outcomes): refused, reset,
# timed out or 503, or the app's agent holds no token (its renewal failed during the outage: it dropped the
# token and logs in again, cluster/local/pod/app.go loop); never a 403, which would be Vault denying.
OUTAGE_OUTCOMES = frozenset({"http_5xx", "refused", "reset", "timeout", "no_token", "other"})


def settled_reads(watched: Watched) -> list[Sample]:
    """The Vault reads from the settled stretch before the upgrade on (watch_upgrade waited for ``SETTLED``
    successes in a row): a failure while the Monitor warmed up, before that, is not the upgrade's."""
    reads = watched.of("vault")
    before = [s for s in reads if s.t < watched.started]
    since = before[-SETTLED].t if len(before) >= SETTLED else float("-inf")
    return [s for s in reads if s.t >= since]


def vault_upgrade_problems(watched: Watched, nodes: Sequence[VaultNodeStatus], target: str, *,
                           outage_bound_s: float) -> list[str]:
    """Why the upgrade to ``target`` failed its own verdicts ([] when it held). ``nodes``: every node's status
    afterwards; ``outage_bound_s``: how long reads may fail closed on a single node (seconds)."""
    problems = []
    if failed := watched.failed("mesh"):
        problems.append(f"{len(failed)} mesh call(s) failed during the upgrade (first: {failed[0].outcome})")
    if len(nodes) > 1 and (failed := watched.failed("vault")):
        problems.append(f"{len(failed)} Vault read(s) failed during an HA upgrade (first: {failed[0].outcome})")
    if len(nodes) == 1:
        try:
            window = outage(settled_reads(watched))
        except ValueError:
            problems.append("Vault reads failed and never recovered")
        else:
            if window is not None and window[1] - window[0] > outage_bound_s:
                problems.append(f"Vault reads failed for {window[1] - window[0]:.2f} s, above the recovery bound "
                                f"{outage_bound_s:g} s")
        if odd := sorted({s.outcome for s in watched.failed("vault")} - OUTAGE_OUTCOMES):
            problems.append(f"Vault reads failed as {', '.join(odd)} during the restart: an outage refuses, "
                            "times out or leaves the agent without a token; it does not deny")
    problems += mtls_held(watched)
    if off := [n for n in nodes if (n.version, n.sealed) != (target, False)]:
        problems.append("node(s) not on " + target + " and unsealed: " +
                        ", ".join(f"{n.node_id} {n.version}{' sealed' if n.sealed else ''}" for n in off))
    return problems


def upgrade_figures(watched: Watched) -> dict[str, Any]:
    """Per probe: samples, failed, longest gap between successes (s); the single node's outage (s), if any."""
    figures: dict[str, Any] = {"upgrade_s": round(watched.done - watched.started, 2)}
    for probe in ("mesh", "vault"):
        during = watched.during(probe)
        figures[probe] = {"samples": len(during), "failed": len(watched.failed(probe)),
                          "longest_gap_s": round(longest_gap(during), 3)}
    try:
        window = outage(settled_reads(watched))
    except ValueError:
        window = None
    if window is not None:
        figures["vault_outage_s"] = round(window[1] - window[0], 2)
    return figures


def upgrade_record(title: str, watched: Watched, *, epoch_offset: float, problems: Sequence[str],
                   applied: tuple[str, ...] = (), applied_at: tuple[float, float] | None = None) -> dict[str, Any]:
    """The upgrade as reports/upgrade.py reads it. ``epoch_offset`` turns the monitor's clock into seconds since
    the epoch (time.time() - clock() taken once); ``applied``/``applied_at``: the TO profile's changed keys and
    when they were written (monitor clock)."""
    def at(t: float) -> float:
        return round(epoch_offset + t, 3)

    phases = [{"name": f"{step.node_id} ({step.role}) out of the front", "start": at(step.left_front_at),
               "end": at(step.back_in_front_at)} for step in watched.steps]
    if applied_at is not None:
        phases.append({"name": "TO profile: " + (", ".join(applied) or "no change"), "start": at(applied_at[0]),
                       "end": at(applied_at[1])})
    return {"upgrade": title, "started": at(watched.started), "finished": at(watched.done), "phases": phases,
            "figures": upgrade_figures(watched), "problems": list(problems)}
