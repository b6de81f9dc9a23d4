"""The local mesh CA under a steady stream of CSRs: latency from CSR to signed chain, and its memory.

    .venv/bin/python bench/meshca.py [--requests 50]

Brings the local platform up (cached binaries), makes one tenant, and sends CreateCertificate
requests one after another over one gRPC channel, as a pilot-agent would (a fresh EC key and
CSR each time, the tenant's istio-ca token). Prints p50/p90/p99/max of the round trip, the CA's
resident memory (VmRSS now, VmHWM peak) and its status counters.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cluster.local import caproto
from cluster.local.bringup import start_local
from cluster.local.meshservices import mesh_ca_address
from cluster.local.rootcerts import CONFIGMAP, KEY
from cluster.runstate import cache_dir
from cluster.settings import build_settings
from cluster.tenancy import open_tenant
from cluster.versions import load_pins
from cluster.wait import wait_until


def csr(uri: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=True)
            .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode())


def memory_kib(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {line.split(":")[0]: int(line.split()[1]) for line in status if line.startswith(("VmRSS", "VmHWM"))}


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    settings = build_settings({}, rootdir=Path(__file__).resolve().parents[1])
    proto = caproto.load(caproto.ensure_stubs(cache_dir(), load_pins()))
    with start_local(settings, print) as platform, \
            open_tenant(platform, settings.profile.setup, "bench-meshca") as tenant:
        pid = platform.state.pids()["mesh-ca"]
        idle = memory_kib(pid)
        roots = wait_until(lambda: tenant.kube.core.read_namespaced_config_map(CONFIGMAP, tenant.namespace).data[KEY],
                           timeout=15, describe=f"{CONFIGMAP} in {tenant.namespace}")
        client = caproto.CaClient(proto, mesh_ca_address(platform.state), roots)
        token = tenant.token("app", audience="istio-ca")
        uri = f"spiffe://{settings.profile.setup.trust_domain}/ns/{tenant.namespace}/sa/app"
        client.create_certificate(token, csr(uri), 86400)  # the channel's TLS handshake, once
        samples = []
        for _ in range(args.requests):
            request = csr(uri)
            started = time.perf_counter()
            client.create_certificate(token, request, 86400)
            samples.append((time.perf_counter() - started) * 1000)
        client.close()
        busy = memory_kib(pid)
        status = platform.faults().mesh_ca_status().details
    print(f"{args.requests} CSRs -> signed chains (ms): p50 {percentile(samples, 0.5):.1f}  "
          f"p90 {percentile(samples, 0.9):.1f}  p99 {percentile(samples, 0.99):.1f}  max {max(samples):.1f}  "
          f"mean {statistics.mean(samples):.1f}")
    print(f"mesh CA memory (MiB): idle RSS {idle['VmRSS'] / 1024:.1f}; after: RSS {busy['VmRSS'] / 1024:.1f}, "
          f"peak {busy['VmHWM'] / 1024:.1f}")
    print(f"status: signed {status['signed']}, refused {status['refused']}, Vault logins {status['vault_logins']}, "
          f"renewals {status['vault_renewals']}, ConfigMaps written {status['configmaps_published']}")


if __name__ == "__main__":
    main()
