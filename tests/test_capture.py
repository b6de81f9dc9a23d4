"""The pcap reader, on captures built byte by byte."""

from __future__ import annotations

import struct

from cluster.local.capture import read_pcap
from cluster.wire import flows_from_ip_packets, ip_packets_from_hex_dump


def _frame(src: str, dst: str, sport: int, dport: int, flags: int, payload: bytes) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 65535, 0, 0) + payload
    total = 20 + len(tcp)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 64, 6, 0,
                     bytes(map(int, src.split("."))), bytes(map(int, dst.split("."))))
    return b"\x00" * 12 + b"\x08\x00" + ip + tcp


def _udp_frame(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     bytes(map(int, src.split("."))), bytes(map(int, dst.split("."))))
    return b"\x00" * 12 + b"\x08\x00" + ip + udp


def _pcap(*frames: bytes) -> bytes:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    for frame in frames:
        out += struct.pack("<IIII", 0, 0, len(frame), len(frame)) + frame
    return out


def test_flows_are_split_and_classified_by_the_clients_first_bytes() -> None:
    data = _pcap(
        _frame("10.0.0.3", "10.0.0.2", 40000, 8080, 0x02, b""),  # SYN
        _frame("10.0.0.2", "10.0.0.3", 8080, 40000, 0x12, b""),
        _frame("10.0.0.3", "10.0.0.2", 40000, 8080, 0x18, b"\x16\x03\x01\x00\xa0hello"),
        _frame("10.0.0.4", "10.0.0.2", 40001, 8080, 0x02, b""),
        _frame("10.0.0.4", "10.0.0.2", 40001, 8080, 0x18, b"GET /?canary=tg-canary-1 HTTP/1.1\r\n"),
    )
    flows, payload = read_pcap(data)
    by_client = {f.client: f for f in flows}
    assert by_client["10.0.0.3:40000"].tls and by_client["10.0.0.3:40000"].server == "10.0.0.2:8080"
    assert not by_client["10.0.0.4:40001"].tls
    assert b"tg-canary-1" in payload


def test_an_empty_or_header_only_capture_has_no_flows() -> None:
    assert read_pcap(b"") == ([], b"")
    assert read_pcap(_pcap()) == ([], b"")


def _tcpdump_hex(*frames: bytes) -> str:
    """Text as `tcpdump -nn -x` prints it: a header line, then the IP packet in hex, 16 bytes a line."""
    lines = []
    for number, frame in enumerate(frames):
        ip = frame[14:]
        lines.append(f"12:00:00.{number:06d} IP 10.0.0.1.1 > 10.0.0.2.2: Flags [P.], length {len(ip)}")
        for offset in range(0, len(ip), 16):
            chunk = ip[offset:offset + 16].hex()
            words = " ".join(chunk[i:i + 4] for i in range(0, len(chunk), 4))
            lines.append(f"\t0x{offset:04x}:  {words}")
    return "\n".join(["listening on eth0, link-type EN10MB (Ethernet), snapshot length 262144 bytes", *lines])


def test_a_tcpdump_hex_dump_gives_the_same_flows_as_the_pcap() -> None:
    frames = (
        _frame("10.0.0.3", "10.0.0.2", 40000, 8080, 0x02, b""),
        _frame("10.0.0.3", "10.0.0.2", 40000, 8080, 0x18, b"\x16\x03\x01\x00\xa0hello!"),  # odd length
        _frame("10.0.0.4", "10.0.0.2", 40001, 8080, 0x02, b""),
        _frame("10.0.0.4", "10.0.0.2", 40001, 8080, 0x18, b"GET /?canary=tg-canary-2 HTTP/1.1\r\n"),
    )
    packets = ip_packets_from_hex_dump(_tcpdump_hex(*frames))
    assert packets == [frame[14:] for frame in frames]
    assert flows_from_ip_packets(packets) == read_pcap(_pcap(*frames))


def test_marker_datagrams_are_never_flows_nor_payload() -> None:
    data = _pcap(_udp_frame("10.0.0.1", "10.0.0.2", 40999, 9, b"trustgrid-capture-start-00"),
                 _frame("10.0.0.3", "10.0.0.2", 40000, 8080, 0x02, b""),
                 _udp_frame("10.0.0.1", "10.0.0.2", 40999, 9, b"trustgrid-capture-end-00"))
    flows, payload = read_pcap(data)
    assert [f.client for f in flows] == ["10.0.0.3:40000"]
    assert b"trustgrid-capture" not in payload


def test_requests_on_a_pooled_connection_are_counted_as_tls_records() -> None:
    """Envoy keeps its mTLS connection to the server open: twenty calls, one flow, twenty records."""
    record = b"\x17\x03\x03\x00\x05hello"
    frames = [_frame("10.0.0.3", "10.0.0.2", 40000, 8080, 0x18, record * 2) for _ in range(10)]
    frames.append(_frame("10.0.0.2", "10.0.0.3", 8080, 40000, 0x18, record))
    flows, _ = read_pcap(_pcap(*frames))
    assert len(flows) == 1 and flows[0].client == "10.0.0.3:40000"  # no SYN seen: the higher port is the client
    assert flows[0].client_records == 20 and flows[0].tls


def test_a_stream_that_does_not_start_at_a_record_is_counted_as_nothing() -> None:
    from cluster.wire import application_records

    assert application_records(b"\x17\x03\x03\x00\x02hi" * 3) == 3
    assert application_records(b"llo\x17\x03\x03\x00\x02hi") == 0  # began mid-record: no guess
    assert application_records(b"GET / HTTP/1.1\r\n") == 0
