"""One liveness rule for every record of a run's owner: a zombie is dead.

Found when a CI run was interrupted: the owner of a child run was killed and left a zombie while its
parent was itself going down. The janitor saw the owner dead and reaped, but the network reaper read
the zombie's /proc entry as a live owner and left the run's bridge and network namespaces behind.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.local.network import NodeNetwork, list_netns, reap_networks
from cluster.runstate import owner_alive, process_alive
from cluster.wait import wait_until


@pytest.fixture
def zombie() -> Iterator[int]:
    """A child that has exited and that nobody has waited for yet: its /proc entry stays, state Z."""
    child = subprocess.Popen(["true"])
    wait_until(lambda: not process_alive(child.pid), timeout=10, interval=0.02,
               describe="the child to exit")
    assert Path(f"/proc/{child.pid}").exists(), "the child was waited for already; it is no zombie"
    yield child.pid
    child.wait()


def test_a_zombie_owner_is_dead_a_live_or_kept_one_is_alive(zombie: int) -> None:
    assert not owner_alive(str(zombie))
    assert owner_alive(str(os.getpid()))
    assert owner_alive("kept")
    assert not owner_alive("") and not owner_alive("not-a-pid")


def test_the_network_of_a_zombie_owner_is_reaped(zombie: int, tmp_path: Path) -> None:
    network = NodeNetwork("tg-unit-zombie", ipaddress.IPv4Network("10.251.78.0/29"), tmp_path / "ipam.json")
    network.up(owner=str(zombie))
    try:
        pod = network.add_pod("ns", "left", intercept=False)
        assert pod.netns in list_netns()
        removed = reap_networks()
        assert pod.netns in removed and network.bridge in removed, removed
        assert network.namespaces() == []
        links = subprocess.run(["ip", "link", "show", network.bridge], capture_output=True, text=True, check=False)
        assert links.returncode != 0, links.stdout
    finally:
        network.down()
