"""Seeded captures of other shapes than ``benchmarks/scenarios.py``, with their ground truth.

``scenarios.py`` draws one topology: stub clients and the recursive resolvers they ask, captured
on the resolvers' client side.  This module draws three others, each from a seed, with its own
background of normal failures and, unless the capture is a steady one, one to three events:

``upstream``
    a recursive resolver's upstream side: one resolver (an IPv4 and an IPv6 address) asking root
    servers, the servers of 4-15 TLDs and the authorities of 60-400 zones (their own servers, or
    a few shared hosting providers'), each server at its own RTT (20-300 ms) and loss.  Each cache
    miss walks the delegation (a root or TLD query now and then, then the zone's authority) and
    picks among a zone's servers by smoothed RTT, penalising servers that timed out (and probing
    them now and then).  The background: 1-5 % of upstream queries time out, after which the
    resolver asks another authority of the zone; a few dead authorities that never answer, and a
    few whole zones whose authorities are all dead (a long tail of broken delegations); lame
    authorities answering REFUSED; NXDOMAIN per zone; answers too large for UDP (TC=1) asked
    again over TCP.
``both``
    the same, plus the resolver's client side on the same host: clients ask the resolver, which
    answers from its cache or after resolving upstream, and answers SERVFAIL when every authority
    of the zone failed.
``host``
    one client host (a laptop or a server): 1-3 client addresses, 1-2 resolvers, 0.1-5 queries/s
    in sessions separated by long idle gaps, bursts of identical questions from applications, A
    and AAAA together, search-domain NXDOMAINs, a client that retries after a timeout (to the
    other resolver when there are two), and mDNS/LLMNR on 224.0.0.251/252 and ff02::fb.

=============== ================== ========== ====================================================
event           finding it should  family     what happens
=============== ================== ========== ====================================================
authority_dark  unanswered_outage  upstream,  one authority (a zone's own, or a hosting provider's
                                   both       shared by many zones) stops answering
zone_dark       unanswered_outage  upstream,  every authority of one zone stops answering
                                   both
dark_cause      servfail_cause     both       the SERVFAILs clients get while a zone is dark,
                                              naming its authorities as the upstreams that failed
tld_slow        slow_responses     upstream,  the servers of one TLD answer 5-20x slower
                                   both
zone_refused    rcode_surge        upstream,  a zone's authorities answer REFUSED (a broken
                                   both       delegation) to a share of the queries
zone_servfail   rcode_surge        upstream,  ... SERVFAIL
                                   both
dnssec          servfail_cause     both       a zone's DNSSEC breaks: the resolver answers its
                                              clients SERVFAIL with EDE 6 (DNSSEC Bogus)
resolver_dark   unanswered_outage  host       one of the host's resolvers stops answering
resolver_refuse rcode_surge        host       one resolver answers REFUSED to a share of the
                                              queries (an ACL or a VPN changed)
=============== ================== ========== ====================================================

An event is **visible** when the capture holds enough of it for a window test to tell it from
chance, counted from the packets drawn (the truth says so): at least ``OUTAGE_VISIBLE`` queries
to the dark servers during an outage, ``SURGE_VISIBLE`` affected answers a minute for a surge or
a SERVFAIL cause, and ``SLOW_VISIBLE`` answers a minute at a slowed server.  The resolver's
adaptive server selection can starve a dark authority of queries, so some events drawn are not
visible; recall counts the visible ones only, and findings near an invisible event are not
stray.

``background(sc)`` lists what is broken for the whole capture (dead and lame authorities, dead
zones, authorities losing far more queries than most): findings that state such a fact
(``persistent_failure``, ``servfail_cause``, the ``unanswered_loss`` of a lossy server) are not
false alarms, but an ``unanswered_outage`` of a server that never answered is.

``write_pcap(sc, out)`` writes a classic pcap (Ethernet, IPv4/IPv6, UDP and TCP); the same seed
gives the same bytes.  ``quick=True`` scales the sizes down.
"""

from __future__ import annotations

import bisect
import ipaddress
import math
import random
import struct
from dataclasses import dataclass, field
from typing import BinaryIO

from scenarios import PCAP_HEADER, REC, checksum, take

T0 = 1709510400.0  # 2024-03-04T00:00:00Z
FAMILIES = ("upstream", "both", "host")

EVENT_KINDS = {
    "authority_dark": "unanswered_outage",
    "zone_dark": "unanswered_outage",
    "dark_cause": "servfail_cause",
    "tld_slow": "slow_responses",
    "zone_refused": "rcode_surge",
    "zone_servfail": "rcode_surge",
    "dnssec": "servfail_cause",
    "resolver_dark": "unanswered_outage",
    "resolver_refuse": "rcode_surge",
}
FAMILY_EVENTS = {
    "upstream": ("authority_dark", "zone_dark", "tld_slow", "zone_refused", "zone_servfail"),
    "both": ("authority_dark", "zone_dark", "tld_slow", "zone_refused", "zone_servfail", "dnssec"),
    "host": ("resolver_dark", "resolver_refuse"),
}
OUTAGE_VISIBLE = 10  # queries to the dark servers during the event
SURGE_VISIBLE = 20.0  # affected answers a minute
SLOW_VISIBLE = 15.0  # answers a minute at one slowed server

NOERROR, SERVFAIL, NXDOMAIN, REFUSED = 0, 2, 3, 5
EDE_DNSSEC_BOGUS = 6
RESOLVER4, RESOLVER6 = "10.53.0.1", "2001:db8:53::1"  # the resolver (upstream, both)
A, NS, MX, TXT, AAAA, DS, DNSKEY = 1, 2, 15, 16, 28, 43, 48
TLDS = ("com", "net", "org", "de", "nl", "fr", "io", "se", "ch", "jp", "br", "info", "eu", "it", "pl")
APPS = ("www", "api", "static", "img", "login", "push", "telemetry", "update")  # a host's names
WORDS = ("shop", "news", "mail", "cdn", "bank", "video", "corp", "api", "game", "docs", "cloud", "travel")


@dataclass(frozen=True, slots=True)
class Event:
    kind: str  # a key of EVENT_KINDS
    start: float  # seconds from the capture's start
    end: float
    servers: tuple[str, ...]  # the servers whose behaviour changes (the truth to name)
    zone: str | None = None
    rcode: str | None = None
    size: float = 1.0  # share of affected answers; latency factor
    upstreams: tuple[str, ...] = ()  # dark_cause: the authorities that failed
    cause: str | None = None  # dark_cause: "upstream"; dnssec: "dnssec"

    @property
    def finding(self) -> str:
        return EVENT_KINDS[self.kind]


@dataclass(slots=True)
class Zone:
    name: str
    tld: int
    servers: list[str]
    nx: float  # share of NXDOMAIN answers
    own: bool  # its own servers (not a hosting provider's)


@dataclass(slots=True)
class Scenario:
    seed: int
    family: str
    duration: float
    qps: float  # cache misses a second (upstream, both); queries a second (host)
    drift: tuple[float, float, float]  # amplitude, period (s), phase
    # upstream, both
    roots: list[str] = field(default_factory=list)
    tlds: list[tuple[str, list[str]]] = field(default_factory=list)  # (label, servers)
    zones: list[Zone] = field(default_factory=list)
    zone_weights: list[float] = field(default_factory=list)  # cumulative popularity
    rtt_ms: dict[str, float] = field(default_factory=dict)  # per server: median
    loss: dict[str, float] = field(default_factory=dict)  # per server: timeouts
    dead: set[str] = field(default_factory=set)  # servers that never answer
    lame: set[str] = field(default_factory=set)  # servers that answer REFUSED
    p_root: float = 0.0
    p_tld: float = 0.0
    tc_share: float = 0.0
    # both: the client side
    clients: list[str] = field(default_factory=list)
    hit: float = 0.0  # cache hit share
    client_qps: float = 0.0
    # host
    resolvers: list[str] = field(default_factory=list)
    ports: tuple[int, ...] = (53,)  # the ports the analysis is told to read
    events: list[Event] = field(default_factory=list)
    seen: dict[int, float] = field(default_factory=dict)  # per event index: what makes it visible
    first_answer: dict[str, float] = field(default_factory=dict)  # per server: its first answer

    @property
    def steady(self) -> bool:
        return not self.events


def _address(rng: random.Random, used: set[str], v6: bool = False) -> str:
    while True:
        if v6:
            a = f"2001:db8:{rng.randint(0x100, 0xFFFF):x}::{rng.randint(1, 0xFF):x}"
        else:
            first = rng.choice((45, 64, 85, 91, 104, 151, 176, 185, 193, 195, 204, 212, 217))
            a = f"{first}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        if a not in used:
            used.add(a)
            return a


def draw(seed: int, family: str = "upstream", *, quick: bool = False, steady: bool | None = None) -> Scenario:
    """One independent capture of ``family``; ``steady`` forces (or forbids) events, else a
    third are steady."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}")
    rng = random.Random(f"{family}-{seed}")
    if family == "host":
        sc = _draw_host(rng, seed, quick)
    else:
        sc = _draw_resolver(rng, seed, family, quick)
    if steady is None:
        steady = rng.random() < 1 / 3
    if not steady:
        sc.events = _events(rng, sc)
    return sc


def _draw_resolver(rng: random.Random, seed: int, family: str, quick: bool) -> Scenario:
    duration = rng.uniform(5, 15) * 60 if quick else rng.uniform(10, 60) * 60
    qps = math.exp(rng.uniform(math.log(3), math.log(40 if quick else 400)))  # cache misses/s
    used: set[str] = set()
    sc = Scenario(
        seed=seed,
        family=family,
        duration=duration,
        qps=qps,
        drift=(rng.uniform(0, 0.3), duration * rng.uniform(0.5, 2), rng.uniform(0, 2 * math.pi)),
    )
    v6_share = rng.uniform(0, 0.3)
    sc.roots = [_address(rng, used, rng.random() < v6_share) for _ in range(13)]
    tld_names = rng.sample(TLDS, rng.randint(4, len(TLDS)))
    sc.tlds = [
        (name, [_address(rng, used, rng.random() < v6_share) for _ in range(rng.randint(2, 6))])
        for name in tld_names
    ]
    tld_cum = list(_cumulative([1 / (i + 1) ** 0.8 for i in range(len(sc.tlds))]))
    providers = [
        [_address(rng, used, rng.random() < v6_share) for _ in range(rng.randint(2, 4))]
        for _ in range(rng.randint(3, 15))
    ]
    n_zones = rng.randint(60, 250) if quick else rng.randint(100, 400)
    nx = rng.uniform(0.01, 0.2)
    hosted = rng.uniform(0.3, 0.8)
    for i in range(n_zones):
        tld = bisect.bisect_left(tld_cum, rng.random() * tld_cum[-1])
        own = rng.random() > hosted
        servers = (
            [_address(rng, used, rng.random() < v6_share) for _ in range(rng.randint(1, 4))]
            if own
            else list(rng.choice(providers))
        )
        name = f"{WORDS[i % len(WORDS)]}{i}.{sc.tlds[tld][0]}"
        sc.zones.append(Zone(name, tld, servers, min(0.9, nx * math.exp(rng.gauss(0, 0.8))), own))
    order = list(range(n_zones))
    rng.shuffle(order)
    sc.zones = [sc.zones[i] for i in order]
    sc.zone_weights = list(_cumulative([1 / (i + 1) ** rng.uniform(0.8, 1.1) for i in range(n_zones)]))
    everyone = set(sc.roots) | {s for _, ss in sc.tlds for s in ss} | {s for z in sc.zones for s in z.servers}
    for s in sorted(everyone):
        sc.rtt_ms[s] = math.exp(rng.uniform(math.log(20), math.log(300)))
    base_loss = rng.uniform(0.01, 0.05)
    for s in sorted(everyone):
        sc.loss[s] = min(0.3, base_loss * math.exp(rng.gauss(0, 0.6)))
    # the long tail's broken delegations: dead and lame authorities of zones that have another,
    # and zones whose authorities are all dead
    tail = [z for z in sc.zones[n_zones // 5 :] if z.own]
    rng.shuffle(tail)
    for z in tail[: rng.randint(0, 4)]:
        if len(z.servers) > 1:
            sc.dead.add(rng.choice(z.servers))
    for z in tail[4 : 4 + rng.randint(0, 3)]:
        if len(z.servers) > 1:
            sc.lame.add(rng.choice(z.servers))
    for z in tail[8 : 8 + rng.randint(0, 2)]:
        sc.dead.update(z.servers)
    sc.p_root = rng.uniform(0.002, 0.02)
    sc.p_tld = rng.uniform(0.05, 0.35)
    sc.tc_share = rng.uniform(0.0, 0.03)
    if family == "both":
        n = rng.randint(5, 300)
        sc.clients = sorted(
            {f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}" for _ in range(n)}
        )
        sc.hit = rng.uniform(0.6, 0.95)
        sc.client_qps = qps / (1 - sc.hit)
    return sc


def _draw_host(rng: random.Random, seed: int, quick: bool) -> Scenario:
    duration = rng.uniform(10, 30) * 60 if quick else rng.uniform(30, 180) * 60
    qps = math.exp(rng.uniform(math.log(0.1), math.log(5)))
    clients = ["192.168.1.23"]
    if rng.random() < 0.6:
        clients.append("2001:db8:1:0:8a2e:3ff:fe01:23")
    if rng.random() < 0.3:
        clients.append("192.168.122.1")  # a VM bridge
    resolvers = [rng.choice(("192.168.1.1", "10.0.0.1", "172.16.0.53"))]
    if rng.random() < 0.5:
        resolvers.append(rng.choice(("9.9.9.9", "1.1.1.1", "2001:db8:ffff::53")))
    sc = Scenario(
        seed=seed,
        family="host",
        duration=duration,
        qps=qps,
        drift=(rng.uniform(0, 0.5), duration * rng.uniform(0.3, 1), rng.uniform(0, 2 * math.pi)),
        clients=clients,
        resolvers=resolvers,
        ports=(53, 5353, 5355) if rng.random() < 0.5 else (53,),
    )
    n_zones = rng.randint(20, 120)
    tlds = [(t, []) for t in ("com", "net", "org", "io")]
    sc.tlds = tlds  # type: ignore[assignment]
    nx = rng.uniform(0.01, 0.1)
    sc.zones = [
        Zone(
            f"{WORDS[i % len(WORDS)]}{i}.{tlds[i % 4][0]}",
            i % 4,
            [],
            min(0.5, nx * math.exp(rng.gauss(0, 0.5))),
            True,
        )
        for i in range(n_zones)
    ]
    sc.zone_weights = list(_cumulative([1 / (i + 1) for i in range(n_zones)]))
    for r in resolvers:
        sc.rtt_ms[r] = rng.uniform(1, 8) if r.startswith(("192.168.", "10.", "172.")) else rng.uniform(8, 40)
        sc.loss[r] = rng.uniform(0.0, 0.02)
    return sc


def _cumulative(weights: list[float]) -> list[float]:
    out, total = [], 0.0
    for w in weights:
        total += w
        out.append(total)
    return out


def _shares(sc: Scenario) -> list[float]:
    total = sc.zone_weights[-1]
    return [(b - a) / total for a, b in zip([0.0, *sc.zone_weights], sc.zone_weights, strict=False)]


def _events(rng: random.Random, sc: Scenario) -> list[Event]:
    """1-3 events at random times, sizes and servers; one at a time per server and zone."""
    out: list[Event] = []
    busy: dict[str, list[tuple[float, float]]] = {}
    shares = _shares(sc)
    broken = sc.dead | sc.lame
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(FAMILY_EVENTS[sc.family])
        length = rng.uniform(60, 300) if sc.family != "host" else rng.uniform(120, 600)
        if length > sc.duration - 120:
            continue
        start = rng.uniform(60, sc.duration - length - 30)
        end = start + length
        ev: Event | None = None
        if kind == "authority_dark":
            # a server whose queries (at its usual share of the zones it serves) show the outage
            rate: dict[str, float] = {}
            for z, p in zip(sc.zones, shares, strict=True):
                live = [s for s in z.servers if s not in broken]
                for s in live:
                    rate[s] = rate.get(s, 0.0) + sc.qps * p / len(live)
            fit = sorted(s for s, r in rate.items() if r * length >= 4 * OUTAGE_VISIBLE)
            if fit:
                ev = Event(kind, start, end, (rng.choice(fit),))
        elif kind in ("zone_dark", "zone_refused", "zone_servfail", "dnssec"):
            size = 1.0 if kind == "zone_dark" else rng.uniform(0.5, 1.0)
            rate_of = sc.client_qps if kind == "dnssec" else sc.qps
            need = SURGE_VISIBLE / 60 if kind != "zone_dark" else 2 * OUTAGE_VISIBLE / length
            fit_zones = [
                z
                for z, p in zip(sc.zones, shares, strict=True)
                if z.own and rate_of * p * size >= need and not (set(z.servers) & broken)
            ]
            if fit_zones:
                z = rng.choice(fit_zones[:15])
                rcode = {"zone_refused": "REFUSED", "zone_servfail": "SERVFAIL", "dnssec": "SERVFAIL"}.get(
                    kind
                )
                if kind == "dnssec":
                    ev = Event(kind, start, end, (RESOLVER4,), z.name, rcode, size, cause="dnssec")
                else:
                    ev = Event(kind, start, end, tuple(sorted(z.servers)), z.name, rcode, size)
        elif kind == "tld_slow":
            tld_share: dict[int, float] = {}
            for z, p in zip(sc.zones, shares, strict=True):
                tld_share[z.tld] = tld_share.get(z.tld, 0.0) + p
            fit_tlds = [
                i
                for i, (_, ss) in enumerate(sc.tlds)
                if sc.qps * sc.p_tld * tld_share.get(i, 0) * 60 / len(ss) >= 1.5 * SLOW_VISIBLE
            ]
            if fit_tlds:
                i = rng.choice(fit_tlds)
                ev = Event(
                    kind, start, end, tuple(sorted(sc.tlds[i][1])), sc.tlds[i][0], size=rng.uniform(5, 20)
                )
        elif kind == "resolver_dark":
            r = sc.resolvers[0] if rng.random() < 0.8 else rng.choice(sc.resolvers)  # mostly the first
            ev = Event(kind, start, end, (r,))
        elif kind == "resolver_refuse":
            r = sc.resolvers[0] if rng.random() < 0.8 else rng.choice(sc.resolvers)
            ev = Event(kind, start, end, (r,), None, "REFUSED", rng.uniform(0.5, 1.0))
        if ev is None:
            continue
        take(ev, out, busy)  # (scenarios.take: one event at a time per server and zone)
    return out


# -- packets --------------------------------------------------------------------------------------

_ETH = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02"
_MCAST_ETH = {"224.0.0.251": b"\x01\x00\x5e\x00\x00\xfb", "224.0.0.252": b"\x01\x00\x5e\x00\x00\xfc"}


def _qname(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            raw = label.encode()
            out += bytes([len(raw)]) + raw
    return out + b"\x00"


def _message(
    ident: int,
    name: str,
    qtype: int,
    *,
    response: bool,
    rcode: int = NOERROR,
    rd: bool = True,
    aa: bool = False,
    ra: bool = False,
    tc: bool = False,
    edns: bool = True,
    ede: int | None = None,
    answers: int | None = None,
) -> bytes:
    q = _qname(name) + struct.pack("!HH", qtype, 1)
    flags = (0x8000 if response else 0) | (0x0400 if aa else 0) | (0x0200 if tc else 0)
    flags |= (0x0100 if rd else 0) | (0x0080 if ra else 0) | rcode
    options = struct.pack("!HHH", 15, 2, ede) if ede is not None else b""
    opt = b"\x00" + struct.pack("!HHIH", 41, 1232, 0x8000, len(options)) + options if edns else b""
    if not response:
        return struct.pack("!6H", ident, flags, 1, 0, 0, 1 if edns else 0) + q + opt
    n = (1 if rcode == NOERROR and qtype in (A, AAAA) and not tc else 0) if answers is None else answers
    body = struct.pack("!6H", ident, flags, 1, n, 0, 1 if edns else 0) + q
    for k in range(n):
        if qtype == AAAA:
            body += b"\xc0\x0c" + struct.pack("!HHIH", AAAA, 1, 300, 16) + bytes(15) + bytes([k + 1])
        else:
            body += (
                b"\xc0\x0c" + struct.pack("!HHIH", A, 1, 300, 4) + bytes([192, 0, 2, (ident + k) % 250 + 1])
            )
    return body + opt


class _Writer:
    """Frames as they are drawn (not in time order): (time, frame) pairs, sorted when written."""

    def __init__(self) -> None:
        self.records: list[tuple[float, int, bytes]] = []
        self.addr: dict[str, tuple[int, bytes]] = {}

    def _a(self, text: str) -> tuple[int, bytes]:
        got = self.addr.get(text)
        if got is None:
            ip = ipaddress.ip_address(text)
            got = self.addr[text] = (ip.version, ip.packed)
        return got

    def _ip(self, t: float, src: str, dst: str, proto: int, l4: bytes) -> None:
        (v, s), (_, d) = self._a(src), self._a(dst)
        dmac = _MCAST_ETH.get(dst, b"\x33\x33\x00\x00\x00\xfb" if dst.startswith("ff02") else _ETH[:6])
        if v == 4:
            head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0x4000, 64, proto, 0, s, d)
            head = head[:10] + struct.pack("!H", checksum(head)) + head[12:]
            frame = dmac + _ETH[6:] + b"\x08\x00" + head + l4
        else:
            frame = (
                dmac
                + _ETH[6:]
                + b"\x86\xdd"
                + struct.pack("!IHBB16s16s", 0x60000000, len(l4), proto, 64, s, d)
                + l4
            )
        self.records.append((t, len(self.records), frame))

    def udp(self, t: float, src: str, dst: str, sport: int, dport: int, payload: bytes) -> None:
        self._ip(t, src, dst, 17, struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload)

    def tcp(
        self, t: float, client: str, server: str, port: int, query: bytes, answer: bytes, rtt: float
    ) -> None:
        """A whole DNS-over-TCP exchange: handshake, the query, the answer, teardown."""
        cs, ss = 1000, 5000

        def seg(at: float, up: bool, seq: int, ack: int, flags: int, data: bytes = b"") -> None:
            src, dst = (client, server) if up else (server, client)
            sp, dp = (port, 53) if up else (53, port)
            hdr = struct.pack("!HHIIBBHHH", sp, dp, seq, ack, 5 << 4, flags, 65535, 0, 0)
            self._ip(at, src, dst, 6, hdr + data)

        q = struct.pack("!H", len(query)) + query
        a = struct.pack("!H", len(answer)) + answer
        seg(t, True, cs, 0, 0x02)
        seg(t + rtt, False, ss, cs + 1, 0x12)
        seg(t + rtt + 0.0001, True, cs + 1, ss + 1, 0x10)
        seg(t + rtt + 0.0002, True, cs + 1, ss + 1, 0x18, q)
        seg(t + 2 * rtt, False, ss + 1, cs + 1 + len(q), 0x18, a)
        seg(t + 2 * rtt + 0.0001, True, cs + 1 + len(q), ss + 1 + len(a), 0x11)
        seg(t + 3 * rtt, False, ss + 1 + len(a), cs + 2 + len(q), 0x11)
        seg(t + 3 * rtt + 0.0001, True, cs + 2 + len(q), ss + 2 + len(a), 0x10)


def pcap_bytes(sc: Scenario) -> bytes:
    import io

    out = io.BytesIO()
    write_pcap(sc, out)
    return out.getvalue()


def write_pcap(sc: Scenario, out: BinaryIO) -> None:
    """Write the capture as a classic pcap to ``out``, records in time order."""
    w = _Writer()
    if sc.family == "host":
        _Host(sc, w).run()
    else:
        _Resolver(sc, w).run()
    out.write(PCAP_HEADER)
    chunk = bytearray()
    for t, _, frame in sorted(w.records):
        if t < 0 or t > sc.duration + 30:
            continue
        us = int(round((T0 + t) * 1_000_000))
        chunk += REC.pack(us // 1_000_000, us % 1_000_000, len(frame), len(frame)) + frame
        if len(chunk) >= 1 << 20:
            out.write(chunk)
            chunk.clear()
    out.write(chunk)


def _active(
    sc: Scenario, kind: str | tuple[str, ...], t: float, *, server: str | None = None, zone: str | None = None
) -> tuple[int, Event] | None:
    for i, e in enumerate(sc.events):
        if e.kind in ((kind,) if isinstance(kind, str) else kind) and e.start <= t < e.end:
            if server is not None and server not in e.servers:
                continue
            if zone is not None and e.zone != zone:
                continue
            return i, e
    return None


class _Resolver:
    """A recursive resolver's cache misses, walked through the delegation (upstream, both)."""

    def __init__(self, sc: Scenario, w: _Writer) -> None:
        self.sc, self.w = sc, w
        self.rng = random.Random(f"packets-{sc.family}-{sc.seed}")
        self.penalty: dict[str, float] = {}  # per server: 1 healthy, down to 0.03 after timeouts
        self.counts: dict[int, float] = {}

    def note(self, i: int, k: float = 1.0) -> None:
        self.counts[i] = self.counts.get(i, 0.0) + k

    def pick(self, servers: list[str], tried: set[str]) -> str:
        rest = [s for s in servers if s not in tried] or servers
        weights = [self.penalty.get(s, 1.0) / self.sc.rtt_ms[s] for s in rest]
        return self.rng.choices(rest, weights)[0]

    def ask(
        self, t: float, servers: list[str], name: str, qtype: int, zone: Zone | None
    ) -> tuple[float, int | None, list[str]]:
        """Ask ``servers`` (another after each failure, up to 3 tries): when it ended, the rcode
        (None: every try failed) and the servers that failed."""
        sc, rng = self.sc, self.rng
        tried: set[str] = set()
        failed: list[str] = []
        for _ in range(min(3, len(servers) + 1)):
            s = self.pick(servers, tried)
            tried.add(s)
            src = RESOLVER6 if ":" in s else RESOLVER4
            ident, port = rng.getrandbits(16), rng.randint(1024, 65535)
            query = _message(ident, name, qtype, response=False, rd=False)
            self.w.udp(t, src, s, port, 53, query)
            rtt = sc.rtt_ms[s] * math.exp(rng.gauss(0, 0.25)) / 1000
            slow = _active(sc, "tld_slow", t, server=s)
            if slow is not None:
                rtt = min(rtt * slow[1].size, 2.5)
                self.note(slow[0])
            dark = _active(sc, ("authority_dark", "zone_dark"), t, server=s)
            if dark is not None:
                self.note(dark[0])
            if s in sc.dead or dark is not None or rng.random() < sc.loss[s]:
                timeout = min(1.5, max(0.4, 3 * sc.rtt_ms[s] / 1000 + 0.1)) * rng.uniform(0.9, 1.2)
                self.penalty[s] = max(0.03, self.penalty.get(s, 1.0) * 0.4)
                failed.append(s)
                t += timeout
                continue
            self.penalty[s] = min(1.0, self.penalty.get(s, 1.0) * 2)
            sc.first_answer.setdefault(s, t + rtt)
            rcode = NOERROR
            broke = _active(
                sc, ("zone_refused", "zone_servfail"), t, server=s, zone=zone.name if zone else None
            )
            if s in sc.lame:
                rcode = REFUSED
            elif broke is not None and rng.random() < broke[1].size:
                rcode = REFUSED if broke[1].kind == "zone_refused" else SERVFAIL
                self.note(broke[0])
            elif zone is not None and rng.random() < zone.nx:
                rcode = NXDOMAIN
            tc = rcode == NOERROR and qtype in (TXT, DNSKEY, MX) and rng.random() < 10 * sc.tc_share
            answer = _message(
                ident, name, qtype, response=True, rcode=rcode, rd=False, aa=zone is not None, tc=tc
            )
            self.w.udp(t + rtt, s, src, 53, port, answer)
            t += rtt
            if rcode in (REFUSED, SERVFAIL):
                failed.append(s)
                continue
            if tc:
                full = _message(ident, name, qtype, response=True, rd=False, aa=True, answers=0)
                self.w.tcp(t + 0.0005, src, s, rng.randint(1024, 65535), query, full, rtt)
                t += 3 * rtt
            return t, rcode, failed
        return t, None, failed

    def resolve(self, t: float, zone: Zone, name: str, qtype: int) -> tuple[float, int | None, list[str]]:
        sc, rng = self.sc, self.rng
        tld_label, tld_servers = sc.tlds[zone.tld]
        if rng.random() < sc.p_root:
            t, rc, failed = self.ask(t, sc.roots, tld_label + ".", NS, None)
            if rc is None:
                return t, None, failed
        if rng.random() < sc.p_tld:
            t, rc, failed = self.ask(t, tld_servers, zone.name, NS, None)
            if rc is None:
                return t, None, failed
        return self.ask(t, zone.servers, name, qtype, zone)

    def run(self) -> None:
        sc, rng = self.sc, self.rng
        amp, period, phase = sc.drift
        both = sc.family == "both"
        rate = (sc.client_qps if both else sc.qps) * (1 + amp)
        t = 0.0
        ident = 0
        qtypes = (A, A, A, AAAA, AAAA, MX, TXT, DS, DNSKEY)
        while True:
            t += rng.expovariate(rate)
            if t >= sc.duration:
                break
            if rng.random() > (1 + amp * math.sin(2 * math.pi * t / period + phase)) / (1 + amp):
                continue
            zi = bisect.bisect_left(sc.zone_weights, rng.random() * sc.zone_weights[-1])
            zone = sc.zones[min(zi, len(sc.zones) - 1)]
            qtype = rng.choice(qtypes) if not both else rng.choice(qtypes[:6])
            name = f"h{rng.randint(0, 60)}.{zone.name}" if rng.random() > 0.1 else zone.name
            bogus = _active(sc, "dnssec", t, zone=zone.name)
            if not both:
                self.resolve(t, zone, name, qtype)
                continue
            client = rng.choice(sc.clients)
            ident = (ident + 1) & 0xFFFF
            port = rng.randint(1024, 65535)
            self.w.udp(t, client, RESOLVER4, port, 53, _message(ident, name, qtype, response=False))
            ede = None
            if rng.random() < sc.hit:  # from the cache
                done = t + rng.uniform(0.0001, 0.002)
                rcode = NXDOMAIN if rng.random() < zone.nx else NOERROR
                if bogus is not None and rng.random() < bogus[1].size:
                    rcode, ede = SERVFAIL, EDE_DNSSEC_BOGUS  # the bogus answer is cached too
                    self.note(bogus[0])
            else:
                done, rc, failed = self.resolve(t + 0.0002, zone, name, qtype)
                done += 0.0002
                rcode = SERVFAIL if rc is None else NXDOMAIN if rc == NXDOMAIN else NOERROR
                if rc is None:
                    dark = _active(sc, "zone_dark", t, zone=zone.name)
                    if dark is not None:
                        self.note(-1 - dark[0])  # the client SERVFAILs it caused
                elif bogus is not None and rng.random() < bogus[1].size:
                    rcode, ede = SERVFAIL, EDE_DNSSEC_BOGUS
                    self.note(bogus[0])
            answer = _message(ident, name, qtype, response=True, rcode=rcode, ra=True, ede=ede)
            self.w.udp(done, RESOLVER4, client, 53, port, answer)
        for i, n in self.counts.items():
            sc.seen[i] = n


class _Host:
    """One client host: sessions of activity and idle gaps, bursts, mDNS and LLMNR."""

    def __init__(self, sc: Scenario, w: _Writer) -> None:
        self.sc, self.w = sc, w
        self.rng = random.Random(f"packets-host-{sc.seed}")

    def exchange(self, t: float, client: str, name: str, qtype: int, zone: Zone | None) -> None:
        sc, rng = self.sc, self.rng
        v6 = ":" in client
        resolvers = [r for r in sc.resolvers if (":" in r) == v6] or [sc.resolvers[0]]
        if v6 and not any(":" in r for r in sc.resolvers):
            client = sc.clients[0]  # the host asks over IPv4 when it knows no IPv6 resolver
        for attempt in range(4):
            r = resolvers[attempt % len(resolvers)] if len(resolvers) > 1 else resolvers[0]
            ident, port = rng.getrandbits(16), rng.randint(32768, 60999)
            self.w.udp(
                t, client, r, port, 53, _message(ident, name, qtype, response=False, edns=rng.random() < 0.5)
            )
            dark = _active(sc, "resolver_dark", t, server=r)
            if dark is not None:
                sc.seen[sc.events.index(dark[1])] = sc.seen.get(sc.events.index(dark[1]), 0) + 1
            if dark is not None or rng.random() < sc.loss[r]:
                t += (1.0, 1.0, 2.0, 4.0)[attempt] * rng.uniform(0.95, 1.05)  # the stub's timeouts
                continue
            rcode = NXDOMAIN if zone is None or rng.random() < zone.nx else NOERROR
            refuse = _active(sc, "resolver_refuse", t, server=r)
            if refuse is not None and rng.random() < refuse[1].size:
                rcode = REFUSED
                i = sc.events.index(refuse[1])
                sc.seen[i] = sc.seen.get(i, 0) + 1
            rtt = sc.rtt_ms[r] * math.exp(rng.gauss(0, 0.6)) / 1000
            if rng.random() < 0.1:
                rtt *= rng.uniform(5, 30)  # a cache miss at the resolver
            sc.first_answer.setdefault(r, t + rtt)
            self.w.udp(
                t + rtt,
                r,
                client,
                53,
                port,
                _message(ident, name, qtype, response=True, rcode=rcode, ra=True),
            )
            return

    def multicast(self, t: float) -> None:
        sc, rng = self.sc, self.rng
        host = sc.clients[0]
        kind = rng.random()
        if kind < 0.6:  # mDNS: a service browse, answered by a few devices on the LAN
            group = "ff02::fb" if rng.random() < 0.3 else "224.0.0.251"
            src = "fe80::1c2b:3aff:fe4d:5e6f" if ":" in group else host
            svc = rng.choice(
                (
                    "_airplay._tcp.local",
                    "_googlecast._tcp.local",
                    "_spotify-connect._tcp.local",
                    "_ipp._tcp.local",
                )
            )
            self.w.udp(t, src, group, 5353, 5353, _message(0, svc, 12, response=False, rd=False, edns=False))
            for _ in range(rng.randint(0, 3)):
                dev = (
                    f"fe80::{rng.randint(1, 0xFFFF):x}"
                    if ":" in group
                    else f"192.168.1.{rng.randint(2, 250)}"
                )
                self.w.udp(
                    t + rng.uniform(0.02, 0.12),
                    dev,
                    group,
                    5353,
                    5353,
                    _message(0, svc, 12, response=True, rd=False, aa=True, edns=False, answers=0),
                )
        else:  # LLMNR: a single-label name nobody holds
            name = rng.choice(("wpad", "printer", "nas", "desktop-4f2a", "isatap"))
            port = rng.randint(49152, 65535)
            ident = rng.getrandbits(16)
            for k in range(2):
                self.w.udp(
                    t + 0.1 * k,
                    host,
                    "224.0.0.252",
                    port,
                    5355,
                    _message(ident, name, A, response=False, rd=False, edns=False),
                )

    def run(self) -> None:
        sc, rng = self.sc, self.rng
        amp, period, phase = sc.drift
        t = 0.0
        while t < sc.duration:
            # a session of activity, then an idle gap (a few queries from background tasks only)
            active = rng.expovariate(1 / rng.uniform(60, 600))
            idle = rng.expovariate(1 / rng.uniform(30, 400))
            session_end = min(sc.duration, t + active)
            while True:
                level = (1 + amp * math.sin(2 * math.pi * t / period + phase)) / (1 + amp)
                t += rng.expovariate(sc.qps * (1 + amp) / 2) / max(level, 0.05)
                if t >= session_end:
                    break
                self.event(t)
            t = session_end
            gap_end = min(sc.duration, t + idle)
            while True:
                t += rng.expovariate(sc.qps * 0.05 + 1 / 120)
                if t >= gap_end:
                    break
                self.event(t)
            t = gap_end
        m = 0.0
        while True:
            m += rng.expovariate(1 / rng.uniform(5, 60))
            if m >= sc.duration:
                break
            self.multicast(m)

    def event(self, t: float) -> None:
        """What one application does: A and AAAA for a name, now and then again and again (apps
        that ask the same question at once), now and then through the search list first."""
        sc, rng = self.sc, self.rng
        zi = bisect.bisect_left(sc.zone_weights, rng.random() * sc.zone_weights[-1])
        zone = sc.zones[min(zi, len(sc.zones) - 1)]
        name = f"{rng.choice(APPS)}.{zone.name}"
        client = rng.choice(sc.clients)
        repeats = 1 if rng.random() > 0.15 else rng.randint(2, 12)
        for k in range(repeats):
            at = t + k * rng.uniform(0.0, 0.05)
            if rng.random() < 0.05 and k == 0:  # the search list: a NXDOMAIN first
                self.exchange(
                    at, client, f"{name}.{rng.choice(('home.arpa', 'lan', 'corp.example.com'))}", A, None
                )
                at += 0.01
            self.exchange(at, client, name, A, zone)
            if rng.random() < 0.8:
                self.exchange(at + 0.0003, client, name, AAAA, zone)


def visible(sc: Scenario, i: int) -> bool:
    """Whether event ``i`` left enough in the capture to be told from chance (after
    :func:`write_pcap` drew the packets: it counts them)."""
    e = sc.events[i]
    n = sc.seen.get(i, 0.0)
    minutes = (e.end - e.start) / 60
    if e.kind in ("authority_dark", "zone_dark", "resolver_dark"):
        # an outage shows as one when the capture saw the servers answer before it (else they
        # are servers that never answered, for all the capture can tell)
        before = any(sc.first_answer.get(s, math.inf) < e.start for s in e.servers)
        return n >= OUTAGE_VISIBLE and before
    if e.kind == "tld_slow":
        return n / minutes / len(e.servers) >= SLOW_VISIBLE
    return n / minutes >= SURGE_VISIBLE


def truth(sc: Scenario) -> list[dict[str, object]]:
    """The events as the findings that should name them (times in seconds from the start); in
    the ``both`` family a dark zone is also a ``dark_cause`` event (the clients' SERVFAILs)."""
    out: list[dict[str, object]] = []
    for i, e in enumerate(sc.events):
        row: dict[str, object] = {
            "event": e.kind,
            "kind": e.finding,
            "start": e.start,
            "end": e.end,
            "servers": list(e.servers),
            "zone": e.zone if e.kind in ("zone_dark", "zone_refused", "zone_servfail", "dnssec") else None,
            "rcode": e.rcode,
            "size": e.size,
            "clients": [],
            "cause": e.cause,
            "upstreams": list(e.upstreams),
            "visible": visible(sc, i),
            # servers whose findings the event also explains: the resolver, whose clients it hurt
            "related": [RESOLVER4, RESOLVER6] if sc.family == "both" else [],
        }
        out.append(row)
        if sc.family == "both" and e.kind == "zone_dark":
            dark = dict(row)
            dark.update(
                event="dark_cause",
                kind="servfail_cause",
                servers=[RESOLVER4],
                rcode="SERVFAIL",
                cause="upstream",
                upstreams=list(e.servers),
                visible=sc.seen.get(-1 - i, 0.0) / ((e.end - e.start) / 60) >= SURGE_VISIBLE / 2,
                related=list(e.servers),
            )
            out.append(dark)
    return out


def background(sc: Scenario) -> dict[str, list[str]]:
    """What is broken for the whole capture: servers that never answer, servers that answer
    REFUSED (lame), zones whose every authority is dead, servers that lose far more queries than
    most (``lossy``)."""
    dead_zones = [z.name for z in sc.zones if z.servers and set(z.servers) <= sc.dead]
    # the servers that lose far more than most (the tail of the servers' loss): at least 8 % and
    # twice the median server's
    usual = sorted(sc.loss.values())[len(sc.loss) // 2] if sc.loss else 0.0
    lossy = sorted(s for s, p in sc.loss.items() if p >= max(0.08, 2 * usual) and s not in sc.dead)
    return {"dead": sorted(sc.dead), "lame": sorted(sc.lame), "dead_zones": dead_zones, "lossy": lossy}


__all__ = [
    "EVENT_KINDS",
    "FAMILIES",
    "FAMILY_EVENTS",
    "T0",
    "Event",
    "Scenario",
    "background",
    "draw",
    "pcap_bytes",
    "truth",
    "visible",
    "write_pcap",
]
