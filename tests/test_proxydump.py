"""The proxy's certificate, from Envoy's secrets dump, recorded from a real local proxy."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from cluster.proxydump import NoWorkloadCertificate, workload_secret

FIXTURES = Path(__file__).parent / "fixtures" / "istio"
DUMP = json.loads((FIXTURES / "envoy-secrets-server.json").read_text())


def camel(value: Any) -> Any:
    """istioctl's protojson spelling of the same dump."""
    if isinstance(value, dict):
        return {re.sub(r"_([a-z])", lambda m: m.group(1).upper(), k): camel(v) for k, v in value.items()}
    if isinstance(value, list):
        return [camel(v) for v in value]
    return value


def test_the_workload_certificate_and_its_trust_bundle_are_read_from_envoys_dump() -> None:
    found = workload_secret(DUMP)
    assert found.spiffe.startswith("spiffe://cluster.local/ns/") and found.spiffe.endswith("/sa/server")
    assert found.issuer.startswith("trustgrid intermediate")  # signed through Vault's pki_int
    assert found.roots == 1 and re.fullmatch(r"[0-9a-f]+", found.serial)
    # Envoy's last_updated: when the proxy took it, within its validity (notBefore is backdated by Vault).
    assert found.not_before <= found.obtained_at < found.not_after
    assert found.obtained_at.utcoffset() is not None and found.last_error == ""


def test_istioctls_camel_case_reads_the_same() -> None:
    as_istioctl = {"dynamicActiveSecrets": camel(DUMP["configs"])}
    assert workload_secret(as_istioctl) == workload_secret(DUMP)


def test_no_workload_certificate_is_its_own_error() -> None:
    with pytest.raises(NoWorkloadCertificate):
        workload_secret({"configs": []})
