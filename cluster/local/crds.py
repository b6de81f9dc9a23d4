"""Install the real Istio and cert-manager CRDs and wait until they are served."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from cluster.wait import wait_until


def load_crds(paths: Sequence[Path]) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                docs.append(doc)
    return docs


def install_crds(api: ApiClient, paths: Sequence[Path], *, timeout: float = 30) -> list[str]:
    extensions = client.ApiextensionsV1Api(api)
    names = []
    for doc in load_crds(paths):
        try:
            extensions.create_custom_resource_definition(doc)
        except ApiException as err:
            if err.status != 409:
                raise
        names.append(doc["metadata"]["name"])

    def established() -> list[str]:
        pending = []
        for crd in extensions.list_custom_resource_definition().items:
            conditions = {c.type: c.status for c in (crd.status.conditions or [])}
            if crd.metadata.name in names and conditions.get("Established") != "True":
                pending.append(crd.metadata.name)
        return pending

    wait_until(lambda: not established(), timeout=timeout, describe=f"{len(names)} CRDs to be Established")
    return names
