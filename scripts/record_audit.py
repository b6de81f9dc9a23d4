"""Record what the real OpenBao's file audit device writes for each refusal the exporter classifies.

    .venv/bin/python scripts/record_audit.py

Brings the local platform up (its OpenBao has a file audit device), then makes OpenBao refuse, for real:
a token whose policies do not grant a tenant's secret; a revoked token; an expired one; a login to a role
that does not exist; a login by a service account the role does not bind; a login by the role's account
name from another namespace. Writes every line the audit device wrote into
tests/fixtures/audit/openbao-audit.jsonl, and tests/fixtures/audit/expected.json: for each refusal, the
request path, what the exporter must call it, and its tenant's namespace and role. Tokens are HMACed by
the audit device (its default); the script checks no secret pattern is in what it writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import hvac
import hvac.exceptions

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cluster.local.bringup import start_local  # noqa: E402
from cluster.secrets import find_secrets, register  # noqa: E402
from cluster.settings import build_settings  # noqa: E402
from cluster.tenancy import open_tenant  # noqa: E402
from cluster.vault import login_kubernetes  # noqa: E402
from cluster.wait import wait_until  # noqa: E402

OUT = ROOT / "tests" / "fixtures" / "audit"


def refused(what: str, action: object) -> str:
    """The error text of a call Vault must refuse."""
    try:
        action()  # type: ignore[operator]
    except hvac.exceptions.VaultError as err:
        return str(err)
    raise SystemExit(f"Vault did not refuse {what}")


def main() -> int:
    settings = build_settings({})
    expected: list[dict[str, str]] = []
    with start_local(settings, print) as platform, \
            open_tenant(platform, settings.profile.setup, "audit", ("app",)) as tenant, \
            open_tenant(platform, settings.profile.setup, "elsewhere", ("app",)) as other:
        audit_log = platform.vault.audit_log
        before = len(audit_log.read_bytes().splitlines())
        admin = platform.vault_admin()
        layout = platform.vault_layout
        secret = f"{layout.kv_path}/data/{tenant.namespace}/app"

        def read_with(token: str) -> None:
            client = hvac.Client(url=admin.url, token=register(token), verify=admin.adapter.session.verify)
            client.secrets.kv.v2.read_secret_version(path=f"{tenant.namespace}/app", mount_point=layout.kv_path,
                                                     raise_on_deleted_version=True)

        no_grant = admin.auth.token.create(policies=["default"], ttl="5m")["auth"]["client_token"]
        refused("a token without a grant", lambda: read_with(no_grant))
        expected.append({"path": secret, "reason": "permission_denied", "namespace": tenant.namespace})

        revoked = admin.auth.token.create(policies=["default"], ttl="5m")["auth"]["client_token"]
        admin.auth.token.revoke(register(revoked))
        refused("a revoked token", lambda: read_with(revoked))
        expected.append({"path": secret, "reason": "token_invalid", "namespace": tenant.namespace})

        expiring = register(admin.auth.token.create(policies=["default"], ttl="2s", explicit_max_ttl="2s")
                            ["auth"]["client_token"])

        def expired() -> bool:
            try:
                admin.auth.token.lookup(expiring)
            except hvac.exceptions.VaultError:
                return True
            return False

        wait_until(expired, timeout=30, interval=0.5, describe="the 2 s token to expire")
        refused("an expired token", lambda: read_with(expiring))
        expected.append({"path": secret, "reason": "token_invalid", "namespace": tenant.namespace})

        login = f"auth/{layout.kubernetes_path}/login"
        jwt = tenant.token("app")
        anonymous = hvac.Client(url=admin.url, token="", verify=admin.adapter.session.verify)
        refused("a missing role", lambda: login_kubernetes(anonymous, layout, "no-such-role", jwt))
        expected.append({"path": login, "reason": "role_missing", "role": "no-such-role"})

        tenant.kube.ensure_service_account(tenant.namespace, "intruder", platform.run_id)  # not bound to the role
        stranger = tenant.token("intruder")
        refused("an unbound account", lambda: tenant.login(stranger, role=tenant.role))
        expected.append({"path": login, "reason": "service_account_not_authorized", "role": tenant.role})

        elsewhere = other.token("app")  # the role's account name, from another namespace
        refused("another namespace", lambda: tenant.login(elsewhere, role=tenant.role))
        expected.append({"path": login, "reason": "namespace_not_authorized", "role": tenant.role})

        lines = audit_log.read_bytes().splitlines()[before:]
    text = b"\n".join(lines).decode() + "\n"
    if found := find_secrets(text):
        raise SystemExit(f"the audit lines hold {found}: not written")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "openbao-audit.jsonl").write_text(text)
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {len(lines)} audit lines and {len(expected)} refusals into {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
