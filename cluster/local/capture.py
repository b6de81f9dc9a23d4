"""Wire capture on a pod's host-side veth with tcpdump, and a pcap reader.

The capture is synchronized by marker datagrams (live before the block,
drained after it); the pcap reader unwraps Ethernet frames; cluster/wire.py
judges the flows.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import struct
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

from cluster.errors import PlatformUnavailable, WaitTimeout
from cluster.platform import Capture, FlowSummary
from cluster.wait import Abort, wait_until
from cluster.wire import CAPTURE_FILTER, MARKER_PORT, flows_from_ip_packets, new_marker

MARKER_TIMEOUT_S = 20.0

_ETHERNET = 1
_IPV4 = 0x0800


def read_pcap(data: bytes) -> tuple[list[FlowSummary], bytes]:
    """Flows and payload bytes from an Ethernet pcap file (tcpdump -w on a pod's veth)."""
    if len(data) < 24:
        return [], b""
    magic = data[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    if linktype != _ETHERNET:
        raise ValueError(f"unsupported link type {linktype}")
    packets = []
    offset = 24
    while offset + 16 <= len(data):
        _, _, caplen, _ = struct.unpack(endian + "IIII", data[offset:offset + 16])
        frame = data[offset + 16:offset + 16 + caplen]
        offset += 16 + caplen
        if len(frame) >= 34 and struct.unpack("!H", frame[12:14])[0] == _IPV4:
            packets.append(frame[14:])
    return flows_from_ip_packets(packets)


def _send_marker(to: str, marker: bytes) -> None:
    """One UDP datagram from the node to the pod, across the captured veth (port 9: discard)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        sender.sendto(marker, (to, MARKER_PORT))


@contextlib.contextmanager
def tcpdump(interface: str, into: Path, *, marker_to: str) -> Iterator[Capture]:
    """Capture TCP on an interface for the duration of the block, synchronized by markers.

    Before the block starts, a start marker sent across the interface (to ``marker_to``, a
    pod address behind it) must be in the capture file: the capture is live, so the block's
    first packet cannot be missed. After the block, an end marker must be in the file before
    tcpdump is stopped: everything that crossed before it has been read. Either marker
    missing is PlatformUnavailable, never a capture judged on partial evidence.
    """
    capture = Capture()
    process = subprocess.Popen(
        # -Z root: Debian's tcpdump otherwise drops to its own user, who cannot
        # write into our private temporary directory. --immediate-mode with -U:
        # each packet reaches the file as it is captured, so markers show at once.
        ["tcpdump", "-i", interface, "-Z", "root", "--immediate-mode", "-U", "-s", "0", "-n", "-w", str(into),
         CAPTURE_FILTER],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )

    def seen(marker: bytes) -> Callable[[], bool]:
        def check() -> bool:
            if process.poll() is not None:
                raise Abort(f"tcpdump on {interface} exited: {process.stderr.read().strip()}")  # type: ignore[union-attr]
            if into.exists() and marker in into.read_bytes():
                return True
            _send_marker(marker_to, marker)  # again: the first may have gone before tcpdump was live
            return False
        return check

    def synchronized(which: str) -> None:
        marker = new_marker(which)
        try:
            wait_until(seen(marker), timeout=MARKER_TIMEOUT_S, interval=0.05,
                       describe=f"the capture on {interface} to see its {which} marker")
        except (Abort, WaitTimeout) as err:
            raise PlatformUnavailable(f"the capture on {interface} never saw its {which} marker: {err}",
                                      fix="check that tcpdump runs here (apt-get install tcpdump) and that the "
                                          "pod's interface is up") from None

    try:
        synchronized("start")
        yield capture
        synchronized("end")
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        data = into.read_bytes() if into.exists() else b""
        into.unlink(missing_ok=True)
        flows, payload = read_pcap(data)
        capture.fill(flows, payload)
