"""Local mesh figures: pod bring-up, call latency through two sidecars, certificate issue.

    .venv/bin/python bench/mesh.py [--pods 20] [--calls 500]

Targets (issue 3): 20 meshed pods up in <= 20 s on 2 cores; p99 through two
sidecars <= 25 ms. Latency is measured inside the client pod (the app's own
clock), so the harness's Python overhead is not counted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from cluster.local.bringup import start_local
from cluster.local.platform import LocalPlatform
from cluster.settings import build_settings
from cluster.tenancy import open_tenant


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latency(platform: LocalPlatform, src, dst, calls: int) -> list[float]:  # type: ignore[no-untyped-def]
    samples = []
    for index in range(calls):
        result = platform.call(src, dst, canary=f"bench-{index}", timeout=5)
        if result.status != 200:
            raise SystemExit(f"call {index} failed: {result}")
        samples.append(result.elapsed * 1000)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=20)
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    settings = build_settings({})
    with start_local(settings, lambda _: None) as platform, \
            open_tenant(platform, settings.profile.setup, "bench-mesh") as tenant:
        per_pod = []
        started = time.monotonic()
        workloads = []
        for index in range(args.pods):
            t = time.monotonic()
            workloads.append(platform.deploy(tenant.namespace, f"pod-{index}", "app"))
            per_pod.append(time.monotonic() - t)
        all_pods = time.monotonic() - started
        meshed = latency(platform, workloads[0], workloads[1], args.calls)
        naked_a = platform.deploy(tenant.namespace, "naked-a", "app", meshed=False)
        naked_b = platform.deploy(tenant.namespace, "naked-b", "app", meshed=False)
        direct = latency(platform, naked_a, naked_b, args.calls)
    print(f"pods: {args.pods} meshed pods up in {all_pods:.2f} s; per pod median {statistics.median(per_pod):.3f} s, "
          f"max {max(per_pod):.3f} s")
    for name, samples in (("through two sidecars", meshed), ("direct (no sidecars)", direct)):
        print(f"latency {name:22}: p50 {percentile(samples, 0.5):6.2f} ms  p99 {percentile(samples, 0.99):6.2f} ms"
              f"  ({len(samples)} calls)")
    met = all_pods <= 20 and percentile(meshed, 0.99) <= 25
    print(f"targets: {args.pods} pods <= 20 s and p99 <= 25 ms -> {'met' if met else 'MISSED'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
