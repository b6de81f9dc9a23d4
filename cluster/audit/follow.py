"""Follow a file the way ``tail -F`` does: new lines as they are written, across rotation and truncation.

Vault's file audit device appends one JSON object per line and reopens its path on SIGHUP, which is how
logrotate rotates it (website docs, audit/file: "log rotation"); with copytruncate the file is cut back
to nothing instead. Both are handled: a path whose inode changed is read to its end and then reopened,
and a file shorter than what was read was truncated and is read again from its start. Not handled, as
in tail: lines written to the renamed file after the switch (before Vault's SIGHUP), and a file
truncated and then rewritten past the old offset between two polls.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

CHUNK = 8 << 20  # bytes read per poll: a large backlog is read in pieces, never whole into memory


@dataclass
class Follower:
    """Reads complete lines from ``path`` as they appear. ``poll()`` returns what is new since the last call
    (``[]`` while the file is missing); a partial last line waits for its newline."""

    path: Path
    from_start: bool = True  # False: only lines written after the first poll
    _handle: BinaryIO | None = field(default=None, repr=False)
    _inode: int = 0
    _partial: bytes = b""
    rotations: int = 0
    truncations: int = 0

    def _open(self, *, at_end: bool) -> bool:
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return False
        self._handle, self._inode, self._partial = handle, os.fstat(handle.fileno()).st_ino, b""
        if at_end:
            handle.seek(0, os.SEEK_END)
        return True

    def poll(self) -> list[bytes]:
        if self._handle is None and not self._open(at_end=not self.from_start):
            # Not there yet: Vault creates it with its first entry, and that entry is news. On kind the exporter
            # starts before Vault's audit device exists, so without this its first lines would be skipped.
            self.from_start = True
            return []
        self.from_start = True  # a file that appears later, or a rotated one, is read whole
        assert self._handle is not None
        lines = self._read()
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            return lines  # rotated away and not yet recreated: keep the old handle until it is
        if now.st_ino != self._inode:
            lines += self._read()  # what was written before the rename
            self._handle.close()
            self._handle = None
            self.rotations += 1
            if self._open(at_end=False):
                lines += self._read()
        elif now.st_size < self._handle.tell():
            self.truncations += 1
            self._handle.seek(0)
            self._partial = b""
            lines += self._read()
        return lines

    def _read(self) -> list[bytes]:
        assert self._handle is not None
        data = self._partial + self._handle.read(CHUNK)
        *whole, self._partial = data.split(b"\n")
        return [line for line in whole if line]

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
