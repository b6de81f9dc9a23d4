"""The kind platform's install plan, in the order the cert-manager istio-csr docs give.

The plan is data: each step is a command or an object to apply. The kind
platform executes it; ``--dry-run`` prints it (redacted) and touches nothing.

1. kind cluster (service-account issuer)   5. root CA into istio-root-ca
2. cert-manager                             6. istio-csr
3. Vault or OpenBao (server mode), init,    7. istioctl install (CA server off, caAddress istio-csr)
   unseal; cluster/vault.py configures it   8. the workload image, mesh policy and workloads
4. the Vault Issuer with serviceAccountRef

With ``ca: plugin`` steps 2 and 4 to 6 give way to one: a Vault-signed
intermediate in istio-system/cacerts, and istiod keeps its own CA server.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from cluster.kind import manifests, monitoring, vaulttls
from cluster.kind.charts import ChartSource, plan_sources
from cluster.kubectl.tools import debug_image
from cluster.profile import Setup
from cluster.runstate import RUN_LABEL, cache_dir
from cluster.secrets import redact
from cluster.vault import PluginCa
from cluster.versions import VERSIONS_FILE

SA_ISSUER = "https://kubernetes.default.svc.cluster.local"


@dataclass(frozen=True)
class Step:
    title: str
    argv: tuple[str, ...] = ()  # a tool's command line; the documents go to its stdin
    documents: tuple[dict[str, Any], ...] = ()  # objects applied, or a file the command reads
    notes: str = ""
    action: str = "run"  # run | apply | init-vault | configure-vault | monitoring | root-ca | plugin-ca | cluster
    #   | load-image | load-exporter-image
    # action "cluster" with --reuse-cluster: the commands that bring an existing cluster back to the baseline
    reset: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class KindPins:
    node_image: str
    debug_image: str
    vault_images: dict[str, str] = field(default_factory=dict)  # flavor -> server image (--vault external)


def load_kind_pins() -> KindPins:
    data = tomllib.loads(VERSIONS_FILE.read_text())
    images = data["images"]
    return KindPins(node_image=str(images["kind_node"]), debug_image=debug_image(),
                    vault_images={"vault": str(images["vault_server"]), "openbao": str(images["openbao_server"])})


REUSED_CLUSTER = "trustgrid-reuse"
FLAVORS = ("vault", "openbao")  # each installs as its Helm release, in the namespace of its name


def cluster_name(run_id: str, *, reuse: bool = False) -> str:
    return REUSED_CLUSTER if reuse else f"trustgrid-{run_id.removeprefix('tg-')}"[:50]


def reset_commands(flavor: str, vault_ns: str) -> tuple[tuple[str, ...], ...]:
    """What --reuse-cluster runs on a cluster that exists: nothing of an earlier run is trusted.

    Every namespace any run labelled goes (test namespaces, istio-system, --vault external's reviewer
    namespace), every cluster-scoped object any run labelled (--vault external's reviewer binding), and
    both Vault flavours with their storage, whichever this run installs: an earlier run may have used
    the other one. So Vault is initialized again and its keys are this run's; the Helm charts and
    istioctl that follow are idempotent and put their pieces back as the profile says.
    ``flavor`` and ``vault_ns`` are this run's; they are reset like the other flavour.
    """
    flavors = {flavor: vault_ns, **{other: other for other in FLAVORS if other != flavor}}
    commands: list[tuple[str, ...]] = [
        ("kubectl", "delete", "namespace", "-l", RUN_LABEL, "--ignore-not-found", "--wait=true", "--timeout=300s"),
        ("kubectl", "delete", "clusterrolebinding", "-l", RUN_LABEL, "--ignore-not-found"),
    ]
    for name, namespace in flavors.items():
        commands += [
            ("helm", "uninstall", name, "--namespace", namespace, "--ignore-not-found", "--wait"),
            ("kubectl", "delete", "pvc", "--namespace", namespace, "--all", "--ignore-not-found", "--wait=true",
             "--timeout=120s"),
        ]
    return tuple(commands)


EXTERNAL_PLACEHOLDER = "http://<the container's address on the kind network>:8200"


def install_plan(setup: Setup, run_id: str, *, flavor: str = "vault", pins: KindPins | None = None,
                 reuse: bool = False, external: bool = False, external_address: str | None = None,
                 vault_tls: vaulttls.VaultTls | None = None,
                 charts: Mapping[str, ChartSource] | None = None, vault_tag: str | None = None) -> list[Step]:
    """The steps in order. With ``external`` Vault runs in a container beside the nodes; its address is
    known once it runs, so bring-up builds the plan again with ``external_address`` (same steps).
    ``vault_tls``: Vault's certificate for the run (bring-up keeps its CA; one is made when not given).
    ``charts``: where each chart comes from (cluster/kind/charts.py); when not given, as a dry run shows it.
    ``vault_tag``: the server's image tag ("2.6.2"), as suites/upgrade starts on its FROM; None: the chart's."""
    pins = pins or load_kind_pins()
    chart = charts or plan_sources(cache_dir(), None, fetch=False)
    name = cluster_name(run_id, reuse=reuse)
    vault_ns = "openbao" if flavor == "openbao" else "vault"
    tls = vault_tls or vaulttls.make_vault_tls(flavor, vault_ns)
    vault = manifests.VaultTarget(vault_ns, f"https://{flavor}.{vault_ns}.svc:8200", flavor)
    vault_ca: str | None = tls.ca_pem
    if external:
        vault = manifests.VaultTarget(manifests.EXTERNAL_VAULT_NS, external_address or EXTERNAL_PLACEHOLDER, flavor)
        vault_ca = None  # the external container listens in plaintext on the kind network (see README)

    def helm(release: str, key: str, namespace: str, values: dict[str, Any], also: str = "") -> Step:
        source = chart[key]
        return Step(f"{release} {source.version} (Helm)",
                    ("helm", "upgrade", "--install", release, *source.helm_args(), "--namespace", namespace,
                     "--create-namespace", "--wait", "-f", "-"), (values,),
                    notes=f"chart pinned by {source.pinned_by}" + (f"; {also}" if also else ""))

    cluster = Step(f"kind cluster {name}", ("kind", "create", "cluster", "--name", name, "--config", "-",
                                             "--wait", "120s"),
                   (manifests.kind_config(name, SA_ISSUER, pins.node_image),),
                   notes=("--reuse-cluster: if it exists, reset it to the baseline instead of creating it"
                          if reuse else ""),
                   action="cluster", reset=reset_commands(flavor, vault_ns) if reuse else ())
    audited = setup.vault.audit and not external  # the audit pipeline needs the chart's audit volume
    exporter_image = [
        Step("the audit exporter's image, which runs beside Vault in its pod",
             ("kind", "load", "docker-image", monitoring.EXPORTER_IMAGE, "--name", name),
             notes=(f"built first: docker build -t {monitoring.EXPORTER_IMAGE} from a context of only "
                    "cluster/kind/exporter.Dockerfile and the exporter's modules (cluster/kind/exporterimage.py)"),
             action="load-exporter-image"),
    ] if audited else []
    in_cluster = [
        Step(f"{flavor}'s TLS certificate and its CA, made for the run",
             documents=(manifests.namespace(vault_ns, run_id), vaulttls.tls_secret(vault_ns, tls, run_id)),
             action="apply"),
        *exporter_image,
        helm(flavor, flavor, vault_ns, manifests.vault_values(flavor, audit=setup.vault.audit, image_tag=vault_tag)),
        Step(f"initialize and unseal {flavor} through the API; keys kept 0600 in the run's state directory",
             notes=(f"a supervised port-forward to svc/{flavor} (it outlives the pod); once GET sys/seal-status "
                    "answers sealed and uninitialized: PUT sys/init (3 shares, threshold 2), then sys/unseal "
                    "twice; the pod is Ready only once unsealed"), action="init-vault"),
    ]
    outside = [
        Step(f"{flavor} in a container on the kind network (testcontainers), initialized and unsealed; "
             "keys kept 0600 in the run's state directory",
             documents=tuple(manifests.token_reviewer(run_id)),
             notes=(f"image {pins.vault_images.get(flavor, '?')}, server mode, file storage; pods reach it at "
                    f"{vault.address}; it reviews tokens as {manifests.EXTERNAL_VAULT_NS}/{manifests.REVIEWER}; "
                    "no audit volume, so no audit exporter or Prometheus: the audit evidence needs --prometheus-url"),
             action="external-vault"),
    ]
    vault_steps = [
        *(outside if external else in_cluster),
        Step("configure Vault: Kubernetes auth, KV, PKI root and intermediate, roles per namespace (cluster/vault.py)",
             notes=(f"the Issuer's role requires audience {manifests.issuer_audience()}" if setup.mesh.ca == "istio-csr"
                    else "no mesh CA role: with ca: plugin istiod signs with its own key"), action="configure-vault"),
    ]
    if audited:
        vault_steps += [
            Step(f"Prometheus's token for sys/metrics (Secret {monitoring.METRICS_TOKEN_SECRET}) and the exporter's "
                 "Service", documents=(monitoring.exporter_service(vault_ns, flavor, run_id),),
                 notes="the token may read only sys/metrics (cluster/promconfig.py METRICS_POLICY); made through the "
                       "API, never printed", action="monitoring"),
            helm(monitoring.PROMETHEUS_RELEASE, "prometheus", vault_ns, monitoring.prometheus_values(flavor, vault_ns),
                 also=(f"the audit evidence reads it through a supervised port-forward to svc/"
                       f"{monitoring.PROMETHEUS_SERVICE} (--prometheus-url names another instead)")),
        ]
    workloads = [
        Step("the workload image", ("kind", "load", "docker-image", manifests.APP_IMAGE, "--name", name),
             notes=("built first: tgpod by the host's Go, static, for the Docker engine's OS/arch, then docker build "
                    "-t trustgrid/tgpod:dev from a context of only cluster/kind/Dockerfile (FROM scratch) and tgpod"),
             action="load-image"),
        Step("mesh policy and workloads",
             documents=tuple(manifests.mesh_and_workloads(setup, vault, run_id, vault_ca=tls.ca_pem)),
             action="apply"),
    ]
    if setup.mesh.ca == "plugin":
        # Istio's "plug in CA certificates": istiod keeps its CA server, signing with a Vault-issued intermediate.
        return [cluster, *vault_steps,
                Step("a Vault-signed intermediate for istiod, as istio-system/cacerts (ca: plugin)",
                     documents=(manifests.namespace(manifests.ISTIO_NS, run_id),
                                manifests.cacerts_secret(PluginCa("<intermediate from pki/root/sign-intermediate>",
                                                                  "<its key, made here>", "<root CA PEM>"), run_id)),
                     action="plugin-ca"),
                Step("Istio with the plugged-in CA", ("istioctl", "install", "-y", "-f", "-"),
                     (manifests.istio_operator(setup, ca="plugin"),)),
                *workloads]
    return [
        cluster,
        helm("cert-manager", "cert_manager", manifests.CERT_MANAGER_NS, manifests.cert_manager_values()),
        *vault_steps,
        Step("the Vault Issuer and the right to request its tokens",
             documents=(manifests.namespace(manifests.ISTIO_NS, run_id), *manifests.issuer_identity(run_id),
                        manifests.mesh_issuer(vault, manifests.MESH_CA_ROLE, run_id, ca_pem=vault_ca)),
             action="apply"),
        Step("the root CA for istio-csr (Vault returns only the intermediate)",
             documents=(manifests.root_ca_secret("<root CA PEM from pki/cert/ca>", run_id),), action="root-ca"),
        helm("cert-manager-istio-csr", "istio_csr", manifests.CERT_MANAGER_NS, manifests.istio_csr_values(setup)),
        # istiod reads its serving certificate from the Secret istio-csr has cert-manager issue (istio-csr
        # pkg/istiodcert/worker.go: SecretName istiod-tls) only as it starts; the volume is optional, so an istiod
        # started before it exists runs without it.
        Step(f"istiod's serving certificate ({manifests.ISTIOD_TLS_SECRET}), issued through istio-csr",
             ("kubectl", "-n", manifests.ISTIO_NS, "wait", "--for=create", f"secret/{manifests.ISTIOD_TLS_SECRET}",
              "--timeout=180s")),
        Step("Istio with istio-csr as its CA", ("istioctl", "install", "-y", "-f", "-"),
             (manifests.istio_operator(setup, ca=setup.mesh.ca),)),
        *workloads,
    ]


def render(plan: list[Step]) -> str:
    """The plan as a person reads it: numbered commands, then their documents as YAML; secrets redacted."""
    out = []
    for number, step in enumerate(plan, 1):
        out.append(f"# {number}. {step.title}")
        if step.argv:
            out.append("$ " + " ".join(step.argv))
        if step.notes:
            out.append(f"# {step.notes}")
        for command in step.reset:
            out.append("$ " + " ".join(command) + "   # only on a reused cluster")
        for document in step.documents:
            out.append("---")
            out.append(yaml.safe_dump(json.loads(json.dumps(document)), sort_keys=False).rstrip())
        out.append("")
    return redact("\n".join(out))
