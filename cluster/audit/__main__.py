"""``python -m cluster.audit --file AUDIT_LOG --port PORT``: follow Vault's file audit log and serve its
metrics on http://127.0.0.1:PORT/metrics (cluster/audit/exporter.py) until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from prometheus_client import start_http_server

from cluster.audit.exporter import AuditMetrics, Paths
from cluster.audit.follow import follow


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.audit", description=__doc__)
    parser.add_argument("--file", type=Path, required=True, help="the file audit device's path")
    parser.add_argument("--port", type=int, required=True, help="where /metrics is served (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (default loopback)")
    parser.add_argument("--kv-mount", default="secret", help="the KV mount whose paths name the namespace")
    options = parser.parse_args(argv)
    metrics = AuditMetrics(Paths(kv=options.kv_mount))
    stop = threading.Event()

    def stopping(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, stopping)
    try:
        server, _ = start_http_server(options.port, options.host, registry=metrics.registry)
    except OSError as err:
        print(f"audit exporter: cannot listen on {options.host}:{options.port} ({err.strerror}); "
              "fix: choose another --port", file=sys.stderr)
        return 2
    print(f"audit exporter: {options.file} on http://{options.host}:{server.server_port}/metrics", flush=True)
    try:
        for batch in follow(options.file, stop):
            for line in batch:
                metrics.observe(line)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
