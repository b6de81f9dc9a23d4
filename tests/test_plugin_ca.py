"""``ca: plugin`` on the local platform: istiod's own CA signs with an intermediate from Vault's root.

The platform this test brings up runs real istiod with ``cacerts`` (Istio's plugged-in CA: the files
ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem; security/pkg/pki/ca/ca.go NewPluggedCertIstioCAOptions).
Without a separate mesh CA, the mesh-CA faults stop istiod itself (as the kind platform scales
deploy/istiod), and while it is down the API server cannot call the injection webhook either.
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cryptography import x509

from cluster.errors import TrustgridError
from cluster.local.bringup import start_local
from cluster.local.platform import LocalPlatform
from cluster.local.pods import PodStartError
from cluster.profile import PROFILES_DIR
from cluster.settings import build_settings
from cluster.tenancy import Tenant, open_tenant
from cluster.vault import PkiRotation, PluginCa
from cluster.wait import wait_until

pytestmark = pytest.mark.platform
ROOT = Path(__file__).resolve().parents[1]
PLUGIN_PROFILE = PROFILES_DIR / "plugin-ca.yaml"


@pytest.fixture(scope="module")
def plugin() -> Iterator[LocalPlatform]:
    with start_local(build_settings({"profile": str(PLUGIN_PROFILE)}), lambda _: None) as platform:
        yield platform


@pytest.fixture
def tenant(plugin: LocalPlatform) -> Iterator[Tenant]:
    with open_tenant(plugin, plugin.settings.profile.setup, "plugin-ca") as opened:
        yield opened


def test_workload_certificates_chain_through_the_plugged_in_intermediate_to_vaults_root(
        plugin: LocalPlatform, tenant: Tenant) -> None:
    server = plugin.deploy(tenant.namespace, "server", "app")
    client = plugin.deploy(tenant.namespace, "client", "app")
    assert plugin.call(client, server, canary="tg-canary-plugin", timeout=5).status == 200
    status = plugin.sidecar_status(server)
    assert status.issuer == f"trustgrid istiod CA {plugin.run_id}"
    assert status.spiffe == f"spiffe://cluster.local/ns/{tenant.namespace}/sa/app"
    # The intermediate istiod signs with is Vault's: it verifies under the live root of pki.
    cacerts = Path(plugin.state.file("istiod/cacerts"))
    intermediate = x509.load_pem_x509_certificate((cacerts / "ca-cert.pem").read_bytes())
    endpoint = plugin.connection.vault_endpoint
    answer = requests.get(f"{endpoint.addr}/v1/{plugin.vault_layout.pki_root_path}/ca/pem", verify=str(endpoint.ca),
                          timeout=10)
    root = x509.load_pem_x509_certificate(answer.content)
    intermediate.verify_directly_issued_by(root)
    leaf = x509.load_der_x509_certificate(plugin.peer_certificate(server))
    leaf.verify_directly_issued_by(intermediate)


def test_with_istiod_down_no_pod_is_created_and_the_proxies_cannot_renew(plugin: LocalPlatform, tenant: Tenant) -> None:
    server = plugin.deploy(tenant.namespace, "server", "app")
    faults = plugin.faults()
    faults.stop_mesh_ca()
    try:
        with pytest.raises(PodStartError) as raised:
            plugin.deploy(tenant.namespace, "late", "app")
        message = str(raised.value)
        assert "\n" not in message
        assert "could not call the sidecar injector" in message and "istiod must be running" in message
        # The server's proxy renews on schedule (the default profile's 30s certificates) and reports it.
        last = wait_until(lambda: plugin.sidecar_status(server).last_error or None, timeout=60, interval=0.5,
                          describe=f"the proxy of {tenant.namespace}/server to report a failed renewal")
        assert any(sign in str(last) for sign in ("Unavailable", "connection refused", "connection error")), last
    finally:
        faults.start_mesh_ca()
    late = plugin.deploy(tenant.namespace, "late", "app")  # and nothing half-made is in the way
    assert plugin.call(late, server, canary="tg-canary-plugin-back", timeout=5).status == 200


def test_cacerts_from_an_unrelated_root_are_refused_by_istiod_in_its_own_words(
        plugin: LocalPlatform, tenant: Tenant) -> None:
    """istiod takes a root bundle only when it contains, or is contained in, the current one
    (pilot/pkg/bootstrap/istio_ca.go handleEvent, pemBundleHasSubsetRelation); it keeps signing as before."""
    server = plugin.deploy(tenant.namespace, "server", "app")
    client = plugin.deploy(tenant.namespace, "client", "app")
    rotation = PkiRotation(plugin.vault_admin(), plugin.vault_layout, plugin.run_id)
    cacerts = Path(plugin.state.file("istiod/cacerts"))
    original = PluginCa(cert_pem=(cacerts / "ca-cert.pem").read_text(), key_pem=(cacerts / "ca-key.pem").read_text(),
                        root_pem=(cacerts / "root-cert.pem").read_text())
    stranger = rotation.new_root(f"stranger-{tenant.namespace[-6:]}")
    try:
        ca = rotation.plugin_ca("stranger", root_issuer=stranger, trusted_roots=[rotation.root_pem(stranger)])
        before = plugin.sidecar_status(server).issuer
        with pytest.raises(TrustgridError) as raised:
            plugin.faults().install_plugin_ca(ca)
        assert "istiod kept its old cacerts" in str(raised.value)
        assert "ROOT-CA not supported" in str(raised.value) and "\n" not in str(raised.value)
    finally:
        rotation.remove_root(stranger)
        plugin.faults().install_plugin_ca(original)  # the files on disk and istiod agree again
    plugin.renew_certificate(server)
    assert plugin.sidecar_status(server).issuer == before
    assert plugin.call(client, server, canary="tg-canary-stranger", timeout=5).status == 200


def test_the_plugin_profile_passes_the_ca_scenarios_on_istiods_own_ca(tmp_path: Path) -> None:
    """The suite's own chaos scenarios, on a platform of their own with ca: plugin: the three rotations
    against istiod's cacerts reload, and mesh-ca-down as istiod down."""
    junit = tmp_path / "junit.xml"
    selected = "cert-rotation or intermediate-rotation or root-rotation or mesh-ca-down"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "suites/chaos", "-k", selected, "--profile", str(PLUGIN_PROFILE), "-q",
         "-p", "no:cacheprovider", f"--junitxml={junit}", "--report-dir", str(tmp_path / "reports")],
        cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    assert junit.exists(), f"no junit report; pytest said:\n{result.stdout[-3000:]}{result.stderr[-2000:]}"
    cases = {str(case.get("name")): [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
             for case in ET.parse(junit).getroot().iter("testcase")}
    assert set(cases) == {f"test_chaos[{s}]" for s in selected.split(" or ")}, cases
    assert all(not outcome for outcome in cases.values()), (cases, result.stdout[-4000:])
