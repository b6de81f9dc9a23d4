"""An unauthenticated Vault client never picks up the VAULT_TOKEN of the user's shell (hvac does, for a
token of None): on a laptop that token is the user's own Vault's, and an existing-cluster run's is the admin's."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.local.openbao import VaultEndpoint


def test_the_local_platforms_anonymous_client_sends_no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_TOKEN", "hvs.not-a-real-token-of-the-user")
    endpoint = VaultEndpoint("https://127.0.0.1:8200", Path("/nonexistent/ca.crt"), "openbao", "2.7.2")
    assert not endpoint.client().token
    assert endpoint.client("given").token == "given"
