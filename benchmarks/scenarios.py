"""Seeded DNS outage scenarios with their ground truth, for measuring the anomaly engine.

``draw(seed)`` draws one independent capture: recursive resolvers, clients in a few /24 (and some
/48) networks, queries at a drifting rate to names in zones of Zipf-like popularity, realistic
baselines (each zone its own NXDOMAIN share, background SERVFAIL, sporadic loss, a long latency
tail, a few noisy clients that keep asking for names that do not exist) and, unless the capture is
a steady one, one to three **events** at random times, sizes and servers, each large enough to
be seen (``VISIBLE``: at least 20 affected answers a minute at each affected resolver; half that
for loss):

============== ==================== =========================================================
event          finding it should be what happens
============== ==================== =========================================================
servfail_zone  rcode_surge          1-2 resolvers answer SERVFAIL for one zone (the others not)
refused        rcode_surge          one resolver answers REFUSED to a share of every query
nxdomain_flood rcode_surge          clients flood one zone with random names (all resolvers)
outage         unanswered_outage    one resolver answers nothing
loss           unanswered_loss      one resolver drops a share of the queries
slow           slow_responses       one resolver answers 10-40x slower
formerr        formerr              1-3 clients start sending queries one resolver answers
                                    FORMERR: an unassigned EDNS option, or two questions
servfail_cause servfail_cause       one resolver answers SERVFAIL for one zone, and the capture
                                    shows why: its upstream queries to the zone's authorities
                                    answered REFUSED (a lame delegation), or EDE 6 (DNSSEC
                                    Bogus) in its answers
============== ==================== =========================================================

``pcap_bytes(scenario)`` writes it as a classic pcap (Ethernet, IPv4/IPv6, UDP port 53), which
the engine reads through the real decode and pairing path.  The same seed gives the same bytes.
``quick=True`` scales sizes down (fewer clients, lower rates, shorter captures) so that a
hundred captures are analyzed in minutes on a small machine.
"""

from __future__ import annotations

import array
import bisect
import io
import ipaddress
import math
import random
import struct
from dataclasses import dataclass, field
from typing import BinaryIO

T0 = 1709510400.0  # 2024-03-04T00:00:00Z

EVENT_KINDS = {
    "servfail_zone": "rcode_surge",
    "refused": "rcode_surge",
    "nxdomain_flood": "rcode_surge",
    "outage": "unanswered_outage",
    "loss": "unanswered_loss",
    "slow": "slow_responses",
    "formerr": "formerr",
    "servfail_cause": "servfail_cause",
}
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, REFUSED = 0, 1, 2, 3, 5
AUTHORITIES = ("198.51.100.1", "198.51.100.2")  # a zone's authoritative servers, for upstream queries
EDE_DNSSEC_BOGUS = 6


def v6_of(resolver: str) -> str:
    """The IPv6 address of a (dual-stack) resolver: IPv6 clients ask it there."""
    return f"2001:db8:53::{resolver.rsplit('.', 1)[1]}"


def resolver_of(address: str) -> str:
    """The resolver an address belongs to (its IPv4 address), for comparing with the truth."""
    return f"10.53.0.{address.rsplit(':', 1)[1]}" if address.startswith("2001:db8:53::") else address


@dataclass(frozen=True, slots=True)
class Event:
    kind: str  # a key of EVENT_KINDS
    start: float  # seconds from the capture's start
    end: float
    servers: tuple[str, ...]  # the resolvers whose behaviour changes (the ground truth to name)
    zone: str | None = None  # for zone events
    rcode: str | None = None  # for rcode events
    size: float = 0.0  # share of affected queries failing, lost; latency factor; flood rate share
    clients: tuple[str, ...] = ()  # the clients whose queries draw the failure (formerr)
    cause: str | None = (
        None  # formerr: "edns_option" or "two_questions"; servfail_cause: "upstream", "dnssec"
    )
    upstreams: tuple[str, ...] = ()  # servfail_cause by upstream: the authorities that failed
    option: int | None = None  # formerr by an EDNS option: its code

    @property
    def finding(self) -> str:
        return EVENT_KINDS[self.kind]


@dataclass(slots=True)
class Scenario:
    seed: int
    duration: float  # seconds
    qps: float
    resolvers: list[str]
    clients: list[str]
    zones: list[str]
    zone_weights: list[float]  # cumulative popularity
    nx_share: list[float]  # per zone
    servfail_share: float
    loss: dict[str, float]  # per resolver
    rtt_ms: dict[str, float]  # per resolver: median
    drift: tuple[float, float, float]  # amplitude, period (s), phase
    noisy: list[tuple[str, str, float]]  # (client, zone, queries/s) asking for names that do not exist
    events: list[Event] = field(default_factory=list)

    @property
    def steady(self) -> bool:
        return not self.events


def _clients(rng: random.Random, n: int) -> list[str]:
    nets = max(1, min(40, n // rng.randint(15, 60)))
    v4 = [f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}" for _ in range(nets)]
    v6 = [f"2001:db8:{rng.randint(0, 0xFFFF):x}" for _ in range(max(1, nets // 4))]
    out: set[str] = set()
    while len(out) < n:
        if rng.random() < 0.1:
            out.add(f"{rng.choice(v6)}::{rng.randint(1, 0xFFFF):x}")
        else:
            out.add(f"{rng.choice(v4)}.{rng.randint(1, 254)}")
    return sorted(out)


def draw(seed: int, *, quick: bool = False, steady: bool | None = None) -> Scenario:
    """One independent scenario; ``steady`` forces (or forbids) events, else a third are steady."""
    rng = random.Random(seed)
    if quick:
        duration = rng.uniform(5, 15) * 60
        qps = math.exp(rng.uniform(math.log(10), math.log(200)))
        n_clients = rng.randint(20, 500)
    else:
        duration = rng.uniform(5, 60) * 60
        qps = math.exp(rng.uniform(math.log(10), math.log(5000)))
        n_clients = rng.randint(20, 5000)
    resolvers = [f"10.53.0.{i + 1}" for i in range(rng.randint(1, 10))]  # each also at V6_RESOLVER
    clients = _clients(rng, n_clients)
    n_zones = rng.randint(30, 200)
    words = ("shop", "news", "mail", "cdn", "bank", "video", "corp", "api", "game", "docs")
    zones = [f"{words[i % len(words)]}{i}.example" for i in range(n_zones)]
    weights = [1 / (i + 1) for i in range(n_zones)]
    rng.shuffle(zones)
    cum, total = [], 0.0
    for w in weights:
        total += w
        cum.append(total)
    nx = rng.uniform(0.02, 0.30)
    nx_share = [min(0.9, nx * math.exp(rng.gauss(0, 0.7))) for _ in zones]
    noisy = [
        (rng.choice(clients), rng.choice(zones), qps * rng.uniform(0.002, 0.02))
        for _ in range(rng.randint(1, 3))
    ]
    sc = Scenario(
        seed=seed,
        duration=duration,
        qps=qps,
        resolvers=resolvers,
        clients=clients,
        zones=zones,
        zone_weights=cum,
        nx_share=nx_share,
        servfail_share=rng.uniform(0.0005, 0.006),
        loss={r: rng.uniform(0, 0.004) for r in resolvers},
        rtt_ms={r: rng.uniform(2, 30) for r in resolvers},
        drift=(rng.uniform(0, 0.3), duration * rng.uniform(0.5, 2), rng.uniform(0, 2 * math.pi)),
        noisy=noisy,
    )
    if steady is None:
        steady = rng.random() < 1 / 3
    if not steady:
        sc.events = _events(rng, sc)
    return sc


VISIBLE = 20.0  # the default magnitude: affected answers a minute at each affected resolver, at least


def _events(rng: random.Random, sc: Scenario) -> list[Event]:
    """1-3 events at random times, sizes and resolvers, each at least ``VISIBLE``: a change of a
    few answers a minute is below what any window test can tell from chance, so an event that
    small would measure the generator, not the engine."""
    out: list[Event] = []
    busy: dict[str, list[tuple[float, float]]] = {}
    per_minute = sc.qps * 60 * 0.9 / len(sc.resolvers)  # queries a minute to one resolver's IPv4 address
    total = sc.zone_weights[-1]
    share = [(b - a) / total for a, b in zip([0.0, *sc.zone_weights], sc.zone_weights, strict=False)]
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(sorted(EVENT_KINDS))
        length = rng.uniform(60, 300) if kind != "loss" else rng.uniform(120, 480)
        if length > sc.duration - 120:
            continue
        start = rng.uniform(30, sc.duration - length - 30)
        end = start + length
        size = {"servfail_zone": rng.uniform(0.5, 1.0), "refused": rng.uniform(0.3, 1.0)}.get(kind, 0.0)
        if kind == "servfail_zone":
            k = 1 if len(sc.resolvers) == 1 or rng.random() < 0.7 else 2
            servers = tuple(sorted(rng.sample(sc.resolvers, k)))
            zones = [z for z, p in zip(sc.zones, share, strict=True) if p * per_minute * size >= VISIBLE]
            if not zones:
                continue
            ev = Event(kind, start, end, servers, rng.choice(zones[:10]), "SERVFAIL", size)
        elif kind == "refused":
            if per_minute * size < VISIBLE:
                continue
            ev = Event(kind, start, end, (rng.choice(sc.resolvers),), None, "REFUSED", size)
        elif kind == "nxdomain_flood":
            # the flood's share of the traffic: 10-40 %, more when the capture is quiet
            size = max(rng.uniform(0.1, 0.4), VISIBLE / per_minute)
            if size > 1.0:
                continue
            ev = Event(kind, start, end, tuple(sc.resolvers), rng.choice(sc.zones[:30]), "NXDOMAIN", size)
        elif kind == "outage":
            if per_minute < VISIBLE:
                continue
            ev = Event(kind, start, end, (rng.choice(sc.resolvers),), size=1.0)
        elif kind == "loss":
            size = rng.uniform(0.1, 0.3)
            if per_minute * size < VISIBLE / 2:
                continue
            ev = Event(kind, start, end, (rng.choice(sc.resolvers),), size=size)
        elif kind == "formerr":
            # the clients' queries (a new client software version) at a rate of at least VISIBLE a
            # minute together, all to their resolver
            k = rng.randint(1, 3)
            who = tuple(sorted(rng.sample(sc.clients, min(k, len(sc.clients)))))
            cause = rng.choice(["edns_option", "two_questions"])
            rate = max(VISIBLE / 60, sc.qps * rng.uniform(0.005, 0.02))
            # the option the clients' software sends (codes 20-62 are unassigned in the registry)
            option = rng.randint(20, 62) if cause == "edns_option" else None
            server = (rng.choice(sc.resolvers),)
            ev = Event(kind, start, end, server, size=rate, clients=who, cause=cause, option=option)
        elif kind == "servfail_cause":
            size = rng.uniform(0.5, 1.0)
            zones = [z for z, p in zip(sc.zones, share, strict=True) if p * per_minute * size >= VISIBLE]
            if not zones:
                continue
            cause = rng.choice(["upstream", "dnssec"])
            ups = AUTHORITIES if cause == "upstream" else ()
            server = (rng.choice(sc.resolvers),)
            ev = Event(
                kind, start, end, server, rng.choice(zones[:10]), "SERVFAIL", size, cause=cause, upstreams=ups
            )
        else:
            if per_minute < VISIBLE:
                continue
            ev = Event(kind, start, end, (rng.choice(sc.resolvers),), size=rng.uniform(10, 40))
        # one event at a time per resolver: the truth of each stays unambiguous
        take(ev, out, busy)
    return out


def take(ev: Event, out: list[Event], busy: dict[str, list[tuple[float, float]]]) -> None:
    """Add ``ev`` to ``out`` unless one of its servers has an event within a minute of it
    (``busy``: each server's events so far) or another event concerns its zone."""
    spans = [s for r in ev.servers for s in busy.get(r, [])]
    if any(ev.start < e + 60 and s < ev.end + 60 for s, e in spans):
        return
    if ev.zone is not None and any(o.zone == ev.zone for o in out):
        return
    for r in ev.servers:
        busy.setdefault(r, []).append((ev.start, ev.end))
    out.append(ev)


# -- packets --------------------------------------------------------------------------------------

PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
REC = struct.Struct("<IIII")
_ETH4 = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x08\x00"
_ETH6 = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x86\xdd"


def _qname(name: str) -> bytes:
    out = b""
    for label in name.split("."):
        raw = label.encode()
        out += bytes([len(raw)]) + raw
    return out + b"\x00"


def _opt(options: bytes) -> bytes:
    """An OPT pseudo-record (RFC 6891): root name, 1232-octet buffer, version 0, its options."""
    return b"\x00" + struct.pack("!HHIH", 41, 1232, 0, len(options)) + options


def _dns(
    ident: int,
    name: str,
    *,
    response: bool,
    rcode: int = 0,
    ttl: int = 300,
    option: int | None = None,
    questions: int = 1,
    ede: int | None = None,
    rd: bool = True,
) -> bytes:
    """A query or its answer; ``option``: an EDNS option code the query carries (empty data);
    ``questions``: two puts a second question in the query; ``ede``: an Extended DNS Error code
    (RFC 8914) in the answer."""
    q = _qname(name) + b"\x00\x01\x00\x01"
    if not response:
        extra = _opt(struct.pack("!HH", option, 0)) if option is not None else b""
        qs = q + (_qname("www." + name) + b"\x00\x01\x00\x01" if questions > 1 else b"")
        flags = 0x0100 if rd else 0x0000
        return struct.pack("!6H", ident, flags, questions, 0, 0, 1 if extra else 0) + qs + extra
    answers = 1 if rcode == NOERROR else 0
    extra = _opt(struct.pack("!HHH", 15, 2, ede)) if ede is not None else b""
    body = struct.pack("!6H", ident, 0x8180 | rcode, 1, answers, 0, 1 if extra else 0) + q
    if answers:
        body += b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, ttl, 4) + bytes([192, 0, 2, ident % 250 + 1])
    return body + extra


def checksum(header: bytes) -> int:
    s = sum(struct.unpack("!10H", header))
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


class _Wire:
    def __init__(self) -> None:
        self.addr: dict[str, tuple[int, bytes]] = {}

    def _a(self, text: str) -> tuple[int, bytes]:
        got = self.addr.get(text)
        if got is None:
            ip = ipaddress.ip_address(text)
            got = self.addr[text] = (ip.version, ip.packed)
        return got

    def frame(self, src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
        (v, s), (_, d) = self._a(src), self._a(dst)
        udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
        if v == 4:
            head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0, s, d)
            head = head[:10] + struct.pack("!H", checksum(head)) + head[12:]
            return _ETH4 + head + udp
        return _ETH6 + struct.pack("!IHBB16s16s", 0x60000000, len(udp), 17, 64, s, d) + udp


class _Records:
    """Packets as they are drawn (not in time order), held compactly: a capture of tens of
    millions of packets fits in memory as one buffer and two arrays, not as as many objects."""

    def __init__(self) -> None:
        self.ts = array.array("d")
        self.offsets = array.array("q")
        self.buf = bytearray()

    def append(self, record: tuple[float, bytes]) -> None:
        self.ts.append(record[0])
        self.offsets.append(len(self.buf))
        self.buf += record[1]


def pcap_bytes(sc: Scenario) -> bytes:
    """The scenario as a classic pcap (microsecond timestamps), records in time order."""
    out = io.BytesIO()
    write_pcap(sc, out)
    return out.getvalue()


def write_pcap(sc: Scenario, out: BinaryIO) -> None:
    """Write the scenario as a classic pcap to ``out``, records in time order (ties in the order
    they were drawn)."""
    import numpy as np

    records = _draw_packets(sc)
    ends = np.append(np.frombuffer(records.offsets, dtype=np.int64), len(records.buf))
    order = np.argsort(np.frombuffer(records.ts, dtype=np.float64), kind="stable")
    out.write(PCAP_HEADER)
    chunk = bytearray()
    view = memoryview(records.buf)
    for i in order.tolist():
        us = int(round((T0 + records.ts[i]) * 1_000_000))
        a, b = int(ends[i]), int(ends[i + 1])
        chunk += REC.pack(us // 1_000_000, us % 1_000_000, b - a, b - a)
        chunk += view[a:b]
        if len(chunk) >= 1 << 20:
            out.write(chunk)
            chunk.clear()
    out.write(chunk)


def _draw_packets(sc: Scenario) -> _Records:
    rng = random.Random(sc.seed * 7919 + 1)
    wire = _Wire()
    records = _Records()
    amp, period, phase = sc.drift
    peak = sc.qps * (1 + amp)
    primary = {c: rng.choice(sc.resolvers) for c in sc.clients}
    # (rate, client or None for everyone, zone or None for any, active from, until, the event
    # whose queries these are: a flood spreads over every resolver, a formerr event's clients ask
    # theirs)
    Source = tuple[float, str | None, str | None, float, float, Event | None]
    sources: list[Source] = [(peak, None, None, 0.0, sc.duration, None)]
    sources += [(rate, client, zone, 0.0, sc.duration, None) for client, zone, rate in sc.noisy]
    for e in sc.events:
        if e.kind == "nxdomain_flood":
            attackers = rng.sample(sc.clients, min(len(sc.clients), rng.randint(1, 5)))
            sources += [(sc.qps * e.size / len(attackers), a, e.zone, e.start, e.end, e) for a in attackers]
        elif e.kind == "formerr":
            sources += [(e.size / len(e.clients), c, None, e.start, e.end, e) for c in e.clients]
    ident = 0
    for rate, who, fixed_zone, since, until, source_event in sources:
        t = since
        while True:
            t += rng.expovariate(rate)
            if t >= until:
                break
            if who is None:
                if rng.random() > (1 + amp * math.sin(2 * math.pi * t / period + phase)) / (1 + amp):
                    continue  # thinning: the rate drifts over the capture
                client = rng.choice(sc.clients)
            else:
                client = who
            if fixed_zone is None:
                zi = bisect.bisect_left(sc.zone_weights, rng.random() * sc.zone_weights[-1])
                zone = sc.zones[min(zi, len(sc.zones) - 1)]
            else:
                zi, zone = sc.zones.index(fixed_zone), fixed_zone
            flood = source_event is not None and source_event.kind == "nxdomain_flood"
            if flood:  # a flood spreads over every resolver
                server = rng.choice(sc.resolvers)
            elif source_event is not None:  # a client asks its own resolver
                server = source_event.servers[0]
            else:
                server = primary[client] if rng.random() < 0.8 else rng.choice(sc.resolvers)
            noisy = who is not None and source_event is None
            nonexistent = flood or noisy or rng.random() < sc.nx_share[zi]
            label = f"x{rng.getrandbits(32):08x}" if flood or noisy else f"h{rng.randint(0, 40)}"
            name = f"{label}.{zone}"
            rcode = NXDOMAIN if nonexistent else NOERROR
            if rng.random() < sc.servfail_share:
                rcode = SERVFAIL
            rtt = sc.rtt_ms[server] * math.exp(rng.gauss(0, 0.5))
            if rng.random() < 0.08:
                rtt *= rng.uniform(3, 15)  # a cache miss: the resolver asked the authorities
            lost = rng.random() < sc.loss[server]
            option, questions, ede = None, 1, None
            upstream: list[str] = []
            if source_event is not None and source_event.kind == "formerr":
                option = source_event.option
                questions = 2 if source_event.cause == "two_questions" else 1
                rcode = FORMERR
            for e in sc.events:
                if not (e.start <= t < e.end) or server not in e.servers:
                    continue
                if e.kind == "servfail_zone" and zone == e.zone and rng.random() < e.size:
                    rcode = SERVFAIL
                elif e.kind == "refused" and rng.random() < e.size:
                    rcode = REFUSED
                elif e.kind == "outage":
                    lost = True
                elif e.kind == "loss" and rng.random() < e.size:
                    lost = True
                elif e.kind == "slow":
                    rtt = min(rtt * e.size + 200, 3000.0)  # resolvers give up within a few seconds
                elif e.kind == "servfail_cause" and zone == e.zone and rng.random() < e.size:
                    rcode = SERVFAIL
                    if e.cause == "dnssec":
                        ede = EDE_DNSSEC_BOGUS
                    else:
                        upstream = list(e.upstreams)
            ident = (ident + 1) & 0xFFFF
            port = 1024 + rng.getrandbits(15) + 1024
            address = v6_of(server) if ":" in client else server
            query = _dns(ident, name, response=False, option=option, questions=questions)
            records.append((t, wire.frame(client, address, port, 53, query)))
            for k, authority in enumerate(upstream):
                # the resolver asks the zone's authorities, which answer REFUSED (lame delegation)
                up_id, up_port = rng.getrandbits(16), 1024 + rng.getrandbits(15) + 1024
                at = t + (k + 1) * rtt / 1000 / (len(upstream) + 1)
                up_q = _dns(up_id, name, response=False, rd=False)
                up_a = _dns(up_id, name, response=True, rcode=REFUSED)
                records.append((at, wire.frame(server, authority, up_port, 53, up_q)))
                records.append((at + 0.0005, wire.frame(authority, server, 53, up_port, up_a)))
            if not lost:
                answer = _dns(ident, name, response=True, rcode=rcode, ede=ede)
                records.append((t + rtt / 1000, wire.frame(address, client, 53, port, answer)))
    return records


def truth(sc: Scenario) -> list[dict[str, object]]:
    """The events as the findings that should name them (times in seconds from the start)."""
    return [
        {
            "event": e.kind,
            "kind": e.finding,
            "start": e.start,
            "end": e.end,
            "servers": list(e.servers),
            "zone": e.zone,
            "rcode": e.rcode,
            "size": e.size,
            "clients": list(e.clients),
            "cause": e.cause,
            "upstreams": list(e.upstreams),
        }
        for e in sc.events
    ]


__all__ = [
    "EVENT_KINDS",
    "T0",
    "Event",
    "Scenario",
    "draw",
    "pcap_bytes",
    "resolver_of",
    "truth",
    "v6_of",
    "write_pcap",
]
