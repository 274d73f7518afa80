"""Compiled TCP reassembly on every link layer the compiled link reading knows
(:mod:`pcapdns.decode.framelink`): Ethernet (VLAN tags 802.1Q, 802.1ad and 0x9100), Linux cooked
capture v1 and v2, raw IP, BSD loopback (NULL in either byte order, LOOP).

Each capture holds DNS over TCP that compiled reassembly can prove, beside frames the per-packet
decoder reads in the same batches (a frame cut by the snaplen, an IPv4 fragment never completed,
an IPv6 packet behind extension headers): the connections those frames cannot belong to stay
on the compiled path, whatever the link, and give exactly the per-packet path's results.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from pcapbuild import (
    A4,
    A6,
    B4,
    B6,
    dns,
    ether,
    ext_frag,
    ext_opts,
    ipv4,
    ipv6,
    loop,
    null,
    pcap,
    sll,
    sll2,
    tcp,
    udp,
)
from polars.testing import assert_frame_equal

from pcapdns.decode.tcp import IssueFn, TcpStreams
from pcapdns.decode.tcpbatch import ip_pairs
from pcapdns.model import LinkType
from pcapdns.pipeline import Decoded, Options, read
from pcapdns.tables.names import address_text

SLOW = Options(fast=False, batch_frames=64)

Framer = Callable[[bytes, bool], "bytes | None"]  # an IP packet (IPv6 or not) in a frame of the link


def _ethernet(tags: list[int]) -> Framer:
    return lambda p, v6: ether(p, 0x86DD if v6 else 0x0800, [(t, 7) for t in tags])


LINKS: list[tuple[str, LinkType, Framer]] = [
    ("ethernet", LinkType.EN10MB, _ethernet([])),
    ("vlan-8100", LinkType.EN10MB, _ethernet([0x8100])),
    ("qinq-88a8", LinkType.EN10MB, _ethernet([0x88A8, 0x8100])),
    ("vlan-9100", LinkType.EN10MB, _ethernet([0x9100])),
    ("qinq-9100", LinkType.EN10MB, _ethernet([0x9100, 0x8100])),
    ("sll", LinkType.LINUX_SLL, lambda p, v6: sll(p, 0x86DD if v6 else 0x0800)),
    ("sll2", LinkType.LINUX_SLL2, lambda p, v6: sll2(p, 0x86DD if v6 else 0x0800)),
    ("raw", LinkType.RAW, lambda p, v6: p),
    ("raw-dlt12", LinkType.RAW_DLT12, lambda p, v6: p),
    ("raw-dlt14", LinkType.RAW_DLT14, lambda p, v6: p),
    ("ipv4", LinkType.IPV4, lambda p, v6: None if v6 else p),
    ("ipv6", LinkType.IPV6, lambda p, v6: p if v6 else None),
    ("null-le", LinkType.NULL, lambda p, v6: null(p, 30 if v6 else 2)),
    ("null-be", LinkType.NULL, lambda p, v6: null(p, 24 if v6 else 2, little=False)),
    ("null-28", LinkType.NULL, lambda p, v6: null(p, 28 if v6 else 2)),
    ("loop", LinkType.LOOP, lambda p, v6: loop(p, 24 if v6 else 2)),
]
V6_SERVER = bytes.fromhex("20010db8005300000000000000000001")
V6_OTHER = bytes.fromhex("20010db8009900000000000000000001")
MLD_GROUP = bytes.fromhex("ff020000000000000000000000000016")


def _frame(framer: Framer, packet: bytes, v6: bool) -> bytes:
    f = framer(packet, v6)
    assert f is not None
    return f


def _connection(
    rng: random.Random, framer: Framer, k: int, v6: bool, hop_by_hop: bool = False
) -> list[tuple[bytes, int]]:
    """A connection compiled reassembly can prove: handshake, messages cut into segments (a
    message over several, several in one), retransmissions, FIN.  ``hop_by_hop``: its first
    segment of data (IPv6) behind a hop-by-hop header, which only the per-packet decoder reads."""
    client = bytes.fromhex("20010db8") + bytes(11) + bytes([k + 1]) if v6 else bytes([10, 0, 0, k + 1])
    server = V6_SERVER if v6 else bytes([10, 53, 0, 1])
    out: list[tuple[bytes, int]] = []

    def seg(to_server: bool, seq: int, flags: str, data: bytes = b"") -> None:
        sp, dp = (20000 + k, 53) if to_server else (53, 20000 + k)
        src, dst = (client, server) if to_server else (server, client)
        l4 = tcp(data, sp, dp, seq=seq, flags=flags)
        ext = [(0, ext_opts())] if hop_by_hop and data and len(out) == 3 else []
        f = _frame(framer, ipv6(l4, 6, src, dst, ext=ext) if v6 else ipv4(l4, 6, src, dst), v6)
        out.append((f, len(f)))

    cseq, sseq = rng.getrandbits(32), rng.getrandbits(32)
    seg(True, cseq, "S")
    seg(False, sseq, "SA")
    seg(True, cseq + 1, "A")
    ends = {}
    for to_server, base in ((True, cseq + 1), (False, sseq + 1)):
        messages = [dns(k * 8 + i, int(not to_server)) for i in range(rng.randint(1, 4))]
        stream = b"".join(struct.pack("!H", len(m)) + m for m in messages)
        inner = [rng.randint(1, len(stream) - 1) for _ in range(rng.randint(0, 4))]
        cuts = sorted({0, len(stream), *inner})
        for a, b in zip(cuts, cuts[1:], strict=False):
            seg(to_server, base + a, "PA", stream[a:b])
            if rng.random() < 0.1:
                seg(to_server, base + a, "PA", stream[a:b])  # retransmitted
        ends[to_server] = base + len(stream)
    seg(True, ends[True], "FA")
    seg(False, ends[False], "FA")
    seg(True, ends[True] + 1, "A")
    return out


def _other(framer: Framer, kind: str, k: int) -> tuple[bytes, int]:
    """A frame for the per-packet decoder, between hosts of no connection: an MLD report (ICMPv6
    behind a hop-by-hop header), a DNS query behind destination options and a fragment header,
    an IPv4 fragment whose datagram never completes, a query cut by the snaplen."""
    if kind == "m":
        f = _frame(
            framer, ipv6(b"\x8f\x00" + bytes(26), 58, V6_OTHER, MLD_GROUP, ext=[(0, ext_opts())]), True
        )
        return f, len(f)
    if kind == "d":
        query = udp(dns(900 + k), 40000 + k)
        chain = [(60, ext_opts(1)), (44, ext_frag(0, False, k))]
        return (f := _frame(framer, ipv6(query, 17, V6_OTHER, V6_SERVER, ext=chain), True)), len(f)
    if kind == "f":
        piece = ipv4(bytes(24), 17, bytes([10, 99, 0, 1]), bytes([10, 99, 0, 2]), frag_off=64, ident=k)
        return (f := _frame(framer, piece, False)), len(f)
    query = ipv4(udp(dns(700 + k), 40000 + k), 17, bytes([10, 99, 0, 3]), bytes([10, 53, 0, 1]))
    f = _frame(framer, query, False)
    return f[:-6], len(f)


def _capture(rng: random.Random, framer: Framer, kinds: str) -> list[tuple[int, bytes, int]]:
    """Provable connections interleaved with frames for the per-packet decoder (``kinds``: those
    of :func:`_other` the link can carry)."""
    v4_ok, v6_ok = framer(ipv4(b""), False) is not None, framer(ipv6(b""), True) is not None
    sources = [_connection(rng, framer, k, v6_ok and (not v4_ok or rng.random() < 0.4)) for k in range(40)]
    usable = [x for x in kinds if (v6_ok if x in "md" else v4_ok)]
    sources += [[_other(framer, usable[k % len(usable)], k)] for k in range(12)]
    return _interleaved(rng, sources)


def _interleaved(
    rng: random.Random, sources: list[list[tuple[bytes, int]]], t: int = 10**18
) -> list[tuple[int, bytes, int]]:
    """The sources' frames interleaved at random, each source in its own order, after time ``t``."""
    records = []
    while sources:
        q = rng.choice(sources)
        f, wire = q.pop(0)
        t += rng.randint(1, 3000) * 1000
        records.append((t, f, wire))
        if not q:
            sources.remove(q)
    return records


def _comparable(d: Decoded) -> pl.DataFrame:
    text = pl.Series([address_text(hi, lo) for hi, lo in d.addresses], dtype=pl.String)
    m = d.messages
    return m.with_columns(text.gather(m["src"]).alias("src"), text.gather(m["dst"]).alias("dst")).sort(
        ["file_id", "frame", "idx"]
    )


@pytest.mark.parametrize("batch", [50, 100_000])
@pytest.mark.parametrize(("name", "link", "framer"), LINKS, ids=[x[0] for x in LINKS])
def test_compiled_tcp_reassembly_on_every_link_framelink_reads(
    tmp_path: Path, name: str, link: LinkType, framer: Framer, batch: int, streamed: list[int]
) -> None:
    path = tmp_path / f"{name}.pcap"
    path.write_bytes(pcap(_capture(random.Random(f"{name}-{batch}"), framer, "mdfc"), int(link)))
    fast = read([str(path)], Options(fast=True, fast_min_frames=0, batch_frames=batch))
    slow = read([str(path)], SLOW)
    assert_frame_equal(_comparable(fast), _comparable(slow))
    assert_frame_equal(fast.malformed, slow.malformed)
    assert sorted(map(str, fast.issues)) == sorted(map(str, slow.issues))
    assert fast.messages.filter(pl.col("transport") == 6).height > 100
    # the per-packet decoder read frames beside the segments (its "frames" count those taken too)
    assert fast.counters["slow_frames"] > fast.counters["slow_tcp_segments"]
    # every TCP segment went through compiled reassembly, in every batch
    assert sum(streamed) == fast.counters["tcp_frames"] == slow.counters["slow_tcp_segments"]


def _pairs(frames: list[tuple[LinkType, bytes]], tunnel_ports: tuple[int, ...] = ()) -> list[int]:
    """``placed`` of :func:`ip_pairs` for each frame (all in one buffer), each placed frame's
    addresses checked: the outer IP header's (pcapbuild's A and B), whatever follows it."""
    buf = b"".join(f for _, f in frames)
    offsets = np.cumsum([0] + [len(f) for _, f in frames[:-1]]).astype(np.int64)
    port_kind = np.zeros(65536, dtype=np.uint8)
    port_kind[53] = 1
    port_kind[list(tunnel_ports)] = 2
    placed, addr, version = ip_pairs(
        np.frombuffer(buf, dtype=np.uint8),
        offsets,
        np.array([len(f) for _, f in frames], dtype=np.int64),
        np.array([int(k) for k, _ in frames], dtype=np.int64),
        port_kind,
    )
    mapped = bytes(10) + b"\xff\xff"
    for a, v, p in zip(addr, version, placed, strict=True):
        if p:
            want = A6 + B6 if v == 6 else mapped + A4 + mapped + B4
            assert a.astype(">u8").tobytes() == want
    return [int(p) for p in placed]


def test_what_ip_pairs_places_behind_link_and_extension_headers() -> None:
    """A frame the per-packet decoder reads has its address pair known (placed: 1 when it may
    hold a TCP segment, 2 when it holds none) unless what it carries may be any connection (0):
    a tunnel behind IPv6 extension headers, a header chain cut by the snaplen, a fragment whose
    next header is an extension header (the datagram's, which other frames may supply), a link
    layer not read."""
    hbh, dst, rt = (0, ext_opts()), (60, ext_opts(2)), (43, bytes(8))
    ah = (51, bytes([0, 1]) + bytes(10))  # AH: (1 + 2) * 4 bytes
    seg = tcp(b"\x00\x0c" + dns(), 20001, 53)
    eth, nul, lo = LinkType.EN10MB, LinkType.NULL, LinkType.LOOP

    def v6(payload: bytes, nh: int, ext: list[tuple[int, bytes]]) -> bytes:
        return ether(ipv6(payload, nh, ext=ext), 0x86DD)

    cases = [
        (eth, v6(seg, 6, [hbh]), 1),
        (eth, v6(seg, 6, [hbh, rt, ah, dst]), 1),
        (nul, null(ipv6(seg, 6, ext=[dst]), 30), 1),
        (eth, v6(b"\x8f\x00" + bytes(26), 58, [hbh]), 2),  # an MLD report
        (eth, v6(udp(dns()), 17, [dst, (44, ext_frag(0, False, 1))]), 2),
        (eth, v6(bytes(16), 6, [(44, ext_frag(64, True, 4))]), 1),  # a later fragment of TCP
        (eth, ether(ipv4(bytes(16), 17, frag_off=64)), 2),  # a later fragment of UDP
        (eth, ether(ipv4(bytes(16), 6, frag_off=64)), 1),  # ... of TCP
        (eth, ether(ipv4(udp(dns())))[:-5], 2),  # a query cut by the snaplen
        (eth, v6(ipv4(seg, 6), 4, [hbh]), 0),  # IPv4 in IPv6 behind hop-by-hop
        (eth, v6(ipv6(seg, 6), 41, [dst, (44, ext_frag(0, True, 2))]), 0),
        (eth, v6(bytes(8), 47, [rt]), 0),  # GRE
        (eth, v6(udp(bytes(40), 40000, 4789), 17, [hbh]), 0),  # a UDP tunnel port
        (eth, v6(bytes(16), 60, [(44, ext_frag(64, False, 3))]), 0),  # a later fragment
        (eth, v6(udp(dns()), 17, [(44, ext_frag(0, True, 5)), dst]), 0),  # the datagram's headers
        (eth, v6(seg, 6, [hbh, dst])[: -len(seg) - 10], 0),  # the chain cut by the snaplen
        (eth, ether(ipv4(seg, 6), 0x0800, [(0x9100, 5)]), 1),
        (eth, ether(ipv4(seg, 6), 0x0800, [(0x8100, 5)] * 3), 0),  # three VLAN tags: not read
        (lo, loop(ipv4(seg, 6)), 1),
        (nul, null(ipv4(seg, 6), 2, little=False), 1),
        (nul, null(ipv4(seg, 6), 7), 0),  # an address family it does not read
    ]
    assert _pairs([(k, f) for k, f, _ in cases], tunnel_ports=(4789,)) == [p for _, _, p in cases]


@pytest.mark.parametrize(
    ("name", "link", "framer"), [LINKS[0], LINKS[3], LINKS[12]], ids=["ethernet", "vlan-9100", "null"]
)
def test_a_segment_behind_extension_headers_leaves_its_connection_to_the_per_packet_path(
    tmp_path: Path, name: str, link: LinkType, framer: Framer, streamed: list[int]
) -> None:
    """The per-packet decoder reads a segment behind a hop-by-hop header: its connection (and
    only it) goes the per-packet way, from the state the batch began with."""
    rng = random.Random(name)
    sources = [_connection(rng, framer, k, True, hop_by_hop=k % 5 == 0) for k in range(30)]
    # the segments of the 6 connections with one behind a hop-by-hop header, that one aside
    left = sum(len(s) - 1 for k, s in enumerate(sources) if k % 5 == 0)
    path = tmp_path / f"{name}.pcap"
    path.write_bytes(pcap(_interleaved(rng, sources), int(link)))
    fast = read([str(path)], Options(fast=True, fast_min_frames=0, batch_frames=100_000))
    slow = read([str(path)], SLOW)
    assert_frame_equal(_comparable(fast), _comparable(slow))
    assert sorted(map(str, fast.issues)) == sorted(map(str, slow.issues))
    assert fast.counters["tcp_frames"] == slow.counters["slow_tcp_segments"] - 6
    assert sum(streamed) == fast.counters["tcp_frames"] - left


@pytest.mark.parametrize("batch", [60, 100_000])
@pytest.mark.parametrize(("name", "link", "framer"), [LINKS[0], LINKS[12]], ids=["ethernet", "null"])
def test_a_full_flow_table_beside_frames_that_hold_no_tcp(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    link: LinkType,
    framer: Framer,
    batch: int,
    streamed: list[int],
) -> None:
    """The flow table full (24 directions, 40 connections): frames for the per-packet decoder that
    hold no TCP segment (a cut UDP query, UDP fragments, MLD) make no flow, so the batch's
    connections stay compiled, and flows are pushed out exactly as the per-packet path pushes
    them."""
    original = TcpStreams.__init__

    def small(self: TcpStreams, max_flows: int, max_buffer: int, issue: IssueFn) -> None:
        original(self, 24, max_buffer, issue)

    monkeypatch.setattr(TcpStreams, "__init__", small)
    rng = random.Random(f"full-{name}-{batch}")
    records: list[tuple[int, bytes, int]] = []
    for g in range(5):  # groups of 8 connections one after the other: the ended flows pushed out
        sources = [_connection(rng, framer, k, rng.random() < 0.4) for k in range(8 * g, 8 * g + 8)]
        sources += [[_other(framer, "mdfc"[k % 4], k)] for k in range(3 * g, 3 * g + 3)]
        records += _interleaved(rng, sources, records[-1][0] if records else 10**18)
    path = tmp_path / f"{name}.pcap"
    path.write_bytes(pcap(records, int(link)))
    fast = read([str(path)], Options(fast=True, fast_min_frames=0, batch_frames=batch))
    slow = read([str(path)], SLOW)
    assert_frame_equal(_comparable(fast), _comparable(slow))
    assert sorted(map(str, fast.issues)) == sorted(map(str, slow.issues))
    assert fast.counters["slow_frames"] > fast.counters["slow_tcp_segments"]
    assert sum(streamed) == fast.counters["tcp_frames"] == slow.counters["slow_tcp_segments"]
