"""Tunnels and link types: what traffic mirrors and other capture points deliver.

Frames are built two independent ways, by hand (``tunnels.py``, struct only) and with scapy's
layers; both must decode to the same DNS message with the inner conversation's addresses.  Every
sample capture, wrapped frame by frame in each tunnel or link type, must give exactly the bare
sample's tables and findings, on the per-packet path and on the fast path alike.
"""

from __future__ import annotations

import functools
import json
import struct
from pathlib import Path

import pcapbuild as pb
import polars as pl
import pytest
import tunnels as tn
from polars.testing import assert_frame_equal

from pcapdns.decode import OUTCOMES, Decoder
from pcapdns.model import IssueReason, LinkType, Payload
from pcapdns.pipeline import Options, analyze
from pcapdns.sources import open_capture
from pcapdns.tables.summary import summary

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = sorted((ROOT / "samples").glob("*.pcap*"))
MSG = pb.dns(0xBEEF)
INNER = pb.ether(pb.ipv4(pb.udp(MSG)))
INNER6 = pb.ether(pb.ipv6(pb.udp(MSG)), 0x86DD)
FAST_WRAPS = {
    "vxlan",
    "geneve",
    "gre-teb",
    "gre-ip",
    "erspan1",
    "erspan2",
    "erspan3",
    "mpls",
    "ip-in-ipv4",
    "ip-in-ipv6",
    "pppoe",
}


def decode(linktype: int, frame: bytes, **kw: object) -> tuple[list[Payload], Decoder]:
    dec = Decoder(**kw)  # type: ignore[arg-type]
    out = dec.decode(0, 1, 5, linktype, frame, len(frame))
    out += dec.flush()
    assert dec.counters["frames"] == sum(dec.counters[o] for o in OUTCOMES)
    return out, dec


def the_message(linktype: int, frame: bytes, encap: str, v6: bool = False, **kw: object) -> None:
    (p,), dec = decode(linktype, frame, **kw)
    assert p.data == MSG and p.sport == 33333 and p.dport == 53 and p.encap == encap
    assert (p.src, p.dst) == ((pb.A6, pb.B6) if v6 else (pb.A4, pb.B4))  # the inner conversation
    assert dec.take_issues() == []


# -- hand-built --------------------------------------------------------------------------------


@pytest.mark.parametrize("wrap", tn.WRAPS, ids=lambda w: w.name)
@pytest.mark.parametrize("inner", [INNER, INNER6], ids=["ipv4", "ipv6"])
def test_every_wrap_reaches_the_dns_inside(wrap: tn.Wrap, inner: bytes) -> None:
    v6 = inner is INNER6
    (label,) = [lb for lb in wrap.labels if not (lb or "").startswith("ip4in" if v6 else "ip6in")]
    the_message(wrap.linktype, wrap.fn(inner), label or "", v6=v6)


def test_extra_tunnel_ports_are_flags() -> None:
    frame = tn.vxlan(INNER, port=8472)
    out, dec = decode(1, frame)
    assert out == [] and dec.counters["not_dns"] == 1  # an ordinary UDP port until named
    the_message(1, frame, "vxlan", vxlan_ports=frozenset({4789, 8472}))
    geneve_on_other_port = tn.outer4(pb.udp(b"\x00\x00\x65\x58\x00\x00\x01\x00" + INNER, 1, 7000), 17)
    the_message(1, geneve_on_other_port, "geneve", geneve_ports=frozenset({7000}))


def test_a_dns_port_is_never_taken_for_a_tunnel() -> None:
    frame = tn.outer4(pb.udp(MSG, 33333, 4789), 17)
    (p,), _ = decode(1, frame, ports=frozenset({4789}))
    assert p.data == MSG and p.encap == ""


def test_nesting_is_bounded() -> None:
    frame = INNER
    for _ in range(4):
        frame = tn.vxlan(frame)
    the_message(1, frame, "vxlan/vxlan/vxlan/vxlan")
    out, dec = decode(1, tn.vxlan(frame))
    assert out == [] and dec.counters["unsupported"] == 1
    (issue,) = dec.take_issues()
    assert issue.reason == IssueReason.UNSUPPORTED_ENCAPSULATION
    assert issue.detail == "more than 4 nested encapsulations (vxlan/vxlan/vxlan/vxlan/vxlan) not decoded"


@pytest.mark.parametrize(
    ("frame", "detail"),
    [
        (tn.gre(0x880B, b"\xff\x03\x00\x21" + b"\0" * 20), "EtherType 0x880b not decoded"),
        (tn.outer4(struct.pack("!HH", 0x3081, 0x880B) + b"\0" * 24, 47), "GRE version 1 (PPTP) not decoded"),
        (
            pb.ether(b"\x11\x00\x00\x01\x00\x10\x00\x3d" + b"\0" * 30, 0x8864),
            "PPP protocol 0x003d not decoded",
        ),
        (tn.outer4(pb.udp(b"\x40\x00\x65\x58" + b"\0" * 20, 1, 6081), 17), "Geneve version 1 not decoded"),
        (tn.outer4(b"\0" * 40, 50), "IP protocol 50 (ESP) not decoded"),
        (pb.ether(b"\0" * 40, 0x88E5), "EtherType 0x88e5 (MACsec) not decoded"),
    ],
)
def test_tunnels_not_decoded_are_named(frame: bytes, detail: str) -> None:
    out, dec = decode(1, frame)
    assert out == [] and dec.counters["unsupported"] == 1
    assert [(i.reason, i.detail) for i in dec.take_issues()] == [
        (IssueReason.UNSUPPORTED_ENCAPSULATION, detail)
    ]


@pytest.mark.parametrize(
    ("linktype", "frame", "detail"),
    [
        (
            105,
            bytes([0x08, 0x41]) + b"\0" * 22 + b"\0" * 20,
            "802.11 protected (encrypted) data frame not decoded",
        ),
        (
            192,
            struct.pack("<BBHI", 0, 0, 8, 147) + b"\0" * 40,
            "link type 147 (USER0) inside PPI not decoded",
        ),
        (
            7,
            b"\x01\x02\xd4\x03\x00\x07" + b"\0" * 30,
            "ARCNET fragmented packet (split flag 0x03) not decoded",
        ),
    ],
)
def test_link_types_not_decoded_are_named(linktype: int, frame: bytes, detail: str) -> None:
    out, dec = decode(linktype, frame)
    assert out == [] and [i.detail for i in dec.take_issues()] == [detail]


@pytest.mark.parametrize(
    ("linktype", "frame"),
    [
        (105, bytes([0x80, 0x00]) + b"\0" * 40),  # a beacon
        (105, bytes([0xD4, 0x00]) + b"\0" * 8),  # an ACK
        (105, bytes([0x48, 0x01]) + b"\0" * 22),  # null data
        (127, struct.pack("<BBHI", 0, 0, 8, 0) + bytes([0x80, 0x00]) + b"\0" * 40),
        (10, b"\x41" + b"\0" * 30),  # an FDDI SMT frame
        (
            239,
            struct.pack("!BBH", 2, 0, 1) + struct.pack("<HH", 8, 10) + b"abc\0",
        ),  # NFLOG without the packet
        (7, b"\x01\x02\xd5\x00\x00\x07" + b"\0" * 28),  # ARCNET ARP
    ],
)
def test_link_frames_without_ip_are_understood(linktype: int, frame: bytes) -> None:
    out, dec = decode(linktype, frame)
    assert out == [] and dec.counters["non_ip"] == 1 and dec.take_issues() == []


def test_a_tunnel_cut_by_the_snaplen_is_snaplen_truncated() -> None:
    frame = tn.vxlan(INNER)
    dec = Decoder()
    assert dec.decode(0, 1, 5, 1, frame[:-20], len(frame)) == []
    assert [i.reason for i in dec.take_issues()] == [IssueReason.SNAPLEN_TRUNCATED]


def test_a_fragmented_tunnel_is_reassembled() -> None:
    gre_packet = pb.ipv4(struct.pack("!HH", 0, 0x6558) + INNER, 47, tn.O1, tn.O2)[20:]
    frags = pb.v4_fragments(gre_packet, proto=47, size=32, src=tn.O1, dst=tn.O2)
    dec = Decoder()
    out = [p for n, f in enumerate(frags, 1) for p in dec.decode(0, n, n, 1, pb.ether(f), len(f) + 14)]
    assert [(p.data, p.encap, p.src) for p in out] == [(MSG, "gre", pb.A4)] and dec.take_issues() == []


# -- scapy as the oracle -----------------------------------------------------------------------


def scapy_frames() -> list[tuple[str, int, bytes, str]]:
    """The same tunnels, built by scapy's layers: (name, link type, frame, encapsulation)."""
    from scapy.contrib.erspan import ERSPAN_II, ERSPAN_III
    from scapy.contrib.geneve import GENEVE
    from scapy.contrib.mpls import MPLS
    from scapy.layers.dns import DNS, DNSQR
    from scapy.layers.dot11 import Dot11, Dot11QoS, RadioTap
    from scapy.layers.inet import IP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import GRE, LLC, SNAP, Ether
    from scapy.layers.ppp import PPP, PPPoE
    from scapy.layers.vxlan import VXLAN

    dns = DNS(id=0xBEEF, rd=1, qd=DNSQR(qname="example.com"))
    inner_ip = IP(src="192.0.2.1", dst="192.0.2.53") / UDP(sport=33333, dport=53) / dns
    inner = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / inner_ip
    outer = Ether(src="02:00:00:00:00:03", dst="02:00:00:00:00:04") / IP(
        src="198.51.100.1", dst="198.51.100.2"
    )
    frames = [
        ("vxlan", 1, outer / UDP(sport=49152, dport=4789) / VXLAN(vni=5001) / inner, "vxlan"),
        (
            "geneve",
            1,
            Ether(dst="02:00:00:00:00:04")
            / IPv6(src="2001:db8:ffff::1", dst="2001:db8:ffff::2")
            / UDP(sport=50000, dport=6081)
            / GENEVE(vni=4097, proto=0x6558, optionlen=2, options=b"\x01\x03\x80\x01opt!")
            / inner,
            "geneve",
        ),
        (
            "gre-teb",
            1,
            outer / GRE(proto=0x6558, key_present=1, key=77, seqnum_present=1, sequence_number=9) / inner,
            "gre",
        ),
        ("gre-ip", 1, outer / GRE(proto=0x0800) / inner_ip, "gre"),
        (
            "erspan2",
            1,
            outer / GRE(proto=0x88BE, seqnum_present=1) / ERSPAN_II(session_id=42) / inner,
            "erspan2",
        ),
        (
            "erspan3",
            1,
            outer / GRE(proto=0x22EB, seqnum_present=1) / ERSPAN_III(session_id=42) / inner,
            "erspan3",
        ),
        ("ipip", 1, outer.copy() / inner_ip, "ip4in4"),
        (
            "mpls",
            1,
            Ether(dst="02:00:00:00:00:04", type=0x8847)
            / MPLS(label=16, s=0)
            / MPLS(label=1000, s=1)
            / inner_ip,
            "mpls",
        ),
        (
            "pppoe",
            1,
            Ether(dst="02:00:00:00:00:04") / PPPoE(sessionid=0x2A) / PPP(proto=0x0021) / inner_ip,
            "pppoe",
        ),
        (
            "802.11",
            105,
            Dot11(type=2, subtype=8, FCfield=1) / Dot11QoS() / LLC() / SNAP() / inner_ip,
            "",
        ),
        ("radiotap", 127, RadioTap() / Dot11(type=2, FCfield=1) / LLC() / SNAP() / inner_ip, ""),
    ]
    return [(name, lt, bytes(pkt), encap) for name, lt, pkt, encap in frames]


def test_scapy_built_tunnels_decode_to_the_same_message() -> None:
    pytest.importorskip("scapy")
    for name, linktype, frame, encap in scapy_frames():
        out, dec = decode(linktype, frame)
        assert [(p.data, p.src, p.dst, p.sport, p.dport, p.encap) for p in out] == [
            (MSG, pb.A4, pb.B4, 33333, 53, encap)
        ], name
        assert dec.take_issues() == [], name


# -- every sample, wrapped ---------------------------------------------------------------------


def as_ethernet(linktype: int, frame: bytes) -> bytes:
    if linktype == LinkType.EN10MB:
        return frame
    assert linktype == LinkType.LINUX_SLL, linktype
    return b"\x02" * 6 + frame[6:12] + frame[14:]  # SLL's address and protocol, Ethernet's layout


def wrapped_capture(sample: Path, wrap: tn.Wrap, out: Path) -> Path:
    records: list[pb.Record] = []
    with open_capture(str(sample), 0) as capture:
        for batch in capture.batches(100_000):
            for i in range(len(batch)):
                frame = wrap.fn(as_ethernet(int(batch.linktype[i]), batch.frame_bytes(i)))
                records.append((int(batch.ts_ns[i]), frame))
    path = out / f"{sample.stem}-{wrap.name}.pcap"
    path.write_bytes(pb.pcap(records, wrap.linktype, nano=True))
    return path


@functools.cache  # the bare samples are compared with every wrap
def comparable(path: Path, fast: bool) -> tuple[dict[str, object], pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    a = analyze([str(path)], Options(fast=fast, fast_min_frames=0))
    s = summary(a)
    s.pop("files", None)
    t = a.transactions.drop("file", "encapsulation")
    # the capture's own drop counts (pcapng statistics) do not survive the rewrite as a classic pcap
    findings = a.anomalies.filter(~pl.col("summary").str.contains("pcapng statistics")).with_columns(
        pl.col("evidence").list.eval(pl.element().struct.field("frame")),
        pl.col("summary").str.replace_all(str(path), "CAPTURE", literal=True),
    )
    return s, t, findings, a.transactions.select("encapsulation").unique()


@pytest.mark.parametrize("wrap", tn.WRAPS, ids=lambda w: w.name)
@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_a_wrapped_sample_analyzes_like_the_bare_one(sample: Path, wrap: tn.Wrap, tmp_path: Path) -> None:
    bare = comparable(sample, fast=True)
    path = wrapped_capture(sample, wrap, tmp_path)
    for fast in (True, False):
        s, t, findings, labels = comparable(path, fast)
        assert s == bare[0]
        assert_frame_equal(t, bare[1])
        assert_frame_equal(findings, bare[2])
        assert set(labels.get_column("encapsulation").cast(pl.String).to_list()) <= wrap.labels


@pytest.mark.parametrize("wrap", [w for w in tn.WRAPS if w.name in FAST_WRAPS], ids=lambda w: w.name)
def test_mirror_formats_take_the_fast_path(wrap: tn.Wrap, tmp_path: Path) -> None:
    path = wrapped_capture(ROOT / "samples" / "outage.pcap", wrap, tmp_path)
    a = analyze([str(path)], Options(fast=True, fast_min_frames=0))
    udp = a.message_counts.filter(pl.col("transport") == 17)["count"].sum()
    assert a.counters["fast_frames"] == udp > 1000


def test_the_cli_takes_tunnel_ports_and_names_what_it_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pcapdns.cli import main

    query = pb.udp_frame(0x4242)
    answer = pb.ether(pb.ipv4(pb.udp(pb.dns(0x4242, 1), 53, 33333), src=pb.B4, dst=pb.A4))
    esp = tn.outer4(b"\0" * 40, 50)
    records: list[pb.Record] = [
        (10**9, tn.vxlan(query, port=8472)),
        (10**9 + 10**6, tn.vxlan(answer, port=8472)),
        (2 * 10**9, esp),
        (3 * 10**9, esp),
    ]
    path = tmp_path / "mirror.pcap"
    path.write_bytes(pb.pcap(records))
    assert main(["analyze", "--json", "--vxlan-port", "8472", str(path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["answered"] == 1 and report["dns_messages"] == 2
    assert report["decode_issues"] == {"unsupported_encapsulation": 2}
    assert main(["analyze", "--no-progress", str(path)]) == 0
    text = capsys.readouterr().out
    assert "unsupported_encapsulation" in text and "IP protocol 50 (ESP) not decoded" in text
    out = tmp_path / "out"
    assert main(["export", "--vxlan-port", "8472", "-o", str(out), str(path)]) == 0
    capsys.readouterr()
    t = pl.read_parquet(out / "transactions.parquet")
    assert t["encapsulation"].cast(pl.String).to_list() == ["vxlan"]
    issues = pl.read_parquet(out / "decode_issues.parquet")
    assert issues.select("frame", "reason").rows() == [
        (3, "unsupported_encapsulation"),
        (4, "unsupported_encapsulation"),
    ]
