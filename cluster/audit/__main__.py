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
from cluster.audit.follow import Follower

POLL_S = 0.1  # while the log is quiet; a busy log is read as fast as it grows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.audit", description=__doc__)
    parser.add_argument("--file", type=Path, required=True, help="the file audit device's path")
    parser.add_argument("--port", type=int, required=True, help="where /metrics is served (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (default loopback)")
    parser.add_argument("--kv-mount", default="secret", help="the KV mount whose paths name the namespace")
    parser.add_argument("--from-start", action="store_true",
                        help="count what the file holds already (default: only lines written from now on)")
    options = parser.parse_args(argv)
    metrics = AuditMetrics(Paths(kv=options.kv_mount))
    stop = threading.Event()

    def stopping(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, stopping)
    if not options.file.parent.is_dir():
        # The file may not exist yet (Vault creates it), but its folder must: else it would wait forever.
        print(f"audit exporter: {options.file.parent} is not a folder, so {options.file.name} can never appear "
              "there; fix: pass the audit device's file_path", file=sys.stderr)
        return 2
    try:
        server, _ = start_http_server(options.port, options.host, registry=metrics.registry)
    except (OSError, OverflowError) as err:
        print(f"audit exporter: cannot listen on {options.host}:{options.port} ({err}); "
              "fix: choose another --port, or a --host address of this machine", file=sys.stderr)
        return 2
    follower = Follower(options.file, from_start=options.from_start)
    try:
        batch = follower.poll()  # placed (at the end, by default) before the address is announced
        print(f"audit exporter: {options.file} on http://{options.host}:{server.server_port}/metrics", flush=True)
        while not stop.is_set():
            for line in batch:
                metrics.observe(line)
            if not batch:
                stop.wait(POLL_S)
            batch = follower.poll()
    except KeyboardInterrupt:
        pass
    except OSError as err:
        print(f"audit exporter: cannot read {options.file} ({err}); fix: pass the audit device's file",
              file=sys.stderr)
        return 2
    finally:
        follower.close()
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
