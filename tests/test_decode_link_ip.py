"""The per-packet decoder below TCP: link layers, IPv4/IPv6, fragments, UDP, and frame accounting."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pcapbuild as pb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pcapdns.decode import OUTCOMES, Decoder
from pcapdns.model import IssueReason, LinkType, Payload, Transport
from pcapdns.sources import open_capture

MSG = pb.dns(0xBEEF)
UDP = pb.udp(MSG)


def run(
    dec: Decoder,
    frames: list[bytes],
    linktype: int = 1,
    *,
    wirelen: dict[int, int] | None = None,
    t0: int = 0,
    step: int = 1000,
) -> list[Payload]:
    out: list[Payload] = []
    for n, data in enumerate(frames, 1):
        wire = (wirelen or {}).get(n, len(data))
        out += dec.decode(0, n, t0 + n * step, linktype, data, wire)
    return out


def one(
    linktype: int, frame: bytes, wirelen: int | None = None, **kw: object
) -> tuple[list[Payload], Decoder]:
    dec = Decoder(**kw)  # type: ignore[arg-type]
    out = dec.decode(0, 1, 5, linktype, frame, len(frame) if wirelen is None else wirelen)
    assert_accounted(dec)
    return out, dec


def assert_accounted(dec: Decoder) -> None:
    assert dec.counters["frames"] == sum(dec.counters[o] for o in OUTCOMES)


def reasons(dec: Decoder) -> list[IssueReason]:
    return [i.reason for i in dec.take_issues()]


# -- link layers -----------------------------------------------------------------------------------

IP4 = pb.ipv4(UDP)
IP6 = pb.ipv6(UDP)


@pytest.mark.parametrize(
    ("linktype", "frame"),
    [
        (LinkType.EN10MB, pb.ether(IP4)),
        (LinkType.EN10MB, pb.ether(IP6, 0x86DD)),
        (LinkType.EN10MB, pb.ether(IP4, vlans=[(0x8100, 10)])),
        (LinkType.EN10MB, pb.ether(IP6, 0x86DD, vlans=[(0x88A8, 1), (0x8100, 2)])),  # QinQ
        (LinkType.EN10MB, pb.ether(IP4, vlans=[(0x9100, 1), (0x88A8, 2), (0x8100, 3)])),
        (LinkType.LINUX_SLL, pb.sll(IP4)),
        (LinkType.LINUX_SLL, pb.sll(IP6, 0x86DD)),
        (LinkType.LINUX_SLL2, pb.sll2(IP4)),
        (LinkType.LINUX_SLL2, pb.sll2(IP6, 0x86DD)),
        (LinkType.RAW, IP4),
        (LinkType.RAW, IP6),
        (LinkType.RAW_DLT12, IP4),
        (LinkType.RAW_DLT14, IP6),
        (LinkType.IPV4, IP4),
        (LinkType.IPV6, IP6),
        (LinkType.NULL, pb.null(IP4)),
        (LinkType.NULL, pb.null(IP4, little=False)),  # captured on a big-endian host
        (LinkType.NULL, pb.null(IP6, 24)),
        (LinkType.NULL, pb.null(IP6, 28, little=False)),
        (LinkType.NULL, pb.null(IP6, 30)),
        (LinkType.LOOP, pb.loop(IP4)),
        (LinkType.LOOP, pb.loop(IP6, 24)),
    ],
)
def test_link_layers_reach_the_dns_payload(linktype: int, frame: bytes) -> None:
    (p,), dec = one(linktype, frame)
    assert p.data == MSG and p.transport == Transport.UDP and p.dport == 53 and p.sport == 33333
    assert p.src in (pb.A4, pb.A6) and p.dst in (pb.B4, pb.B6) and not p.capture_truncated
    assert dec.counters["udp_dns"] == 1 and dec.take_issues() == []


@pytest.mark.parametrize(
    ("linktype", "frame"),
    [
        (LinkType.EN10MB, pb.ether(b"\0" * 28, 0x0806)),  # ARP
        (LinkType.EN10MB, pb.ether(b"\0" * 28, 0x0806, vlans=[(0x8100, 5)])),
        (LinkType.EN10MB, pb.ether(b"\xaa\xaa\x03" + b"\0" * 40, 46)),  # 802.3 length + LLC
        (LinkType.EN10MB, pb.ether(b"\x42\x42\x03" + b"\0" * 40, 46)),  # spanning tree
        (LinkType.EN10MB, pb.ether(b"\0" * 46, 0x88CC)),  # LLDP
        (LinkType.EN10MB, pb.ether(b"\x11\x09\0\x01\0\x04\xc0\x21" + b"\0" * 4, 0x8864)),  # PPPoE LCP
        (LinkType.LINUX_SLL, pb.sll(b"\0" * 28, 0x0806)),
    ],
)
def test_non_ip_is_counted(linktype: int, frame: bytes) -> None:
    out, dec = one(linktype, frame)
    assert out == [] and dec.counters["non_ip"] == 1 and dec.take_issues() == []


@pytest.mark.parametrize(
    ("linktype", "frame", "detail"),
    [
        (147, b"\0" * 40, "link type 147 (USER0) not decoded"),
        (6, b"\0" * 40, "link type 6 (IEEE802_5) not decoded"),
        (LinkType.NULL, pb.null(IP4, 7), "BSD loopback address family 7 not decoded"),
        (LinkType.EN10MB, pb.ether(b"\0" * 46, 0x88E5), "EtherType 0x88e5 (MACsec) not decoded"),
        (LinkType.EN10MB, pb.ether(b"\0" * 46, 0x1234), "EtherType 0x1234 not decoded"),
        (LinkType.EN10MB, pb.ether(pb.ipv4(b"\0" * 30, proto=50)), "IP protocol 50 (ESP) not decoded"),
        (
            LinkType.EN10MB,
            pb.ether(pb.ipv6(b"\0" * 30, nh=115), 0x86DD),
            "IP protocol 115 (L2TP) not decoded",
        ),
    ],
)
def test_what_is_not_decoded_is_an_issue_for_every_frame(linktype: int, frame: bytes, detail: str) -> None:
    dec = Decoder()
    for n in range(1, 4):
        assert dec.decode(0, n, n, linktype, frame, len(frame)) == []
    issues = dec.take_issues()
    assert [(i.frame, i.reason, i.detail) for i in issues] == [
        (n, IssueReason.UNSUPPORTED_ENCAPSULATION, detail) for n in range(1, 4)
    ]
    assert dec.counters["unsupported"] == 3
    assert_accounted(dec)


@pytest.mark.parametrize(
    "frame",
    [
        pb.ether(pb.ipv4(b"\0" * 30, proto=2)),  # IGMP
        pb.ether(pb.ipv4(b"\0" * 30, proto=89)),  # OSPF
        pb.ether(pb.ipv4(pb.udp(b"\0" * 20, 40000, 443))),
        pb.ether(pb.ipv4(pb.tcp(b"", sport=40000, dport=443))),
        pb.ether(pb.ipv6(b"", nh=59), 0x86DD),
    ],
)
def test_understood_traffic_that_is_not_dns_is_no_issue(frame: bytes) -> None:
    out, dec = one(LinkType.EN10MB, frame)
    assert out == [] and dec.counters["not_dns"] == 1 and dec.take_issues() == []


@pytest.mark.parametrize(
    ("linktype", "frame"),
    [
        (1, b"\0" * 10),
        (1, pb.ether(b"", vlans=[(0x8100, 1)])[:15]),
        (113, b"\0" * 12),
        (276, b"\0"),
        (0, b"\2"),
    ],
)
def test_link_header_cut_short(linktype: int, frame: bytes) -> None:
    _, dec = one(linktype, frame)
    assert reasons(dec) == [IssueReason.LINK_TRUNCATED]
    _, dec = one(linktype, frame, wirelen=len(frame) + 100)
    assert reasons(dec) == [IssueReason.SNAPLEN_TRUNCATED]


# -- IPv4 ------------------------------------------------------------------------------------------


def test_ipv4_ethernet_padding_is_ignored() -> None:
    (p,), _ = one(1, pb.ether(IP4) + b"\0" * 6)
    assert p.data == MSG


def test_ipv4_options_are_skipped() -> None:
    (p,), _ = one(101, pb.ipv4(UDP, ihl=7))
    assert p.data == MSG


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (pb.ipv4(UDP, version=5), IssueReason.IP_BAD_HEADER),
        (pb.ipv4(UDP, ihl=4), IssueReason.IP_BAD_HEADER),
        (pb.ipv4(pb.udp(MSG, length=len(UDP) + 20), total=len(IP4) + 20), IssueReason.IP_BAD_LENGTH),
        (pb.ipv4(pb.tcp(MSG), 6, total=len(IP4) + 40), IssueReason.IP_BAD_LENGTH),  # only UDP is let through
        (pb.ipv4(UDP, total=10), IssueReason.IP_BAD_LENGTH),
        (IP4[:15], IssueReason.IP_TRUNCATED),
    ],
)
def test_ipv4_header_problems(frame: bytes, reason: IssueReason) -> None:
    out, dec = one(1, pb.ether(frame))
    assert out == [] and reasons(dec) == [reason] and dec.counters["dropped"] == 1


def udp_checksummed(src: bytes, dst: bytes, payload: bytes, v6: bool = False) -> bytes:
    """A UDP datagram to port 53 with its checksum filled in (RFC 768 / RFC 8200 pseudo-header)."""
    datagram = pb.udp(payload)
    n = len(datagram)
    pseudo = src + dst + (n.to_bytes(4, "big") + b"\0\0\0\x11" if v6 else b"\0\x11" + n.to_bytes(2, "big"))
    data = pseudo + datagram + b"\0" * (n % 2)
    total = sum(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return datagram[:6] + (0xFFFF - total).to_bytes(2, "big") + datagram[8:]


@pytest.mark.parametrize(
    "frame",
    [
        pb.ether(pb.ipv4(UDP, total=len(IP4) + 20)),  # claims more than the wire had
        pb.ether(pb.ipv6(UDP, plen=200), 0x86DD),
        pb.ether(pb.ipv4(udp_checksummed(pb.A4, pb.B4, MSG), total=28)),  # claims less than its datagram
        pb.ether(pb.ipv6(udp_checksummed(pb.A6, pb.B6, MSG, v6=True), plen=8), 0x86DD),
    ],
)
def test_a_wrong_ip_length_around_a_whole_udp_datagram_is_decoded_with_an_issue(frame: bytes) -> None:
    (p,), dec = one(1, frame)
    assert p.data == MSG and dec.counters["udp_dns"] == 1
    ((reason, detail),) = [(i.reason, i.detail) for i in dec.take_issues()]
    assert reason == IssueReason.IP_BAD_LENGTH and detail.endswith("its DNS message was decoded")


def test_a_short_ip_length_is_not_trusted_without_a_checksum_that_verifies() -> None:
    good = udp_checksummed(pb.A4, pb.B4, MSG)
    for datagram in (pb.udp(MSG), good[:6] + bytes([good[6] ^ 1]) + good[7:]):  # no checksum, a wrong one
        out, dec = one(1, pb.ether(pb.ipv4(datagram, total=28)))
        assert out == [] and reasons(dec) == [IssueReason.UDP_BAD_LENGTH]


def test_snaplen_cut_udp_is_a_truncated_payload_not_a_malformation() -> None:
    frame = pb.ether(IP4)
    (p,), dec = one(1, frame[:-5], wirelen=len(frame))
    assert p.capture_truncated and p.data == MSG[:-5]
    assert reasons(dec) == [IssueReason.SNAPLEN_TRUNCATED]
    out, dec = one(1, frame[:50], wirelen=len(frame))  # not even a DNS header left
    assert out == [] and reasons(dec) == [IssueReason.SNAPLEN_TRUNCATED]


# -- IPv6 ------------------------------------------------------------------------------------------


def test_ipv6_extension_headers_are_walked() -> None:
    ah = bytes([0, 1, 0, 0]) + b"\0" * 8  # AH: (1 + 2) * 4 = 12 bytes
    frame = pb.ipv6(UDP, ext=[(0, pb.ext_opts()), (43, pb.ext_opts(1)), (51, ah), (60, pb.ext_opts())])
    (p,), _ = one(101, frame)
    assert p.data == MSG


def test_ipv6_no_next_header_is_not_dns() -> None:
    out, dec = one(101, pb.ipv6(b"", 59))
    assert out == [] and dec.counters["not_dns"] == 1 and dec.take_issues() == []


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (pb.ipv6(b"", 17, ext=[(0, pb.ext_opts(3))], plen=8), IssueReason.IPV6_BAD_EXTENSION),
        (pb.ipv6(b"\0\0\0", 0, plen=3), IssueReason.IPV6_BAD_EXTENSION),
        (pb.ipv6(pb.udp(MSG, length=len(UDP) + 1), plen=200), IssueReason.IP_BAD_LENGTH),
        (pb.ipv6(UDP)[:30], IssueReason.IP_TRUNCATED),
        (b"\x45" + pb.ipv6(UDP)[1:], IssueReason.IP_BAD_HEADER),
    ],
)
def test_ipv6_problems(frame: bytes, reason: IssueReason) -> None:
    out, dec = one(1, pb.ether(frame, 0x86DD))
    assert out == [] and reasons(dec) == [reason]


# -- fragments -------------------------------------------------------------------------------------


def test_ipv4_fragments_in_order_complete_on_the_last_frame() -> None:
    frags = pb.v4_fragments(UDP, size=16, ident=77)
    dec = Decoder()
    out = run(dec, [pb.ether(f) for f in frags])
    (p,) = out
    assert p.frame == len(frags) and p.ts_ns == len(frags) * 1000 and p.data == MSG
    assert dec.counters["ip_fragments"] == len(frags) and dec.counters["reassembled"] == 1
    assert dec.take_issues() == [] and dec.flush() == [] and dec.take_issues() == []
    assert_accounted(dec)


def test_fragments_out_of_order_and_duplicated() -> None:
    frags = pb.v4_fragments(UDP, size=8)
    order = [frags[-1], frags[2], frags[0], frags[2], *frags[1:2], *frags[3:-1]]
    dec = Decoder()
    (p,) = run(dec, [pb.ether(f) for f in order])
    assert p.data == MSG and p.frame == len(order)
    assert reasons(dec) == [IssueReason.FRAGMENT_OVERLAP]  # the duplicate, first data kept


def test_overlapping_fragment_keeps_first_data() -> None:
    l4 = UDP
    first = pb.ipv4(l4[:24], mf=True, ident=9)
    evil = pb.ipv4(b"\xee" * 8, mf=True, frag_off=16, ident=9)  # would rewrite bytes 16-23
    rest = pb.ipv4(l4[24:], frag_off=24, ident=9)
    dec = Decoder()
    (p,) = run(dec, [pb.ether(f) for f in (first, evil, rest)])
    assert p.data == MSG
    assert reasons(dec) == [IssueReason.FRAGMENT_OVERLAP]


def test_ipv6_fragments() -> None:
    frags = pb.v6_fragments(UDP, size=16)
    dec = Decoder()
    (p,) = run(dec, [pb.ether(f, 0x86DD) for f in reversed(frags)])
    assert p.data == MSG and p.src == pb.A6 and p.frame == len(frags)
    assert dec.take_issues() == []


def test_incomplete_fragments_time_out_or_flush() -> None:
    frags = pb.v4_fragments(UDP, size=16, ident=1)
    dec = Decoder(fragment_timeout_ns=10_000)
    run(dec, [pb.ether(frags[0])], step=1000)
    assert dec.take_issues() == []
    dec.decode(0, 2, 50_000, 1, pb.ether(pb.ipv4(b"", 59)), 34)  # any later frame moves the clock
    (issue,) = dec.take_issues()
    assert (
        issue.reason == IssueReason.FRAGMENT_INCOMPLETE and issue.frame == 1 and "timed out" in issue.detail
    )
    dec.decode(0, 3, 60_000, 1, pb.ether(frags[1]), 0)
    assert dec.flush() == []
    assert reasons(dec) == [IssueReason.FRAGMENT_INCOMPLETE]
    assert_accounted(dec)


def test_fragment_limit_drops_the_oldest() -> None:
    dec = Decoder(max_fragments=2)
    firsts = [pb.ether(pb.v4_fragments(UDP, size=16, ident=i)[0]) for i in range(3)]
    run(dec, firsts)
    (issue,) = dec.take_issues()
    assert issue.reason == IssueReason.FRAGMENT_LIMIT and issue.frame == 1


def test_oversized_fragment_is_rejected() -> None:
    out, dec = one(101, pb.ipv4(b"\0" * 16, frag_off=65528))
    assert out == [] and reasons(dec) == [IssueReason.IP_BAD_LENGTH]


def test_corpus_dns_response_in_two_fragments(corpus_file: Callable[[str], Path]) -> None:
    path = corpus_file("entrada2__sidnlabs-test-ip-1-dns-response-2-ip-fragments.pcap")
    dec = Decoder()
    out: list[Payload] = []
    with open_capture(str(path)) as cap:
        for b in cap.batches():
            for i in range(len(b)):
                out += dec.decode(
                    0,
                    int(b.frame[i]),
                    int(b.ts_ns[i]),
                    int(b.linktype[i]),
                    b.frame_bytes(i),
                    int(b.wirelen[i]),
                )
    (p,) = out
    assert p.frame == 2 and int.from_bytes(p.data[:2], "big") == 0x7941 and p.data[2] >> 7 == 1
    assert p.sport == 53 and len(p.data) > 1472
    assert dec.take_issues() == [] and dec.counters["ip_fragments"] == 2


# -- UDP -------------------------------------------------------------------------------------------


def test_either_port_selects_dns_and_mdns_llmnr_only_when_asked() -> None:
    (p,), _ = one(101, pb.ipv4(pb.udp(MSG, 53, 40000)))
    assert p.sport == 53 and p.dport == 40000
    for port in (5353, 5355):
        out, dec = one(101, pb.ipv4(pb.udp(MSG, port, port)))
        assert out == [] and dec.counters["not_dns"] == 1
        (p,), _ = one(101, pb.ipv4(pb.udp(MSG, port, port)), ports=frozenset({53, port}))
        assert p.dport == port


@pytest.mark.parametrize(
    ("l4", "reason"),
    [
        (pb.udp(MSG, length=4), IssueReason.UDP_BAD_LENGTH),
        (pb.udp(MSG, length=len(MSG) + 30), IssueReason.UDP_BAD_LENGTH),
        (pb.udp(MSG[:11]), IssueReason.DNS_TOO_SHORT),
        (pb.udp(b""), IssueReason.DNS_TOO_SHORT),
        (pb.udp(MSG)[:6], IssueReason.UDP_TRUNCATED),
    ],
)
def test_udp_problems(l4: bytes, reason: IssueReason) -> None:
    out, dec = one(101, pb.ipv4(l4))
    assert out == [] and reasons(dec) == [reason]


def test_udp_length_shorter_than_ip_payload_uses_udp_length() -> None:
    (p,), _ = one(101, pb.ipv4(pb.udp(MSG, length=8 + 12)))
    assert p.data == MSG[:12]


def test_icmp_quoting_dns_is_not_dns() -> None:
    quoted = pb.ipv4(pb.udp(MSG))
    icmp = bytes([3, 3, 0, 0, 0, 0, 0, 0]) + quoted
    out, dec = one(101, pb.ipv4(icmp, 1))
    assert out == [] and dec.counters["icmp"] == 1
    out, dec = one(101, pb.ipv6(bytes([1, 4, 0, 0, 0, 0, 0, 0]) + pb.ipv6(UDP), 58))
    assert out == [] and dec.counters["icmp"] == 1


def test_other_protocols_and_ports_are_not_dns() -> None:
    for frame in (
        pb.ipv4(b"\0" * 20, 89),  # OSPF
        pb.ipv4(pb.udp(MSG, 1000, 2000)),
        pb.ipv4(pb.tcp(b"", 80, 443), 6),
    ):
        out, dec = one(101, frame)
        assert out == [] and dec.counters["not_dns"] == 1 and dec.take_issues() == []


@settings(max_examples=400, deadline=None)
@given(
    linktype=st.sampled_from([0, 1, 12, 14, 101, 108, 113, 228, 229, 276]),
    base=st.sampled_from(
        [pb.ether(IP4), pb.ether(IP6, 0x86DD), pb.ether(pb.ipv4(pb.tcp(b"\0\x05abc", 5, 53), 6))]
    ),
    edits=st.lists(st.tuples(st.integers(0, 120), st.integers(0, 255)), max_size=6),
    cut=st.integers(0, 60),
    extra_wire=st.integers(0, 30),
)
def test_random_damage_never_raises(
    linktype: int, base: bytes, edits: list[tuple[int, int]], cut: int, extra_wire: int
) -> None:
    frame = bytearray(base)
    for pos, value in edits:
        frame[pos % len(frame)] = value
    data = bytes(frame[: max(0, len(frame) - cut)])
    dec = Decoder()
    dec.decode(0, 1, 0, linktype, data, len(data) + extra_wire)
    dec.flush()
    assert_accounted(dec)
    for issue in dec.take_issues():
        assert issue.frame == 1
