"""The local platform's Istio: what the node can run, and istiod brought up with its CA mode.

``ca: istio-csr`` (the default): istiod's CA is off, our mesh CA serves pilot-agents
(cluster/local/meshca.py), istiod serves xDS and the webhook with a certificate from the run's
CA, which is in istio-ca-root-cert (the mesh CA publishes it) and in the webhook's CA bundle.

``ca: plugin``: istiod's own CA signs with a Vault-issued intermediate in ``cacerts`` (the files
the kubelet would sync from the istio-system/cacerts Secret), reloads it when they change, and
publishes istio-ca-root-cert itself; the webhook's CA bundle is that root.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import yaml
from kubernetes.client import ApiClient

from cluster.istio import DEFAULT_REVISION
from cluster.kube import Kube
from cluster.local import istiod
from cluster.local.istiobuild import Envoy, IstioBinaries
from cluster.local.kubelet import Image
from cluster.local.process import ManagedProcess
from cluster.profile import Setup
from cluster.runstate import RunState
from cluster.vault import PluginCa
from cluster.workloads import APP_IMAGE

# Rendered with placeholders (TEST-NET-1 addresses, RFC 5737) and cached: a run's own addresses
# are put in afterwards, so the render (a few seconds of istioctl) happens once per setup.
DISCOVERY_PLACEHOLDER = "192.0.2.10:15012"
CA_PLACEHOLDER = "192.0.2.11:15443"


def node_images(istio: IstioBinaries, envoy: Envoy, tgpod: Path) -> dict[str, Image]:
    """The images this node can run. proxyv2 is pilot-agent, Envoy and its bootstrap template where
    the image keeps them (pilot/docker/Dockerfile.proxyv2); the app image is tgpod at /tgpod."""
    proxy = Image(("/usr/local/bin/pilot-agent",), {
        "/usr/local/bin/pilot-agent": str(istio.pilot_agent),
        "/usr/local/bin/envoy": str(envoy.path),
        "/var/lib/istio/envoy/envoy_bootstrap_tmpl.json": str(istio.bootstrap_template),
    })
    app = Image(("/tgpod",), {"/tgpod": str(tgpod)})
    return {f"{istiod.HUB}/proxyv2:{istio.pins.build_version}": proxy, APP_IMAGE: app}


def rendered(istio: IstioBinaries, setup: Setup, cache: Path, *, discovery: str,
             ca_address: str, revision: str = DEFAULT_REVISION) -> list[dict[str, object]]:
    """istioctl's manifests for this setup, these addresses and this control-plane revision (rendered
    once per setup and revision, then cached)."""
    iop = istiod.operator(setup, tag=istio.pins.build_version, discovery_address=DISCOVERY_PLACEHOLDER,
                          ca_address=CA_PLACEHOLDER, revision=revision)
    key = hashlib.sha256(json.dumps([istio.pins.module, iop], sort_keys=True).encode()).hexdigest()[:16]
    cached = cache / "istio-render" / f"{key}.yaml"
    if not cached.exists():
        istiod.render(istio.istioctl, iop, cached.parent / key)
        (cached.parent / key / "rendered.yaml").rename(cached)
    text = cached.read_text().replace(DISCOVERY_PLACEHOLDER, discovery).replace(CA_PLACEHOLDER, ca_address)
    return [doc for doc in yaml.safe_load_all(text) if isinstance(doc, dict)]


def write_cacerts(state: RunState, plugin: PluginCa) -> Path:
    """istiod's cacerts files (PluginCa.files: key first), each replaced atomically."""
    folder = state.file("istiod/cacerts")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name, text in plugin.files().items():
        tmp = folder / f".{name}.tmp"
        tmp.write_text(text)
        tmp.chmod(0o600)
        tmp.rename(folder / name)
    return folder


@dataclass(frozen=True)
class IstiodStart:
    process: ManagedProcess
    endpoints: istiod.IstiodEndpoints


def start_istiod(state: RunState, api: ApiClient, istio: IstioBinaries, objects: list[dict[str, object]], *,
                 server: str, server_ca: Path, node_ip: str, webhook_ca: str, tls: istiod.IstiodTls | None,
                 cacerts: Path | None, owner: bool, revision: istiod.Revision = istiod.DEFAULT) -> IstiodStart:
    """Install what the revision's istiod needs in the cluster, then run it as its own service account."""
    kube = Kube(api)
    kube.ensure_namespace(istiod.ISTIO_NS, state.run_id)
    webhook_url = istiod.IstiodEndpoints(node_ip, 0, revision.xds_port, revision.webhook_port).webhook_url
    istiod.install(api, objects, webhook_url=webhook_url, ca_bundle=webhook_ca, run_id=state.run_id)
    token = kube.request_token(istiod.ISTIO_NS, revision.process, audience=None, seconds=7 * 24 * 3600)
    kubeconfig = istiod.write_kubeconfig(state, server, server_ca, token, revision)
    process, endpoints = istiod.istiod_process(state, istio, kubeconfig, node_ip=node_ip, tls=tls, cacerts=cacerts,
                                               owner=owner, revision=revision)
    return IstiodStart(process, endpoints)
