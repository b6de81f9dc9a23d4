"""The audit evidence check can fail: with the exporter stopped, a real refusal is not proven.

A check that cannot fail proves nothing. The platform's audit exporter is stopped on purpose, Vault
refuses a read, and scenarios/evidence.py must say the refusal is not in Prometheus; then the exporter
is started again and the next refusal is proven, so the pipeline is whole for the tests after this one.
"""

from __future__ import annotations

import pytest

from cluster.local.platform import LocalPlatform
from cluster.settings import Settings
from scenarios.evidence import AuditEvidence
from suites.conformance.test_audit_pipeline import refusal_proven

pytestmark = pytest.mark.cluster_fault


def _refusal_proven(local: LocalPlatform, settings: Settings) -> AuditEvidence:
    return refusal_proven(local, local.prometheus_url(), settings.profile.policy)


def test_a_stopped_exporter_fails_the_evidence_check(local: LocalPlatform, settings: Settings) -> None:
    faults = local.faults()
    faults.stop_audit_exporter()
    try:
        broken = _refusal_proven(local, settings)
    finally:
        faults.start_audit_exporter()
    assert not broken.proven, f"proven with the exporter stopped: {broken.judgement.detail}"
    assert "not in Prometheus" in broken.judgement.detail, broken.judgement.detail
    mended = _refusal_proven(local, settings)
    assert mended.proven, mended.judgement.detail
