"""The existing-cluster platform's guards: run only where it was meant to run.

A pre-upgrade certification attaches to someone's staging cluster. The
context must match an allowlist (by default, local throwaway clusters)
unless --allow-live-cluster says otherwise; cluster-wide faults (Vault
sealed or down, the CA down, a root rotation) also need --allow-disruptive.
Both refusals are one line, before anything is touched.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from cluster.errors import PlatformUnavailable, SettingsError

DEFAULT_ALLOWLIST = r"^kind-|^k3d-|^minikube$"


class LiveClusterRefused(PlatformUnavailable):
    """A context outside the allowlist, without --allow-live-cluster."""


@dataclass(frozen=True)
class Attachment:
    context: str
    allowlist: str = DEFAULT_ALLOWLIST
    allow_live_cluster: bool = False
    allow_disruptive: bool = False


def kubeconfig_path() -> Path:
    """The first file of KUBECONFIG, else ~/.kube/config (what kubectl reads)."""
    return Path(os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or Path.home() / ".kube" / "config")


def current_context(kubeconfig: Path) -> str:
    """The kubeconfig's current-context (what kubectl would use)."""
    try:
        data = yaml.safe_load(kubeconfig.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise SettingsError(f"cannot read the kubeconfig {kubeconfig} ({type(err).__name__})",
                            fix="set KUBECONFIG or pass --context with a readable kubeconfig") from None
    context = str(data.get("current-context") or "")
    if not context:
        raise SettingsError(f"the kubeconfig {kubeconfig} has no current-context", fix="pass --context NAME")
    return context


def check_context(attachment: Attachment) -> None:
    try:
        allowed = re.search(attachment.allowlist, attachment.context) is not None
    except re.error as err:
        raise SettingsError(f"--context-allowlist {attachment.allowlist!r} is not a regular expression ({err})",
                            fix=f"pass a Python regular expression such as {DEFAULT_ALLOWLIST!r}") from None
    if not allowed and not attachment.allow_live_cluster:
        raise LiveClusterRefused(
            f"refusing kube context {attachment.context!r}: it does not match the allowlist {attachment.allowlist!r}",
            fix="pass --allow-live-cluster if this cluster may be tested, or choose a matching --context")


def disruptive_refusal(attachment: Attachment, what: str) -> str:
    """Why a cluster-wide fault must not run here ('' when it may)."""
    if attachment.allow_disruptive:
        return ""
    return (f"{what} is a cluster-wide fault and context {attachment.context!r} is an existing cluster; "
            "pass --allow-disruptive to run it")
