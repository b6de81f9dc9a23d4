"""Wire capture on a pod's host-side veth with tcpdump, and a pcap reader.

The reader keeps only what the verdict needs: per TCP flow, whether the
client's first payload bytes are a TLS record header, and the payload
bytes themselves (in memory, for the canary search; never written out).
"""

from __future__ import annotations

import contextlib
import signal
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cluster.errors import PlatformUnavailable
from cluster.platform import Capture, FlowSummary
from cluster.wait import wait_until

_ETHERNET = 1
_IPV4 = 0x0800
_TCP = 6


@dataclass
class _Flow:
    client: tuple[str, int]
    server: tuple[str, int]
    client_payload: bytearray = field(default_factory=bytearray)
    server_payload: bytearray = field(default_factory=bytearray)


def _ip(raw: bytes) -> str:
    return ".".join(str(b) for b in raw)


def _is_tls_record(data: bytes) -> bool:
    # ContentType handshake(22)/alert(21)/ccs(20)/appdata(23), version 3.x
    return len(data) >= 3 and data[0] in (20, 21, 22, 23) and data[1] == 3 and data[2] <= 4


def read_pcap(data: bytes) -> tuple[list[FlowSummary], bytes]:
    """Flows (client = the side that sent SYN) and all payload bytes, from a pcap file."""
    if len(data) < 24:
        return [], b""
    magic = data[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    if linktype != _ETHERNET:
        raise ValueError(f"unsupported link type {linktype}")
    flows: dict[frozenset[tuple[str, int]], _Flow] = {}
    offset = 24
    while offset + 16 <= len(data):
        _, _, caplen, _ = struct.unpack(endian + "IIII", data[offset:offset + 16])
        frame = data[offset + 16:offset + 16 + caplen]
        offset += 16 + caplen
        if len(frame) < 34 or struct.unpack("!H", frame[12:14])[0] != _IPV4:
            continue
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        if ip[9] != _TCP:
            continue
        total = struct.unpack("!H", ip[2:4])[0]
        src, dst = _ip(ip[12:16]), _ip(ip[16:20])
        tcp = ip[ihl:total]
        if len(tcp) < 20:
            continue
        sport, dport = struct.unpack("!HH", tcp[:4])
        payload = tcp[(tcp[12] >> 4) * 4:]
        key = frozenset({(src, sport), (dst, dport)})
        flow = flows.get(key)
        if flow is None:
            # The capture starts before any probe, so the first packet is the SYN.
            flow = flows[key] = _Flow((src, sport), (dst, dport))
        (flow.client_payload if (src, sport) == flow.client else flow.server_payload).extend(payload)
    summaries = []
    everything = bytearray()
    for flow in flows.values():
        first = bytes(flow.client_payload[:3]) or bytes(flow.server_payload[:3])
        summaries.append(FlowSummary(
            client=f"{flow.client[0]}:{flow.client[1]}", server=f"{flow.server[0]}:{flow.server[1]}",
            tls=_is_tls_record(first), payload_bytes=len(flow.client_payload) + len(flow.server_payload),
        ))
        everything += flow.client_payload + flow.server_payload
    return summaries, bytes(everything)


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

    try:
        wait_until(listening, timeout=10, interval=0.0, describe=f"tcpdump to listen on {interface}")
        yield capture
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
