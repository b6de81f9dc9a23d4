"""Record what real local proxies answer, as fixtures for the parsers every platform shares.

    .venv/bin/python scripts/record_fixtures.py

Brings the local platform up, deploys a meshed server and client, and writes into
tests/fixtures/istio/: the server's injected Pod (as istiod's webhook wrote it), its Envoy's
secrets config dump (what the local platform reads through Envoy's admin), and what
``istioctl proxy-config secret -f`` makes of the whole dump (what the kind platform reads
through istioctl). Private keys are never in them: Envoy's admin redacts them. Into
tests/fixtures/agent/: the client's tgpod agent answering /vault (what every platform parses into a
VaultRead, over the agent socket or through `kubectl exec ... tgpod agent /vault`), logged in and
reading, and refused (its token revoked while the agent was paused, so that it did not log in
again). Its token is never in it (the agent reports the accessor). Into tests/fixtures/istio/ as well:
istiod's debug syncz with both proxies connected (what ``istioctl x internal-debug syncz`` prints on
kind). Into tests/fixtures/openbao/: a server upgraded from --upgrade-vault's FROM to TO answering
sys/seal-status (before and after), sys/health and LIST sys/version-history (what the kind upgrade
reads).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cluster.local.bringup import start_local  # noqa: E402
from cluster.local.istiobuild import find_istio  # noqa: E402
from cluster.local.pods import _agent  # noqa: E402
from cluster.runstate import new_run_id  # noqa: E402
from cluster.settings import Settings, build_settings  # noqa: E402
from cluster.tenancy import open_tenant  # noqa: E402
from cluster.vault import revoke_role_tokens  # noqa: E402
from cluster.wait import wait_until  # noqa: E402

OUT = ROOT / "tests" / "fixtures" / "istio"
AGENT = ROOT / "tests" / "fixtures" / "agent"
OPENBAO = ROOT / "tests" / "fixtures" / "openbao"


def main() -> int:
    settings = build_settings({})
    istioctl = find_istio(settings.cache_dir).istioctl
    with start_local(settings, print) as platform, \
            open_tenant(platform, settings.profile.setup, "fixtures", ("server", "client")) as tenant:
        server = platform.deploy(tenant.namespace, "server", "server")
        client = platform.deploy(tenant.namespace, "client", "client")
        wait_until(lambda: platform.read_vault(client).ok, timeout=30, describe="the client's first secret read")
        with _agent(platform.pods.agent_socket(client), 10) as agent:
            vault_ok = agent.get("/vault").text
        # Refused: its token revoked while its agent is paused (so that it does not log in again).
        platform.pause_vault_agent(client, True)
        revoke_role_tokens(platform.vault_admin(), platform.vault_layout.kubernetes_path, tenant.role)
        with _agent(platform.pods.agent_socket(client), 10) as agent:
            vault_refused = agent.get("/vault").text
        syncz = platform.canary()._istiod("default").debug("syncz")
        pod = platform.pods.run_of(server).pod
        dump = platform.pods.envoy(server, "/config_dump?include_eds")
        secrets = platform.pods.envoy(server, "/config_dump?resource=dynamic_active_secrets")
        with tempfile.NamedTemporaryFile("w", suffix=".json") as handle:
            json.dump(dump, handle)
            handle.flush()
            istioctl_json = subprocess.run([str(istioctl), "proxy-config", "secret", "-f", handle.name, "-o", "json"],
                                           capture_output=True, text=True, check=True).stdout
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "pod-server-injected.json").write_text(json.dumps(pod, indent=1))
    (OUT / "envoy-secrets-server.json").write_text(json.dumps(secrets, indent=1))
    (OUT / "istioctl-proxy-config-secret-server.json").write_text(istioctl_json)
    (OUT / "istiod-syncz.json").write_text(json.dumps(syncz, indent=2))  # as istioctl indents it (json.Indent)
    AGENT.mkdir(parents=True, exist_ok=True)
    (AGENT / "vault-read-ok.json").write_text(vault_ok)
    (AGENT / "vault-read-refused.json").write_text(vault_refused)
    record_upgraded_openbao(settings)
    print(f"wrote {OUT}")
    return 0


def record_upgraded_openbao(settings: Settings) -> None:
    low, high = settings.upgrade_vault
    setup = replace(settings.profile.setup, vault=replace(settings.profile.setup.vault, nodes=1))
    raft = replace(settings, run_id=new_run_id(), vault_release=low, profile=replace(settings.profile, setup=setup))
    with start_local(raft, print) as platform:
        before = platform.vault_admin().sys.read_seal_status()
        platform.upgrades().upgrade_vault(high, clock=time.monotonic, progress=print)
        admin = platform.vault_admin()
        answers = {f"seal-status-{low}": before, f"seal-status-{high}": admin.sys.read_seal_status(),
                   f"health-{high}": admin.sys.read_health_status(method="GET"),
                   f"version-history-{low}-{high}": admin.adapter.list("/v1/sys/version-history")}
    OPENBAO.mkdir(parents=True, exist_ok=True)
    for name, answer in answers.items():
        (OPENBAO / f"{name}.json").write_text(json.dumps(answer, indent=1))


if __name__ == "__main__":
    sys.exit(main())
