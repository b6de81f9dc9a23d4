"""The local platform's kube-controller-manager, proven by what its controllers do on the live API server.

The local platform's kubelet (cluster/local/kubelet.py) is not the upstream one: it writes a Pod's
status itself (phase Running, Ready, podIP and podIPs) and registers one Node. The EndpointSlice
test pins down what the upstream controller asks of such a Pod and Node before it lists the IP;
the sources are cited where each rule is used.
"""

from __future__ import annotations

import base64
import functools
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from cluster.kube import Kube, labels, namespace_name
from cluster.local.controllermanager import CONTROLLERS
from cluster.local.platform import LocalPlatform
from cluster.wait import wait_until

# Generous for a busy 2-core runner; each of these takes well under a second when idle,
# a namespace deletion about 5.6 s.
REACT_S = 30.0
NAMESPACE_GONE_S = 60.0
# TEST-NET-1 (RFC 5737): addresses no pod network of this machine hands out or routes.
ON_NODE_IP, NO_NODE_IP, LOST_NODE_IP = "192.0.2.10", "192.0.2.11", "192.0.2.12"



@pytest.fixture
def scratch(local: LocalPlatform, kube: Kube, request: pytest.FixtureRequest) -> Iterator[Callable[[], str]]:
    """Plain namespaces of this run (no injection label: Pods here are not mutated), deleted afterwards."""
    made: list[str] = []

    def make() -> str:
        name = namespace_name("kcm", request.node.name[5:30], secrets.token_hex(3))
        kube.ensure_namespace(name, local.run_id)
        made.append(name)
        return name

    yield make
    for name in made:
        kube.delete_namespace(name)


def _not_found(call: Callable[[], Any]) -> bool:
    """Make the call; True when the API server answers 404."""
    try:
        call()
    except ApiException as err:
        if err.status == 404:
            return True
        raise
    return False


def _default_account(kube: Kube, namespace: str) -> client.V1ServiceAccount:
    return kube.core.read_namespaced_service_account("default", namespace)


def test_the_controller_manager_runs_only_the_controllers_the_platform_needs(local: LocalPlatform) -> None:
    argv = Path(f"/proc/{local.state.pids()['kube-controller-manager']}/cmdline").read_bytes().split(b"\0")
    enabled = argv[argv.index(b"--controllers") + 1].decode().split(",")
    assert enabled == list(CONTROLLERS)
    # No kubelet ever reports: node lifecycle would taint every Node and evict its Pods.
    assert not {"node-lifecycle-controller", "taint-eviction-controller", "*"} & set(enabled)
    assert local.versions.extra["kube-controller-manager"] == local.connection.kubernetes_version


def test_a_deleted_namespace_really_goes_away(kube: Kube, scratch: Callable[[], str], local: LocalPlatform) -> None:
    """pkg/controller/namespace/deletion/namespaced_resources_deleter.go: content first, then the finalizer.

    It takes at least 5 s: namespace_controller.go enqueues a deleted namespace after
    namespaceDeletionGracePeriod (5 s), for HA API servers and etcd members to catch up.
    """
    namespace = scratch()
    meta = client.V1ObjectMeta(name="content", labels=labels(local.run_id))
    kube.core.create_namespaced_config_map(namespace, client.V1ConfigMap(metadata=meta, data={"k": "v"}))
    kube.core.create_namespaced_service_account(namespace, client.V1ServiceAccount(metadata=meta))
    wait_until(lambda: _default_account(kube, namespace), timeout=REACT_S, describe=f"{namespace}/default")
    # An unscheduled Pod (no spec.nodeName) is deleted at once: pkg/registry/core/pod/strategy.go
    # CheckGracefulDelete sets the grace period to 0 when the pod is not bound to a node.
    kube.core.create_namespaced_pod(namespace, client.V1Pod(
        metadata=meta, spec=client.V1PodSpec(automount_service_account_token=False,
                                             containers=[client.V1Container(name="app", image="local/tgpod")])))
    kube.delete_namespace(namespace)
    kube.wait_namespace_gone(namespace, NAMESPACE_GONE_S)


def test_kube_root_ca_crt_is_published_in_a_new_namespace(kube: Kube, scratch: Callable[[], str],
                                                          local: LocalPlatform) -> None:
    """pkg/controller/certificates/rootcacertpublisher/publisher.go: --root-ca-file as ca.crt, in every namespace."""
    namespace = scratch()
    published = wait_until(lambda: kube.core.read_namespaced_config_map("kube-root-ca.crt", namespace),
                           timeout=REACT_S, describe=f"{namespace}/kube-root-ca.crt")
    assert published.data["ca.crt"].strip() == Path(local.connection.ca).read_text().strip()


def test_the_default_service_account_appears_in_a_new_namespace(kube: Kube, scratch: Callable[[], str]) -> None:
    """pkg/controller/serviceaccount/serviceaccounts_controller.go: ensures "default" in every active namespace."""
    namespace = scratch()
    account = wait_until(lambda: _default_account(kube, namespace), timeout=REACT_S,
                         describe=f"{namespace}/default service account")
    assert account.metadata.name == "default"


def test_an_owned_object_goes_with_its_owner(kube: Kube, scratch: Callable[[], str], local: LocalPlatform) -> None:
    """pkg/controller/garbagecollector: a dependent whose only owner is deleted is deleted too."""
    namespace = scratch()
    owner = kube.core.create_namespaced_config_map(namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="owner", labels=labels(local.run_id))))
    reference = client.V1OwnerReference(api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid)
    kube.core.create_namespaced_config_map(namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="dependent", labels=labels(local.run_id), owner_references=[reference])))
    kube.core.delete_namespaced_config_map("owner", namespace, propagation_policy="Background")
    wait_until(lambda: _not_found(lambda: kube.core.read_namespaced_config_map("dependent", namespace)),
               timeout=REACT_S, interval=0.5, describe=f"{namespace}/dependent to be collected")


def test_a_service_account_token_secret_gets_a_token_the_api_server_accepts(
        kube: Kube, scratch: Callable[[], str], local: LocalPlatform) -> None:
    """pkg/controller/serviceaccount/tokens_controller.go, signing with --service-account-private-key-file."""
    namespace = scratch()
    account = wait_until(lambda: _default_account(kube, namespace), timeout=REACT_S, describe="default account")
    kube.core.create_namespaced_secret(namespace, client.V1Secret(
        type="kubernetes.io/service-account-token",
        metadata=client.V1ObjectMeta(name="legacy", labels=labels(local.run_id),
                                     annotations={"kubernetes.io/service-account.name": "default"})))

    def filled() -> bool:
        secret = kube.core.read_namespaced_secret("legacy", namespace)
        return bool((secret.data or {}).get("token"))

    wait_until(filled, timeout=REACT_S, describe=f"{namespace}/legacy to get its token")
    secret = kube.core.read_namespaced_secret("legacy", namespace)
    token = base64.b64decode(secret.data["token"]).decode()
    review = kube.authn.create_token_review(client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token)))
    assert review.status.authenticated, review.status.error
    assert review.status.user.username == f"system:serviceaccount:{namespace}:default"
    assert review.status.user.uid == account.metadata.uid


def _running_pod(kube: Kube, namespace: str, name: str, ip: str, node: str | None, run_id: str) -> None:
    """A Pod as the local runtime makes it: created through the API, then its status patched Running and Ready."""
    kube.core.create_namespaced_pod(namespace, client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=labels(run_id, app="echo")),
        spec=client.V1PodSpec(node_name=node, automount_service_account_token=False,
                              containers=[client.V1Container(name="app", image="local/tgpod")])))
    kube.core.patch_namespaced_pod_status(name, namespace, {"status": {
        "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": "True"}]}})


def test_a_service_gets_an_endpointslice_with_its_ready_pods_ip(kube: Kube, scratch: Callable[[], str],
                                                                local: LocalPlatform) -> None:
    """What the EndpointSlice controller asks of a Pod before it lists the Pod's IP.

    k8s.io/endpointslice reconciler.go (*Reconciler).reconcileByAddressType, v0.35.4, which
    pkg/controller/endpointslice/endpointslice_controller.go syncService calls with the Pods
    matching the selector:
    - util/controller_utils.go ShouldPodBeInEndpoints: not Succeeded/Failed, and a podIP or podIPs;
    - then ``r.nodeLister.Get(pod.Spec.NodeName)``: a Pod whose Node object does not exist
      (also an empty spec.nodeName) is skipped unless the Service sets publishNotReadyAddresses;
    - utils.go podToEndpoint: the addresses come from status.podIPs alone (not status.podIP),
      ready means the Ready condition is True and no deletionTimestamp.
    """
    namespace = scratch()
    wait_until(lambda: _default_account(kube, namespace), timeout=REACT_S, describe="default account")
    node = f"kcm-{local.run_id}-{secrets.token_hex(3)}"[:63]
    kube.core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=node, labels=labels(local.run_id))))
    pods = {"no-node": None, "lost-node": f"{node}-missing", "on-node": node}
    try:
        # The Pod that must be listed comes last: once the slice shows it, the controller's
        # informer has seen the two others too (one ordered watch of Pods).
        _running_pod(kube, namespace, "no-node", NO_NODE_IP, pods["no-node"], local.run_id)
        _running_pod(kube, namespace, "lost-node", LOST_NODE_IP, pods["lost-node"], local.run_id)
        _running_pod(kube, namespace, "on-node", ON_NODE_IP, pods["on-node"], local.run_id)
        kube.core.create_namespaced_service(namespace, client.V1Service(
            metadata=client.V1ObjectMeta(name="echo", labels=labels(local.run_id)),
            spec=client.V1ServiceSpec(selector={"app": "echo"},
                                      ports=[client.V1ServicePort(name="http", port=80, target_port=8080)])))
        discovery = client.DiscoveryV1Api(kube.api)

        def endpoints() -> list[Any]:
            slices = discovery.list_namespaced_endpoint_slice(
                namespace, label_selector="kubernetes.io/service-name=echo").items
            listed = [(s, e) for s in slices for e in s.endpoints or []]
            assert listed, f"{len(slices)} slices, no endpoints yet"
            return listed

        listed = wait_until(endpoints, timeout=REACT_S, describe="the EndpointSlice of Service echo")
        assert [e.addresses for _, e in listed] == [[ON_NODE_IP]]
        endpoint_slice, endpoint = listed[0]
        assert endpoint.target_ref.name == "on-node" and endpoint.node_name == node
        assert endpoint.conditions.ready and endpoint.conditions.serving and not endpoint.conditions.terminating
        assert [(p.name, p.port) for p in endpoint_slice.ports] == [("http", 8080)]
        assert endpoint_slice.metadata.labels["endpointslice.kubernetes.io/managed-by"] == \
            "endpointslice-controller.k8s.io"
    finally:
        # A Pod bound to a node is deleted gracefully and waits for its kubelet, which does not
        # exist here (strategy.go CheckGracefulDelete): delete at once, as a kubelet finally would.
        for name in pods:
            _not_found(functools.partial(kube.core.delete_namespaced_pod, name, namespace, grace_period_seconds=0))
        _not_found(functools.partial(kube.core.delete_node, node))
