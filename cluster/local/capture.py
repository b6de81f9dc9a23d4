"""Wire capture on a pod's host-side veth with tcpdump, and a pcap reader.

The pcap reader unwraps Ethernet frames; cluster/wire.py judges the flows.
"""

from __future__ import annotations

import contextlib
import signal
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

from cluster.errors import PlatformUnavailable, WaitTimeout
from cluster.platform import Capture, FlowSummary
from cluster.wait import wait_until
from cluster.wire import flows_from_ip_packets

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


@contextlib.contextmanager
def tcpdump(interface: str, into: Path) -> Iterator[Capture]:
    """Capture TCP on an interface for the duration of the block."""
    capture = Capture()
    process = subprocess.Popen(
        # -Z root: Debian's tcpdump otherwise drops to its own user, who cannot
        # write into our private temporary directory. --immediate-mode: without
        # it, packets still in the kernel's ring block are lost at SIGINT.
        ["tcpdump", "-i", interface, "-Z", "root", "--immediate-mode", "-U", "-s", "0", "-n", "-w", str(into), "tcp"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    assert process.stderr is not None
    lines: list[str] = []

    def listening() -> bool:
        if process.poll() is not None:
            raise PlatformUnavailable(f"tcpdump on {interface} exited: {process.stderr.read().strip()}",  # type: ignore[union-attr]
                                      fix="apt-get install tcpdump")
        line = process.stderr.readline()  # type: ignore[union-attr]
        lines.append(line)
        return "listening on" in line

    def drained() -> bool:
        sizes.append(into.stat().st_size if into.exists() else 0)
        return len(sizes) >= 3 and sizes[-1] == sizes[-2] == sizes[-3]

    sizes: list[int] = []
    try:
        wait_until(listening, timeout=10, interval=0.0, describe=f"tcpdump to listen on {interface}")
        yield capture
    finally:
        # SIGINT ends tcpdump at once: packets still in the kernel's ring are lost. Under load tcpdump
        # may not have read the last exchange yet, so let its file stop growing first (-U writes each packet).
        with contextlib.suppress(WaitTimeout):
            wait_until(drained, timeout=3, interval=0.05, describe="tcpdump to write what crossed")
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
