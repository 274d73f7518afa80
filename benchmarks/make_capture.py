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


def make_capture(path: str | Path, packets: int = 2_000_000, seed: int = 7) -> dict[str, Any]:
    """Write ``packets`` records of resolver traffic to ``path``; return what was written."""
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
    next_tcp = 20_000

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
        tpl = templates.get(key) or template(key)
        qtail, qsum, rtail, rsum = tpl
        cport = 1024 + getrandbits(16) % 64512
        dns_id = getrandbits(16)
        ip_id = (ip_id + 1) & 0xFFFF
        if out.count + 12 < packets and stats["transactions"] >= next_tcp:
            next_tcp += 20_000
            stats["tcp_exchanges"] += 1
            for ts, fr in _tcp_exchange(
                rng,
                t,
                clients[c][0],
                servers4[k] if not v6 else servers6[k],
                eth_q[(k, int(v6))],
                eth_r[(k, int(v6))],
                dns_id,
                qtail,
                rtail,
            ):
                seq += 1
                heappush(heap, (ts, seq, fr))
            continue
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
        if outcome == SERVFAIL:
            lat = 800_000 + int(z * 2_000_000)
        elif z < 0.7:
            lat = 150 + int(random_() * 1500)  # cache hit
        else:
            lat = 4000 + int(expovariate(1 / 25_000))  # recursion
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
    plan = [
        (True, cseq, 0, SYN, b""),
        (False, sseq, cseq + 1, SYN | ACK, b""),
        (True, cseq + 1, sseq + 1, ACK, b""),
        (True, cseq + 1, sseq + 1, PSH | ACK, q),
        (False, sseq + 1, cseq + 1 + len(q), PSH | ACK, r),
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
    args = ap.parse_args(argv)
    start = time.perf_counter()
    stats = make_capture(args.output, args.packets, args.seed)
    took = time.perf_counter() - start
    print(f"wrote {stats['packets']:,} packets ({stats['bytes'] / 2**20:,.1f} MiB) to {stats['path']} "
          f"in {took:.1f} s", file=sys.stderr)  # fmt: skip
    for k, v in stats.items():
        if k not in ("path", "packets", "bytes"):
            print(f"  {k}: {v:,}" if isinstance(v, int) else f"  {k}: {v}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
