"""The pcap reader, on captures built byte by byte."""

from __future__ import annotations

import struct

from cluster.local.capture import read_pcap


def _frame(src: str, dst: str, sport: int, dport: int, flags: int, payload: bytes) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 65535, 0, 0) + payload
    total = 20 + len(tcp)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 64, 6, 0,
                     bytes(map(int, src.split("."))), bytes(map(int, dst.split("."))))
    return b"\x00" * 12 + b"\x08\x00" + ip + tcp


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
