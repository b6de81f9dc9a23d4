"""What was on the wire, from IP packets: per TCP flow, TLS or plaintext, and the payload bytes.

Shared by every platform's capture: the local one reads tcpdump's pcap from a
pod's veth, the kind one reads tcpdump's hex dump from an ephemeral container.
The payload stays in memory, for the canary search; it is never written out.
"""

from __future__ import annotations

import re
import secrets
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from cluster.platform import FlowSummary

_TCP = 6
# Captures are synchronized by UDP marker datagrams to the discard port; they are never part of a flow.
MARKER_PORT = 9
CAPTURE_FILTER = f"tcp or (udp and dst port {MARKER_PORT})"


def new_marker(which: str) -> bytes:
    """A marker datagram's text: unique, so that seeing it proves this capture saw this moment."""
    return f"trustgrid-capture-{which}-{secrets.token_hex(8)}".encode()


@dataclass
class _Flow:
    client: tuple[str, int]
    server: tuple[str, int]
    client_payload: bytearray = field(default_factory=bytearray)
    server_payload: bytearray = field(default_factory=bytearray)


def _ip(raw: bytes) -> str:
    return ".".join(str(b) for b in raw)


def is_tls_record(data: bytes) -> bool:
    # ContentType handshake(22)/alert(21)/ccs(20)/appdata(23), version 3.x
    return len(data) >= 3 and data[0] in (20, 21, 22, 23) and data[1] == 3 and data[2] <= 4


def flows_from_ip_packets(packets: Iterable[bytes]) -> tuple[list[FlowSummary], bytes]:
    """Flows (client = the side that sent the first packet, the SYN) and all payload bytes."""
    flows: dict[frozenset[tuple[str, int]], _Flow] = {}
    for ip in packets:
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != _TCP:
            continue
        ihl = (ip[0] & 0x0F) * 4
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
            tls=is_tls_record(first), payload_bytes=len(flow.client_payload) + len(flow.server_payload),
        ))
        everything += flow.client_payload + flow.server_payload
    return summaries, bytes(everything)


_HEX_LINE = re.compile(r"^\s+0x[0-9a-f]+:\s+((?:[0-9a-f]{2,4}\s?)+)")


def ip_packets_from_hex_dump(text: str) -> list[bytes]:
    """IP packets from `tcpdump -nn -x` output: a header line, then hex lines without the link header."""
    packets: list[bytes] = []
    current: list[str] | None = None
    for line in text.splitlines():
        match = _HEX_LINE.match(line)
        if match and current is not None:
            current.append("".join(match.group(1).split()))
        elif line and not line[0].isspace():
            if current:
                packets.append(bytes.fromhex("".join(current)))
            current = [] if " IP " in line else None
    if current:
        packets.append(bytes.fromhex("".join(current)))
    return packets
