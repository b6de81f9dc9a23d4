"""The kind platform: the kubectl-driven platform (cluster/kubectl/platform.py) on the kind cluster
this run brought up (cluster/kind/bringup.py), with its own Vault's keys in the run's state.

Not yet run against a live kind cluster (the machine that wrote it has no Docker engine): every
command shape and parser is unit-tested with a recording runner in tests/test_kind_platform.py.
"""

from __future__ import annotations

from cluster.kubectl.platform import KubectlPlatform


class KindPlatform(KubectlPlatform):
    name = "kind"
