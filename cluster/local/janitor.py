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

from cluster.errors import WaitTimeout
from cluster.runstate import RunState, process_alive
from cluster.wait import wait_until


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


# How long a dying owner may take from closing its files to being a zombie; and how long a live owner
# that released the pipe takes to remove its state directory. Seconds; both are ends of a teardown.
OWNER_EXIT_S = 30.0


def main(argv: list[str]) -> int:
    state_dir = Path(argv[0])
    # Read now, while the run is whole: a live owner's teardown removes this file before the directory.
    try:
        owner = int((state_dir / "owner").read_text())
    except (OSError, ValueError):
        return 0  # already being torn down; a run without its owner file is the next reaper's
    while sys.stdin.buffer.read(4096):
        pass
    if (state_dir / "kept.json").exists():
        return 0  # kept on purpose: `python -m cluster down` removes it

    # EOF comes when the owner's last thread closes its files, a moment before the kernel marks it
    # dead (do_exit: exit_files before exit_notify). On a loaded machine this process can look in
    # that moment, see a live owner and leave a killed run behind: wait for one of the two ends.
    def settled() -> bool:
        return not state_dir.exists() or not process_alive(owner)

    try:
        wait_until(settled, timeout=OWNER_EXIT_S, interval=0.05, describe="the owner's exit or its teardown")
    except WaitTimeout:
        return 0  # a live owner released the pipe and its teardown is still running: it is its own
    if not state_dir.exists():
        return 0  # torn down by the owner
    from cluster.local.bringup import reap_local

    reap_local()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
