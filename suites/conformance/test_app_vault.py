"""The echo app reads its own secret the way an agent does: log in, renew, log in again."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from cluster.platform import Platform, Workload
from cluster.settings import Settings
from cluster.tenancy import Tenant
from cluster.wait import wait_until

pytestmark = pytest.mark.conformance


def test_the_app_reads_its_secret_and_renews_its_token(
    platform: Platform, settings: Settings, tenant: Tenant, deploy: Callable[..., Workload]
) -> None:
    app = deploy(tenant, "app")

    def first_read() -> dict[str, Any]:
        read = platform.read_vault(app)
        return read if read.get("ok") else {}

    first = wait_until(first_read, timeout=10, describe="the app's first secret read")
    assert first["logins"] == 1
    ttl = settings.profile.setup.vault.token_ttl.total_seconds()
    renewed = wait_until(lambda: (r := platform.read_vault(app))["renewals"] >= 1 and r, timeout=ttl,
                         interval=0.5, describe="the app's agent to renew its token")
    assert renewed["ok"] and renewed["logins"] == 1  # renewed, not logged in again


@pytest.mark.cluster_fault  # revokes every Kubernetes-auth token, the mesh CA's included
def test_the_app_logs_in_again_when_renewal_is_refused(
    platform: Platform, settings: Settings, tenant: Tenant, deploy: Callable[..., Workload]
) -> None:
    app = deploy(tenant, "app")
    wait_until(lambda: platform.read_vault(app).get("ok"), timeout=10, describe="the app's first secret read")
    admin = platform.vault_admin()
    admin.sys.revoke_prefix(f"auth/{platform.vault_layout.kubernetes_path}/login")
    # The fault took effect: the app's current token is refused.
    refused = platform.read_vault(app)
    assert not refused["ok"] and "403" in str(refused.get("error")), refused
    ttl = settings.profile.setup.vault.token_ttl.total_seconds()
    recovered = wait_until(lambda: (r := platform.read_vault(app))["ok"] and r, timeout=ttl + 5, interval=0.5,
                           converge=3, describe="the app's agent to log in again after its renewal was refused")
    assert recovered["logins"] >= 2
