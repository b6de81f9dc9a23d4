"""The canary's pure rules: revision names and ports, namespace labels, the injector's record, the
address allocator that never hands a just-released address out first, and the inbound connection count."""

from __future__ import annotations

import ipaddress
import json
import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from cluster.istio import INJECTION_LABEL, REVISION_LABEL, injected_revision, namespace_labels
from cluster.local import istiod
from cluster.local.canary import revision_of
from cluster.local.network import NodeNetwork
from cluster.local.pods import INBOUND_PORT, count_inbound


def test_the_default_revision_keeps_istios_names_and_ports_and_a_canary_gets_its_own() -> None:
    default, canary = revision_of("default"), revision_of("canary")
    assert (default.process, default.process_file, default.xds_port, default.webhook_port) == (
        "istiod", "istiod/process.json", istiod.XDS_PORT, istiod.WEBHOOK_PORT)
    assert (canary.process, canary.suffix) == ("istiod-canary", "-canary")
    assert {canary.xds_port, canary.webhook_port}.isdisjoint({default.xds_port, default.webhook_port})


def test_a_namespace_moves_by_dropping_istio_injection_which_would_win_over_the_revision_label() -> None:
    assert namespace_labels("canary") == {INJECTION_LABEL: None, REVISION_LABEL: "canary"}
    assert namespace_labels("default") == {INJECTION_LABEL: "enabled", REVISION_LABEL: None}


def test_the_injectors_status_annotation_names_the_revision() -> None:
    pod = {"metadata": {"annotations": {"sidecar.istio.io/status": json.dumps(
        {"initContainers": ["istio-init"], "containers": ["istio-proxy"], "revision": "canary"})}}}
    assert injected_revision(pod) == "canary"
    assert injected_revision({"metadata": {}}) == ""


def test_the_operator_of_a_canary_names_its_revision_and_the_defaults_does_not() -> None:
    from cluster.profile import DEFAULT_PROFILE, load_profile

    setup = load_profile(DEFAULT_PROFILE).setup
    assert "revision" not in istiod.operator(setup, tag="t", discovery_address="a", ca_address=None)["spec"]
    assert istiod.operator(setup, tag="t", discovery_address="a", ca_address=None,
                           revision="canary")["spec"]["revision"] == "canary"


@given(st.lists(st.booleans(), min_size=1, max_size=40))
def test_an_address_just_released_is_not_the_next_one_handed_out_while_another_is_free(steps: list[bool]) -> None:
    """host-local's rule (plugins/ipam/host-local/backend/allocator/allocator.go): allocation resumes after the
    last address reserved. So a caller that still holds a just-deleted pod's address as an endpoint does not
    reach a new pod that is not listening yet."""
    with tempfile.TemporaryDirectory() as folder:
        network = NodeNetwork("tg-unit-ipam", ipaddress.IPv4Network("10.251.79.0/28"), Path(folder) / "ipam.json")
        usable = 13  # a /28 has 14 hosts; the first is the node's
        held: list[str] = []
        just_released: str | None = None
        for allocate in steps:
            if allocate or not held:
                if len(held) == usable:
                    continue
                ip = str(network._allocate("pod"))
                assert ip not in held
                if just_released is not None and usable - len(held) > 1:
                    assert ip != just_released
                held.append(ip)
                just_released = None
            else:
                just_released = held.pop(0)
                network._release(just_released)


def test_inbound_connections_count_the_sidecars_accepted_connections_not_its_listener_or_others() -> None:
    port = f"{INBOUND_PORT:04X}"
    table = "\n".join([
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode",
        f"   0: 00000000:{port} 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1337 0 1 1",  # listening
        f"   1: 0200FA0A:{port} 0300FA0A:D431 01 00000000:00000000 00:00000000 00000000  1337 0 2 1",  # established
        f"   2: 0200FA0A:{port} 0300FA0A:D432 03 00000000:00000000 00:00000000 00000000  1337 0 3 1",  # SYN_RECV
        f"   3: 0200FA0A:{port} 0300FA0A:D433 06 00000000:00000000 00:00000000 00000000  1337 0 4 1",  # TIME_WAIT
        "   4: 0200FA0A:1F90 0300FA0A:D434 01 00000000:00000000 00:00000000 00000000  1337 0 5 1",  # the app's port
    ])
    assert count_inbound(table) == 2
