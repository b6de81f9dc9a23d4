"""The local kubelet's reading of a Pod spec, on a Pod really injected by istiod (recorded here)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from cluster.local.podspec import container_argv, container_env, expand, field_value, format_map, quantity
from cluster.local.sandbox import inside

FIXTURES = Path(__file__).parent / "fixtures" / "istio"
POD = json.loads((FIXTURES / "pod-server-injected.json").read_text())
NAMESPACE = POD["metadata"]["namespace"]


def container(name: str) -> dict[str, object]:
    return next(c for c in [*POD["spec"]["containers"], *POD["spec"].get("initContainers", [])] if c["name"] == name)


def test_the_proxy_gets_its_environment_as_the_kubelet_resolves_it() -> None:
    env = container_env(POD, container("istio-proxy"), node_cpus=2, node_memory=8 << 30)
    assert env["POD_NAME"] == "server" and env["POD_NAMESPACE"] == NAMESPACE
    assert env["INSTANCE_IP"] == POD["status"]["podIP"] and env["HOST_IP"] == POD["status"]["hostIP"]
    assert env["SERVICE_ACCOUNT"] == "server"
    assert env["ISTIO_CPU_LIMIT"] == "2" and env["GOMAXPROCS"] == "2"  # limits.cpu 2, divisor 1
    assert env["GOMEMLIMIT"] == str(1 << 30)  # limits.memory 1Gi
    assert json.loads(env["PROXY_CONFIG"])["proxyMetadata"]["SECRET_TTL"] == "30s"
    argv = container_argv(container("istio-proxy"), ["/usr/local/bin/pilot-agent"], env)
    assert argv[:5] == ["/usr/local/bin/pilot-agent", "proxy", "sidecar", "--domain", f"{NAMESPACE}.svc.cluster.local"]


def test_istio_init_runs_istio_iptables_from_the_image_entrypoint() -> None:
    argv = container_argv(container("istio-init"), ["/usr/local/bin/pilot-agent"], {})
    assert argv[:2] == ["/usr/local/bin/pilot-agent", "istio-iptables"]
    assert argv[argv.index("-d") + 1] == "15090,15021,15020"  # the proxy's own ports stay uncaptured


def test_expansion_follows_the_kubelets_rules() -> None:
    env = {"A": "1", "B": "x"}
    assert expand("$(A)-$(B)", env) == "1-x"
    assert expand("$$(A)", env) == "$(A)"  # $$ escapes
    assert expand("$(MISSING) $(A", env) == "$(MISSING) $(A"  # left as written


def test_downward_api_files_quote_values_as_go_does() -> None:
    assert format_map({"b": 'say "hi"', "a": "1"}) == 'a="1"\nb="say \\"hi\\""'
    assert field_value(POD, "metadata.labels").startswith("app=")
    assert field_value(POD, "metadata.labels['app']") == "server"
    with pytest.raises(ValueError, match="unsupported fieldRef"):
        field_value(POD, "spec.nothing")


@pytest.mark.parametrize(("text", "value"), [("2", 2), ("100m", Decimal("0.1")), ("1Gi", 1 << 30), ("128Mi", 1 << 27)])
def test_quantities(text: str, value: Decimal) -> None:
    assert quantity(text) == value


def test_paths_resolve_inside_the_container_root_never_the_hosts(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "run").mkdir(parents=True)
    (root / "var").mkdir()
    (root / "var" / "run").symlink_to("/run")  # absolute: /run of the container, not of the host
    (root / "etc").mkdir()
    (root / "etc" / "rel").symlink_to("../run")
    assert inside(root, "/var/run/secrets/istio") == root / "run" / "secrets" / "istio"
    assert inside(root, "/etc/rel/x") == root / "run" / "x"
    assert inside(root, "/../../etc") == root / "etc"
