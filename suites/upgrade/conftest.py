"""The upgrade suite's platforms: each test opens its own, started on the FROM version, so that the
upgrade never touches the platform the other suites share (and runs the same inside `pytest suites/`)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace

import pytest

from cluster.platform import Platform, Workload
from cluster.runstate import new_run_id
from cluster.session import PlatformSession
from cluster.settings import Settings
from cluster.tenancy import open_tenant
from cluster.wait import wait_until

log = logging.getLogger("trustgrid.upgrade")


@dataclass(frozen=True)
class UpgradeStage:
    """A platform whose Vault runs FROM on ``nodes`` raft nodes, with a meshed client and server."""

    platform: Platform
    settings: Settings
    client: Workload
    server: Workload


def upgrade_settings(settings: Settings, nodes: int) -> Settings:
    """The run's settings for a platform of its own, whose Vault starts on --upgrade-vault's FROM."""
    profile = settings.profile
    setup = replace(profile.setup, vault=replace(profile.setup.vault, nodes=nodes))
    return replace(settings, run_id=new_run_id(), vault_release=settings.upgrade_vault[0],
                   profile=replace(profile, setup=setup), keep_cluster=False, reuse_cluster=False,
                   vault_port=0, apiserver_port=0, pod_cidr=None)


@contextlib.contextmanager
def _stage(settings: Settings, nodes: int, label: str) -> Iterator[UpgradeStage]:
    variant = upgrade_settings(settings, nodes)
    session = PlatformSession(variant, lambda message: log.info("upgrade platform: %s", message))
    try:
        platform = session.start()
        with open_tenant(platform, variant.profile.setup, label, ("client", "server")) as tenant:
            server = platform.deploy(tenant.namespace, "server", "server")
            client = platform.deploy(tenant.namespace, "client", "client")
            wait_until(lambda: platform.read_vault(client).ok, timeout=30, describe="the client's first Vault read")
            try:
                yield UpgradeStage(platform, variant, client, server)
            finally:
                platform.undeploy(client)
                platform.undeploy(server)
    finally:
        session.close()


@pytest.fixture
def upgrade_stage(settings: Settings, request: pytest.FixtureRequest) -> Callable[[int],
                                                                                  AbstractContextManager[UpgradeStage]]:
    """``upgrade_stage(nodes)``: a platform of the test's own; everything of it is gone when the block ends."""
    if settings.platform != "local":
        pytest.skip(f"an in-place Vault upgrade is built for --platform local only so far, not {settings.platform}")
    return lambda nodes: _stage(settings, nodes, request.node.name)
