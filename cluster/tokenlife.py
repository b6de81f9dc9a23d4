"""How long a Vault token from a Kubernetes-auth login lives, as Vault and OpenBao compute it.

The rule is one function upstream, ``CalculateTTL`` in ``sdk/framework/lease.go`` (HashiCorp
Vault sdk v0.25.1; OpenBao ``sdk/v2`` is the same logic). Login calls it with the issue time
now (``vault/request_handling.go`` ``LoginCreateToken``), renewal with the lease's issue time
(``vault/expiration.go`` ``RenewToken``), so a token's max TTL counts from its creation:

- the effective max is the smallest of the mount's max (``sys/auth/<mount>/tune``, which falls
  back to the system's 32 days), the role's ``token_max_ttl`` and its ``token_explicit_max_ttl``
  (zeros are skipped): the mount clamps the role;
- a token that is not periodic gets ``token_ttl`` (else the mount's default), cut to that max;
- a periodic token (``token_period``) gets the period, capped at the effective max, on every
  renewal, and has no end unless ``token_explicit_max_ttl`` is set, which then ends it that long
  after its creation.

Renewal through Kubernetes auth (``path_login.go`` ``pathLoginRenew`` in
vault-plugin-auth-kubernetes v0.23.1, and in OpenBao's copy up to v2.6.2) checks only that the
role still exists and keeps the policies the token got at login: a policy taken off the role
stops a running token only at its max. Whether renewal reviews the service-account JWT again
depends on the server (``renewal_reviews_the_jwt``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# kube-apiserver caches a successful token authentication, TokenReview included, for 10 s
# (k8s.io/kubernetes pkg/kubeapiserver/options/authentication.go NewBuiltInAuthenticationOptions:
# TokenSuccessCacheTTL: 10 * time.Second; there is no flag for it). Measured here: 10.1 s.
# Every bound that starts at a deletion adds it, plus a margin for the informer that reads the
# service account (pkg/controller/serviceaccount/tokengetter.go) and for the clock.
TOKEN_REVIEW_CACHE_S = 10.0
DELETION_MARGIN_S = 3.0


@dataclass(frozen=True)
class TokenLifetime:
    """What one login through a role gets. Seconds; ``max_s`` is None for a token with no end
    (periodic, without an explicit max)."""

    where: str
    ttl_s: float
    max_s: float | None
    period_s: float = 0.0
    explicit_max_s: float = 0.0

    @property
    def unbounded(self) -> bool:
        return self.max_s is None


def _seconds(value: Any) -> float:
    """Vault answers durations as seconds (int) in role and tune reads."""
    return float(value or 0)


def effective_max(mount_max_s: float, token_max_ttl_s: float, explicit_max_s: float) -> float:
    """min(mount or system max, token_max_ttl, token_explicit_max_ttl), zeros skipped (CalculateTTL)."""
    candidates = [v for v in (mount_max_s, token_max_ttl_s, explicit_max_s) if v > 0]
    return min(candidates) if candidates else math.inf


def token_lifetime(where: str, role: Mapping[str, Any], tune: Mapping[str, Any]) -> TokenLifetime:
    """A role's tokens, from the role as Vault reads it back and its mount's tune.

    ``role``: ``auth/<mount>/role/<name>`` data (``token_ttl``, ``token_max_ttl``,
    ``token_explicit_max_ttl``, ``token_period``, seconds). ``tune``: ``sys/auth/<mount>/tune``
    data (``default_lease_ttl``, ``max_lease_ttl``, seconds, the system's where the mount sets none).
    """
    explicit = _seconds(role.get("token_explicit_max_ttl"))
    ceiling = effective_max(_seconds(tune.get("max_lease_ttl")), _seconds(role.get("token_max_ttl")), explicit)
    period = _seconds(role.get("token_period"))
    if period > 0:
        ttl = min(period, ceiling)  # the explicit max is part of the ceiling
        return TokenLifetime(where, ttl, explicit or None, ttl, explicit)
    ttl = _seconds(role.get("token_ttl")) or _seconds(tune.get("default_lease_ttl"))
    return TokenLifetime(where, min(ttl, ceiling), ceiling, 0.0, explicit)


def token_end(lookup: Mapping[str, Any], lifetime: TokenLifetime) -> float | None:
    """When a live token stops being renewable, in Unix seconds: its creation (``auth/token/lookup``
    ``creation_time``) plus its effective max. The token's own explicit max is the one stored at
    login; the rest is re-read from the role on each renewal. None for a token with no end."""
    created = float(lookup["creation_time"])
    explicit = _seconds(lookup.get("explicit_max_ttl"))
    if lifetime.period_s or lookup.get("period"):
        return created + explicit if explicit else None
    if lifetime.max_s is None:
        return None
    return created + min(lifetime.max_s, explicit) if explicit else created + lifetime.max_s


def renewal_reviews_the_jwt(flavor: str, version: str) -> bool:
    """Whether renewing a Kubernetes-auth token sends its service-account JWT to TokenReview again.

    HashiCorp Vault: no (vault-plugin-auth-kubernetes v0.23.1, path_login.go pathLoginRenew checks
    only the role), so a deleted service account keeps renewing until the token's max TTL. OpenBao:
    not in v2.6.2 nor in main of 2026-08-21 (the same pathLoginRenew); OpenBao 2.7.2 does, and its
    renewal fails with "failed to validate token and secret still exist for "<account>" during
    renewal" once the account is gone and the API server's cache has run out (observed live here;
    the 2.7 source is not served by the Go module proxy, so this is taken as from 2.7.0).
    ``flavor``: "openbao" or "vault"; ``version``: as sys/seal-status reports it ("2.7.2", "v1.21.4").
    """
    match = re.match(r"v?(\d+)\.(\d+)", version.strip())
    return flavor == "openbao" and match is not None and (int(match[1]), int(match[2])) >= (2, 7)
