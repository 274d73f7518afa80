#!/usr/bin/env python3
"""Write a large, deterministic capture of realistic resolver traffic (for speed measurements).

    python benchmarks/make_capture.py --packets 2000000 -o benchmarks/data/resolver-2m.pcap

or, from Python (tests build small ones)::

    from make_capture import make_capture
    stats = make_capture("small.pcap", packets=20_000)

What it holds: Ethernet, pcap with microsecond timestamps; ~500 clients (about 10 % of them on
IPv6) asking 4 recursive resolvers over UDP port 53 at ~25,000 queries/s; ~5,000 distinct names
in ~120 zones with Zipf-like popularity; EDNS on ~85 % of queries (some with DO); answers with 1-5
records, CNAME chains written with compression pointers, NODATA with the zone's SOA; ~3 %
NXDOMAIN, ~0.5 % SERVFAIL, ~1 % unanswered (half of those retransmitted once), and a DNS-over-TCP
exchange (handshake, query, answer, teardown) every ~20,000 queries.  Exactly ``packets`` records
are written; the transactions in flight when that count is reached are simply cut off, as at the
end of a real capture.

Speed: DNS payloads are built once per (name, type, outcome, EDNS variant) and cached; each packet
is then one ``struct`` call for the IP/UDP headers plus the DNS ID, with the IPv4 header checksum
and the IPv6 UDP checksum updated from precomputed partial sums (IPv4 UDP checksums are 0, "not
computed", which RFC 768 allows).  The same seed writes the same bytes.
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import random
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

T0_US = 1709510400 * 1_000_000  # 2024-03-04T00:00:00Z
QUERY_GAP_US = 40  # mean time between queries: ~25,000 queries/s

A, NS, CNAME, SOA, MX, TXT, AAAA, OPT, HTTPS = 1, 2, 5, 6, 15, 16, 28, 41, 65
QTYPE_WEIGHTS = ((A, 55), (AAAA, 30), (HTTPS, 9), (TXT, 3), (MX, 3))
NOERROR, SERVFAIL, NXDOMAIN = 0, 2, 3
QR_RD_RA = 0x8180

REC = struct.Struct("<IIII")
V4 = struct.Struct("!BBHHHBBH4s4sHHHHH")  # IPv4 header, UDP header, DNS ID
V6 = struct.Struct("!IHBB16s16sHHHHH")  # IPv6 header, UDP header, DNS ID
ETH_V4, ETH_V6 = b"\x08\x00", b"\x86\xdd"
RRSIG = 46


@dataclass(frozen=True)
class Mix:
    """What a capture holds besides plain UDP resolver traffic (see :data:`MIXES`)."""

    tcp_every: int = 0  # one DNS-over-TCP exchange every this many transactions (0: none)
    tcp_share: float = 0.0  # or: this share of the transactions over TCP (varied segmentation)
    truncation: bool = False  # each TCP exchange follows a UDP answer with TC set (a truncation storm)
    malformed: float = 0.0  # share of the messages damaged (trailing bytes, a missing record, a pointer loop)
    attack: float = 0.0  # share of the queries for never-repeating names under one zone (SERVFAIL/NXDOMAIN)
    fragmented: float = 0.0  # share of the answers made large (DNSSEC signatures) and IP-fragmented


#: The benchmark matrix's captures (``--mix``): ``resolver`` is the historical default.
MIXES: dict[str, Mix] = {
    "resolver": Mix(tcp_every=20_000),
    "udp": Mix(),
    "mixed": Mix(tcp_share=0.0069, malformed=0.002),
    "tcp": Mix(tcp_share=0.072, truncation=True),
    "attack": Mix(attack=0.5),
    "fragments": Mix(fragmented=0.01),
}


# -- DNS messages (built once per template) ----------------------------------------------------------


class _Msg:
    """A DNS message with RFC 1035 name compression (suffixes already written become pointers)."""

    def __init__(self, flags: int) -> None:
        self.flags = flags
        self.buf = bytearray()
        self.counts = [0, 0, 0, 0]
        self.seen: dict[str, int] = {}

    def name(self, name: str) -> None:
        labels = name.split(".")
        for i in range(len(labels)):
            suffix = ".".join(labels[i:])
            if suffix in self.seen:
                self.buf += struct.pack("!H", 0xC000 | self.seen[suffix])
                return
            if 12 + len(self.buf) < 0x3FFF:
                self.seen[suffix] = 12 + len(self.buf)
            raw = labels[i].encode()
            self.buf += bytes([len(raw)]) + raw
        self.buf.append(0)

    def question(self, name: str, qtype: int) -> _Msg:
        self.name(name)
        self.buf += struct.pack("!HH", qtype, 1)
        self.counts[0] += 1
        return self

    def rr(self, section: int, owner: str, rtype: int, ttl: int, *rdata: bytes | str) -> _Msg:
        self.name(owner)
        self.buf += struct.pack("!HHIH", rtype, 1, ttl, 0)
        start = len(self.buf)
        for part in rdata:
            if isinstance(part, str):
                self.name(part)
            else:
                self.buf += part
        struct.pack_into("!H", self.buf, start - 2, len(self.buf) - start)
        self.counts[section] += 1
        return self

    def opt(self, udp: int, do: bool) -> _Msg:
        self.buf += b"\x00" + struct.pack("!HHIH", OPT, udp, 0x8000 if do else 0, 0)
        self.counts[3] += 1
        return self

    def tail(self) -> bytes:
        """The message without its 2-octet ID (the ID is written per packet)."""
        return struct.pack("!5H", self.flags, *self.counts) + bytes(self.buf)


def _sum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    return sum(struct.unpack(f"!{len(data) // 2}H", data))


def _fold(s: int) -> int:
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


class _Names:
    """~5,000 names in ~120 zones, each with fixed records (addresses, CNAME chain, IPv6 or not)."""

    LABELS = ("www", "api", "mail", "img", "static", "cdn", "login", "m", "app", "shop", "news", "video",
              "auth", "assets", "edge", "smtp", "vpn", "docs", "status", "search", "pay", "ads", "track",
              "media", "files", "git", "wiki", "portal", "support", "blog")  # fmt: skip

    def __init__(self, rng: random.Random, count: int = 5000) -> None:
        tlds = ("example", "example.com", "example.net", "example.org", "test")
        words = ["acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne", "wonka", "tyrell",
                 "cyberdyne", "soylent", "aperture"]  # fmt: skip
        self.zones = [f"{w}{i}.{tlds[i % len(tlds)]}" for i, w in enumerate(words * 10)]
        self.names: list[str] = []
        self.zone_of: list[str] = []
        self.profile: list[tuple[int, int, int]] = []  # (A count, AAAA count, CNAME chain length)
        seen: set[str] = set()
        while len(self.names) < count:
            zone = rng.choice(self.zones)
            label = rng.choice(self.LABELS)
            if rng.random() < 0.5:
                label = f"{label}{rng.randint(1, 60)}"
            name = f"{label}.{zone}"
            if name in seen:
                continue
            seen.add(name)
            self.names.append(name)
            self.zone_of.append(zone)
            chain = 0 if rng.random() < 0.8 else rng.choice((1, 1, 2))
            self.profile.append((rng.choice((1, 1, 1, 2, 2, 3, 4)), rng.choice((0, 0, 1, 2)), chain))
        # Zipf-like popularity: the name of rank r is asked with weight 1 / (r + 10).
        weights = [1.0 / (r + 10) for r in range(count)]
        total = 0.0
        self.cum: list[float] = []
        for w in weights:
            total += w
            self.cum.append(total)
        nx_labels = ("wpad", "isatap", "localhost", "old", "test", "printer")
        self.nx = [f"{rng.choice(nx_labels)}{i}.{rng.choice(self.zones)}" for i in range(150)]

    def answers(self, i: int, qtype: int) -> tuple[list[tuple[Any, ...]], bool]:
        """(answer records, nodata) for name ``i``: A/AAAA follow the name's CNAME chain."""
        name, zone = self.names[i], self.zone_of[i]
        n_a, n_aaaa, chain = self.profile[i]
        h = i * 2654435761 & 0xFFFFFFFF
        if qtype == TXT:
            text = f"v=spf1 include:_spf.{zone} ~all".encode()
            return [(name, TXT, 300, bytes([len(text)]) + text)], False
        if qtype == MX:
            return [
                (name, MX, 300, struct.pack("!H", 10 * (k + 1)), f"mx{k + 1}.{zone}") for k in range(2)
            ], False
        if qtype not in (A, AAAA):
            return [], True
        out: list[tuple[Any, ...]] = []
        owner = name
        for k in range(chain):
            target = f"{'edge' if k == chain - 1 else 'lb'}{(i * 7 + k) % 97}.cdn.{zone}"
            out.append((owner, CNAME, 300, target))
            owner = target
        if qtype == A:
            out += [(owner, A, 60, struct.pack("!I", (h + k * 977) & 0xFFFFFFFF)) for k in range(n_a)]
        else:
            out += [(owner, AAAA, 60, b"\x20\x01\x0d\xb8" + struct.pack("!IQ", h, k)) for k in range(n_aaaa)]
        return out, not (n_a if qtype == A else n_aaaa)


def _soa(zone: str) -> tuple[Any, ...]:
    return (
        zone,
        SOA,
        300,
        f"ns1.{zone}",
        f"hostmaster.{zone}",
        struct.pack("!5I", 2024030401, 7200, 3600, 1209600, 300),
    )


# -- the capture --------------------------------------------------------------------------------------


class _Writer:
    def __init__(self, path: Path, linktype: int = 1) -> None:
        self.f = path.open("wb")
        self.f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype))
        self.parts: list[bytes] = []
        self.count = 0
        self.size = 24

    def emit(self, ts_us: int, frame: bytes) -> None:
        sec, usec = divmod(ts_us, 1_000_000)
        n = len(frame)
        self.parts.append(REC.pack(sec, usec, n, n))
        self.parts.append(frame)
        self.count += 1
        self.size += 16 + n
        if len(self.parts) >= 200_000:
            self.flush()

    def flush(self) -> None:
        self.f.write(b"".join(self.parts))
        self.parts.clear()

    def close(self) -> None:
        self.flush()
        self.f.close()


def make_capture(
    path: str | Path, packets: int = 2_000_000, seed: int = 7, mix: str | Mix = "resolver"
) -> dict[str, Any]:
    """Write ``packets`` records of resolver traffic to ``path``; return what was written.

    ``mix`` names one of :data:`MIXES` (or is a :class:`Mix`): how much TCP, malformed messages,
    attack queries and IP fragments the traffic holds besides plain UDP.
    """
    m = MIXES[mix] if isinstance(mix, str) else mix
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    names = _Names(rng)
    n_names = len(names.names)

    servers4 = [bytes([10, 53, 0, k + 1]) for k in range(4)]
    servers6 = [bytes.fromhex("20010db8005300000000000000000000")[:15] + bytes([k + 1]) for k in range(4)]
    clients: list[tuple[bytes, bool]] = []
    for k in range(500):
        if k % 10 == 9:  # every tenth client is on IPv6
            clients.append((bytes.fromhex("20010db8c1000000") + struct.pack("!Q", 0x1000 + k), True))
        else:
            clients.append((bytes([10, 20 + k // 250, (k % 250) // 50, 10 + k % 50]), False))
    server_mac = [bytes([0x02, 0, 0, 0, 0x53, k + 1]) for k in range(4)]
    router_mac = bytes.fromhex("020000000001")
    # Ethernet headers: towards server k (from the router) and from server k (to the router).
    eth_q = {
        (k, v6): server_mac[k] + router_mac + (ETH_V6 if v6 else ETH_V4) for k in range(4) for v6 in (0, 1)
    }
    eth_r = {
        (k, v6): router_mac + server_mac[k] + (ETH_V6 if v6 else ETH_V4) for k in range(4) for v6 in (0, 1)
    }

    def addr_sum(a: bytes) -> int:
        return _sum16(a)

    c_sum = [addr_sum(a) for a, _ in clients]
    s4_sum = [addr_sum(a) for a in servers4]
    s6_sum = [addr_sum(a) for a in servers6]
    # Constant words of the IPv4 header (version/IHL/TOS, DF, TTL/protocol): queries arrive with TTL 63
    # (one router away), answers leave the resolvers with TTL 64.
    v4_to_server = 0x4500 + 0x4000 + ((63 << 8) | 17)
    v4_from_server = 0x4500 + 0x4000 + ((64 << 8) | 17)

    # Templates: (name index or -1 for NX, qtype, outcome, EDNS variant) -> query/response tails + sums.
    templates: dict[tuple[int, int, int, int], tuple[bytes, int, bytes, int]] = {}

    def template(key: tuple[int, int, int, int]) -> tuple[bytes, int, bytes, int]:
        idx, qtype, outcome, edns = key
        if idx < 0:
            name, zone = names.nx[-idx - 1], names.nx[-idx - 1].split(".", 1)[1]
        else:
            name, zone = names.names[idx], names.zone_of[idx]
        q = _Msg(0x0100).question(name, qtype)
        if edns:
            q.opt(1232 if edns == 1 else 4096, do=edns == 2)
        r = _Msg(QR_RD_RA | outcome).question(name, qtype)
        if outcome == NOERROR:
            answers, nodata = names.answers(idx, qtype)
            for rec in answers:
                r.rr(1, *rec)
            if nodata:
                r.rr(2, *_soa(zone))
        elif outcome == NXDOMAIN:
            r.rr(2, *_soa(zone))
        if edns:
            r.opt(1232, do=edns == 2)
        qt, rt = q.tail(), r.tail()
        t = (qt, _sum16(qt), rt, _sum16(rt))
        templates[key] = t
        return t

    qtypes = [t for t, w in QTYPE_WEIGHTS for _ in range(w)]
    out = _Writer(path)
    heap: list[tuple[int, int, bytes]] = []
    seq = 0
    t = T0_US + 1234
    stats = {"transactions": 0, "udp_v6": 0, "nxdomain": 0, "servfail": 0, "unanswered": 0,
             "retransmitted": 0, "tcp_exchanges": 0}  # fmt: skip
    random_ = rng.random
    getrandbits = rng.getrandbits
    expovariate = rng.expovariate
    bisect_names = bisect.bisect
    cum, total = names.cum, names.cum[-1]
    pack4, pack6 = V4.pack, V6.pack
    heappush, heappop = heapq.heappush, heapq.heappop
    emit = out.emit
    ip_id = getrandbits(16)

    def frame(
        v6: bool, k: int, c: int, cport: int, dns_id: int, tail: bytes, tsum: int, to_server: bool, ident: int
    ) -> bytes:
        caddr = clients[c][0]
        dlen = 2 + len(tail)  # the ID and the rest of the message
        ulen = 8 + dlen
        if v6:
            saddr = servers6[k]
            if to_server:
                src, dst, sp, dp, eth = caddr, saddr, cport, 53, eth_q[(k, 1)]
            else:
                src, dst, sp, dp, eth = saddr, caddr, 53, cport, eth_r[(k, 1)]
            s = c_sum[c] + s6_sum[k] + 2 * ulen + 17 + sp + dp + dns_id + tsum
            ck = _fold(s) or 0xFFFF
            return eth + pack6(0x60000000, ulen, 17, 64, src, dst, sp, dp, ulen, ck, dns_id) + tail
        saddr = servers4[k]
        tl = 20 + ulen
        if to_server:
            ck = _fold(v4_to_server + c_sum[c] + s4_sum[k] + tl + ident)
            return (
                eth_q[(k, 0)]
                + pack4(0x45, 0, tl, ident, 0x4000, 63, 17, ck, caddr, saddr, cport, 53, ulen, 0, dns_id)
                + tail
            )
        ck = _fold(v4_from_server + c_sum[c] + s4_sum[k] + tl + ident)
        return (
            eth_r[(k, 0)]
            + pack4(0x45, 0, tl, ident, 0x4000, 64, 17, ck, saddr, caddr, 53, cport, ulen, 0, dns_id)
            + tail
        )

    victim = "victim-bank.example"  # the attacked zone (random-subdomain queries)

    def damaged(tail: bytes) -> bytes:
        """The message ``tail`` (without its ID) made malformed in one of three ways."""
        kind = int(random_() * 3)
        if kind == 0:  # bytes after the last record
            return tail + b"\x00\x07\xff"
        if kind == 1:  # one more answer announced than present
            an = struct.unpack_from("!H", tail, 4)[0]
            return tail[:4] + struct.pack("!H", an + 1) + tail[6:]
        # the question name is a compression pointer to itself (a loop)
        return struct.pack("!5H", struct.unpack_from("!H", tail)[0], 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01"

    def attack_pair(outcome: int) -> tuple[bytes, int, bytes, int]:
        label = f"{getrandbits(48):012x}"
        name = f"{label}.{victim}"
        q = _Msg(0x0100).question(name, A).opt(1232, do=False)
        r = _Msg(QR_RD_RA | outcome).question(name, A)
        if outcome == NXDOMAIN:
            r.rr(2, *_soa(victim))
        r.opt(1232, do=False)
        qt, rt = q.tail(), r.tail()
        return qt, _sum16(qt), rt, _sum16(rt)

    def signed(tail: bytes, qtype: int) -> bytes:
        """``tail`` with a large RRSIG (a DNSSEC answer over 1,500 bytes), appended as the last
        additional record: inserted anywhere before, it would move the names that the message's
        compression pointers point to."""
        sig = struct.pack("!HBBIIIH", qtype, 13, 2, 300, 1712000000, 1709400000, 4242)
        sig += b"\x07example\x00" + bytes((i * 37) & 0xFF for i in range(1700))
        head = struct.unpack_from("!5H", tail)
        rr = b"\xc0\x0c" + struct.pack("!HHIH", RRSIG, 1, 300, len(sig)) + sig
        header = struct.pack("!5H", head[0], head[1], head[2], head[3], head[4] + 1)
        return header + tail[10:] + rr

    def fragments(whole: bytes, v6: bool, ident: int) -> list[bytes]:
        """An Ethernet frame holding one IP datagram (header + UDP + DNS) cut into IP fragments."""
        eth, ip = whole[:14], whole[14:]
        if not v6:
            hdr, body = ip[:20], ip[20:]
            out_frames = []
            for off in range(0, len(body), 1480):
                part = body[off : off + 1480]
                more = 0x2000 if off + 1480 < len(body) else 0
                h = bytearray(hdr)
                # total length, identification, flags + offset; TTL and protocol stay the datagram's
                struct.pack_into("!HHH", h, 2, 20 + len(part), ident & 0xFFFF, more | (off // 8))
                h[10:12] = b"\x00\x00"
                struct.pack_into("!H", h, 10, _fold(_sum16(bytes(h))))
                out_frames.append(eth + bytes(h) + part)
            return out_frames
        hdr, body = ip[:40], ip[40:]
        out_frames = []
        for off in range(0, len(body), 1448):
            part = body[off : off + 1448]
            more = 1 if off + 1448 < len(body) else 0
            h = bytearray(hdr)
            struct.pack_into("!H", h, 4, 8 + len(part))
            h[6] = 44
            frag = struct.pack("!BBHI", 17, 0, off | more, ident)
            out_frames.append(eth + bytes(h) + frag + part)
        return out_frames

    tcp_due = m.tcp_every
    while out.count < packets:
        t += int(expovariate(1.0 / QUERY_GAP_US)) + 1
        while heap and heap[0][0] <= t:
            ts, _, fr = heappop(heap)
            emit(ts, fr)
            if out.count >= packets:
                break
        if out.count >= packets:
            break
        stats["transactions"] += 1
        c = int(random_() * 500)
        v6 = clients[c][1]
        k = (c * 7 + (1 if random_() < 0.1 else 0)) % 4  # each client mostly sticks to one resolver
        qtype = qtypes[int(random_() * 100)]
        x = random_()
        if x < 0.03:
            idx, outcome = -1 - int(random_() * len(names.nx)), NXDOMAIN
        elif x < 0.035:
            idx, outcome = bisect_names(cum, random_() * total), SERVFAIL
        else:
            idx, outcome = bisect_names(cum, random_() * total), NOERROR
        idx = min(idx, n_names - 1)
        y = random_()
        edns = 0 if y < 0.15 else (2 if y < 0.35 else 1)
        key = (idx, qtype, outcome, edns)
        attacking = m.attack and random_() < m.attack
        if attacking:
            outcome = SERVFAIL if random_() < 0.5 else NXDOMAIN
            qtype = A
            tpl = attack_pair(outcome)
            stats["attack_queries"] = stats.get("attack_queries", 0) + 1
        else:
            tpl = templates.get(key) or template(key)
        qtail, qsum, rtail, rsum = tpl
        cport = 1024 + getrandbits(16) % 64512
        dns_id = getrandbits(16)
        ip_id = (ip_id + 1) & 0xFFFF
        over_tcp = False
        if tcp_due:
            over_tcp = out.count + 12 < packets and stats["transactions"] >= tcp_due
        elif m.tcp_share:
            over_tcp = out.count + 24 < packets and random_() < m.tcp_share
        if over_tcp:
            tcp_due += m.tcp_every
            stats["tcp_exchanges"] += 1
            start_t = t
            if m.truncation:  # first over UDP: the answer has TC set and no records
                tc = struct.pack("!5H", QR_RD_RA | 0x0200, 1, 0, 0, 0) + rtail[10 : _question_end(rtail)]
                emit(t, frame(v6, k, c, cport, dns_id, qtail, qsum, True, ip_id))
                seq += 1
                heappush(heap, (t + 300, seq, frame(v6, k, c, cport, dns_id, tc, _sum16(tc), False, ip_id)))
                start_t = t + 600
            for ts, fr in _tcp_exchange(
                rng,
                start_t,
                clients[c][0],
                servers4[k] if not v6 else servers6[k],
                eth_q[(k, int(v6))],
                eth_r[(k, int(v6))],
                dns_id,
                qtail,
                rtail,
                varied=bool(m.tcp_share),
            ):
                seq += 1
                heappush(heap, (ts, seq, fr))
            continue
        if m.malformed and random_() < 2 * m.malformed:  # the query or the answer (one message in two)
            if random_() < 0.5:
                qtail = damaged(qtail)
                qsum = _sum16(qtail)
            else:
                rtail = damaged(rtail)
                rsum = _sum16(rtail)
            stats["malformed"] = stats.get("malformed", 0) + 1
        if v6:
            stats["udp_v6"] += 1
        emit(t, frame(v6, k, c, cport, dns_id, qtail, qsum, True, ip_id))
        if random_() < 0.01:
            stats["unanswered"] += 1
            if random_() < 0.5:
                stats["retransmitted"] += 1
                seq += 1
                heappush(
                    heap,
                    (
                        t + 1_000_000,
                        seq,
                        frame(v6, k, c, cport, dns_id, qtail, qsum, True, (ip_id + 1) & 0xFFFF),
                    ),
                )
            continue
        if outcome == NXDOMAIN:
            stats["nxdomain"] += 1
        elif outcome == SERVFAIL:
            stats["servfail"] += 1
        z = random_()
        if attacking:
            lat = 20_000 + int(z * 400_000)  # the victim's servers are slow to fail
        elif outcome == SERVFAIL:
            lat = 800_000 + int(z * 2_000_000)
        elif z < 0.7:
            lat = 150 + int(random_() * 1500)  # cache hit
        else:
            lat = 4000 + int(expovariate(1 / 25_000))  # recursion
        if m.fragmented and random_() < m.fragmented:
            big = signed(rtail, qtype)
            whole = frame(v6, k, c, cport, dns_id, big, _sum16(big), False, 0)
            stats["fragmented"] = stats.get("fragmented", 0) + 1
            for n_frag, fr in enumerate(fragments(whole, v6, getrandbits(16 if not v6 else 32))):
                seq += 1
                heappush(heap, (t + lat + 20 * n_frag, seq, fr))
            continue
        seq += 1
        heappush(heap, (t + lat, seq, frame(v6, k, c, cport, dns_id, rtail, rsum, False, getrandbits(16))))
    while heap and out.count < packets:
        ts, _, fr = heappop(heap)
        emit(ts, fr)
    out.close()
    return {
        "path": str(path),
        "packets": out.count,
        "bytes": out.size,
        "distinct_names": n_names + len(names.nx),
        "clients": len(clients),
        "servers": 4,
        "templates": len(templates),
        "first_ts_us": T0_US,
        "traffic_seconds": round((t - T0_US) / 1e6, 3),
        **stats,
    }


# The segmentation patterns of varied DNS-over-TCP exchanges, with their cumulative shares.
PATTERNS = (("plain", 0.6), ("split", 0.75), ("prefix", 0.8), ("retx", 0.9), ("pipe", 1.0))


def _question_end(tail: bytes) -> int:
    """Where the question of a message ``tail`` (without its ID) ends."""
    pos = 10
    while tail[pos] != 0 and tail[pos] < 0xC0:
        pos += 1 + tail[pos]
    return pos + (2 if tail[pos] >= 0xC0 else 1) + 4


def _tcp_exchange(
    rng: random.Random,
    t: int,
    caddr: bytes,
    saddr: bytes,
    eth_q: bytes,
    eth_r: bytes,
    dns_id: int,
    qtail: bytes,
    rtail: bytes,
    *,
    varied: bool = False,
) -> list[tuple[int, bytes]]:
    """A whole DNS-over-TCP exchange: handshake, one query, one answer, ACKs and teardown."""
    cport = 1024 + rng.getrandbits(16) % 64512
    cseq, sseq = rng.getrandbits(32), rng.getrandbits(32)
    q = struct.pack("!HH", 2 + len(qtail), dns_id) + qtail
    r = struct.pack("!HH", 2 + len(rtail), dns_id) + rtail
    v6 = len(caddr) == 16

    def seg(to_server: bool, seq: int, ack: int, flags: int, payload: bytes = b"") -> bytes:
        src, dst, sp, dp = (caddr, saddr, cport, 53) if to_server else (saddr, caddr, 53, cport)
        hdr = struct.pack("!HHIIBBHHH", sp, dp, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 0x50, flags, 64240, 0, 0)
        body = hdr + payload
        if v6:
            ck = _fold(_sum16(src + dst) + len(body) + 6 + _sum16(body))
            ipk = struct.pack("!IHBB16s16s", 0x60000000, len(body), 6, 64, src, dst)
        else:
            ck = _fold(_sum16(src + dst) + len(body) + 6 + _sum16(body))
            h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 0, 0x4000, 64, 6, 0, src, dst)
            ipk = h[:10] + struct.pack("!H", _fold(_sum16(h))) + h[12:]
        body = body[:16] + struct.pack("!H", ck) + body[18:]
        return (eth_q if to_server else eth_r) + ipk + body

    SYN, ACK, PSH, FIN = 0x02, 0x10, 0x08, 0x01
    # How the messages are cut into segments (``varied``): one each (most), the answer over two or
    # three segments (the first one just its length), the query sent twice (a retransmission), or two
    # queries pipelined in one segment and their two answers in one segment.
    pattern = "plain"
    if varied:
        x = rng.random()
        pattern = next(name for name, upto in PATTERNS if x < upto)
    if pattern == "pipe":
        q2 = struct.pack("!HH", 2 + len(qtail), (dns_id + 1) & 0xFFFF) + qtail
        r2 = struct.pack("!HH", 2 + len(rtail), (dns_id + 1) & 0xFFFF) + rtail
        q, r = q + q2, r + r2
    client_data = [(cseq + 1, q)]
    if pattern == "retx":
        client_data.append((cseq + 1, q))
    cuts = {"split": [len(r) // 2], "prefix": [2, 2 + (len(r) - 2) // 2]}.get(pattern, [])
    bounds = [0, *cuts, len(r)]
    server_data = [(sseq + 1 + a, r[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
    plan = [
        (True, cseq, 0, SYN, b""),
        (False, sseq, cseq + 1, SYN | ACK, b""),
        (True, cseq + 1, sseq + 1, ACK, b""),
        *[(True, s_, sseq + 1, PSH | ACK, d) for s_, d in client_data],
        *[(False, s_, cseq + 1 + len(q), PSH | ACK, d) for s_, d in server_data],
        (True, cseq + 1 + len(q), sseq + 1 + len(r), ACK, b""),
        (True, cseq + 1 + len(q), sseq + 1 + len(r), FIN | ACK, b""),
        (False, sseq + 1 + len(r), cseq + 2 + len(q), FIN | ACK, b""),
        (True, cseq + 2 + len(q), sseq + 2 + len(r), ACK, b""),
    ]
    out = []
    for to_server, s, a, flags, payload in plan:
        out.append((t, seg(to_server, s, a, flags, payload)))
        t += 150 + rng.randint(0, 300)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write a deterministic capture of resolver traffic.")
    ap.add_argument("--packets", type=int, default=2_000_000, help="records to write (default 2,000,000)")
    ap.add_argument("-o", "--output", type=Path, default=Path(__file__).parent / "data" / "resolver-2m.pcap")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--mix", choices=sorted(MIXES), default="resolver", help="what the traffic holds")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    stats = make_capture(args.output, args.packets, args.seed, args.mix)
    took = time.perf_counter() - start
    print(f"wrote {stats['packets']:,} packets ({stats['bytes'] / 2**20:,.1f} MiB) to {stats['path']} "
          f"in {took:.1f} s", file=sys.stderr)  # fmt: skip
    for k, v in stats.items():
        if k not in ("path", "packets", "bytes"):
            print(f"  {k}: {v:,}" if isinstance(v, int) else f"  {k}: {v}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
