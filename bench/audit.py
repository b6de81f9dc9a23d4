"""Measure the audit exporter: its throughput in lines per second, and the lag from a denial to its sample.

    .venv/bin/python bench/audit.py [--lines 200000] [--denials 20]

Throughput: replays what the real OpenBao's file audit device wrote (tests/fixtures/audit/openbao-audit.jsonl,
refusals and successes as recorded) through cluster.audit.exporter.AuditMetrics.observe, in one thread,
and through the follower reading them from a file. The goal is 50,000 lines/s or more.

Lag (--denials N, 0 to skip): brings the local platform up (real OpenBao, the exporter on its audit log,
the Debian Prometheus scraping it every second), has OpenBao refuse N logins, each to a role of its own,
and times each from just before the request to the sample an instant query first returns for it (that
sample's own timestamp, PromQL timestamp()), and to the moment that query returned. The goal is 2 s
or less at the 1 s scrape interval.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cluster.audit.exporter import AuditMetrics  # noqa: E402
from cluster.audit.follow import Follower  # noqa: E402

RECORDED = ROOT / "tests" / "fixtures" / "audit" / "openbao-audit.jsonl"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--denials", type=int, default=20, help="refusals timed into Prometheus (0: skip)")
    options = parser.parse_args()
    recorded = RECORDED.read_bytes().splitlines()
    lines = (recorded * (options.lines // len(recorded) + 1))[:options.lines]
    size = sum(len(line) + 1 for line in lines)

    metrics = AuditMetrics()
    started = time.perf_counter()
    for line in lines:
        metrics.observe(line)
    counted = time.perf_counter() - started

    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "audit.log"
        log.write_bytes(b"\n".join(lines) + b"\n")
        follower, metrics = Follower(log), AuditMetrics()
        started = time.perf_counter()
        read = 0
        while read < len(lines):
            batch = follower.poll()
            for line in batch:
                metrics.observe(line)
            read += len(batch)
        followed = time.perf_counter() - started
        follower.close()

    print(f"audit exporter: {len(lines)} recorded OpenBao audit lines ({size / len(lines):.0f} bytes each on average)")
    print(f"  classify and count:            {len(lines) / counted:,.0f} lines/s")
    print(f"  follow a file, classify, count: {len(lines) / followed:,.0f} lines/s   (goal: 50,000 lines/s)")
    if options.denials:
        lag(options.denials)
    return 0


def lag(denials: int) -> None:
    import hvac

    from cluster.local.bringup import start_local
    from cluster.promapi import PrometheusApi
    from cluster.settings import build_settings
    from cluster.wait import wait_until

    settings = build_settings({})
    sampled, queryable = [], []
    with start_local(settings, lambda message: None) as platform:
        api = PrometheusApi(platform.prometheus_url())
        client = platform.vault_client()
        for i in range(denials):
            role = f"tg-bench-lag-{settings.run_id[-4:]}-{i}"
            query = f'sum(vault_audit_login_refusals_total{{role="{role}"}})'
            started = time.time()
            with contextlib.suppress(hvac.exceptions.VaultError):
                client.auth.kubernetes.login(role, "not-a-service-account-token")

            def seen(expr: str = query) -> bool:
                return bool(api.instant(expr, time.time()))

            wait_until(seen, timeout=30, interval=0.02, describe=f"the refusal of {role} in Prometheus")
            queryable.append(time.time() - started)
            # PromQL timestamp(): the scrape time of the sample that holds the refusal.
            stamp = api.instant(f'timestamp(vault_audit_login_refusals_total{{role="{role}"}})', time.time())
            sampled.append(stamp[0].points[-1][1] - started)
            api.asked.clear()
    print(f"denial to Prometheus, {denials} refused logins (scrape interval 1 s):")
    for name, figures in (("to the sample's timestamp", sampled), ("until a query returns it", queryable)):
        figures.sort()
        print(f"  {name:<26} median {statistics.median(figures):.2f} s, p95 "
              f"{figures[max(0, int(len(figures) * 0.95) - 1)]:.2f} s, max {figures[-1]:.2f} s   (goal: <= 2 s)")


if __name__ == "__main__":
    sys.exit(main())
