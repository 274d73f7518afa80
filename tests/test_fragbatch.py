"""IP fragments reassembled a batch at a time by compiled code: exactly the per-packet results.

Seeded generators draw datagrams (IPv4 and IPv6, DNS over UDP and other protocols) cut into
fragments and sent every way a network allows: in order, reversed, shuffled, interleaved with
other datagrams, with a fragment sent twice, overlapping, missing, cut by the snaplen, behind
IPv6 extension headers or in a tunnel, the same identification reused, across batch boundaries,
with timestamps out of order and gaps longer than the reassembly timeout, and more datagrams
waiting than the reassembly holds.  The fast path must give the same messages, malformations,
decode issues and reassembly counts as the per-packet path, and take the datagrams it can prove.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from pcapbuild import dns, ether, ext_frag, ext_opts, ipv4, ipv6, pcap, sll, sll2, udp
from polars.testing import assert_frame_equal

from pcapdns.decode import fragbatch
from pcapdns.dissect import Dissector
from pcapdns.model import LinkType
from pcapdns.sources import open_capture
from pcapdns.tables.names import address_text

SERVER4, SERVER6 = bytes([10, 53, 0, 1]), bytes.fromhex("20010db8005300000000000000000001")
T0 = 1_700_000_000 * 10**9
TIMEOUT = 30 * 10**9  # the per-packet reassembly's default


def client(k: int, v6: bool) -> bytes:
    if v6:
        return bytes.fromhex("20010db8") + bytes(11) + bytes([k % 7 + 1])
    return bytes([10, 0, 0, k % 7 + 1])  # few clients: keys meet again


def answer(rng: random.Random, k: int) -> bytes:
    """A DNS response with a large answer (an RRSIG-sized blob in an unknown record type)."""
    name = b"\x03www" + bytes([5]) + f"z{k % 1000:04d}".encode() + b"\x04test\x00"
    head = struct.pack("!HHHHHH", k & 0xFFFF, 0x8180, 1, 1, 0, 0) + name + struct.pack("!HH", 1, 1)
    blob = rng.randbytes(rng.randint(0, 1600))
    return head + b"\xc0\x0c" + struct.pack("!HHIH", 65280, 1, 300, len(blob)) + blob


def cut(l4: bytes, size: int) -> list[tuple[int, bytes]]:
    """``l4`` as (offset, data) pieces of ``size`` bytes (a multiple of 8)."""
    return [(off, l4[off : off + size]) for off in range(0, len(l4), size)]


@dataclass
class Piece:
    """One fragment to send: its data at ``offset``, and how it goes."""

    offset: int
    data: bytes
    more: bool
    wire_extra: int = 0  # bytes the snaplen cut off the frame
    hop_by_hop: bool = False  # IPv6: an extension header before the fragment header


def fragment_packet(v6: bool, src: bytes, dst: bytes, proto: int, ident: int, p: Piece) -> bytes:
    if v6:
        ext = [(0, ext_opts())] if p.hop_by_hop else []
        return ipv6(p.data, proto, src, dst, ext=[*ext, (44, ext_frag(p.offset, p.more, ident))])
    return ipv4(p.data, proto, src, dst, ident=ident & 0xFFFF, mf=p.more, frag_off=p.offset)


class Traffic:
    """Sources of frames, interleaved at random when written (each keeps its own order)."""

    def __init__(self, rng: random.Random, link: int = int(LinkType.EN10MB)) -> None:
        self.rng = rng
        self.link = link
        self.sources: list[list[tuple[bytes, int]]] = []  # (IP packet, bytes cut off)

    def frame(self, packet: bytes, v6: bool) -> bytes:
        if self.link == LinkType.EN10MB:
            vlans = [(0x8100, 7)] if self.rng.random() < 0.2 else []
            return ether(packet, 0x86DD if v6 else 0x0800, vlans)
        if self.link == LinkType.LINUX_SLL:
            return sll(packet, 0x86DD if v6 else 0x0800)
        if self.link == LinkType.LINUX_SLL2:
            return sll2(packet, 0x86DD if v6 else 0x0800)
        if self.link in (LinkType.NULL, LinkType.LOOP):
            family = 30 if v6 else 2
            little = self.link == LinkType.NULL and self.rng.random() < 0.5
            return struct.pack("<I" if little else ">I", family) + packet
        return packet  # raw IP

    def datagram(self, k: int, *, clean: bool = False, tunnels: bool = False) -> None:
        """One datagram in fragments; ``clean``: one the compiled path can prove; ``tunnels``:
        now and then a fragment in an IP-in-IP tunnel (which compiled code does not read)."""
        rng = self.rng
        v6 = rng.random() < 0.4
        c, s = client(k, v6), SERVER6 if v6 else SERVER4
        ident = rng.randrange(4) if rng.random() < 0.3 else rng.getrandbits(32 if v6 else 16)
        if clean:
            ident = 1000 + k  # no two datagrams of one key at once
        proto, l4 = 17, udp(answer(rng, k), 53, 40000 + k % 5)
        src, dst = s, c
        x = 1.0 if clean else rng.random()
        if x < 0.04:
            proto, l4 = 17, udp(rng.randbytes(rng.randint(20, 900)), 40000, 9999)  # not DNS
        elif x < 0.07:
            proto, l4 = (58 if v6 else 1), bytes([8, 0, 0, 0]) + rng.randbytes(rng.randint(20, 900))
        elif x < 0.09:
            proto, l4 = (
                6,
                struct.pack("!HHIIBBHHH", 53, 40000, 1, 0, 0x50, 0x18, 65535, 0, 0) + rng.randbytes(300),
            )
        elif x < 0.11:
            body = answer(rng, k)
            proto, l4 = 17, udp(body, 53, 40000, length=len(body) + 4000)  # a UDP length too long
        elif x < 0.13:
            proto, l4 = 17, udp(b"\x12\x34\x81", 53, 40000)  # too short for DNS: one fragment of 16 bytes
        elif x < 0.15:
            proto, l4 = 17, udp(rng.randbytes(200), 40000, 4789)  # a VXLAN datagram
        elif x < 0.17:
            src, dst = c, s  # a large query
            proto, l4 = 17, udp(dns(k & 0xFFFF, 0) + rng.randbytes(600), 40000 + k % 5, 53)
        if clean:  # in two fragments at least
            size = min(rng.choice([64, 512, 1448]), (len(l4) - 1) // 8 * 8)
        else:
            size = rng.choice([8, 16, 64, 256, 512, 1232, 1448])
        pieces = [Piece(off, data, off + len(data) < len(l4)) for off, data in cut(l4, size)]
        y = 1.0 if clean else rng.random()
        if y < 0.04 and len(pieces) > 1:
            pieces.append(rng.choice(pieces))  # a fragment sent twice
        elif y < 0.08 and len(pieces) > 1:
            p = rng.choice(pieces[1:])  # overlapping: from 8 bytes before
            pieces.append(Piece(p.offset - 8, l4[p.offset - 8 : p.offset + len(p.data)], p.more))
        elif y < 0.11:
            del pieces[-1]  # the last one never came
        elif y < 0.13 and len(pieces) > 1:
            del pieces[0]
        elif y < 0.15:
            last = pieces[-1]  # a second last fragment, ending elsewhere
            pieces.append(Piece(last.offset, last.data + bytes(8), False))
        elif y < 0.17:
            rng.choice(pieces).wire_extra = rng.randint(1, 40)  # cut by the snaplen
        elif y < 0.19 and v6:
            rng.choice(pieces).hop_by_hop = True
        elif y < 0.20:
            pieces.append(Piece(len(l4), b"", False))  # an empty fragment at the end
        z = rng.random()
        if z < 0.15:
            pieces.reverse()
        elif z < 0.3:
            rng.shuffle(pieces)
        out = []
        for p in pieces:
            packet = fragment_packet(v6, src, dst, proto, ident, p)
            if tunnels and rng.random() < 0.02:  # in an IP-in-IP tunnel: not read by compiled code
                packet = ipv4(packet, 41 if v6 else 4, bytes([172, 16, 0, 1]), bytes([172, 16, 0, 2]))
                v6_outer = False
            else:
                v6_outer = v6
            frame = self.frame(packet, v6_outer)
            out.append((frame[: len(frame) - p.wire_extra] if p.wire_extra else frame, p.wire_extra))
        self.sources.append(out)

    def plain(self, k: int, *, snaplen_cut: bool = False) -> None:
        """A query and its answer, unfragmented (the answer cut by the snaplen, now and then)."""
        v6 = self.rng.random() < 0.3
        c, s = client(k, v6), SERVER6 if v6 else SERVER4
        ip = ipv6 if v6 else ipv4
        query = self.frame(ip(udp(dns(k & 0xFFFF, 0), 40000 + k % 5, 53), 17, c, s), v6)
        reply = self.frame(ip(udp(dns(k & 0xFFFF, 1) + bytes(100), 53, 40000 + k % 5), 17, s, c), v6)
        extra = 60 if snaplen_cut else 0
        self.sources.append([(query, 0), (reply[: len(reply) - extra], extra)])

    def write(self, path: Path, *, jitter: float = 0.0, gaps: float = 0.0) -> None:
        """Interleave the sources at random, a few at a time; ``jitter``: share of frames
        stamped up to 2 ms early, ``gaps``: share after a pause longer than the reassembly timeout."""
        rng = self.rng
        queues = [list(f) for f in self.sources if f]
        records = []
        t = T0
        while queues:
            q = rng.choice(queues[:8])
            frame, extra = q.pop(0)
            t += rng.randint(1, 3000) * 1000
            if rng.random() < gaps:
                t += TIMEOUT + rng.randint(0, 5) * 10**9
            stamp = t - rng.randint(1, 2000) * 1000 if rng.random() < jitter else t
            records.append((stamp, frame, len(frame) + extra))
            if not q:
                queues.remove(q)
        path.write_bytes(pcap(records, self.link, nano=True))


@dataclass
class Result:
    messages: pl.DataFrame
    malformed: pl.DataFrame
    issue_counts: dict[str, int]
    issue_stats: dict[tuple[int, str], list[int]]
    examples: list[tuple[object, ...]]
    fragments: int  # fragment frames the per-packet decoder counted (compiled ones included)
    reassembled: int
    taken: int  # fragment frames compiled reassembly took


def dissect(path: Path, *, fast: bool, batch: int, max_pending: int | None = None) -> Result:
    d = Dissector(fast=fast, fast_min_frames=0)
    if max_pending is not None:
        d.decoder._defrag.max_pending = max_pending
    frames = []
    with open_capture(str(path), 0) as capture:
        for b in capture.batches(batch):
            frames.append(d.dissect(b))
    frames.append(d.finish())
    m = pl.concat(frames)
    text = pl.Series([address_text(hi, lo) for hi, lo in d.addresses.halves], dtype=pl.String)
    m = m.with_columns(text.gather(m["src"]).alias("src"), text.gather(m["dst"]).alias("dst"))
    issues = d.take_issues()
    return Result(
        messages=m.with_columns(pl.col("qname").cast(pl.String)),
        malformed=d.malformed(),
        issue_counts=issues.counts(),
        issue_stats=issues.stats,
        examples=sorted((i.frame, str(i.reason), i.ts_ns, i.detail) for i in issues.examples),
        fragments=d.decoder.counters["ip_fragments"],
        reassembled=d.decoder.counters["reassembled"],
        taken=d.counters["fragment_frames"],
    )


def agree(path: Path, batch: int, max_pending: int | None = None) -> Result:
    """The fast path's result, checked against the per-packet path's."""
    fast = dissect(path, fast=True, batch=batch, max_pending=max_pending)
    slow = dissect(path, fast=False, batch=batch, max_pending=max_pending)
    assert_frame_equal(fast.messages, slow.messages)
    assert_frame_equal(fast.malformed, slow.malformed)
    assert fast.issue_counts == slow.issue_counts
    assert fast.issue_stats == slow.issue_stats
    assert fast.examples == slow.examples
    assert (fast.fragments, fast.reassembled) == (slow.fragments, slow.reassembled)
    assert slow.taken == 0
    return fast


@pytest.mark.parametrize("seed", range(3))
def test_datagrams_it_can_prove_are_all_taken(tmp_path: Path, seed: int) -> None:
    """In order, reversed, shuffled, interleaved with each other and with unfragmented traffic:
    every fragment is taken, and the messages are the per-packet path's."""
    rng = random.Random(seed)
    traffic = Traffic(rng)
    for k in range(200):
        traffic.datagram(k, clean=True)
        traffic.plain(k)
    path = tmp_path / "clean.pcap"
    traffic.write(path)
    fast = agree(path, 100_000)
    assert fast.taken == fast.fragments > 400
    assert fast.reassembled == 200 and fast.messages.height == 600
    assert fast.issue_counts == {}


@pytest.mark.parametrize(
    "link",
    [LinkType.EN10MB, LinkType.LINUX_SLL, LinkType.LINUX_SLL2, LinkType.RAW, LinkType.NULL, LinkType.LOOP],
)
def test_every_link_layer_it_reads(tmp_path: Path, link: LinkType) -> None:
    rng = random.Random(int(link))
    traffic = Traffic(rng, int(link))
    for k in range(60):
        traffic.datagram(k, clean=True)
    path = tmp_path / "link.pcap"
    traffic.write(path)
    fast = agree(path, 100_000)
    assert fast.taken == fast.fragments and fast.reassembled == 60


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("batch", [7, 64, 100_000])
def test_every_way_fragments_go_agrees_with_the_per_packet_path(
    tmp_path: Path, seed: int, batch: int
) -> None:
    """Duplicates, overlaps, missing and extra last fragments, snaplen cuts, extension headers,
    tunnels, reused identifications, protocols other than DNS over UDP, batches that end in the
    middle of a datagram: what compiled code cannot prove goes to the per-packet path."""
    rng = random.Random(100 + seed)
    traffic = Traffic(rng)
    tunnels = seed % 3 == 2  # after a frame it does not read, compiled code takes no datagram
    for k in range(300):
        traffic.datagram(k, tunnels=tunnels)
        if rng.random() < 0.5:
            traffic.plain(k, snaplen_cut=rng.random() < 0.1)
    path = tmp_path / "every.pcap"
    traffic.write(path)
    fast = agree(path, batch)
    if not tunnels:  # (most fragments are those of datagrams cut in 8 or 16 bytes, most broken)
        assert fast.taken > 0
    assert fast.taken < fast.fragments  # some could not be proved
    assert fast.issue_counts.get("fragment_overlap", 0) > 0
    assert fast.issue_counts.get("fragment_incomplete", 0) > 0


@pytest.mark.parametrize("seed", range(4))
def test_timestamps_out_of_order_and_timeouts(tmp_path: Path, seed: int) -> None:
    """Frames stamped earlier than the one before, and pauses longer than the timeout between
    fragments of one datagram (it is given up) or between datagrams."""
    rng = random.Random(200 + seed)
    traffic = Traffic(rng)
    for k in range(250):
        traffic.datagram(k, clean=rng.random() < 0.5)
        traffic.plain(k)
    path = tmp_path / "time.pcap"
    traffic.write(path, jitter=0.1, gaps=0.01)
    for batch in (50, 100_000):
        fast = agree(path, batch)
        assert 0 < fast.taken < fast.fragments
        assert "fragment_incomplete" in fast.issue_counts


@pytest.mark.parametrize("seed", range(3))
def test_more_datagrams_waiting_than_room(tmp_path: Path, seed: int) -> None:
    """A reassembly that holds 4 datagrams, given many at once: those dropped for room are the
    per-packet path's."""
    rng = random.Random(300 + seed)
    traffic = Traffic(rng)
    for k in range(120):
        traffic.datagram(k, clean=rng.random() < 0.7)
    path = tmp_path / "room.pcap"
    traffic.write(path)
    for batch in (30, 100_000):
        fast = agree(path, batch, max_pending=4)
        assert "fragment_limit" in fast.issue_counts
    relaxed = agree(path, 40, max_pending=64)
    assert relaxed.taken > 0


def test_a_datagram_begun_in_an_earlier_batch_is_left_to_the_per_packet_path(tmp_path: Path) -> None:
    """Its first fragment waits in the per-packet reassembly: the rest of it, and a datagram of the
    same key in the next batch, go there too."""
    l4 = udp(answer(random.Random(1), 1), 53, 40000)
    pieces = [Piece(off, data, off + len(data) < len(l4)) for off, data in cut(l4, 64)]
    packets = [fragment_packet(False, SERVER4, client(1, False), 17, 77, p) for p in pieces]
    frames = [ether(p) for p in packets]
    records = [(T0 + i * 1000, f) for i, f in enumerate([frames[0], *frames[1:], *frames])]
    path = tmp_path / "across.pcap"
    path.write_bytes(pcap(records))
    fast = agree(path, 1)
    assert fast.reassembled == 2 and fast.messages.height == 2 and fast.taken == 0
    assert agree(path, len(frames)).taken == 2 * len(frames)  # each datagram in its own batch
    # the first fragment of the second datagram in the first batch: its key is in no state to prove
    assert agree(path, len(frames) + 1).taken == 0


def test_scan_sorts_frames_by_what_they_may_hold() -> None:
    l4 = udp(answer(random.Random(2), 2), 53, 40000)
    plain = ether(ipv4(l4[:64], 17, SERVER4, bytes([10, 0, 0, 1]), ident=9, mf=True))
    hop = ether(
        ipv6(l4[:64], 17, SERVER6, SERVER6, ext=[(0, ext_opts()), (44, ext_frag(0, True, 5))]), 0x86DD
    )
    inert = ether(ipv4(udp(dns(), 40000, 53)))
    tunnel = ether(ipv4(ipv4(l4[:64], 17, mf=True), 4))
    frames = [plain, plain[:-10], hop, inert, tunnel]
    wire = [len(plain), len(plain), len(hop), len(inert) + 50, len(tunnel)]
    off = np.cumsum([0, *map(len, frames[:-1])]).astype(np.int64)
    port_kind = np.zeros(65536, dtype=np.uint8)
    port_kind[53] = 1
    port_kind[4789] = 2
    kind, addr, frag = fragbatch.scan(
        np.frombuffer(b"".join(frames), dtype=np.uint8),
        off,
        np.array(list(map(len, frames)), dtype=np.int64),
        np.array(wire, dtype=np.int64),
        np.ones(5, dtype=np.int64),
        port_kind,
    )
    assert kind.tolist() == [
        fragbatch.PLAIN,
        fragbatch.KEYED,
        fragbatch.KEYED,
        fragbatch.INERT,
        fragbatch.UNREAD,
    ]
    assert frag[0, [fragbatch.VERSION, fragbatch.PROTO, fragbatch.IDENT, fragbatch.MORE]].tolist() == [
        4,
        17,
        9,
        1,
    ]
    assert frag[0, fragbatch.START] == 14 + 20 and frag[0, fragbatch.LENGTH] == 64
    assert frag[2, [fragbatch.VERSION, fragbatch.IDENT]].tolist() == [6, 5]
    assert int(addr[0, 1]) == 0xFFFF_0A35_0001 and int(addr[2, 0]) == 0x20010DB800530000
