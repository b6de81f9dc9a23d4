"""The existing-cluster platform's options: each mistake is one line naming the option and the fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.errors import SettingsError
from cluster.settings import build_settings
from cluster.targets import DEFAULT_MESH_CA, DEFAULT_VAULT_WORKLOAD, parse_layout
from cluster.vaultlayout import VaultLayout
from tests.lifecycle import ROOT

GOOD: dict[str, object] = {"platform": "kubeconfig", "vault_addr": "https://vault.example.test:8200",
                           "workload_image": "r/tgpod:1"}
ENV = {"VAULT_TOKEN": "not-a-real-token"}


def _error(options: dict[str, object], env: dict[str, str] = ENV) -> str:
    with pytest.raises(SettingsError) as raised:
        build_settings(options, env)
    message = str(raised.value)
    assert "\n" not in message
    return message


def test_the_defaults_name_istio_csr_and_a_helm_installed_vault(tmp_path: Path) -> None:
    existing = build_settings(GOOD, ENV, rootdir=tmp_path).existing
    assert existing is not None
    assert existing.layout == VaultLayout() and existing.vault_cluster_addr == GOOD["vault_addr"]
    assert (existing.vault_workload.namespace, existing.vault_workload.resource) == ("vault", "statefulset/vault")
    assert f"{existing.mesh_ca.namespace}/{existing.mesh_ca.resource}" == DEFAULT_MESH_CA
    assert existing.mesh_ca_role == "mesh-ca" and existing.unseal_keys is None and existing.verify() is True
    assert build_settings({"platform": "local"}, {}, rootdir=tmp_path).existing is None


def test_vault_addr_image_and_token_are_required() -> None:
    assert "--vault-addr" in _error({**GOOD, "vault_addr": None})
    assert "--workload-image" in _error({**GOOD, "workload_image": None})
    message = _error(GOOD, {})
    assert "VAULT_TOKEN" in message and "ps" in message


def test_the_address_may_come_from_vault_addr() -> None:
    existing = build_settings({**GOOD, "vault_addr": None}, {**ENV, "VAULT_ADDR": "http://127.0.0.1:8200/"}).existing
    assert existing is not None and existing.vault_addr == "http://127.0.0.1:8200"


def test_a_layout_is_key_equals_mount() -> None:
    assert parse_layout("auth=k8s-staging, pki_int=pki/int/") == VaultLayout(kubernetes_path="k8s-staging",
                                                                              pki_int_path="pki/int")
    assert "--vault-layout item 'auth'" in _error({**GOOD, "vault_layout": "auth"})
    assert "use keys auth, kv, pki, pki_int" in _error({**GOOD, "vault_layout": "transit=x"})


@pytest.mark.parametrize("value", ["vault", "vault/vault", "vault/pod/vault-0", "/statefulset/vault"])
def test_a_workload_is_namespace_kind_name(value: str) -> None:
    message = _error({**GOOD, "vault_workload": value})
    assert f"--vault-workload {value!r} is not NAMESPACE/KIND/NAME" in message and DEFAULT_VAULT_WORKLOAD in message
    assert "--mesh-ca" in _error({**GOOD, "mesh_ca": value})


def test_unseal_keys_must_be_readable_by_their_owner_only(tmp_path: Path) -> None:
    keys = tmp_path / "init.json"
    keys.write_text(json.dumps({"unseal_keys_b64": ["not-a-real-key"]}))
    keys.chmod(0o644)
    assert f"chmod 600 {keys}" in _error({**GOOD, "vault_unseal_keys": str(keys)})
    keys.chmod(0o600)
    existing = build_settings({**GOOD, "vault_unseal_keys": str(keys)}, ENV).existing
    assert existing is not None and existing.unseal_keys == keys
    assert "No such file" in _error({**GOOD, "vault_unseal_keys": str(tmp_path / "missing.json")})
    assert "--vault-ca" in _error({**GOOD, "vault_ca": str(tmp_path / "missing.pem")})


def test_the_suite_stops_in_one_line_before_anything_is_touched(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    result = subprocess.run([sys.executable, "-m", "pytest", "suites/", "--platform", "kubeconfig",
                             "-p", "no:cacheprovider", "--report-dir", str(tmp_path / "reports")],
                            cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 4
    assert result.stderr.strip() == ("ERROR: trustgrid: --platform kubeconfig needs the Vault address; "
                                     "pass --vault-addr or set VAULT_ADDR"), result.stderr
    assert not (tmp_path / "reports").exists()
