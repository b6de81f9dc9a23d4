"""The run's janitor: removes what a local run left when its owner dies without tearing down.

    python -m cluster.local.janitor STATE_DIR   (stdin: the read end of the owner's pipe)

The owner starts it at bring-up, in a session of its own (a terminal's Ctrl-C never reaches it),
with its stdin the read end of a pipe whose write end only the owner holds (Python's pipes are
not inherited by other children). When the owner exits, however it exits (a clean teardown,
SIGKILL, a closed terminal, the OOM killer), the pipe reads EOF:

- the owner closed it on purpose after its teardown, while alive: nothing to do;
- the run was kept (--keep-cluster): nothing to do;
- the owner is gone and its state directory is still there: it died mid-run, so the janitor
  reaps at once what the next run's reaper would (processes, network namespaces, the bridge,
  pod files, and the state directory that holds the unseal keys and root token).

It carries no run label, so it is never mistaken for the run's own processes, and it ends by itself.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from cluster.runstate import RunState, run_is_live


@contextlib.contextmanager
def janitor(state: RunState) -> Iterator[None]:
    """Start the janitor for this run; on a clean exit from the block, release it."""
    read_end, write_end = os.pipe()  # both close-on-exec: no other child holds the write end
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTGRID_RUN")}
    env["TRUSTGRID_CACHE"] = str(state.path.parent.parent)
    try:
        subprocess.Popen([sys.executable, "-m", "cluster.local.janitor", str(state.path)],
                         stdin=read_end, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                         start_new_session=True, cwd=Path(__file__).resolve().parents[2])
    finally:
        os.close(read_end)
    try:
        yield
    finally:
        os.close(write_end)  # EOF while the owner lives: the janitor leaves


def main(argv: list[str]) -> int:
    state_dir = Path(argv[0])
    while sys.stdin.buffer.read(4096):
        pass
    # Released by a live owner, kept on purpose, or already torn down: nothing to do.
    if not state_dir.exists() or run_is_live(state_dir):
        return 0
    from cluster.local.bringup import reap_local

    reap_local()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
