#!/usr/bin/env python3
"""Build the scenario captures in ``samples/`` and the figures each was built with.

    python samples/build.py              # (re)write samples/*.pcap[ng] and samples/expected/*.json
    python samples/build.py --out DIR    # the same into DIR (DIR/expected/ for the JSON)

Every byte is made here with :mod:`struct` from a fixed-seed :class:`random.Random`; nothing reads
the clock, so two runs write identical files.  The expected figures are *not* measured on the
output: each scenario records, as it generates packets, what every DNS message is (query,
retransmission, response, duplicate, orphan; its QTYPE, RCODE and malformations) and which
transaction it belongs to.  :class:`Ledger` then adds these up under the pairing rules of the
``pcapdns analyze --json`` contract, and *checks* that the rules agree with what the scenario meant
(a query meant as a retransmission must arrive while its transaction is outstanding, a response
meant to answer must arrive before the timeout, two transactions must never share a flow and ID
while either is live ...), so a scenario cannot silently count something the rules would not.

See ``samples/README.md`` for what each capture holds.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import struct
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

US = 1_000
MS = 1_000_000
NS = 1_000_000_000
TIMEOUT_NS = 5 * NS  # pcapdns analyze --timeout default

TYPE = {
    "A": 1,
    "NS": 2,
    "CNAME": 5,
    "SOA": 6,
    "PTR": 12,
    "MX": 15,
    "TXT": 16,
    "AAAA": 28,
    "SRV": 33,
    "OPT": 41,
    "DS": 43,
    "DNSKEY": 48,
    "HTTPS": 65,
}
TYPE_NAME = {v: k for k, v in TYPE.items()}
RCODE_NAME = {
    0: "NOERROR",
    1: "FORMERR",
    2: "SERVFAIL",
    3: "NXDOMAIN",
    4: "NOTIMP",
    5: "REFUSED",
    16: "BADVERS",
}
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, BADVERS = 0, 1, 2, 3, 16
EDE_OPTION = 15  # RFC 8914 Extended DNS Error
EDE_NO_REACHABLE_AUTHORITY = 22

# Header flag bits (second 16 bits of the header).
QR, AA, TC, RD, RA = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080
# TCP flags
FIN, SYN, PSH, ACK = 0x01, 0x02, 0x08, 0x10

ETH_IPV4, ETH_IPV6, ETH_ARP, ETH_VLAN = 0x0800, 0x86DD, 0x0806, 0x8100
LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL = 1, 113


def ts_of(iso: str) -> int:
    """Nanoseconds since the epoch of an ISO time written like ``2024-03-01T10:00:00Z``."""
    return int(datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()) * NS


def iso(ts_ns: int) -> str:
    """ISO 8601 UTC with microseconds (the ``time_span`` format of the --json contract)."""
    seconds, rest = divmod(ts_ns, NS)
    stamp = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{rest // US:06d}Z"


def ip(addr: str) -> bytes:
    return ipaddress.ip_address(addr).packed


def mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


# ================================================================================================
# DNS messages
# ================================================================================================


class Plain(str):
    """A domain name written in full even where a compression pointer could be used."""


class Msg:
    """A DNS message written section by section, with name compression (RFC 1035 4.1.4)."""

    def __init__(self, ident: int, flags: int) -> None:
        self.ident = ident
        self.flags = flags
        self.body = bytearray()
        self.counts = [0, 0, 0, 0]
        self._section = 0
        self._suffixes: dict[str, int] = {}

    def _name(self, name: str, compress: bool = True) -> None:
        labels = [] if name in ("", ".") else name.rstrip(".").split(".")
        for i in range(len(labels)):
            suffix = ".".join(labels[i:]).lower()
            if compress and suffix in self._suffixes:
                self.body += struct.pack("!H", 0xC000 | self._suffixes[suffix])
                return
            pos = 12 + len(self.body)
            if pos < 0x3FFF:
                self._suffixes.setdefault(suffix, pos)
            raw = labels[i].encode("ascii")
            assert 0 < len(raw) <= 63, name
            self.body.append(len(raw))
            self.body += raw
        self.body.append(0)

    def _enter(self, section: int) -> None:
        assert section >= self._section, "sections are written in order"
        self._section = section

    def question(self, name: str, qtype: int, qclass: int = 1) -> Msg:
        self._enter(0)
        self._name(name)
        self.body += struct.pack("!HH", qtype, qclass)
        self.counts[0] += 1
        return self

    def rr(self, section: int, name: str, rtype: int, ttl: int, *rdata: bytes | str, rclass: int = 1) -> Msg:
        """A resource record; ``rdata`` parts are raw bytes or names (``Plain`` names uncompressed)."""
        self._enter(section)
        self._name(name)
        self.body += struct.pack("!HHIH", rtype, rclass, ttl, 0)
        start = len(self.body)
        for part in rdata:
            if isinstance(part, Plain):
                self._name(part, compress=False)
            elif isinstance(part, str):
                self._name(part)
            else:
                self.body += part
        struct.pack_into("!H", self.body, start - 2, len(self.body) - start)
        self.counts[section] += 1
        return self

    def opt(
        self, udp: int = 1232, ext_rcode: int = 0, version: int = 0, do: bool = False, options: bytes = b""
    ) -> Msg:
        self._enter(3)
        self.body += (
            b"\x00"
            + struct.pack("!HHBBHH", TYPE["OPT"], udp, ext_rcode, version, 0x8000 if do else 0, len(options))
            + options
        )
        self.counts[3] += 1
        return self

    def wire(self) -> bytes:
        return struct.pack("!6H", self.ident, self.flags, *self.counts) + bytes(self.body)


def ede(info_code: int, text: str = "") -> bytes:
    data = struct.pack("!H", info_code) + text.encode()
    return struct.pack("!HH", EDE_OPTION, len(data)) + data


def txt_rdata(*strings: str) -> bytes:
    out = bytearray()
    for s in strings:
        raw = s.encode()
        assert len(raw) < 256
        out.append(len(raw))
        out += raw
    return bytes(out)


def soa_rdata(zone: str) -> tuple[str, str, bytes]:
    return f"ns1.{zone}", f"hostmaster.{zone}", struct.pack("!5I", 2024030101, 7200, 3600, 1209600, 300)


HTTPS_RDATA = (struct.pack("!H", 1), Plain("."), struct.pack("!HH", 1, 6) + txt_rdata("h2", "h3"))


# ================================================================================================
# Packets
# ================================================================================================


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return int(~s & 0xFFFF)


def _l4_checksum(src: bytes, dst: bytes, proto: int, segment: bytes) -> int:
    if len(src) == 4:
        pseudo = src + dst + struct.pack("!BBH", 0, proto, len(segment))
    else:
        pseudo = src + dst + struct.pack("!I3xB", len(segment), proto)
    return checksum(pseudo + segment)


def udp(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    seg = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    c = _l4_checksum(src, dst, 17, seg) or 0xFFFF
    return seg[:6] + struct.pack("!H", c) + seg[8:]


def tcp(
    src: bytes,
    dst: bytes,
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int,
    payload: bytes = b"",
    window: int = 64240,
    options: bytes = b"",
) -> bytes:
    assert len(options) % 4 == 0
    hdr = (
        struct.pack(
            "!HHIIBBHHH",
            sport,
            dport,
            seq & 0xFFFFFFFF,
            ack & 0xFFFFFFFF,
            (20 + len(options)) // 4 << 4,
            flags,
            window,
            0,
            0,
        )
        + options
    )
    seg = hdr + payload
    c = _l4_checksum(src, dst, 6, seg)
    return seg[:16] + struct.pack("!H", c) + seg[18:]


def ip_packet(
    src: bytes, dst: bytes, proto: int, l4: bytes, ident: int = 0, ttl: int = 64
) -> tuple[int, bytes]:
    """(ethertype, packet): IPv4 (DF set) or IPv6 depending on the address length."""
    if len(src) == 4:
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), ident, 0x4000, ttl, proto, 0, src, dst)
        hdr = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
        return ETH_IPV4, hdr + l4
    return ETH_IPV6, struct.pack("!IHBB16s16s", 0x60000000, len(l4), proto, ttl, src, dst) + l4


def ether(
    src: bytes, dst: bytes, ethertype: int, payload: bytes, *, vlan: int | None = None, pad: bool = False
) -> bytes:
    """An Ethernet II frame (no FCS).  ``pad``: frames a NIC received are padded to 60 octets."""
    tag = struct.pack("!HH", ETH_VLAN, vlan) if vlan is not None else b""
    frame = dst + src + tag + struct.pack("!H", ethertype) + payload
    if pad and len(frame) < 60:
        frame += b"\x00" * (60 - len(frame))
    return frame


def sll(pkttype: int, addr: bytes, proto: int, payload: bytes) -> bytes:
    """Linux cooked capture v1: packet type (0 to us, 4 outgoing), ARPHRD_ETHER, 6-octet address."""
    return struct.pack("!HHH8sH", pkttype, 1, len(addr), addr.ljust(8, b"\x00"), proto) + payload


# ================================================================================================
# The ledger: what was sent, and what it adds up to
# ================================================================================================


@dataclass(eq=False)
class Txn:
    """One DNS transaction as the scenario means it (transport, flow, ID and question)."""

    transport: str  # "udp" / "tcp"
    client: str
    cport: int
    server: str
    sport: int
    dns_id: int
    qname: str | None  # None: the query has no (parsable) question
    qtype: int | None
    kind: str = ""  # free text for the scenario ("client", "upstream", ...)
    zone: str = ""
    # filled in by Ledger.settle()
    status: str = ""  # answered / timeout / capture_ended / "" (no query seen)
    query_frames: list[int] = field(default_factory=list)
    response_frame: int | None = None
    first_ns: int | None = None
    rtt_ns: int | None = None

    def flow(self) -> tuple[Any, ...]:
        return (self.transport, self.client, self.cport, self.server, self.sport, self.dns_id)


@dataclass(eq=False)
class M:
    """One DNS message on the wire, with the role the scenario built it for."""

    role: str  # query | retransmission | response | duplicate_response | orphan_response
    txn: Txn
    rcode: int | None = None  # full RCODE, responses only
    reasons: tuple[str, ...] = ()  # wire-format malformations
    count_qtype: bool = True  # False: the query's first question cannot be read

    @property
    def qr(self) -> bool:
        return self.role not in ("query", "retransmission")


@dataclass(eq=False)
class Event:
    ts: int  # ns since the epoch
    frame: bytes
    iface: int = 0
    msgs: tuple[M, ...] = ()
    tags: tuple[str, ...] = ()
    issues: tuple[str, ...] = ()  # decode issues (below DNS)
    block: str = "packet"  # "packet" or "isb" (pcapng interface statistics, not a frame)
    isb: tuple[int, int, int, int] | None = None  # (ifrecv, ifdrop, start_ns, end_ns)
    seq: int = 0
    number: int = 0  # 1-based frame number, set by Ledger


class Ledger:
    """Events of one capture, and the ``--json`` figures they were built to produce."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.txns: list[Txn] = []

    def txn(self, *args: Any, **kw: Any) -> Txn:
        t = Txn(*args, **kw)
        self.txns.append(t)
        return t

    def add(
        self,
        ts: int,
        frame: bytes,
        *msgs: M,
        iface: int = 0,
        tags: Iterable[str] = (),
        issues: Iterable[str] = (),
    ) -> Event:
        ev = Event(ts, frame, iface, tuple(msgs), tuple(tags), tuple(issues), seq=len(self.events))
        self.events.append(ev)
        return ev

    def add_isb(self, ts: int, iface: int, ifrecv: int, ifdrop: int, start: int, end: int) -> None:
        self.events.append(
            Event(ts, b"", iface, block="isb", isb=(ifrecv, ifdrop, start, end), seq=len(self.events))
        )

    # ------------------------------------------------------------------------------------------
    def settle(self, end_ns: int | None = None) -> None:
        """Order events by time, drop those after ``end_ns`` (capture stopped), number the frames
        and decide every transaction's fate under the pairing rules, checking them against the
        roles the scenario gave its messages."""
        self.events.sort(key=lambda e: (e.ts, e.seq))
        if end_ns is not None:
            self.events = [e for e in self.events if e.ts <= end_ns]
        n = 0
        for e in self.events:
            if e.block == "packet":
                n += 1
                e.number = n
        packets = self.packets()
        self.last_ns = packets[-1].ts
        seen: dict[Txn, list[tuple[int, int, M]]] = defaultdict(list)
        for e in packets:
            for m in e.msgs:
                seen[m.txn].append((e.ts, e.number, m))
        for t in self.txns:
            t.status, t.query_frames, t.response_frame, t.first_ns, t.rtt_ns = "", [], None, None, None
            last_send = answered_at = None
            for ts, frame, m in seen.get(t, []):
                if not m.qr:
                    if t.first_ns is None:
                        role = "query"
                        t.first_ns = ts
                    elif answered_at is None and ts <= last_send + TIMEOUT_NS:  # type: ignore[operator]
                        role = "retransmission"
                    else:
                        raise AssertionError(f"frame {frame}: a query that the rules make a new transaction")
                    last_send = ts
                    t.query_frames.append(frame)
                elif t.first_ns is None:
                    role = "orphan_response"
                elif answered_at is None:
                    role = "response" if ts <= last_send + TIMEOUT_NS else "orphan_response"  # type: ignore[operator]
                    if role == "response":
                        answered_at = ts
                        t.response_frame = frame
                        t.rtt_ns = ts - t.first_ns
                else:
                    role = "duplicate_response" if ts - answered_at <= TIMEOUT_NS else "orphan_response"
                if role != m.role:
                    raise AssertionError(
                        f"frame {frame}: built as {m.role}, the pairing rules make it {role}"
                    )
            if t.first_ns is None:
                t.status = ""
            elif answered_at is not None:
                t.status = "answered"
            else:
                assert last_send is not None
                t.status = "capture_ended" if last_send + TIMEOUT_NS > self.last_ns else "timeout"
        self._check_flows(seen)

    def _check_flows(self, seen: dict[Txn, list[tuple[int, int, M]]]) -> None:
        """Two transactions on one flow with one ID must never be live at the same time, or a
        response could be paired with the other one (it would not be what the scenario means)."""
        spans: dict[tuple[Any, ...], list[tuple[int, int, Txn]]] = defaultdict(list)
        for t, msgs in seen.items():
            start = msgs[0][0]
            stop = msgs[-1][0] + TIMEOUT_NS
            spans[t.flow()].append((start, stop, t))
        for flow, items in spans.items():
            items.sort(key=lambda x: x[0])
            for (_, stop, _a), (start, _, _b) in zip(items, items[1:], strict=False):
                if start <= stop:
                    raise AssertionError(f"flow {flow}: transactions overlap")

    def packets(self) -> list[Event]:
        return [e for e in self.events if e.block == "packet"]

    def frames_tagged(self, tag: str) -> list[int]:
        return [e.number for e in self.packets() if tag in e.tags]

    # ------------------------------------------------------------------------------------------
    def figures(self) -> dict[str, Any]:
        """The ``pcapdns analyze --json`` summary this capture was built to produce."""
        packets = self.packets()
        roles: Counter[str] = Counter()
        rcodes: Counter[str] = Counter()
        qtypes: Counter[str] = Counter()
        transports: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        issues: Counter[str] = Counter()
        queries = responses = malformed = 0
        for e in packets:
            issues.update(e.issues)
            for m in e.msgs:
                roles[m.role] += 1
                transports[m.txn.transport] += 1
                if m.reasons:
                    malformed += 1
                    reasons.update(set(m.reasons))
                if m.qr:
                    responses += 1
                    assert m.rcode is not None
                    rcodes[RCODE_NAME.get(m.rcode, f"RCODE{m.rcode}")] += 1
                else:
                    queries += 1
                    if m.count_qtype and m.txn.qtype is not None:
                        qtypes[TYPE_NAME.get(m.txn.qtype, f"TYPE{m.txn.qtype}")] += 1
        status = Counter(t.status for t in self.txns if t.status)
        rtts = sorted(t.rtt_ns for t in self.txns if t.rtt_ns is not None)
        out: dict[str, Any] = {
            "frames": len(packets),
            "dns_messages": queries + responses,
            "queries": queries,
            "responses": responses,
            "answered": status["answered"],
            "unanswered": status["timeout"] + status["capture_ended"],
            "unanswered_by_reason": {"timeout": status["timeout"], "capture_ended": status["capture_ended"]},
            "orphan_responses": roles["orphan_response"],
            "retransmissions": roles["retransmission"],
            "duplicate_responses": roles["duplicate_response"],
            "malformed": malformed,
            "malformed_reasons": dict(sorted(reasons.items())),
            "rcodes": dict(sorted(rcodes.items())),
            "qtypes": dict(sorted(qtypes.items())),
            "transports": dict(sorted(transports.items(), reverse=True)),
            "latency_ms": latency_stats(rtts),
            "decode_issues": dict(sorted(issues.items())),
            "time_span": {"first": iso(min(e.ts for e in packets)), "last": iso(max(e.ts for e in packets))},
        }
        assert out["queries"] == out["answered"] + out["unanswered"] + out["retransmissions"]
        assert out["responses"] == out["answered"] + out["duplicate_responses"] + out["orphan_responses"]
        return out


PERCENTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))


def _quantile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's and polars' default)."""
    pos = q * (len(values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def latency_stats(rtts_ns: Sequence[int]) -> dict[str, Any]:
    if not rtts_ns:
        return {"count": 0, "min": None, "p50": None, "p95": None, "p99": None, "max": None}
    ms = [r / MS for r in rtts_ns]
    out: dict[str, Any] = {"count": len(ms), "min": round(ms[0], 3)}
    for name, q in PERCENTILES:
        out[name] = round(_quantile(ms, q), 3)
    out["max"] = round(ms[-1], 3)
    return out


def latency_bands(rtts_ns: Sequence[int]) -> dict[str, list[float]]:
    """For each percentile, the values of the ranks either side of it (one rank of slack each way):
    any usual percentile definition (linear, nearest rank, lower, higher) falls inside."""
    ms = sorted(r / MS for r in rtts_ns)
    out = {}
    for name, q in PERCENTILES:
        pos = q * (len(ms) - 1)
        lo = max(int(pos) - 1, 0)
        hi = min(int(pos) + 2, len(ms) - 1)
        out[name] = [round(ms[lo], 3), round(ms[hi], 3)]
    return out


# ================================================================================================
# Capture files
# ================================================================================================


def write_pcap(
    path: Path, events: Sequence[Event], linktype: int = LINKTYPE_ETHERNET, snaplen: int = 262144
) -> None:
    """Classic pcap, little-endian, microsecond timestamps."""
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, linktype))
    for e in events:
        assert e.block == "packet" and e.ts % US == 0
        sec, usec = divmod(e.ts // US, 1_000_000)
        out += struct.pack("<IIII", sec, usec, len(e.frame), len(e.frame)) + e.frame
    path.write_bytes(bytes(out))


def _options(opts: Sequence[tuple[int, bytes]]) -> bytes:
    out = bytearray()
    for code, value in opts:
        out += struct.pack("<HH", code, len(value)) + value + b"\x00" * (-len(value) % 4)
    return bytes(out + struct.pack("<HH", 0, 0)) if opts else b""


def _block(btype: int, body: bytes) -> bytes:
    assert len(body) % 4 == 0
    return struct.pack("<II", btype, len(body) + 12) + body + struct.pack("<I", len(body) + 12)


@dataclass
class Interface:
    linktype: int
    name: str
    tsresol: int  # decimal exponent: 6 = microseconds, 9 = nanoseconds
    snaplen: int = 262144


def write_pcapng(path: Path, events: Sequence[Event], interfaces: Sequence[Interface], app: str) -> None:
    out = bytearray()
    shb = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + _options([(4, app.encode())])
    out += _block(0x0A0D0D0A, shb)
    for itf in interfaces:
        opts = [(2, itf.name.encode()), (9, bytes([itf.tsresol]))]
        out += _block(1, struct.pack("<HHI", itf.linktype, 0, itf.snaplen) + _options(opts))

    def units(ts: int, iface: int) -> int:
        div = 10 ** (9 - interfaces[iface].tsresol)
        assert ts % div == 0, "timestamp finer than the interface's resolution"
        return int(ts // div)

    for e in events:
        t = units(e.ts, e.iface)
        if e.block == "packet":
            body = struct.pack("<IIIII", e.iface, t >> 32, t & 0xFFFFFFFF, len(e.frame), len(e.frame))
            body += e.frame + b"\x00" * (-len(e.frame) % 4)
            out += _block(6, body)
        else:
            assert e.isb is not None
            ifrecv, ifdrop, start, end = e.isb
            s, n = units(start, e.iface), units(end, e.iface)
            opts = [
                (2, struct.pack("<II", s >> 32, s & 0xFFFFFFFF)),
                (3, struct.pack("<II", n >> 32, n & 0xFFFFFFFF)),
                (4, struct.pack("<Q", ifrecv)),
                (5, struct.pack("<Q", ifdrop)),
            ]
            out += _block(5, struct.pack("<III", e.iface, t >> 32, t & 0xFFFFFFFF) + _options(opts))
    path.write_bytes(bytes(out))


# ================================================================================================
# Scenario 1 and 5: a recursive resolver (outage.pcap, steady.pcap)
# ================================================================================================

RESOLVER = "10.0.0.53"
RESOLVER_MAC = mac("02:00:0a:00:00:35")
GATEWAY_MAC = mac("02:00:0a:00:00:01")

# The zones the resolver's clients ask about, their authoritative servers (address: typical RTT ms)
# and their names.  A host's entry: a = IPv4, aaaa = IPv6, cname = target (same zone), https = has
# an HTTPS record, mx / txt = records at that name.  Names in ``nx`` do not exist.
ZONES: dict[str, dict[str, Any]] = {
    "shop.example": {
        "servers": {"192.0.2.10": 9, "192.0.2.11": 14},
        "ttl": 120,
        "weight": 25,
        "hosts": {
            "": {
                "a": "192.0.2.80",
                "aaaa": "2001:db8:80::80",
                "https": True,
                "mx": [(10, "mx1.shop.example"), (20, "mx2.shop.example")],
                "txt": ["v=spf1 mx -all"],
            },
            "www": {"a": "192.0.2.80", "aaaa": "2001:db8:80::80", "https": True},
            "api": {"a": "192.0.2.81", "aaaa": "2001:db8:80::81"},
            "checkout": {"a": "192.0.2.83", "aaaa": "2001:db8:80::83", "https": True},
            "static": {"a": "192.0.2.82"},
            "cdn": {"cname": "static.shop.example"},
            "img": {"cname": "static.shop.example"},
            "m": {"cname": "www.shop.example"},
        },
        "nx": ["cdn-old", "wpad"],
    },
    "corp.example": {
        "servers": {"192.0.2.20": 6, "192.0.2.21": 11},
        "ttl": 300,
        "weight": 30,
        "hosts": {
            "": {
                "a": "192.0.2.30",
                "mx": [(10, "mail.corp.example")],
                "txt": ["v=spf1 ip4:192.0.2.0/24 -all"],
            },
            "_dmarc": {"txt": ["v=DMARC1; p=reject; rua=mailto:dmarc@corp.example"]},
            "mail": {"a": "192.0.2.31", "aaaa": "2001:db8:30::31"},
            "vpn": {"a": "192.0.2.32"},
            "intranet": {"a": "192.0.2.33", "aaaa": "2001:db8:30::33", "https": True},
            "wiki": {"cname": "intranet.corp.example"},
            "git": {"a": "192.0.2.34", "aaaa": "2001:db8:30::34"},
            "sso": {"a": "192.0.2.35", "https": True},
            "calendar": {"cname": "mail.corp.example"},
        },
        "nx": ["wpad", "isatap", "www.shop.example", "printer3"],
    },
    "news.example": {
        "servers": {"198.51.100.5": 8, "198.51.100.6": 17},
        "ttl": 300,
        "weight": 20,
        "hosts": {
            "": {
                "a": "198.51.100.80",
                "aaaa": "2001:db8:100::80",
                "https": True,
                "mx": [(5, "mx.news.example")],
                "txt": ["v=spf1 include:_spf.news.example ~all"],
            },
            "www": {"a": "198.51.100.80", "aaaa": "2001:db8:100::80", "https": True},
            "live": {"a": "198.51.100.81", "aaaa": "2001:db8:100::81"},
            "video": {"cname": "live.news.example"},
            "feeds": {"a": "198.51.100.82"},
            "img": {"a": "198.51.100.83", "aaaa": "2001:db8:100::83"},
        },
        "nx": ["old", "beta"],
    },
    "cdn.example.net": {
        "servers": {"203.0.113.7": 5, "203.0.113.8": 12},
        "ttl": 60,
        "weight": 25,
        "hosts": {
            "edge1": {"a": "203.0.113.10", "aaaa": "2001:db8:113::10"},
            "edge2": {"a": "203.0.113.11", "aaaa": "2001:db8:113::11"},
            "edge3": {"a": "203.0.113.12", "aaaa": "2001:db8:113::12"},
            "edge4": {"a": "203.0.113.13"},
            "assets": {"cname": "edge3.cdn.example.net"},
            "static": {"cname": "assets.cdn.example.net"},  # a two-step CNAME chain
            "js": {"cname": "edge1.cdn.example.net"},
        },
        "nx": ["edge9"],
    },
    "113.0.203.in-addr.arpa": {
        "servers": {"203.0.113.53": 10, "203.0.113.54": 15},
        "ttl": 3600,
        "weight": 0,
        "hosts": {
            "7": {"ptr": "ns1.cdn.example.net"},
            "8": {"ptr": "ns2.cdn.example.net"},
            "10": {"ptr": "edge1.cdn.example.net"},
            "11": {"ptr": "edge2.cdn.example.net"},
            "12": {"ptr": "edge3.cdn.example.net"},
            "13": {"ptr": "edge4.cdn.example.net"},
        },
        "nx": ["99", "200"],
    },
}
LOCAL_REVERSE = "1.0.10.in-addr.arpa"  # the clients' reverse zone: the resolver answers it itself
QTYPE_WEIGHTS = {"A": 40, "AAAA": 32, "HTTPS": 12, "PTR": 7, "TXT": 5, "MX": 4}


def fqdn(label: str, zone: str) -> str:
    return f"{label}.{zone}" if label else zone


def lookup(name: str, qtype: int, local_ptr: dict[str, str]) -> tuple[int, list[tuple[Any, ...]], str]:
    """(rcode, answer records, zone) for a name: answers are (owner, type, ttl, *rdata)."""
    if name.endswith(LOCAL_REVERSE):
        return NOERROR, [(name, TYPE["PTR"], 3600, local_ptr[name])], LOCAL_REVERSE
    zone = next(z for z in ZONES if name == z or name.endswith("." + z))
    spec = ZONES[zone]
    ttl = spec["ttl"]
    label = name[: -len(zone) - 1] if name != zone else ""
    answers: list[tuple[Any, ...]] = []
    seen = set()
    while True:
        host = spec["hosts"].get(label)
        if host is None:
            return (NXDOMAIN if not answers else NOERROR), answers, zone
        owner = fqdn(label, zone)
        if "cname" in host and qtype != TYPE["CNAME"]:
            answers.append((owner, TYPE["CNAME"], ttl, host["cname"]))
            label = host["cname"][: -len(zone) - 1]
            assert label not in seen
            seen.add(label)
            continue
        if qtype == TYPE["A"] and "a" in host:
            answers.append((owner, qtype, ttl, ip(host["a"])))
        elif qtype == TYPE["AAAA"] and "aaaa" in host:
            answers.append((owner, qtype, ttl, ip(host["aaaa"])))
        elif qtype == TYPE["HTTPS"] and host.get("https"):
            answers.append((owner, qtype, ttl, *HTTPS_RDATA))
        elif qtype == TYPE["MX"] and "mx" in host:
            answers += [(owner, qtype, ttl, struct.pack("!H", pref), target) for pref, target in host["mx"]]
        elif qtype == TYPE["TXT"] and "txt" in host:
            answers += [(owner, qtype, ttl, txt_rdata(s)) for s in host["txt"]]
        elif qtype == TYPE["PTR"] and "ptr" in host:
            answers.append((owner, qtype, ttl, host["ptr"]))
        return NOERROR, answers, zone


def response_msg(
    ident: int,
    flags: int,
    name: str,
    qtype: int,
    rcode: int,
    answers: list[tuple[Any, ...]],
    zone: str,
    *,
    edns: bool = True,
    do: bool = False,
    ede_code: int | None = None,
) -> bytes:
    m = Msg(ident, flags | QR | (rcode & 0xF)).question(name, qtype)
    for owner, rtype, ttl, *rdata in answers:
        m.rr(1, owner, rtype, ttl, *rdata)
    if not answers and rcode in (NOERROR, NXDOMAIN):  # NODATA / NXDOMAIN: the zone's SOA (RFC 2308)
        m.rr(2, zone, TYPE["SOA"], 300, *soa_rdata(zone))
    if edns:
        m.opt(1232, ext_rcode=rcode >> 4, do=do, options=ede(ede_code) if ede_code is not None else b"")
    return m.wire()


@dataclass
class ResolverScenario:
    name: str
    start: str  # ISO, whole second
    seed: int
    rate: float  # client queries per second (Poisson)
    duration_s: int = 600
    outage: tuple[str, float, float] | None = None  # (zone, start s, end s)
    end_unanswered: int = 0  # client queries in the last second whose answer comes after the capture


def build_resolver(sc: ResolverScenario) -> tuple[Ledger, dict[str, Any]]:
    rng = random.Random(sc.seed)
    led = Ledger()
    t0 = ts_of(sc.start)
    end_ns = t0 + sc.duration_s * NS
    clients = [f"10.0.1.{x}" for x in sorted(rng.sample(range(11, 250), 20))]
    do_clients = set(clients[::4])
    local_ptr = {
        f"{c.split('.')[3]}.{LOCAL_REVERSE}": f"host-{c.split('.')[3]}.lan.corp.example" for c in clients
    }
    fwd = [z for z, s in ZONES.items() if s["weight"]]

    def pick_name(qtype: str) -> str:
        if qtype == "PTR":
            if rng.random() < 0.5:
                return rng.choice(sorted(local_ptr))
            z = "113.0.203.in-addr.arpa"
            labels = list(ZONES[z]["hosts"]) + (ZONES[z]["nx"] if rng.random() < 0.1 else [])
            return fqdn(rng.choice(labels), z)
        if qtype in ("MX", "TXT"):
            if qtype == "TXT" and rng.random() < 0.3:
                return "_dmarc.corp.example"
            return rng.choice(["shop.example", "corp.example", "news.example"])
        zone = rng.choices(fwd, weights=[ZONES[z]["weight"] for z in fwd])[0]
        spec = ZONES[zone]
        if rng.random() < 0.05:
            return fqdn(rng.choice(spec["nx"]), zone)
        labels = [h for h in spec["hosts"] if h != "_dmarc"]
        return fqdn(rng.choices(labels, weights=[4 if h in ("www", "") else 2 for h in labels])[0], zone)

    def frame(src: str, dst: str, sport: int, dport: int, payload: bytes, incoming: bool) -> bytes:
        et, pkt = ip_packet(
            ip(src),
            ip(dst),
            17,
            udp(ip(src), ip(dst), sport, dport, payload),
            ident=rng.getrandbits(16),
            ttl=63 if incoming else 64,
        )
        if incoming:
            return ether(GATEWAY_MAC, RESOLVER_MAC, et, pkt, pad=True)
        return ether(RESOLVER_MAC, GATEWAY_MAC, et, pkt)

    cache: dict[tuple[str, int], int] = {}  # (name, qtype) -> expiry ns
    # The resolver has been running for a while: most records are cached, with expiries spread over
    # their TTL (a cold cache would show as a burst of upstream queries in the first minute).
    for zone, spec in ZONES.items():
        for label in [*spec["hosts"], *spec["nx"]]:
            for qt_name in QTYPE_WEIGHTS:
                if rng.random() < 0.8:
                    ttl = 60 if label in spec["nx"] else spec["ttl"]
                    cache[(fqdn(label, zone).lower(), TYPE[qt_name])] = t0 + rng.randint(0, ttl * 1000) * MS
    srtt = {s: float(rtt) for spec in ZONES.values() for s, rtt in spec["servers"].items()}

    def upstream(
        t: int,
        name: str,
        qtype: int,
        zone: str,
        server: str,
        answer: bool,
        rtt_ns: int,
        tags: tuple[str, ...] = (),
    ) -> int:
        """One query from the resolver to an authoritative server; returns the answer's time."""
        sport, ident = rng.randint(1024, 65535), rng.getrandbits(16)
        tx = led.txn("udp", RESOLVER, sport, server, 53, ident, name, qtype, kind="upstream", zone=zone)
        q = Msg(ident, 0).question(name, qtype).opt(1232, do=True).wire()
        led.add(
            t, frame(RESOLVER, server, sport, 53, q, False), M("query", tx), tags=("upstream_query", *tags)
        )
        if not answer:
            return 0
        rcode, answers, _ = lookup(name, qtype, local_ptr)
        r = response_msg(ident, AA, name, qtype, rcode, answers, zone, do=True)
        led.add(
            t + rtt_ns,
            frame(server, RESOLVER, 53, sport, r, True),
            M("response", tx, rcode=rcode),
            tags=("upstream_response",),
        )
        return t + rtt_ns

    def ask_upstream(t: int, name: str, qtype: int, zone: str, budget_ns: int) -> int:
        servers = sorted(ZONES[zone]["servers"], key=lambda s: srtt[s])
        server = servers[0] if rng.random() < 0.8 else servers[1]
        rtt = int(srtt[server] * rng.uniform(0.8, 1.5) * 1000) * US
        rtt = min(rtt, budget_ns)
        return upstream(t, name, qtype, zone, server, True, rtt)

    # Client arrivals: a Poisson process ending 100 ms before the capture stops (every answer, at most
    # 30 ms, is in), plus ``end_unanswered`` queries in the last second whose answers come too late.
    arrivals: list[tuple[int, bool]] = []
    t = t0 + rng.randint(1000, 50_000) * US
    while t < end_ns - 100 * MS:
        arrivals.append((t, False))
        t += int(rng.expovariate(sc.rate) * 1e6) * US + US
    for k in range(sc.end_unanswered):
        arrivals.append(
            (end_ns - NS + (k * 220 + rng.randint(20, 200)) * MS + rng.randint(0, 999) * US, True)
        )
    arrivals.sort()

    qtypes_names = list(QTYPE_WEIGHTS)
    outage_zone, o_start, o_end = sc.outage if sc.outage else ("", 0.0, 0.0)
    o_start_ns, o_end_ns = t0 + int(o_start * NS), t0 + int(o_end * NS)
    for t, late in arrivals:
        client = rng.choice(clients)
        cport = rng.randint(32768, 60999)
        ident = rng.getrandbits(16)
        qt_name = rng.choices(qtypes_names, weights=[QTYPE_WEIGHTS[q] for q in qtypes_names])[0]
        qtype = TYPE[qt_name]
        name = pick_name(qt_name)
        while late and name.endswith(LOCAL_REVERSE):  # late answers come from a remote authority
            name = pick_name(qt_name)
        do = client in do_clients
        rcode, answers, zone = lookup(name, qtype, local_ptr)
        tx = led.txn("udp", client, cport, RESOLVER, 53, ident, name, qtype, kind="client", zone=zone)
        query = Msg(ident, RD).question(name, qtype).opt(1232, do=do).wire()
        led.add(t, frame(client, RESOLVER, cport, 53, query, True), M("query", tx), tags=("client_query",))
        flags = RD | RA
        if zone == outage_zone and o_start_ns <= t < o_end_ns:
            # The zone's servers are gone: try each in turn (new port and ID each time), then SERVFAIL.
            fail_at = t + rng.randint(1500, 3000) * MS + rng.randint(0, 999) * US
            servers = list(ZONES[zone]["servers"])
            rng.shuffle(servers)
            u, i = t + rng.randint(150, 400) * US, 0
            while u < fail_at - 100 * MS:
                upstream(u, name, qtype, zone, servers[i % 2], False, 0, tags=("outage_upstream",))
                u += rng.randint(750, 950) * MS + rng.randint(0, 999) * US
                i += 1
            if rng.random() < 0.1 and fail_at - t > 1300 * MS:  # an impatient client asks again
                rt = t + rng.randint(1000, 1200) * MS + rng.randint(0, 999) * US
                led.add(
                    rt,
                    frame(client, RESOLVER, cport, 53, query, True),
                    M("retransmission", tx),
                    tags=("client_retransmission",),
                )
            code = EDE_NO_REACHABLE_AUTHORITY if rng.random() < 0.5 else None
            r = response_msg(ident, flags, name, qtype, SERVFAIL, [], zone, do=do, ede_code=code)
            tags = ("client_response", "servfail") + (("ede22",) if code is not None else ())
            led.add(
                fail_at,
                frame(RESOLVER, client, 53, cport, r, False),
                M("response", tx, rcode=SERVFAIL),
                tags=tags,
            )
            continue
        if late:
            # The authority is slow: its answer (and so the client's) comes after the capture stopped.
            server = sorted(ZONES[zone]["servers"])[0]
            upstream(
                t + rng.randint(150, 400) * US,
                name,
                qtype,
                zone,
                server,
                True,
                end_ns - t + rng.randint(100, 900) * MS,
                tags=("late_upstream",),
            )
            led.add(end_ns + NS, b"", M("response", tx, rcode=rcode))  # dropped by settle(end_ns)
            continue
        key = (name.lower(), qtype)
        if zone == LOCAL_REVERSE:
            done = t + rng.randint(200, 900) * US
            flags |= AA
        elif cache.get(key, 0) > t:
            done = t + rng.randint(1000, 3000) * US
        else:
            u = t + rng.randint(150, 400) * US
            got = ask_upstream(u, name, qtype, zone, t + 29 * MS - u)
            done = got + rng.randint(100, 500) * US
            ttl = 60 if rcode == NXDOMAIN else ZONES[zone]["ttl"]
            cache[key] = done + ttl * NS
        done = max(done, t + MS)
        r = response_msg(ident, flags, name, qtype, rcode, answers, zone, do=do)
        led.add(
            done,
            frame(RESOLVER, client, 53, cport, r, False),
            M("response", tx, rcode=rcode),
            tags=("client_response",) + (("nxdomain",) if rcode == NXDOMAIN else ()),
        )

    led.settle(end_ns)
    figures = led.figures()

    # Per minute of the capture, from the frames as written (by the time each frame was captured).
    minute_stats: dict[int, Counter[str]] = defaultdict(Counter)
    for e in led.packets():
        for tag in e.tags:
            minute_stats[(e.ts - t0) // (60 * NS)][tag] += 1
    for tx in led.txns:
        if tx.kind == "upstream" and tx.status in ("timeout", "capture_ended"):
            minute_stats[(tx.first_ns - t0) // (60 * NS)]["upstream_unanswered"] += 1  # type: ignore[operator]
    client_txns = [t for t in led.txns if t.kind == "client"]
    up_txns = [t for t in led.txns if t.kind == "upstream" and t.status]
    scenario: dict[str, Any] = {
        "format": "pcap",
        "link": "Ethernet (LINKTYPE_ETHERNET 1)",
        "ts_resolution": "us",
        "capture_point": f"the recursive resolver {RESOLVER} itself (its clients and its upstream traffic)",
        "nominal_start": iso(t0),
        "nominal_end": iso(end_ns),
        "resolver": RESOLVER,
        "clients": clients,
        "client_count": len(clients),
        "clients_with_do_bit": sorted(do_clients),
        "client_query_rate_per_s": sc.rate,
        "zones": {z: {"servers": sorted(s["servers"]), "ttl": s["ttl"]} for z, s in ZONES.items()},
        "local_zone": LOCAL_REVERSE,
        "client_transactions": len(client_txns),
        "upstream_transactions": len(up_txns),
        "per_minute": [
            {
                "minute": m,
                "start": iso(t0 + m * 60 * NS),
                **{
                    k: minute_stats[m][k]
                    for k in (
                        "client_query",
                        "client_retransmission",
                        "servfail",
                        "ede22",
                        "nxdomain",
                        "upstream_query",
                        "upstream_unanswered",
                    )
                },
            }
            for m in range(sc.duration_s // 60)
        ],
        "latency_bands_ms": latency_bands([t.rtt_ns for t in led.txns if t.rtt_ns is not None]),
    }
    if sc.outage:
        fails = led.frames_tagged("servfail")
        lost = [t for t in up_txns if t.status == "timeout"]
        scenario["outage"] = {
            "zone": outage_zone,
            "servers": sorted(ZONES[outage_zone]["servers"]),
            "start": iso(o_start_ns),
            "end": iso(o_end_ns),
            "rule": "client queries for the zone first sent in [start, end) get SERVFAIL after 1.5-3 s; "
            "every upstream query the resolver sends for them is unanswered",
            "client_queries_affected": len(fails),
            "servfail_frames": fails,
            "ede22_frames": led.frames_tagged("ede22"),
            "client_retransmission_frames": led.frames_tagged("client_retransmission"),
            "unanswered_upstream_query_frames": sorted(t.query_frames[0] for t in lost),
            "first_unanswered_upstream": iso(min(t.first_ns or 0 for t in lost)),
            "last_unanswered_upstream": iso(max(t.first_ns or 0 for t in lost)),
            "last_servfail": iso(max(e.ts for e in led.packets() if "servfail" in e.tags)),
            "servfail_latency_ms": [1500, 3000],
        }
        ended = [t for t in led.txns if t.status == "capture_ended"]
        scenario["capture_ended"] = {
            "rule": "client queries in the last second whose authority answers after the capture stopped; "
            "the resolver's upstream queries for them are unanswered too",
            "client_query_frames": sorted(t.query_frames[0] for t in ended if t.kind == "client"),
            "upstream_query_frames": sorted(t.query_frames[0] for t in ended if t.kind == "upstream"),
        }
    else:
        scenario["expected_findings"] = 0
        assert figures["unanswered"] == 0 and figures["retransmissions"] == 0
        assert set(figures["rcodes"]) <= {"NOERROR", "NXDOMAIN"}
    return led, {**figures, "scenario": scenario}


# ================================================================================================
# Scenario 2: malformed queries and FORMERR (formerr.pcap)
# ================================================================================================


def build_formerr() -> tuple[Ledger, dict[str, Any]]:
    rng = random.Random(2002)
    led = Ledger()
    t0 = ts_of("2024-03-02T09:00:00Z")
    server = RESOLVER
    clients = [f"10.0.2.{x}" for x in (11, 12, 13, 14, 15)]
    fuzzer = "10.0.2.66"

    def frame(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
        et, pkt = ip_packet(
            ip(src),
            ip(dst),
            17,
            udp(ip(src), ip(dst), sport, dport, payload),
            ident=rng.getrandbits(16),
            ttl=64 if src == server else 63,
        )
        if dst == server:
            return ether(GATEWAY_MAC, RESOLVER_MAC, et, pkt, pad=True)
        return ether(RESOLVER_MAC, GATEWAY_MAC, et, pkt)

    def exchange(
        t: int,
        client: str,
        query: bytes,
        response: bytes | None,
        *,
        qname: str | None,
        qtype: int | None,
        rcode: int = NOERROR,
        reasons: tuple[str, ...] = (),
        count_qtype: bool = True,
        tag: str = "",
        rtt_us: int | None = None,
    ) -> None:
        cport, ident = rng.randint(32768, 60999), struct.unpack("!H", query[:2])[0]
        tx = led.txn("udp", client, cport, server, 53, ident, qname, qtype, kind=tag or "normal")
        tags = (tag,) if tag else ()
        led.add(
            t,
            frame(client, server, cport, 53, query),
            M("query", tx, reasons=reasons, count_qtype=count_qtype),
            tags=tuple(f"{x}_query" for x in tags),
        )
        if response is not None:
            rt = t + (rtt_us if rtt_us is not None else rng.randint(300, 2500)) * US
            led.add(
                rt,
                frame(server, client, 53, cport, response),
                M("response", tx, rcode=rcode),
                tags=tuple(f"{x}_response" for x in tags),
            )

    # Normal traffic: 24 ordinary exchanges over the minute.
    normal = [
        ("www.shop.example", "A"),
        ("www.shop.example", "AAAA"),
        ("mail.corp.example", "A"),
        ("corp.example", "MX"),
        ("www.news.example", "HTTPS"),
        ("edge1.cdn.example.net", "A"),
        ("wpad.corp.example", "A"),
        ("intranet.corp.example", "AAAA"),
    ]
    times = sorted(rng.sample(range(500, 59_000), 24))
    for i, ms in enumerate(times):
        name, qt = normal[i % len(normal)]
        qtype = TYPE[qt]
        ident = rng.getrandbits(16)
        rcode, answers, zone = lookup(name, qtype, {})
        q = Msg(ident, RD).question(name, qtype).opt(1232).wire()
        r = response_msg(ident, RD | RA, name, qtype, rcode, answers, zone)
        exchange(
            t0 + ms * MS + rng.randint(0, 999) * US,
            clients[i % len(clients)],
            q,
            r,
            qname=name,
            qtype=qtype,
            rcode=rcode,
        )

    def formerr_reply(ident: int) -> bytes:  # header only: qdcount=0, as servers often answer FORMERR
        return Msg(ident, QR | RD | RA | FORMERR).wire()

    at = {
        k: t0 + (s * NS) + rng.randint(0, 999_999) * US
        for k, s in [
            ("loop", 5),
            ("label", 11),
            ("trailing", 17),
            ("two_opt", 23),
            ("edns1", 29),
            ("qd2", 35),
            ("short", 41),
        ]
    }

    # 1. The question name is a compression pointer to itself (offset 12 -> 12): a loop.
    i = rng.getrandbits(16)
    q = struct.pack("!6H", i, RD, 1, 0, 0, 0) + b"\xc0\x0c" + struct.pack("!HH", 1, 1)
    exchange(
        at["loop"],
        fuzzer,
        q,
        formerr_reply(i),
        qname=None,
        qtype=1,
        rcode=FORMERR,
        reasons=("compression_loop",),
        count_qtype=False,
        tag="compression_loop",
    )
    # 2. A label length byte 0x50 (80 > 63), followed by 80 octets so only the length is wrong.
    i = rng.getrandbits(16)
    q = (
        struct.pack("!6H", i, RD, 1, 0, 0, 0)
        + b"\x50"
        + b"x" * 80
        + b"\x07example\x00"
        + struct.pack("!HH", 1, 1)
    )
    exchange(
        at["label"],
        fuzzer,
        q,
        formerr_reply(i),
        qname=None,
        qtype=1,
        rcode=FORMERR,
        reasons=("label_too_long",),
        count_qtype=False,
        tag="label_too_long",
    )
    # 3. A complete query (TXT, no EDNS) followed by 5 stray octets; the FORMERR echoes the question.
    i, name = rng.getrandbits(16), "corp.example"
    q = Msg(i, RD).question(name, TYPE["TXT"]).wire() + b"\xde\xad\xbe\xef\x00"
    r = Msg(i, QR | RD | RA | FORMERR).question(name, TYPE["TXT"]).wire()
    exchange(
        at["trailing"],
        fuzzer,
        q,
        r,
        qname=name,
        qtype=TYPE["TXT"],
        rcode=FORMERR,
        reasons=("trailing_bytes",),
        tag="trailing_bytes",
    )
    # 4. Two OPT records in the additional section (RFC 6891 6.1.1: FORMERR); the answer echoes the question.
    i, name = rng.getrandbits(16), "shop.example"
    q = Msg(i, RD).question(name, TYPE["MX"]).opt(1232).opt(4096).wire()
    r = Msg(i, QR | RD | RA | FORMERR).question(name, TYPE["MX"]).wire()
    exchange(
        at["two_opt"],
        clients[0],
        q,
        r,
        qname=name,
        qtype=TYPE["MX"],
        rcode=FORMERR,
        reasons=("multiple_opt",),
        tag="multiple_opt",
    )
    # 5. EDNS version 1: well-formed, answered BADVERS (header RCODE 0, OPT extended RCODE 1 -> 16).
    i, name = rng.getrandbits(16), "news.example"
    q = Msg(i, RD).question(name, TYPE["SOA"]).opt(1232, version=1).wire()
    r = Msg(i, QR | RD | RA).question(name, TYPE["SOA"]).opt(1232, ext_rcode=1, version=0).wire()
    exchange(at["edns1"], clients[1], q, r, qname=name, qtype=TYPE["SOA"], rcode=BADVERS, tag="badvers")
    # 6. Two questions (qdcount=2): well-formed on the wire, refused with a question-less FORMERR.
    i = rng.getrandbits(16)
    q = Msg(i, RD).question("www.shop.example", TYPE["A"]).question("www.shop.example", TYPE["AAAA"]).wire()
    exchange(
        at["qd2"],
        clients[2],
        q,
        formerr_reply(i),
        qname="www.shop.example",
        qtype=TYPE["A"],
        rcode=FORMERR,
        tag="qdcount2",
    )
    # 7. An 8-octet UDP payload to port 53: not a DNS message (dns_too_short); nobody answers it.
    led.add(
        at["short"],
        frame(fuzzer, server, rng.randint(32768, 60999), 53, struct.pack("!4H", 0xBEEF, RD, 1, 0)),
        tags=("dns_too_short",),
        issues=("dns_too_short",),
    )

    led.settle()
    figures = led.figures()
    tagged = {
        tag: {
            "query_frame": led.frames_tagged(f"{tag}_query")[0],
            "response_frame": led.frames_tagged(f"{tag}_response")[0],
        }
        for tag in (
            "compression_loop",
            "label_too_long",
            "trailing_bytes",
            "multiple_opt",
            "badvers",
            "qdcount2",
        )
    }
    scenario = {
        "format": "pcap",
        "link": "Ethernet (LINKTYPE_ETHERNET 1)",
        "ts_resolution": "us",
        "server": server,
        "clients": clients,
        "fuzzer": fuzzer,
        "normal_exchanges": len(times),
        "cases": {
            **tagged,
            "dns_too_short": {
                "frame": led.frames_tagged("dns_too_short")[0],
                "payload_octets": 8,
                "note": "Ethernet frame padded to 60 octets; the UDP length says 8",
            },
        },
        "notes": [
            "question-less FORMERR responses (qdcount=0) answer the compression_loop, label_too_long and "
            "qdcount2 queries; the trailing_bytes and multiple_opt FORMERRs echo the question",
            "qtypes leaves out the compression_loop and label_too_long queries: their question cannot "
            "be read",
            "the qdcount=2 query is well-formed on the wire and is not counted as malformed",
        ],
        "latency_bands_ms": latency_bands([t.rtt_ns for t in led.txns if t.rtt_ns is not None]),
    }
    return led, {**figures, "scenario": scenario}


# ================================================================================================
# Scenario 3: truncation and DNS over TCP (tcp-fallback.pcap)
# ================================================================================================


def build_tcp() -> tuple[Ledger, dict[str, Any]]:
    rng = random.Random(3003)
    led = Ledger()
    t0 = ts_of("2024-03-02T09:30:00Z")
    server = RESOLVER
    conns: list[dict[str, Any]] = []

    def frame(src: str, dst: str, l4: bytes, proto: int) -> bytes:
        et, pkt = ip_packet(
            ip(src), ip(dst), proto, l4, ident=rng.getrandbits(16), ttl=64 if src == server else 63
        )
        if dst == server:
            return ether(GATEWAY_MAC, RESOLVER_MAC, et, pkt, pad=True)
        return ether(RESOLVER_MAC, GATEWAY_MAC, et, pkt)

    def udp_frame(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
        return frame(src, dst, udp(ip(src), ip(dst), sport, dport, payload), 17)

    def big_answers(name: str, qtype: int) -> list[tuple[Any, ...]]:
        if name == "pool.cdn.example.net" and qtype == TYPE["A"]:
            return [
                (name, 1, 60, bytes([203, 0, 113, 100 + i % 100]))
                if i < 100
                else (name, 1, 60, bytes([198, 51, 100, i - 100]))
                for i in range(80)
            ]
        if name == "pool.cdn.example.net" and qtype == TYPE["AAAA"]:
            return [(name, 28, 60, ip(f"2001:db8:113::{i + 1:x}")) for i in range(45)]
        if name == "mirrors.news.example":
            return [
                (name, 1, 300, bytes([198, 51, 100, i]) if i < 200 else bytes([203, 0, 113, i - 200]))
                for i in range(1, 181)
            ]
        if name == "selectors._domainkey.corp.example":
            return [
                (
                    name,
                    16,
                    3600,
                    txt_rdata(
                        f"s{i}="
                        + "".join(
                            rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
                            for _ in range(230)
                        )
                    ),
                )
                for i in range(5)
            ]
        if name == "bundle.shop.example":
            return [
                (
                    name,
                    16,
                    600,
                    txt_rdata(
                        *(f"k{i:02d}=" + f"{rng.getrandbits(160):040x}" * 5 for i in range(j * 4, j * 4 + 4))
                    ),
                )
                for j in range(2)
            ]
        raise KeyError(name)

    def udp_exchange(
        t: int,
        client: str,
        name: str,
        qtype: int,
        answers: list[tuple[Any, ...]] | None,
        rcode: int = NOERROR,
        tc: bool = False,
        tag: str = "",
    ) -> int:
        cport, ident = rng.randint(32768, 60999), rng.getrandbits(16)
        tx = led.txn("udp", client, cport, server, 53, ident, name, qtype, kind="udp_tc" if tc else "udp")
        q = Msg(ident, RD).question(name, qtype).opt(1232).wire()
        led.add(
            t,
            udp_frame(client, server, cport, 53, q),
            M("query", tx),
            tags=(f"{tag}_udp_query",) if tag else (),
        )
        rt = t + rng.randint(800, 4000) * US
        if tc:
            r = Msg(ident, QR | RD | RA | TC).question(name, qtype).opt(1232).wire()
        else:
            zone = lookup(name, qtype, {})[2]
            r = response_msg(ident, RD | RA, name, qtype, rcode, answers or [], zone)
        assert len(r) <= 1232
        led.add(
            rt,
            udp_frame(server, client, 53, cport, r),
            M("response", tx, rcode=rcode),
            tags=(f"{tag}_tc_response",) if tc else (),
        )
        return rt

    class Conn:
        """One TCP connection from ``client`` to the server's port 53, segment by segment."""

        def __init__(self, tag: str, client: str, mss: int) -> None:
            self.tag, self.client, self.mss = tag, client, mss
            self.cport = rng.randint(32768, 60999)
            self.cseq = rng.getrandbits(32)
            self.sseq = rng.getrandbits(32)
            self.info: dict[str, Any] = {
                "tag": tag,
                "client": client,
                "client_port": self.cport,
                "mss": mss,
                "frames": {},
            }
            conns.append(self.info)

        def seg(
            self,
            t: int,
            from_client: bool,
            flags: int,
            payload: bytes = b"",
            msgs: Sequence[M] = (),
            seq: int | None = None,
            what: str = "",
            options: bytes = b"",
        ) -> None:
            if from_client:
                s = self.cseq if seq is None else seq
                ack = 0 if flags == SYN else self.sseq
                l4 = tcp(ip(self.client), ip(server), self.cport, 53, s, ack, flags, payload, 64240, options)
                f = frame(self.client, server, l4, 6)
            else:
                s = self.sseq if seq is None else seq
                l4 = tcp(
                    ip(server), ip(self.client), 53, self.cport, s, self.cseq, flags, payload, 65160, options
                )
                f = frame(server, self.client, l4, 6)
            ev = led.add(t, f, *msgs, tags=(f"tcp:{self.tag}:{what}",) if what else ())
            self.info["frames"].setdefault(what or "ack", []).append(ev)

        def handshake(self, t: int) -> int:
            syn_opts = struct.pack("!BBH", 2, 4, self.mss) + b"\x01\x03\x03\x07" + b"\x01\x01\x04\x02"
            self.seg(t, True, SYN, what="syn", options=syn_opts)
            self.cseq += 1
            t += rng.randint(100, 300) * US
            self.seg(
                t,
                False,
                SYN | ACK,
                what="syn-ack",
                options=struct.pack("!BBH", 2, 4, 1460) + b"\x01\x03\x03\x07" + b"\x01\x01\x04\x02",
            )
            self.sseq += 1
            t += rng.randint(100, 300) * US
            self.seg(t, True, ACK, what="ack")
            return t

        def close(self, t: int) -> int:
            self.seg(t, True, FIN | ACK, what="fin")
            self.cseq += 1
            t += rng.randint(100, 300) * US
            self.seg(t, False, FIN | ACK, what="fin")
            self.sseq += 1
            t += rng.randint(100, 300) * US
            self.seg(t, True, ACK, what="ack")
            return t

    def tcp_query(ident: int, name: str, qtype: int) -> bytes:
        q = Msg(ident, RD).question(name, qtype).opt(1232).wire()
        return struct.pack("!H", len(q)) + q

    def tcp_response(ident: int, name: str, qtype: int) -> bytes:
        zone = lookup(name, qtype, {})[2] if not name.startswith("pool.") else "cdn.example.net"
        r = response_msg(ident, RD | RA, name, qtype, NOERROR, big_answers(name, qtype), zone)
        assert len(r) > 1232, (name, len(r))
        return struct.pack("!H", len(r)) + r

    t = t0 + 137_000 * US
    # Ordinary UDP traffic around the truncated answers.
    plain = [
        ("www.shop.example", "A"),
        ("mail.corp.example", "AAAA"),
        ("edge2.cdn.example.net", "A"),
        ("www.news.example", "HTTPS"),
        ("corp.example", "MX"),
        ("intranet.corp.example", "A"),
        ("isatap.corp.example", "A"),
        ("js.cdn.example.net", "AAAA"),
        ("live.news.example", "A"),
        ("shop.example", "TXT"),
    ]
    plain_times = [t0 + s for s in sorted(rng.sample(range(200 * MS, 19_000 * MS, 997 * US), len(plain)))]
    for (name, qt), when in zip(plain, plain_times, strict=True):
        rcode, answers, _ = lookup(name, TYPE[qt], {})
        udp_exchange(when, f"10.0.1.{rng.randint(20, 24)}", name, TYPE[qt], answers, rcode)

    # A. Truncated over UDP, retried over TCP: one query, one response in one segment.
    c = Conn("A", "10.0.1.20", 1460)
    name, qtype = "selectors._domainkey.corp.example", TYPE["TXT"]
    t = udp_exchange(t0 + 1_000 * MS + 4_321 * US, c.client, name, qtype, None, tc=True, tag="A")
    t = c.handshake(t + rng.randint(200, 500) * US)
    ident = rng.getrandbits(16)
    tx = led.txn("tcp", c.client, c.cport, server, 53, ident, name, qtype, kind="tcp")
    q = tcp_query(ident, name, qtype)
    t += 50 * US
    c.seg(t, True, PSH | ACK, q, [M("query", tx)], what="query")
    c.cseq += len(q)
    r = tcp_response(ident, name, qtype)
    assert len(r) <= 1460
    t += rng.randint(1000, 3000) * US
    c.seg(t, False, PSH | ACK, r, [M("response", tx, rcode=NOERROR)], what="response")
    c.sseq += len(r)
    t += 100 * US
    c.seg(t, True, ACK)
    c.close(t + rng.randint(100, 400) * US)

    # B. Two truncated answers (A and AAAA); both retried on one connection, both queries in ONE segment.
    c = Conn("B", "10.0.1.21", 1460)
    name = "pool.cdn.example.net"
    ta = udp_exchange(t0 + 4_000 * MS, c.client, name, TYPE["A"], None, tc=True, tag="B")
    tb = udp_exchange(t0 + 4_000 * MS + 150 * US, c.client, name, TYPE["AAAA"], None, tc=True, tag="B")
    t = c.handshake(max(ta, tb) + rng.randint(200, 500) * US)
    ids = rng.getrandbits(16), rng.getrandbits(16)
    txs = [
        led.txn("tcp", c.client, c.cport, server, 53, ids[k], name, qt, kind="tcp")
        for k, qt in enumerate((TYPE["A"], TYPE["AAAA"]))
    ]
    q = tcp_query(ids[0], name, TYPE["A"]) + tcp_query(ids[1], name, TYPE["AAAA"])
    t += 50 * US
    c.seg(t, True, PSH | ACK, q, [M("query", txs[0]), M("query", txs[1])], what="two_queries")
    c.cseq += len(q)
    for k, rtype in enumerate((TYPE["A"], TYPE["AAAA"])):
        r = tcp_response(ids[k], name, rtype)
        assert len(r) <= 1460
        t += rng.randint(800, 2000) * US
        c.seg(t, False, PSH | ACK, r, [M("response", txs[k], rcode=NOERROR)], what="response")
        c.sseq += len(r)
        t += 80 * US
        c.seg(t, True, ACK)
    c.close(t + rng.randint(100, 400) * US)

    # C. A 3-segment response (the client's MSS is 1220).
    c = Conn("C", "10.0.1.22", 1220)
    name, qtype = "mirrors.news.example", TYPE["A"]
    t = udp_exchange(t0 + 8_000 * MS, c.client, name, qtype, None, tc=True, tag="C")
    t = c.handshake(t + rng.randint(200, 500) * US)
    ident = rng.getrandbits(16)
    tx = led.txn("tcp", c.client, c.cport, server, 53, ident, name, qtype, kind="tcp")
    q = tcp_query(ident, name, qtype)
    t += 50 * US
    c.seg(t, True, PSH | ACK, q, [M("query", tx)], what="query")
    c.cseq += len(q)
    r = tcp_response(ident, name, qtype)
    parts = [r[i : i + c.mss] for i in range(0, len(r), c.mss)]
    assert len(parts) == 3
    t += rng.randint(1000, 3000) * US
    for k, part in enumerate(parts):
        last = k == len(parts) - 1
        c.seg(
            t,
            False,
            (PSH | ACK) if last else ACK,
            part,
            [M("response", tx, rcode=NOERROR)] if last else [],
            what=f"response_part{k + 1}",
        )
        c.sseq += len(part)
        t += 30 * US
    t += 60 * US
    c.seg(t, True, ACK)
    c.close(t + rng.randint(100, 400) * US)

    # D. A 2-segment response whose second segment is captured before the first.
    c = Conn("D", "10.0.1.23", 1460)
    name, qtype = "bundle.shop.example", TYPE["TXT"]
    t = udp_exchange(t0 + 12_000 * MS, c.client, name, qtype, None, tc=True, tag="D")
    t = c.handshake(t + rng.randint(200, 500) * US)
    ident = rng.getrandbits(16)
    tx = led.txn("tcp", c.client, c.cport, server, 53, ident, name, qtype, kind="tcp")
    q = tcp_query(ident, name, qtype)
    t += 50 * US
    c.seg(t, True, PSH | ACK, q, [M("query", tx)], what="query")
    c.cseq += len(q)
    r = tcp_response(ident, name, qtype)
    first, second = r[: c.mss], r[c.mss :]
    assert 0 < len(second) < c.mss
    t += rng.randint(1000, 3000) * US
    c.seg(t, False, PSH | ACK, second, seq=c.sseq + len(first), what="response_part2_early")
    t += 40 * US
    c.seg(t, True, ACK, what="dup_ack")  # duplicate ACK: the client still waits for the first part
    t += 350 * US
    c.seg(t, False, ACK, first, [M("response", tx, rcode=NOERROR)], what="response_part1_late")
    c.sseq += len(r)
    t += 60 * US
    c.seg(t, True, ACK)
    c.close(t + rng.randint(100, 400) * US)

    led.settle()
    figures = led.figures()
    for info in conns:
        info["frames"] = {k: [e.number for e in v] for k, v in info["frames"].items()}
    scenario = {
        "format": "pcap",
        "link": "Ethernet (LINKTYPE_ETHERNET 1)",
        "ts_resolution": "us",
        "server": server,
        "udp_tc_responses": {tag: led.frames_tagged(f"{tag}_tc_response") for tag in "ABCD"},
        "tcp_connections": conns,
        "notes": [
            "A: TXT answer retried over TCP, one segment each way",
            "B: the A and AAAA retries share one connection and ONE client segment (two length-prefixed "
            "queries); the two answers come in two segments",
            "C: a 2,900-octet answer in three segments (MSS 1220); the message completes at the third",
            "D: the answer's second segment is captured before its first (with a duplicate ACK in between); "
            "the message completes at the late first segment",
            "a UDP query and its TCP retry are two transactions",
        ],
        "latency_bands_ms": latency_bands([t.rtt_ns for t in led.txns if t.rtt_ns is not None]),
    }
    return led, {**figures, "scenario": scenario}


# ================================================================================================
# Scenario 4: two interfaces in one pcapng (mixed-links.pcapng)
# ================================================================================================


def build_mixed() -> tuple[Ledger, dict[str, Any]]:
    rng = random.Random(4004)
    led = Ledger()
    t0 = ts_of("2024-03-02T10:00:00Z")
    resolver, resolver6 = RESOLVER, "2001:db8::53"
    host_mac, peer_mac = mac("02:00:0a:00:04:01"), mac("02:00:0a:00:00:35")
    facts: dict[str, Any] = {}

    def link(iface: int, src: str, dst: str, l4: bytes, *, vlan: int | None = None) -> bytes:
        et, pkt = ip_packet(ip(src), ip(dst), 17, l4, ident=rng.getrandbits(16))
        outgoing = src not in (resolver, resolver6)
        if iface == 0:
            return (
                ether(host_mac, peer_mac, et, pkt, vlan=vlan)
                if outgoing
                else ether(peer_mac, host_mac, et, pkt, vlan=vlan, pad=True)
            )
        return sll(4 if outgoing else 0, host_mac if outgoing else peer_mac, et, pkt)

    def ts(t: int, iface: int) -> int:
        return t if iface == 1 else t - t % US

    def exchange(
        label: str,
        t: int,
        q_iface: int,
        r_ifaces: Sequence[int],
        client: str,
        name: str,
        qt: str,
        *,
        vlan_query: int | None = None,
        rtt_ns: int | None = None,
        query: bool = True,
    ) -> Txn:
        server = resolver6 if ":" in client else resolver
        qtype = TYPE[qt]
        cport, ident = rng.randint(32768, 60999), rng.getrandbits(16)
        tx = led.txn("udp", client, cport, server, 53, ident, name, qtype, kind=label)
        rcode, answers, zone = lookup(name, qtype, {})
        q = Msg(ident, RD).question(name, qtype).opt(1232).wire()
        r = response_msg(ident, RD | RA, name, qtype, rcode, answers, zone)
        if query:
            led.add(
                ts(t, q_iface),
                link(q_iface, client, server, udp(ip(client), ip(server), cport, 53, q), vlan=vlan_query),
                M("query", tx),
                iface=q_iface,
                tags=(f"{label}:query",),
            )
        rt = t + (rtt_ns if rtt_ns is not None else rng.randint(900_000, 9_000_000))
        for k, iface in enumerate(r_ifaces):
            role = "orphan_response" if not query else ("response" if k == 0 else "duplicate_response")
            led.add(
                ts(rt + k * 37_123, iface),
                link(iface, server, client, udp(ip(server), ip(client), 53, cport, r)),
                M(role, tx, rcode=rcode),
                iface=iface,
                tags=(f"{label}:{role}",),
            )
        facts[label] = {
            "client": client,
            "qname": name,
            "qtype": qt,
            "query_iface": q_iface if query else None,
            "response_ifaces": list(r_ifaces),
        }
        return tx

    # The first frame: an answer whose query was sent before the capture started (orphan).
    exchange("orphan", t0 + 211_000 * US, 0, [0], "10.0.4.17", "www.news.example", "A", query=False, rtt_ns=0)
    # An ARP request on interface 0 (not IP: counted as a frame, nothing else).
    arp = struct.pack(
        "!HHBBH6s4s6s4s", 1, ETH_IPV4, 6, 4, 1, host_mac, ip("10.0.4.1"), b"\x00" * 6, ip("10.0.4.254")
    )
    led.add(t0 + 402_000 * US, ether(host_mac, b"\xff" * 6, ETH_ARP, arp), tags=("arp",))
    t = t0 + NS
    plan = [
        # label, query iface, response ifaces, client, name, qtype, vlan on the query
        ("eth_only_1", 0, [0], "10.0.4.11", "www.shop.example", "A", None),
        ("sll_only_1", 1, [1], "10.0.4.12", "mail.corp.example", "A", None),
        ("split_1", 0, [1], "10.0.4.13", "edge1.cdn.example.net", "AAAA", None),
        ("eth_only_2", 0, [0], "10.0.4.14", "wpad.corp.example", "A", None),
        ("split_vlan", 0, [1], "10.0.4.15", "intranet.corp.example", "HTTPS", 100),
        ("sll_only_2", 1, [1], "10.0.4.16", "corp.example", "MX", None),
        ("ipv6_sll", 1, [1], "2001:db8:4::10", "www.news.example", "AAAA", None),
        ("split_reverse", 1, [0], "10.0.4.11", "api.shop.example", "A", None),
        ("seen_twice", 0, [1, 0], "10.0.4.12", "git.corp.example", "A", None),
        ("eth_only_3", 0, [0], "10.0.4.13", "shop.example", "TXT", None),
        ("sll_only_3", 1, [1], "10.0.4.14", "static.cdn.example.net", "A", None),
        ("split_2", 0, [1], "10.0.4.16", "video.news.example", "A", None),
    ]
    for label, qi, ris, client, name, qt, vlan in plan:
        exchange(
            label,
            t + rng.randint(0, 999_999_999) % 700_000_000 + (qi * 123),
            qi,
            ris,
            client,
            name,
            qt,
            vlan_query=vlan,
        )
        t += 700 * MS
    end = t + 300 * MS
    # The last frame: an answer on interface 0 (microseconds) so the capture ends on a whole microsecond.
    exchange("eth_last", end, 0, [0], "10.0.4.15", "edge2.cdn.example.net", "A", rtt_ns=2_345_000)
    # Interface 1's statistics, written after the last packet block (isb_ifdrop = 3).
    per_iface = Counter(e.iface for e in led.events)
    last = max(e.ts for e in led.events)
    led.add_isb(last + US, 1, ifrecv=per_iface[1] + 3, ifdrop=3, start=t0, end=last + US)
    led.settle()
    figures = led.figures()
    for label, info in facts.items():
        info["frames"] = {
            role: led.frames_tagged(f"{label}:{role}")
            for role in ("query", "response", "duplicate_response", "orphan_response")
            if led.frames_tagged(f"{label}:{role}")
        }
    scenario = {
        "format": "pcapng",
        "interfaces": [
            {"id": 0, "name": "eth0", "linktype": LINKTYPE_ETHERNET, "tsresol": 6, "frames": per_iface[0]},
            {"id": 1, "name": "eth1", "linktype": LINKTYPE_LINUX_SLL, "tsresol": 9, "frames": per_iface[1]},
        ],
        "interface_statistics": {
            "interface": 1,
            "isb_ifdrop": 3,
            "isb_ifrecv": per_iface[1] + 3,
            "note": "one ISB, after the last packet block; not a frame",
        },
        "interface_drops": 3,
        "vlan_frame": led.frames_tagged("split_vlan:query"),
        "vlan_id": 100,
        "arp_frame": led.frames_tagged("arp"),
        "exchanges": facts,
        "notes": [
            "interface 1 timestamps use all nine decimals; the first and last frames are on interface 0",
            "seen_twice: the answer is captured on interface 1 and 37 us later on interface 0 "
            "(a duplicate_response)",
            "orphan: the capture starts with an answer whose query it never saw",
        ],
        "latency_bands_ms": latency_bands([t.rtt_ns for t in led.txns if t.rtt_ns is not None]),
    }
    return led, {**figures, "scenario": scenario}


# ================================================================================================
# Driver
# ================================================================================================

OUTAGE = ResolverScenario(
    "outage",
    "2024-03-01T10:00:00Z",
    seed=1001,
    rate=4.0,
    outage=("shop.example", 240.0, 360.0),
    end_unanswered=4,
)
STEADY = ResolverScenario("steady", "2024-03-01T14:00:00Z", seed=5005, rate=4.0)


def _write_resolver(sc: ResolverScenario) -> Callable[[Path], dict[str, Any]]:
    def run(path: Path) -> dict[str, Any]:
        led, expected = build_resolver(sc)
        write_pcap(path, led.packets())
        return expected

    return run


def _write_simple(builder: Callable[[], tuple[Ledger, dict[str, Any]]]) -> Callable[[Path], dict[str, Any]]:
    def run(path: Path) -> dict[str, Any]:
        led, expected = builder()
        write_pcap(path, led.packets())
        return expected

    return run


def _write_mixed(path: Path) -> dict[str, Any]:
    led, expected = build_mixed()
    write_pcapng(
        path,
        led.events,
        [Interface(LINKTYPE_ETHERNET, "eth0", 6), Interface(LINKTYPE_LINUX_SLL, "eth1", 9)],
        app="pcapdns samples/build.py",
    )
    return expected


SAMPLES: dict[str, Callable[[Path], dict[str, Any]]] = {
    "outage.pcap": _write_resolver(OUTAGE),
    "formerr.pcap": _write_simple(build_formerr),
    "tcp-fallback.pcap": _write_simple(build_tcp),
    "mixed-links.pcapng": _write_mixed,
    "steady.pcap": _write_resolver(STEADY),
}


def expected_name(capture: str) -> str:
    return capture.rsplit(".", 1)[0] + ".json"


def build_all(out: Path, only: Iterable[str] | None = None) -> list[Path]:
    """Write every sample (or those named in ``only``) into ``out``; return the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "expected").mkdir(exist_ok=True)
    written = []
    for name, make in SAMPLES.items():
        if only is not None and name not in only:
            continue
        path = out / name
        expected = {"capture": name, **make(path)}
        exp_path = out / "expected" / expected_name(name)
        exp_path.write_text(json.dumps(expected, indent=1) + "\n")
        written += [path, exp_path]
    return written


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=HERE, help="directory to write into (default: samples/)")
    ap.add_argument("names", nargs="*", help=f"samples to build (default: all of {', '.join(SAMPLES)})")
    args = ap.parse_args(argv)
    unknown = set(args.names) - set(SAMPLES)
    if unknown:
        ap.error(f"unknown sample(s): {', '.join(sorted(unknown))}")
    for path in build_all(args.out, args.names or None):
        print(f"{path}  {path.stat().st_size:>9,} octets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
