"""Hostile traffic, generated: captures that are well-formed but costly (retry storms, floods of
fragments, TCP streams and SYNs, names built to be slow, compression bombs, a malformed message or a
frame without DNS in every frame, damaged dnstap files), and the small seeds the mutator starts
from. ``scale`` multiplies the sizes (1 in the test suite, more by hand)."""

from __future__ import annotations

import random
import struct
import sys
from collections.abc import Callable
from pathlib import Path

_BUILDERS = str(Path(__file__).resolve().parents[1])  # tests/: the capture and message builders
if _BUILDERS not in sys.path:
    sys.path.append(_BUILDERS)

import dnsbuild as d  # noqa: E402
import dnstapbuild as tb  # noqa: E402
import pcapbuild as pb  # noqa: E402

T0 = 1_700_000_000 * 10**9
S = 10**9
CLIENT, SERVER = bytes([10, 9, 0, 1]), bytes([10, 9, 0, 53])


def _q(ident: int, qname: str, qtype: int = 1) -> bytes:
    return d.message([d.question(d.name(qname), qtype)], ident=ident, flags=0x0100)


def _r(ident: int, qname: str, rcode: int = 0, answers: int = 1) -> bytes:
    owner = d.name(qname)
    ans = [d.rr(d.ptr(12), 1, bytes([192, 0, 2, i % 256])) for i in range(answers)]
    return d.message([d.question(owner)], ans, ident=ident, flags=0x8180 | rcode)


def _udp(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    return pb.ether(pb.ipv4(pb.udp(payload, sport, dport), src=src, dst=dst))


def _tcp(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes, **kw: object) -> bytes:
    return pb.ether(pb.ipv4(pb.tcp(payload, sport, dport, **kw), 6, src=src, dst=dst))  # type: ignore[arg-type]


def conversation(rng: random.Random, n: int) -> bytes:
    """Ordinary traffic: questions and answers, some failing, some never answered, over UDP and TCP."""
    recs = []
    for i in range(n):
        t = T0 + i * rng.randrange(1, 200_000_000)
        name = f"h{rng.randrange(50)}.zone{rng.randrange(5)}.example"
        port = 20000 + i
        recs.append((t, _udp(CLIENT, SERVER, port, 53, _q(i, name, rng.choice([1, 28, 15, 16])))))
        if rng.random() < 0.85:
            rcode = rng.choice([0, 0, 0, 3, 2, 5])
            recs.append((t + rng.randrange(1, 9 * 10**7), _udp(SERVER, CLIENT, 53, port, _r(i, name, rcode))))
    return pb.pcap(recs)


def retry_storm(rng: random.Random, scale: int) -> bytes:
    """One client asking a dead name every few seconds, thousands of times (the retry_chain rule)."""
    n = rng.randint(500, 2000) * scale
    step = rng.choice([1, 5, 10]) * S
    recs = [
        (T0 + i * step, _udp(CLIENT, SERVER, 30000 + i % 30000, 53, _q(i % 65536, "dead.example")))
        for i in range(n)
    ]
    return pb.pcap(recs)


def fragment_flood(rng: random.Random, scale: int) -> bytes:
    """IPv4 and IPv6 fragments that never complete, overlap, or repeat one ID."""
    recs = []
    for i in range(rng.randint(2000, 6000) * scale):
        ident = i if rng.random() < 0.8 else 7
        payload = bytes(rng.randrange(8, 64))
        off = rng.choice([0, 8, 16, 1480, 65528])
        if rng.random() < 0.7:
            frame = pb.ether(pb.ipv4(payload, 17, ident=ident % 65536, mf=rng.random() < 0.9, frag_off=off))
        else:
            frag = pb.ext_frag(off, rng.random() < 0.9, ident)
            frame = pb.ether(pb.ipv6(payload, 17, ext=[(44, frag)]), 0x86DD)
        recs.append((T0 + i * 1000, frame))
    return pb.pcap(recs)


def tcp_flood(rng: random.Random, scale: int) -> bytes:
    """Thousands of TCP streams to port 53: length prefixes promising 65535 bytes that never come,
    segments out of order and overlapping, streams never closed."""
    recs = []
    for i in range(rng.randint(1000, 3000) * scale):
        port = 1024 + i % 60000
        src = bytes([10, 8, (i >> 8) % 256, i % 256])
        seq = rng.randrange(1 << 32)
        recs.append((T0 + i * 10_000, _tcp(src, SERVER, port, 53, b"", seq=seq, flags="S")))
        body = (
            struct.pack("!H", rng.choice([65535, 12, 40000]))
            + _q(i % 65536, "t.example")[: rng.randrange(2, 30)]
        )
        recs.append(
            (T0 + i * 10_000 + 1, _tcp(src, SERVER, port, 53, body, seq=seq + 1 + rng.choice([0, 0, 5, -3])))
        )
    return pb.pcap(recs)


def name_bombs(rng: random.Random, scale: int) -> bytes:
    """Answers with many records whose names are chains of compression pointers, counts of 65535."""
    recs = []
    for i in range(rng.randint(50, 200) * scale):
        base = _r(i, "a.b.c.d.e.f.example", answers=0)
        chain = b"".join(d.labels(b"x") + d.ptr(12 + 2 * j) for j in range(rng.randint(10, 120)))
        rrs = b"".join(d.rr(d.ptr(12 + 2 * (k % 30)), 5, d.ptr(12)) for k in range(rng.randint(10, 200)))
        msg = bytearray(base + chain + rrs)
        struct.pack_into("!HHHH", msg, 4, 1, 0xFFFF, rng.choice([0, 0xFFFF]), 0xFFFF)
        recs.append((T0 + i * S, _udp(SERVER, CLIENT, 53, 20000 + i, bytes(msg))))
    return pb.pcap(recs)


def zeros_bomb(rng: random.Random, scale: int) -> bytes:
    """A pcap header followed by megabytes of zeros (zero-length records), to be compressed."""
    return pb.pcap([]) + bytes(rng.randint(1, 4) * scale * 1024 * 1024)


def pcapng_interfaces(rng: random.Random, scale: int) -> bytes:
    """A pcapng with many interfaces of assorted resolutions and link types."""
    out = [pb.shb()]
    n = rng.randint(2, 40)
    for _ in range(n):
        out.append(pb.idb(rng.choice([1, 113, 276, 101]), tsresol=rng.choice([None, 6, 9, 0x80 | 20])))
    frame = pb.udp_frame()
    for i in range(200 * scale):
        out.append(pb.epb(rng.randrange(n + 2), (T0 // 1000) + i, frame))
    return b"".join(out)


def malformed_flood(rng: random.Random, scale: int) -> bytes:
    """Every frame a different malformed DNS message (a header, then bytes that are no question):
    each one goes through the per-message parser."""
    recs = []
    for i in range(rng.randint(2000, 6000) * scale):
        body = struct.pack("!HHHHHH", i % 65536, rng.choice([0x0100, 0x8180]), 1, rng.randrange(3), 0, 0)
        body += rng.randbytes(rng.randrange(1, 40))
        recs.append((T0 + i * 1000, _udp(CLIENT, SERVER, 20000 + i % 40000, 53, body)))
    return pb.pcap(recs)


def syn_flood(rng: random.Random, scale: int) -> bytes:
    """Every frame a TCP SYN to port 53 opening a new flow (more flows than the reassembly keeps)."""
    recs = []
    for i in range(rng.randint(3000, 9000) * scale):
        src = bytes([10, 7, (i >> 8) % 256, i % 256])
        recs.append((T0 + i * 1000, _tcp(src, SERVER, 1024 + i % 60000, 53, b"", seq=i, flags="S")))
    return pb.pcap(recs)


def no_dns_frames(rng: random.Random, scale: int) -> bytes:
    """Frames that carry no DNS by their first headers: empty, shorter than Ethernet, unknown
    EtherTypes, LLC, VLAN tags, broken IP headers, UDP to port 53 shorter than a DNS header."""
    recs = []
    for i in range(rng.randint(5000, 20000) * scale):
        kind = rng.randrange(7)
        if kind == 0:
            frame = b""
        elif kind == 1:
            frame = rng.randbytes(rng.randrange(1, 14))
        elif kind == 2:
            frame = bytes(12) + struct.pack("!H", rng.choice([0x1234, 0x0806, 0x88CC])) + rng.randbytes(20)
        elif kind == 3:
            frame = bytes(12) + struct.pack("!H", 38) + b"\x42\x42\x03" + rng.randbytes(35)
        elif kind == 4:
            frame = bytes(12) + b"\x81\x00\x00\x01" + rng.randbytes(rng.randrange(0, 30))
        elif kind == 5:
            frame = pb.ether(bytes([rng.choice([0x44, 0x55, 0x4F])]) + rng.randbytes(30))
        else:
            frame = _udp(CLIENT, SERVER, 40000, 53, rng.randbytes(rng.randrange(12)))
        recs.append((T0 + i * 1000, frame))
    return pb.pcap(recs)


def dnstap_damaged(rng: random.Random, scale: int) -> bytes:
    """A dnstap file (Frame Streams) of a resolver's messages, many of them damaged: bytes flipped,
    cut, replaced by random bytes or by an empty message, a frame length that lies."""
    q, r = _q(7, "www.example.com"), _r(7, "www.example.com")
    frames = []
    for i in range(rng.randint(50, 400) * scale):
        t = T0 + i * 10**6
        kind = "CLIENT_QUERY" if i % 2 == 0 else "CLIENT_RESPONSE"
        msg = (
            tb.Msg(kind, query_ns=t, query_message=q)
            if i % 2 == 0
            else tb.Msg(kind, query_ns=t - 10**6, response_ns=t, response_message=r)
        )
        payload = bytearray(tb.dnstap(msg))
        roll = rng.random()
        if roll < 0.15:
            for _ in range(rng.randint(1, 4)):
                payload[rng.randrange(len(payload))] ^= 1 << rng.randrange(8)
        elif roll < 0.25:
            payload = payload[: rng.randrange(len(payload))]
        elif roll < 0.3:
            payload = bytearray(rng.randbytes(rng.randrange(1, 40)))
        elif roll < 0.33:
            payload = bytearray()
        frame = tb.frame(bytes(payload))
        if rng.random() < 0.02:  # a length that lies
            frame = struct.pack("!I", rng.choice([0, 1, len(payload) + 9, 0xFFFFFFF0])) + frame[4:]
        frames.append(frame)
    return tb.control(2) + b"".join(frames) + (tb.control(3, None) if rng.random() < 0.8 else b"")


GENERATORS: dict[str, Callable[[random.Random, int], bytes]] = {
    "dnstap_damaged": dnstap_damaged,
    "malformed_flood": malformed_flood,
    "syn_flood": syn_flood,
    "no_dns_frames": no_dns_frames,
    "retry_storm": retry_storm,
    "fragment_flood": fragment_flood,
    "tcp_flood": tcp_flood,
    "name_bombs": name_bombs,
    "zeros_bomb": zeros_bomb,
    "pcapng_interfaces": pcapng_interfaces,
}


def seeds(rng: random.Random) -> list[bytes]:
    """Small well-formed captures of every shape the mutator knows: pcap in both byte orders and
    resolutions, pcapng, several link types, UDP and TCP, IPv4 and IPv6, fragments."""
    q, r = _q(1, "www.example.com"), _r(1, "www.example.com")
    v6 = pb.ipv6(pb.udp(q, 40000, 53))
    recs = [
        (T0, _udp(CLIENT, SERVER, 40000, 53, q)),
        (T0 + 10**6, _udp(SERVER, CLIENT, 53, 40000, r)),
        (T0 + 2 * 10**6, _tcp(CLIENT, SERVER, 40001, 53, struct.pack("!H", len(q)) + q)),
        (T0 + 3 * 10**6, _tcp(SERVER, CLIENT, 53, 40001, struct.pack("!H", len(r)) + r)),
        (T0 + 4 * 10**6, pb.ether(v6, 0x86DD)),
    ]
    frags = pb.v4_fragments(pb.udp(r, 53, 40000), src=SERVER, dst=CLIENT)
    recs += [(T0 + (5 + i) * 10**6, pb.ether(f)) for i, f in enumerate(frags)]
    out = [
        pb.pcap(recs),
        pb.pcap(recs, little=False, nano=True),
        pb.pcap([(t, pb.sll(f[14:])) for t, f in recs], linktype=113),
        pb.pcap([(t, pb.null(f[14:])) for t, f in recs], linktype=0),
        pb.pcap([(t, f[14:]) for t, f in recs], linktype=101),
        pb.shb()
        + pb.idb(1, tsresol=9)
        + pb.idb(276)
        + b"".join(
            pb.epb(i % 2, (T0 + i) if i % 2 == 0 else T0 // 1000, f if i % 2 == 0 else pb.sll2(f[14:]))
            for i, (_, f) in enumerate(recs)
        )
        + pb.spb(recs[0][1])
        + pb.isb(0, 3),
        pb.shb(little=False)
        + pb.idb(1, little=False)
        + b"".join(pb.epb(0, T0 // 1000 + i, f, little=False) for i, (_, f) in enumerate(recs)),
        conversation(rng, 60),
    ]
    return out
