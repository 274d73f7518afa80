"""DNS over TCP reassembly, and the whole decoder against tshark's view of the optional corpus."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pcapbuild as pb
import pytest

from pcapdns.decode import OUTCOMES, Decoder
from pcapdns.model import IssueReason, Payload, Transport
from pcapdns.sources import open_capture

ISN = 1_000
Q = [pb.dns(0x100 + i, 0, b"\x01" + bytes([97 + i]) + b"\x00") for i in range(6)]  # 17-byte queries


def framed(*msgs: bytes) -> bytes:
    return b"".join(struct.pack("!H", len(m)) + m for m in msgs)


class Flow:
    """One client->server TCP/53 connection over raw IPv4, fed frame by frame."""

    def __init__(self, dec: Decoder | None = None, sport: int = 40000) -> None:
        self.dec = dec or Decoder()
        self.sport = sport
        self.frame = 0

    def send(
        self, payload: bytes, seq: int, flags: str = "PA", *, reply: bool = False, cut: int = 0
    ) -> list[Payload]:
        """``cut``: bytes of the frame's end the capture's snaplen did not keep."""
        self.frame += 1
        ports = (53, self.sport) if reply else (self.sport, 53)
        src, dst = (pb.B4, pb.A4) if reply else (pb.A4, pb.B4)
        pkt = pb.ipv4(pb.tcp(payload, *ports, seq=seq, flags=flags), 6, src, dst)
        return self.dec.decode(0, self.frame, self.frame * 1000, 101, pkt[: len(pkt) - cut], len(pkt))

    def issues(self) -> list[IssueReason]:
        return [i.reason for i in self.dec.take_issues()]


def ids(out: list[Payload]) -> list[tuple[int, int, int]]:
    return [(p.frame, p.idx, int.from_bytes(p.data[:2], "big")) for p in out]


def test_handshake_then_message_split_over_segments() -> None:
    f = Flow()
    data = framed(Q[0])
    assert f.send(b"", ISN, "S") == []
    assert f.send(b"", 5000, "SA", reply=True) == []
    assert f.send(data[:1], ISN + 1) == []  # the length prefix itself is split
    assert f.send(data[1:10], ISN + 2) == []
    (p,) = f.send(data[10:], ISN + 11)
    assert (p.frame, p.idx, p.data) == (5, 0, Q[0]) and p.transport == Transport.TCP
    assert (p.src, p.sport, p.dst, p.dport) == (pb.A4, 40000, pb.B4, 53)
    assert f.dec.flush() == [] and f.issues() == []
    assert f.dec.counters["tcp_segments"] == 5


def test_several_messages_in_one_segment_and_one_across_segments() -> None:
    f = Flow()
    data = framed(*Q[:4])
    cut = len(framed(*Q[:2])) + 5
    out = f.send(data[:cut], ISN)  # mid-way start: no SYN seen
    assert ids(out) == [(1, 0, 0x100), (1, 1, 0x101)]
    assert ids(f.send(data[cut:], ISN + cut)) == [(2, 0, 0x102), (2, 1, 0x103)]


def test_out_of_order_segments_are_held() -> None:
    f = Flow()
    data = framed(Q[0], Q[1])
    f.send(b"", ISN, "S")
    assert f.send(data[20:], ISN + 1 + 20) == []
    assert f.send(data[10:20], ISN + 1 + 10) == []
    assert ids(f.send(data[:10], ISN + 1)) == [(4, 0, 0x100), (4, 1, 0x101)]
    assert f.issues() == []


def test_retransmissions_and_overlaps_are_not_duplicated() -> None:
    f = Flow()
    data = framed(Q[0], Q[1])
    one = len(framed(Q[0]))
    f.send(b"", ISN, "S")
    assert ids(f.send(data[:one], ISN + 1)) == [(2, 0, 0x100)]
    assert f.send(data[:one], ISN + 1) == []  # plain retransmission
    assert ids(f.send(data[10:], ISN + 11)) == [(4, 0, 0x101)]  # overlap with new bytes after it
    assert f.send(data, ISN + 1) == []
    assert f.issues() == []


def test_syn_retransmission_and_psh_without_payload() -> None:
    f = Flow()
    f.send(b"", ISN, "S")
    f.send(b"", ISN, "S")
    assert f.send(b"", ISN + 1, "PA") == []
    (p,) = f.send(framed(Q[0]), ISN + 1)
    assert p.frame == 4 and f.issues() == []


def test_new_syn_on_the_same_ports_starts_a_new_stream() -> None:
    f = Flow()
    f.send(b"", ISN, "S")
    f.send(framed(Q[0])[:5], ISN + 1)
    f.send(b"", 90_000, "S")
    assert f.issues() == [IssueReason.TCP_INCOMPLETE]
    assert ids(f.send(framed(Q[1]), 90_001)) == [(4, 0, 0x101)]


def test_sequence_numbers_wrap() -> None:
    f = Flow()
    data = framed(Q[0], Q[1])
    start = (1 << 32) - 7
    f.send(b"", start - 1, "S")
    assert f.send(data[:10], start) == []
    assert ids(f.send(data[10:], (start + 10) % (1 << 32))) == [(3, 0, 0x100), (3, 1, 0x101)]


def test_both_directions_are_separate_streams() -> None:
    f = Flow()
    resp = pb.dns(0x100, 1)
    assert ids(f.send(framed(Q[0]), ISN)) == [(1, 0, 0x100)]
    (p,) = f.send(framed(resp), 7000, reply=True)
    assert (p.sport, p.dport, p.data[2] >> 7) == (53, 40000, 1)


def test_gap_never_filled_is_reported_at_flush_and_stream_resynchronises() -> None:
    f = Flow()
    data = framed(Q[0], Q[1], Q[2])
    one = len(framed(Q[0]))
    f.send(b"", ISN, "S")
    assert f.send(data[:5], ISN + 1) == []  # Q0 begins...
    # ... its end (and nothing else) is lost; Q1 and Q2 arrive and are held behind the hole.
    assert f.send(data[one : one + 7], ISN + 1 + one) == []
    assert f.send(data[one + 7 :], ISN + 1 + one + 7) == []
    out = f.dec.flush()
    assert ids(out) == [(4, 0, 0x101), (4, 1, 0x102)]  # the frame that brought their last bytes
    issues = f.dec.take_issues()
    assert [i.reason for i in issues] == [IssueReason.TCP_GAP]
    assert f"{one - 5} bytes missing" in issues[0].detail and "(5 bytes) was dropped" in issues[0].detail


def test_gap_detected_when_held_data_outgrows_the_buffer() -> None:
    f = Flow(Decoder(max_tcp_buffer=300))
    msgs = [pb.dns(i, 0, b"\x10" + b"a" * 16 + b"\x00") for i in range(20)]
    data = framed(*msgs)
    size = len(framed(msgs[0]))
    f.send(b"", ISN, "S")
    out: list[Payload] = []
    for i in range(1, 20):  # message 0 is lost
        out += f.send(data[i * size : (i + 1) * size], ISN + 1 + i * size)
    assert f.issues()[:1] == [IssueReason.TCP_GAP]
    out += f.dec.flush()
    assert sorted(int.from_bytes(p.data[:2], "big") for p in out) == list(range(1, 20))


def test_fin_with_a_hole_reports_the_gap() -> None:
    f = Flow()
    data = framed(Q[0], Q[1])
    one = len(framed(Q[0]))
    f.send(b"", ISN, "S")
    f.send(data[one:], ISN + 1 + one)
    out = f.send(b"", ISN + 1 + len(data), "FA")
    assert ids(out) == [(2, 0, 0x101)]
    assert f.issues() == [IssueReason.TCP_GAP]
    assert f.send(data[:one], ISN + 1) == []  # too late: the stream is closed


def test_fin_after_a_partial_message_is_incomplete() -> None:
    f = Flow()
    f.send(framed(Q[0])[:9], ISN)
    f.send(b"", ISN + 9, "FA")
    (issue,) = f.dec.take_issues()
    assert issue.reason == IssueReason.TCP_INCOMPLETE and issue.frame == 1


def test_rst_ends_both_directions() -> None:
    f = Flow()
    f.send(framed(Q[0])[:9], ISN)
    f.send(framed(Q[1])[:3], 7000, reply=True)
    f.send(b"", ISN + 9, "R")
    assert f.issues() == [IssueReason.TCP_INCOMPLETE, IssueReason.TCP_INCOMPLETE]
    assert f.dec.flush() == [] and f.issues() == []


def test_incomplete_at_flush() -> None:
    f = Flow()
    f.send(framed(Q[0])[:-1], ISN)
    assert f.dec.flush() == []
    assert f.issues() == [IssueReason.TCP_INCOMPLETE]


def test_too_short_length_prefix_is_consumed() -> None:
    f = Flow()
    out = f.send(struct.pack("!H", 3) + b"abc" + framed(Q[0]), ISN)
    assert ids(out) == [(1, 0, 0x100)]
    assert f.issues() == [IssueReason.DNS_TOO_SHORT]


def test_message_bigger_than_the_buffer_is_skipped() -> None:
    f = Flow(Decoder(max_tcp_buffer=100))
    big = pb.dns(1, 1, b"\x3f" + b"x" * 63 + b"\x3f" + b"y" * 63 + b"\x00")
    data = framed(big, Q[0])
    assert f.send(data[:60], ISN) == []
    assert f.issues() == [IssueReason.TCP_STREAM_LIMIT]
    assert ids(f.send(data[60:], ISN + 60)) == [(2, 0, 0x100)]


def test_flow_table_is_bounded() -> None:
    dec = Decoder(max_tcp_flows=2)
    for port in (1001, 1002, 1003):
        Flow(dec, port).send(framed(Q[0])[:5], ISN)
    assert [i.reason for i in dec.take_issues()] == [IssueReason.TCP_STREAM_LIMIT]


def test_snaplen_cut_segment_is_a_gap_not_a_guess() -> None:
    f = Flow()
    data = framed(Q[0], Q[1], Q[2])
    one = len(framed(Q[0]))
    out = f.send(data[: one + 10], ISN, cut=6)  # the capture kept 4 of the 10 bytes of Q1 sent
    assert ids(out) == [(1, 0, 0x100)]
    assert f.issues() == [IssueReason.SNAPLEN_TRUNCATED, IssueReason.TCP_GAP]
    assert f.send(data[one + 10 : one * 2], ISN + one + 10) == []  # the rest of Q1: skipped
    assert ids(f.send(data[one * 2 :], ISN + one * 2)) == [(3, 0, 0x102)]


@pytest.mark.parametrize(
    ("segment", "reason"),
    [
        (pb.tcp(b"", 40000, 53)[:12] + b"\x30" + pb.tcp(b"", 40000, 53)[13:], IssueReason.TCP_BAD_HEADER),
        (pb.tcp(b"", 40000, 53)[:12], IssueReason.TCP_TRUNCATED),
        (pb.tcp(b"", 40000, 53, options=b"\x01" * 8)[:24], IssueReason.TCP_BAD_HEADER),
    ],
)
def test_tcp_header_problems(segment: bytes, reason: IssueReason) -> None:
    dec = Decoder()
    assert dec.decode(0, 1, 0, 101, pb.ipv4(segment, 6), 20 + len(segment)) == []
    assert [i.reason for i in dec.take_issues()] == [reason]
    assert dec.counters["dropped"] == 1


# -- the optional corpus against tshark 4.0 ----------------------------------------------------------

# Files where pcapdns disagrees with tshark on purpose: file -> (extra ports that make us agree, why).
BY_DESIGN: dict[str, tuple[frozenset[int], str]] = {
    "suricata-verify__dns-incomplete--input.pcap": (
        frozenset({5353}),
        "DNS over TCP on port 5353: tshark's DNS dissector claims TCP 5353 by default (its TCP port "
        "range is 53,5353), pcapdns counts 5353 (mDNS) only when asked for",
    ),
}

Message = tuple[int, int, str, int, int]  # frame, idx, carrier, DNS id, QR


def _reference(corpus: Path, name: str) -> tuple[list[Message], frozenset[int]]:
    ref = json.loads((corpus / "reference" / f"{name}.json").read_text())
    ports = {53}
    for rule in ref["decode_as"]:
        m = re.match(r"(?:udp|tcp)\.port==(\d+)", rule)
        if m:
            ports.add(int(m.group(1)))
    msgs = [
        (m["frame"], m["idx"], m["carrier"], m["id"], m["qr"])
        for m in ref["messages"]
        if m["proto"] == "dns" and not m["tunneled"] and m["carrier"] in ("udp", "tcp")
    ]
    return sorted(msgs), frozenset(ports)


def _ours(path: Path, ports: frozenset[int]) -> list[Message]:
    dec = Decoder(ports)
    out: list[Payload] = []
    with open_capture(str(path)) as cap:
        for b in cap.batches():
            for i in range(len(b)):
                args = (
                    int(b.frame[i]),
                    int(b.ts_ns[i]),
                    int(b.linktype[i]),
                    b.frame_bytes(i),
                    int(b.wirelen[i]),
                )
                out += dec.decode(0, *args)
    out += dec.flush()
    assert cap.info.issues == []
    assert dec.counters["frames"] == cap.info.frames - _unnumbered(path)
    assert dec.counters["frames"] == sum(dec.counters[o] for o in OUTCOMES)
    return sorted(
        (p.frame, p.idx, p.transport.name.lower(), int.from_bytes(p.data[:2], "big"), p.data[2] >> 7)
        for p in out
    )


def _unnumbered(path: Path) -> int:
    """Records Wireshark numbers that carry no packet (the pcapng custom blocks of test202)."""
    return 3 if path.name == "gopacket__test202.pcapng" else 0


def test_corpus_agrees_with_tshark(corpus: Path, corpus_capture: Path) -> None:
    path, name = corpus_capture, corpus_capture.name
    expected, ports = _reference(corpus, name)
    if name in BY_DESIGN:
        extra, _why = BY_DESIGN[name]
        assert _ours(path, ports) != expected  # still a disagreement with the default ports
        ports |= extra
    assert _ours(path, ports) == expected
