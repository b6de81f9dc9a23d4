"""Local mesh figures on real Istio: meshed pods up, latency through two Envoys, memory per meshed pod.

    .venv/bin/python bench/mesh.py [--pods 20] [--calls 500] [--parallel 4]

Targets (issue 12), each printed with its ratio (figure / target; <= 1 meets it):
- 20 meshed pods up (created through the API server, injected by istiod, istio-init, pilot-agent
  and Envoy started, the app ready, the mesh knows the endpoint) in <= 30 s on 2 cores;
- p99 of a call through two Envoys <= 25 ms; every call is a new mTLS connection (the workloads'
  DestinationRule allows one request per connection), so each one pays a TLS handshake;
- peak memory per meshed pod: the sum of the peak resident sets (VmHWM) of its processes
  (pilot-agent, Envoy, the app), reported, with no target.
Latency is measured inside the client pod (the app's own clock), so the harness's Python
overhead is not counted; the same calls between two pods without sidecars are printed beside it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cluster.local.bringup import start_local
from cluster.local.platform import LocalPlatform
from cluster.platform import Workload
from cluster.runstate import group_members
from cluster.settings import build_settings
from cluster.tenancy import open_tenant

PODS_TARGET_S, P99_TARGET_MS = 30.0, 25.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latency(platform: LocalPlatform, src: Workload, dst: Workload, calls: int) -> list[float]:
    samples = []
    for index in range(calls):
        result = platform.call(src, dst, canary=f"bench-{index}", timeout=5)
        if result.status != 200:
            raise SystemExit(f"call {index} failed: {result}")
        samples.append(result.elapsed * 1000)
    return samples


def _vm_hwm_kib(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)


def pod_peak_mib(platform: LocalPlatform, workload: Workload) -> float:
    """Sum of VmHWM over every process of the pod's containers (each container is a process group:
    pilot-agent's group holds Envoy too)."""
    run = platform.pods.run_of(workload)
    pids = {pid for process in run.processes.values() if process.running() for pid in group_members(process.pid)}
    return sum(_vm_hwm_kib(pid) for pid in pids) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=20)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--parallel", type=int, default=4, help="pods started at once")
    args = parser.parse_args()
    settings = build_settings({})
    with start_local(settings, lambda _: None) as platform, \
            open_tenant(platform, settings.profile.setup, "bench-mesh") as tenant:
        per_pod: list[float] = []

        def one(index: int) -> Workload:
            t = time.monotonic()
            workload = platform.deploy(tenant.namespace, f"pod-{index}", "app")
            per_pod.append(time.monotonic() - t)
            return workload

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=args.parallel) as pool:
            workloads = list(pool.map(one, range(args.pods)))
        all_pods = time.monotonic() - started
        memory = [pod_peak_mib(platform, w) for w in workloads]
        meshed = latency(platform, workloads[0], workloads[1], args.calls)
        memory_after = pod_peak_mib(platform, workloads[0])
        naked_a = platform.deploy(tenant.namespace, "naked-a", "app", meshed=False)
        naked_b = platform.deploy(tenant.namespace, "naked-b", "app", meshed=False)
        direct = latency(platform, naked_a, naked_b, args.calls)
    p99 = percentile(meshed, 0.99)
    print(f"{args.pods} meshed pods up in {all_pods:.2f} s ({args.parallel} at a time); per pod median "
          f"{statistics.median(per_pod):.2f} s, max {max(per_pod):.2f} s   target {PODS_TARGET_S:.0f} s, "
          f"ratio {all_pods / PODS_TARGET_S:.2f}")
    for name, samples in (("through two Envoys", meshed), ("direct (no sidecars)", direct)):
        print(f"latency {name:22}: p50 {percentile(samples, 0.5):6.2f} ms  p99 {percentile(samples, 0.99):6.2f} ms"
              f"  max {max(samples):6.2f} ms  ({len(samples)} calls)")
    print(f"p99 through two Envoys {p99:.2f} ms   target {P99_TARGET_MS:.0f} ms, ratio {p99 / P99_TARGET_MS:.2f}")
    print(f"peak memory per meshed pod (pilot-agent + Envoy + app, VmHWM summed): median "
          f"{statistics.median(memory):.1f} MiB, max {max(memory):.1f} MiB; the client after {args.calls} calls "
          f"{memory_after:.1f} MiB")
    met = all_pods <= PODS_TARGET_S and p99 <= P99_TARGET_MS
    print(f"targets -> {'met' if met else 'MISSED'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
