"""The upgrade suite's platforms: each test opens its own, started on the FROM version, so that the
upgrade never touches the platform the other suites share (and runs the same inside `pytest suites/`)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
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


def keep_figures(settings: Settings, figures: dict[str, object]) -> None:
    """Into the run's report folder, as upgrade-figures.json (one JSON object per line, one line per test)."""
    folder = settings.run_report_dir
    folder.mkdir(parents=True, exist_ok=True)
    test = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
    with (folder / "upgrade-figures.json").open("a") as out:
        out.write(json.dumps({"test": test, **figures}) + "\n")


@dataclass(frozen=True)
class UpgradeStage:
    """A platform whose Vault runs FROM on ``nodes`` raft nodes, with a meshed client and server."""

    platform: Platform
    settings: Settings
    client: Workload
    server: Workload


def upgrade_settings(settings: Settings, nodes: int, *, vault_from: bool = True, istio_from: bool = False) -> Settings:
    """The run's settings for a platform of its own, whose Vault starts on --upgrade-vault's FROM (or, without
    ``vault_from``, is the platform's usual one), and, with ``istio_from``, whose Istio is --upgrade-istio's
    FROM (kind installs that istioctl's; the local platform has one Istio build, see test_istio_canary.py)."""
    profile = settings.profile
    setup = replace(profile.setup, vault=replace(profile.setup.vault, nodes=nodes))
    istio = settings.upgrade_istio[0] if istio_from and settings.platform == "kind" else settings.istio_version
    # Never --attach: an upgrade changes its platform's Vault and mesh, so it runs only on one it started.
    return replace(settings, run_id=new_run_id(), vault_release=settings.upgrade_vault[0] if vault_from else None,
                   profile=replace(profile, setup=setup), keep_cluster=False, reuse_cluster=False, attach=None,
                   vault_port=0, apiserver_port=0, pod_cidr=None, istio_version=istio)


@dataclass(frozen=True)
class CanaryStage(UpgradeStage):
    """An upgrade stage with a meshed workload of another namespace, whose principal the server must deny."""

    foreign: Workload


@contextlib.contextmanager
def _stage(settings: Settings, nodes: int, label: str, *, vault_from: bool = True,
           istio_from: bool = False) -> Iterator[UpgradeStage]:
    variant = upgrade_settings(settings, nodes, vault_from=vault_from, istio_from=istio_from)
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


@contextlib.contextmanager
def _canary_stage(settings: Settings, label: str) -> Iterator[CanaryStage]:
    with _stage(settings, 1, label, vault_from=False, istio_from=True) as stage, \
            open_tenant(stage.platform, stage.settings.profile.setup, f"{label[:30]}-foreign", ("stranger",)) as other:
        stranger = stage.platform.deploy(other.namespace, "stranger", "stranger")
        try:
            yield CanaryStage(stage.platform, stage.settings, stage.client, stage.server, stranger)
        finally:
            stage.platform.undeploy(stranger)


def upgrade_refusal(settings: Settings, *, nodes: int = 1, attach: bool = False) -> str | None:
    """Why this run's platform cannot open an upgrade stage (None: it can). kind installs one OpenBao server
    from its chart, and only the local platform can be attached to by another pytest (the gate's)."""
    if settings.platform == "local":
        return None
    if settings.platform != "kind":
        return (f"suites/upgrade upgrades only a Vault and an Istio it installed, and --platform {settings.platform} "
                "uses ones it did not: certify the same versions on --platform kind, or read --dry-run's plan")
    if attach:
        return "the gate attaches its runs to a local platform (--attach): run it with --platform local"
    if settings.vault_placement == "external":
        return "with --vault external Vault runs in a container, not from the chart helm upgrades: drop it"
    if nodes > 1:
        return "kind installs one OpenBao server: the three-node rolling upgrade runs on --platform local"
    return None


@pytest.fixture
def upgrade_stage(settings: Settings, request: pytest.FixtureRequest) -> Callable[[int],
                                                                                  AbstractContextManager[UpgradeStage]]:
    """``upgrade_stage(nodes)``: a platform of the test's own; everything of it is gone when the block ends."""
    def opened(nodes: int) -> AbstractContextManager[UpgradeStage]:
        if reason := upgrade_refusal(settings, nodes=nodes):
            pytest.skip(reason)
        if settings.platform == "kind" and settings.kind_vault != "openbao":
            pytest.skip("the pinned upgrade pair (--upgrade-vault) is OpenBao's: add --kind-vault openbao")
        return _stage(settings, nodes, request.node.name)
    return opened


@pytest.fixture
def canary_stage(settings: Settings,
                 request: pytest.FixtureRequest) -> Callable[[], AbstractContextManager[CanaryStage]]:
    """``canary_stage()``: a platform of the test's own (its usual Vault), a meshed client and server, and a
    meshed stranger in another namespace; everything of it is gone when the block ends."""
    if reason := upgrade_refusal(settings):
        pytest.skip(reason)
    return lambda: _canary_stage(settings, request.node.name)
