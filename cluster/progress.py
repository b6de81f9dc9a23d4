"""Progress lines for long waits (bring-up, a build, a TTL running out).

They go straight to the terminal: pytest captures a test's stdout and
stderr, and a person watching a 30-second wait needs to know what it is for.
"""

from __future__ import annotations

import sys

from cluster.secrets import redact


def say(message: str) -> None:
    stream = sys.__stderr__
    if stream is not None:
        print(f"trustgrid: {redact(message)}", file=stream, flush=True)
