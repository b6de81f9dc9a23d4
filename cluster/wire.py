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
    first: tuple[str, int]  # the side whose packet the capture saw first
    other: tuple[str, int]
    syn_from: tuple[str, int] | None = None  # the side that opened the connection, if the capture saw it
    payload: dict[tuple[str, int], bytearray] = field(default_factory=dict)

    def sides(self) -> tuple[tuple[str, int], tuple[str, int]]:
        """(client, server): the side that sent the SYN; for a connection opened before the capture
        (an Envoy's pooled connection, a proxy's xDS stream), the side with the higher port."""
        if self.syn_from is not None:
            return self.syn_from, self.other if self.syn_from == self.first else self.first
        return (self.first, self.other) if self.first[1] > self.other[1] else (self.other, self.first)


def _ip(raw: bytes) -> str:
    return ".".join(str(b) for b in raw)


def is_tls_record(data: bytes) -> bool:
    # ContentType handshake(22)/alert(21)/ccs(20)/appdata(23), version 3.x
    return len(data) >= 3 and data[0] in (20, 21, 22, 23) and data[1] == 3 and data[2] <= 4


_APPLICATION_DATA = 23
_MAX_RECORD = 16384 + 2048  # RFC 8446 5.2: a TLSCiphertext fragment is at most 2^14 + 256; some slack


def application_records(stream: bytes) -> int:
    """TLS application_data records in one direction of a flow, walked from its first byte (RFC 8446
    section 5.1: 1 byte type, 2 bytes version, 2 bytes length). Each request a proxy sends is at least
    one record. A stream that does not start at a record boundary counts 0: nothing is guessed."""
    count = offset = 0
    while offset + 5 <= len(stream):
        if not is_tls_record(stream[offset:offset + 3]):
            return 0 if offset == 0 else count
        length = struct.unpack("!H", stream[offset + 3:offset + 5])[0]
        if length > _MAX_RECORD:
            return count
        if stream[offset] == _APPLICATION_DATA and offset + 5 + length <= len(stream):
            count += 1
        offset += 5 + length
    return count


def flows_from_ip_packets(packets: Iterable[bytes]) -> tuple[list[FlowSummary], bytes]:
    """Flows (client = the side that opened it) and all payload bytes."""
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
        flags = tcp[13]
        payload = tcp[(tcp[12] >> 4) * 4:]
        key = frozenset({(src, sport), (dst, dport)})
        flow = flows.get(key)
        if flow is None:
            flow = flows[key] = _Flow((src, sport), (dst, dport))
        if flags & 0x02 and not flags & 0x10:  # SYN without ACK: the opener
            flow.syn_from = (src, sport)
        flow.payload.setdefault((src, sport), bytearray()).extend(payload)
    summaries = []
    everything = bytearray()
    for flow in flows.values():
        client, server = flow.sides()
        sent, answered = bytes(flow.payload.get(client, b"")), bytes(flow.payload.get(server, b""))
        first = sent[:3] or answered[:3]
        summaries.append(FlowSummary(
            client=f"{client[0]}:{client[1]}", server=f"{server[0]}:{server[1]}",
            tls=is_tls_record(first), payload_bytes=len(sent) + len(answered),
            client_records=application_records(sent),
        ))
        everything += sent + answered
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
