"""A raft cluster of OpenBao nodes on loopback, behind one address, and its rolling upgrade.

The upstream rules this follows:
- **The rolling upgrade** (OpenBao website/content/docs/upgrading/ha-upgrade.mdx): on each standby
  in turn, shut it down with SIGTERM, replace the binary, start it, unseal it, and check that it
  reports the new version as a standby; then do the same to the active node, whose SIGTERM steps
  it down and releases the HA lock so an upgraded standby takes over. Never fail over from a newer
  node to an older one, which this order guarantees.
- **Joining** (storage "raft" ``retry_join``): a joining node answers the leader's challenge with
  the unseal keys, so it is unsealed with the cluster's own keys and then joins.
- **Health** (http/sys_health.go): 200 active, 429 standby (200 with ``standbyok=true``), 503 sealed,
  501 not initialized. OpenBao standbys serve reads themselves (since 2.5).

The one address clients use is an Envoy TCP proxy (TLS ends at the nodes), whose endpoints come
from a file (EDS) and are health checked on each node's plaintext loopback health listener: what a
Kubernetes Service with readiness probes does for the Vault chart's pods. A node leaves the
endpoints, and Envoy confirms it, before it is stopped, as a terminating pod leaves its Service
first. Every process is a ManagedProcess of the run: the janitor reaps what an interrupted run left.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

from cluster.errors import PlatformUnavailable, ProcessFailed, WaitTimeout
from cluster.local.binaries import VaultBinary
from cluster.local.openbao import pod_argv
from cluster.local.pki import KeyPair
from cluster.local.process import ManagedProcess, free_port, stop_recorded
from cluster.platform import VaultNodeStatus as NodeStatus
from cluster.platform import VaultUpgradeStep as UpgradeStep
from cluster.promconfig import TELEMETRY
from cluster.runstate import RunState
from cluster.secrets import register
from cluster.wait import wait_until

KEY_SHARES = 3
LAYOUT_FILE = "vault-raft/layout.json"  # RaftCluster._save: what attach() reads
KEY_THRESHOLD = 2
Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class RaftNode:
    """One node's identity and ports (loopback)."""

    node_id: str
    port: int  # the TLS API listener
    cluster_port: int  # raft and request forwarding
    health_port: int  # plaintext, loopback, read by the front's health checks only

    @property
    def addr(self) -> str:
        return f"https://127.0.0.1:{self.port}"


def connections_to(port: int, pid: int) -> int:
    """How many established TCP connections process ``pid`` holds to local port ``port`` (/proc/net/tcp rows
    whose remote port is ``port`` and whose socket inode is one of the process's descriptors)."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == port and fields[3] == "01" and fields[9] in inodes:  # 01: TCP_ESTABLISHED
                count += 1
    return count


def node_config(node: RaftNode, peers: list[RaftNode], *, data_dir: Path, tls: KeyPair, ca: Path,
                audit_log: Path | None = None) -> str:
    """The server configuration of ``node`` (HCL). ``peers``: the other nodes it may join through.
    ``audit_log``: a file audit device, declared in the configuration (OpenBao refuses API-created audit
    devices since CVE-2025-54997), which every node appends to as the one that serves the request."""
    joins = "".join(f'  retry_join {{\n    leader_api_addr = "{peer.addr}"\n    leader_ca_cert_file = "{ca}"\n  }}\n'
                    for peer in peers)
    audit = (f'audit "file" "file" {{\n  description = "trustgrid audit log"\n'
             f'  options {{ file_path = "{audit_log}" }}\n}}\n') if audit_log else ""
    return (audit + TELEMETRY +
        "ui = false\n"
        f'api_addr = "{node.addr}"\n'
        f'cluster_addr = "https://127.0.0.1:{node.cluster_port}"\n'
        # performance_multiplier 1: the production tuning (the default 5 slows elections fivefold).
        f'storage "raft" {{\n  path = "{data_dir}"\n  node_id = "{node.node_id}"\n  performance_multiplier = 1\n'
        f"{joins}}}\n"
        f'listener "tcp" {{\n  address = "127.0.0.1:{node.port}"\n  cluster_address = "127.0.0.1:{node.cluster_port}"\n'
        f'  tls_cert_file = "{tls.cert}"\n  tls_key_file = "{tls.key}"\n}}\n'
        f'listener "tcp" {{\n  address = "127.0.0.1:{node.health_port}"\n  tls_disable = true\n}}\n'
    )


def front_config(listen_port: int, admin_port: int, eds_dir: Path,
                 hosts: tuple[str, ...] = ("127.0.0.1",)) -> dict[str, Any]:
    """Envoy's bootstrap: a TCP proxy on ``hosts``:``listen_port`` to cluster ``vault``, whose endpoints are
    read from ``eds_dir/eds.yaml``."""
    proxy = {"name": "envoy.filters.network.tcp_proxy", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": "vault", "cluster": "vault", "max_connect_attempts": 3}}
    health = {"timeout": "1s", "interval": "0.25s", "unhealthy_threshold": 1, "healthy_threshold": 1,
              "http_health_check": {"path": "/v1/sys/health?standbyok=true"}}
    return {
        "node": {"id": "tg-vault-front", "cluster": "trustgrid"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": f"vault-{index}",
                "address": {"socket_address": {"address": host, "port_value": listen_port}},
                "filter_chains": [{"filters": [proxy]}],
            } for index, host in enumerate(hosts)],
            "clusters": [{
                "name": "vault", "type": "EDS", "connect_timeout": "1s",
                "eds_cluster_config": {"eds_config": {"resource_api_version": "V3", "path_config_source": {
                    "path": str(eds_dir / "eds.yaml"), "watched_directory": {"path": str(eds_dir)}}}},
                "health_checks": [health],
                # A node taken out of the endpoints leaves at once, even while it still passes its checks (by
                # default Envoy keeps such a host until it fails one), and every change reaches the worker at
                # once (not merged over the default 1 s window). Never route to an unhealthy node (no panic).
                "ignore_health_on_host_removal": True,
                "common_lb_config": {"healthy_panic_threshold": {"value": 0}, "update_merge_window": "0s"},
            }],
        },
    }


def endpoints(nodes: list[RaftNode]) -> dict[str, Any]:
    """The EDS answer that puts ``nodes`` behind the front."""
    return {"resources": [{
        "@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
        "cluster_name": "vault",
        "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": node.port}},
                          "health_check_config": {"port_value": node.health_port}}}
            for node in nodes]}],
    }]}


def _init_data(state: RunState) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(state.file("vault-raft-init.json").read_text())
    for secret in (*data["keys_base64"], data["root_token"]):
        register(str(secret))
    return data


def raft_root_token(state: RunState) -> str:
    """The root token of the run's raft cluster (registered with the redactor)."""
    return str(_init_data(state)["root_token"])


@dataclass
class RaftCluster:
    """``size`` OpenBao nodes in one raft cluster, behind ``address``. Use ``running()``."""

    state: RunState
    envoy: Path
    tls: KeyPair
    ca: Path
    size: int = 3
    nodes: list[RaftNode] = field(default_factory=list)
    binaries: dict[str, VaultBinary] = field(default_factory=dict)  # node_id -> what it runs now
    front_port: int = 0  # 0: a free port
    admin_port: int = 0
    hosts: tuple[str, ...] = ("127.0.0.1",)  # where the front listens (a platform adds its pods' address)
    pod_token_dir: Path | None = None  # run each node as the Vault pod (openbao.pod_argv), for Kubernetes auth
    audit_log: Path | None = None
    # How long a node's connections through the front may take to close before it is stopped anyway: a
    # kept-alive client connection never closes by itself, and its request in flight is not known to a TCP
    # proxy. A Service gives a terminating pod its grace period the same way; the node's shutdown then closes
    # its idle connections, and HTTP clients retry an idempotent read on a fresh one. The Vault chart's pods
    # wait 5 s (vault-helm values.yaml server.preStopSleepSeconds) between leaving the Service and SIGTERM.
    drain_timeout: float = 30.0
    drain_required: bool = True  # False: past drain_timeout, stop the node with connections still open
    owner: bool = True  # the run's owner: its nodes die with it (attach: another process's, they do not)
    _in_front: list[RaftNode] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"https://127.0.0.1:{self.front_port}"

    def _name(self, node: RaftNode) -> str:
        return f"vault-{node.node_id}"

    @contextmanager
    def running(self, binary: VaultBinary, *, progress: Progress = _quiet) -> Iterator[RaftCluster]:
        """Start, initialize and unseal every node on ``binary``, and the front; stop all of it on the way out,
        also after a partial start."""
        try:
            self._start(binary, progress)
            yield self
        finally:
            for node in self.nodes:
                stop_recorded(self.state, self._name(node), grace=10)
            stop_recorded(self.state, "vault-front", grace=5)

    def _start(self, binary: VaultBinary, progress: Progress) -> None:
        self.nodes = [RaftNode(f"node-{i}", free_port(), free_port(), free_port()) for i in range(self.size)]
        self.front_port, self.admin_port = self.front_port or free_port(), free_port()
        eds_dir = self.state.file("vault-front")
        eds_dir.mkdir(mode=0o700, exist_ok=True)
        self._set_front([])
        config = self.state.write_private("vault-front/envoy.yaml", yaml.safe_dump(
            front_config(self.front_port, self.admin_port, eds_dir, self.hosts)))
        # One worker: once the admin API shows a change, one request through the front proves the worker has it.
        front = ManagedProcess("vault-front", [str(self.envoy), "-c", str(config), "--log-level", "warn",
                                               "--concurrency", "1", "--base-id", str(self.admin_port)], self.state)
        front.start()
        front.wait_ready(self._front_answers, timeout=30, describe="the Vault front (Envoy) to answer")
        progress(f"starting {self.size} OpenBao {binary.version} nodes in one raft cluster")
        for node in self.nodes:
            self._start_node(node, binary)
        import hvac

        # Raft elects the first node during init: allow it more than a normal request.
        answer = hvac.Client(url=self.nodes[0].addr, token="", verify=str(self.ca), timeout=60).sys.initialize(
            secret_shares=KEY_SHARES, secret_threshold=KEY_THRESHOLD)
        for secret in (*answer["keys_base64"], *answer["keys"], answer["root_token"]):
            register(str(secret))
        self.state.write_private("vault-raft-init.json", json.dumps(
            {"keys_base64": answer["keys_base64"], "root_token": answer["root_token"]}))
        for node in self.nodes:
            self.unseal(node)  # the others answer the leader's join challenge with these keys
        self._set_front(self.nodes)
        self._front_is(self.nodes, "the front to route to every node")
        self.wait_raft_healthy()

    # -- plumbing -------------------------------------------------------------
    def _front_answers(self) -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{self.admin_port}/ready", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def _start_node(self, node: RaftNode, binary: VaultBinary) -> None:
        data = self.state.file(f"vault-raft/{node.node_id}")
        data.mkdir(mode=0o700, parents=True, exist_ok=True)
        peers = [peer for peer in self.nodes if peer != node]
        config = self.state.write_private(f"vault-raft/{node.node_id}.hcl", node_config(
            node, peers, data_dir=data, tls=self.tls, ca=self.ca, audit_log=self.audit_log))
        argv = (pod_argv(self.pod_token_dir, binary.path, config) if self.pod_token_dir
                else [str(binary.path), "server", f"-config={config}"])
        process = ManagedProcess(self._name(node), argv, self.state)
        process.die_with_parent = self.owner
        process.start()
        process.wait_ready(lambda: self._health(node) is not None, timeout=30, describe=f"{node.node_id} to listen")
        self.binaries[node.node_id] = binary
        self._save()

    def _save(self) -> None:
        """The layout another process of the run needs to act on the nodes (attach): ports, paths, binaries."""
        # Written aside and renamed: another process may read it while a node restarts.
        self.state.write_private(LAYOUT_FILE + ".new", json.dumps({
            "envoy": str(self.envoy), "tls": [str(self.tls.cert), str(self.tls.key)], "ca": str(self.ca),
            "front_port": self.front_port, "admin_port": self.admin_port, "hosts": list(self.hosts),
            "pod_token_dir": str(self.pod_token_dir) if self.pod_token_dir else None,
            "audit_log": str(self.audit_log) if self.audit_log else None,
            "nodes": [asdict(node) for node in self.nodes],
            "binaries": {node_id: [str(b.path), b.flavor, b.version] for node_id, b in self.binaries.items()},
            "drain_timeout": self.drain_timeout, "drain_required": self.drain_required}))
        os.replace(self.state.file(LAYOUT_FILE + ".new"), self.state.file(LAYOUT_FILE))

    @classmethod
    def attach(cls, state: RunState) -> RaftCluster:
        """The run's raft cluster as its owner laid it out, for another process of the run (an xdist worker, a
        pytest run with --attach); nodes it starts do not die with it."""
        try:
            data = json.loads(state.file(LAYOUT_FILE).read_text())
        except (OSError, ValueError) as err:
            raise PlatformUnavailable(f"run {state.run_id} saved no readable raft layout ({type(err).__name__})",
                                      fix="start the platform again with this version of trustgrid") from None
        nodes = [RaftNode(**node) for node in data["nodes"]]
        cluster = cls(state, Path(data["envoy"]), KeyPair(Path(data["tls"][0]), Path(data["tls"][1])),
                      Path(data["ca"]), size=len(nodes), nodes=nodes,
                      binaries={node_id: VaultBinary(Path(path), flavor, version)
                                for node_id, (path, flavor, version) in data["binaries"].items()},
                      front_port=data["front_port"], admin_port=data["admin_port"], hosts=tuple(data["hosts"]),
                      pod_token_dir=Path(data["pod_token_dir"]) if data["pod_token_dir"] else None,
                      audit_log=Path(data["audit_log"]) if data["audit_log"] else None, owner=False,
                      drain_timeout=data["drain_timeout"], drain_required=data["drain_required"])
        cluster._in_front = list(nodes)
        return cluster

    # -- faults on the whole cluster (scenarios: vault-down, vault-seal, a Vault restart) --------------------
    def stop_all(self) -> None:
        """Stop every node (the front stays, with nothing healthy behind it: clients get refused, fail closed)."""
        for node in self.nodes:
            stop_recorded(self.state, self._name(node), grace=10)

    def start_all(self) -> None:
        """Start every node on the binary it ran, unseal each, and wait until raft is healthy and the front
        routes to all of them again."""
        for node in self.nodes:
            self._start_node(node, self.binaries[node.node_id])
        self.unseal_all()

    def seal_all(self) -> None:
        """Seal every node. The active one is sealed through the API while it still has its quorum. A standby
        cannot be ("vault cannot seal when in standby mode; please restart instead", OpenBao vault/core.go
        sealInitCommon), so each of the others is restarted, which leaves it sealed (Shamir), whether or not it
        took the HA lock in between."""
        active = self.active_node()
        self.admin(active).sys.seal()
        for node in self.nodes:
            if node != active:
                stop_recorded(self.state, self._name(node), grace=10)
                self._start_node(node, self.binaries[node.node_id])
        wait_until(lambda: all(self.status(node).sealed for node in self.nodes), timeout=30, interval=0.2,
                   describe="every node to report sealed")

    def unseal_all(self) -> None:
        for node in self.nodes:
            self.unseal(node)
        self.wait_raft_healthy()
        self._front_is(self.nodes, "the front to route to every node again")

    def _health(self, node: RaftNode) -> int | None:
        try:
            return requests.get(f"http://127.0.0.1:{node.health_port}/v1/sys/health?standbyok=true",
                                timeout=1).status_code
        except requests.RequestException:
            return None

    def _init(self) -> dict[str, Any]:
        return _init_data(self.state)

    def root_token(self) -> str:
        return str(self._init()["root_token"])

    def unseal(self, node: RaftNode) -> None:
        """Submit the keys until ``node`` reports unsealed (a joining node joins first; that takes a moment)."""
        import hvac

        client = hvac.Client(url=node.addr, token="", verify=str(self.ca), timeout=10)
        keys = list(self._init()["keys_base64"])[:KEY_THRESHOLD]

        def unsealed() -> bool:
            status = client.sys.read_seal_status()
            if not status["sealed"]:
                return True
            for key in keys:
                client.sys.submit_unseal_key(key)
            return False

        wait_until(unsealed, timeout=60, interval=0.5, describe=f"{node.node_id} to unseal (and join)")
        wait_until(lambda: self._health(node) == 200, timeout=60, interval=0.2,
                   describe=f"{node.node_id} to report active or standby")

    def admin(self, node: RaftNode | None = None) -> Any:
        """An hvac client with the root token, through the front (or straight to ``node``)."""
        import hvac

        return hvac.Client(url=node.addr if node else self.address, token=self.root_token(), verify=str(self.ca),
                           timeout=10)

    def status(self, node: RaftNode) -> NodeStatus:
        """What ``node`` itself reports (its own seal-status and health), not what the cluster thinks of it."""
        seal = requests.get(f"{node.addr}/v1/sys/seal-status", verify=str(self.ca), timeout=5).json()
        health = self._health(node)
        active = requests.get(f"http://127.0.0.1:{node.health_port}/v1/sys/health", timeout=5).status_code == 200
        return NodeStatus(node.node_id, str(seal["version"]).removeprefix("v"), bool(seal["sealed"]),
                          active and health == 200)

    def _is_active(self, node: RaftNode) -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{node.health_port}/v1/sys/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def active_node(self) -> RaftNode:
        found = [node for node in self.nodes if self.status(node).active]
        if len(found) != 1:
            raise ProcessFailed("vault", f"{len(found)} active nodes", "")
        return found[0]

    def raft_state(self) -> dict[str, Any]:
        """``sys/storage/raft/autopilot/state`` (answered by the active node): ``healthy``, and per server its
        ``status`` ("voter", "non-voter"), ``healthy`` and ``version``."""
        # Asked of the nodes themselves, not the front: during an upgrade the front may route to none of them.
        errors = []
        for node in self.nodes:
            try:
                data: dict[str, Any] = self.admin(node).adapter.get("/v1/sys/storage/raft/autopilot/state")["data"]
            except Exception as err:  # noqa: BLE001 - a node that is down or sealed: ask the next
                errors.append(f"{node.node_id}: {type(err).__name__}")
                continue
            return data
        raise ProcessFailed("vault", f"no node answers autopilot's state ({'; '.join(errors)})", "")

    def wait_raft_healthy(self, timeout: float = 120) -> None:
        """Until autopilot reports the cluster healthy with every node a voter. A node joins as a non-voter and
        autopilot promotes it only after its stabilization time (10 s by default): before that, the cluster
        cannot lose its leader and elect another (raft: "not part of stable configuration, aborting
        election"), so no upgrade may start, nor go on to the next node, until this holds."""
        wanted = {node.node_id for node in self.nodes}

        def healthy() -> bool:
            state = self.raft_state()
            servers = state.get("servers") or {}
            return bool(state.get("healthy")) and set(servers) == wanted and all(
                server.get("status") in ("voter", "leader") and server.get("healthy") for server in servers.values())

        wait_until(healthy, timeout=timeout, interval=0.5, describe="autopilot to report every node a healthy voter")

    # -- the front --------------------------------------------------------------
    def _set_front(self, nodes: list[RaftNode]) -> None:
        """Replace the front's endpoints atomically (a rename in the watched directory, as Envoy requires)."""
        self._in_front = list(nodes)
        folder = self.state.file("vault-front")
        partial = folder / ".eds.yaml.new"
        partial.write_text(yaml.safe_dump(endpoints(nodes)))
        partial.rename(folder / "eds.yaml")

    def front_members(self) -> dict[int, str]:
        """What Envoy routes to now: port -> its health flags ("healthy" or the failing checks)."""
        answer = requests.get(f"http://127.0.0.1:{self.admin_port}/clusters?format=json", timeout=5).json()
        members: dict[int, str] = {}
        for cluster in answer.get("cluster_statuses", []):
            if cluster.get("name") != "vault":
                continue
            for host in cluster.get("host_statuses", []):
                port = int(host["address"]["socket_address"]["port_value"])
                flags = [k for k, v in host.get("health_status", {}).items() if v is True and k != "eds_health_status"]
                eds = host.get("health_status", {}).get("eds_health_status", "HEALTHY")
                members[port] = "healthy" if not flags and eds == "HEALTHY" else ",".join(flags) or eds
        return members

    def _front_is(self, nodes: list[RaftNode], describe: str) -> None:
        """Wait until the front routes to exactly ``nodes``, as its one worker sees it: the admin API answers
        from the main thread, which posts each change to the worker; a request through the front that the
        worker served after that proves the worker ran the change."""
        wanted = {node.port: "healthy" for node in nodes}
        wait_until(lambda: self.front_members() == wanted, timeout=30, interval=0.1, describe=describe)
        if nodes:
            wait_until(lambda: requests.get(f"{self.address}/v1/sys/health?standbyok=true", verify=str(self.ca),
                                            timeout=2).status_code == 200,
                       timeout=30, interval=0.1, describe=f"{describe}: a request through the front")

    def _drained(self, node: RaftNode) -> int:
        """Wait until the front holds no connection to ``node``'s API port: a read in flight through it finishes
        first (tcp_proxy closes its upstream connection when the client's closes). Returns how many were still
        open after ``drain_timeout`` (0 when drained); raises WaitTimeout then if ``drain_required``."""
        try:
            wait_until(lambda: not self._connections(node), timeout=self.drain_timeout, interval=0.1,
                       describe=f"the front's last connection to {node.node_id} to close")
        except WaitTimeout:
            if self.drain_required:
                raise
        return self._connections(node)

    def _connections(self, node: RaftNode) -> int:
        return connections_to(node.port, self.state.pids().get("vault-front") or 0)

    # -- upgrades ---------------------------------------------------------------
    def upgrade_node(self, node: RaftNode, binary: VaultBinary, role: str, clock: Callable[[], float],
                     progress: Progress = _quiet) -> UpgradeStep:
        """Take ``node`` out of the front, SIGTERM it, start it on ``binary``, unseal it, put it back.
        Raises WaitTimeout (with what it last saw) or ProcessFailed when a step does not complete."""
        others = [peer for peer in self._in_front if peer != node]
        self._set_front(others)
        self._front_is(others, f"the front to stop routing to {node.node_id}")
        # With no other node behind the front, waiting gains nothing: no request has anywhere else to go.
        lingering = self._drained(node) if others else self._connections(node)
        left = clock()
        progress(f"{node.node_id} ({role}): SIGTERM, then OpenBao {binary.version}")
        stop_recorded(self.state, self._name(node), grace=30)
        stopped = clock()
        if role == "active" and others:
            # Its SIGTERM stepped it down and released the HA lock: an upgraded standby takes over (ha-upgrade.mdx).
            wait_until(lambda: any(self._is_active(peer) for peer in others), timeout=60, interval=0.2,
                       describe=f"a standby to take over from {node.node_id}")
        self._start_node(node, binary)
        self.unseal(node)
        unsealed = clock()
        status = self.status(node)
        self.wait_raft_healthy()
        self._set_front([*others, node])
        self._front_is([*others, node], f"the front to route to {node.node_id} again")
        return UpgradeStep(node.node_id, role, left, stopped, unsealed, clock(), status.version, lingering)

    def rolling_upgrade(self, binary: VaultBinary, clock: Callable[[], float] = time.monotonic,
                        progress: Progress = _quiet) -> list[UpgradeStep]:
        """Every standby in turn, then the active node (ha-upgrade.mdx). Returns each node's step."""
        active = self.active_node()
        steps = [self.upgrade_node(node, binary, "standby", clock, progress)
                 for node in self.nodes if node != active]
        steps.append(self.upgrade_node(active, binary, "active", clock, progress))
        return steps
