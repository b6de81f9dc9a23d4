"""Measure a rolling upgrade of a real OpenBao raft cluster under reads, and a single node's upgrade.

    .venv/bin/python bench/upgrade.py [--nodes 3] [--hz 10]

The same procedure tests/test_raft_upgrade.py judges (cluster/local/raftcluster.py, versions.toml
[upgrade.openbao] FROM and TO), measured: reads through the cluster's one address at ``--hz``, each
on a new connection, for the whole upgrade. Prints, for the cluster and for one node: failed reads,
the longest gap between two successful reads, and each node's time away (out of the front until back);
for the single node, the outage: from the last successful read before it to the first one after.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from cluster.local.istiobuild import find_envoy
from cluster.local.pki import server_tls
from cluster.local.raftcluster import RaftCluster
from cluster.local.vaultrelease import openbao_release
from cluster.runstate import RunState, cache_dir, new_run_id
from cluster.versions import upgrade_pair
from scenarios.upgrade import longest_gap, outage
from tests.test_raft_upgrade import upgrade_under_reads


def measure(size: int, hz: float) -> None:
    low, high = upgrade_pair()
    state = RunState.create(new_run_id())
    try:
        ca, tls = server_tls(state, "vault-raft")
        cluster = RaftCluster(state, find_envoy().path, tls, ca, size=size)
        with cluster.running(openbao_release(low, cache_dir())):
            run = upgrade_under_reads(cluster, hz)
            started, done, steps = run.started, run.done, run.steps
            samples = [s for s in run.samples if started <= s.t]
            failed = [s for s in samples if not s.ok]
            print(f"{size} node(s), OpenBao {low} -> {high}: upgrade took {done - started:.1f} s; "
                  f"{len(samples)} reads, {len(failed)} failed; longest gap between successful reads "
                  f"{longest_gap(samples):.2f} s")
            for step in steps:
                away = step.back_in_front_at - step.left_front_at
                print(f"  {step.node_id} ({step.role}): away {away:.1f} s, "
                      f"restart to unsealed {step.unsealed_at - step.stopped_at:.1f} s, now {step.version}")
            for s in failed[:8]:
                print(f"  failed at {s.t:.2f}-{s.end:.2f}: {s.outcome} {s.detail[:120]}")
            window = outage(run.samples)  # bracketed by the settled reads before the upgrade and after it
            if window is not None:
                print(f"  outage: {window[1] - window[0]:.2f} s, from the start of the last read that succeeded "
                      "before it to the answer of the first that succeeded after it (as suites/upgrade judges it)")
    finally:
        state.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--hz", type=float, default=10.0)
    args = parser.parse_args()
    measure(args.nodes, args.hz)
    measure(1, args.hz)


if __name__ == "__main__":
    main()
