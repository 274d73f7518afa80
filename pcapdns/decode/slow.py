"""The per-packet decoder: correct for every frame, used as the slow path behind the columnar one.

Each frame goes down link -> IP (-> reassembly) -> UDP or TCP, through any tunnels on the way
(each one back to the layer it carries: Ethernet, an ethertype, IP), and ends in exactly one
*outcome* counter (see :data:`OUTCOMES`), so ``counters["frames"] == sum(counters[o] for o in
OUTCOMES)`` always holds; when an outcome loses data (``dropped``, ``unsupported``, or a problem
inside reassembly) a :class:`~pcapdns.model.DecodeIssue` says why.  Nothing is dropped silently.
Two more counters are not outcomes: ``dns_payloads`` (Payloads returned, several per frame over
TCP) and ``reassembled`` (IP datagrams completed from fragments).

The counters cover only the frames given to this decoder: behind the columnar fast path that is
the slow-path share, so add them to the fast path's own counts rather than merging key by key.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import numpy as np

from pcapdns.decode.fragbatch import BatchFragments
from pcapdns.decode.ip import Bad, Defragmenter, FragKey, Ip, Pending, extensions, ipv4, ipv6, short
from pcapdns.decode.link import (
    ETH_IPV4,
    ETH_IPV6,
    ETH_MPLS,
    ETH_PPPOE_SESSION,
    ETH_TEB,
    LINKS,
    NON_IP_ETHERTYPES,
    NOT_IP,
    TRUNCATED,
    Unsupported,
    ethernet,
    linktype_name,
)
from pcapdns.decode.tcp import FIN, RST, SYN, FlowKey, TcpStreams
from pcapdns.decode.tcpbatch import BatchStreams
from pcapdns.model import (
    DEFAULT_PORTS,
    DNSTAP_LINKTYPE,
    GENEVE_PORTS,
    VXLAN_PORTS,
    DecodeIssue,
    IssueLog,
    IssueReason,
    Payload,
    Transport,
)
from pcapdns.sources import dnstap
from pcapdns.sources.dnstap import packed_address

OUTCOMES = (
    "non_ip",  # a known link layer carrying something other than IP (ARP, LLDP, spanning tree ...)
    "unsupported",  # a link type, EtherType, IP protocol or encapsulation not decoded (an issue says which)
    "icmp",  # ICMP/ICMPv6 (DNS quoted in errors is not a message)
    "not_dns",  # IP but not UDP/TCP on a DNS port (other protocols, other ports, no next header)
    "udp_dns",  # a UDP datagram on a DNS port that became a Payload
    "tcp_segments",  # a TCP segment on a DNS port, fed to stream reassembly
    "ip_fragments",  # an IP fragment, fed to reassembly (its datagram is decoded when complete)
    "dropped",  # a frame that yielded nothing because of a problem (an issue names the frame)
)
ICMP_PROTOS = frozenset({1, 58})
#: IP protocols that carry no DNS message: understood, not skipped.
NOT_DNS_PROTOS = frozenset(
    {
        2,  # IGMP
        8,  # EGP
        33,  # DCCP
        46,  # RSVP
        59,  # IPv6 no next header
        88,  # EIGRP
        89,  # OSPF
        103,  # PIM
        112,  # VRRP / CARP
        113,  # PGM
        124,  # IS-IS over IPv4
        132,  # SCTP
    }
)
UDP, TCP = 17, 6
IPIP, IPV6_IN_IP, GRE, AH, MPLS_IN_IP = 4, 41, 47, 51, 137
DNS_HEADER = 12
MAX_DEPTH = 4  # nested encapsulations decoded; a fifth is reported, not followed
MAX_LABELS = 16  # MPLS labels in one stack
PPP_IPV4, PPP_IPV6 = 0x0021, 0x0057
_PROTO_NAMES = {50: "ESP", 97: "EtherIP", 115: "L2TP", 99: "private encryption", 136: "UDP-Lite"}
_ETHERTYPE_NAMES = {
    0x88E5: "MACsec",
    0x894F: "NSH",
    0x8926: "VN-Tag",
    0x893F: "802.1BR E-Tag",
    0x22F3: "TRILL",
}

Enc = tuple[str, ...]  # the encapsulations a layer is inside, outermost first
Where = tuple[int, int, int]  # file, frame, ts_ns


def push(enc: Enc, label: str) -> Enc:
    """``enc`` with one more encapsulation, or :class:`Unsupported` past :data:`MAX_DEPTH`."""
    if len(enc) >= MAX_DEPTH:
        raise Unsupported(f"more than {MAX_DEPTH} nested encapsulations ({'/'.join((*enc, label))})")
    return (*enc, label)


def ethertype_text(ethertype: int) -> str:
    name = _ETHERTYPE_NAMES.get(ethertype)
    return f"EtherType 0x{ethertype:04x}" + (f" ({name})" if name else "")


def _whole_beyond(ip: Ip, l4: bytes, ulen: int) -> bool:
    """Whether a UDP datagram longer than its IP packet says is whole in the frame: its bytes are
    there, and its checksum (which a zero-filled or foreign tail would fail) verifies."""
    if ulen > len(l4) + len(ip.rest) or l4[6:8] == b"\0\0":
        return False
    datagram = l4 + ip.rest[: ulen - len(l4)]
    if ip.version == 4:
        pseudo = ip.src + ip.dst + bytes([0, UDP]) + ulen.to_bytes(2, "big")
    else:
        pseudo = ip.src + ip.dst + ulen.to_bytes(4, "big") + bytes([0, 0, 0, UDP])
    data = pseudo + datagram + b"\0" * (len(datagram) % 2)
    total = sum(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


class Decoder:
    """Frames in, DNS :class:`~pcapdns.model.Payload` s out; problems collected for :meth:`take_issues`.

    Tunnels are taken apart down to the DNS inside, at most :data:`MAX_DEPTH` deep: VXLAN (UDP to a
    port of ``vxlan_ports``), Geneve (``geneve_ports``), GRE (with ERSPAN I, II and III), IP in IP
    (IPv4 and IPv6 in either), MPLS and PPPoE sessions.  A payload says which it came through.
    """

    def __init__(
        self,
        ports: frozenset[int] = DEFAULT_PORTS,
        *,
        vxlan_ports: frozenset[int] = VXLAN_PORTS,
        geneve_ports: frozenset[int] = GENEVE_PORTS,
        max_tcp_flows: int = 65536,
        max_tcp_buffer: int = 262144,
        max_fragments: int = 8192,
        fragment_timeout_ns: int = 30 * 10**9,
    ) -> None:
        self.ports = frozenset(ports)
        self.vxlan_ports = frozenset(vxlan_ports) - self.ports  # a DNS port stays a DNS port
        self.geneve_ports = frozenset(geneve_ports) - self.ports - self.vxlan_ports
        self.counters: Counter[str] = Counter()
        self._issues = IssueLog()
        self._defrag = Defragmenter(max_fragments, fragment_timeout_ns)
        self._tcp = TcpStreams(max_tcp_flows, max_tcp_buffer, self._issue)
        #: Compiled reassembly of a whole batch's TCP segments, on the same streams.
        self.tcp_batch = BatchStreams(self._tcp)
        #: Compiled reassembly of a whole batch's IP fragments, beside the same reassembly.
        self.fragment_batch = BatchFragments(self._defrag)

    def take_issues(self) -> IssueLog:
        """Return the issues found so far (counted, a few of each kept: bounded) and forget them."""
        issues, self._issues = self._issues, IssueLog()
        return issues

    def _issue(self, file_id: int, frame: int, ts: int, reason: IssueReason, detail: str) -> None:
        self._issues.append(DecodeIssue(file_id, frame, ts, reason, detail))

    def decode(
        self, file_id: int, frame: int, ts_ns: int, linktype: int, data: bytes, wirelen: int
    ) -> list[Payload]:
        """Decode one captured frame; return the DNS messages it carries or completes."""
        self.counters["frames"] += 1
        if self._defrag.pending:
            self._give_up(self._defrag.expired(ts_ns), IssueReason.FRAGMENT_INCOMPLETE, "timed out")
        if linktype == DNSTAP_LINKTYPE:
            return self._dnstap(file_id, frame, ts_ns, data)
        missing = max(wirelen - len(data), 0)
        at = (file_id, frame, ts_ns)
        try:
            link = LINKS.get(linktype)
            if link is None:
                raise Unsupported(linktype_name(linktype))
            ethertype, off = link(data, 0)
            if ethertype == TRUNCATED:
                reason = IssueReason.SNAPLEN_TRUNCATED if missing else IssueReason.LINK_TRUNCATED
                raise Bad(reason, f"{linktype_name(linktype)} header cut short ({len(data)} bytes captured)")
            return self._ether(at, ethertype, data, off, missing, (), self.counters)
        except Bad as bad:
            self.counters["dropped"] += 1
            self._issue(file_id, frame, ts_ns, bad.reason, bad.detail)
            return []
        except Unsupported as what:
            self.counters["unsupported"] += 1
            self._unsupported(at, what)
            return []

    def _unsupported(self, at: tuple[int, int, int], what: Unsupported) -> None:
        self._issue(*at, IssueReason.UNSUPPORTED_ENCAPSULATION, f"{what.detail} not decoded")

    def _dnstap(self, file_id: int, frame: int, ts_ns: int, data: bytes) -> list[Payload]:
        """The DNS message of one dnstap message (a frame of a dnstap file, fetched again), with
        the flow the dnstap fields give it; none when it cannot be read."""
        f, _ = dnstap.fields(
            np.frombuffer(data, dtype=np.uint8), np.zeros(1, np.int64), np.array([len(data)])
        )
        if f.status[0] != 0 or f.dns_len[0] < 12:
            return []
        start, length = int(f.dns_off[0]), int(f.dns_len[0])
        response = f.mtype[0] % 2 == 0
        sent = int(f.query_ns[0])
        return [
            Payload(
                file_id,
                frame,
                ts_ns,
                Transport(int(f.transport[0])),
                packed_address(int(f.src_hi[0]), int(f.src_lo[0])),
                int(f.sport[0]),
                packed_address(int(f.dst_hi[0]), int(f.dst_lo[0])),
                int(f.dport[0]),
                data[start : start + length],
                dnstap_type=int(f.mtype[0]),
                query_ns=sent if response and sent >= 0 else None,
            )
        ]

    def segment(
        self,
        file_id: int,
        frame: int,
        ts_ns: int,
        src: bytes,
        sport: int,
        dst: bytes,
        dport: int,
        seq: int,
        flags: int,
        data: bytes,
    ) -> list[Payload]:
        """A whole, unfragmented TCP segment on a DNS port whose headers were read already (by
        :func:`pcapdns.decode.columnar.classify`): exactly what :meth:`decode` does with its frame,
        counters included, without parsing the headers a second time."""
        self.counters["frames"] += 1
        if self._defrag.pending:
            self._give_up(self._defrag.expired(ts_ns), IssueReason.FRAGMENT_INCOMPLETE, "timed out")
        self.counters["tcp_segments"] += 1
        key: FlowKey = (file_id, src, sport, dst, dport)
        if not data and not flags & (FIN | SYN | RST):  # a bare ACK: it only refreshes its flow
            self._tcp.touch(key, frame, ts_ns)
            return []
        out = self._tcp.segment(key, seq, flags, data, 0, frame, ts_ns)
        self.counters["dns_payloads"] += len(out)
        return out

    @property
    def waiting_fragments(self) -> bool:
        """Whether IP fragments wait for the rest of their datagram."""
        return bool(self._defrag.pending)

    def passed(self, now_ns: int) -> None:
        """What a frame at ``now_ns`` that this decoder never sees (settled in bulk elsewhere) does
        to the fragments waiting here, as every frame it decodes does: those waiting since before
        ``now_ns`` by more than the timeout are given up."""
        if self._defrag.pending:
            self._give_up(self._defrag.expired(now_ns), IssueReason.FRAGMENT_INCOMPLETE, "timed out")

    def segments_taken(self, segments: int, messages: int, last_ts_ns: int) -> None:
        """What :meth:`segment` counts, for ``segments`` segments that :attr:`tcp_batch` took (with
        the ``messages`` they completed); fragments waiting since before ``last_ts_ns`` by more
        than the timeout are given up, as a segment at that time would have."""
        self.counters["frames"] += segments
        self.counters["tcp_segments"] += segments
        self.counters["dns_payloads"] += messages
        if self._defrag.pending:
            self._give_up(self._defrag.expired(last_ts_ns), IssueReason.FRAGMENT_INCOMPLETE, "timed out")

    def fragments_taken(self, fragments: int, datagrams: int, messages: int) -> None:
        """What :meth:`decode` counts for ``fragments`` fragments whose ``datagrams`` datagrams
        (``messages`` of them carrying DNS) :attr:`fragment_batch` took."""
        self.counters["frames"] += fragments
        self.counters["ip_fragments"] += fragments
        self.counters["reassembled"] += datagrams
        self.counters["dns_payloads"] += messages

    def flush(self) -> list[Payload]:
        """End of all input: unfinished TCP messages and fragments become issues."""
        self._give_up(
            self._defrag.drain(), IssueReason.FRAGMENT_INCOMPLETE, "still incomplete at end of capture"
        )
        return self._tcp.flush()

    # -- layers --------------------------------------------------------------------------------
    # Each layer gets the bytes it lives in, where it starts, how many bytes of them the snaplen cut
    # (``cut``), the encapsulations around it (``enc``) and the counter its frame's outcome goes to.

    def _ether(
        self, at: Where, ethertype: int, data: bytes, off: int, cut: int, enc: Enc, count: Counter[str]
    ) -> list[Payload]:
        """What an ethertype (or a link type mapped onto one) carries."""
        if ethertype == ETH_IPV4 or ethertype == ETH_IPV6:
            return self._ip(at, ethertype, data, off, cut, enc, count)
        if ethertype in ETH_MPLS:
            return self._mpls(at, data, off, cut, enc, count)
        if ethertype == ETH_PPPOE_SESSION:
            return self._pppoe(at, data, off, cut, enc, count)
        if ethertype == NOT_IP or ethertype in NON_IP_ETHERTYPES:
            count["non_ip"] += 1
            return []
        raise Unsupported(ethertype_text(ethertype))

    def _frame(
        self, at: Where, data: bytes, off: int, cut: int, enc: Enc, count: Counter[str]
    ) -> list[Payload]:
        """An Ethernet frame inside a tunnel."""
        ethertype, off = ethernet(data, off)
        if ethertype == TRUNCATED:
            raise short(cut, IssueReason.LINK_TRUNCATED, f"Ethernet header inside {enc[-1]} cut short")
        return self._ether(at, ethertype, data, off, cut, enc, count)

    def _ip(
        self, at: Where, ethertype: int, data: bytes, off: int, cut: int, enc: Enc, count: Counter[str]
    ) -> list[Payload]:
        ip = ipv4(data, off, cut) if ethertype == ETH_IPV4 else ipv6(data, off, cut)
        if ip.frag is not None:
            return self._fragment(at, ip, enc, count)
        return self._proto(at, ip.version, ip.src, ip.dst, ip.proto, ip.payload, ip.cut, enc, count, ip)

    def _proto(
        self,
        at: Where,
        version: int,
        src: bytes,
        dst: bytes,
        proto: int,
        l4: bytes,
        cut: int,
        enc: Enc,
        count: Counter[str],
        ip: Ip | None = None,
    ) -> list[Payload]:
        """What an IP packet carries: a tunnel, or the transport.  ``ip`` is the packet, when its
        length may disagree with the frame (only DNS over UDP is decoded from such a packet)."""
        if ip is not None and ip.bad_length and (proto != UDP or len(l4) < 8 or not self._on_port(l4)):
            raise Bad(IssueReason.IP_BAD_LENGTH, ip.bad_length)
        if proto == IPIP or proto == IPV6_IN_IP:
            inner = ETH_IPV4 if proto == IPIP else ETH_IPV6
            label = f"ip{4 if proto == IPIP else 6}in{version}"
            return self._ip(at, inner, l4, 0, cut, push(enc, label), count)
        if proto == GRE:
            return self._gre(at, l4, cut, enc, count)
        if proto == MPLS_IN_IP:
            return self._mpls(at, l4, 0, cut, enc, count)
        if proto == AH and version == 4:  # IPv6 walks AH with its extension headers
            proto, pos, _ = extensions(AH, l4, cut, allow_fragment=False)
            return self._proto(at, version, src, dst, proto, l4[pos:], cut, enc, count)
        if proto == UDP and len(l4) >= 8 and not self._on_port(l4):  # a DNS port is never a tunnel's
            dport = (l4[2] << 8) | l4[3]
            if dport in self.vxlan_ports:
                return self._vxlan(at, l4, cut, enc, count)
            if dport in self.geneve_ports:
                return self._geneve(at, l4, cut, enc, count)
        return self._transport(at, src, dst, proto, l4, cut, enc, count, ip)

    def _gre(self, at: Where, data: bytes, cut: int, enc: Enc, count: Counter[str]) -> list[Payload]:
        """GRE (RFC 2784, with RFC 2890's key and sequence number); ERSPAN rides on it."""
        if len(data) < 4:
            raise short(cut, IssueReason.IP_TRUNCATED, f"GRE header needs 4 bytes, {len(data)} present")
        flags, ptype = (data[0] << 8) | data[1], (data[2] << 8) | data[3]
        if flags & 0x7:
            raise Unsupported(f"GRE version {flags & 0x7}" + (" (PPTP)" if flags & 0x7 == 1 else ""))
        if flags & 0x4000:
            raise Unsupported("GRE with source routing (RFC 1701)")
        off = 4 + 4 * (bool(flags & 0x8000) + bool(flags & 0x2000) + bool(flags & 0x1000))
        if ptype == 0x88BE:  # ERSPAN type II has a sequence number and an 8-byte header; type I neither
            if flags & 0x1000:
                return self._erspan(at, data, off, 8, "erspan2", cut, enc, count)
            return self._erspan(at, data, off, 0, "erspan1", cut, enc, count)
        if ptype == 0x22EB:  # ERSPAN type III: 12 bytes, 8 more when the O bit says a subheader follows
            extra = 8 if len(data) >= off + 12 and data[off + 11] & 0x01 else 0
            return self._erspan(at, data, off, 12 + extra, "erspan3", cut, enc, count)
        if len(data) < off:
            raise short(cut, IssueReason.IP_TRUNCATED, f"GRE header of {off} bytes, {len(data)} present")
        enc = push(enc, "gre")
        if ptype == ETH_TEB:
            return self._frame(at, data, off, cut, enc, count)
        return self._ether(at, ptype, data, off, cut, enc, count)

    def _erspan(
        self, at: Where, data: bytes, off: int, size: int, label: str, cut: int, enc: Enc, count: Counter[str]
    ) -> list[Payload]:
        if len(data) < off + size:
            raise short(cut, IssueReason.IP_TRUNCATED, f"{label} header cut short ({len(data) - off} bytes)")
        return self._frame(at, data, off + size, cut, push(enc, label), count)

    def _vxlan(self, at: Where, l4: bytes, cut: int, enc: Enc, count: Counter[str]) -> list[Payload]:
        """VXLAN (RFC 7348): 8 bytes, then an Ethernet frame."""
        data = self._udp_body(l4, cut, "VXLAN")
        if len(data) < 8:
            raise short(cut, IssueReason.UDP_TRUNCATED, f"VXLAN header needs 8 bytes, {len(data)} present")
        return self._frame(at, data, 8, cut, push(enc, "vxlan"), count)

    def _geneve(self, at: Where, l4: bytes, cut: int, enc: Enc, count: Counter[str]) -> list[Payload]:
        """Geneve (RFC 8926): 8 bytes and the options (skipped), then what its protocol type says."""
        data = self._udp_body(l4, cut, "Geneve")
        if len(data) < 8:
            raise short(cut, IssueReason.UDP_TRUNCATED, f"Geneve header needs 8 bytes, {len(data)} present")
        if data[0] >> 6:
            raise Unsupported(f"Geneve version {data[0] >> 6}")
        off = 8 + 4 * (data[0] & 0x3F)
        if len(data) < off:
            raise short(cut, IssueReason.UDP_TRUNCATED, f"Geneve options run past the datagram ({off} bytes)")
        ptype = (data[2] << 8) | data[3]
        enc = push(enc, "geneve")
        if ptype == ETH_TEB:
            return self._frame(at, data, off, cut, enc, count)
        return self._ether(at, ptype, data, off, cut, enc, count)

    @staticmethod
    def _udp_body(l4: bytes, cut: int, name: str) -> bytes:
        ulen = (l4[4] << 8) | l4[5]
        if ulen < 8 or ulen > len(l4) + cut:
            raise Bad(
                IssueReason.UDP_BAD_LENGTH, f"UDP length {ulen} of a {name} datagram of {len(l4)} bytes"
            )
        return l4[8:ulen]

    def _mpls(
        self, at: Where, data: bytes, off: int, cut: int, enc: Enc, count: Counter[str]
    ) -> list[Payload]:
        """An MPLS label stack, then IPv4, IPv6 or an Ethernet pseudowire (with or without control word)."""
        enc = push(enc, "mpls")
        for _ in range(MAX_LABELS):
            if len(data) < off + 4:
                raise short(cut, IssueReason.LINK_TRUNCATED, "MPLS label stack cut short")
            bottom = data[off + 2] & 0x01
            off += 4
            if bottom:
                break
        else:
            raise Unsupported(f"MPLS label stack deeper than {MAX_LABELS}")
        if len(data) <= off:
            raise short(cut, IssueReason.LINK_TRUNCATED, "nothing after the MPLS label stack")
        nibble = data[off] >> 4
        if nibble == 4:
            return self._ip(at, ETH_IPV4, data, off, cut, enc, count)
        if nibble == 6:
            return self._ip(at, ETH_IPV6, data, off, cut, enc, count)
        if nibble == 0:  # the pseudowire control word
            off += 4
        return self._frame(at, data, off, cut, enc, count)

    def _pppoe(
        self, at: Where, data: bytes, off: int, cut: int, enc: Enc, count: Counter[str]
    ) -> list[Payload]:
        """A PPPoE session frame (RFC 2516): 6 bytes, then PPP's protocol field."""
        if len(data) < off + 8:
            raise short(cut, IssueReason.LINK_TRUNCATED, "PPPoE session header cut short")
        proto = (data[off + 6] << 8) | data[off + 7]
        enc = push(enc, "pppoe")
        if proto == PPP_IPV4:
            return self._ip(at, ETH_IPV4, data, off + 8, cut, enc, count)
        if proto == PPP_IPV6:
            return self._ip(at, ETH_IPV6, data, off + 8, cut, enc, count)
        if proto >= 0x8000:  # PPP's control protocols (LCP, IPCP, authentication ...)
            count["non_ip"] += 1
            return []
        raise Unsupported(f"PPP protocol 0x{proto:04x}")

    def _fragment(self, at: Where, ip: Ip, enc: Enc, count: Counter[str]) -> list[Payload]:
        assert ip.frag is not None
        file_id, frame, ts = at
        count["ip_fragments"] += 1
        if ip.cut:
            self._issue(
                file_id,
                frame,
                ts,
                IssueReason.SNAPLEN_TRUNCATED,
                "IP fragment cut by the capture's snaplen: its datagram cannot be reassembled",
            )
            return []
        key: FragKey = (file_id, ip.version, ip.src, ip.dst, ip.proto, ip.frag.ident)
        whole, problems = self._defrag.add(key, ip.frag, ip.payload, frame, ts)
        for reason, detail in problems:
            self._issue(file_id, frame, ts, reason, detail)
        self._give_up(
            self._defrag.over_limit(),
            IssueReason.FRAGMENT_LIMIT,
            f"dropped: more than {self._defrag.max_pending} datagrams awaiting fragments",
        )
        if whole is None:
            return []
        self.counters["reassembled"] += 1
        proto, body = ip.proto, whole
        try:
            if ip.version == 6:
                proto, pos, _ = extensions(proto, whole, allow_fragment=False)
                body = whole[pos:]
            # The frame's outcome is ip_fragments: what the datagram holds counts nowhere.
            return self._proto(at, ip.version, ip.src, ip.dst, proto, body, 0, enc, Counter())
        except Bad as bad:
            self._issue(file_id, frame, ts, bad.reason, bad.detail)
        except Unsupported as what:
            self._unsupported(at, what)
        return []

    def _give_up(self, gone: Iterator[tuple[FragKey, Pending]], reason: IssueReason, why: str) -> None:
        for key, p in gone:
            size = "unknown size" if p.total is None else f"{p.total} bytes"
            self._issue(
                key[0],
                p.first_frame,
                p.first_ts,
                reason,
                f"IP datagram ({size}, {p.have} bytes from {p.frames} fragments) {why}",
            )

    def _transport(
        self,
        at: Where,
        src: bytes,
        dst: bytes,
        proto: int,
        l4: bytes,
        cut: int,
        enc: Enc,
        count: Counter[str],
        ip: Ip | None = None,
    ) -> list[Payload]:
        """UDP or TCP on a DNS port; ``cut`` bytes of ``l4`` were not captured (snaplen)."""
        file_id, frame, ts = at
        if proto in ICMP_PROTOS:
            count["icmp"] += 1
            return []
        if proto not in (UDP, TCP):
            if proto in NOT_DNS_PROTOS:
                count["not_dns"] += 1
                return []
            name = _PROTO_NAMES.get(proto)
            raise Unsupported(f"IP protocol {proto}" + (f" ({name})" if name else ""))
        name, need = ("UDP", 8) if proto == UDP else ("TCP", 20)
        reason = IssueReason.UDP_TRUNCATED if proto == UDP else IssueReason.TCP_TRUNCATED
        if len(l4) < 4:
            raise short(cut, reason, f"{name} header needs {need} bytes, {len(l4)} present")
        if not self._on_port(l4):
            count["not_dns"] += 1
            return []
        if len(l4) < need:
            raise short(cut, reason, f"{name} header needs {need} bytes, {len(l4)} present")
        sport, dport = (l4[0] << 8) | l4[1], (l4[2] << 8) | l4[3]
        if proto == UDP:
            return self._udp(file_id, frame, ts, src, dst, sport, dport, l4, cut, enc, count, ip)
        off = (l4[12] >> 4) * 4
        if off < 20:
            raise Bad(IssueReason.TCP_BAD_HEADER, f"TCP data offset {off} < 20")
        if off > len(l4):
            if cut:
                raise short(cut, IssueReason.TCP_TRUNCATED, f"TCP header of {off} bytes, {len(l4)} captured")
            raise Bad(IssueReason.TCP_BAD_HEADER, f"TCP data offset {off} > {len(l4)} bytes of segment")
        count["tcp_segments"] += 1
        if cut:
            self._issue(
                file_id,
                frame,
                ts,
                IssueReason.SNAPLEN_TRUNCATED,
                f"TCP segment cut by the capture's snaplen ({cut} bytes missing)",
            )
        seq = int.from_bytes(l4[4:8], "big")
        key: FlowKey = (file_id, src, sport, dst, dport)
        out = self._tcp.segment(key, seq, l4[13], l4[off:], cut, frame, ts)
        if enc:
            for p in out:
                p.encap = "/".join(enc)
        self.counters["dns_payloads"] += len(out)
        return out

    def _on_port(self, l4: bytes) -> bool:
        return ((l4[0] << 8) | l4[1]) in self.ports or ((l4[2] << 8) | l4[3]) in self.ports

    def _udp(
        self,
        file_id: int,
        frame: int,
        ts: int,
        src: bytes,
        dst: bytes,
        sport: int,
        dport: int,
        l4: bytes,
        cut: int,
        enc: Enc,
        count: Counter[str],
        ip: Ip | None = None,
    ) -> list[Payload]:
        ulen = (l4[4] << 8) | l4[5]
        if ulen < 8:
            raise Bad(IssueReason.UDP_BAD_LENGTH, f"UDP length {ulen} < 8")
        truncated = False
        if ip is not None and ip.bad_length:  # the IP length runs past the frame: is the datagram whole?
            if ulen > len(l4):
                raise Bad(IssueReason.IP_BAD_LENGTH, ip.bad_length)
            detail = f"{ip.bad_length}; the UDP datagram inside is whole: its DNS message was decoded"
            self._issue(file_id, frame, ts, IssueReason.IP_BAD_LENGTH, detail)
        elif ulen > len(l4) + cut and ip is not None and not cut and _whole_beyond(ip, l4, ulen):
            self._issue(
                file_id,
                frame,
                ts,
                IssueReason.IP_BAD_LENGTH,
                f"IPv{ip.version} length leaves {ulen - len(l4)} bytes of the {ulen}-byte UDP datagram out; "
                "the frame holds them and the UDP checksum verifies: its DNS message was decoded",
            )
            l4 += ip.rest[: ulen - len(l4)]
        if ulen > len(l4):
            if ulen > len(l4) + cut:
                raise Bad(
                    IssueReason.UDP_BAD_LENGTH, f"UDP length {ulen} > {len(l4) + cut} bytes of IP payload"
                )
            truncated = True
        data = l4[8:ulen]
        if truncated and len(data) < DNS_HEADER:
            raise short(
                cut, IssueReason.DNS_TOO_SHORT, f"{len(data)} bytes of a {ulen - 8}-byte DNS message captured"
            )
        if len(data) < DNS_HEADER:
            raise Bad(
                IssueReason.DNS_TOO_SHORT,
                f"UDP payload of {len(data)} bytes, shorter than the 12-byte DNS header",
            )
        if truncated:
            self._issue(
                file_id,
                frame,
                ts,
                IssueReason.SNAPLEN_TRUNCATED,
                f"DNS message cut by the capture's snaplen: {len(data)} of {ulen - 8} bytes",
            )
        count["udp_dns"] += 1
        self.counters["dns_payloads"] += 1
        encap = "/".join(enc)
        return [
            Payload(
                file_id, frame, ts, Transport.UDP, src, sport, dst, dport, data, 0, truncated, encap=encap
            )
        ]
