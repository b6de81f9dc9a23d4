"""The kind platform's installs rendered offline, by the real tools, for checks without Docker.

``istioctl manifest generate`` renders exactly what ``istioctl install`` would apply from our
IstioOperator (the istioctl built from the istio.io/istio module for the local platform), and
``helm template`` renders a chart with our values. Both run with no cluster and no network.
What they print is parsed into objects, so that tests can dry-run each one on the local API
server and read the arguments and environment of the Deployments our plan depends on.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from cluster.kubectl.commands import Runner, documents, run

Manifest = dict[str, Any]


def objects(text: str) -> list[Manifest]:
    """A multi-document YAML stream as objects; empty documents (a template rendered to nothing) dropped."""
    return [doc for doc in yaml.safe_load_all(text) if isinstance(doc, dict) and doc.get("kind")]


def render_istio(istioctl: Path, operator: Manifest, *, revision: str | None = None,
                 runner: Runner = run) -> list[Manifest]:
    """What `istioctl install -f` (with ``revision``: `--revision`, a canary) would apply for ``operator``.
    Raises CommandFailed (one line) when istioctl refuses it: an unknown field in the IstioOperator is an
    error there, as it would be at install."""
    extra = ["--revision", revision] if revision else []
    return objects(runner([str(istioctl), "manifest", "generate", *extra, "-f", "-"], stdin=documents([operator]),
                          timeout=120))


def render_chart(helm: Path, chart: Path, release: str, namespace: str, values: Mapping[str, Any], *,
                 kube_version: str, runner: Runner = run) -> list[Manifest]:
    """``helm template`` of a chart directory with ``values`` (as `helm upgrade --install -f -` gets them), for
    the Kubernetes ``kube_version`` the cluster runs (a chart may require one; offline helm assumes v1.20)."""
    return objects(runner([str(helm), "template", release, str(chart), "--namespace", namespace,
                           "--kube-version", kube_version, "--include-crds", "-f", "-"],
                          stdin=documents([dict(values)]), timeout=120))


def node_kube_version(node_image: str) -> str:
    """The Kubernetes version of a kind node image ("kindest/node:v1.36.4@sha256:..." gives "v1.36.4")."""
    return node_image.split("@", 1)[0].rsplit(":", 1)[1]


def find(objs: list[Manifest], kind: str, name: str) -> Manifest:
    """The one object of ``kind`` named ``name``; KeyError naming what was there when there is none."""
    for obj in objs:
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    there = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in objs if o["kind"] == kind)
    raise KeyError(f"no {kind} {name} in the rendered objects (there: {', '.join(there) or 'none'})")


def container_env(deployment: Manifest, container: str | None = None) -> dict[str, str]:
    """A Deployment container's literal environment (name -> value; valueFrom entries as '')."""
    spec = deployment["spec"]["template"]["spec"]["containers"]
    found = next((c for c in spec if container is None or c["name"] == container), spec[0])
    return {str(e["name"]): str(e.get("value", "")) for e in found.get("env") or []}


def container_args(deployment: Manifest, container: str | None = None) -> list[str]:
    spec = deployment["spec"]["template"]["spec"]["containers"]
    found = next((c for c in spec if container is None or c["name"] == container), spec[0])
    return [str(a) for a in found.get("args") or []]
