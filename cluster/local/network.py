"""The node network: one bridge, pods as network namespaces with veth pairs.

The bridge has an address (the node's, where Vault and the mesh CA also
listen) but no uplink, no NAT and no route out: pods reach each other and
the node, nothing else. Every name carries a 6-hex tag of the run id, so
the reaper can tell a dead run's namespaces and links from a live one's.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import json
import re
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cluster.errors import PlatformUnavailable, TrustgridError
from cluster.runstate import owner_alive

SIDECAR_UID = 1337
INBOUND_PORT = 15006
OUTBOUND_PORT = 15001
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LAST_RESERVED = "last_reserved"  # the address book's note of the address handed out last
_AUTO_SUPERNET = ipaddress.IPv4Network("10.250.0.0/16")


class PodSpecError(TrustgridError):
    """A pod cannot be created as asked (bad name, no address left)."""


def run_tag(run_id: str) -> str:
    return hashlib.sha256(run_id.encode()).hexdigest()[:6]


def _ip(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise PlatformUnavailable(f"{' '.join(argv)} failed: {result.stderr.strip()}",
                                  fix="the local platform needs root and iproute2")
    return result


def _used_networks() -> list[ipaddress.IPv4Network]:
    routes = json.loads(_ip("-j", "route", "show").stdout or "[]")
    nets = []
    for route in routes:
        with contextlib.suppress(ValueError):
            dst = route.get("dst", "")
            if dst and dst != "default":
                nets.append(ipaddress.ip_network(dst, strict=False))
    return [n for n in nets if isinstance(n, ipaddress.IPv4Network)]


def pick_pod_cidr(run_id: str, explicit: str | None = None) -> ipaddress.IPv4Network:
    """The run's pod CIDR: explicit, or a free /24 of 10.250.0.0/16 chosen from the run id."""
    used = _used_networks()
    if explicit:
        try:
            network = ipaddress.ip_network(explicit)
        except ValueError:
            raise PodSpecError(f"--pod-cidr {explicit!r} is not a network",
                               fix="pass an IPv4 CIDR such as 10.250.7.0/24") from None
        if not isinstance(network, ipaddress.IPv4Network) or network.num_addresses < 4:
            raise PodSpecError(f"--pod-cidr {explicit} is too small", fix="use a /30 or larger IPv4 network")
        if any(network.overlaps(n) for n in used):
            raise PodSpecError(f"--pod-cidr {explicit} overlaps a route on this machine",
                               fix="choose a free private range")
        return network
    subnets = list(_AUTO_SUPERNET.subnets(new_prefix=24))
    start = int(run_tag(run_id), 16) % len(subnets)
    for subnet in subnets[start:] + subnets[:start]:
        if not any(subnet.overlaps(n) for n in used):
            return subnet
    raise PodSpecError("no free /24 left in 10.250.0.0/16", fix="pass --pod-cidr with a free range")


def validate_pod_name(namespace: str, name: str) -> None:
    for kind, value in (("namespace", namespace), ("pod name", name)):
        if len(value) > 63:
            raise PodSpecError(f"{kind} {value[:20]}… is {len(value)} characters long",
                               fix="use at most 63 characters (a DNS label)")
        if not _DNS_LABEL.match(value):
            raise PodSpecError(f"{kind} {value!r} is not a DNS label",
                               fix="use lower-case letters, digits and '-', starting and ending alphanumeric")


@dataclass(frozen=True)
class PodNet:
    namespace: str
    name: str
    netns: str
    ip: str
    host_veth: str


def _interception_rules(exclude_ports: Iterable[int]) -> str:
    """What istio-init writes: inbound TCP to 15006, outbound TCP to 15001, uid 1337 exempt."""
    keep = "".join(f"-A TG_INBOUND -p tcp --dport {p} -j RETURN\n" for p in exclude_ports)
    return (
        "*nat\n"
        ":TG_INBOUND - [0:0]\n:TG_IN_REDIRECT - [0:0]\n:TG_OUTPUT - [0:0]\n:TG_REDIRECT - [0:0]\n"
        "-A PREROUTING -p tcp -j TG_INBOUND\n"
        f"{keep}"
        "-A TG_INBOUND -p tcp -j TG_IN_REDIRECT\n"
        f"-A TG_IN_REDIRECT -p tcp -j REDIRECT --to-ports {INBOUND_PORT}\n"
        "-A OUTPUT -p tcp -j TG_OUTPUT\n"
        f"-A TG_OUTPUT -m owner --uid-owner {SIDECAR_UID} -j RETURN\n"
        f"-A TG_OUTPUT -m owner --gid-owner {SIDECAR_UID} -j RETURN\n"
        "-A TG_OUTPUT -d 127.0.0.1/32 -j RETURN\n"
        "-A TG_OUTPUT -j TG_REDIRECT\n"
        f"-A TG_REDIRECT -p tcp -j REDIRECT --to-ports {OUTBOUND_PORT}\n"
        "COMMIT\n"
    )


@dataclass(frozen=True)
class NodeNetwork:
    """The run's bridge and pod addresses. Shared by xdist workers: the
    address book is a JSON file under a file lock, never process memory."""

    run_id: str
    cidr: ipaddress.IPv4Network
    ipam: Path

    @property
    def tag(self) -> str:
        return run_tag(self.run_id)

    @property
    def bridge(self) -> str:
        return f"tgbr{self.tag}"

    @property
    def host_ip(self) -> str:
        return str(self.cidr.network_address + 1)

    @property
    def _comment(self) -> str:
        return f"trustgrid:{self.tag}"

    def up(self, owner: str) -> None:
        """Create the bridge; its alias names the run's owner (a pid, or "kept") for the reaper."""
        _ip("link", "add", self.bridge, "type", "bridge")
        # A bridge without its own address takes the lowest MAC of its ports and
        # changes it as pods come and go; the pods' ARP entries for the node then
        # go stale and their traffic to Vault and the mesh CA vanishes for tens
        # of seconds. A fixed, locally administered MAC keeps the node reachable.
        tag = self.tag
        _ip("link", "set", "dev", self.bridge, "address", f"02:7e:{tag[0:2]}:{tag[2:4]}:{tag[4:6]}:01")
        _ip("link", "set", "dev", self.bridge, "alias", f"trustgrid run={self.run_id} owner={owner}")
        _ip("addr", "add", f"{self.host_ip}/{self.cidr.prefixlen}", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        # Bridged frames may traverse the host's FORWARD chain (br_netfilter);
        # let pod-to-pod traffic through whatever its policy is, and no further.
        subprocess.run(["iptables", "-I", "FORWARD", "-i", self.bridge, "-o", self.bridge,
                        "-m", "comment", "--comment", self._comment, "-j", "ACCEPT"],
                       capture_output=True, check=False)

    def down(self) -> None:
        for netns in self.namespaces():
            _ip("netns", "delete", netns, check=False)
        _ip("link", "delete", self.bridge, check=False)
        remove_forward_rules({self.tag})

    def namespaces(self) -> list[str]:
        return [n for n in list_netns() if n.startswith(f"tg{self.tag}-")]

    @contextlib.contextmanager
    def _addresses(self) -> Iterator[dict[str, str]]:
        """The address book (ip -> pod, and LAST_RESERVED -> ip), locked across processes while in use."""
        with self.ipam.with_suffix(".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            book: dict[str, str] = json.loads(self.ipam.read_text()) if self.ipam.exists() else {}
            yield book
            self.ipam.write_text(json.dumps(book))

    def _allocate(self, owner: str) -> ipaddress.IPv4Address:
        """The next free address after the last one handed out, wrapping around, as CNI's host-local
        IPAM allocates (plugins/ipam/host-local/backend/allocator/allocator.go: it starts after
        lastReservedIP). An address just released is taken last: a caller's Envoy may still hold the
        pod that had it as an endpoint, and would then reach a pod that is not listening yet."""
        with self._addresses() as book:
            hosts = list(self.cidr.hosts())[1:]  # the first host address is the node's
            last = book.get(LAST_RESERVED)
            start = hosts.index(ipaddress.IPv4Address(last)) + 1 if last and ipaddress.IPv4Address(last) in hosts \
                else 0
            for candidate in hosts[start:] + hosts[:start]:
                if str(candidate) not in book:
                    book[str(candidate)] = owner
                    book[LAST_RESERVED] = str(candidate)
                    return candidate
        usable = self.cidr.num_addresses - 3
        raise PodSpecError(f"the pod CIDR {self.cidr} is exhausted ({usable} pods)",
                           fix="delete pods, or pass a larger --pod-cidr")

    def _release(self, ip: str) -> None:
        with self._addresses() as book:
            book.pop(ip, None)

    def add_pod(self, namespace: str, name: str, *, intercept: bool) -> PodNet:
        validate_pod_name(namespace, name)
        ip = self._allocate(f"{namespace}/{name}")
        suffix = hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:8]
        netns = f"tg{self.tag}-{suffix}"
        # Unique per pod and address: netns teardown is asynchronous in the kernel, so a
        # name derived from the address alone can still exist when the address is reused.
        host_veth = f"tg{self.tag}" + hashlib.sha256(f"{netns}/{ip}".encode()).hexdigest()[:5]
        try:
            _ip("netns", "add", netns)
            _ip("link", "add", host_veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
            _ip("link", "set", host_veth, "master", self.bridge, "up")
            for args in (("addr", "add", f"{ip}/{self.cidr.prefixlen}", "dev", "eth0"),
                         ("link", "set", "eth0", "up"), ("link", "set", "lo", "up"),
                         ("route", "add", "default", "via", self.host_ip)):
                _ip(*args, netns=netns)
            if intercept:
                rules = _interception_rules(exclude_ports=())
                result = subprocess.run(["ip", "netns", "exec", netns, "iptables-restore", "--noflush"],
                                        input=rules, capture_output=True, text=True, check=False)
                if result.returncode != 0:
                    raise PlatformUnavailable(f"iptables-restore in {netns} failed: {result.stderr.strip()}",
                                              fix="apt-get install iptables")
        except BaseException:
            _ip("link", "delete", host_veth, check=False)
            _ip("netns", "delete", netns, check=False)
            self._release(str(ip))
            raise
        return PodNet(namespace, name, netns, str(ip), host_veth)

    def remove_pod(self, pod: PodNet) -> None:
        # Deleting the link is synchronous (and takes its peer along); the
        # namespace itself is torn down by the kernel in the background.
        _ip("link", "delete", pod.host_veth, check=False)
        _ip("netns", "delete", pod.netns, check=False)
        self._release(pod.ip)


def list_netns() -> list[str]:
    result = _ip("netns", "list", check=False)
    return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]


def remove_forward_rules(tags: set[str] | None = None) -> None:
    """Delete our FORWARD rules: those of the given run tags, or of every run."""
    listed = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True, check=False)
    for line in listed.stdout.splitlines():
        match = re.search(r'--comment "?trustgrid:([0-9a-f]{6})"?', line)
        if match and (tags is None or match.group(1) in tags):
            spec = line.replace("-A FORWARD", "-D FORWARD", 1).split()
            subprocess.run(["iptables", *[s.strip('"') for s in spec]], capture_output=True, check=False)


def reap_networks() -> list[str]:
    """Remove the namespaces, bridges and rules of runs whose owner is gone.

    Liveness is read from each bridge's alias (the owner pid), never from a
    state directory: a run with another cache directory is still alive.
    """
    links = json.loads(_ip("-j", "-d", "link", "show", "type", "bridge", check=False).stdout or "[]")
    live: set[str] = set()
    dead: set[str] = set()
    for link in links:
        match = re.match(r"^tgbr([0-9a-f]{6})$", link.get("ifname", ""))
        if not match:
            continue
        owner = re.search(r"owner=(\S+)", link.get("ifalias", "") or "")
        (live if owner and owner_alive(owner.group(1)) else dead).add(match.group(1))
    removed = []
    for netns in list_netns():
        match = re.match(r"^tg([0-9a-f]{6})-", netns)
        if match and match.group(1) not in live:
            _ip("netns", "delete", netns, check=False)
            removed.append(netns)
    for tag in sorted(dead):
        _ip("link", "delete", f"tgbr{tag}", check=False)
        removed.append(f"tgbr{tag}")
    listed = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True, check=False)
    stale = {m for m in re.findall(r"trustgrid:([0-9a-f]{6})", listed.stdout) if m not in live}
    if stale:
        remove_forward_rules(stale)
    return removed


def remove_run_network(run_id: str) -> None:
    """Remove one run's network whatever its owner says (python -m cluster down)."""
    tag = run_tag(run_id)
    for netns in list_netns():
        if netns.startswith(f"tg{tag}-"):
            _ip("netns", "delete", netns, check=False)
    _ip("link", "delete", f"tgbr{tag}", check=False)
    remove_forward_rules({tag})
