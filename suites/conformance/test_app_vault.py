"""The echo app reads its own secret the way an agent does: log in, renew, log in again.

The app's renewals happen at half its token's TTL. These tests judge the app's agent, not the
setup's lifetimes, so where the live TTL would keep them waiting beyond the budget, the tenant's
own role (a test namespace of this run) is given a short-lived TTL first: the event is driven,
never waited out.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cluster import conformance
from cluster.agent import APP_PORT
from cluster.platform import Platform, VaultRead, Workload
from cluster.secrets import find_secrets
from cluster.tenancy import Tenant
from cluster.vault import revoke_role_tokens
from cluster.wait import wait_until
from scenarios.bounds import WAIT_BUDGET_S

pytestmark = pytest.mark.conformance

# A short-lived test role: renewal due after 5 s, a new login needed after 30 s.
SHORT_TTL_S, SHORT_MAX_S = 10, 30


def renewal_due_within_budget(platform: Platform, tenant: Tenant) -> float:
    """The tenant role's live token TTL; shortened first when waiting for a renewal would pass the budget."""
    admin, mount = platform.vault_admin(), platform.vault_layout.kubernetes_path
    role = conformance.read_role(admin, mount, tenant.role)
    assert role is not None, f"the tenant's role {tenant.role} is missing from live Vault"
    ttl = conformance.token_lifetimes(admin, mount, {tenant.role: role})[0].ttl_s
    if ttl / 2 > WAIT_BUDGET_S / 3:
        admin.adapter.post(f"/v1/auth/{mount}/role/{tenant.role}",
                           json={"token_ttl": SHORT_TTL_S, "token_max_ttl": SHORT_MAX_S})
        return SHORT_TTL_S
    return ttl


def test_the_app_reads_its_secret_and_renews_its_token(
    platform: Platform, tenant: Tenant, deploy: Callable[..., Workload]
) -> None:
    ttl = renewal_due_within_budget(platform, tenant)
    app = deploy(tenant, "app")

    def first_read() -> VaultRead | None:
        read = platform.read_vault(app)
        return read if read.ok else None

    first = wait_until(first_read, timeout=10, describe="the app's first secret read")
    assert isinstance(first, VaultRead) and first.logins == 1
    renewed = wait_until(lambda: (r := platform.read_vault(app)).renewals >= 1 and r, timeout=ttl,
                         interval=0.5, describe="the app's agent to renew its token")
    assert isinstance(renewed, VaultRead) and renewed.ok and renewed.logins == 1  # renewed, not logged in again


def test_the_app_logs_in_again_when_renewal_is_refused(
    platform: Platform, tenant: Tenant, deploy: Callable[..., Workload]
) -> None:
    ttl = renewal_due_within_budget(platform, tenant)
    app = deploy(tenant, "app")
    wait_until(lambda: platform.read_vault(app).ok, timeout=10, describe="the app's first secret read")
    admin = platform.vault_admin()
    # Only the tenant's own logins: the other tokens of the mount (the mesh CA's, others') stay.
    assert revoke_role_tokens(admin, platform.vault_layout.kubernetes_path, tenant.role) >= 1
    # The fault took effect: the app's current token is refused.
    refused = platform.read_vault(app)
    assert not refused.ok and "403" in refused.error, refused
    recovered = wait_until(lambda: (r := platform.read_vault(app)).ok and r, timeout=ttl + 5, interval=0.5,
                           converge=3, describe="the app's agent to log in again after its renewal was refused")
    assert isinstance(recovered, VaultRead) and recovered.logins >= 2


def test_the_apps_vault_traffic_never_crosses_the_pod_interface_in_plaintext(
    platform: Platform, tenant: Tenant, deploy: Callable[..., Workload]
) -> None:
    """A login (the service-account JWT out, a Vault token back) and a read (the token out, the secret
    back), captured on the app pod's own interface: every flow TLS, and none of the three readable."""
    app = deploy(tenant, "app")
    wait_until(lambda: platform.read_vault(app).ok, timeout=10, describe="the app's first secret read")
    before = platform.read_vault(app).logins
    with platform.capture(app) as wire:
        login = platform.relogin_vault(app)
        read = platform.read_vault(app)
    assert login.get("ok") and read.ok, (login, read)
    assert read.logins == before + 1  # the login really happened inside the capture
    vault_flows = [f for f in wire.flows if f.payload_bytes and not f.server.endswith(f":{APP_PORT}")]
    assert vault_flows, wire.flows  # the capture saw the Vault exchange
    assert wire.plaintext_flows == (), wire.plaintext_flows
    assert not wire.contains(tenant.canary), "the secret crossed the pod's interface in plaintext"
    assert find_secrets(wire.text()) == [], "a JWT or a Vault token crossed the pod's interface in plaintext"
