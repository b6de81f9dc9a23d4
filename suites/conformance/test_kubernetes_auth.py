"""Kubernetes auth, judged on the live platform: the identity half of the pattern."""

from __future__ import annotations

from collections.abc import Callable

import hvac
import pytest
import requests

from cluster.platform import Platform
from cluster.tenancy import Tenant
from cluster.tokenlife import DELETION_MARGIN_S, TOKEN_REVIEW_CACHE_S
from cluster.wait import wait_until

pytestmark = pytest.mark.conformance

REFUSED = (hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest)


def test_workload_token_logs_in_and_reads_its_own_secret(tenant: Tenant) -> None:
    client = tenant.login(tenant.token())
    assert tenant.read_secret(client) == {"canary": tenant.canary}


def test_token_cannot_read_another_namespaces_secret(new_tenant: Callable[..., Tenant]) -> None:
    mine, theirs = new_tenant(), new_tenant()
    client = mine.login(mine.token())
    with pytest.raises(hvac.exceptions.Forbidden):
        mine.read_secret(client, theirs.binding.secret_path)


def test_token_cannot_log_in_to_another_namespaces_role(new_tenant: Callable[..., Tenant]) -> None:
    mine, theirs = new_tenant(), new_tenant()
    with pytest.raises(REFUSED) as refused:
        mine.login(mine.token(), role=theirs.role)
    assert "not authorized" in str(refused.value) or "permission denied" in str(refused.value)


def test_token_with_the_wrong_audience_is_refused(tenant: Tenant) -> None:
    wrong = tenant.token(audience="not-vault")
    # The token itself is sound: the API server accepts it for its own audience.
    assert tenant.kube.review_token(wrong, "not-vault")
    with pytest.raises(REFUSED):
        tenant.login(wrong)


def test_deleted_service_account_fails_closed_and_a_new_one_gets_in(tenant: Tenant) -> None:
    old_token = tenant.token()
    tenant.login(old_token)

    tenant.kube.delete_service_account(tenant.namespace, "app")
    # The fault took effect: the API server itself no longer accepts the token, once its cached
    # review (10 s, cluster/tokenlife.py) has run out.
    wait_until(lambda: not tenant.kube.review_token(old_token, tenant.setup.vault.audience),
               timeout=TOKEN_REVIEW_CACHE_S + DELETION_MARGIN_S, interval=0.2,
               describe="the API server to refuse the deleted account's token")
    with pytest.raises(REFUSED):
        tenant.login(old_token)

    tenant.kube.ensure_service_account(tenant.namespace, "app", tenant.platform.run_id)
    with pytest.raises(REFUSED):
        tenant.login(old_token)  # same name, new uid: the old token stays dead
    client = tenant.login(tenant.token())
    assert tenant.read_secret(client) == {"canary": tenant.canary}


@pytest.mark.cluster_fault
def test_kubernetes_auth_survives_a_vault_restart(platform: Platform, tenant: Tenant) -> None:
    """No reviewer JWT is pinned: Vault reviews with its current pod's token."""
    faults = platform.faults()
    tenant.login(tenant.token())
    faults.stop_vault()
    try:
        with pytest.raises(requests.ConnectionError):
            tenant.login(tenant.token())  # the fault took effect: Vault is gone
    finally:
        faults.start_vault()
    client = wait_until(lambda: tenant.login(tenant.token()), timeout=30, interval=0.2, converge=3,
                        describe="Kubernetes auth logins after the Vault restart")
    assert tenant.read_secret(client) == {"canary": tenant.canary}
