"""Why Vault refused a request, from the ``error`` its file audit device writes (one JSON object per line).

Each reason is matched on the message OpenBao really writes; the source of each string is named beside
it (openbao/openbao, paths as in its tree). Vault writes the same strings: OpenBao kept these messages.
A refusal whose message matches none is ``other``, so the reasons are a closed set, a bounded label.
"""

from __future__ import annotations

from typing import Final

PERMISSION_DENIED: Final = "permission_denied"
TOKEN_INVALID: Final = "token_invalid"  # noqa: S105 - a reason label, not a token
ROLE_MISSING: Final = "role_missing"
SERVICE_ACCOUNT_NOT_AUTHORIZED: Final = "service_account_not_authorized"
NAMESPACE_NOT_AUTHORIZED: Final = "namespace_not_authorized"
SEALED: Final = "sealed"
OTHER: Final = "other"

# First match wins.
_MATCHES: Final = (
    # internal/vault/request_handling.go: a token given in a token request's body that is not a string.
    ("invalid token", TOKEN_INVALID),
    # internal/builtin/credential/kubernetes/path_login.go: the login's role does not exist,
    ("invalid role name", ROLE_MISSING),
    # ... or no longer does when a token it issued is renewed (pathLoginRenew, "role %s does not exist during
    # renewal").
    ("does not exist during renewal", ROLE_MISSING),
    # ... the JWT's service account is not in the role's bound_service_account_names (403),
    ("service account name not authorized", SERVICE_ACCOUNT_NOT_AUTHORIZED),
    # ... or its namespace is not in bound_service_account_namespaces.
    ("namespace not authorized", NAMESPACE_NOT_AUTHORIZED),
    # sdk/helper/consts/error.go ErrSealed.
    ("Vault is sealed", SEALED),
    # sdk/logical/error.go ErrPermissionDenied: the token's policies do not grant the path.
    ("permission denied", PERMISSION_DENIED),
)
REASONS: Final = (*(reason for _, reason in _MATCHES), OTHER)


def reason(error: str, *, token_known: bool = True) -> str:
    """The reason for an audit entry's ``error`` message, one of REASONS. ``token_known``: the entry's auth
    names the caller's token (an ``accessor``). A token the store does not know (never issued, expired, or
    revoked: the store forgets all three alike) is refused with plain ErrPermissionDenied, and the entry
    then carries no token at all (internal/vault/request_handling.go fetchACLTokenEntryAndEntity,
    ``te == nil``): that is TOKEN_INVALID, not a missing grant. Seen so in the recorded OpenBao log."""
    found = next((found for text, found in _MATCHES if text in error), OTHER)
    return TOKEN_INVALID if found == PERMISSION_DENIED and not token_known else found
