"""The kubelet's reading of a Pod spec, as pure functions: environment, downward API, quantities.

The local runtime (cluster/local/kubelet.py) runs what Istio's injector put into a Pod. These
are the rules it applies to the spec, written after the kubelet's own code in the pinned
k8s.io/kubernetes module, so that pilot-agent sees what it would see on a node:

- ``$(VAR)`` expansion in command, args and env values (third_party/forked/golang/expansion,
  ``Expand``): a defined variable is replaced, ``$$`` is an escaped ``$``, anything else stays;
- ``fieldRef`` (pkg/kubelet/kubelet_pods.go ``podFieldSelectorRuntimeValue`` and
  pkg/fieldpath ``ExtractFieldPathAsString``) and ``resourceFieldRef`` (pkg/api/v1/resource
  ``ExtractContainerResourceValue``: the quantity divided by the divisor, rounded up);
- downward API files of labels and annotations: ``key="value"`` lines, sorted, the value quoted
  as Go's strconv.Quote does (pkg/fieldpath ``FormatMap``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([a-zA-Z]*)$")
_SUFFIXES: dict[str, Decimal] = {
    "": Decimal(1), "m": Decimal("0.001"), "k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9),
    "T": Decimal(10**12), "Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30), "Ti": Decimal(2**40)}


def quantity(text: str) -> Decimal:
    """A Kubernetes resource quantity (``2``, ``100m``, ``1Gi``) as a number."""
    match = _QUANTITY.match(str(text).strip())
    if not match or match.group(2) not in _SUFFIXES:
        raise ValueError(f"not a quantity: {text!r}")
    return Decimal(match.group(1)) * _SUFFIXES[match.group(2)]


def go_quote(value: str) -> str:
    """strconv.Quote for the characters a label or annotation may hold (json.dumps agrees on them,
    except that Go writes non-ASCII as is)."""
    return json.dumps(value, ensure_ascii=False)


def format_map(values: Mapping[str, str]) -> str:
    """pkg/fieldpath FormatMap: one ``key="value"`` line per entry, sorted by key."""
    return "\n".join(f"{key}={go_quote(values[key])}" for key in sorted(values))


def expand(text: str, env: Mapping[str, str]) -> str:
    """``$(VAR)`` expansion as the kubelet does it (expansion.Expand)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                close = text.find(")", i + 2)
                if close != -1:
                    name = text[i + 2:close]
                    out.append(env[name] if name in env else text[i:close + 1])
                    i = close + 1
                    continue
        out.append(text[i])
        i += 1
    return "".join(out)


def field_value(pod: Mapping[str, Any], path: str) -> str:
    """A ``fieldRef.fieldPath`` of the Pod, as the kubelet resolves it."""
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    simple = {
        "metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"), "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"), "status.podIP": status.get("podIP"),
        "status.hostIP": status.get("hostIP"),
        "status.podIPs": ",".join(p.get("ip", "") for p in status.get("podIPs") or []),
        "status.hostIPs": ",".join(p.get("ip", "") for p in status.get("hostIPs") or []),
    }
    if path in simple:
        return str(simple[path] or "")
    if path == "metadata.labels":
        return format_map(labels)
    if path == "metadata.annotations":
        return format_map(annotations)
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if match:
        return str((labels if match.group(1) == "labels" else annotations).get(match.group(2), ""))
    raise ValueError(f"unsupported fieldRef {path!r}")


def resource_value(container: Mapping[str, Any], ref: Mapping[str, Any], *, node_cpus: int,
                   node_memory: int) -> str:
    """A ``resourceFieldRef``: the container's limit (the node's capacity where it sets none),
    divided by the divisor and rounded up."""
    resource = str(ref["resource"])
    kind, _, name = resource.partition(".")
    amounts = (container.get("resources") or {}).get(kind) or {}
    if name in amounts:
        value = quantity(amounts[name])
    elif name == "cpu":
        value = Decimal(node_cpus)
    elif name == "memory":
        value = Decimal(node_memory)
    else:
        raise ValueError(f"unsupported resourceFieldRef {resource!r}")
    divisor = quantity(str(ref.get("divisor") or "1"))
    return str(math.ceil(value / divisor))


def container_env(pod: Mapping[str, Any], container: Mapping[str, Any], *, node_cpus: int,
                  node_memory: int) -> dict[str, str]:
    """The container's environment, in spec order, each value expanded against those before it."""
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        name = str(item["name"])
        if "value" in item:
            env[name] = expand(str(item["value"]), env)
            continue
        source = item.get("valueFrom") or {}
        if "fieldRef" in source:
            env[name] = field_value(pod, str(source["fieldRef"]["fieldPath"]))
        elif "resourceFieldRef" in source:
            env[name] = resource_value(container, source["resourceFieldRef"], node_cpus=node_cpus,
                                       node_memory=node_memory)
        else:
            raise ValueError(f"env {name}: unsupported source {sorted(source)}")
    return env


def container_argv(container: Mapping[str, Any], entrypoint: list[str], env: Mapping[str, str]) -> list[str]:
    """command (else the image's entrypoint) followed by args, each expanded."""
    command = [expand(str(c), env) for c in container.get("command") or []] or list(entrypoint)
    return command + [expand(str(a), env) for a in container.get("args") or []]
