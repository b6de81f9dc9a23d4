"""The local mesh's answers to bad input, on a real platform this test brings up itself."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from cluster.local.bringup import reap_local, start_local
from cluster.local.network import NodeNetwork, PodSpecError, run_tag
from cluster.local.platform import LocalPlatform
from cluster.local.pods import PodStartError
from cluster.settings import build_settings
from cluster.tenancy import Tenant, open_tenant

pytestmark = pytest.mark.platform


@pytest.fixture(scope="module")
def local() -> Iterator[LocalPlatform]:
    settings = build_settings({})
    with start_local(settings, lambda _: None) as platform:
        yield platform


@pytest.fixture
def tenant(local: LocalPlatform) -> Iterator[Tenant]:
    with open_tenant(local, local.settings.profile.setup, "mesh-errors") as opened:
        yield opened


def test_a_pod_name_that_is_too_long_is_one_line(local: LocalPlatform, tenant: Tenant) -> None:
    with pytest.raises(PodSpecError) as raised:
        local.deploy(tenant.namespace, "p" * 64, "app")
    assert "is 64 characters long" in str(raised.value) and "at most 63" in str(raised.value)
    assert "\n" not in str(raised.value)
    with pytest.raises(PodSpecError, match="not a DNS label"):
        local.deploy(tenant.namespace, "Bad_Name", "app")
    assert client.CoreV1Api(local.kube).list_namespaced_service(tenant.namespace).items == []  # refused before


def test_an_exhausted_cidr_is_one_line(tmp_path: Path) -> None:
    network = NodeNetwork("tg-unit-cidr", ipaddress.IPv4Network("10.251.77.0/29"), tmp_path / "ipam.json")
    network.up(owner=str(os.getpid()))
    try:
        for index in range(5):  # a /29 has 6 hosts; the first is the node's
            network.add_pod("ns", f"pod-{index}", intercept=False)
        with pytest.raises(PodSpecError) as raised:
            network.add_pod("ns", "one-too-many", intercept=False)
        assert str(raised.value) == ("the pod CIDR 10.251.77.0/29 is exhausted (5 pods); "
                                     "delete pods, or pass a larger --pod-cidr")
    finally:
        network.down()
    assert network.namespaces() == []


def test_the_mesh_ca_unreachable_at_pod_start_is_a_clear_error(local: LocalPlatform, tenant: Tenant) -> None:
    faults = local.faults()
    faults.stop_mesh_ca()
    try:
        with pytest.raises(PodStartError) as raised:
            local.pods.deploy(tenant.namespace, "server", "app", timeout=4)
        message = str(raised.value)
        # pilot-agent's own words: its CSR to the mesh CA found nothing listening.
        assert "the sidecar has no certificate" in message and "failed to sign" in message
        assert any(sign in message for sign in ("Unavailable", "connection refused")), message
        assert "check that the mesh CA is up" in message and "\n" not in message
        assert client.CoreV1Api(local.kube).list_namespaced_service(tenant.namespace).items == []  # nothing half-made
    finally:
        faults.start_mesh_ca()
    workload = local.deploy(tenant.namespace, "server", "app")  # and nothing half-made is in the way
    local.undeploy(workload)


def test_a_reaper_with_another_cache_leaves_a_live_run_alone(
    local: LocalPlatform, tenant: Tenant, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Liveness comes from each piece's recorded owner, not from where state lives."""
    server = local.deploy(tenant.namespace, "server", "app")
    client = local.deploy(tenant.namespace, "client", "app")
    monkeypatch.setenv("TRUSTGRID_CACHE", str(tmp_path))
    reaped = reap_local()
    assert not [item for item in reaped if local.run_id in item or run_tag(local.run_id) in item], reaped
    assert local.call(client, server, canary="tg-canary-reaper", timeout=5).status == 200
    assert local.vault.running()
