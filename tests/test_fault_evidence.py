"""Vault's own word that a token expired (scenarios/faults.py ``expiry_evidence``): the rule is OpenBao's
(vault/token_store.go lookupInternal and leaseEntry.ttl); suites/platform/test_vault_rules.py meets the real server."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cluster.errors import PlatformUnavailable
from cluster.platform import VaultNodeStatus
from scenarios.faults import every_node_sealed, expiry_evidence

EXPIRE = "2026-12-01T03:00:00Z"


def test_a_token_vault_no_longer_knows_is_evidence() -> None:
    assert "no longer knows" in expiry_evidence(None)


def test_a_negative_ttl_is_evidence_before_the_revocation_ends() -> None:
    """A busy server revokes late (queued, retried with backoff): the expiry is evidence on its own."""
    said = expiry_evidence({"ttl": -3, "expire_time": EXPIRE})
    assert EXPIRE in said and "ttl -3 s" in said


@pytest.mark.parametrize("answer", [
    {"ttl": 0, "expire_time": EXPIRE},  # truncated: up to a second before the expiry
    {"ttl": 5, "expire_time": EXPIRE},
    {"ttl": 0, "expire_time": None},  # a token that never expires (root) reports ttl 0 and no expire_time
    {},
])
def test_a_token_not_yet_past_its_expiry_is_no_evidence(answer: dict[str, object]) -> None:
    assert expiry_evidence(answer) == ""


@given(st.integers(min_value=0, max_value=10**9))
def test_no_ttl_of_zero_or_more_is_ever_evidence(ttl: int) -> None:
    assert expiry_evidence({"ttl": ttl, "expire_time": EXPIRE}) == ""


class _Nodes:
    def __init__(self, sealed: list[bool] | None) -> None:
        self.sealed = sealed

    def upgrades(self) -> _Nodes:
        if self.sealed is None:
            raise PlatformUnavailable("one server, no front", fix="-")
        return self

    def vault_nodes(self) -> tuple[VaultNodeStatus, ...]:
        return tuple(VaultNodeStatus(f"node-{i}", "2.7.2", s, False) for i, s in enumerate(self.sealed or []))


@pytest.mark.parametrize(("sealed", "evidence"), [
    ([True, True, True], "each of the 3 Vault nodes reports sealed=true"),
    ([True, False, True], ""),  # one still unsealed: not the fault
    (None, ""),  # no raft nodes to ask: a refusal alone proves nothing
])
def test_a_seal_behind_a_front_that_refuses_is_proven_by_every_node(sealed: list[bool] | None,
                                                                    evidence: str) -> None:
    assert every_node_sealed(_Nodes(sealed)) == evidence  # type: ignore[arg-type]
