"""A rolling upgrade of a real OpenBao raft cluster, FROM to TO (versions.toml [upgrade.openbao]), under reads.

Three real nodes of the pinned previous release, from its PyPI wheel, behind one address (a real
Envoy, health checked as a Service's readiness probes would be), upgraded the way OpenBao's HA
upgrade guide prescribes (cluster/local/raftcluster.py). Reads go on the whole time, through that
address, each on a new connection. The verdict is what the servers did: no read failed, and each
node reports TO of itself afterwards. The single node is the other case: its outage is real, reads
fail closed during it (no answer is served by a stopped or sealed Vault) and come back.
bench/upgrade.py prints the figures (the longest gap between successful reads, the outage).
"""

from __future__ import annotations

import contextlib
import secrets
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from cluster.local.istiobuild import find_envoy
from cluster.local.pki import server_tls
from cluster.local.raftcluster import RaftCluster
from cluster.local.vaultrelease import openbao_release
from cluster.platform import VaultUpgradeStep as UpgradeStep
from cluster.profile import DEFAULT_PROFILE, load_profile
from cluster.runstate import RunState, cache_dir, new_run_id
from cluster.versions import upgrade_pair
from cluster.wait import wait_until
from scenarios.monitor import OK, Monitor, Probe, Sample
from tests.lifecycle import Child, new_since, snapshot

pytestmark = pytest.mark.platform
FROM, TO = upgrade_pair()


@pytest.fixture
def state() -> Iterator[RunState]:
    run = RunState.create(new_run_id())
    try:
        yield run
    finally:
        run.remove()


def read_probe(cluster: RaftCluster, token: str, value: str) -> Probe:
    def probe() -> tuple[str, str]:
        with requests.Session() as http:  # a new connection each time, as a fresh client would open
            answer = http.get(f"{cluster.address}/v1/kv/data/probe", headers={"X-Vault-Token": token},
                              verify=str(cluster.ca), timeout=2)
        if answer.status_code == 200 and answer.json()["data"]["data"].get("value") == value:
            return OK, ""
        return f"http_{answer.status_code}", answer.text[:200]

    return probe


def seeded(cluster: RaftCluster) -> tuple[str, str]:
    """A KV v2 secret and a token that may only read it (never the root token in a probe)."""
    admin = cluster.admin()
    admin.sys.enable_secrets_engine("kv", path="kv", options={"version": "2"})
    value = secrets.token_hex(8)
    wait_until(lambda: admin.secrets.kv.v2.create_or_update_secret("probe", {"value": value}, mount_point="kv"),
               timeout=30, describe="the KV mount to accept a write")
    admin.sys.create_or_update_policy("probe", 'path "kv/data/probe" { capabilities = ["read"] }')
    token = str(admin.auth.token.create(policies=["probe"], ttl="1h")["auth"]["client_token"])

    def every_node_serves_it() -> bool:
        # A new KV v2 mount answers 400 "Waiting for the primary to upgrade from non-versioned to versioned data"
        # on a standby until its own upgrade has reached it: the setup is ready once every node serves the read.
        return all(requests.get(f"{node.addr}/v1/kv/data/probe", headers={"X-Vault-Token": token},
                                verify=str(cluster.ca), timeout=2).status_code == 200 for node in cluster.nodes)

    wait_until(every_node_serves_it, timeout=60, interval=0.2, describe="every node to serve the seeded secret")
    return token, value


@dataclass(frozen=True)
class UnderReads:
    """A rolling upgrade watched by reads: every sample, each node's step, and when the upgrade ran (monitor clock)."""

    samples: list[Sample]
    steps: list[UpgradeStep]
    started: float
    done: float


def upgrade_under_reads(cluster: RaftCluster, hz: float = 10) -> UnderReads:
    """Seed a secret, read it at ``hz`` through the front until five reads in a row succeed, upgrade FROM to TO,
    and read on until five in a row succeed again."""
    token, value = seeded(cluster)
    monitor = Monitor({"vault": read_probe(cluster, token, value)}, hz=hz)
    with monitor:
        wait_until(lambda: _settled(monitor, 0.0), timeout=30, describe="reads to succeed before the upgrade")
        started = monitor.now()
        steps = cluster.rolling_upgrade(openbao_release(TO, cache_dir()), clock=monitor.now)
        done = monitor.now()
        wait_until(lambda: _settled(monitor, done), timeout=30, describe="reads after the upgrade")
    return UnderReads(monitor.samples, steps, started, done)


def _settled(monitor: Monitor, after: float, count: int = 5) -> bool:
    recent = monitor.recent("vault", count, since=after)
    return len(recent) == count and all(s.ok for s in recent)


def test_a_rolling_upgrade_of_three_nodes_fails_no_read_and_ends_on_the_new_version(state: RunState) -> None:
    ca, tls = server_tls(state, "vault-raft")
    cluster = RaftCluster(state, find_envoy().path, tls, ca, size=3)
    with cluster.running(openbao_release(FROM, cache_dir())):
        assert {cluster.status(node).version for node in cluster.nodes} == {FROM}
        run = upgrade_under_reads(cluster)
        steps = run.steps
        # Judged from the upgrade's start, once reads had settled: a fresh KV v2 mount can still answer 400
        # "Waiting for the primary to upgrade ..." on a standby before that (seen once in CI), which is the
        # mount's own start, not the upgrade.
        failed = [s for s in run.samples if s.t >= run.started and not s.ok]
        assert failed == [], failed[:5]
        assert [step.role for step in steps] == ["standby", "standby", "active"]  # the guide's order
        assert {cluster.status(node).version for node in cluster.nodes} == {TO}
        assert [step.version for step in steps] == [TO, TO, TO]
        active = cluster.active_node()
        assert active.node_id != steps[-1].node_id or len(cluster.nodes) == 1  # an upgraded standby took over
        # Reads went on during every node's absence: some sample started after it left and answered before it
        # was back.
        for step in steps:
            assert [s for s in run.samples if step.left_front_at <= s.t and s.end <= step.back_in_front_at
                    and s.ok], step


def test_a_single_nodes_upgrade_fails_reads_closed_and_they_come_back(state: RunState) -> None:
    ca, tls = server_tls(state, "vault-raft")
    cluster = RaftCluster(state, find_envoy().path, tls, ca, size=1)
    with cluster.running(openbao_release(FROM, cache_dir())):
        run = upgrade_under_reads(cluster)
        [step] = run.steps
        during = [s for s in run.samples if step.left_front_at <= s.t and s.end <= step.unsealed_at]
        assert during and not [s for s in during if s.ok], "a read succeeded while the only node was away"
        assert cluster.status(cluster.nodes[0]).version == TO
        # The outage, at its widest: from the start of the last read that succeeded before it to the answer of
        # the first that succeeded after it. Judged against the policy's recovery bound.
        samples = run.samples
        before = max(s.t for s in samples if s.ok and s.end <= during[0].t)
        after = min(s.end for s in samples if s.ok and s.t >= during[-1].end)
        bound = load_profile(DEFAULT_PROFILE).policy.recovery_bound.total_seconds()
        assert after - before <= bound, (after - before, bound)


def _reads(cluster: RaftCluster, token: str, value: str) -> str:
    try:
        return read_probe(cluster, token, value)()[0]
    except requests.ConnectionError as err:  # the front closed the connection: no node behind it answers
        return f"connection error: {type(err).__name__}"


def test_another_process_of_the_run_seals_stops_and_brings_back_every_node(state: RunState) -> None:
    """The chaos faults on a raft platform (vault-seal, vault-down, a restart), from the layout the owner saved, as
    a pytest run attached to the platform acts: every node sealed or stopped, reads refused through the front, and
    every node back, unsealed, with a leader and reads served again."""
    ca, tls = server_tls(state, "vault-raft")
    cluster = RaftCluster(state, find_envoy().path, tls, ca, size=3)
    with cluster.running(openbao_release(FROM, cache_dir())):
        token, value = seeded(cluster)
        other = RaftCluster.attach(state)
        assert (other.nodes, other.front_port, other.owner) == (cluster.nodes, cluster.front_port, False)
        other.seal_all()
        assert [cluster.status(node).sealed for node in cluster.nodes] == [True, True, True]
        assert _reads(cluster, token, value) != OK
        other.unseal_all()
        wait_until(lambda: _reads(cluster, token, value) == OK, timeout=30, interval=0.2, converge=3,
                   describe="reads after every node was unsealed")
        other.stop_all()
        assert not any(cluster.state.pids().get(f"vault-{node.node_id}") and
                       Path(f"/proc/{cluster.state.pids()[f'vault-{node.node_id}']}").exists()
                       for node in cluster.nodes)
        assert _reads(cluster, token, value).startswith("connection error")
        other.start_all()
        wait_until(lambda: _reads(cluster, token, value) == OK, timeout=30, interval=0.2, converge=3,
                   describe="reads after every node was started again")
        assert sum(cluster.status(node).active for node in cluster.nodes) == 1


def test_ctrl_c_in_the_middle_of_a_rolling_upgrade_leaves_nothing() -> None:
    """Interrupted once a node runs TO while the others still run FROM: every node, the front, and the run's
    state (its unseal keys among it) go. The next run starts clean: nothing of this one is left to trip on."""
    before = snapshot()
    child = Child.start("tests/test_raft_upgrade.py", "-k", "three_nodes", "-v")

    def mixed_versions() -> bool:
        for pid in snapshot().pids - before.pids:
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode().endswith(f"openbao-{TO}/bao"):
                    return True
        return False

    wait_until(mixed_versions, timeout=180, interval=0.05, describe=f"a node of the child to run OpenBao {TO}")
    child.process.send_signal(signal.SIGINT)
    code = child.process.wait(timeout=60)
    assert code == 2, child.output  # pytest's "interrupted"
    assert new_since(before).problems() == []
